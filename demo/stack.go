// Package demo runs the demo stack: the legacy FHIR service over the
// synthetic data set, phigate in-process, and Envoy in front of both, all
// on loopback, with tokens for the demo population. It belongs to the demo
// command and to tests; the production binary does not import it.
package demo

import (
	"context"
	"crypto/rand"
	"fmt"
	"go.yaml.in/yaml/v3"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/phigate/phigate/authz"
	"github.com/phigate/phigate/demo/demokeys"
	"github.com/phigate/phigate/demo/fhirdata"
	"github.com/phigate/phigate/demo/upstream"
	"github.com/phigate/phigate/envoy"
	"github.com/phigate/phigate/server"
)

// Upstream is the legacy FHIR service over the default synthetic data
// set.
func Upstream() (*upstream.Server, error) {
	return upstream.New(fhirdata.Default(), upstream.Config{})
}

// Dir is where the demo keeps its keys, configuration and bootstrap unless
// told otherwise.
const Dir = ".demo"

// demo stack addresses, all on loopback.
const (
	demoListen   = "127.0.0.1:10000"
	demoEnvoyAdm = "127.0.0.1:9901"
	demoGRPC     = "127.0.0.1:9191"
	demoAdmin    = "127.0.0.1:9902"
	demoUpstream = "127.0.0.1:8080"
	demoUpLog    = "127.0.0.1:8081"
)

// UpOptions shape one run of the demo stack.
type UpOptions struct {
	// Dir holds the keys, configuration, bootstrap and audit trail.
	Dir string
	// Check runs the printed requests once, reports each, and returns
	// instead of serving until ctx ends.
	Check bool
}

// Up starts the legacy service, phigate and Envoy, prints curl lines with
// demo tokens to stdout, and runs until ctx ends (or, with Check, until the
// requests have run). A part of the stack that stops on its own is
// reported on stderr and ends the run.
// Config is the configuration the demo stack runs phigate with, its
// keys, trail and token keys under dir. It is not yet validated.
func Config(dir string, keys *demokeys.Keys) (*server.Config, error) {
	cfg := &server.Config{
		Listen: server.ListenConfig{GRPC: demoGRPC, Admin: demoAdmin},
		Log:    server.LogConfig{Level: "warn", Format: "console"},
		JWT: authz.JWTConfig{Issuer: demokeys.DefaultIssuer, Audiences: []string{demokeys.DefaultAudience},
			JWKSFile: keys.JWKSPath()},
	}
	cfg.Owners.Upstream = "http://" + demoUpstream
	cfg.Request.LegacyRoutes = []authz.LegacyRoute{{Method: "GET", Pattern: "/hl7/patients/{id}/adt", Kind: "hl7-adt", PatientFrom: "path:id"}}
	cfg.Audit.Dir = filepath.Join(dir, "audit")
	// The demo keeps the checkpoint key and the witness beside the trail,
	// not in it; phigate creates the key on the first start only.
	cfg.Audit.SigningKeyFile = filepath.Join(dir, "audit-keys", "signing.key")
	cfg.Audit.WitnessFile = filepath.Join(dir, "audit-keys", "witness.json")
	var err error
	if cfg.Filters.TokenKeys, err = TokenKeys(dir); err != nil {
		return nil, err
	}
	return cfg, nil
}

// WriteConfig writes cfg as phigate.yaml.
func WriteConfig(path string, cfg *server.Config) error {
	b, err := yaml.Marshal(cfg)
	if err != nil {
		return err
	}
	head := []byte("# The configuration phigate-demo up runs phigate with.\n")
	return os.WriteFile(path, append(head, b...), 0o600)
}

func Up(ctx context.Context, o UpOptions, stdout, stderr io.Writer) error {
	if o.Dir == "" {
		o.Dir = Dir
	}
	keys, err := demokeys.LoadOrCreate(o.Dir)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	up, err := Upstream()
	if err != nil {
		return err
	}
	upDone := make(chan error, 1)
	go func() { upDone <- up.Run(ctx, demoUpstream, demoUpLog) }()

	cfg, err := Config(o.Dir, keys)
	if err != nil {
		return err
	}
	// The configuration the demo runs with, for config check and policy
	// eval to read: written before Validate fills in the defaults, so it
	// says only what the demo chose.
	cfgPath := filepath.Join(o.Dir, "phigate.yaml")
	if err := WriteConfig(cfgPath, cfg); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "phigate configuration: %s (bin/phigate config check %s)\n", cfgPath, cfgPath)
	if err := cfg.Validate(); err != nil {
		return err
	}
	server.ApplyRuntime(cfg.Runtime)
	log, err := server.NewLogger(cfg.Log)
	if err != nil {
		return err
	}
	srv, err := server.New(ctx, cfg, log)
	if err != nil {
		return err
	}
	srvDone := make(chan error, 1)
	go func() { srvDone <- srv.Run(ctx) }()

	bootstrap, err := envoy.Bootstrap(envoy.BootstrapConfig{Listen: demoListen, Admin: demoEnvoyAdm,
		Upstream: demoUpstream, Phigate: demoGRPC, Compress: true})
	if err != nil {
		return err
	}
	bpath := filepath.Join(o.Dir, "envoy.yaml")
	if err := os.WriteFile(bpath, bootstrap, 0o600); err != nil {
		return err
	}
	envoyLog, err := os.Create(filepath.Join(o.Dir, "envoy.log"))
	if err != nil {
		return err
	}
	defer envoyLog.Close()
	proc, err := envoy.StartProcess(ctx, bpath, demoEnvoyAdm, envoyLog)
	if err != nil {
		cancel()
		return fmt.Errorf("%w (see %s)", err, envoyLog.Name())
	}
	defer proc.Stop()

	lines, err := demoLines(keys)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "phigate demo stack is up on loopback:\n  Envoy  http://%s  (admin %s)\n  phigate gRPC %s, admin http://%s/metrics\n  legacy FHIR service http://%s/fhir  (request log http://%s)\n\nTry:\n",
		demoListen, demoEnvoyAdm, demoGRPC, demoAdmin, demoUpstream, demoUpLog)
	for _, l := range lines {
		fmt.Fprintf(stdout, "\n# %s\n%s\n", l.title, l.curl)
	}
	fmt.Fprintf(stdout, "\nMint any persona: bin/phigate-demo token --sub prac-007 --role physician --purpose TREAT\nCtrl-C stops the stack.\n")
	if o.Check {
		failed := 0
		for _, l := range lines {
			if l.method == "" {
				continue
			}
			got, err := l.run()
			mark := "ok"
			if err != nil || got != l.want {
				mark, failed = fmt.Sprintf("UNEXPECTED (got %d, %v)", got, err), failed+1
			}
			fmt.Fprintf(stdout, "%-55s want %d: %s\n", l.title, l.want, mark)
		}
		cancel()
		<-srvDone
		if failed > 0 {
			return fmt.Errorf("%d of the printed requests got an unexpected answer", failed)
		}
		return nil
	}
	select {
	case <-ctx.Done():
	case <-proc.Done():
		fmt.Fprintln(stderr, "phigate-demo: envoy exited; see", envoyLog.Name())
	case err := <-srvDone:
		fmt.Fprintln(stderr, "phigate-demo: phigate stopped:", err)
	case err := <-upDone:
		fmt.Fprintln(stderr, "phigate-demo: legacy service stopped:", err)
	}
	cancel()
	<-srvDone
	return nil
}

// TokenKeys returns the tokenization keys the shipped policy names (key
// id demo-1), creating a random secret in dir on first use.
func TokenKeys(dir string) (map[string]string, error) {
	path := filepath.Join(dir, "token-demo-1.key")
	if _, err := os.Stat(path); err != nil {
		secret := make([]byte, 32)
		if _, err := rand.Read(secret); err != nil {
			return nil, err
		}
		if err := os.WriteFile(path, secret, 0o600); err != nil {
			return nil, err
		}
	}
	return map[string]string{"demo-1": path}, nil
}

type demoLine struct {
	title   string
	curl    string
	want    int
	method  string
	path    string
	headers map[string]string
	absent  string // a field the response body must not carry
}

func (l demoLine) run() (int, error) {
	req, err := http.NewRequest(l.method, "http://"+demoListen+l.path, nil)
	if err != nil {
		return 0, err
	}
	for k, v := range l.headers {
		req.Header.Set(k, v)
	}
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		return 0, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return 0, err
	}
	if l.absent != "" && strings.Contains(string(body), l.absent) {
		return resp.StatusCode, fmt.Errorf("the response still carries %q", l.absent)
	}
	return resp.StatusCode, nil
}

func demoLines(keys *demokeys.Keys) ([]demoLine, error) {
	mint := func(s demokeys.TokenSpec) (string, error) { s.TTL = 12 * time.Hour; return keys.Mint(s) }
	doc, err := mint(demokeys.TokenSpec{Subject: "prac-001", Roles: []string{"physician"}, FHIRUser: "Practitioner/prac-001", Purpose: "TREAT", AMR: []string{"pwd", "otp"}})
	if err != nil {
		return nil, err
	}
	billing, err := mint(demokeys.TokenSpec{Subject: "billing-01", Roles: []string{"billing"}, Purpose: "HPAYMT"})
	if err != nil {
		return nil, err
	}
	vars := map[string]string{doc: "$DOC", billing: "$BILLING"}
	mk := func(title string, want int, method, path, token string, extra map[string]string) demoLine {
		h := map[string]string{}
		var b strings.Builder
		fmt.Fprintf(&b, "curl -s -i")
		if method != "GET" {
			fmt.Fprintf(&b, " -X %s", method)
		}
		if token != "" {
			h["authorization"] = "Bearer " + token
			fmt.Fprintf(&b, " -H \"authorization: Bearer %s\"", vars[token])
		}
		for k, v := range extra {
			h[k] = v
			fmt.Fprintf(&b, " -H '%s: %s'", k, v)
		}
		fmt.Fprintf(&b, " 'http://%s%s'", demoListen, path)
		return demoLine{title: title, curl: b.String(), want: want, method: method, path: path, headers: h}
	}
	redacted := mk("allow, redacted: billing sees no telecom or address", 200, "GET", "/fhir/Patient/pat-0001", billing, nil)
	redacted.absent = `"telecom"`
	hl7 := mk("allow, redacted: billing reads the legacy HL7 v2 feed without phone numbers", 200, "GET", "/hl7/patients/pat-0001/adt", billing, nil)
	hl7.absent = "^PRN^PH"
	return []demoLine{
		{title: "tokens (physician prac-001 with MFA; billing clerk)", curl: "export DOC=" + doc + "\nexport BILLING=" + billing},
		mk("allow: prac-001 reads a patient on the care team", 200, "GET", "/fhir/Patient/pat-0001", doc, nil),
		mk("deny 403: prac-001 reads a patient not on the care team", 403, "GET", "/fhir/Patient/pat-0002", doc, nil),
		mk("deny 401: no token", 401, "GET", "/fhir/Patient/pat-0001", "", nil),
		mk("deny 400: ambiguous path (encoded slash)", 400, "GET", "/fhir/Patient%2Fpat-0001", doc, nil),
		redacted,
		hl7,
		mk("break-glass: prac-001 reads pat-0002 in an emergency", 200, "GET", "/fhir/Patient/pat-0002", doc,
			map[string]string{"x-break-glass": "unconscious patient in ED"}),
	}, nil
}

// DefaultFHIRUser maps the demo population's ids to their FHIR
// references: prac-* to Practitioner, pat-* to Patient, rp-* to
// RelatedPerson; any other id has none.
func DefaultFHIRUser(sub string) string {
	switch {
	case strings.HasPrefix(sub, "prac-"):
		return "Practitioner/" + sub
	case strings.HasPrefix(sub, "pat-"):
		return "Patient/" + sub
	case strings.HasPrefix(sub, "rp-"):
		return "RelatedPerson/" + sub
	}
	return ""
}
