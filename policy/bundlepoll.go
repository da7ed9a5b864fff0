package policy

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// bundlePoller is the Engine's state when its policy comes from a bundle
// server. Its fields are read and written under Engine.loading.
type bundlePoller struct {
	client   *bundleClient
	etag     string // ETag of the active bundle: sent as If-None-Match
	failures int    // consecutive failed polls, for the backoff
	longPoll bool   // the last answer came from a server that holds requests

	lastSuccess prometheus.Gauge
	failuresVec *prometheus.CounterVec
	active      *prometheus.GaugeVec
	activeRev   string
}

// startBundles sets the engine up for a bundle server: it activates the
// bundle kept in persist_dir, if any, and starts the poller. Without a
// bundle the engine is not ready and Evaluate fails, which denies.
func (e *Engine) startBundles(reg prometheus.Registerer) error {
	cfg := &e.cfg.BundleServer
	if err := cfg.preparePersist(); err != nil {
		return err
	}
	bp := &bundlePoller{
		client: newBundleClient(cfg),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "phigate_policy_bundle_last_success_timestamp_seconds",
			Help: "When the bundle server last answered with the bundle being served (a new one activated, or 304 for the current one).",
		}),
		failuresVec: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phigate_policy_bundle_failures_total",
			Help: "Bundle downloads that did not change or confirm the served policy, by reason.",
		}, []string{"reason"}),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "phigate_policy_bundle_active_revision_info",
			Help: "The revision of the bundle being served (value 1); none before the first good bundle.",
		}, []string{"revision"}),
	}
	// Every reason from the start, so that a rate is zero, not absent.
	for _, r := range []string{bundleFailDownload, bundleFailStatus, bundleFailTooLarge, bundleFailSignature, bundleFailRead,
		string(CodeLoad), string(CodeCompile), string(CodeTest), string(CodeShape), bundleFailPersist} {
		bp.failuresVec.WithLabelValues(r)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{bp.lastSuccess, bp.failuresVec, bp.active} {
			if err := reg.Register(c); err != nil {
				return err
			}
		}
	}
	e.bundles = bp
	e.log.Info("policy from a bundle server; not ready until a bundle is active", zap.String("source", cfg.String()),
		zap.Bool("signed", cfg.verifyCfg != nil), zap.Bool("persist", cfg.PersistDir != ""))
	if raw, etag, ok, err := cfg.persisted(); err != nil {
		e.log.Warn("kept policy bundle unreadable; waiting for the bundle server", zap.Error(err))
	} else if ok {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		e.loading.Lock()
		err := e.activate(ctx, raw, etag, false)
		e.loading.Unlock()
		cancel()
		if err != nil {
			e.log.Warn("kept policy bundle refused; waiting for the bundle server", zap.Error(err))
		} else {
			e.log.Info("serving the kept policy bundle until the bundle server answers", zap.String("revision", bp.activeRev))
		}
	}
	if cfg.FetchOnly {
		close(e.done)
		return nil
	}
	go e.pollBundles()
	return nil
}

// pollBundles downloads the bundle until Close: at once, then after each
// answer a random delay between polling.min_delay and max_delay, doubling
// from min_delay after failures, and again at once after a long poll.
func (e *Engine) pollBundles() {
	defer close(e.done)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-e.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	pl := e.cfg.BundleServer.Polling
	for {
		err := e.pollOnce(ctx)
		e.loading.Lock()
		delay := pl.nextDelay(e.bundles.failures)
		if err == nil && e.bundles.longPoll {
			delay = 0
		}
		e.loading.Unlock()
		if delay == 0 {
			select {
			case <-e.stop:
				return
			default:
				continue
			}
		}
		t := time.NewTimer(delay)
		select {
		case <-e.stop:
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// pollOnce asks the bundle server for the bundle once and activates a new
// one when it is sound. On any failure the active policy keeps serving.
func (e *Engine) pollOnce(ctx context.Context) error {
	e.loading.Lock()
	defer e.loading.Unlock()
	bp := e.bundles
	f, err := bp.client.fetch(ctx, bp.etag)
	if err != nil {
		if ctx.Err() != nil {
			return err // stopping, not a failure of the server
		}
		return e.bundleFailed(err)
	}
	bp.longPoll = f.longPoll
	if f.notModified {
		if e.cur.Load() == nil {
			// A 304 to an ETag phigate did not send as its own: nothing
			// to serve, so ask for the whole bundle next time.
			bp.etag = ""
			return e.bundleFailed(&fetchError{bundleFailStatus, errors.New("304 without an active bundle")})
		}
		bp.failures = 0
		bp.lastSuccess.SetToCurrentTime()
		// The server confirms what is served: an earlier failure is over.
		e.mu.Lock()
		e.lastErr = nil
		e.mu.Unlock()
		return nil
	}
	return e.activate(ctx, f.raw, f.etag, true)
}

// activate reads, verifies and compiles a downloaded bundle and swaps it
// in; keep writes it to persist_dir. The caller holds e.loading.
func (e *Engine) activate(ctx context.Context, raw []byte, etag string, keep bool) error {
	cfg := &e.cfg.BundleServer
	bp := e.bundles
	b, err := cfg.readBundle(raw, etag)
	if err != nil {
		e.reloads.WithLabelValues("error").Inc()
		return e.bundleFailed(err)
	}
	s, err := e.install(ctx, cfg.String(), b)
	if err != nil {
		return e.bundleFailed(err)
	}
	bp.etag, bp.failures = etag, 0
	if bp.activeRev != "" {
		bp.active.DeleteLabelValues(bp.activeRev)
	}
	bp.activeRev = s.Revision
	bp.active.WithLabelValues(s.Revision).Set(1)
	bp.lastSuccess.SetToCurrentTime()
	if keep && cfg.PersistDir != "" {
		if err := cfg.persist(raw, etag); err != nil {
			bp.failuresVec.WithLabelValues(bundleFailPersist).Inc()
			e.log.Warn("policy bundle active but not kept in policy.bundle_server.persist_dir; a restart without the server will not serve it",
				zap.String("revision", s.Revision), zap.Error(err))
		}
	}
	return nil
}

// bundleFailed counts and logs a poll that changed nothing, and returns err.
func (e *Engine) bundleFailed(err error) error {
	bp := e.bundles
	bp.failures++
	reason := bundleFailRead
	var fe *fetchError
	var pe *Error
	switch {
	case errors.As(err, &fe):
		reason = fe.reason
	case errors.As(err, &pe):
		reason = string(pe.Code)
	}
	bp.failuresVec.WithLabelValues(reason).Inc()
	serving := ""
	if s := e.cur.Load(); s != nil {
		serving = s.Revision
	}
	e.log.Warn("policy bundle not activated", zap.String("reason", reason), zap.String("serving", serving),
		zap.Int("consecutive_failures", bp.failures), zap.Error(err))
	if fe != nil {
		e.mu.Lock()
		e.lastErr, e.lastErrAt = err, time.Now()
		e.mu.Unlock()
	}
	return err
}
