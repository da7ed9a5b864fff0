package server

import (
	"bytes"
	"errors"
	"fmt"
	"github.com/phigate/phigate/store"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/phigate/phigate/abuse"
	"github.com/phigate/phigate/audit"
	"github.com/phigate/phigate/authz"
	"github.com/phigate/phigate/console"
	"github.com/phigate/phigate/ingest"
	"github.com/phigate/phigate/notify"
	"github.com/phigate/phigate/plan"
	"github.com/phigate/phigate/policy"
	"github.com/phigate/phigate/policy/decisionlog"
)

// Config is phigate.yaml. Every section validates itself and names the bad
// field in its error.
type Config struct {
	Listen   ListenConfig          `yaml:"listen"`
	Log      LogConfig             `yaml:"log"`
	JWT      authz.JWTConfig       `yaml:"jwt"`
	Services authz.ServiceAccounts `yaml:"service_accounts"` // mTLS principal → roles
	Request  authz.RequestConfig   `yaml:"request"`
	Policy   policy.Config         `yaml:"policy"`
	Filters  FiltersConfig         `yaml:"filters"`
	Audit    audit.Config          `yaml:"audit"`
	Runtime  RuntimeConfig         `yaml:"runtime"`
	Shutdown ShutdownConfig        `yaml:"shutdown"`

	// Owners is where the stored resource a write changes is read, so the
	// write is authorized on the patients who own it.
	Owners authz.OwnerConfig `yaml:"owners"`

	// Upstream says what of the client's request reaches the upstream.
	Upstream UpstreamConfig `yaml:"upstream"`

	// Store is where the state every replica shares lives.
	Store StoreConfig `yaml:"store"`

	// Ingest are the listeners hospitals publish care relationships to
	// (HL7 v2 ADT over MLLP, FHIR CareTeam and Encounter).
	Ingest ingest.Config `yaml:"ingest"`
	// DecisionLogs sends each decision, cut down to what carries no PHI,
	// to a remote endpoint in OPA's decision log shape, beside the audit
	// trail.
	DecisionLogs decisionlog.Config `yaml:"decision_logs"`
	// Abuse throttles callers and holds the counters of usage limits.
	Abuse abuse.Config `yaml:"abuse"`
	// Notify is where the notify obligation (a break-glass access)
	// is delivered; docs/notify.md.
	Notify notify.Config `yaml:"notify"`

	// Console is the privacy officer's console on the admin listener.
	Console console.Config `yaml:"console"`

	// Approvals: two-person approval and just-in-time elevation
	// (approvals_config.go).
	Approvals ApprovalsConfig `yaml:"approvals"`

	// validated is set by a successful Validate; New refuses a
	// configuration without it, since the defaults it fills are ones New
	// relies on (the admin address, the body limit, the grace period).
	validated bool
}

// StoreConfig names the shared PostgreSQL store. The connection string
// is read from a file or an environment variable (it usually holds a
// password); with neither, state lives in this process's memory, which is
// right for one replica only.
type StoreConfig struct {
	PostgresDSNFile string `yaml:"postgres_dsn_file"`
	PostgresDSNEnv  string `yaml:"postgres_dsn_env"`
}

// dsn returns the connection string, or "" for the embedded store.
func (c StoreConfig) dsn() (string, error) {
	return store.ReadDSN(c.PostgresDSNFile, c.PostgresDSNEnv, "store.postgres_dsn_file", "store.postgres_dsn_env")
}

// UpstreamConfig governs the request the upstream receives. The
// break-glass reason is never forwarded (free text that may name a
// patient, bound for the upstream's logs); the client's Authorization is
// removed unless ForwardAuthorization, since the upstream trusts the
// identity headers phigate writes.
type UpstreamConfig struct {
	ForwardAuthorization bool `yaml:"forward_authorization"`
}

// ListenConfig names phigate's listeners.
type ListenConfig struct {
	// GRPC is host:port for both gRPC services; GRPCUnix a Unix socket path.
	// At least one is set.
	GRPC     string `yaml:"grpc"`
	GRPCUnix string `yaml:"grpc_unix"`
	// Admin serves /healthz, /readyz and /metrics over HTTP.
	Admin string    `yaml:"admin"`
	TLS   TLSConfig `yaml:"tls"`
	// Pprof serves Go's profiles under /debug/pprof/ on the admin
	// listener, for profiling phigate under load. Off by default: a
	// profile shows the process's memory, which holds requests.
	Pprof bool `yaml:"pprof"`
}

// TLSConfig enables TLS (and mTLS with ClientCA) on the TCP gRPC listener,
// TLS 1.2 at least. The files are read again when they change (looked at
// at most once a second, on a handshake), so a rotated certificate or CA
// is used by new connections without a restart; a set that does not load
// is logged and the last good one keeps serving.
type TLSConfig struct {
	Cert     string `yaml:"cert"`
	Key      string `yaml:"key"`
	ClientCA string `yaml:"client_ca"`
}

// LogConfig sets the operational log. It never carries PHI at any level.
type LogConfig struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // json or console
}

// FiltersConfig configures the response filters.
type FiltersConfig struct {
	// TokenKeys maps a tokenization key id to a file holding the secret.
	TokenKeys map[string]string `yaml:"token_keys"`
	MaxBody   int               `yaml:"max_body"`
	// PlanMarkerKey is a file holding the key that MACs the plan marker
	// ext_authz attaches to every allowed request and ext_proc checks
	// before it releases a response. Every replica behind one Envoy must
	// share it; empty means a random key per process, which is right only
	// when one phigate serves both filters of its Envoy.
	PlanMarkerKey string `yaml:"plan_marker_key"`
	// PlanMetadataVersion is the plan metadata version ext_authz writes
	// (default plan.Version). Version 2 carries the user and the
	// patients to ext_proc for the filtering record; a fleet upgrading
	// from a release that reads only version 1 runs at 1 until every
	// replica is upgraded, then switches to 2. ext_proc reads both.
	PlanMetadataVersion int `yaml:"plan_metadata_version"`
}

// KeyIDs are the ids of the configured token keys, which is all the
// decision side needs to know of them: a decision is compiled against
// them, so one naming another key is refused.
func (c FiltersConfig) KeyIDs() plan.Keys {
	return plan.NewKeys(slices.Collect(maps.Keys(c.TokenKeys))...)
}

// RuntimeConfig tunes the Go runtime for a sidecar. Policy evaluation
// allocates heavily and short-lived; collecting less often buys throughput,
// and the soft memory limit keeps the heap bounded all the same.
type RuntimeConfig struct {
	// GCPercent is GOGC; the GOGC environment variable wins. Default 400.
	GCPercent int `yaml:"gc_percent"`
	// MemoryLimitMB is a soft limit on the runtime's memory; GOMEMLIMIT wins.
	// Default 100: with GOGC 400 the collector runs rarely until the heap
	// nears it. Raise it with the policy data (a live heap near the limit
	// makes the collector run continuously).
	MemoryLimitMB int `yaml:"memory_limit_mb"`
}

// ShutdownConfig controls draining on SIGTERM.
type ShutdownConfig struct {
	// DrainDelay keeps serving after readiness turns false, so load
	// balancers stop sending before the listeners close.
	DrainDelay time.Duration `yaml:"drain_delay"`
	// Grace bounds how long in-flight calls may take to finish.
	Grace time.Duration `yaml:"grace"`
}

// LoadConfig reads and validates a YAML file. Unknown fields are errors, so
// a misspelt setting is never silently ignored.
func LoadConfig(path string) (*Config, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if raw, err = expandEnv(raw, os.LookupEnv); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, yamlError(err))
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return &c, nil
}

// Validate fills defaults and names the first bad field.
func (c *Config) Validate() error {
	var problems []error
	add := func(err error) {
		if err != nil {
			problems = append(problems, err)
		}
	}
	if c.Listen.GRPC == "" && c.Listen.GRPCUnix == "" {
		add(errors.New("listen.grpc: set listen.grpc (host:port) or listen.grpc_unix (socket path)"))
	}
	if _, err := c.Store.dsn(); err != nil {
		add(err)
	}
	add(c.Abuse.Validate())
	add(c.Console.Validate())
	if c.Listen.GRPC != "" && !strings.Contains(c.Listen.GRPC, ":") {
		add(fmt.Errorf("listen.grpc: %q is not host:port", c.Listen.GRPC))
	}
	if c.Listen.Admin == "" {
		c.Listen.Admin = "127.0.0.1:9902"
	}
	if !strings.Contains(c.Listen.Admin, ":") {
		add(fmt.Errorf("listen.admin: %q is not host:port", c.Listen.Admin))
	}
	if t := c.Listen.TLS; (t.Cert == "") != (t.Key == "") {
		add(errors.New("listen.tls.key: tls.cert and tls.key go together"))
	} else if t.ClientCA != "" && t.Cert == "" {
		add(errors.New("listen.tls.client_ca: mTLS needs tls.cert and tls.key"))
	}
	switch c.Log.Level {
	case "":
		c.Log.Level = "info"
	case "debug", "info", "warn", "error":
	default:
		add(fmt.Errorf("log.level: %q is not one of debug, info, warn, error", c.Log.Level))
	}
	switch c.Log.Format {
	case "":
		c.Log.Format = "json"
	case "json", "console":
	default:
		add(fmt.Errorf("log.format: %q is not json or console", c.Log.Format))
	}
	add(c.JWT.Validate())
	add(c.Services.Validate())
	if c.Request.Base == "" {
		c.Request.Base = "/fhir"
	}
	add(c.Request.Validate())
	add(c.Owners.Validate())
	add(c.Approvals.Validate(c.Request.LegacyRoutes))
	add(c.Policy.Validate())
	add(c.DecisionLogs.Validate())
	for id, f := range c.Filters.TokenKeys {
		if _, err := os.Stat(f); err != nil {
			add(fmt.Errorf("filters.token_keys[%q]: %v", id, err))
		}
	}
	if f := c.Filters.PlanMarkerKey; f != "" {
		if _, err := os.Stat(f); err != nil {
			add(fmt.Errorf("filters.plan_marker_key: %v", err))
		}
	}
	switch v := c.Filters.PlanMetadataVersion; {
	case v == 0:
		c.Filters.PlanMetadataVersion = plan.Version
	case v < plan.MinVersion || v > plan.Version:
		add(fmt.Errorf("filters.plan_metadata_version: %d is not one of %d to %d", v, plan.MinVersion, plan.Version))
	}
	if c.Filters.MaxBody == 0 {
		c.Filters.MaxBody = 8 << 20
	}
	if err := c.Audit.Validate(); err != nil {
		add(fmt.Errorf("audit: %w", err))
	}
	add(c.Ingest.Validate())
	add(c.checkFiles())
	add(c.Notify.Validate())
	if c.Runtime.GCPercent == 0 {
		c.Runtime.GCPercent = 400
	}
	if c.Runtime.MemoryLimitMB == 0 {
		c.Runtime.MemoryLimitMB = 100
	}
	if c.Runtime.GCPercent < 25 || c.Runtime.MemoryLimitMB < 64 {
		add(errors.New("runtime.gc_percent: at least 25, and runtime.memory_limit_mb at least 64"))
	}
	if c.Shutdown.Grace == 0 {
		c.Shutdown.Grace = 20 * time.Second
	}
	if c.Shutdown.DrainDelay < 0 || c.Shutdown.Grace < 0 {
		add(errors.New("shutdown.grace: durations must not be negative"))
	}
	if len(problems) > 0 {
		return errors.Join(problems...)
	}
	c.validated = true
	return nil
}
