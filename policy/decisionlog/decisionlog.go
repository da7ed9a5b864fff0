// Package decisionlog sends phigate's decisions to a remote HTTP endpoint
// in the shape OPA's decision log plugin uses: a gzip-compressed JSON
// array of events POSTed to <url>/<resource>, so that tools which read
// OPA's decision logs read phigate's.
//
// It sits beside the audit trail and never replaces it: the trail is
// written before a decision takes effect and holds who and which patient;
// a decision log is best effort and holds neither. Events are cut down
// when they are made (see NewEvent): patient and resource ids, query
// values, headers, bodies, the break-glass reason and the identity's
// person never leave, and each event names what was cut in erased and
// masked.
//
// Events wait in a bounded buffer and are sent in batches from one
// goroutine. A Check never waits for the endpoint: when the buffer is
// full an event is dropped and counted. A failed upload is retried with
// a doubling delay; Close sends what is buffered within a deadline.
package decisionlog

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/phigate/phigate/authz"
	"github.com/phigate/phigate/internal/service"
)

// Config is the decision_logs section of phigate.yaml. The names follow
// OPA's services and decision_logs configuration where they fit. An empty
// URL turns decision logs off.
type Config struct {
	// URL is the receiving service's base URL.
	URL string `yaml:"url"`
	// Resource is the path below URL events are POSTed to (default
	// "logs", OPA's default).
	Resource string `yaml:"resource"`
	// Labels are added to every event's labels, beside phigate's id and
	// version.
	Labels map[string]string `yaml:"labels"`
	// Credentials authenticate phigate to the receiver.
	Credentials service.Credentials `yaml:"credentials"`
	// TLS names the CA that signs the receiver's certificate.
	TLS service.TLS `yaml:"tls"`
	// Timeout bounds one upload. Default 10s.
	Timeout time.Duration `yaml:"timeout"`
	// Reporting sizes the buffer and paces the uploads.
	Reporting Reporting `yaml:"reporting"`
	// ShutdownTimeout bounds how long Close spends sending what is
	// buffered. Default 5s.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`

	// Path is every event's path, the rule that decided (default
	// DecisionPath). Not read from YAML: the wiring sets it from the
	// policy's configuration (OPA-Envoy mode decides with another rule).
	Path string `yaml:"-"`

	url    string
	tlsCfg *tls.Config
}

// Reporting is OPA's decision_logs.reporting, with durations.
type Reporting struct {
	// BufferSizeLimitEvents is how many events wait at most; beyond it
	// new events are dropped and counted. Default 10000.
	BufferSizeLimitEvents int `yaml:"buffer_size_limit_events"`
	// UploadSizeLimitEvents is how many events one POST carries at most;
	// a buffer holding that many is sent without waiting. Default 1000.
	UploadSizeLimitEvents int `yaml:"upload_size_limit_events"`
	// MinDelay and MaxDelay bound the wait between uploads (a random
	// point between them); after a failed upload the wait doubles from
	// MinDelay up to MaxDelay. Defaults 5s and 10s.
	MinDelay time.Duration `yaml:"min_delay"`
	MaxDelay time.Duration `yaml:"max_delay"`
}

// Enabled reports whether decision logs are configured.
func (c *Config) Enabled() bool { return c.URL != "" }

// Validate fills defaults and names the first bad field. An empty section
// is valid and sends nothing.
func (c *Config) Validate() error {
	const p = "decision_logs"
	if !c.Enabled() {
		if c.Resource != "" || len(c.Labels) > 0 || c.Credentials != (service.Credentials{}) || c.TLS != (service.TLS{}) {
			return errors.New("decision_logs.url: required when decision_logs is set")
		}
		return nil
	}
	u, err := service.CheckURL(c.URL, p+".url")
	if err != nil {
		return err
	}
	if c.Resource == "" {
		c.Resource = "logs"
	}
	if strings.Contains(c.Resource, "://") || strings.Contains(c.Resource, "?") {
		return fmt.Errorf("%s.resource: %q is a path below url, not a URL or query", p, c.Resource)
	}
	c.url = strings.TrimSuffix(c.URL, "/") + "/" + strings.TrimPrefix(c.Resource, "/")
	for k, v := range c.Labels {
		switch {
		case k == "id" || k == "version":
			return fmt.Errorf("%s.labels: %q is set by phigate", p, k)
		case !codeLike(k) || !codeLike(v):
			return fmt.Errorf("%s.labels: %q: names and values are codes (letters, digits, _.:/-), at most 128 bytes", p, k)
		}
	}
	if err := c.Credentials.Validate(p+".credentials", u); err != nil {
		return err
	}
	if c.tlsCfg, err = c.TLS.Config(p + ".tls"); err != nil {
		return err
	}
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Second
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 5 * time.Second
	}
	r := &c.Reporting
	if r.BufferSizeLimitEvents == 0 {
		r.BufferSizeLimitEvents = 10000
	}
	if r.UploadSizeLimitEvents == 0 {
		r.UploadSizeLimitEvents = min(1000, r.BufferSizeLimitEvents)
	}
	if r.MinDelay == 0 {
		r.MinDelay = 5 * time.Second
	}
	if r.MaxDelay == 0 {
		r.MaxDelay = max(10*time.Second, r.MinDelay)
	}
	switch {
	case c.Timeout < 0:
		return fmt.Errorf("%s.timeout: must be positive", p)
	case c.ShutdownTimeout < 0:
		return fmt.Errorf("%s.shutdown_timeout: must be positive", p)
	case r.BufferSizeLimitEvents < 1 || r.BufferSizeLimitEvents > 1_000_000:
		return fmt.Errorf("%s.reporting.buffer_size_limit_events: between 1 and 1000000", p)
	case r.UploadSizeLimitEvents < 1 || r.UploadSizeLimitEvents > r.BufferSizeLimitEvents:
		return fmt.Errorf("%s.reporting.upload_size_limit_events: between 1 and reporting.buffer_size_limit_events", p)
	case r.MinDelay < 10*time.Millisecond:
		return fmt.Errorf("%s.reporting.min_delay: at least 10ms", p)
	case r.MaxDelay < r.MinDelay:
		return fmt.Errorf("%s.reporting.max_delay: must not be below reporting.min_delay", p)
	}
	return nil
}

// Warnings are what serve accepts but an operator should hear of.
func (c *Config) Warnings() []string {
	if !c.Enabled() {
		return nil
	}
	if u, err := url.Parse(c.URL); err == nil && u.Scheme == "http" && !service.Loopback(u.Hostname()) {
		return []string{fmt.Sprintf("decision_logs.url: %s is plaintext http beyond this host", u.Host)}
	}
	return nil
}

// Drop reasons: the values of phigate_decision_logs_dropped_total's label.
const (
	dropBufferFull = "buffer_full" // the buffer was full when the decision was made
	dropShutdown   = "shutdown"    // still buffered when Close's deadline passed
	dropEncode     = "encode"      // could not be encoded (never expected)
)

// Logger buffers events and sends them. Its Record is safe for concurrent
// use and never blocks.
type Logger struct {
	cfg    Config
	log    *zap.Logger
	http   *http.Client
	labels map[string]string

	ch      chan Event
	kick    chan struct{}
	stop    chan struct{}
	done    chan struct{}
	closed  atomic.Bool
	closeMu sync.Once
	pending atomic.Int64 // events taken from ch and not yet sent or dropped

	sent        prometheus.Counter
	dropped     *prometheus.CounterVec
	failures    *prometheus.CounterVec
	lastSuccess prometheus.Gauge
	droppedN    atomic.Uint64
}

// New starts a Logger. id and version become every event's labels.id and
// labels.version (OPA's instance id and version). cfg must have passed
// Validate.
func New(cfg Config, id, version string, log *zap.Logger, reg prometheus.Registerer) (*Logger, error) {
	if !cfg.Enabled() || cfg.url == "" {
		return nil, errors.New("decisionlog: configuration not validated or without url")
	}
	if log == nil {
		log = zap.NewNop()
	}
	labels := map[string]string{"app": "phigate", "id": id, "version": version}
	for k, v := range cfg.Labels {
		labels[k] = v
	}
	l := &Logger{
		cfg: cfg, log: log, http: service.NewClient(cfg.tlsCfg), labels: labels,
		ch:   make(chan Event, cfg.Reporting.BufferSizeLimitEvents),
		kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
		sent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "phigate_decision_logs_sent_total", Help: "Decision log events the receiver accepted.",
		}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phigate_decision_logs_dropped_total", Help: "Decision log events dropped, by reason.",
		}, []string{"reason"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phigate_decision_logs_upload_failures_total", Help: "Decision log uploads that failed (and are retried), by reason.",
		}, []string{"reason"}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "phigate_decision_logs_last_success_timestamp_seconds", Help: "When the receiver last accepted an upload.",
		}),
	}
	// Every reason from the start, so that a rate is zero, not absent.
	for _, r := range []string{dropBufferFull, dropShutdown, dropEncode} {
		l.dropped.WithLabelValues(r)
	}
	for _, r := range []string{"network", "status", "credentials"} {
		l.failures.WithLabelValues(r)
	}
	buffered := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "phigate_decision_logs_buffered_events", Help: "Decision log events waiting to be sent.",
	}, func() float64 { return float64(len(l.ch)) + float64(l.pending.Load()) })
	if reg != nil {
		for _, c := range []prometheus.Collector{l.sent, l.dropped, l.failures, l.lastSuccess, buffered} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	go l.run()
	return l, nil
}

// Record makes the event for one decision and buffers it, or drops it
// when the buffer is full. It never waits.
func (l *Logger) Record(req *authz.Request, d *authz.Decision) {
	if l.closed.Load() {
		l.drop(dropShutdown, 1)
		return
	}
	ev := NewEvent(req, d, l.labels)
	if l.cfg.Path != "" {
		ev.Path = l.cfg.Path
	}
	select {
	case l.ch <- ev:
		if len(l.ch) >= l.cfg.Reporting.UploadSizeLimitEvents {
			select {
			case l.kick <- struct{}{}:
			default:
			}
		}
	default:
		l.drop(dropBufferFull, 1)
	}
}

func (l *Logger) drop(reason string, n int) {
	l.dropped.WithLabelValues(reason).Add(float64(n))
	// Logged at powers of two, not per event.
	for range n {
		if c := l.droppedN.Add(1); c&(c-1) == 0 {
			l.log.Warn("decision log events dropped", zap.String("reason", reason), zap.Uint64("dropped_so_far", c))
		}
	}
}

// run sends batches until Close, then what is left within the deadline.
func (l *Logger) run() {
	defer close(l.done)
	var batch []Event
	failures := 0
	for {
		delay := l.delay(failures)
		t := time.NewTimer(delay)
		select {
		case <-l.stop:
			t.Stop()
			l.flush(batch)
			return
		case <-l.kick:
			if failures > 0 {
				// Backing off: a full buffer does not hurry a retry.
				select {
				case <-l.stop:
					t.Stop()
					l.flush(batch)
					return
				case <-t.C:
				}
			}
			t.Stop()
		case <-t.C:
		}
		batch = l.fill(batch)
		if len(batch) == 0 {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), l.cfg.Timeout)
		err := l.upload(ctx, batch)
		cancel()
		if err != nil {
			failures++
			continue
		}
		failures = 0
		batch = batch[:0]
	}
}

// fill tops batch up from the buffer to the upload size.
func (l *Logger) fill(batch []Event) []Event {
	for len(batch) < l.cfg.Reporting.UploadSizeLimitEvents {
		select {
		case ev := <-l.ch:
			batch = append(batch, ev)
			l.pending.Add(1)
		default:
			return batch
		}
	}
	return batch
}

func (l *Logger) delay(failures int) time.Duration {
	r := l.cfg.Reporting
	if failures > 0 {
		d := r.MinDelay
		for i := 1; i < failures && d < r.MaxDelay; i++ {
			d *= 2
		}
		return min(d, r.MaxDelay)
	}
	if r.MaxDelay == r.MinDelay {
		return r.MinDelay
	}
	return r.MinDelay + rand.N(r.MaxDelay-r.MinDelay)
}

// flush sends batch and everything buffered until the shutdown deadline;
// what is left is dropped and counted.
func (l *Logger) flush(batch []Event) {
	ctx, cancel := context.WithTimeout(context.Background(), l.cfg.ShutdownTimeout)
	defer cancel()
	for {
		batch = l.fill(batch)
		if len(batch) == 0 {
			return
		}
		if err := l.upload(ctx, batch); err != nil {
			if ctx.Err() != nil {
				n := len(batch) + len(l.ch)
				l.pending.Add(-int64(len(batch)))
				l.drop(dropShutdown, n)
				l.log.Warn("decision log events not sent before the shutdown deadline", zap.Int("events", n))
				return
			}
			// Retry within the deadline, not in a tight loop.
			select {
			case <-ctx.Done():
			case <-time.After(min(l.cfg.Reporting.MinDelay, time.Second)):
			}
			continue
		}
		batch = batch[:0]
	}
}

// upload POSTs one batch; on success the batch's events are counted sent.
func (l *Logger) upload(ctx context.Context, batch []Event) error {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if err := json.NewEncoder(zw).Encode(batch); err != nil {
		// Not retried: the same events would fail again.
		l.pending.Add(-int64(len(batch)))
		l.drop(dropEncode, len(batch))
		l.log.Error("decision log events could not be encoded; dropped", zap.Error(err))
		return nil
	}
	if err := zw.Close(); err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, l.cfg.url, &buf)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Content-Encoding", "gzip")
	if err := l.cfg.Credentials.Authorize(req, "decision_logs.credentials"); err != nil {
		l.failures.WithLabelValues("credentials").Inc()
		l.log.Warn("decision log upload failed; retrying", zap.Error(err))
		return err
	}
	resp, err := l.http.Do(req)
	if err != nil {
		l.failures.WithLabelValues("network").Inc()
		l.log.Warn("decision log upload failed; retrying", zap.String("url", l.cfg.url), zap.Int("events", len(batch)),
			zap.Error(service.ScrubURL(err)))
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	_ = resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		l.failures.WithLabelValues("status").Inc()
		l.log.Warn("decision log upload refused; retrying", zap.String("url", l.cfg.url), zap.Int("events", len(batch)),
			zap.Int("status", resp.StatusCode))
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	l.pending.Add(-int64(len(batch)))
	l.sent.Add(float64(len(batch)))
	l.lastSuccess.SetToCurrentTime()
	return nil
}

// Close stops taking events and sends what is buffered, for at most
// decision_logs.shutdown_timeout. Calling it again is harmless.
func (l *Logger) Close() {
	l.closeMu.Do(func() {
		l.closed.Store(true)
		close(l.stop)
	})
	<-l.done
}

// Recorder writes each decision to the audit trail and then to the
// decision log: the trail decides whether the decision may take effect,
// the log never does.
type Recorder struct {
	Trail authz.Recorder
	Log   *Logger
}

// Record implements authz.Recorder.
func (r Recorder) Record(ctx context.Context, req *authz.Request, d *authz.Decision) error {
	err := r.Trail.Record(ctx, req, d)
	if err != nil && d.Allow {
		// The decision that takes effect is the denial the authorizer
		// turns a failed record into.
		denied := *d
		denied.Allow, denied.Status, denied.Reason = false, authz.StatusOf(&authz.Error{Code: authz.CodeAudit}), string(authz.CodeAudit)
		r.Log.Record(req, &denied)
		return err
	}
	r.Log.Record(req, d)
	return err
}
