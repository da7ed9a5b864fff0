package notify

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Outcomes of one notification at one sink: the values of the outcome
// label of phigate_notify_total and of the audit record's outcome.
const (
	Delivered   = "delivered"
	Failed      = "failed"       // every attempt failed, or the sink refused it for good
	Dropped     = "dropped"      // the sink's queue was full
	Abandoned   = "abandoned"    // phigate stopped before it was delivered
	UnknownSink = "unknown_sink" // the obligation names a sink the configuration lacks
)

// Event is what a decision obliged to notify tells the sinks, copied from
// the request and the decision when the decision is recorded: the request
// is gone by the time a notification is delivered.
type Event struct {
	DecisionID        string
	Time              time.Time
	Allowed           bool
	BreakGlass        bool
	BreakGlassExpires string // RFC 3339
	Subject           string
	Issuer            string
	FHIRUser          string
	Roles             []string
	Purpose           string
	PolicyRevision    string
	Rules             []string
	Interaction       string
	ResourceType      string
	// Patients reach only the sinks with include_patient.
	Patients []string
}

// Outcome is the result of one notification at one sink, for the audit
// trail. Error is a fixed word ("http_503", "timeout", "connect"), never
// text from the sink or data from the request.
type Outcome struct {
	DecisionID string
	Sink       string
	Result     string
	Attempts   int
	Error      string
}

// OutcomeRecorder writes an outcome to the audit trail. It is called from
// the notifier's own goroutine, never on the request path.
type OutcomeRecorder interface {
	RecordOutcome(ctx context.Context, o Outcome) error
}

// Option configures New.
type Option func(*options)

type options struct {
	server   string
	auditDir string
	jitter   func(time.Duration) time.Duration
}

// WithServer names this phigate in the notifications (audit.server).
func WithServer(name string) Option { return func(o *options) { o.server = name } }

// WithAuditDir is the audit directory named in the notifications' hint of
// how to read the full record.
func WithAuditDir(dir string) Option { return func(o *options) { o.auditDir = dir } }

// Notifier queues notifications per sink and delivers them in the
// background. It is safe for concurrent use; Close flushes it.
type Notifier struct {
	cfg     Config
	opts    options
	rec     OutcomeRecorder
	log     *zap.Logger
	workers map[string]*worker
	m       *metrics

	mu     sync.RWMutex // guards closed against sends on the queues
	closed bool

	outcomes  chan Outcome
	stopping  chan struct{}
	run       context.Context // cancelled when the flush deadline passes
	cancelRun context.CancelFunc
	wg        sync.WaitGroup
	recDone   chan struct{}
}

type worker struct {
	name    string
	sink    sink
	include bool
	timeout time.Duration
	q       chan item
}

type item struct {
	ev     *Event
	queued time.Time
}

// New builds the sinks of cfg, which must have passed Validate, and starts
// delivering. rec may be nil (outcomes are then only counted).
func New(cfg Config, rec OutcomeRecorder, log *zap.Logger, reg prometheus.Registerer, opts ...Option) (*Notifier, error) {
	if log == nil {
		log = zap.NewNop()
	}
	o := options{jitter: func(d time.Duration) time.Duration { return d/2 + rand.N(d/2+1) }}
	for _, f := range opts {
		f(&o)
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	n := &Notifier{cfg: cfg, opts: o, rec: rec, log: log, workers: map[string]*worker{}, m: m,
		outcomes: make(chan Outcome, 1024), stopping: make(chan struct{}), recDone: make(chan struct{})}
	n.run, n.cancelRun = context.WithCancel(context.Background())
	// Exposed from the start: an alert on notifications to nowhere should
	// see a zero before the first one.
	m.total.WithLabelValues("unknown", UnknownSink)
	for name, sc := range cfg.Sinks {
		w := &worker{name: name, include: sc.IncludePatient, q: make(chan item, cfg.QueueSize)}
		var err error
		switch {
		case sc.Webhook != nil:
			w.sink, err = newWebhook(*sc.Webhook)
			w.timeout = sc.Webhook.Timeout
		case sc.Syslog != nil:
			w.sink, err = newSyslog(*sc.Syslog, o.server)
			w.timeout = sc.Syslog.Timeout
		default:
			err = errors.New("neither webhook nor syslog")
		}
		if err != nil {
			n.closeSinks()
			return nil, err
		}
		n.workers[name] = w
		m.depth.WithLabelValues(name).Set(0)
		m.latency.WithLabelValues(name)
		for _, out := range []string{Delivered, Failed, Dropped, Abandoned} {
			m.total.WithLabelValues(name, out)
		}
	}
	go n.recordOutcomes()
	for _, w := range n.workers {
		n.wg.Add(1)
		go n.serve(w)
	}
	return n, nil
}

// Notify queues ev for each sink named in to (names separated by commas)
// and returns at once. A sink it does not know, or whose queue is full,
// is recorded as such; nothing here waits on a sink or on the audit trail.
func (n *Notifier) Notify(ev Event, to string) {
	n.mu.RLock()
	defer n.mu.RUnlock()
	names := splitTo(to)
	if len(names) == 0 {
		names = []string{""}
	}
	if n.closed {
		// The outcome queue is closed too: counted and logged only.
		n.m.total.WithLabelValues("unknown", Abandoned).Add(float64(len(names)))
		n.log.Warn("notification after shutdown not delivered", zap.String("decision_id", ev.DecisionID))
		return
	}
	for _, name := range names {
		w, ok := n.workers[name]
		switch {
		case !ok:
			n.report(Outcome{DecisionID: ev.DecisionID, Sink: name, Result: UnknownSink}, false)
		default:
			select {
			case w.q <- item{ev: &ev, queued: time.Now()}:
				n.m.depth.WithLabelValues(name).Set(float64(len(w.q)))
			default:
				n.report(Outcome{DecisionID: ev.DecisionID, Sink: name, Result: Dropped, Error: "queue_full"}, false)
			}
		}
	}
}

// Close stops taking notifications, keeps delivering what is queued for
// at most the flush timeout, records what is left as abandoned, and
// returns once every outcome has been handed to the recorder. Call it
// before the audit trail is closed.
func (n *Notifier) Close() {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return
	}
	n.closed = true
	n.mu.Unlock()
	close(n.stopping)
	t := time.AfterFunc(n.cfg.FlushTimeout, n.cancelRun)
	n.wg.Wait()
	t.Stop()
	n.cancelRun()
	close(n.outcomes)
	<-n.recDone
	n.closeSinks()
}

func (n *Notifier) closeSinks() {
	for _, w := range n.workers {
		if w.sink != nil {
			w.sink.close()
		}
	}
}

// serve delivers one sink's notifications in order until Close; then it
// delivers what is queued until the flush deadline and abandons the rest.
func (n *Notifier) serve(w *worker) {
	defer n.wg.Done()
	for {
		select {
		case it := <-w.q:
			n.m.depth.WithLabelValues(w.name).Set(float64(len(w.q)))
			n.deliver(w, it)
		case <-n.stopping:
			for {
				select {
				case it := <-w.q:
					n.m.depth.WithLabelValues(w.name).Set(float64(len(w.q)))
					if n.run.Err() != nil {
						n.report(Outcome{DecisionID: it.ev.DecisionID, Sink: w.name, Result: Abandoned, Error: "shutdown"}, true)
						continue
					}
					n.deliver(w, it)
				default:
					return
				}
			}
		}
	}
}

// deliver tries one notification until it is delivered, fails for good,
// runs out of attempts or is abandoned at the flush deadline.
func (n *Notifier) deliver(w *worker, it item) {
	msg, err := w.sink.encode(payloadOf(it.ev, w.include, n.opts))
	if err != nil {
		n.report(Outcome{DecisionID: it.ev.DecisionID, Sink: w.name, Result: Failed, Error: "encode"}, true)
		return
	}
	for attempt := 1; ; attempt++ {
		if n.run.Err() != nil {
			n.report(Outcome{DecisionID: it.ev.DecisionID, Sink: w.name, Result: Abandoned, Attempts: attempt - 1, Error: "shutdown"}, true)
			return
		}
		ctx, cancel := context.WithTimeout(n.run, w.timeout)
		err := w.sink.send(ctx, msg)
		cancel()
		if err == nil {
			n.m.latency.WithLabelValues(w.name).Observe(time.Since(it.queued).Seconds())
			n.report(Outcome{DecisionID: it.ev.DecisionID, Sink: w.name, Result: Delivered, Attempts: attempt}, true)
			return
		}
		if n.run.Err() != nil {
			n.report(Outcome{DecisionID: it.ev.DecisionID, Sink: w.name, Result: Abandoned, Attempts: attempt, Error: "shutdown"}, true)
			return
		}
		word, permanent := classify(err)
		if n.log.Core().Enabled(zap.InfoLevel) {
			n.log.Info("notification attempt failed", zap.String("sink", w.name), zap.String("decision_id", it.ev.DecisionID),
				zap.Int("attempt", attempt), zap.String("error", word))
		}
		if permanent || attempt >= n.cfg.MaxAttempts {
			n.report(Outcome{DecisionID: it.ev.DecisionID, Sink: w.name, Result: Failed, Attempts: attempt, Error: word}, true)
			return
		}
		t := time.NewTimer(n.opts.jitter(n.backoff(attempt)))
		select {
		case <-t.C:
		case <-n.run.Done():
			t.Stop()
			n.report(Outcome{DecisionID: it.ev.DecisionID, Sink: w.name, Result: Abandoned, Attempts: attempt, Error: "shutdown"}, true)
			return
		}
	}
}

// backoff is the wait after the given attempt: the initial backoff
// doubled per attempt, capped.
func (n *Notifier) backoff(attempt int) time.Duration {
	d := n.cfg.InitialBackoff
	for i := 1; i < attempt && d < n.cfg.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, n.cfg.MaxBackoff)
}

// report counts an outcome and hands it to the recorder's goroutine. From
// the request path (wait false) it never blocks: an outcome that finds the
// recorder's queue full is counted as unrecorded and logged.
func (n *Notifier) report(o Outcome, wait bool) {
	label := o.Sink
	if o.Result == UnknownSink {
		label = "unknown" // the name is the policy's: unbounded as a label
	}
	n.m.total.WithLabelValues(label, o.Result).Inc()
	if o.Result != Delivered {
		n.log.Warn("notification not delivered", zap.String("sink", label), zap.String("outcome", o.Result),
			zap.String("decision_id", o.DecisionID), zap.Int("attempts", o.Attempts), zap.String("error", o.Error))
	}
	if wait {
		n.outcomes <- o
		return
	}
	select {
	case n.outcomes <- o:
	default:
		n.m.unrecorded.Inc()
		n.log.Error("notification outcome not audited: outcome queue full", zap.String("decision_id", o.DecisionID), zap.String("outcome", o.Result))
	}
}

func (n *Notifier) recordOutcomes() {
	defer close(n.recDone)
	for o := range n.outcomes {
		if n.rec == nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := n.rec.RecordOutcome(ctx, o)
		cancel()
		if err != nil {
			n.m.unrecorded.Inc()
			n.log.Error("notification outcome not audited", zap.String("decision_id", o.DecisionID), zap.String("outcome", o.Result), zap.Error(err))
		}
	}
}

type metrics struct {
	total      *prometheus.CounterVec
	depth      *prometheus.GaugeVec
	latency    *prometheus.HistogramVec
	unrecorded prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phigate_notify_total",
			Help: "Notifications an obligation asked for, by sink and outcome (delivered, failed, dropped, abandoned, unknown_sink).",
		}, []string{"sink", "outcome"}),
		depth: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "phigate_notify_queue_depth",
			Help: "Notifications waiting for their sink.",
		}, []string{"sink"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "phigate_notify_delivery_seconds",
			Help:    "Time from a decision's obligation to its notification's delivery, retries included.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300},
		}, []string{"sink"}),
		unrecorded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "phigate_notify_outcomes_unrecorded_total",
			Help: "Notification outcomes that could not be written to the audit trail.",
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.total, m.depth, m.latency, m.unrecorded} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}
