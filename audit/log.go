package audit

import (
	"bytes"
	"context"
	"crypto/cipher"
	"crypto/ed25519"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"

	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/phigate/phigate/authz"
)

// Recovery reports what Open repaired after an unclean shutdown.
type Recovery struct {
	// TornSegment and TornOffset locate a torn final frame that was cut off;
	// TornBytes were moved to TornSegment+".torn" rather than destroyed.
	TornSegment string
	TornOffset  int64
	TornBytes   int64
	// CheckpointTorn is true when a half-written checkpoint line was removed.
	CheckpointTorn bool
	// QuarantineSegment and QuarantineOffset locate the first unreadable
	// frame of a tail that was not a torn write (an oversized or corrupt
	// frame, possibly inside the checkpointed region or an older segment).
	// Everything from there on, QuarantineBytes in all, was moved into
	// files ending in QuarantineSuffix beside the segments, and a
	// KindQuarantine record naming the range was appended.
	QuarantineSegment string
	QuarantineOffset  int64
	QuarantineBytes   int64
	// QuarantineFrom is the first sequence number that was moved aside.
	QuarantineFrom uint64

	quarantineReason   string
	quarantineSegments int
	lostCheckpoint     uint64 // the largest checkpointed size the quarantine undid

	// Records is the number of records in the log after recovery.
	Records uint64
}

// Repaired says whether Open had to change anything.
func (r Recovery) Repaired() bool {
	return r.TornBytes > 0 || r.CheckpointTorn || r.QuarantineBytes > 0
}

// QuarantineSuffix ends the name of a file holding bytes moved out of the
// trail at startup: <segment>.quarantine.
const QuarantineSuffix = ".quarantine"

// Option configures Open.
type Option func(*options)

type options struct {
	logger    *zap.Logger
	reg       prometheus.Registerer
	now       func() time.Time
	sinks     []Sink
	queueWait time.Duration
}

// DefaultQueueWait is how long a record waits for room in a full queue
// before it is refused. The queue holds MaxBatch records besides the commit
// in flight, so a full queue means the disk has stalled for far longer than
// an fsync takes; past this the caller is better told (and denies) than
// left waiting on a disk that may never answer.
const DefaultQueueWait = 5 * time.Second

// WithQueueWait bounds how long Record waits for room in a full queue
// (default DefaultQueueWait). The caller's context does not shorten it.
func WithQueueWait(d time.Duration) Option { return func(o *options) { o.queueWait = d } }

// WithLogger sets the operational logger (which never receives record content).
func WithLogger(l *zap.Logger) Option { return func(o *options) { o.logger = l } }

// WithRegisterer registers the Log's metrics with reg.
func WithRegisterer(reg prometheus.Registerer) Option { return func(o *options) { o.reg = reg } }

// WithClock replaces time.Now (tests).
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// WithSink adds a sink built by the caller (in addition to Config.Sinks).
func WithSink(s Sink) Option { return func(o *options) { o.sinks = append(o.sinks, s) } }

// pending is one record waiting for the committer.
type pending struct {
	payload []byte
	event   *AuditEvent
	json    []byte // the event for sinks, encoded by the caller so the committer stays lean
	plain   bool   // never sealed (the quarantine record)
	done    chan error
}

// Log is the durable, hash-chained, checkpointed audit trail. It implements
// authz.Recorder and is safe for concurrent use.
type Log struct {
	cfg     Config
	lg      *zap.Logger
	now     func() time.Time
	priv    ed25519.PrivateKey
	aead    cipher.AEAD
	builder Builder
	m       *metrics
	sinks   []*asyncSink

	queueWait  time.Duration
	notWritten *prometheus.CounterVec // by reason; see notWrittenReasons

	mu     sync.RWMutex // guards closed against sends on reqs
	closed bool
	reqs   chan *pending
	done   chan struct{}

	bgMu      sync.Mutex
	overrides map[string]bool // user subject -> override was active on their last decision

	recovery Recovery

	// durable is the sequence of the newest record on stable storage, and
	// grown signals it (never blocking): what a Shipper reads, since bytes
	// written but not yet synced may still vanish in a crash.
	durable atomic.Uint64
	grown   chan struct{}

	// Owned by the committer goroutine after Open.
	dirF      *os.File
	ext       *extender // writes l.seg; keeps zeros ahead of its records
	seg       *os.File
	segName   string
	segSize   int64
	segOpened time.Time
	seq       uint64
	head      [32]byte
	lastCP    uint64    // the newest sequence handed to the checkpointer
	lastCPAt  time.Time // when it was handed over (or the log opened)
	cpSize    int64     // bytes in checkpoints.jsonl when Open found it
	pendingQ  bool      // a pending quarantine file is to be removed
	failed    error
	buf       []byte

	// The checkpointer signs and syncs checkpoints beside the committer, so
	// a commit never waits for a checkpoint's two fsyncs and the witness's
	// rename. cpWant holds the newest head not yet checkpointed; the
	// committer replaces what is waiting there rather than queue behind it.
	cpWant chan cpSnap
	cpDone chan struct{}
	cpErr  atomic.Pointer[error] // the checkpointer's failure, for the committer to act on

	cpMu      sync.Mutex // serializes checkpoint writes; guards cpF and cpWritten
	cpF       *os.File
	cpWritten uint64 // the sequence the newest checkpoint on disk vouches for
}

// cpSnap is the head a checkpoint vouches for, taken after its records
// were synced.
type cpSnap struct {
	seq  uint64
	head [32]byte
	seg  string
	size int64
	at   time.Time
}

var _ authz.Recorder = (*Log)(nil)

// Open opens (creating if needed) the log in cfg.Dir, repairing a torn tail
// left by a crash, and starts the committer.
func Open(cfg Config, opts ...Option) (*Log, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	o := options{logger: zap.NewNop(), now: time.Now, queueWait: DefaultQueueWait}
	for _, f := range opts {
		f(&o)
	}
	if o.queueWait <= 0 {
		return nil, errf(CodeConfig, nil, nil, "queue wait must be positive")
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, errf(CodeIO, nil, err, "create Dir")
	}
	// A new key over an existing trail would let whoever removed the old
	// one sign a rewritten history; only a trail never written gets a key.
	if _, err := os.Stat(cfg.SigningKeyFile); errors.Is(err, fs.ErrNotExist) {
		if used, why := trailInUse(&cfg); used {
			hint := ""
			if _, err := os.Stat(filepath.Join(cfg.Dir, legacySigningKeyName)); err == nil {
				hint = "; the key in " + filepath.Join(cfg.Dir, legacySigningKeyName) + " (where earlier versions kept it) must move out of the audit directory to signing_key_file"
			}
			return nil, errf(CodeConfig, nil, nil, "signing_key_file %s does not exist but %s; restore the key (a new one is made only for a trail never written)%s",
				cfg.SigningKeyFile, why, hint)
		}
	}
	priv, err := LoadOrCreateSigningKey(cfg.SigningKeyFile)
	if err != nil {
		return nil, err
	}
	// A copy of the public key in Dir serves "verify --trust-on-first-use";
	// it is rewritten from the private key at every start.
	if err := writePublicKeyFile(filepath.Join(cfg.Dir, PublicKeyName), priv.Public().(ed25519.PublicKey)); err != nil {
		return nil, err
	}
	key, err := LoadEncryptionKey(cfg.EncryptionKeyFile, cfg.EncryptionKeyEnv)
	if err != nil {
		return nil, err
	}
	aead, err := newAEAD(key)
	if err != nil {
		return nil, err
	}
	m, err := newMetrics(o.reg)
	if err != nil {
		return nil, err
	}
	notWritten, err := newNotWrittenCounter(o.reg)
	if err != nil {
		return nil, err
	}
	l := &Log{
		cfg: cfg, lg: o.logger, now: o.now, priv: priv, aead: aead,
		builder: Builder{Server: cfg.Server, Site: cfg.Site}, m: m,
		queueWait: o.queueWait, notWritten: notWritten,
		reqs: make(chan *pending, cfg.MaxBatch), done: make(chan struct{}),
		overrides: map[string]bool{},
		grown:     make(chan struct{}, 1),
		cpWant:    make(chan cpSnap, 1), cpDone: make(chan struct{}),
	}
	l.ext = newExtender(max(cfg.PreallocateBytes, 0), cfg.SegmentMaxBytes, o.logger, m.preallocFailures)
	if err := l.recover(); err != nil {
		l.closeFiles()
		return nil, err
	}
	for _, sc := range cfg.Sinks {
		s, err := sc.build(aead)
		if err != nil {
			l.closeFiles()
			return nil, err
		}
		o.sinks = append(o.sinks, s)
	}
	for _, s := range o.sinks {
		l.sinks = append(l.sinks, newAsyncSink(s, sinkQueue(s), m, l.lg))
	}
	if l.recovery.Repaired() {
		l.lg.Warn("audit log repaired after unclean shutdown",
			zap.String("segment", l.recovery.TornSegment), zap.Int64("offset", l.recovery.TornOffset),
			zap.Int64("bytes_moved", l.recovery.TornBytes), zap.Bool("checkpoint_torn", l.recovery.CheckpointTorn))
	}
	if l.recovery.QuarantineBytes > 0 {
		if err := l.recordQuarantine(); err != nil {
			l.closeFiles()
			return nil, err
		}
	}
	l.lastCPAt = l.now()
	// A recovered or previously unterminated tail is covered by a fresh
	// checkpoint before anything new is appended.
	if l.seq > l.lastCP {
		if err := l.checkpoint(l.now()); err != nil {
			l.closeFiles()
			return nil, err
		}
	}
	if err := l.clearPendingQuarantine(); err != nil {
		l.closeFiles()
		return nil, err
	}
	l.durable.Store(l.seq)
	go l.runCheckpointer()
	go l.run()
	return l, nil
}

// Recovery reports what Open repaired.
func (l *Log) Recovery() Recovery { return l.recovery }

// recordQuarantine appends, before the committer starts, the record saying
// which range Open moved aside, so the gap is a signed-over event in the
// trail rather than a silence. It is stored unsealed even when records are
// sealed: it holds only file names, offsets and counts, and verify must be
// able to read it without the encryption key.
func (l *Log) recordQuarantine() error {
	r := l.recovery
	ev := l.builder.Quarantine(QuarantineEvent{
		Segment: r.QuarantineSegment, Offset: r.QuarantineOffset, Bytes: r.QuarantineBytes,
		FromSeq: r.QuarantineFrom, Segments: r.quarantineSegments, Reason: r.quarantineReason,
		Checkpointed: r.lostCheckpoint, CheckpointsOffset: l.cpSize,
	}, l.now())
	p := &pending{payload: encodeQuarantine(getPayloadBuf(), ev), event: ev, plain: true, done: make(chan error, 1)}
	if len(l.sinks) > 0 {
		p.json = appendEvent(nil, ev)
	}
	l.commit([]*pending{p})
	return <-p.done
}

// PublicKey is the key Verify needs.
func (l *Log) PublicKey() ed25519.PublicKey { return l.priv.Public().(ed25519.PublicKey) }

// Record implements authz.Recorder: it returns nil only once the decision's
// record is durable.
func (l *Log) Record(ctx context.Context, req *authz.Request, d *authz.Decision) error {
	if req == nil || d == nil {
		return errf(CodeEncode, nil, nil, "nil request or decision")
	}
	stopped := l.trackOverride(req.Identity.Subject, d.BreakGlass.Active)
	ev := l.builder.Decision(req, d, l.now(), stopped)
	payload := encodeDecision(getPayloadBuf(), ev, req, d)
	if n := len(payload); l.tooLarge(n) {
		// One record must never exceed what a reader accepts: such a frame
		// would stop verify and query there and make the next start refuse
		// the trail. The decision is still accounted for, in compact form.
		putPayloadBuf(payload)
		ev = Compact(ev, n)
		payload = encodeCompact(getPayloadBuf(), ev, d.ID)
		if l.tooLarge(len(payload)) {
			putPayloadBuf(payload)
			err := errf(CodeEncode, nil, nil, "decision record exceeds max_record_bytes %d even in compact form", l.cfg.MaxRecordBytes)
			l.lost(reasonTooLarge, ev, err)
			return err
		}
		l.m.oversize.Inc()
		l.lg.Warn("audit record over max_record_bytes; wrote a compact substitute",
			zap.String("decision_id", d.ID), zap.Int("record_bytes", n), zap.Int("max_record_bytes", l.cfg.MaxRecordBytes))
	}
	return l.append(ctx, payload, ev)
}

// tooLarge says whether a payload of n bytes, once sealed, would exceed the
// per-record cap (which Validate keeps within MaxFramePayload).
func (l *Log) tooLarge(n int) bool {
	if l.aead != nil {
		n += l.aead.NonceSize() + l.aead.Overhead()
	}
	return n > l.cfg.MaxRecordBytes
}

// RecordFiltering appends the record of what the response side removed from
// the response of decision fe.DecisionID.
func (l *Log) RecordFiltering(ctx context.Context, fe FilterEvent) error {
	ev := l.builder.Filtering(fe, l.now())
	return l.append(ctx, encodeFiltering(getPayloadBuf(), ev, fe.DecisionID), ev)
}

func (l *Log) trackOverride(subject string, active bool) (stopped bool) {
	if subject == "" {
		return false
	}
	l.bgMu.Lock()
	defer l.bgMu.Unlock()
	was := l.overrides[subject]
	switch {
	case active:
		l.overrides[subject] = true
	case was:
		delete(l.overrides, subject)
		return true
	}
	return false
}

// append hands payload, a buffer from payloadPool, to the committer, which
// returns it to the pool once it is framed; a record that is never queued
// returns it here.
//
// ctx bounds only how long the caller waits for the record to be durable,
// never whether it is queued: a request that was cancelled, or timed out,
// was still decided, and its record is owed. Queueing waits for room as
// long as the log's own queue wait allows. A record that is not queued is
// counted, logged and returned as an error, so the caller denies.
func (l *Log) append(ctx context.Context, payload []byte, ev *AuditEvent) error {
	if l.tooLarge(len(payload)) {
		n := len(payload)
		putPayloadBuf(payload)
		err := errf(CodeEncode, nil, nil, "record of %d bytes exceeds max_record_bytes %d", n, l.cfg.MaxRecordBytes)
		l.lost(reasonTooLarge, ev, err)
		return err
	}
	start := time.Now()
	p := &pending{payload: payload, event: ev, done: make(chan error, 1)}
	if len(l.sinks) > 0 {
		b := appendEvent(getPayloadBuf(), ev)
		p.json = bytes.Clone(b)
		putPayloadBuf(b)
	}
	if err := l.enqueue(p); err != nil {
		putPayloadBuf(payload)
		reason := reasonClosed
		if !errors.Is(err, ErrClosed) {
			reason = reasonQueueFull
		}
		l.lost(reason, ev, err)
		return err
	}
	select {
	case err := <-p.done:
		l.m.waitSeconds.Observe(time.Since(start).Seconds())
		return err
	case <-ctx.Done():
		// The record is queued and will land (or its failure is counted by
		// the committer); the caller only stops waiting. An audit trail that
		// over-reports a denied request is acceptable, one that
		// under-reports is not.
		return errf(CodeIO, nil, ctx.Err(), "record not confirmed durable")
	}
}

// enqueue puts p on the committer's queue, waiting at most l.queueWait for
// room. The read lock keeps Close from closing the queue under a sender;
// Close waits for senders, which the committer keeps draining until then.
func (l *Log) enqueue(p *pending) error {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		return ErrClosed
	}
	select {
	case l.reqs <- p:
		return nil
	default:
	}
	t := time.NewTimer(l.queueWait)
	defer t.Stop()
	select {
	case l.reqs <- p:
		return nil
	case <-t.C:
		return errf(CodeIO, nil, nil, "record not queued: queue of %d full for %s", cap(l.reqs), l.queueWait)
	}
}

// Reasons a record is not written, the values of the reason label of
// phigate_audit_records_not_written_total.
const (
	reasonClosed      = "closed"       // Record after Close
	reasonFailed      = "failed"       // the log was poisoned by an earlier write failure
	reasonWriteFailed = "write_failed" // the write or fsync carrying the record failed
	reasonQueueFull   = "queue_full"   // no room in the queue within the queue wait
	reasonTooLarge    = "too_large"    // over max_record_bytes even in compact form
)

var notWrittenReasons = []string{reasonClosed, reasonFailed, reasonWriteFailed, reasonQueueFull, reasonTooLarge}

// newNotWrittenCounter counts decisions and filtering records that did not
// reach the trail. Every reason is present from the start at zero, so an
// alert on any increase needs no series to appear first.
func newNotWrittenCounter(reg prometheus.Registerer) (*prometheus.CounterVec, error) {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "phigate", Subsystem: "audit",
		Name: "records_not_written_total",
		Help: "Records that did not reach the trail, by reason; the caller of each was told and denied."}, []string{"reason"})
	for _, r := range notWrittenReasons {
		c.WithLabelValues(r)
	}
	if reg != nil {
		if err := reg.Register(c); err != nil {
			return nil, errf(CodeConfig, nil, err, "register metrics")
		}
	}
	return c, nil
}

// lost counts and logs one record that did not reach the trail. The log
// names the record by its event id (the decision id), which is no PHI, and
// the error, which names files and offsets only.
func (l *Log) lost(reason string, ev *AuditEvent, err error) {
	l.notWritten.WithLabelValues(reason).Inc()
	id := ""
	if ev != nil {
		id = ev.ID
	}
	l.lg.Error("audit record not written", zap.String("reason", reason), zap.String("event_id", id), zap.Error(err))
}

// lostBatch is lost for records the committer could not write; their
// callers may have stopped waiting, so the committer says it itself.
func (l *Log) lostBatch(reason string, n int, err error) {
	l.notWritten.WithLabelValues(reason).Add(float64(n))
	l.lg.Error("audit records not written", zap.String("reason", reason), zap.Int("records", n), zap.Error(err))
}

// Close writes a final checkpoint, stops the committer and the sinks. Every
// record queued before Close, including those whose callers stopped waiting,
// is written before it returns; Record calls after Close fail with ErrClosed
// and are counted as not written.
func (l *Log) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	close(l.reqs)
	l.mu.Unlock()
	<-l.done
	close(l.cpWant)
	<-l.cpDone
	l.takeCheckpointFailure()
	var err error
	if l.failed == nil && l.seq > l.cpWritten {
		err = l.checkpoint(l.now())
	}
	// A clean shutdown leaves the segment holding its records only.
	if err == nil && l.failed == nil {
		if err = l.cutSegment(); err == nil {
			if serr := l.seg.Sync(); serr != nil {
				err = errf(CodeIO, &Position{File: l.segName}, serr, "sync segment")
			}
		}
	}
	for _, s := range l.sinks {
		s.close()
	}
	if cerr := l.closeFiles(); err == nil {
		err = cerr
	}
	return err
}

func (l *Log) closeFiles() error {
	if l.ext != nil {
		l.ext.close()
		l.ext = nil
	}
	var errs []error
	for _, f := range []*os.File{l.seg, l.cpF, l.dirF} {
		if f != nil {
			errs = append(errs, f.Close())
		}
	}
	if err := errors.Join(errs...); err != nil {
		return errf(CodeIO, nil, err, "close")
	}
	return nil
}

// run is the committer: it takes whatever is queued, up to MaxBatch, and
// makes it durable with one write and one fsync.
func (l *Log) run() {
	defer close(l.done)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	batch := make([]*pending, 0, l.cfg.MaxBatch)
	for {
		select {
		case p, ok := <-l.reqs:
			if !ok {
				return
			}
			batch = append(batch[:0], p)
			open := true
		drain:
			for len(batch) < l.cfg.MaxBatch {
				select {
				case p, ok := <-l.reqs:
					if !ok {
						open = false
						break drain
					}
					batch = append(batch, p)
				default:
					break drain
				}
			}
			l.commit(batch)
			clear(batch)
			if !open {
				return
			}
		case <-tick.C:
			now := l.now()
			var err error
			switch {
			case l.failed != nil:
			case l.segSize > 0 && now.Sub(l.segOpened) >= l.cfg.SegmentMaxAge:
				err = l.rotate(now)
			case l.checkpointDue(now):
				l.offerCheckpoint(now)
			}
			if err != nil {
				l.fail(err)
			}
		}
	}
}

func (l *Log) fail(err error) {
	l.failed = err
	l.m.appendFailures.Inc()
	l.lg.Error("audit log failed; refusing further records until reopened", zap.Error(err))
}

// takeCheckpointFailure makes a failure of the checkpointer the log's: a
// trail whose checkpoints cannot be written takes no more records.
func (l *Log) takeCheckpointFailure() {
	if e := l.cpErr.Load(); e != nil && l.failed == nil {
		l.fail(*e)
	}
}

func (l *Log) commit(batch []*pending) {
	l.takeCheckpointFailure()
	if l.failed != nil {
		err := errf(CodeClosed, nil, l.failed, "log failed earlier")
		for _, p := range batch {
			putPayloadBuf(p.payload)
			p.payload = nil
			p.done <- err
		}
		if len(batch) > 0 {
			l.lostBatch(reasonFailed, len(batch), err)
		}
		return
	}
	buf := l.buf[:0]
	seq, head := l.seq, l.head
	var sealBuf []byte
	for _, p := range batch {
		seq++
		payload, flags := p.payload, byte(0)
		if l.aead != nil && !p.plain {
			sealBuf = seal(l.aead, sealBuf[:0], seq, payload)
			payload, flags = sealBuf, flagSealed
		}
		buf, head = appendFrame(buf, seq, head, flags, payload)
		// The frame holds a copy; nothing reads the caller's buffer again.
		putPayloadBuf(p.payload)
		p.payload = nil
	}
	l.buf = buf
	// One clock reading per batch: rotation and checkpoint times refer to
	// when the batch was committed, not to when the committer got to them.
	now := l.now()
	start := time.Now()
	err := l.ext.writeAt(buf, l.segSize)
	if err == nil {
		err = l.seg.Sync()
	}
	l.m.fsyncSeconds.Observe(time.Since(start).Seconds())
	if err != nil {
		err = errf(CodeIO, &Position{File: l.segName, Seq: l.seq + 1, Offset: l.segSize}, err, "append")
		l.fail(err)
		for _, p := range batch {
			p.done <- err
		}
		l.lostBatch(reasonWriteFailed, len(batch), err)
		return
	}
	l.seq, l.head = seq, head
	l.durable.Store(seq)
	select {
	case l.grown <- struct{}{}:
	default:
	}
	l.segSize += int64(len(buf))
	l.m.records.Add(float64(len(batch)))
	l.m.batchSize.Observe(float64(len(batch)))
	for _, p := range batch {
		p.done <- nil
	}
	if len(l.sinks) > 0 {
		first := seq - uint64(len(batch)) + 1
		for i, p := range batch {
			for _, s := range l.sinks {
				s.enqueue(SinkRecord{Seq: first + uint64(i), Event: p.event, JSON: p.json})
			}
		}
	}
	if cap(l.buf) > 8<<20 { // do not pin a huge buffer after a burst
		l.buf = nil
	}
	switch {
	case l.segSize >= l.cfg.SegmentMaxBytes || now.Sub(l.segOpened) >= l.cfg.SegmentMaxAge:
		err = l.rotate(now)
	case l.seq-l.lastCP >= uint64(l.cfg.CheckpointEvery) || l.checkpointDue(now):
		l.offerCheckpoint(now)
	}
	if err != nil {
		l.fail(err)
	}
}

// checkpointDue reports records waiting longer than CheckpointInterval
// for a checkpoint.
func (l *Log) checkpointDue(now time.Time) bool {
	return l.seq > l.lastCP && now.Sub(l.lastCPAt) >= l.cfg.CheckpointInterval
}

func (l *Log) snapshot(now time.Time) cpSnap {
	return cpSnap{seq: l.seq, head: l.head, seg: l.segName, size: l.segSize, at: now}
}

// offerCheckpoint hands the current head to the checkpointer, replacing
// one it has not yet taken: the newer checkpoint vouches for everything
// the older one would have.
func (l *Log) offerCheckpoint(now time.Time) {
	s := l.snapshot(now)
	select {
	case l.cpWant <- s:
	default:
		select {
		case <-l.cpWant:
		default:
		}
		l.cpWant <- s // the committer is the only sender, so there is room now
	}
	l.lastCP, l.lastCPAt = s.seq, now
}

// runCheckpointer writes the checkpoints the committer offers until Close.
func (l *Log) runCheckpointer() {
	defer close(l.cpDone)
	for s := range l.cpWant {
		if l.cpErr.Load() != nil {
			continue
		}
		if err := l.writeCheckpoint(s); err != nil {
			l.cpErr.Store(&err)
		}
	}
}

// checkpoint signs and durably appends a checkpoint of the current head
// before it returns, for Open, rotation and Close, which must not go on
// until it is on disk.
func (l *Log) checkpoint(now time.Time) error {
	s := l.snapshot(now)
	if err := l.writeCheckpoint(s); err != nil {
		return err
	}
	l.lastCP, l.lastCPAt = s.seq, now
	return nil
}

// writeCheckpoint signs s and appends it durably to checkpoints.jsonl and
// the witness. One older than the newest written is skipped, so checkpoints
// on disk only ever grow.
func (l *Log) writeCheckpoint(s cpSnap) error {
	l.cpMu.Lock()
	defer l.cpMu.Unlock()
	if s.seq <= l.cpWritten {
		return nil
	}
	cp := signCheckpoint(l.priv, s.seq, s.head, s.seg, s.size, s.at)
	line, err := json.Marshal(&cp)
	if err != nil {
		return errf(CodeEncode, nil, err, "checkpoint")
	}
	line = append(line, '\n')
	if _, err := l.cpF.Write(line); err != nil {
		return errf(CodeIO, &Position{File: checkpointsFile}, err, "write checkpoint")
	}
	if err := l.cpF.Sync(); err != nil {
		return errf(CodeIO, &Position{File: checkpointsFile}, err, "sync checkpoint")
	}
	if err := writeWitness(l.cfg.WitnessFile, line); err != nil {
		return err
	}
	l.cpWritten = s.seq
	l.m.checkpoints.Inc()
	for _, sk := range l.sinks {
		sk.enqueueCheckpoint(cp)
	}
	return nil
}

// rotate checkpoints the current segment's end and starts the next segment.
func (l *Log) rotate(now time.Time) error {
	if err := l.checkpoint(now); err != nil {
		return err
	}
	if err := l.cutSegment(); err != nil {
		return err
	}
	if err := l.seg.Close(); err != nil {
		return errf(CodeIO, &Position{File: l.segName}, err, "close segment")
	}
	l.seg = nil
	return l.createSegment(l.seq+1, now)
}

// cutSegment stops the zeros ahead of the current segment's records and
// cuts it to them: a segment that is rotated or closed holds its records
// only. The cut need not be durable; readers stop at zeros a crash leaves.
func (l *Log) cutSegment() error {
	l.ext.attach(nil, 0, 0)
	if err := l.seg.Truncate(l.segSize); err != nil {
		return errf(CodeIO, &Position{File: l.segName, Offset: l.segSize}, err, "cut segment to its records")
	}
	return nil
}

func (l *Log) createSegment(first uint64, now time.Time) error {
	name := segmentName(first)
	f, err := os.OpenFile(filepath.Join(l.cfg.Dir, name), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return errf(CodeIO, &Position{File: name}, err, "create segment")
	}
	// The new name must survive a crash too, or recovery would not find
	// the records appended to it.
	if err := l.dirF.Sync(); err != nil {
		f.Close()
		return errf(CodeIO, &Position{File: name}, err, "sync directory")
	}
	l.seg, l.segName, l.segSize, l.segOpened = f, name, 0, now
	l.ext.attach(f, 0, 0)
	l.m.segments.Inc()
	return nil
}

// recover finds the head of the chain, repairs a torn tail, moves an
// unreadable tail aside, checks the trail against the newest checkpoint and
// the witness, and opens the files for appending.
func (l *Log) recover() error {
	dir := l.cfg.Dir
	var err error
	if l.dirF, err = os.Open(dir); err != nil {
		return errf(CodeIO, nil, err, "open Dir")
	}
	cpPath := filepath.Join(dir, checkpointsFile)
	cpData, cps, tornAt, err := readCheckpoints(dir)
	if err != nil {
		return err
	}
	l.cpSize = int64(len(cpData))
	if tornAt >= 0 {
		if err := copyTail(cpPath+".torn", cpData[tornAt:]); err != nil {
			return errf(CodeIO, &Position{File: checkpointsFile, Offset: tornAt}, err, "keep torn checkpoint")
		}
		if err := os.Truncate(cpPath, tornAt); err != nil {
			return errf(CodeIO, &Position{File: checkpointsFile, Offset: tornAt}, err, "truncate torn checkpoint")
		}
		l.recovery.CheckpointTorn = true
		l.cpSize = tornAt
	}
	var last *Checkpoint
	if n := len(cps); n > 0 {
		last = &cps[n-1].Checkpoint
		if !last.verifySig(l.PublicKey()) {
			return errf(CodeSignature, &Position{File: checkpointsFile, Offset: cps[n-1].LineOffset}, nil,
				"newest checkpoint does not verify with the signing key; refusing to extend this log")
		}
		l.lastCP, l.cpWritten = last.Size, last.Size
	}
	witness, err := readWitness(l.cfg.WitnessFile, l.PublicKey())
	if err != nil {
		return err
	}
	if l.cpF, err = os.OpenFile(cpPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600); err != nil {
		return errf(CodeIO, &Position{File: checkpointsFile}, err, "open")
	}

	names, firsts, err := listSegments(dir)
	if err != nil {
		return err
	}
	if len(names) == 0 {
		if err := l.createSegment(1, l.now()); err != nil {
			return err
		}
		if err := l.resumeQuarantine(); err != nil {
			return err
		}
		return l.checkAgainst(last, witness, nil, nil)
	}
	// Walk back from the newest segment to the newest record, noting the
	// earliest unreadable bytes among the segments walked. Only the newest
	// segment can hold a torn write, because rotation fsyncs a segment
	// before the next one exists.
	type damage struct {
		seg  int
		off  int64
		scan *scanErr
		data []byte
	}
	var dmg *damage
	headSeg := -1
	var headFrames []frame
	for i := len(names) - 1; i >= 0; i-- {
		name := names[i]
		data, err := readFile(dir, name)
		if err != nil {
			return err
		}
		frames, serr := parseFrames(data)
		if serr != nil {
			dmg = &damage{seg: i, off: serr.offset, scan: serr, data: data}
		}
		// Links inside the segment must hold; a break here is a rewrite, not
		// a crash or a bad record, and is left for verify to locate.
		for j := range frames {
			if frames[j].Seq != firsts[i]+uint64(j) || (j > 0 && frames[j].Prev != frames[j-1].Hash) {
				return errf(CodeChainBroken, &Position{File: name, Seq: frames[j].Seq, Offset: frames[j].Offset}, nil, "chain does not link; run verify")
			}
		}
		if len(frames) > 0 {
			headSeg, headFrames = i, frames
			break
		}
		if i == 0 && firsts[0] != 1 {
			return errf(CodeChainBroken, &Position{File: name}, nil, "first segment does not start at sequence 1")
		}
	}
	// The segment appended to from now on: the damaged one when there is
	// damage (later segments hold no records), else the newest.
	appendSeg := len(names) - 1
	if dmg != nil {
		appendSeg = dmg.seg
	}
	switch {
	case headSeg >= 0:
		lf := headFrames[len(headFrames)-1]
		l.seq, l.head = lf.Seq, lf.Hash
		if appendSeg != headSeg && l.seq+1 != firsts[appendSeg] {
			return errf(CodeChainBroken, &Position{File: names[appendSeg]}, nil, "segment name does not follow the previous segment")
		}
	default:
		l.seq = firsts[appendSeg] - 1
	}
	if dmg != nil {
		name := names[dmg.seg]
		path := filepath.Join(dir, name)
		switch {
		case l.isTorn(dmg.seg == len(names)-1, name, dmg.off, dmg.scan, dmg.data, last):
			if err := copyTail(path+".torn", dmg.data[dmg.off:]); err != nil {
				return errf(CodeIO, &Position{File: name, Offset: dmg.off}, err, "keep torn tail")
			}
			if err := os.Truncate(path, dmg.off); err != nil {
				return errf(CodeIO, &Position{File: name, Offset: dmg.off}, err, "truncate torn tail")
			}
			l.recovery.TornSegment, l.recovery.TornOffset, l.recovery.TornBytes = name, dmg.off, int64(len(dmg.data))-dmg.off
		default:
			if err := l.quarantine(names, dmg.seg, dmg.off, dmg.data, dmg.scan); err != nil {
				return err
			}
			names = names[:dmg.seg+1]
		}
	}
	st, err := os.Stat(filepath.Join(dir, names[appendSeg]))
	if err != nil {
		return errf(CodeIO, &Position{File: names[appendSeg]}, err, "stat segment")
	}
	f, err := os.OpenFile(filepath.Join(dir, names[appendSeg]), os.O_WRONLY, 0o600)
	if err != nil {
		return errf(CodeIO, &Position{File: names[appendSeg]}, err, "open segment")
	}
	// Appending resumes after the last record: past it are at most the
	// zeros of a segment that was not closed cleanly, which are reused.
	var end int64
	if headSeg == appendSeg {
		lf := headFrames[len(headFrames)-1]
		end = lf.Offset + lf.Size
	}
	l.seg, l.segName, l.segSize, l.segOpened = f, names[appendSeg], end, l.now()
	l.ext.attach(f, end, st.Size())
	l.recovery.Records = l.seq
	l.m.segments.Set(float64(len(names)))
	if dmg == nil {
		if err := l.resumeQuarantine(); err != nil {
			return err
		}
	} else {
		l.pendingQ = true
	}
	return l.checkAgainst(last, witness, names, firsts)
}

// isTorn tells a crash's torn write (an incomplete frame, or zeros a file
// system left when the size reached the disk before the data) at the end
// of the newest segment, past everything a checkpoint vouches for, from any
// other unreadable bytes, which are quarantined.
func (l *Log) isTorn(newest bool, name string, off int64, serr *scanErr, data []byte, last *Checkpoint) bool {
	if !newest || last != nil && last.Segment == name && off < last.Offset {
		return false
	}
	if last != nil && last.Segment > name { // a checkpoint names a later segment
		return false
	}
	return serr.code == CodeTruncated || tornInZeros(data, off)
}

// tornInZeros reports whether the frame at off, which fails its hash, is
// a commit that overwrote preallocated zeros and was cut short: storage
// writes a sector whole or not at all, and a sector that begins inside the
// frame still holds nothing but zeros. No record holds 512 zero bytes on a
// sector boundary (its payload is JSON text or ciphertext), so corruption
// of a record written in full does not pass for this.
func tornInZeros(data []byte, off int64) bool {
	const sector = 512
	rest := data[off:]
	if len(rest) < headerLen {
		return false
	}
	end := min(off+int64(frameExtra)+int64(binary.BigEndian.Uint32(rest[4:8])), int64(len(data)))
	for s := (off + sector) / sector * sector; s < end; s += sector {
		if allZero(data[s:min(s+sector, int64(len(data)))]) {
			return true
		}
	}
	return false
}

// quarantine moves everything from segment names[seg] at off to the end of
// the trail into <segment>.quarantine files, so one unreadable record (an
// oversized or corrupt frame) costs the records behind it their place in
// the chain but never the ability to start and keep recording. Open then
// appends a KindQuarantine record naming the range.
func (l *Log) quarantine(names []string, seg int, off int64, data []byte, serr *scanErr) error {
	dir := l.cfg.Dir
	name := names[seg]
	path := filepath.Join(dir, name)
	moved := int64(len(data)) - off
	for _, later := range names[seg+1:] {
		st, err := os.Stat(filepath.Join(dir, later))
		if err != nil {
			return errf(CodeIO, &Position{File: later}, err, "stat segment to quarantine")
		}
		moved += st.Size()
	}
	l.recovery.QuarantineSegment, l.recovery.QuarantineOffset, l.recovery.QuarantineBytes = name, off, moved
	l.recovery.QuarantineFrom = l.seq + 1
	l.recovery.quarantineReason = serr.detail
	l.recovery.quarantineSegments = len(names) - seg
	// The plan is made durable before any byte moves: a crash between the
	// move and the quarantine record would otherwise leave a trail shorter
	// than its checkpoints with nothing to say why, which the next start
	// would refuse.
	if err := l.writePendingQuarantine(); err != nil {
		return err
	}
	if err := copyTail(path+QuarantineSuffix, data[off:]); err != nil {
		return errf(CodeIO, &Position{File: name, Offset: off}, err, "quarantine tail")
	}
	if err := os.Truncate(path, off); err != nil {
		return errf(CodeIO, &Position{File: name, Offset: off}, err, "truncate quarantined tail")
	}
	for _, later := range names[seg+1:] {
		p := filepath.Join(dir, later)
		b, err := os.ReadFile(p)
		if err != nil {
			return errf(CodeIO, &Position{File: later}, err, "read segment to quarantine")
		}
		if len(b) > 0 {
			if err := copyTail(p+QuarantineSuffix, b); err != nil {
				return errf(CodeIO, &Position{File: later}, err, "quarantine segment")
			}
		}
		if err := os.Remove(p); err != nil {
			return errf(CodeIO, &Position{File: later}, err, "remove quarantined segment")
		}
	}
	if err := l.dirF.Sync(); err != nil {
		return errf(CodeIO, &Position{File: name}, err, "sync directory")
	}
	l.m.quarantined.Inc()
	// Names, offsets and counts only: the moved bytes may hold PHI.
	l.lg.Error("audit trail tail unreadable; moved aside so recording can continue",
		zap.String("segment", name), zap.Int64("offset", off), zap.Int64("bytes_moved", moved),
		zap.Uint64("from_seq", l.seq+1), zap.String("reason", serr.detail),
		zap.String("quarantine_file", name+QuarantineSuffix))
	return nil
}

// pendingQuarantineFile holds a quarantine that has moved bytes but whose
// record is not yet in the trail.
const pendingQuarantineFile = "quarantine.pending.json"

type pendingQuarantine struct {
	Segment  string `json:"segment"`
	Offset   int64  `json:"offset"`
	Bytes    int64  `json:"bytes"`
	FromSeq  uint64 `json:"from_seq"`
	Segments int    `json:"segments"`
	Reason   string `json:"reason"`
}

func (l *Log) writePendingQuarantine() error {
	r := &l.recovery
	b, err := json.Marshal(pendingQuarantine{Segment: r.QuarantineSegment, Offset: r.QuarantineOffset, Bytes: r.QuarantineBytes,
		FromSeq: r.QuarantineFrom, Segments: r.quarantineSegments, Reason: r.quarantineReason})
	if err != nil {
		return errf(CodeEncode, nil, err, "pending quarantine")
	}
	if err := writeAtomic(filepath.Join(l.cfg.Dir, pendingQuarantineFile), b, 0o600); err != nil {
		return errf(CodeIO, &Position{File: pendingQuarantineFile}, err, "write pending quarantine")
	}
	return nil
}

// resumeQuarantine picks up a quarantine a crash interrupted after it moved
// bytes: when the trail ends just before the range it names, the
// quarantine record is still owed and Open writes it. Any other pending
// file is stale (its record was written) and is removed after the next
// checkpoint.
func (l *Log) resumeQuarantine() error {
	b, err := os.ReadFile(filepath.Join(l.cfg.Dir, pendingQuarantineFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return errf(CodeIO, &Position{File: pendingQuarantineFile}, err, "read")
	}
	l.pendingQ = true
	var q pendingQuarantine
	if json.Unmarshal(b, &q) != nil || q.FromSeq != l.seq+1 || q.Bytes <= 0 {
		return nil
	}
	r := &l.recovery
	r.QuarantineSegment, r.QuarantineOffset, r.QuarantineBytes, r.QuarantineFrom = q.Segment, q.Offset, q.Bytes, q.FromSeq
	r.quarantineSegments, r.quarantineReason = q.Segments, q.Reason
	return nil
}

// clearPendingQuarantine removes the pending file once the quarantine
// record is covered by a checkpoint.
func (l *Log) clearPendingQuarantine() error {
	if !l.pendingQ && l.recovery.QuarantineBytes == 0 {
		return nil
	}
	if err := os.Remove(filepath.Join(l.cfg.Dir, pendingQuarantineFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return errf(CodeIO, &Position{File: pendingQuarantineFile}, err, "remove")
	}
	return nil
}

// checkAgainst refuses a trail that is shorter than, or differs from, the
// newest checkpoint in the directory or the witness kept outside it. A
// quarantine explains a trail shorter than either, for sizes at or after
// the quarantined range; before it the records must still match.
func (l *Log) checkAgainst(last, witness *Checkpoint, names []string, firsts []uint64) error {
	q := l.recovery.QuarantineFrom
	for _, c := range []struct {
		cp   *Checkpoint
		what string
	}{{last, "the newest checkpoint"}, {witness, "the witness (" + l.cfg.WitnessFile + ")"}} {
		if c.cp == nil || c.cp.Size == 0 || q > 0 && c.cp.Size >= q {
			continue
		}
		if c.cp.Size > l.seq {
			return errf(CodeTruncated, &Position{File: l.segName, Offset: l.segSize}, nil,
				"log has %d records but %s says %d; refusing to extend a cut trail (run verify)", l.seq, c.what, c.cp.Size)
		}
		h, err := l.hashAt(c.cp.Size, names, firsts)
		if err != nil {
			return err
		}
		if hex.EncodeToString(h[:]) != c.cp.Head {
			return errf(CodeCheckpointMismatch, &Position{File: l.segName, Seq: c.cp.Size}, nil,
				"record %d differs from %s; refusing to extend a rewritten trail (run verify)", c.cp.Size, c.what)
		}
	}
	if q > 0 {
		// Old checkpoints past the quarantine no longer describe the trail;
		// the next one is signed over the quarantine record.
		l.lastCP, l.cpWritten = l.seq, l.seq
		l.recovery.lostCheckpoint = max(sizeOf(last), sizeOf(witness))
	}
	return nil
}

func sizeOf(c *Checkpoint) uint64 {
	if c == nil {
		return 0
	}
	return c.Size
}

// hashAt returns the stored hash of record seq.
func (l *Log) hashAt(seq uint64, names []string, firsts []uint64) ([32]byte, error) {
	if seq == l.seq {
		return l.head, nil
	}
	for i := len(names) - 1; i >= 0; i-- {
		if firsts[i] > seq {
			continue
		}
		data, err := readFile(l.cfg.Dir, names[i])
		if err != nil {
			return [32]byte{}, err
		}
		frames, _ := parseFrames(data)
		if k := seq - firsts[i]; k < uint64(len(frames)) {
			return frames[k].Hash, nil
		}
		break
	}
	return [32]byte{}, errf(CodeTruncated, &Position{File: l.segName, Seq: seq}, nil, "record %d is missing", seq)
}
