package audit

import (
	"slices"
	"testing"
)

// TestRecordIngest: a feed message's record is durable, verifies in the
// chain, is found by kind and by patient, and carries what was done to
// whom; a refused message is a minor failure and a store failure a
// serious one.
func TestRecordIngest(t *testing.T) {
	l, cfg := openTest(t, nil)
	evs := []IngestEvent{
		{Source: "adt", Event: "ADT^A01", MessageID: "MSG-1", Sender: "ADT^HOSP", Peer: "10.1.2.3:5123", Patient: "pat-1",
			Outcome: IngestApplied, Put: []string{"Practitioner/x attending"}},
		{Source: "adt", Event: "ADT^A01", MessageID: "MSG-2", Sender: "ADT^HOSP", Outcome: IngestRejected, Reason: "PID-3: no patient identifier"},
		{Source: "careteam", Event: "CareTeam", MessageID: "CareTeam/1/_history/1", Sender: "client", Patient: "pat-1", Outcome: IngestError, Reason: "store unavailable"},
	}
	for _, ie := range evs {
		if err := l.RecordIngest(t.Context(), ie); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(cfg.Dir, l.PublicKey(), VerifyOptions{}); err != nil {
		t.Fatalf("verify: %v", err)
	}
	got, err := Query(cfg.Dir, Filter{Kind: KindIngest}, QueryOptions{})
	if err != nil || len(got) != 3 {
		t.Fatalf("query by kind: %d records, %v; want 3", len(got), err)
	}
	if o := []string{got[0].Event.Outcome, got[1].Event.Outcome, got[2].Event.Outcome}; !slices.Equal(o, []string{OutcomeSuccess, OutcomeMinor, OutcomeSerious}) {
		t.Errorf("outcomes %v", o)
	}
	ev := got[0].Event
	if p := ev.Patients(); !slices.Equal(p, []string{"pat-1"}) {
		t.Errorf("patients %v", p)
	}
	if s, _ := ev.User(); s != "ADT^HOSP" {
		t.Errorf("requesting agent %q, want the sender", s)
	}
	var put []string
	for _, e := range ev.Entity {
		for _, d := range e.Detail {
			if d.Type == DetailPut {
				put = append(put, d.ValueString)
			}
		}
	}
	if !slices.Equal(put, []string{"Practitioner/x attending"}) {
		t.Errorf("put details %v", put)
	}
	byPatient, _ := Query(cfg.Dir, Filter{Patient: "pat-1", Kind: KindIngest}, QueryOptions{})
	if len(byPatient) != 2 {
		t.Errorf("query by patient: %d, want 2", len(byPatient))
	}
}
