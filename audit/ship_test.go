package audit

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// memCentre is a hand-written Centre, CentralSource and CentralQuerier
// in memory: the seam the shipper and verify --central meet PostgreSQL
// at (store.AuditCentre is tested against a real server in store).
type memCentre struct {
	mu       sync.Mutex
	replicas map[string]*CentralReplica
	records  map[string]map[uint64]ShipRecord
	cps      map[string]map[string]Checkpoint
	puts     int
	block    chan struct{} // when set, PutRecords waits on it or the context
	down     bool          // PutRecords fails
}

func newMemCentre() *memCentre {
	return &memCentre{replicas: map[string]*CentralReplica{}, records: map[string]map[uint64]ShipRecord{}, cps: map[string]map[string]Checkpoint{}}
}

func (m *memCentre) Register(_ context.Context, r Replica) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if old, ok := m.replicas[r.ID]; ok {
		if old.Genesis != r.Genesis || old.KeyID != r.KeyID {
			old.Conflicts = append(old.Conflicts, 0)
			return errf(CodeShipConflict, nil, nil, "another chain")
		}
		return nil
	}
	m.replicas[r.ID] = &CentralReplica{Replica: r}
	m.records[r.ID] = map[uint64]ShipRecord{}
	m.cps[r.ID] = map[string]Checkpoint{}
	return nil
}

func (m *memCentre) Resume(_ context.Context, replica string) (uint64, []byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var top uint64
	for s := range m.records[replica] {
		top = max(top, s)
	}
	if top == 0 {
		return 0, nil, nil
	}
	return top, m.records[replica][top].Frame, nil
}

func (m *memCentre) PutRecords(ctx context.Context, replica string, recs []ShipRecord, head uint64) (int, error) {
	if m.block != nil {
		select {
		case <-m.block:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.down {
		return 0, errors.New("centre down")
	}
	m.puts++
	n := 0
	for _, r := range recs {
		if old, ok := m.records[replica][r.Seq]; ok {
			if string(old.Frame) != string(r.Frame) {
				return 0, errf(CodeShipConflict, &Position{Seq: r.Seq}, nil, "other bytes")
			}
			continue
		}
		m.records[replica][r.Seq] = r
		n++
	}
	m.replicas[replica].Head = max(m.replicas[replica].Head, head)
	return n, nil
}

func (m *memCentre) PutCheckpoints(_ context.Context, replica string, cps []Checkpoint) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, c := range cps {
		m.cps[replica][c.Sig] = c
	}
	return nil
}

func (m *memCentre) Replicas(context.Context) ([]CentralReplica, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []CentralReplica
	for _, r := range m.replicas {
		out = append(out, *r)
	}
	slices.SortFunc(out, func(a, b CentralReplica) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

func (m *memCentre) sorted(replica string) []ShipRecord {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []ShipRecord
	for _, r := range m.records[replica] {
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b ShipRecord) int { return int(a.Seq) - int(b.Seq) })
	return out
}

func (m *memCentre) Records(_ context.Context, replica string, fn func(*ShipRecord) error) error {
	for _, r := range m.sorted(replica) {
		if err := fn(&r); err != nil {
			return err
		}
	}
	return nil
}

func (m *memCentre) Checkpoints(_ context.Context, replica string) ([]Checkpoint, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Checkpoint
	for _, c := range m.cps[replica] {
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b Checkpoint) int { return int(a.Size) - int(b.Size) })
	return out, nil
}

func (m *memCentre) Select(_ context.Context, _ Filter, fn func(string, *ShipRecord) error) error {
	reps, _ := m.Replicas(context.Background())
	for _, r := range reps {
		for _, rec := range m.sorted(r.ID) {
			if err := fn(r.ID, &rec); err != nil {
				return err
			}
		}
	}
	return nil
}

func (m *memCentre) count(replica string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.records[replica])
}

func shipFast(c *Config) {
	c.Ship = ShipConfig{Batch: 8, Interval: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond}
}

func waitShip(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestShipConfigValidate(t *testing.T) {
	for name, tc := range map[string]struct {
		mod  func(*Config)
		want string
	}{
		"batch":       {func(c *Config) { c.Ship.Batch = -1 }, "ship.batch"},
		"huge batch":  {func(c *Config) { c.Ship.Batch = 1 << 20 }, "ship.batch"},
		"interval":    {func(c *Config) { c.Ship.Interval = time.Microsecond }, "ship.interval"},
		"backoff":     {func(c *Config) { c.Ship.Interval, c.Ship.MaxBackoff = time.Second, time.Millisecond*100 }, "ship.max_backoff"},
		"replica id":  {func(c *Config) { c.ReplicaID = "ward 3/east" }, "replica_id"},
		"long id":     {func(c *Config) { c.ReplicaID = strings.Repeat("a", 129) }, "replica_id"},
		"ok defaults": {func(*Config) {}, ""},
	} {
		t.Run(name, func(t *testing.T) {
			c := Config{Dir: t.TempDir()}
			tc.mod(&c)
			err := c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatal(err)
			case tc.want == "":
				if c.Ship.Batch != DefaultShipBatch || c.Ship.Interval != DefaultShipInterval || c.Ship.MaxBackoff != DefaultShipMaxBackoff {
					t.Errorf("defaults not filled: %+v", c.Ship)
				}
			case err == nil || !strings.Contains(err.Error(), tc.want):
				t.Fatalf("got %v, want an error naming %s", err, tc.want)
			}
		})
	}
}

// TestShipperNeverHoldsUpRecord: a centre that never answers leaves
// every Record as fast as without one; the lag grows, and Close still
// returns.
func TestShipperNeverHoldsUpRecord(t *testing.T) {
	l, _ := openTest(t, shipFast)
	defer l.Close()
	c := newMemCentre()
	c.block = make(chan struct{}) // never closed
	s, err := StartShipper(l, c)
	if err != nil {
		t.Fatal(err)
	}
	fill(t, l, 0, 50)
	waitShip(t, "the lag to show every record", func() bool { return s.LagRecords() == 50 })
	if s.LagSeconds() <= 0 {
		t.Errorf("lag in seconds %v with 50 records waiting", s.LagSeconds())
	}
	done := make(chan struct{})
	go func() { _ = s.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Close did not return while the centre hung")
	}
	if c.count(s.ReplicaID()) != 0 {
		t.Error("a blocked centre stored records")
	}
}

// TestShipperRefusesForeignHead: the centre's newest record under this
// replica id is not this trail's record: the shipper stops before
// shipping anything.
func TestShipperRefusesForeignHead(t *testing.T) {
	l, _ := openTest(t, shipFast)
	defer l.Close()
	fill(t, l, 0, 10)
	c := newMemCentre()
	s, err := StartShipper(l, c)
	if err != nil {
		t.Fatal(err)
	}
	waitShip(t, "shipping", func() bool { return s.Shipped() == 10 })
	id := s.ReplicaID()
	_ = s.Close()
	// Someone rewrites record 10 at the centre.
	c.mu.Lock()
	r := c.records[id][10]
	r.Frame = slices.Clone(r.Frame)
	r.Frame[60] ^= 1
	c.records[id][10] = r
	c.mu.Unlock()
	fill(t, l, 10, 5)
	s, err = StartShipper(l, c)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	waitShip(t, "the shipper to halt", s.Halted)
	if n := c.count(id); n != 10 {
		t.Errorf("the centre holds %d records after the halt, want 10", n)
	}
}

// TestShipSealedTrail: sealed records ship sealed (the chain covers the
// sealed bytes) with their query columns filled; verify --central checks
// the chain without the key and the columns with it; a query needs it.
func TestShipSealedTrail(t *testing.T) {
	key := make([]byte, 32)
	for i := range key {
		key[i] = byte(i)
	}
	keyFile := t.TempDir() + "/enc.key"
	writeFile(t, keyFile, key)
	l, _ := openTest(t, func(c *Config) { shipFast(c); c.EncryptionKeyFile = keyFile })
	c := newMemCentre()
	s, err := StartShipper(l, c)
	if err != nil {
		t.Fatal(err)
	}
	fill(t, l, 0, 30)
	waitShip(t, "shipping", func() bool { return s.Shipped() == 30 })
	_ = s.Close()
	_ = l.Close()
	s, err = StartShipper(reopen(t, l), c) // ships the final checkpoint
	if err != nil {
		t.Fatal(err)
	}
	waitShip(t, "the final checkpoint", func() bool {
		cps, _ := c.Checkpoints(context.Background(), s.ReplicaID())
		return len(cps) > 0 && cps[len(cps)-1].Size == 30
	})
	_ = s.Close()
	recs := c.sorted(s.ReplicaID())
	if recs[0].Frame[3]&flagSealed == 0 || recs[0].Index.User == "" || len(recs[0].Index.Patients) != 1 {
		t.Fatalf("record 1 shipped as flags %x, index %+v", recs[0].Frame[3], recs[0].Index)
	}
	keys := NewKeySet(l.PublicKey())
	for _, k := range [][]byte{nil, key} {
		reps, err := VerifyCentral(t.Context(), c, keys, CentralVerifyOptions{EncryptionKey: k})
		if err != nil || reps[0].Records != 30 || reps[0].Checkpointed != 30 {
			t.Fatalf("verify --central (key %v): %v %+v", k != nil, err, reps)
		}
	}
	if _, err := QueryCentral(t.Context(), c, Filter{}, QueryOptions{}); !errors.Is(err, ErrDecrypt) {
		t.Errorf("query of sealed records without the key: %v", err)
	}
	got, err := QueryCentral(t.Context(), c, Filter{Patient: "p1"}, QueryOptions{EncryptionKey: key, Limit: 3})
	if err != nil || len(got) != 3 {
		t.Fatalf("query with the key: %d entries, %v", len(got), err)
	}
}

// reopen closes nothing: it opens l's directory again after l.Close.
func reopen(t *testing.T, l *Log) *Log {
	t.Helper()
	l2, err := Open(l.cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l2.Close() })
	return l2
}

// TestShipperCloseFlushes: closing the log and then the shipper ships
// what the last moments wrote, the final checkpoint included, without
// waiting for the next start.
func TestShipperCloseFlushes(t *testing.T) {
	l, _ := openTest(t, func(c *Config) {
		c.Ship = ShipConfig{Batch: 8, Interval: time.Hour, MaxBackoff: time.Hour}
	})
	c := newMemCentre()
	c.block = make(chan struct{})
	s, err := StartShipper(l, c)
	if err != nil {
		t.Fatal(err)
	}
	fill(t, l, 0, 12)
	_ = l.Close() // final checkpoint at 12
	// The centre answers only once the shipping loop has stopped: what
	// it stores comes from Close's last round.
	go func() { <-s.done; close(c.block) }()
	_ = s.Close()
	if n := c.count(s.ReplicaID()); n != 12 {
		t.Fatalf("the centre holds %d records after Close, want 12", n)
	}
	cps, _ := c.Checkpoints(t.Context(), s.ReplicaID())
	if len(cps) == 0 || cps[len(cps)-1].Size != 12 {
		t.Fatalf("checkpoints at the centre: %+v, want the final one of size 12", cps)
	}
}

// TestShipperAsksAgainAfterAnOutage: the centre comes back from an outage
// holding less than it had acknowledged (restored from a backup); the
// shipper asks where it stands and ships the difference again.
func TestShipperAsksAgainAfterAnOutage(t *testing.T) {
	l, _ := openTest(t, shipFast)
	defer l.Close()
	c := newMemCentre()
	s, err := StartShipper(l, c)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fill(t, l, 0, 20)
	waitShip(t, "shipping", func() bool { return s.Shipped() == 20 })
	id := s.ReplicaID()
	c.mu.Lock()
	c.down = true
	for seq := uint64(11); seq <= 20; seq++ {
		delete(c.records[id], seq)
	}
	c.mu.Unlock()
	fill(t, l, 20, 5)
	waitShip(t, "a failed round", func() bool { return testutil.ToFloat64(s.m.errors.WithLabelValues(shipErrCentre)) > 0 })
	c.mu.Lock()
	c.down = false
	c.mu.Unlock()
	waitShip(t, "catching up", func() bool { return c.count(id) == 25 })
	if s.LagRecords() != 0 {
		waitShip(t, "no lag", func() bool { return s.LagRecords() == 0 })
	}
}
