package bench

import (
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Mode selects the load loop.
type Mode string

const (
	// Open sends at fixed rates regardless of how fast the target answers.
	Open Mode = "open"
	// Closed keeps a fixed number of requests in flight.
	Closed Mode = "closed"
)

// Config describes one bench invocation. Call Validate before use; Run does.
type Config struct {
	// Target is the system under test: "host:port" or "unix:///path" for a
	// gRPC ext_authz server, "http://host:port" for an HTTP listener.
	Target string `json:"target"`
	// TargetName labels Target in reports (default "target").
	TargetName string `json:"target_name"`
	// Compare is an optional reference of the same kind as Target, run with
	// the same load in the same invocation (e.g. Envoy without phigate).
	Compare     string `json:"compare,omitempty"`
	CompareName string `json:"compare_name,omitempty"` // default "compare"
	// Baseline starts the built-in no-op ext_authz server and uses it as the
	// reference. gRPC targets only; exclusive with Compare.
	Baseline bool `json:"baseline"`

	Mode Mode `json:"mode"` // default Open
	// Rates are the open-loop steps in requests per second (default 500).
	Rates []float64 `json:"rates,omitempty"`
	// Concurrency are the closed-loop steps in requests in flight (default 1,4,16,64).
	Concurrency []int `json:"concurrency,omitempty"`
	// Step is how long each rate or concurrency step is measured (default 10s).
	Step time.Duration `json:"step"`
	// Warmup precedes every step and is not recorded (default 1s; 0 allowed
	// only when set through NoWarmup).
	Warmup   time.Duration `json:"warmup"`
	NoWarmup bool          `json:"-"`
	// Timeout bounds each request (default 2s).
	Timeout time.Duration `json:"timeout"`
	// MaxInFlight caps open-loop requests in flight; when reached the
	// generator waits, and the wait is counted in the latency (default 4096).
	MaxInFlight int `json:"max_in_flight"`
	// Connections is the number of gRPC connections, or the HTTP connection
	// limit per host (default 4).
	Connections int `json:"connections"`
	// MaxDuration is the hard stop for the whole invocation (default: the
	// planned time plus a margin).
	MaxDuration time.Duration `json:"max_duration"`

	// Scenario is a built-in mix name ("read-mostly", "mixed",
	// "adversarial") or a YAML file path (default "mixed").
	Scenario string `json:"scenario"`
	// Seed makes the request sequence reproducible (default 1).
	Seed uint64 `json:"seed"`
	// Pairs and TeamSize, when Pairs is set, override the scenario's (see
	// Scenario.Pairs).
	Pairs    int `json:"pairs,omitempty"`
	TeamSize int `json:"team_size,omitempty"`
	// KeyFile holds the bench's private ES256 JWK. It is created when absent,
	// so a target configured once keeps trusting later runs. Empty: an
	// ephemeral key.
	KeyFile string `json:"key_file,omitempty"`
	// JWKSFile receives the public JWKS the target must trust. Empty: not written.
	JWKSFile string `json:"jwks_file,omitempty"`
	Issuer   string `json:"issuer"`   // default "https://bench.phigate.local"
	Audience string `json:"audience"` // default "phigate"

	// PID is the target process to sample for CPU and RSS. 0: look it up
	// from the listening port or socket when the target is local; -1: never.
	PID int `json:"pid,omitempty"`
	// ComparePID is the same for Compare.
	ComparePID int `json:"compare_pid,omitempty"`
	// TargetDecisions and CompareDecisions, when set, read how many
	// decisions each side evaluated and reused, so that every stage
	// reports the share evaluated.
	TargetDecisions  DecisionCounts `json:"-"`
	CompareDecisions DecisionCounts `json:"-"`

	targetKind  targetKind
	plannedTime time.Duration
}

type targetKind int

const (
	kindGRPC targetKind = iota + 1
	kindHTTP
)

func kindOf(addr string) targetKind {
	if strings.HasPrefix(addr, "http://") || strings.HasPrefix(addr, "https://") {
		return kindHTTP
	}
	return kindGRPC
}

// Validate fills defaults and reports the first invalid field by name.
func (c *Config) Validate() error {
	if c.Target == "" {
		return fieldErr(CodeConfig, "Target", "required")
	}
	if err := validAddr(c.Target); err != nil {
		return fieldErr(CodeConfig, "Target", "%s", err)
	}
	c.targetKind = kindOf(c.Target)
	if c.TargetName == "" {
		c.TargetName = "target"
	}
	if c.Compare != "" {
		if c.Baseline {
			return fieldErr(CodeConfig, "Compare", "cannot be combined with Baseline")
		}
		if err := validAddr(c.Compare); err != nil {
			return fieldErr(CodeConfig, "Compare", "%s", err)
		}
		if kindOf(c.Compare) != c.targetKind {
			return fieldErr(CodeConfig, "Compare", "must be the same kind (gRPC or HTTP) as Target")
		}
		if c.CompareName == "" {
			c.CompareName = "compare"
		}
	}
	if c.Baseline {
		if c.targetKind != kindGRPC {
			return fieldErr(CodeConfig, "Baseline", "the no-op baseline is an ext_authz server; use Compare for HTTP targets")
		}
		c.CompareName = "baseline"
	}
	if c.TargetName == c.CompareName && (c.Compare != "" || c.Baseline) {
		return fieldErr(CodeConfig, "CompareName", "must differ from TargetName")
	}
	switch c.Mode {
	case "":
		c.Mode = Open
	case Open, Closed:
	default:
		return fieldErr(CodeConfig, "Mode", "must be %q or %q, got %q", Open, Closed, c.Mode)
	}
	if c.Mode == Open {
		if len(c.Rates) == 0 {
			c.Rates = []float64{500}
		}
		for i, r := range c.Rates {
			if !(r > 0) || r > 1e6 {
				return fieldErr(CodeConfig, "Rates["+strconv.Itoa(i)+"]", "must be in (0, 1e6], got %g", r)
			}
		}
	} else {
		if len(c.Concurrency) == 0 {
			c.Concurrency = []int{1, 4, 16, 64}
		}
		for i, n := range c.Concurrency {
			if n < 1 || n > 100000 {
				return fieldErr(CodeConfig, "Concurrency["+strconv.Itoa(i)+"]", "must be in [1, 100000], got %d", n)
			}
		}
	}
	if c.Step == 0 {
		c.Step = 10 * time.Second
	}
	if c.Step < 100*time.Millisecond {
		return fieldErr(CodeConfig, "Step", "must be at least 100ms, got %s", c.Step)
	}
	if c.NoWarmup {
		c.Warmup = 0
	} else if c.Warmup == 0 {
		c.Warmup = time.Second
	}
	if c.Warmup < 0 {
		return fieldErr(CodeConfig, "Warmup", "must not be negative")
	}
	if c.Timeout == 0 {
		c.Timeout = 2 * time.Second
	}
	if c.Timeout < time.Millisecond {
		return fieldErr(CodeConfig, "Timeout", "must be at least 1ms, got %s", c.Timeout)
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = 4096
	}
	if c.MaxInFlight < 1 {
		return fieldErr(CodeConfig, "MaxInFlight", "must be positive")
	}
	if c.Connections == 0 {
		c.Connections = 4
	}
	if c.Connections < 1 || c.Connections > 1024 {
		return fieldErr(CodeConfig, "Connections", "must be in [1, 1024], got %d", c.Connections)
	}
	if c.Scenario == "" {
		c.Scenario = "mixed"
	}
	if c.Seed == 0 {
		c.Seed = 1
	}
	if c.Issuer == "" {
		c.Issuer = "https://bench.phigate.local"
	}
	if c.Audience == "" {
		c.Audience = "phigate"
	}
	if c.PID < -1 {
		return fieldErr(CodeConfig, "PID", "must be -1, 0 or a process id")
	}
	if c.ComparePID < -1 {
		return fieldErr(CodeConfig, "ComparePID", "must be -1, 0 or a process id")
	}
	steps := len(c.Rates)
	if c.Mode == Closed {
		steps = len(c.Concurrency)
	}
	targets := 1
	if c.Compare != "" || c.Baseline {
		targets = 2
	}
	c.plannedTime = time.Duration(steps*targets) * (c.Warmup + c.Step + c.Timeout)
	if c.MaxDuration == 0 {
		c.MaxDuration = c.plannedTime + c.plannedTime/4 + 30*time.Second
	}
	if c.MaxDuration < c.Step {
		return fieldErr(CodeConfig, "MaxDuration", "must be at least Step (%s)", c.Step)
	}
	return nil
}

func validAddr(a string) error {
	switch kindOf(a) {
	case kindHTTP:
		u, err := url.Parse(a)
		if err != nil || u.Host == "" {
			return errString("not a valid http(s) URL")
		}
		return nil
	default:
		if p, ok := strings.CutPrefix(a, "unix://"); ok {
			if !strings.HasPrefix(p, "/") {
				return errString("unix socket path must be absolute (unix:///path)")
			}
			return nil
		}
		if strings.Contains(a, "://") {
			return errString("want host:port, unix:///path or http(s)://host:port")
		}
		if !strings.Contains(a, ":") {
			return errString("want host:port")
		}
		return nil
	}
}

type errString string

func (e errString) Error() string { return string(e) }
