package store

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// TestIngestContract holds both backends to one behaviour for the feeds:
// a message applies once, an older one is stale and changes nothing, a
// plan that fails or is refused writes nothing (not even the message id,
// so a retry applies), and concurrent deliveries of one message apply it
// once.
func TestIngestContract(t *testing.T) {
	for name, open := range backends(t) {
		t.Run(name, func(t *testing.T) {
			t.Run("once", func(t *testing.T) { testIngestOnce(t, open(t)) })
			t.Run("refused plan writes nothing", func(t *testing.T) { testIngestRefused(t, open(t)) })
			t.Run("concurrent duplicates", func(t *testing.T) { testIngestConcurrent(t, open(t)) })
		})
	}
}

func admitPlan(prac string, from time.Time) func(IngestState, bool) (IngestPlan, error) {
	return func(st IngestState, found bool) (IngestPlan, error) {
		k := RelationshipKey{Practitioner: prac, Patient: "pat-1", Role: "attending", Source: "adt"}
		var p IngestPlan
		for _, m := range st.Members {
			if m.Practitioner != prac {
				p.End = append(p.End, IngestEnd{Key: RelationshipKey{Practitioner: m.Practitioner, Patient: "pat-1", Role: m.Role, Source: "adt"}, At: from})
			}
		}
		p.Put = []Relationship{{RelationshipKey: k, From: from}}
		p.State = IngestState{Patient: "pat-1", Status: "admitted", Members: []IngestMember{{Practitioner: prac, Role: "attending", From: from}}}
		return p, nil
	}
}

func ingester(t *testing.T, s Store) Ingester {
	t.Helper()
	in, ok := s.(Ingester)
	if !ok {
		t.Fatalf("%T does not implement Ingester", s)
	}
	return in
}

func pracsOf(t *testing.T, s Store, prac string, at time.Time) int {
	t.Helper()
	rs, err := s.Relationships(t.Context(), prac, at)
	must(t, err)
	return len(rs)
}

func testIngestOnce(t *testing.T, s Store) {
	ctx := t.Context()
	in := ingester(t, s)
	msg := IngestMessage{Source: "adt", Sender: "ADT^HOSP", ID: "m1", Subject: "pat-1", At: t0}
	for i, want := range []IngestOutcome{IngestApplied, IngestDuplicate} {
		out, err := in.Ingest(ctx, msg, admitPlan("Practitioner/x", t0))
		must(t, err)
		if out != want {
			t.Fatalf("delivery %d: %s, want %s", i+1, out, want)
		}
	}
	if n := pracsOf(t, s, "Practitioner/x", t0.Add(time.Minute)); n != 1 {
		t.Fatalf("x has %d relationships, want 1", n)
	}
	// The same id from another sender is another message.
	other := msg
	other.Sender, other.At = "ADT^OTHER", t0.Add(time.Hour)
	if out, err := in.Ingest(ctx, other, admitPlan("Practitioner/y", t0.Add(time.Hour))); err != nil || out != IngestApplied {
		t.Fatalf("same id, other sender: %s, %v", out, err)
	}
	if n := pracsOf(t, s, "Practitioner/x", t0.Add(2*time.Hour)); n != 0 {
		t.Fatalf("x still related after y replaced it")
	}
	// An older event (a late update about the first doctor) is stale: it
	// must not undo the newer one.
	late := IngestMessage{Source: "adt", Sender: "ADT^HOSP", ID: "m0", Subject: "pat-1", At: t0.Add(30 * time.Minute)}
	called := false
	out, err := in.Ingest(ctx, late, func(IngestState, bool) (IngestPlan, error) { called = true; return IngestPlan{}, nil })
	must(t, err)
	if out != IngestStale || called {
		t.Fatalf("older event: %s (plan called %v), want stale without a plan", out, called)
	}
	if out, _ := in.Ingest(ctx, late, admitPlan("Practitioner/x", t0)); out != IngestDuplicate {
		t.Fatalf("stale message again: %s, want duplicate", out)
	}
	if n := pracsOf(t, s, "Practitioner/y", t0.Add(2*time.Hour)); n != 1 {
		t.Fatalf("y lost its relationship to a stale message")
	}
	// Pruning forgets the ids: nothing received before an hour ago here.
	if n, err := in.PruneIngested(ctx, time.Now().Add(-time.Hour)); err != nil || n != 0 {
		t.Fatalf("prune of nothing: %d, %v", n, err)
	}
	if n, err := in.PruneIngested(ctx, time.Now().Add(time.Minute)); err != nil || n != 3 {
		t.Fatalf("prune: %d, %v; want the 3 ids", n, err)
	}
	// The first message again is applied again, but it is older than the
	// subject's newest: stale, and it does not bring x back.
	if out, _ := in.Ingest(ctx, msg, admitPlan("Practitioner/x", t0)); out != IngestStale {
		t.Fatalf("a pruned, older message: %s, want stale", out)
	}
	if n := pracsOf(t, s, "Practitioner/x", t0.Add(2*time.Hour)); n != 0 {
		t.Fatalf("a pruned message re-applied an old state")
	}
}

func testIngestRefused(t *testing.T, s Store) {
	ctx := t.Context()
	in := ingester(t, s)
	msg := IngestMessage{Source: "adt", ID: "m1", Subject: "pat-1", At: t0}
	boom := errors.New("boom")
	if _, err := in.Ingest(ctx, msg, func(IngestState, bool) (IngestPlan, error) { return IngestPlan{}, boom }); !errors.Is(err, boom) {
		t.Fatalf("failing plan: %v", err)
	}
	// A plan whose second write is invalid: the first must not land.
	bad := func(IngestState, bool) (IngestPlan, error) {
		ok := Relationship{RelationshipKey: RelationshipKey{Practitioner: "Practitioner/x", Patient: "pat-1", Role: "attending", Source: "adt"}, From: t0}
		worse := ok
		worse.Role = ""
		return IngestPlan{Put: []Relationship{ok, worse}}, nil
	}
	if _, err := in.Ingest(ctx, msg, bad); !errors.Is(err, ErrInvalid) {
		t.Fatalf("invalid write: %v, want ErrInvalid", err)
	}
	if n := pracsOf(t, s, "Practitioner/x", t0.Add(time.Minute)); n != 0 {
		t.Fatalf("a refused message left %d relationships", n)
	}
	if _, err := in.Ingest(ctx, IngestMessage{Source: "adt", ID: "", Subject: "pat-1", At: t0}, admitPlan("Practitioner/x", t0)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("no message id: %v", err)
	}
	// The message id was not recorded: the retry applies.
	if out, err := in.Ingest(ctx, msg, admitPlan("Practitioner/x", t0)); err != nil || out != IngestApplied {
		t.Fatalf("retry: %s, %v", out, err)
	}
}

func testIngestConcurrent(t *testing.T, s Store) {
	in := ingester(t, s)
	msg := IngestMessage{Source: "adt", ID: "m1", Subject: "pat-1", At: t0}
	var wg sync.WaitGroup
	var mu sync.Mutex
	applied := 0
	for range 8 {
		wg.Go(func() {
			out, err := in.Ingest(context.Background(), msg, admitPlan("Practitioner/x", t0))
			if err != nil {
				t.Error(err)
			}
			mu.Lock()
			if out == IngestApplied {
				applied++
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	if applied != 1 {
		t.Fatalf("applied %d times, want once", applied)
	}
}

// TestIngestAcrossReplicas: two replicas' handles on one PostgreSQL
// apply interleaved messages about one patient. Whatever order they land
// in, each applied one is newer than every one applied before it, so the
// newest message's doctor is the only one related at the end.
func TestIngestAcrossReplicas(t *testing.T) {
	dsn := pgDB(t)
	handles := []*Postgres{openPG(t, dsn), openPG(t, dsn)}
	plan := func(prac string, at time.Time) func(IngestState, bool) (IngestPlan, error) {
		return func(st IngestState, _ bool) (IngestPlan, error) {
			var p IngestPlan
			for _, m := range st.Members {
				p.End = append(p.End, IngestEnd{Key: RelationshipKey{Practitioner: m.Practitioner, Patient: "pat-1", Role: m.Role, Source: "adt"}, At: at})
			}
			p.Put = []Relationship{{RelationshipKey: RelationshipKey{Practitioner: prac, Patient: "pat-1", Role: "attending", Source: "adt"}, From: at}}
			p.State = IngestState{Patient: "pat-1", Members: []IngestMember{{Practitioner: prac, Role: "attending", From: at}}}
			return p, nil
		}
	}
	const n = 20
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			at := t0.Add(time.Duration(i) * time.Minute)
			prac := "Practitioner/p" + string(rune('a'+i))
			msg := IngestMessage{Source: "adt", ID: prac, Subject: "pat-1", At: at}
			if _, err := handles[i%2].Ingest(context.Background(), msg, plan(prac, at)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	var related []string
	for i := range n {
		prac := "Practitioner/p" + string(rune('a'+i))
		if rs, err := handles[0].Relationships(t.Context(), prac, t0.Add(time.Hour)); err != nil {
			t.Fatal(err)
		} else if len(rs) > 0 {
			related = append(related, prac)
		}
	}
	if len(related) != 1 || related[0] != "Practitioner/p"+string(rune('a'+n-1)) {
		t.Fatalf("related at the end: %v, want only the newest message's doctor", related)
	}
}
