package audit

import (
	"context"
	"crypto/cipher"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Shipping copies the trail to a centre shared by the fleet (PostgreSQL,
// store.AuditCentre) in the background. The local trail stays the record
// that gates every Check; the centre is a copy, at least once and
// idempotent by (replica, sequence), that a fleet-wide query and verify
// read. Shipping reads the segments from disk up to the newest durable
// record, so it never waits on the committer and the committer never waits
// on it: a slow or absent centre only grows the lag.

// CodeShipConflict: the centre holds another record (or another chain)
// under the replica id and sequence a shipper offered. Shipping stops.
const CodeShipConflict Code = "ship_conflict"

// ErrShipConflict matches any *Error with CodeShipConflict.
var ErrShipConflict = &Error{Code: CodeShipConflict}

// RecordIndex is what the centre selects a record by, read from its
// payload. The frame's bytes stay the truth; verify --central checks the
// columns against them.
type RecordIndex struct {
	Kind       string
	Recorded   time.Time
	DecisionID string
	User       string // token subject
	FHIRUser   string
	Patients   []string
	Outcome    string
	BreakGlass bool
}

// ShipRecord is one record as the centre stores it.
type ShipRecord struct {
	Seq   uint64
	Frame []byte // header, payload and record hash exactly as in the segment
	Index RecordIndex
}

// Hash is the record hash the frame ends with.
func (r *ShipRecord) Hash() [32]byte {
	var h [32]byte
	if len(r.Frame) >= hashLen {
		copy(h[:], r.Frame[len(r.Frame)-hashLen:])
	}
	return h
}

// Replica names one trail at the centre.
type Replica struct {
	ID      string
	KeyID   string
	Genesis [32]byte // hash of record 1: which chain holds the id
	Host    string
}

// Centre is where a Shipper sends.
type Centre interface {
	// Register claims r.ID for the chain starting with r.Genesis; an id
	// held by another chain is an ErrShipConflict.
	Register(ctx context.Context, r Replica) error
	// Resume returns the highest sequence the centre holds for the
	// replica and that record's frame (0 and nil for none).
	Resume(ctx context.Context, replica string) (uint64, []byte, error)
	// PutRecords stores recs, ascending and contiguous, once each, and
	// notes head, the replica's newest durable sequence. A record the
	// centre holds with other bytes is an ErrShipConflict naming its
	// sequence, never skipped. It returns how many records were new.
	PutRecords(ctx context.Context, replica string, recs []ShipRecord, head uint64) (int, error)
	// PutCheckpoints stores checkpoints once each.
	PutCheckpoints(ctx context.Context, replica string, cps []Checkpoint) error
}

// ShipConfig is audit.ship in phigate.yaml.
type ShipConfig struct {
	// Batch is the most records one insert carries.
	Batch int `yaml:"batch"`
	// Interval is how often the trail is looked at when no record signals
	// it grew, and the first retry delay after a failure.
	Interval time.Duration `yaml:"interval"`
	// MaxBackoff caps the delay between retries while the centre fails.
	MaxBackoff time.Duration `yaml:"max_backoff"`
}

// Shipping defaults.
const (
	DefaultShipBatch      = 500
	DefaultShipInterval   = time.Second
	DefaultShipMaxBackoff = 30 * time.Second
	maxShipBatch          = 10000
)

func (c *ShipConfig) validate() error {
	switch {
	case c.Batch == 0:
		c.Batch = DefaultShipBatch
	case c.Batch < 0 || c.Batch > maxShipBatch:
		return errf(CodeConfig, nil, nil, "ship.batch %d is outside [1, %d]", c.Batch, maxShipBatch)
	}
	switch {
	case c.Interval == 0:
		c.Interval = DefaultShipInterval
	case c.Interval < 10*time.Millisecond:
		return errf(CodeConfig, nil, nil, "ship.interval %s is below 10ms", c.Interval)
	}
	switch {
	case c.MaxBackoff == 0:
		c.MaxBackoff = max(DefaultShipMaxBackoff, c.Interval)
	case c.MaxBackoff < c.Interval:
		return errf(CodeConfig, nil, nil, "ship.max_backoff %s is below ship.interval %s", c.MaxBackoff, c.Interval)
	}
	return nil
}

func validReplicaID(id string) error {
	if id == "" {
		return nil
	}
	if len(id) > 128 {
		return errf(CodeConfig, nil, nil, "replica_id is longer than 128 bytes")
	}
	for _, r := range id {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.'
		if !ok {
			return errf(CodeConfig, nil, nil, "replica_id %q: use letters, digits, '-', '_' and '.' only", id)
		}
	}
	return nil
}

// DefaultReplicaID is the replica id of a trail whose configuration names
// none: "trail-" and the first 8 bytes of its record 1's hash in hex. It
// is fixed when the trail's first record is written and moves with the
// directory; two trails can only share it by sharing that record, so no
// two replicas ship under one default id, even when they share a signing
// key or a host name.
func DefaultReplicaID(genesis [32]byte) string { return "trail-" + hex.EncodeToString(genesis[:8]) }

// shipMetrics are the shipper's instruments; none carries a label from a
// record.
type shipMetrics struct {
	shipped     prometheus.Counter
	checkpoints prometheus.Counter
	errors      *prometheus.CounterVec
	halted      prometheus.Gauge
}

// Reasons of phigate_audit_ship_errors_total.
const (
	shipErrCentre   = "centre"   // the centre failed or could not be reached
	shipErrRead     = "read"     // the local trail could not be read
	shipErrConflict = "conflict" // the centre holds other bytes under this replica id
)

// Shipper copies one Log's trail to a Centre. Stop it with Close.
type Shipper struct {
	l   *Log
	c   Centre
	cfg ShipConfig
	lg  *zap.Logger
	m   shipMetrics
	now func() time.Time

	shipped atomic.Uint64 // highest sequence the centre is known to hold
	known   atomic.Bool   // shipped has been read from the centre
	oldest  atomic.Int64  // recorded time (unix ns) of the oldest unshipped record read, 0 unknown
	since   atomic.Int64  // when shipping last had nothing to do (unix ns)
	halt    atomic.Bool
	idPub   atomic.Pointer[string]

	cancel context.CancelFunc
	done   chan struct{}

	// Owned by the shipping goroutine.
	genesis  *[32]byte // hash of record 1, read once
	id       string
	cur      shipCursor
	prevHash [32]byte // hash of record cur.next-1
	pending  []ShipRecord
	cpOff    int64
	cpWait   []Checkpoint // read, not yet shipped (their records are not)
	failing  bool
}

// shipCursor is where in the segments the next record to read starts.
type shipCursor struct {
	seg  string
	off  int64
	next uint64
}

// ShipOption configures StartShipper.
type ShipOption func(*shipOptions)

type shipOptions struct {
	logger *zap.Logger
	reg    prometheus.Registerer
	now    func() time.Time
}

// ShipLogger sets the shipper's operational logger.
func ShipLogger(l *zap.Logger) ShipOption { return func(o *shipOptions) { o.logger = l } }

// ShipRegisterer registers the shipper's metrics with reg.
func ShipRegisterer(reg prometheus.Registerer) ShipOption {
	return func(o *shipOptions) { o.reg = reg }
}

// ShipClock replaces time.Now for the lag in seconds (tests).
func ShipClock(now func() time.Time) ShipOption { return func(o *shipOptions) { o.now = now } }

// StartShipper starts shipping l's trail to c under the replica id the
// log's configuration names (Config.ReplicaID, else DefaultReplicaID).
func StartShipper(l *Log, c Centre, opts ...ShipOption) (*Shipper, error) {
	o := shipOptions{logger: zap.NewNop(), now: time.Now}
	for _, f := range opts {
		f(&o)
	}
	cfg := l.cfg.Ship
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Shipper{l: l, c: c, cfg: cfg, lg: o.logger, now: o.now, done: make(chan struct{})}
	s.since.Store(o.now().UnixNano())
	if err := s.register(o.reg); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go s.run(ctx)
	return s, nil
}

func (s *Shipper) register(reg prometheus.Registerer) error {
	s.m = shipMetrics{
		shipped: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "phigate", Subsystem: "audit_ship",
			Name: "records_total", Help: "Records the centre stored from this replica's trail."}),
		checkpoints: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "phigate", Subsystem: "audit_ship",
			Name: "checkpoints_total", Help: "Signed checkpoints shipped to the centre."}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "phigate", Subsystem: "audit_ship",
			Name: "errors_total", Help: "Shipping attempts that failed, by reason (centre, read, conflict)."}, []string{"reason"}),
		halted: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "phigate", Subsystem: "audit_ship",
			Name: "halted", Help: "1 when shipping stopped because the centre holds another chain or record under this replica id."}),
	}
	for _, r := range []string{shipErrCentre, shipErrRead, shipErrConflict} {
		s.m.errors.WithLabelValues(r)
	}
	lagRecords := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "phigate", Subsystem: "audit_ship",
		Name: "lag_records", Help: "Durable records of this replica's trail the centre is not known to hold."},
		func() float64 { return float64(s.LagRecords()) })
	lagSeconds := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "phigate", Subsystem: "audit_ship",
		Name: "lag_seconds", Help: "Age of the oldest durable record the centre is not known to hold; 0 when caught up."},
		func() float64 { return s.LagSeconds() })
	if reg == nil {
		return nil
	}
	for _, c := range []prometheus.Collector{s.m.shipped, s.m.checkpoints, s.m.errors, s.m.halted, lagRecords, lagSeconds} {
		if err := reg.Register(c); err != nil {
			return errf(CodeConfig, nil, err, "register shipping metrics")
		}
	}
	return nil
}

// LagRecords is how many durable records the centre is not known to hold
// (all of them until the centre has answered once).
func (s *Shipper) LagRecords() uint64 {
	d, sh := s.l.durable.Load(), s.shipped.Load()
	if sh >= d {
		return 0
	}
	return d - sh
}

// LagSeconds is how long the oldest record the centre lacks has waited.
func (s *Shipper) LagSeconds() float64 {
	if s.LagRecords() == 0 {
		return 0
	}
	from := s.oldest.Load()
	if from == 0 {
		from = s.since.Load()
	}
	return max(0, float64(s.now().UnixNano()-from)/1e9)
}

// Shipped is the highest sequence the centre is known to hold.
func (s *Shipper) Shipped() uint64 { return s.shipped.Load() }

// Halted says whether shipping stopped on a conflict.
func (s *Shipper) Halted() bool { return s.halt.Load() }

// ReplicaID is the id the trail ships under, "" until the centre was
// first reached with a record to ship.
func (s *Shipper) ReplicaID() string {
	if p := s.idPub.Load(); p != nil {
		return *p
	}
	return ""
}

// ShipFlushTimeout bounds the last round Close makes.
const ShipFlushTimeout = 3 * time.Second

// Close stops shipping after one last round of at most ShipFlushTimeout,
// so that a replica that stops for good (a pod whose trail directory is
// never opened again) leaves as little as it can unshipped; closing the
// Log first ships its final checkpoint too. What is still not shipped
// ships after the next start, from where the centre says it stopped.
func (s *Shipper) Close() error {
	s.cancel()
	<-s.done
	if s.halt.Load() {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), ShipFlushTimeout)
	defer cancel()
	for ctx.Err() == nil {
		more, err := s.step(ctx)
		if err != nil || !more {
			break
		}
	}
	return nil
}

// shipGather is the least time between two rounds a new record starts:
// a busy trail commits far more often, and one insert should carry what
// many commits wrote, not one each.
const shipGather = 100 * time.Millisecond

func (s *Shipper) run(ctx context.Context) {
	defer close(s.done)
	backoff := s.cfg.Interval
	gather := min(s.cfg.Interval, shipGather)
	var earliest time.Time // of the next round a new record may start
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.l.grown:
			if s.failing {
				continue // the backoff's timer decides
			}
			if !t.Stop() {
				select {
				case <-t.C:
				default:
				}
			}
			if d := time.Until(earliest); d > 0 {
				t.Reset(d)
				continue
			}
		}
		earliest = time.Now().Add(gather)
		more, err := s.step(ctx)
		wait := s.cfg.Interval
		switch {
		case ctx.Err() != nil:
			return
		case errors.Is(err, ErrShipConflict):
			s.halt.Store(true)
			s.m.halted.Set(1)
			s.m.errors.WithLabelValues(shipErrConflict).Inc()
			s.lg.Error("audit shipping stopped: the centre holds another chain or record under this replica id; set audit.replica_id or investigate phigate_audit_conflicts",
				zap.String("replica", s.id), zap.Error(err))
			return
		case err != nil:
			reason := shipErrCentre
			if CodeOf(err) != CodeIO || !isCentreErr(err) {
				reason = shipErrRead
			}
			s.m.errors.WithLabelValues(reason).Inc()
			if !s.failing {
				s.lg.Warn("audit shipping failing; records wait in the local trail", zap.String("replica", s.id),
					zap.String("reason", reason), zap.Error(err))
			}
			s.failing = true
			wait = backoff
			backoff = min(2*backoff, s.cfg.MaxBackoff)
		default:
			if s.failing {
				s.lg.Info("audit shipping resumed", zap.String("replica", s.id), zap.Uint64("shipped", s.shipped.Load()))
			}
			s.failing = false
			backoff = s.cfg.Interval
			if more {
				wait = 0
			}
		}
		t.Reset(wait)
	}
}

// centreErr marks an error of the centre, as opposed to the local trail.
type centreErr struct{ err error }

func (e centreErr) Error() string { return "centre: " + e.err.Error() }
func (e centreErr) Unwrap() error { return e.err }

func isCentreErr(err error) bool {
	var c centreErr
	return errors.As(err, &c)
}

// fromCentre wraps a Centre's error: conflicts keep their code, anything
// else is an I/O failure of the centre.
func fromCentre(err error) error {
	if err == nil || errors.Is(err, ErrShipConflict) {
		return err
	}
	return errf(CodeIO, nil, centreErr{err}, "centre")
}

// step does one round: it claims the replica id and finds where the centre
// stopped (once), reads up to a batch of durable records, ships them and
// the checkpoints they complete. more says a full batch is waiting.
func (s *Shipper) step(ctx context.Context) (more bool, err error) {
	durable := s.l.durable.Load()
	if durable == 0 {
		return false, nil
	}
	// After a failure the centre is asked again where it stands: a
	// database restored from a backup may hold less than it acknowledged.
	if !s.known.Load() || s.failing {
		if err := s.resume(ctx, durable); err != nil {
			return false, err
		}
	}
	if len(s.pending) == 0 && s.shipped.Load() < durable {
		if s.pending, err = s.read(durable); err != nil {
			return false, err
		}
		if len(s.pending) > 0 {
			s.oldest.Store(s.pending[0].Index.Recorded.UnixNano())
		}
	}
	if len(s.pending) > 0 {
		n, err := s.c.PutRecords(ctx, s.id, s.pending, durable)
		if err = fromCentre(err); err != nil {
			return false, err
		}
		last := s.pending[len(s.pending)-1].Seq
		s.shipped.Store(last)
		s.m.shipped.Add(float64(n))
		s.pending = s.pending[:0]
		s.oldest.Store(0)
	}
	if s.shipped.Load() >= durable {
		s.since.Store(s.now().UnixNano())
	}
	if err := s.shipCheckpoints(ctx); err != nil {
		return false, err
	}
	return s.shipped.Load() < durable, nil
}

// resume claims the replica id for this chain and positions the cursor
// after the last record the centre holds, having checked that record is
// this trail's.
func (s *Shipper) resume(ctx context.Context, durable uint64) error {
	if s.genesis == nil {
		first, err := s.frameAt(1)
		if err != nil {
			return err
		}
		h := first.Hash()
		s.genesis = &h
	}
	genesis := *s.genesis
	s.id = s.l.cfg.ReplicaID
	if s.id == "" {
		s.id = DefaultReplicaID(genesis)
	}
	host, _ := os.Hostname()
	if err := fromCentre(s.c.Register(ctx, Replica{ID: s.id, KeyID: KeyID(s.l.PublicKey()), Genesis: genesis, Host: host})); err != nil {
		return err
	}
	seq, frame, err := s.c.Resume(ctx, s.id)
	if err = fromCentre(err); err != nil {
		return err
	}
	if seq > durable {
		return errf(CodeShipConflict, nil, nil, "the centre holds %d records under replica %s, this trail %d", seq, s.id, durable)
	}
	s.prevHash = zeroHash()
	if seq > 0 {
		local, err := s.frameAt(seq)
		if err != nil {
			return err
		}
		if string(local.Frame) != string(frame) {
			return errf(CodeShipConflict, nil, nil, "the centre's record %d of replica %s is not this trail's", seq, s.id)
		}
		s.prevHash = local.Hash()
	}
	s.cur = shipCursor{next: seq + 1} // located on the first read
	s.idPub.Store(&s.id)
	s.shipped.Store(seq)
	s.known.Store(true)
	s.pending = s.pending[:0]
	s.cpOff, s.cpWait = 0, nil
	if !s.failing {
		s.lg.Info("audit shipping", zap.String("replica", s.id), zap.Uint64("centre_has", seq), zap.Uint64("trail_has", durable))
	}
	return nil
}

// frameAt reads record seq from the segments.
func (s *Shipper) frameAt(seq uint64) (ShipRecord, error) {
	c, err := locate(s.l.cfg.Dir, seq)
	if err != nil {
		return ShipRecord{}, err
	}
	recs, _, err := readShip(s.l.cfg.Dir, c, 1, seq, s.l.aead)
	if err != nil {
		return ShipRecord{}, err
	}
	if len(recs) == 0 {
		return ShipRecord{}, errf(CodeTruncated, &Position{File: c.seg, Seq: seq}, nil, "record %d is not in the trail", seq)
	}
	return recs[0], nil
}

// read returns up to a batch of records from the cursor, across segment
// boundaries, none past durable, each linked to the one before.
func (s *Shipper) read(durable uint64) ([]ShipRecord, error) {
	if s.cur.seg == "" {
		c, err := locate(s.l.cfg.Dir, s.cur.next)
		if err != nil {
			return nil, err
		}
		s.cur = c
	}
	var out []ShipRecord
	for len(out) < s.cfg.Batch && s.cur.next <= durable {
		recs, c, err := readShip(s.l.cfg.Dir, s.cur, s.cfg.Batch-len(out), durable, s.l.aead)
		if err != nil {
			s.cur.seg = "" // located again next time
			return nil, err
		}
		for i := range recs {
			var prev [32]byte
			copy(prev[:], recs[i].Frame[16:48])
			if prev != s.prevHash {
				pos := &Position{File: s.cur.seg, Seq: recs[i].Seq}
				s.cur.seg = ""
				return nil, errf(CodeChainBroken, pos, nil, "local chain does not link; run audit verify")
			}
			s.prevHash = recs[i].Hash()
		}
		out = append(out, recs...)
		s.cur = c
		if len(recs) > 0 {
			continue
		}
		// Nothing more in this segment: the next one starts at cur.next,
		// once rotation has made it.
		next := segmentName(s.cur.next)
		if _, err := os.Stat(filepath.Join(s.l.cfg.Dir, next)); err != nil {
			if len(out) == 0 {
				return nil, errf(CodeTruncated, &Position{File: s.cur.seg, Seq: s.cur.next, Offset: s.cur.off}, nil,
					"record %d is durable but not in the trail", s.cur.next)
			}
			break
		}
		s.cur = shipCursor{seg: next, next: s.cur.next}
	}
	return out, nil
}

// locate finds the segment and offset of record seq. It walks the frame
// headers only, skipping each payload, so finding a record costs neither
// memory nor hashing in proportion to the segment: the frames themselves
// are checked when readShip reads them.
func locate(dir string, seq uint64) (shipCursor, error) {
	names, firsts, err := listSegments(dir)
	if err != nil {
		return shipCursor{}, err
	}
	for i := len(names) - 1; i >= 0; i-- {
		if firsts[i] > seq {
			continue
		}
		off, err := skipTo(dir, names[i], seq-firsts[i])
		if err != nil {
			return shipCursor{}, err
		}
		if off < 0 {
			break
		}
		return shipCursor{seg: names[i], off: off, next: seq}, nil
	}
	return shipCursor{}, errf(CodeTruncated, &Position{File: lastOr(names), Seq: seq}, nil, "record %d is not in the trail", seq)
}

// skipTo returns the offset of the k-th frame of a segment (the end of the
// segment when it holds exactly k), or -1 when it holds fewer.
func skipTo(dir, name string, k uint64) (int64, error) {
	f, err := os.Open(filepath.Join(dir, name))
	if err != nil {
		return 0, errf(CodeIO, &Position{File: name}, err, "open segment")
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, errf(CodeIO, &Position{File: name}, err, "stat segment")
	}
	var hdr [headerLen]byte
	var off int64
	for n := uint64(0); n < k; n++ {
		if off+headerLen > st.Size() {
			return -1, nil
		}
		if _, err := f.ReadAt(hdr[:], off); err != nil {
			return 0, errf(CodeIO, &Position{File: name, Offset: off}, err, "read segment")
		}
		if hdr[0] != frameMagic[0] || hdr[1] != frameMagic[1] || hdr[2] != frameVer {
			return 0, errf(CodeChainBroken, &Position{File: name, Offset: off}, nil, "bad frame magic or version; run audit verify")
		}
		off += int64(frameExtra) + int64(binary.BigEndian.Uint32(hdr[4:8]))
	}
	if off > st.Size() {
		return -1, nil
	}
	return off, nil
}

// shipChunk is how much of a segment one read takes, beyond a frame that
// is larger.
const shipChunk = 1 << 20

// readShip reads up to n records from c, none past durable, and returns
// them with the cursor after them.
func readShip(dir string, c shipCursor, n int, durable uint64, aead cipher.AEAD) ([]ShipRecord, shipCursor, error) {
	f, err := os.Open(filepath.Join(dir, c.seg))
	if err != nil {
		return nil, c, errf(CodeIO, &Position{File: c.seg}, err, "open segment")
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, c, errf(CodeIO, &Position{File: c.seg}, err, "stat segment")
	}
	if st.Size() <= c.off {
		return nil, c, nil
	}
	want := min(st.Size()-c.off, shipChunk)
	var data []byte
	for {
		data = make([]byte, want)
		m, err := f.ReadAt(data, c.off)
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, c, errf(CodeIO, &Position{File: c.seg, Offset: c.off}, err, "read segment")
		}
		data = data[:m]
		// A frame larger than the chunk: read exactly as much as it needs.
		if len(data) >= headerLen && m == int(want) {
			if need := int64(frameExtra + int(binary.BigEndian.Uint32(data[4:8]))); need > want && need <= frameExtra+MaxFramePayload {
				want = need
				continue
			}
		}
		break
	}
	frames, _ := parseFrames(data) // a torn or unsynced tail is past durable
	var out []ShipRecord
	for i := range frames {
		fr := &frames[i]
		if len(out) == n || fr.Seq > durable {
			break
		}
		if fr.Seq != c.next {
			return nil, c, errf(CodeChainBroken, &Position{File: c.seg, Seq: fr.Seq, Offset: c.off + fr.Offset}, nil, "expected record %d; run audit verify", c.next)
		}
		rec := ShipRecord{Seq: fr.Seq, Frame: append([]byte(nil), data[fr.Offset:fr.Offset+fr.Size]...)}
		rec.Index, _ = indexFrame(aead, fr)
		out = append(out, rec)
		c.next++
		c.off += fr.Size
	}
	return out, c, nil
}

// indexFrame reads a frame's query columns, decoding its event only (the
// policy input and decision are skipped, not parsed): this runs once per
// record shipped. A frame that does not decode ships with empty columns,
// which verify --central reports.
func indexFrame(aead cipher.AEAD, f *frame) (RecordIndex, error) {
	payload := f.Payload
	if f.Flags&flagSealed != 0 {
		if aead == nil {
			return RecordIndex{}, errf(CodeDecrypt, nil, nil, "record is encrypted and no key was given")
		}
		p, err := open(aead, f.Seq, payload)
		if err != nil {
			return RecordIndex{}, errf(CodeDecrypt, nil, nil, "record does not open with the key given")
		}
		payload = p
	}
	var r struct {
		Kind  string      `json:"kind"`
		Event *AuditEvent `json:"event"`
	}
	if err := json.Unmarshal(payload, &r); err != nil || r.Event == nil {
		return RecordIndex{}, errf(CodeEncode, nil, nil, "record payload is not a record")
	}
	return indexOf(&storedRecord{Kind: r.Kind, Event: r.Event}), nil
}

// indexOf reads a record's query columns.
func indexOf(r *storedRecord) RecordIndex {
	ev := r.Event
	x := RecordIndex{Kind: r.Kind, DecisionID: ev.DecisionID(), Patients: ev.Patients(), Outcome: ev.Outcome, BreakGlass: ev.BreakGlass()}
	x.User, x.FHIRUser = ev.User()
	x.Recorded, _ = time.Parse(time.RFC3339Nano, ev.Recorded)
	if x.Patients == nil {
		x.Patients = []string{}
	}
	return x
}

// shipCheckpoints ships the checkpoint lines written since the last look
// whose records the centre holds; the others wait for their records.
func (s *Shipper) shipCheckpoints(ctx context.Context) error {
	f, err := os.Open(filepath.Join(s.l.cfg.Dir, checkpointsFile))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return errf(CodeIO, &Position{File: checkpointsFile}, err, "open")
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return errf(CodeIO, &Position{File: checkpointsFile}, err, "stat")
	}
	if st.Size() < s.cpOff { // repaired at a restart: read it again
		s.cpOff, s.cpWait = 0, nil
	}
	if st.Size() > s.cpOff {
		data := make([]byte, st.Size()-s.cpOff)
		if _, err := f.ReadAt(data, s.cpOff); err != nil && !errors.Is(err, io.EOF) {
			return errf(CodeIO, &Position{File: checkpointsFile}, err, "read")
		}
		cps, tornAt, err := parseCheckpoints(data)
		if err != nil {
			return err
		}
		used := int64(len(data))
		if tornAt >= 0 {
			used = tornAt
		}
		for _, c := range cps {
			s.cpWait = append(s.cpWait, c.Checkpoint)
		}
		s.cpOff += used
	}
	shipped := s.shipped.Load()
	var ready []Checkpoint
	rest := s.cpWait[:0]
	for _, c := range s.cpWait {
		if c.Size <= shipped {
			ready = append(ready, c)
		} else {
			rest = append(rest, c)
		}
	}
	if len(ready) == 0 {
		s.cpWait = rest
		return nil
	}
	if err := fromCentre(s.c.PutCheckpoints(ctx, s.id, ready)); err != nil {
		s.cpWait = append(ready, rest...) // kept for the next round
		return err
	}
	s.cpWait = rest
	s.m.checkpoints.Add(float64(len(ready)))
	return nil
}
