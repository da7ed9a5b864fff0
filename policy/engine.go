package policy

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/phigate/phigate/authz"
	"github.com/phigate/phigate/plan"
)

// Config is the policy section of phigate's configuration.
type Config struct {
	Source `yaml:",inline"`
	// ReloadInterval is how often a directory or bundle file is checked for
	// changes; 0 disables reloading. The embedded library never reloads.
	ReloadInterval time.Duration `yaml:"reload_interval"`
	// RunTests makes every load run the bundle's own tests before serving.
	RunTests bool `yaml:"run_tests"`
	// EvalTimeout bounds one evaluation.
	EvalTimeout time.Duration `yaml:"eval_timeout"`
	// DecisionCache reuses decisions the policy marks as lasting
	// (decision.cache.until_ns) for identical later requests.
	DecisionCache DecisionCacheConfig `yaml:"decision_cache"`
	// BundleServer downloads the policy from an OPA bundle server instead
	// of reading Source; see bundleserver.go.
	BundleServer BundleServerConfig `yaml:"bundle_server"`
	// TokenKeys are the ids of the response filters' token keys. A
	// decision whose directives name any other key is refused when it is
	// decoded. Not read from the policy section: the wiring sets it from
	// the filters' keys. The zero value holds none.
	TokenKeys plan.Keys `yaml:"-"`
	// OPAEnvoy serves a policy written for the OPA-Envoy plugin, with
	// the plugin's input and result documents (docs/opa-envoy.md).
	OPAEnvoy *OPAEnvoyConfig `yaml:"opa_envoy"`
}

// DecisionCacheConfig sizes the decision cache.
type DecisionCacheConfig struct {
	// Disabled evaluates the policy for every request.
	Disabled bool `yaml:"disabled"`
	// Entries is how many decisions are kept (default 8192). While the
	// cache turns over, up to twice as many may be held.
	Entries int `yaml:"entries"`
	// MaxAge caps how long one decision is reused, whatever the policy's
	// until_ns says (default 10m).
	MaxAge time.Duration `yaml:"max_age"`
}

// DefaultDecisionCacheEntries is the decision cache size when none is configured.
const DefaultDecisionCacheEntries = 8192

// entries is the cache size to build snapshots with (0: no cache).
func (c DecisionCacheConfig) entries() int {
	if c.Disabled {
		return 0
	}
	return c.Entries
}

// Validate fills defaults and checks the source.
func (c *Config) Validate() error {
	if err := c.Source.Validate(); err != nil {
		return err
	}
	if c.OPAEnvoy != nil {
		if err := c.OPAEnvoy.Validate(); err != nil {
			return err
		}
	}
	if c.BundleServer.Enabled() {
		if c.Dir != "" || c.BundleFile != "" {
			return errors.New("policy.bundle_server: set policy.bundle_server, policy.dir or policy.bundle, only one")
		}
		if c.ReloadInterval != 0 {
			return errors.New("policy.reload_interval: a bundle server is polled by policy.bundle_server.polling")
		}
		if err := c.BundleServer.Validate(); err != nil {
			return err
		}
	} else if c.BundleServer != (BundleServerConfig{}) && !c.BundleServer.FetchOnly {
		return errors.New("policy.bundle_server.url: required when policy.bundle_server is set")
	}
	if c.ReloadInterval < 0 {
		return errors.New("policy.reload_interval: must not be negative")
	}
	if c.ReloadInterval > 0 && c.ReloadInterval < 100*time.Millisecond {
		return errors.New("policy.reload_interval: must be at least 100ms")
	}
	if c.EvalTimeout == 0 {
		c.EvalTimeout = 500 * time.Millisecond
	}
	if c.EvalTimeout < 0 {
		return errors.New("policy.eval_timeout: must be positive")
	}
	switch {
	case c.DecisionCache.Entries < 0:
		return errors.New("policy.decision_cache.entries: must not be negative")
	case c.DecisionCache.Entries > 10_000_000:
		return errors.New("policy.decision_cache.entries: at most 10000000")
	case c.DecisionCache.Entries == 0:
		c.DecisionCache.Entries = DefaultDecisionCacheEntries
	}
	switch {
	case c.DecisionCache.MaxAge < 0:
		return errors.New("policy.decision_cache.max_age: must not be negative")
	case c.DecisionCache.MaxAge == 0:
		c.DecisionCache.MaxAge = 10 * time.Minute
	}
	return nil
}

// Status is what /readyz and operators see of the policy.
type Status struct {
	Ready       bool      `json:"ready"`
	Revision    string    `json:"revision,omitempty"`
	Source      string    `json:"source"`
	LoadedAt    time.Time `json:"loaded_at,omitzero"`
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
}

// Engine serves the current Snapshot and reloads it. It implements
// authz.Evaluator.
type Engine struct {
	cfg Config
	log *zap.Logger
	cur atomic.Pointer[Snapshot]

	// loading serialises loads: one compile at a time, each swapped in
	// before the next reads its source, so the load that ran last is the
	// one served. Readers never take it: a compile of a large policy takes
	// seconds, and /readyz and every Check must answer meanwhile from cur.
	loading sync.Mutex

	mu        sync.Mutex // guards the fields below, held only to read or write them
	lastErr   error
	lastErrAt time.Time
	stamp     string // change stamp of the source at the last load attempt

	cacheStats *CacheStats
	revision   *prometheus.GaugeVec
	reloads    *prometheus.CounterVec
	stop       chan struct{}
	done       chan struct{}
	closeOne   sync.Once

	// bundles is the bundle server's poller state; nil for other sources.
	bundles *bundlePoller

	// beforeCompile, when set, runs after a load has read its source and
	// before it compiles: tests hold a compile there to see what readers
	// do meanwhile.
	beforeCompile func()
}

var _ authz.Evaluator = (*Engine)(nil)

// NewEngine loads and compiles the configured policy. A policy that fails to
// load, compile, pass its tests or produce a well-shaped decision is an
// error: phigate does not start without a sound policy.
func NewEngine(ctx context.Context, cfg Config, log *zap.Logger, reg prometheus.Registerer) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = zap.NewNop()
	}
	e := &Engine{
		cfg: cfg, log: log, stop: make(chan struct{}), done: make(chan struct{}),
		revision: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "phigate_policy_revision_info", Help: "The policy revision being served (value 1).",
		}, []string{"revision"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phigate_policy_reloads_total", Help: "Policy load attempts by result.",
		}, []string{"result"}),
	}
	var err error
	if e.cacheStats, err = NewCacheStats(reg); err != nil {
		return nil, err
	}
	if reg != nil {
		if err := reg.Register(e.revision); err != nil {
			return nil, err
		}
		if err := reg.Register(e.reloads); err != nil {
			return nil, err
		}
	}
	if cfg.BundleServer.Enabled() {
		// No bundle yet is not an error: phigate starts not ready and
		// denies until the first good bundle (a kept one, or a download).
		if err := e.startBundles(reg); err != nil {
			return nil, err
		}
		return e, nil
	}
	if err := e.load(ctx); err != nil {
		return nil, err
	}
	if cfg.ReloadInterval > 0 && (cfg.Dir != "" || cfg.BundleFile != "") {
		go e.watch()
	} else {
		close(e.done)
	}
	return e, nil
}

// CacheCounts reports the decision cache's outcomes since the Engine started.
func (e *Engine) CacheCounts() CacheCounts {
	return e.cacheStats.counts()
}

// Snapshot returns the policy being served.
func (e *Engine) Snapshot() *Snapshot { return e.cur.Load() }

// Evaluate implements authz.Evaluator with the current snapshot.
func (e *Engine) Evaluate(ctx context.Context, req *authz.Request) (authz.Decision, error) {
	s := e.cur.Load()
	if s == nil {
		return authz.Decision{}, &Error{Code: CodeEval, Err: errors.New("no policy loaded")}
	}
	return s.evaluateWithin(ctx, req, e.cfg.EvalTimeout)
}

// Reload loads the source again and swaps it in when it is sound; on any
// error the current snapshot keeps serving and the error is reported.
func (e *Engine) Reload(ctx context.Context) error {
	if e.bundles != nil {
		return e.pollOnce(ctx)
	}
	return e.load(ctx)
}

func (e *Engine) load(ctx context.Context) error {
	e.loading.Lock()
	defer e.loading.Unlock()
	stamp := sourceStamp(e.cfg.Source)
	e.mu.Lock()
	e.stamp = stamp
	e.mu.Unlock()
	b, err := e.cfg.Source.Load()
	if err != nil {
		e.rejected(err)
		return err
	}
	_, err = e.install(ctx, e.cfg.Source.String(), b)
	return err
}

// install compiles b and swaps it in when it is sound; on any error the
// current snapshot keeps serving. The caller holds e.loading.
func (e *Engine) install(ctx context.Context, src string, b *bundle.Bundle) (*Snapshot, error) {
	if e.beforeCompile != nil {
		e.beforeCompile()
	}
	s, err := Build(ctx, src, b, BuildOptions{
		RunTests: e.cfg.RunTests, DecisionCache: e.cfg.DecisionCache.entries(),
		CacheMaxAge: e.cfg.DecisionCache.MaxAge, CacheStats: e.cacheStats, TokenKeys: e.cfg.TokenKeys,
		OPAEnvoy: e.cfg.OPAEnvoy,
	})
	if err != nil {
		e.rejected(err)
		return nil, err
	}
	// The swap and the cleared error change together, so Status never
	// shows the new revision with the old one's failure.
	e.mu.Lock()
	old := e.cur.Swap(s)
	e.lastErr = nil
	e.mu.Unlock()
	e.reloads.WithLabelValues("ok").Inc()
	if old != nil {
		e.revision.DeleteLabelValues(old.Revision)
	}
	e.revision.WithLabelValues(s.Revision).Set(1)
	e.log.Info("policy loaded", zap.String("revision", s.Revision), zap.String("source", s.Source), zap.Int("tests_passed", s.Tests),
		zap.Strings("decision_cache_key", s.CacheKeyPaths()))
	return s, nil
}

// rejected records a load that did not become the served policy.
func (e *Engine) rejected(err error) {
	e.mu.Lock()
	e.lastErr, e.lastErrAt = err, time.Now()
	e.mu.Unlock()
	e.reloads.WithLabelValues("error").Inc()
	if old := e.cur.Load(); old != nil {
		e.log.Error("policy reload rejected; still serving the previous revision",
			zap.String("serving", old.Revision), zap.Error(err))
	}
}

// Status reports the serving revision and the last reload failure. It
// never waits for a load in progress.
func (e *Engine) Status() Status {
	e.mu.Lock()
	defer e.mu.Unlock()
	st := Status{Source: e.cfg.Source.String()}
	if e.bundles != nil {
		st.Source = e.cfg.BundleServer.String()
	}
	if s := e.cur.Load(); s != nil {
		st.Ready, st.Revision, st.LoadedAt = true, s.Revision, s.LoadedAt
	}
	if e.lastErr != nil {
		st.LastError, st.LastErrorAt = e.lastErr.Error(), e.lastErrAt
	}
	return st
}

// watch polls the source for changes. Polling works the same for a
// directory, a bundle file replaced by rename, and a ConfigMap symlink swap.
func (e *Engine) watch() {
	defer close(e.done)
	t := time.NewTicker(e.cfg.ReloadInterval)
	defer t.Stop()
	for {
		select {
		case <-e.stop:
			return
		case <-t.C:
			e.mu.Lock()
			changed := sourceStamp(e.cfg.Source) != e.stamp
			e.mu.Unlock()
			if changed {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				_ = e.load(ctx)
				cancel()
			}
		}
	}
}

// Close stops the watcher.
func (e *Engine) Close() {
	e.closeOne.Do(func() { close(e.stop) })
	<-e.done
}

// sourceStamp summarises names, sizes and modification times of the source
// files; any edit changes it.
func sourceStamp(s Source) string {
	if s.BundleFile != "" {
		st, err := os.Stat(s.BundleFile)
		if err != nil {
			return "missing"
		}
		return fmt.Sprintf("%d/%d", st.Size(), st.ModTime().UnixNano())
	}
	if s.Dir == "" {
		return "embedded"
	}
	var stamp []byte
	_ = filepath.WalkDir(s.Dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if info, err := d.Info(); err == nil {
			stamp = fmt.Appendf(stamp, "%s:%d:%d;", p, info.Size(), info.ModTime().UnixNano())
		}
		return nil
	})
	return string(stamp)
}
