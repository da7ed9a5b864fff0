package audit

import (
	"bytes"
	"context"
	"crypto/cipher"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"

	"sync"
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
	// Records is the number of records in the log after recovery.
	Records uint64
}

// Repaired says whether Open had to change anything.
func (r Recovery) Repaired() bool { return r.TornBytes > 0 || r.CheckpointTorn }

// Option configures Open.
type Option func(*options)

type options struct {
	logger *zap.Logger
	reg    prometheus.Registerer
	now    func() time.Time
	sinks  []Sink
}

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

	mu     sync.RWMutex // guards closed against sends on reqs
	closed bool
	reqs   chan *pending
	done   chan struct{}

	bgMu      sync.Mutex
	overrides map[string]bool // user subject -> override was active on their last decision

	recovery Recovery

	// Owned by the committer goroutine after Open.
	dirF      *os.File
	seg       *os.File
	segName   string
	segSize   int64
	segOpened time.Time
	cpF       *os.File
	seq       uint64
	head      [32]byte
	lastCP    uint64
	failed    error
	buf       []byte
}

var _ authz.Recorder = (*Log)(nil)

// Open opens (creating if needed) the log in cfg.Dir, repairing a torn tail
// left by a crash, and starts the committer.
func Open(cfg Config, opts ...Option) (*Log, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	o := options{logger: zap.NewNop(), now: time.Now}
	for _, f := range opts {
		f(&o)
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, errf(CodeIO, nil, err, "create Dir")
	}
	priv, err := LoadOrCreateSigningKey(cfg.SigningKeyFile)
	if err != nil {
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
	l := &Log{
		cfg: cfg, lg: o.logger, now: o.now, priv: priv, aead: aead,
		builder: Builder{Server: cfg.Server, Site: cfg.Site}, m: m,
		reqs: make(chan *pending, cfg.MaxBatch), done: make(chan struct{}),
		overrides: map[string]bool{},
	}
	if err := l.recover(); err != nil {
		l.closeFiles()
		return nil, err
	}
	for _, sc := range cfg.Sinks {
		s, err := sc.Build()
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
	// A recovered or previously unterminated tail is covered by a fresh
	// checkpoint before anything new is appended.
	if l.seq > l.lastCP {
		if err := l.checkpoint(l.now()); err != nil {
			l.closeFiles()
			return nil, err
		}
	}
	go l.run()
	return l, nil
}

// Recovery reports what Open repaired.
func (l *Log) Recovery() Recovery { return l.recovery }

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
	return l.append(ctx, encodeDecision(getPayloadBuf(), ev, req, d), ev)
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
func (l *Log) append(ctx context.Context, payload []byte, ev *AuditEvent) error {
	start := time.Now()
	p := &pending{payload: payload, event: ev, done: make(chan error, 1)}
	if len(l.sinks) > 0 {
		b := appendEvent(getPayloadBuf(), ev)
		p.json = bytes.Clone(b)
		putPayloadBuf(b)
	}
	l.mu.RLock()
	if l.closed {
		l.mu.RUnlock()
		putPayloadBuf(payload)
		return ErrClosed
	}
	select {
	case l.reqs <- p:
	case <-ctx.Done():
		l.mu.RUnlock()
		putPayloadBuf(payload)
		return errf(CodeIO, nil, ctx.Err(), "record not queued")
	}
	l.mu.RUnlock()
	select {
	case err := <-p.done:
		l.m.waitSeconds.Observe(time.Since(start).Seconds())
		return err
	case <-ctx.Done():
		// The record may still land; an audit trail that over-reports a
		// denied request is acceptable, one that under-reports is not.
		return errf(CodeIO, nil, ctx.Err(), "record not confirmed durable")
	}
}

// Close writes a final checkpoint, stops the committer and the sinks. Record
// calls after Close fail with ErrClosed.
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
	var err error
	if l.failed == nil && l.seq > l.lastCP {
		err = l.checkpoint(l.now())
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
			if now := l.now(); l.failed == nil && l.segSize > 0 && now.Sub(l.segOpened) >= l.cfg.SegmentMaxAge {
				if err := l.rotate(now); err != nil {
					l.fail(err)
				}
			}
		}
	}
}

func (l *Log) fail(err error) {
	l.failed = err
	l.m.appendFailures.Inc()
	l.lg.Error("audit log failed; refusing further records until reopened", zap.Error(err))
}

func (l *Log) commit(batch []*pending) {
	if l.failed != nil {
		for _, p := range batch {
			putPayloadBuf(p.payload)
			p.payload = nil
			p.done <- errf(CodeClosed, nil, l.failed, "log failed earlier")
		}
		return
	}
	buf := l.buf[:0]
	seq, head := l.seq, l.head
	var sealBuf []byte
	for _, p := range batch {
		seq++
		payload, flags := p.payload, byte(0)
		if l.aead != nil {
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
	_, err := l.seg.Write(buf)
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
		return
	}
	l.seq, l.head = seq, head
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
	case l.seq-l.lastCP >= uint64(l.cfg.CheckpointEvery):
		err = l.checkpoint(now)
	}
	if err != nil {
		l.fail(err)
	}
}

// checkpoint signs and durably appends a checkpoint of the current head.
func (l *Log) checkpoint(now time.Time) error {
	cp := signCheckpoint(l.priv, l.seq, l.head, l.segName, l.segSize, now)
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
	l.lastCP = l.seq
	l.m.checkpoints.Inc()
	for _, s := range l.sinks {
		s.enqueueCheckpoint(cp)
	}
	return nil
}

// rotate checkpoints the current segment's end and starts the next segment.
func (l *Log) rotate(now time.Time) error {
	if err := l.checkpoint(now); err != nil {
		return err
	}
	if err := l.seg.Close(); err != nil {
		return errf(CodeIO, &Position{File: l.segName}, err, "close segment")
	}
	l.seg = nil
	return l.createSegment(l.seq+1, now)
}

func (l *Log) createSegment(first uint64, now time.Time) error {
	name := segmentName(first)
	f, err := os.OpenFile(filepath.Join(l.cfg.Dir, name), os.O_CREATE|os.O_EXCL|os.O_WRONLY|os.O_APPEND, 0o600)
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
	l.m.segments.Inc()
	return nil
}

// recover finds the head of the chain, repairs a torn tail, and opens the
// files for appending.
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
	if tornAt >= 0 {
		if err := copyTail(cpPath+".torn", cpData[tornAt:]); err != nil {
			return errf(CodeIO, &Position{File: checkpointsFile, Offset: tornAt}, err, "keep torn checkpoint")
		}
		if err := os.Truncate(cpPath, tornAt); err != nil {
			return errf(CodeIO, &Position{File: checkpointsFile, Offset: tornAt}, err, "truncate torn checkpoint")
		}
		l.recovery.CheckpointTorn = true
	}
	var last *Checkpoint
	if n := len(cps); n > 0 {
		last = &cps[n-1].Checkpoint
		if !last.verifySig(l.PublicKey()) {
			return errf(CodeSignature, &Position{File: checkpointsFile, Offset: cps[n-1].LineOffset}, nil,
				"newest checkpoint does not verify with the signing key; refusing to extend this log")
		}
		l.lastCP = last.Size
	}
	if l.cpF, err = os.OpenFile(cpPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600); err != nil {
		return errf(CodeIO, &Position{File: checkpointsFile}, err, "open")
	}

	names, firsts, err := listSegments(dir)
	if err != nil {
		return err
	}
	if len(names) == 0 {
		if last != nil {
			return errf(CodeTruncated, &Position{File: dir}, nil, "checkpoint says %d records but there are no segments", last.Size)
		}
		return l.createSegment(1, l.now())
	}
	// Walk back from the newest segment to the newest record; only the
	// newest segment can hold a torn write, because rotation fsyncs a
	// segment before the next one exists.
	for i := len(names) - 1; i >= 0; i-- {
		name := names[i]
		data, err := readFile(dir, name)
		if err != nil {
			return err
		}
		frames, serr := parseFrames(data)
		good := int64(len(data))
		if serr != nil {
			if i != len(names)-1 {
				return errf(serr.code, &Position{File: name, Offset: serr.offset}, nil, "%s (not the newest segment; run verify)", serr.detail)
			}
			good = serr.offset
		}
		// Links inside the segment must hold; a break here is not a crash.
		for j := range frames {
			if frames[j].Seq != firsts[i]+uint64(j) || (j > 0 && frames[j].Prev != frames[j-1].Hash) {
				return errf(CodeChainBroken, &Position{File: name, Seq: frames[j].Seq, Offset: frames[j].Offset}, nil, "chain does not link; run verify")
			}
		}
		if good < int64(len(data)) {
			if last != nil && last.Segment == name && good < last.Offset {
				return errf(CodeTruncated, &Position{File: name, Offset: good}, nil,
					"damage before the newest checkpoint (offset %d) is not a torn write; run verify", last.Offset)
			}
			path := filepath.Join(dir, name)
			if err := copyTail(path+".torn", data[good:]); err != nil {
				return errf(CodeIO, &Position{File: name, Offset: good}, err, "keep torn tail")
			}
			if err := os.Truncate(path, good); err != nil {
				return errf(CodeIO, &Position{File: name, Offset: good}, err, "truncate torn tail")
			}
			l.recovery.TornSegment, l.recovery.TornOffset, l.recovery.TornBytes = name, good, int64(len(data))-good
		}
		if i == len(names)-1 {
			f, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY|os.O_APPEND, 0o600)
			if err != nil {
				return errf(CodeIO, &Position{File: name}, err, "open segment")
			}
			l.seg, l.segName, l.segSize, l.segOpened = f, name, good, l.now()
			if len(frames) == 0 {
				l.seq = firsts[i] - 1
			}
		}
		if len(frames) > 0 {
			lf := frames[len(frames)-1]
			l.seq, l.head = lf.Seq, lf.Hash
			if i != len(names)-1 && l.seq+1 != firsts[len(names)-1] {
				return errf(CodeChainBroken, &Position{File: names[len(names)-1]}, nil, "segment name does not follow the previous segment")
			}
			break
		}
		if i == 0 && firsts[0] != 1 {
			return errf(CodeChainBroken, &Position{File: name}, nil, "first segment does not start at sequence 1")
		}
	}
	if last != nil {
		switch {
		case last.Size > l.seq:
			return errf(CodeTruncated, &Position{File: l.segName, Offset: l.segSize}, nil,
				"log has %d records but the newest checkpoint says %d", l.seq, last.Size)
		case last.Size == l.seq && last.Head != hex.EncodeToString(l.head[:]):
			return errf(CodeCheckpointMismatch, &Position{File: l.segName, Seq: l.seq}, nil, "head does not match the newest checkpoint")
		}
	}
	l.recovery.Records = l.seq
	l.m.segments.Set(float64(len(names)))
	return nil
}
