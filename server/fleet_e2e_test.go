package server_test

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/phigate/phigate/audit"
	"github.com/phigate/phigate/demo/demokeys"
	"github.com/phigate/phigate/internal/pgtest"
	"github.com/phigate/phigate/internal/stacktest"
	"github.com/phigate/phigate/server"
	"github.com/phigate/phigate/store"
)

// fleet is two stacks (each a real Envoy in front of its own phigate)
// sharing one PostgreSQL store and one token issuer, as a fleet's
// replicas do.
type fleet struct {
	a, b   *stacktest.Stack
	writer *store.Postgres
	keys   *demokeys.Keys
	dsn    string
}

// central reads the fleet's audit records at the centre, across replicas.
func (f *fleet) central(t *testing.T, flt audit.Filter) []audit.Entry {
	t.Helper()
	c, err := store.OpenAuditCentre(t.Context(), f.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	es, err := audit.QueryCentral(t.Context(), c, flt, audit.QueryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return es
}

// waitCentral waits until the centre holds what want says, or fails.
func (f *fleet) waitCentral(t *testing.T, what string, within time.Duration, flt audit.Filter, want func([]audit.Entry) bool) []audit.Entry {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		es := f.central(t, flt)
		if want(es) {
			return es
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not at the centre within %v (%d records)", what, within, len(es))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func startFleet(t *testing.T, dsn string, mutate ...func(*server.Config)) *fleet {
	t.Helper()
	if _, err := store.Migrate(t.Context(), dsn); err != nil {
		t.Fatal(err)
	}
	dsnFile := filepath.Join(t.TempDir(), "dsn")
	if err := os.WriteFile(dsnFile, []byte(dsn), 0o600); err != nil {
		t.Fatal(err)
	}
	keys, err := demokeys.LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	replica := 0
	opts := stacktest.Options{Keys: keys, Mutate: func(c *server.Config) {
		c.Store.PostgresDSNFile = dsnFile
		replica++
		c.Audit.ReplicaID = fmt.Sprintf("edge-%d", replica)
		for _, m := range mutate {
			m(c)
		}
	}}
	f := &fleet{a: stacktest.Start(t, opts), b: stacktest.Start(t, opts), keys: keys, dsn: dsn}
	if f.writer, err = store.OpenPostgres(t.Context(), dsn); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.writer.Close() })
	return f
}

// deniedFor reads phigate_decisions_total for one deny reason from s's
// admin listener.
func deniedFor(t *testing.T, s *stacktest.Stack, reason string) string {
	t.Helper()
	_, body := stacktest.GetBody(t, "http://"+s.Phigate.AdminAddr()+"/metrics")
	for line := range strings.SplitSeq(body, "\n") {
		if strings.HasPrefix(line, "phigate_decisions_total{") && strings.Contains(line, `reason="`+reason+`"`) {
			return line[strings.LastIndexByte(line, ' ')+1:]
		}
	}
	return "0"
}

// TestFleetSharesBreakGlassAndConsent: break-glass declared through one
// replica covers the next read through the other; a consent opt-out
// stored in the shared store refuses the next read on both, although
// each had just allowed (and may have cached) the same request. The
// delay from the opt-out's commit to each replica's first refusal is
// measured and reported.
func TestFleetSharesBreakGlassAndConsent(t *testing.T) {
	f := startFleet(t, pgtest.Start(t))
	ctx := t.Context()
	mfa := f.a.Token(demokeys.TokenSpec{Subject: "prac-001", Roles: []string{"physician"}, FHIRUser: "Practitioner/prac-001", AMR: []string{"pwd", "otp"}})

	// pat-0005 is not on prac-001's care team.
	if r := f.b.Do("GET", "/fhir/Patient/pat-0005", mfa, nil, nil); r.Status != 403 {
		t.Fatalf("before break-glass, replica b: %d, want 403", r.Status)
	}
	if r := f.a.Do("GET", "/fhir/Patient/pat-0005", mfa, map[string]string{"x-break-glass": "trauma bay"}, nil); r.Status != 200 {
		t.Fatalf("break-glass on replica a: %d, want 200", r.Status)
	}
	if r := f.b.Do("GET", "/fhir/Patient/pat-0005", mfa, nil, nil); r.Status != 200 {
		t.Fatalf("after break-glass on a, replica b: %d, want 200 (the grant is the fleet's)", r.Status)
	}
	if r := f.b.Do("GET", "/fhir/Patient/pat-0003", mfa, nil, nil); r.Status != 403 {
		t.Fatalf("the grant opened another patient on b: %d", r.Status)
	}
	// Both replicas' records of the emergency are in the one view: the
	// override on edge-1, the covered read on edge-2.
	f.waitCentral(t, "the break-glass records", 10*time.Second, audit.Filter{Patient: "pat-0005", Kind: audit.KindDecision}, func(es []audit.Entry) bool {
		override, covered := false, false
		for _, e := range es {
			if e.Event.Outcome != audit.OutcomeSuccess {
				continue
			}
			override = override || (e.Replica == "edge-1" && e.Event.BreakGlass())
			covered = covered || e.Replica == "edge-2"
		}
		return override && covered
	})

	// Consent: prac-001 treats pat-0001 (static care team).
	doc := f.a.Token(stacktest.Physician(1))
	var delays []time.Duration
	for round := range 5 {
		id := "optout-" + string(rune('a'+round))
		for _, s := range []*stacktest.Stack{f.a, f.b} {
			for range 3 { // decided, and cacheable
				if r := s.Do("GET", "/fhir/Patient/pat-0001", doc, nil, nil); r.Status != 200 {
					t.Fatalf("round %d: before the opt-out: %d", round, r.Status)
				}
			}
		}
		start := time.Now()
		c := store.Consent{ID: id, Patient: "pat-0001", Effect: store.EffectDeny, Purpose: "TREAT", From: start.Add(-time.Minute)}
		if err := f.writer.PutConsent(ctx, c); err != nil {
			t.Fatal(err)
		}
		for _, s := range []*stacktest.Stack{f.a, f.b} {
			for deadline := start.Add(time.Second); ; time.Sleep(2 * time.Millisecond) {
				r := s.Do("GET", "/fhir/Patient/pat-0001", doc, nil, nil)
				if r.Status == 403 {
					delays = append(delays, time.Since(start))
					break
				}
				if r.Status != 200 || time.Now().After(deadline) {
					t.Fatalf("round %d: %d %v after the opt-out, want 403 within 1s", round, r.Status, time.Since(start))
				}
			}
		}
		// The opt-out withdrawn (its window closed), the read is allowed again.
		c.Until = time.Now().Add(time.Millisecond)
		if err := f.writer.PutConsent(ctx, c); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
		for _, s := range []*stacktest.Stack{f.a, f.b} {
			waitStatus(t, s, doc, "/fhir/Patient/pat-0001", 200, 2*time.Second)
		}
	}
	for _, s := range []*stacktest.Stack{f.a, f.b} {
		if n := deniedFor(t, s, "consent.opt_out"); n == "0" {
			t.Errorf("no decision denied as consent.opt_out on a replica")
		}
	}
	slices.Sort(delays)
	t.Logf("consent opt-out refused through Envoy on each replica: median %v, max %v over %d (bound 1s)",
		delays[len(delays)/2], delays[len(delays)-1], len(delays))
}

func waitStatus(t *testing.T, s *stacktest.Stack, tok, path string, want int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		r := s.Do("GET", path, tok, nil, nil)
		if r.Status == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still %d after %v, want %d", path, r.Status, within, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestFleetStoreAway: PostgreSQL stopped under load. Two clients keep
// reading through both replicas: one reads a patient it is related to
// only through the store (it needs shared state), one reads a
// Practitioner resource, which names no patient (it needs none). Once the store is away and the cache's one
// second has passed, no request that needs state is allowed (each is
// refused with 503), while the other kind keeps being served. /readyz
// and phigate_store_up say so. After PostgreSQL is restarted, both
// replicas serve the stateful reads again by themselves.
func TestFleetStoreAway(t *testing.T) {
	pg := pgtest.StartOwn(t)
	f := startFleet(t, pg.DSN)
	ctx := t.Context()
	k := store.RelationshipKey{Practitioner: "Practitioner/prac-001", Patient: "pat-0100", Role: "attending", Source: "adt"}
	if err := f.writer.PutRelationship(ctx, store.Relationship{RelationshipKey: k, From: time.Now().Add(-time.Hour)}); err != nil {
		t.Fatal(err)
	}
	doc := f.a.Token(stacktest.Physician(1))
	for _, s := range []*stacktest.Stack{f.a, f.b} {
		waitStatus(t, s, doc, "/fhir/Patient/pat-0100", 200, 2*time.Second)
	}

	type outcome struct {
		at      time.Time
		status  int
		needs   bool // the request needs shared state
		replica int
	}
	var (
		mu       sync.Mutex
		outcomes []outcome
		stop     atomic.Bool
		wg       sync.WaitGroup
	)
	client := &http.Client{Timeout: 5 * time.Second}
	for i, s := range []*stacktest.Stack{f.a, f.b} {
		for _, needs := range []bool{true, false} {
			path := "/fhir/Patient/pat-0100"
			if !needs {
				path = "/fhir/Practitioner/prac-001"
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				for !stop.Load() {
					req, _ := http.NewRequest("GET", s.Envoy.URL(path), nil)
					req.Header.Set("authorization", "Bearer "+doc)
					at := time.Now()
					resp, err := client.Do(req)
					st := 0
					if err == nil {
						st = resp.StatusCode
						resp.Body.Close()
					}
					mu.Lock()
					outcomes = append(outcomes, outcome{at, st, needs, i})
					mu.Unlock()
					time.Sleep(2 * time.Millisecond)
				}
			}()
		}
	}
	time.Sleep(500 * time.Millisecond)
	stopped := time.Now()
	pg.Stop()
	t.Logf("PostgreSQL stopped")
	time.Sleep(3 * time.Second)
	for _, s := range []*stacktest.Stack{f.a, f.b} {
		code, body := stacktest.GetBody(t, "http://"+s.Phigate.AdminAddr()+"/readyz")
		if code != 200 || !strings.Contains(body, `"reachable":false`) || !strings.Contains(body, `"backend":"postgres"`) {
			t.Errorf("/readyz while the store is away: %d %s", code, body)
		}
		if _, m := stacktest.GetBody(t, "http://"+s.Phigate.AdminAddr()+"/metrics"); !strings.Contains(m, "phigate_store_up 0") {
			t.Errorf("phigate_store_up is not 0 while the store is away")
		}
	}
	restarted := time.Now()
	pg.Restart()
	t.Logf("PostgreSQL restarted")
	var recovered [2]time.Time
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		mu.Lock()
		for _, o := range outcomes {
			if o.needs && o.status == 200 && o.at.After(restarted) && recovered[o.replica].IsZero() {
				recovered[o.replica] = o.at
			}
		}
		mu.Unlock()
		if !recovered[0].IsZero() && !recovered[1].IsZero() {
			break
		}
	}
	time.Sleep(200 * time.Millisecond)
	stop.Store(true)
	wg.Wait()

	// The cache may answer for one second (store.DefaultMaxAge) after its
	// last read; a request begun later than that, while the store is
	// away, must not be allowed.
	horizon := stopped.Add(store.DefaultMaxAge + 100*time.Millisecond)
	var awayNeeds, awayAllowed, awayRefused503, awayOther, awayOtherOK, inWindowAllowed int
	for _, o := range outcomes {
		if o.at.Before(stopped) || !o.at.Before(restarted) {
			continue
		}
		switch {
		case o.needs && o.at.After(horizon):
			awayNeeds++
			if o.status == 200 {
				awayAllowed++
			}
			if o.status == 503 {
				awayRefused503++
			}
		case o.needs && o.status == 200:
			inWindowAllowed++
		case !o.needs:
			awayOther++
			if o.status == 200 {
				awayOtherOK++
			}
		}
	}
	t.Logf("while away: %d stateful requests after the cache horizon, %d allowed, %d refused with 503; %d allowed within the cache's %v; %d stateless, %d served",
		awayNeeds, awayAllowed, awayRefused503, inWindowAllowed, store.DefaultMaxAge, awayOther, awayOtherOK)
	if awayNeeds == 0 || awayAllowed != 0 || awayRefused503 != awayNeeds {
		t.Errorf("stateful requests while the store was away: %d, %d allowed, %d refused with 503; want some, none allowed, all 503", awayNeeds, awayAllowed, awayRefused503)
	}
	if awayOther == 0 || awayOtherOK != awayOther {
		t.Errorf("requests needing no shared state while the store was away: %d served of %d, want all", awayOtherOK, awayOther)
	}
	for i, at := range recovered {
		if at.IsZero() {
			t.Fatalf("replica %d did not serve a stateful read within 20s of the restart", i)
		}
		t.Logf("replica %d served a stateful read %v after PostgreSQL was restarted", i, at.Sub(restarted).Round(time.Millisecond))
	}
	// The shipping caught up: every record each replica wrote, during the
	// outage too, is at the centre once, none lost.
	for i, s := range []*stacktest.Stack{f.a, f.b} {
		id := fmt.Sprintf("edge-%d", i+1)
		local, err := audit.Query(s.Phigate.AuditDir(), audit.Filter{}, audit.QueryOptions{})
		if err != nil {
			t.Fatal(err)
		}
		es := f.waitCentral(t, id+"'s trail", 20*time.Second, audit.Filter{}, func(es []audit.Entry) bool {
			n := 0
			for _, e := range es {
				if e.Replica == id {
					n++
				}
			}
			return n >= len(local)
		})
		seen := map[uint64]bool{}
		for _, e := range es {
			if e.Replica == id {
				if seen[e.Seq] {
					t.Fatalf("%s: record %d twice at the centre", id, e.Seq)
				}
				seen[e.Seq] = true
			}
		}
		for _, e := range local {
			if !seen[e.Seq] {
				t.Fatalf("%s: record %d never reached the centre", id, e.Seq)
			}
		}
		t.Logf("%s: %d records in its trail, %d at the centre, none missing, none twice", id, len(local), len(seen))
	}
}
