package server

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/phigate/phigate/ingest"
	"github.com/phigate/phigate/plan"
)

// checkFiles reports the files the configuration names that serve could
// not use: a TLS pair that does not load, a client CA without a
// certificate, a missing key set file or audit encryption key, an audit
// directory that cannot be created. Validate runs it so that config check
// only says ok for a configuration serve will start with.
func (c *Config) checkFiles() error {
	var problems []error
	if t := c.Listen.TLS; t.Cert != "" && t.Key != "" {
		f := &tlsFiles{cfg: t, log: zap.NewNop()}
		if _, err := f.load(); err != nil {
			problems = append(problems, err)
		}
	}
	for _, l := range []struct {
		name string
		t    ingest.TLSFiles
	}{{"ingest.mllp.tls", c.Ingest.MLLP.TLS}, {"ingest.fhir.tls", c.Ingest.FHIR.TLS}} {
		if l.t.Cert != "" && l.t.Key != "" {
			f := &tlsFiles{cfg: TLSConfig(l.t), log: zap.NewNop(), name: l.name}
			if _, err := f.load(); err != nil {
				problems = append(problems, err)
			}
		}
	}
	if f := c.JWT.JWKSFile; f != "" {
		if _, err := os.Stat(f); err != nil {
			problems = append(problems, fmt.Errorf("jwt.jwks_file: %w", err))
		}
	}
	if f := c.Audit.EncryptionKeyFile; f != "" {
		if _, err := os.Stat(f); err != nil {
			problems = append(problems, fmt.Errorf("audit.encryption_key_file: %w", err))
		}
	}
	if d := c.Audit.Dir; d != "" {
		if err := creatable(d); err != nil {
			problems = append(problems, fmt.Errorf("audit.dir: %w", err))
		}
	}
	return errors.Join(problems...)
}

// creatable reports whether dir exists as a writable directory, or could
// be created: its nearest existing ancestor is a writable directory.
func creatable(dir string) error {
	p := filepath.Clean(dir)
	for {
		st, err := os.Stat(p)
		if err == nil {
			if !st.IsDir() {
				return fmt.Errorf("%s is not a directory", p)
			}
			if err := unix.Access(p, unix.W_OK|unix.X_OK); err != nil {
				return fmt.Errorf("%s is not writable", p)
			}
			return nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return err
		}
		parent := filepath.Dir(p)
		if parent == p {
			return fmt.Errorf("no existing ancestor of %s", dir)
		}
		p = parent
	}
}

// Warnings are what serve would accept but an operator should hear of: a
// listener that speaks plaintext to more than this host.
func (c *Config) Warnings() []string {
	var out []string
	if c.Listen.GRPC != "" && c.Listen.TLS.Cert == "" && !loopback(c.Listen.GRPC) {
		out = append(out, fmt.Sprintf("listen.grpc: %s is not a loopback address and has no listen.tls: anyone who reaches it can ask for decisions and read plans", c.Listen.GRPC))
	}
	if v := c.Filters.PlanMetadataVersion; v != 0 && v < plan.Version {
		out = append(out, fmt.Sprintf("filters.plan_metadata_version: %d: records of filtered responses name no user or patient of their own (audit query takes them from the decision record when it is in the same trail); set %d once every replica runs this release", v, plan.Version))
	}
	if c.Listen.Admin != "" && !loopback(c.Listen.Admin) {
		out = append(out, fmt.Sprintf("listen.admin: %s is not a loopback address: metrics and readiness are served in plaintext to the network", c.Listen.Admin))
	}
	if c.Listen.Pprof && c.Listen.Admin != "" && !loopback(c.Listen.Admin) {
		out = append(out, fmt.Sprintf("listen.pprof: profiles (which show the process's memory, requests included) are served on listen.admin %s beyond loopback", c.Listen.Admin))
	}
	if c.Console.Enabled && c.Listen.Admin != "" && !loopback(c.Listen.Admin) {
		out = append(out, fmt.Sprintf("console.enabled: the console is served on listen.admin %s in plaintext: put it behind a TLS proxy (officers' tokens and session cookies would cross the network)", c.Listen.Admin))
	}
	if m := c.Ingest.MLLP; m.Listen != "" && m.TLS.Cert == "" && !loopback(m.Listen) {
		out = append(out, fmt.Sprintf("ingest.mllp.listen: %s is not a loopback address and has no ingest.mllp.tls: anyone who reaches it can publish care relationships, and ADT messages cross the network in plaintext", m.Listen))
	}
	out = append(out, c.Policy.BundleServer.Warnings()...)
	out = append(out, c.DecisionLogs.Warnings()...)
	if c.Audit.ReplicaID != "" && c.Store.PostgresDSNFile == "" && c.Store.PostgresDSNEnv == "" {
		out = append(out, "audit.replica_id: set, but the store names no PostgreSQL: the trail is not shipped anywhere (docs/central-audit.md)")
	}
	return out
}

func loopback(hostport string) bool {
	h, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// yamlPaths maps the Go types of the configuration to where they sit in
// phigate.yaml, so a decoding error names the YAML section rather than a
// Go type ("log: unknown field colour", not "not found in type
// server.LogConfig").
var yamlPaths = func() map[string]string {
	m := map[string]string{}
	var walk func(t reflect.Type, path string, depth int)
	walk = func(t reflect.Type, path string, depth int) {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Map {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct || depth > 6 {
			return
		}
		// A type used in two sections (service credentials) names both.
		if prev, seen := m[t.String()]; !seen {
			m[t.String()] = path
		} else if prev != path && !strings.Contains(prev, " or ") {
			m[t.String()] = prev + " or " + path
		}
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name == "" || name == "-" {
				if f.Anonymous {
					walk(f.Type, path, depth+1)
				}
				continue
			}
			p := name
			if path != "" {
				p = path + "." + name
			}
			walk(f.Type, p, depth+1)
		}
	}
	walk(reflect.TypeFor[Config](), "", 0)
	return m
}()

var (
	notFound = regexp.MustCompile(`field (\S+) not found in type (\S+)`)
	goType   = regexp.MustCompile(`into ([\w.*\[\]]+)`)
)

// yamlError rewrites a YAML decoding error in terms of phigate.yaml.
func yamlError(err error) error {
	msg := notFound.ReplaceAllStringFunc(err.Error(), func(m string) string {
		sub := notFound.FindStringSubmatch(m)
		where := yamlPaths[sub[2]]
		if where == "" {
			where = "the top level"
		}
		return where + ": unknown field " + sub[1]
	})
	msg = goType.ReplaceAllString(msg, "into a value of the wrong type")
	return errors.New(msg)
}
