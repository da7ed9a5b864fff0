// Package server assembles one phigate: the policy engine, the identity
// verifier, the audit trail, the request parser and the response filters,
// behind the ext_authz and ext_proc gRPC services and the admin listener.
// New wires and binds everything, so a bad configuration fails before
// anything is served; Run serves until its context ends and then drains.
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/phigate/phigate/store"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime/debug"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/phigate/phigate/abuse"
	"github.com/phigate/phigate/audit"
	"github.com/phigate/phigate/authz"
	"github.com/phigate/phigate/console"
	"github.com/phigate/phigate/envoy"
	"github.com/phigate/phigate/filters"
	"github.com/phigate/phigate/notify"
	"github.com/phigate/phigate/policy"
)

// Server is one phigate: both gRPC services, the admin listener and
// everything they share.
type Server struct {
	cfg      *Config
	log      *zap.Logger
	engine   *policy.Engine
	verifier *authz.JWTVerifier
	grpc     *grpc.Server
	health   *health.Server
	admin    *http.Server
	draining atomic.Bool
	closers  []func()
	// store is the replica's view of the shared state; storeKind names
	// the backend ("memory" or "postgres") for /readyz.
	store     *store.Reader
	storeKind string
	console   *console.Console
	// approvals serves the approval workflow (approvals.go); nil when
	// none is configured.
	approvals *approvalAdmin

	// Addresses actually bound (useful with port 0).
	grpcAddr  string
	adminAddr string
	listeners []net.Listener
	adminLn   net.Listener

	// feeds are the clinical event feeds' listeners (ingest.go).
	feeds *feeds
}

// ApplyRuntime sets the collector's pace and soft memory limit for the
// process, unless the operator set GOGC or GOMEMLIMIT. It is the caller's
// to apply, not New's: both settings are process-wide, and a process that
// holds more than phigate sizes them otherwise.
func ApplyRuntime(c RuntimeConfig) {
	ApplyGCPercent(c)
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(int64(c.MemoryLimitMB) << 20)
	}
}

// ApplyGCPercent sets the collector's pace unless the operator set GOGC.
func ApplyGCPercent(c RuntimeConfig) {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(c.GCPercent)
	}
}

// NewLogger builds the operational log the configuration names.
func NewLogger(c LogConfig) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(c.Level)
	if err != nil {
		return nil, err
	}
	zc := zap.NewProductionConfig()
	if c.Format == "console" {
		zc = zap.NewDevelopmentConfig()
	}
	zc.Level = zap.NewAtomicLevelAt(lvl)
	zc.DisableStacktrace = true
	return zc.Build()
}

// streamWorkers is how many gRPC worker goroutines serve calls.
const streamWorkers = 64

// healthServices are the names the gRPC health service answers for: the
// whole server ("") and each service phigate offers Envoy.
var healthServices = []string{"", authv3.Authorization_ServiceDesc.ServiceName, extprocv3.ExternalProcessor_ServiceDesc.ServiceName}

// New wires every component and binds the listeners; nothing is served
// until Run. cfg must have passed Validate, which fills the defaults New
// relies on. Any failure here is a start-up error: what New acquired is
// released, and the caller should exit non-zero. A Server that is never
// Run is released with Close.
func New(ctx context.Context, cfg *Config, log *zap.Logger, opts ...Option) (*Server, error) {
	o, err := buildOptions(ctx, cfg, log, opts)
	if err != nil {
		return nil, err
	}
	for _, w := range cfg.Warnings() {
		log.Warn("configuration", zap.String("warning", w))
	}
	s := &Server{cfg: cfg, log: log}
	ok := false
	defer func() {
		if !ok {
			s.Close()
		}
	}()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	registerBuildInfo(reg, o.build)

	// Decisions are checked against the token keys the filters hold, so
	// a directive naming another key denies the request.
	pc := cfg.Policy
	pc.TokenKeys = cfg.Filters.KeyIDs()
	s.engine, err = policy.NewEngine(ctx, pc, log.Named("policy"), reg)
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, s.engine.Close)
	s.verifier, err = authz.NewJWTVerifier(ctx, cfg.JWT, log.Named("jwt"))
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, func() { _ = s.verifier.Close() })
	if err := s.verifier.Register(reg); err != nil {
		return nil, err
	}
	trail, err := audit.Open(cfg.Audit, audit.WithLogger(log.Named("audit")), audit.WithRegisterer(reg))
	if err != nil {
		return nil, err
	}
	// The key id is what an operator compares with the key they pinned
	// for "audit verify --trusted-keys".
	log.Info("audit trail open", zap.String("dir", cfg.Audit.Dir), zap.String("key_id", audit.KeyID(trail.PublicKey())),
		zap.String("witness_file", cfg.Audit.WitnessFile), zap.Uint64("records", trail.Recovery().Records))
	s.closers = append(s.closers, func() { _ = trail.Close() })
	// Closed before the trail (closers run last first), so that what the
	// flush delivers or abandons is recorded.
	notifier, err := notify.New(cfg.Notify, notifyAudit{trail}, log.Named("notify"), reg,
		notify.WithServer(cfg.Audit.Server), notify.WithAuditDir(cfg.Audit.Dir))
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, notifier.Close)
	if err, w := cfg.NotifyProblems(s.engine.Snapshot()); err != nil || w != "" {
		log.Warn("configuration", zap.String("warning", w), zap.NamedError("problem", err))
	}
	parser, err := authz.NewRequestParser(cfg.Request)
	if err != nil {
		return nil, err
	}
	// Without owners.upstream, writes to patient data other than a
	// Patient are refused: their owners cannot be read.
	var owners authz.OwnerResolver
	if cfg.Owners.Upstream != "" {
		if owners, err = authz.NewUpstreamOwners(cfg.Owners, cfg.Request.Base, authz.ResourcePatients(cfg.Request.Base)); err != nil {
			return nil, err
		}
	}
	st, err := openStore(ctx, cfg.Store)
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, func() { _ = st.Close() })
	// Before the feeds: its closer closes the trail, after theirs.
	if err := s.startShipping(ctx, trail, log, reg); err != nil {
		return nil, err
	}
	if err := s.newFeeds(cfg.Ingest, st, trail, reg); err != nil {
		return nil, err
	}
	s.store, s.storeKind = store.NewReader(st, 0), "memory"
	if _, ok := st.(*store.Postgres); ok {
		s.storeKind = "postgres"
	}
	registerStoreMetrics(reg, s.store.Health())
	counters, memberKey, err := cfg.Abuse.Open()
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, func() { _ = counters.Close() })
	guard := abuse.NewGuard(counters, cfg.Abuse.Buckets, memberKey, s.store, log.Named("abuse"), reg)
	s.store.OnAlertsCleared(func(subject string) { guard.Cleared(context.Background(), subject) })
	var grants authz.GrantStore = s.store
	if o.grantsSet {
		grants = o.grants
	}
	recorder, err := s.decisionLogs(trail, o.build, reg)
	if err != nil {
		return nil, err
	}
	approvals, adm, err := newApprovals(cfg.Approvals, st, s.store, s.verifier, trail, log.Named("approvals"))
	if err != nil {
		return nil, err
	}
	s.approvals = adm
	az := authz.NewAuthorizer(authz.Options{
		Verifier:        s.verifier,
		Parser:          parser,
		Evaluator:       s.engine,
		Recorder:        obligedRecorder{recorder, notifier},
		Grants:          grants,
		Care:            s.store,
		Consents:        s.store,
		Elevations:      s.store,
		Alerts:          s.store,
		Guard:           guard,
		Approvals:       approvals,
		Owners:          owners,
		ServiceAccounts: cfg.Services,
		Logger:          log.Named("authz"),
	})
	marker, err := planMarkerKey(cfg.Filters.PlanMarkerKey)
	if err != nil {
		return nil, err
	}
	log.Info("plan marker key", zap.Bool("configured", cfg.Filters.PlanMarkerKey != ""))
	authOpts := []envoy.Option{envoy.WithMarkerKey(marker), envoy.WithForwardAuthorization(cfg.Upstream.ForwardAuthorization),
		envoy.WithPlanMetadataVersion(cfg.Filters.PlanMetadataVersion)}
	if oe := cfg.Policy.OPAEnvoy; oe != nil {
		// An OPA-Envoy policy reads the plugin's input document.
		authOpts = append(authOpts, envoy.WithOPAEnvoyInput(oe.SkipRequestBodyParse))
	}
	authSrv, err := envoy.NewAuthServer(az, log.Named("ext_authz"), reg, authOpts...)
	if err != nil {
		return nil, err
	}
	keys := map[string][]byte{}
	for id, f := range cfg.Filters.TokenKeys {
		k, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("filters.token_keys[%q]: %w", id, err)
		}
		keys[id] = k
	}
	engine, err := filters.NewEngine(filters.Config{Keys: keys, MaxBody: cfg.Filters.MaxBody})
	if err != nil {
		return nil, err
	}
	procSrv, err := envoy.NewProcServer(engine, filterAudit{trail}, log.Named("ext_proc"), reg, envoy.WithMarkerKey(marker),
		envoy.WithUsageWatcher(guard))
	if err != nil {
		return nil, err
	}

	// Calls run on long-lived workers rather than a fresh goroutine each:
	// a fresh goroutine grows its stack by copying on every deep call
	// chain, which measured about a tenth of the CPU of a Check. When all
	// workers are busy (calls waiting on the audit fsync), gRPC starts a
	// goroutine as before.
	gopts := []grpc.ServerOption{grpc.NumStreamWorkers(streamWorkers)}
	if cfg.Listen.TLS.Cert != "" {
		tf, err := newTLSFiles(cfg.Listen.TLS, log.Named("tls"))
		if err != nil {
			return nil, err
		}
		creds := countedCreds{credentials.NewTLS(tf.serverConfig()), handshakeFailures(reg).WithLabelValues("grpc")}
		gopts = append(gopts, grpc.Creds(creds))
	}
	s.grpc = grpc.NewServer(gopts...)
	authv3.RegisterAuthorizationServer(s.grpc, authSrv)
	extprocv3.RegisterExternalProcessorServer(s.grpc, procSrv)
	s.health = health.NewServer()
	healthpb.RegisterHealthServer(s.grpc, s.health)

	if cfg.Listen.GRPC != "" {
		ln, err := net.Listen("tcp", cfg.Listen.GRPC)
		if err != nil {
			return nil, fmt.Errorf("listen.grpc: %w", err)
		}
		s.listeners = append(s.listeners, ln)
		s.closers = append(s.closers, func() { _ = ln.Close() })
		s.grpcAddr = ln.Addr().String()
	}
	if cfg.Listen.GRPCUnix != "" {
		_ = os.Remove(cfg.Listen.GRPCUnix)
		ln, err := net.Listen("unix", cfg.Listen.GRPCUnix)
		if err != nil {
			return nil, fmt.Errorf("listen.grpc_unix: %w", err)
		}
		s.listeners = append(s.listeners, ln)
		s.closers = append(s.closers, func() { _ = ln.Close() })
	}
	s.adminLn, err = net.Listen("tcp", cfg.Listen.Admin)
	if err != nil {
		return nil, fmt.Errorf("listen.admin: %w", err)
	}
	s.closers = append(s.closers, func() { _ = s.adminLn.Close() })
	s.adminAddr = s.adminLn.Addr().String()
	if cfg.Console.Enabled {
		key, err := audit.LoadEncryptionKey(cfg.Audit.EncryptionKeyFile, cfg.Audit.EncryptionKeyEnv)
		if err != nil {
			return nil, fmt.Errorf("console: %w", err)
		}
		deps := console.Deps{Verifier: s.verifier, AuditDir: cfg.Audit.Dir,
			EncryptionKey: key, Recorder: trail, Alerts: st, Logger: log.Named("console")}
		if s.approvals != nil {
			deps.Approvals = s.approvals
		}
		if rs, ok := st.(console.ReviewStore); ok {
			deps.Reviews = rs
		}
		if deps.Roles, err = policyRoles(cfg.Policy.Source); err != nil {
			return nil, fmt.Errorf("console: %w", err)
		}
		if s.console, err = console.New(cfg.Console, deps); err != nil {
			return nil, err
		}
	}
	s.admin = &http.Server{Handler: s.adminMux(reg), ReadHeaderTimeout: 5 * time.Second}
	ok = true
	return s, nil
}

// openStore opens the shared PostgreSQL store the configuration names,
// checking its schema, or the embedded one.
func openStore(ctx context.Context, c StoreConfig) (store.Store, error) {
	dsn, err := c.dsn()
	if err != nil {
		return nil, err
	}
	if dsn == "" {
		return store.NewMemory(0), nil
	}
	return store.OpenPostgres(ctx, dsn)
}

// planMarkerKey loads the fleet's plan marker key, or makes one for this
// server when none is configured.
func planMarkerKey(path string) (*envoy.MarkerKey, error) {
	if path == "" {
		return envoy.RandomMarkerKey()
	}
	k, err := envoy.LoadMarkerKey(path)
	if err != nil {
		return nil, fmt.Errorf("filters.plan_marker_key: %w", err)
	}
	return k, nil
}

func (s *Server) adminMux(reg *prometheus.Registry) http.Handler {
	mux := http.NewServeMux()
	if s.console != nil {
		mux.Handle("/console/", s.console)
	}
	if s.cfg.Listen.Pprof {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		st := s.engine.Status()
		body := struct {
			Ready    bool          `json:"ready"`
			Draining bool          `json:"draining,omitempty"`
			Policy   policy.Status `json:"policy"`
			Store    storeStatus   `json:"store"`
			Ingest   string        `json:"ingest,omitempty"`
		}{st.Ready && !s.draining.Load() && !s.feeds.failed.Load(), s.draining.Load(), st, s.storeStatus(), ""}
		if s.feeds.failed.Load() {
			body.Ingest = "a feed listener stopped"
		}
		w.Header().Set("content-type", "application/json")
		if !body.Ready {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(body)
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	if s.approvals != nil {
		s.approvals.register(mux)
	}
	return mux
}

// GRPCAddr is the TCP address the gRPC services listen on (with its
// actual port when listen.grpc asked for port 0), or "" with a Unix socket
// only.
func (s *Server) GRPCAddr() string { return s.grpcAddr }

// AuditDir is the directory of this server's audit trail.
func (s *Server) AuditDir() string { return s.cfg.Audit.Dir }

// AdminAddr is the address of /healthz, /readyz and /metrics.
func (s *Server) AdminAddr() string { return s.adminAddr }

// Policy is the running policy engine: its status and decision cache
// counts are what an operator reads from /readyz and /metrics.
func (s *Server) Policy() *policy.Engine { return s.engine }

// Run serves until ctx ends, then drains: readiness turns false, the drain
// delay passes, listeners close, in-flight calls finish within the grace.
// It releases everything New acquired before it returns.
func (s *Server) Run(ctx context.Context) error {
	errc := make(chan error, len(s.listeners)+1)
	for _, ln := range s.listeners {
		go func(ln net.Listener) { errc <- s.grpc.Serve(ln) }(ln)
	}
	go func() {
		if err := s.admin.Serve(s.adminLn); !errors.Is(err, http.ErrServerClosed) {
			errc <- err
		}
	}()
	s.serveFeeds()
	// Health by service name too, as Envoy's and Kubernetes' gRPC health
	// checks may ask for the service they depend on.
	for _, svc := range healthServices {
		s.health.SetServingStatus(svc, healthpb.HealthCheckResponse_SERVING)
	}
	if s.approvals != nil {
		go s.approvals.watchExpiries(ctx, time.Second)
	}
	s.log.Info("serving", zap.String("grpc", s.grpcAddr), zap.String("grpc_unix", s.cfg.Listen.GRPCUnix),
		zap.String("admin", s.adminAddr), zap.String("policy_revision", s.engine.Status().Revision))
	select {
	case <-ctx.Done():
	case err := <-errc:
		s.Close()
		return err
	}
	s.log.Info("draining")
	s.draining.Store(true)
	s.health.Shutdown()
	time.Sleep(s.cfg.Shutdown.DrainDelay)
	stopped := make(chan struct{})
	go func() { s.grpc.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(s.cfg.Shutdown.Grace):
		s.log.Warn("grace period over; closing remaining calls")
		s.grpc.Stop()
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	_ = s.admin.Shutdown(shutdownCtx)
	cancel()
	s.Close()
	s.log.Info("stopped")
	return nil
}

// Close releases what New acquired; calling it twice, or after Run, is
// harmless.
func (s *Server) Close() {
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
	s.closers = nil
	if s.cfg.Listen.GRPCUnix != "" {
		_ = os.Remove(s.cfg.Listen.GRPCUnix)
	}
}

// filterAudit writes the ext_proc adapter's filtering events to the trail.
type filterAudit struct{ log *audit.Log }

func (f filterAudit) RecordFiltering(ctx context.Context, ev envoy.FilterEvent) error {
	return f.log.RecordFiltering(ctx, audit.FilterEvent{RequestID: ev.RequestID, DecisionID: ev.DecisionID,
		Removed: ev.Removed, Withheld: ev.Withheld, Forbidden: ev.Forbidden,
		Reason: ev.Refused, Status: ev.Status,
		Subject: ev.User.Subject, Issuer: ev.User.Issuer, FHIRUser: ev.User.FHIRUser, Patients: ev.Patients})
}
