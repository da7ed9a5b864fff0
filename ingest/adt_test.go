package ingest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/phigate/phigate/audit"
	"github.com/phigate/phigate/store"
)

// recorder keeps the audit records; fail makes the next one fail.
type recorder struct {
	mu   sync.Mutex
	evs  []audit.IngestEvent
	fail bool
}

func (r *recorder) RecordIngest(_ context.Context, ev audit.IngestEvent) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail {
		return errors.New("trail closed")
	}
	r.evs = append(r.evs, ev)
	return nil
}

func (r *recorder) last() audit.IngestEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.evs[len(r.evs)-1]
}

// failing is a store whose writes fail until healed.
type failing struct {
	store.Ingester
	broken bool
}

func (f *failing) Ingest(ctx context.Context, m store.IngestMessage, p func(store.IngestState, bool) (store.IngestPlan, error)) (store.IngestOutcome, error) {
	if f.broken {
		return "", errors.New("connection refused")
	}
	return f.Ingester.Ingest(ctx, m, p)
}

var day = time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC)

type fixture struct {
	t   *testing.T
	st  *store.Memory
	fs  *failing
	rec *recorder
	adt *ADT
}

func newFixture(t *testing.T, mod func(*MLLPConfig)) *fixture {
	t.Helper()
	cfg := Config{}
	if mod != nil {
		mod(&cfg.MLLP)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	st := store.NewMemory(0)
	t.Cleanup(func() { _ = st.Close() })
	f := &fixture{t: t, st: st, fs: &failing{Ingester: st}, rec: &recorder{}}
	f.adt = NewADT(f.fs, f.rec, cfg.MLLP, zap.NewNop(), NewMetrics(nil))
	f.adt.now = func() time.Time { return day.Add(48 * time.Hour) }
	return f
}

// adtMsg is an ADT message: event, control id, event time (hours after
// day), and PV1 fields by number.
func adtMsg(event, control string, hour int, pv1 map[int]string) string {
	ts := day.Add(time.Duration(hour) * time.Hour).Format("20060102150405-0700")
	f := make([]string, 46)
	f[0], f[1], f[2] = "PV1", "1", "I"
	for n, v := range pv1 {
		f[n] = v
	}
	return "MSH|^~\\&|ADT|HOSP|PHIGATE|HOSP|" + ts + "||ADT^" + event + "^ADT_A01|" + control + "|P|2.5\r" +
		"EVN|" + event + "|" + ts + "\r" +
		"PID|1||pat-0100^^^HOSP^MR||Doe^Jane\r" +
		strings.TrimRight(strings.Join(f, "|"), "|") + "\r"
}

// send handles a message and returns the ACK's MSA-1 and the ACK.
func (f *fixture) send(msg string) (string, *Message) {
	f.t.Helper()
	ack, err := Parse(f.adt.Handle(f.t.Context(), []byte(msg), "10.0.0.9:4000"))
	if err != nil {
		f.t.Fatalf("ACK does not parse: %v", err)
	}
	msa, ok := ack.Segment("MSA")
	if !ok {
		f.t.Fatal("ACK without MSA")
	}
	return msa.Field(1), ack
}

func (f *fixture) mustAA(msg string) {
	f.t.Helper()
	if code, ack := f.send(msg); code != "AA" {
		e, _ := ack.Segment("ERR")
		f.t.Fatalf("ACK %s, want AA (ERR %q)", code, e.Fields)
	}
}

// related lists the patient's doctors ("prac-001 attending") at hour h.
func (f *fixture) related(h float64) []string {
	f.t.Helper()
	var out []string
	at := day.Add(time.Duration(h * float64(time.Hour)))
	for i := 1; i <= 9; i++ {
		p := fmt.Sprintf("Practitioner/prac-%03d", i)
		rs, err := f.st.Relationships(f.t.Context(), p, at)
		if err != nil {
			f.t.Fatal(err)
		}
		for _, r := range rs {
			if r.Patient != "pat-0100" || r.Source != SourceADT {
				f.t.Fatalf("relationship %+v", r)
			}
			out = append(out, strings.TrimPrefix(p, "Practitioner/")+" "+r.Role)
		}
	}
	slices.Sort(out)
	return out
}

func want(t *testing.T, what string, got []string, w ...string) {
	t.Helper()
	slices.Sort(w)
	if !slices.Equal(got, w) {
		t.Fatalf("%s: %q, want %q", what, got, w)
	}
}

// TestADTEvents walks one visit through every event and checks who is
// related to the patient after each.
func TestADTEvents(t *testing.T) {
	f := newFixture(t, nil)
	f.mustAA(adtMsg("A01", "M1", 1, map[int]string{7: "prac-001^House", 8: "prac-003", 17: "prac-004"}))
	want(t, "before the admission", f.related(0.5))
	want(t, "admitted", f.related(1.5), "prac-001 attending", "prac-003 referring", "prac-004 admitting")

	// An update naming another attending: the first one ends, the
	// referring and admitting doctors (fields not sent) stay.
	f.mustAA(adtMsg("A08", "M2", 2, map[int]string{7: "prac-002"}))
	want(t, "after A08", f.related(2.5), "prac-002 attending", "prac-003 referring", "prac-004 admitting")
	want(t, "the first attending, before the update", f.related(1.5), "prac-001 attending", "prac-003 referring", "prac-004 admitting")
	// The HL7 null ends a role.
	f.mustAA(adtMsg("A08", "M3", 3, map[int]string{8: `""`, 9: "prac-005~prac-006"}))
	want(t, "after the null", f.related(3.5), "prac-002 attending", "prac-004 admitting", "prac-005 consulting", "prac-006 consulting")

	// A transfer to another attending, then its cancellation: the
	// transfer's doctor was never related, the previous one is again.
	f.mustAA(adtMsg("A02", "M4", 4, map[int]string{7: "prac-007"}))
	want(t, "transferred", f.related(4.5), "prac-007 attending", "prac-004 admitting", "prac-005 consulting", "prac-006 consulting")
	f.mustAA(adtMsg("A12", "M5", 5, nil))
	want(t, "transfer cancelled", f.related(5.5), "prac-002 attending", "prac-004 admitting", "prac-005 consulting", "prac-006 consulting")
	want(t, "transfer cancelled, seen at the transfer's time", f.related(4.5), "prac-002 attending", "prac-004 admitting", "prac-005 consulting", "prac-006 consulting")

	// Discharge at hour 6 with PV1-45 saying 6: the grace (4h) runs to 10.
	f.mustAA(adtMsg("A03", "M6", 6, map[int]string{45: day.Add(6 * time.Hour).Format("200601021504")}))
	all := []string{"prac-002 attending", "prac-004 admitting", "prac-005 consulting", "prac-006 consulting"}
	want(t, "within the grace", f.related(9.9), all...)
	want(t, "after the grace", f.related(10.1))
	// Cancelling the discharge reopens the visit.
	f.mustAA(adtMsg("A13", "M7", 7, nil))
	want(t, "discharge cancelled", f.related(30), all...)
	// Cancelling the admission: no one was ever related.
	f.mustAA(adtMsg("A11", "M8", 8, nil))
	want(t, "admission cancelled", f.related(30))
	// The doctors current at the cancellation never were; those an update
	// had already replaced keep the past window they had.
	want(t, "admission cancelled, seen at the admission's time", f.related(1.5), "prac-001 attending", "prac-003 referring")

	// A registration (outpatient) relates as an admission does.
	f.mustAA(adtMsg("A04", "M9", 9, map[int]string{7: "prac-008"}))
	want(t, "registered", f.related(9.5), "prac-008 attending")
	if got := len(f.rec.evs); got != 9 {
		t.Fatalf("%d audit records, want one a message", got)
	}
	last := f.rec.last()
	if last.Outcome != audit.IngestApplied || last.Patient != "pat-0100" || last.Event != "ADT^A04" || last.MessageID != "M9" ||
		!slices.Equal(last.Put, []string{"Practitioner/prac-008 attending"}) || last.Sender != "ADT^HOSP" || last.Peer != "10.0.0.9:4000" {
		t.Fatalf("audit record %+v", last)
	}
}

// TestADTIdempotentAndOrdered: a message sent again changes nothing more
// (a redelivered admission does not bring back the doctor an update
// replaced), and an event older than the newest applied is acknowledged
// but does not undo it.
func TestADTIdempotentAndOrdered(t *testing.T) {
	f := newFixture(t, nil)
	admit := adtMsg("A01", "M1", 1, map[int]string{7: "prac-001"})
	f.mustAA(admit)
	f.mustAA(adtMsg("A08", "M2", 2, map[int]string{7: "prac-002"}))
	f.mustAA(admit)
	if o := f.rec.last().Outcome; o != audit.IngestDuplicate {
		t.Fatalf("redelivery recorded as %s", o)
	}
	want(t, "after the redelivery", f.related(3), "prac-002 attending")

	f.mustAA(adtMsg("A03", "M3", 5, nil))
	// An update from before the discharge, delivered after it.
	f.mustAA(adtMsg("A08", "M4", 4, map[int]string{7: "prac-009"}))
	if o := f.rec.last().Outcome; o != audit.IngestStale {
		t.Fatalf("late update recorded as %s", o)
	}
	want(t, "the late update changed nothing", f.related(4.5), "prac-002 attending")
	want(t, "discharge stands", f.related(9.5))
}

// TestADTRefusals: a malformed or unsupported message gets AR with an ERR
// that says why and where, MSA-2 echoing MSH-10, and changes nothing.
func TestADTRefusals(t *testing.T) {
	good := adtMsg("A01", "M1", 1, map[int]string{7: "prac-001"})
	for _, c := range []struct {
		name, msg, code, where string
	}{
		{"no PV1", strings.Split(good, "PV1")[0], codeSegmentSequence, "PV1^1"},
		{"no PID", strings.Replace(good, "PID|1||pat-0100^^^HOSP^MR||Doe^Jane\r", "", 1), codeSegmentSequence, "PID^1"},
		{"no EVN", strings.Replace(good, "EVN|A01|", "ZZZ|A01|", 1), codeSegmentSequence, "EVN^1"},
		{"unsupported event", strings.Replace(good, "ADT^A01", "ADT^A05", 1), codeUnsupportedEvt, "MSH^1^9"},
		{"not ADT", strings.Replace(good, "ADT^A01", "ORU^R01", 1), codeUnsupportedType, "MSH^1^9"},
		{"training", strings.Replace(good, "|M1|P|", "|M1|T|", 1), codeUnsupportedProc, "MSH^1^11"},
		{"bad event time", strings.Replace(good, "EVN|A01|2026", "EVN|A01|x026", 1), codeDataType, "EVN^1^2"},
		{"no patient id", strings.Replace(good, "pat-0100^^^HOSP^MR", "", 1), codeRequiredMissing, "PID^1^3"},
		{"patient id with a space", strings.Replace(good, "pat-0100^", "pat 0100^", 1), codeDataType, "PID^1^3"},
		{"bad escape", strings.Replace(good, "prac-001", `prac\Q\001`, 1), codeDataType, "PV1^1^7"},
		{"doctor id not an id", strings.Replace(good, "prac-001", `prac/001`, 1), codeDataType, "PV1^1^7"},
		{"no control id", strings.Replace(good, "|M1|P|", "||P|", 1), codeRequiredMissing, "MSH^1^10"},
		{"garbage", "hello", codeSegmentSequence, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t, nil)
			code, ack := f.send(c.msg)
			if code != "AR" {
				t.Fatalf("ACK %s, want AR", code)
			}
			msa, _ := ack.Segment("MSA")
			if c.name != "garbage" && c.name != "no control id" && msa.Field(2) != "M1" {
				t.Errorf("MSA-2 %q, want M1", msa.Field(2))
			}
			e, ok := ack.Segment("ERR")
			if !ok || ack.Component(e.Field(3), 1) != c.code || e.Field(2) != c.where || e.Field(8) == "" {
				t.Errorf("ERR %q, want code %s at %q with a reason", e.Fields, c.code, c.where)
			}
			if strings.Contains(string(f.adt.ack(&result{enc: DefaultEncoding})), "Doe") || strings.Contains(e.Field(8), "0100") {
				t.Errorf("the ERR repeats the message's data: %q", e.Field(8))
			}
			want(t, "after a refusal", f.related(2))
			if ev := f.rec.last(); ev.Outcome != audit.IngestRejected || ev.Reason == "" {
				t.Errorf("audit record %+v", ev)
			}
			// Refused, not recorded as applied: the corrected message applies.
			f.mustAA(good)
		})
	}
}

// TestADTStoreAndAuditFailures: a store failure is AE with nothing
// applied, and the retry applies; a trail that cannot record is AE too.
func TestADTStoreAndAuditFailures(t *testing.T) {
	f := newFixture(t, nil)
	msg := adtMsg("A01", "M1", 1, map[int]string{7: "prac-001"})
	f.fs.broken = true
	code, ack := f.send(msg)
	if e, _ := ack.Segment("ERR"); code != "AE" || ack.Component(e.Field(3), 1) != codeInternal {
		t.Fatalf("store down: ACK %s ERR %q, want AE 207", code, e.Fields)
	}
	want(t, "store down", f.related(2))
	f.fs.broken = false
	f.mustAA(msg)
	want(t, "retried", f.related(2), "prac-001 attending")

	f.rec.fail = true
	if code, _ := f.send(adtMsg("A08", "M2", 2, map[int]string{7: "prac-002"})); code != "AE" {
		t.Fatalf("trail down: ACK %s, want AE", code)
	}
}

// TestADTPatientIdentifier: the configured assigning authority and type
// choose the PID-3 repetition; none that matches is AR.
func TestADTPatientIdentifier(t *testing.T) {
	msg := strings.Replace(adtMsg("A01", "M1", 1, map[int]string{7: "prac-001"}),
		"pat-0100^^^HOSP^MR", "123-45^^^SSA^SS~pat-0100^^^HOSP&1.2.3&ISO^MR", 1)
	f := newFixture(t, func(c *MLLPConfig) { c.PatientIdentifier = PatientIdentifier{AssigningAuthority: "HOSP", Type: "MR"} })
	f.mustAA(msg)
	want(t, "by authority", f.related(2), "prac-001 attending")
	f = newFixture(t, func(c *MLLPConfig) { c.PatientIdentifier = PatientIdentifier{AssigningAuthority: "OTHER"} })
	if code, _ := f.send(msg); code != "AR" {
		t.Fatalf("no matching identifier: %s, want AR", code)
	}
	// Without a choice, the first repetition: here the SSA one.
	f = newFixture(t, nil)
	f.mustAA(msg)
	if p := f.rec.last().Patient; p != "123-45" {
		t.Fatalf("first repetition: patient %q", p)
	}
	// PV1-17 is not read when admitting is off.
	off := false
	f = newFixture(t, func(c *MLLPConfig) { c.Admitting = &off })
	f.mustAA(adtMsg("A01", "M1", 1, map[int]string{7: "prac-001", 17: "prac-004"}))
	want(t, "admitting off", f.related(2), "prac-001 attending")
}

// TestACKShape: the acknowledgement is addressed back to the sender, is
// an ACK of the message's event with a control id of its own, echoes
// MSH-10 and the version, and uses the message's delimiters.
func TestACKShape(t *testing.T) {
	f := newFixture(t, nil)
	msg := strings.NewReplacer("|", "#", "^", "$", "~", "*", "\\", "!", "&", "%").Replace(adtMsg("A03", "CTRL-9", 1, nil))
	msg = strings.Replace(msg, "#2.5\r", "#2.5.1\r", 1)
	code, ack := f.send(msg)
	if code != "AA" {
		t.Fatalf("ACK %s", code)
	}
	msh := ack.Segments[0]
	for n, want := range map[int]string{1: "#", 2: "$*!%", 3: "PHIGATE", 4: "HOSP", 5: "ADT", 6: "HOSP", 9: "ACK$A03$ACK", 11: "P", 12: "2.5.1"} {
		if got := msh.Field(n); got != want {
			t.Errorf("ACK MSH-%d = %q, want %q", n, got, want)
		}
	}
	if id := msh.Field(10); id == "" || id == "CTRL-9" {
		t.Errorf("ACK MSH-10 %q: want a control id of its own", id)
	}
	if _, err := ParseTS(msh.Field(7), time.UTC); err != nil {
		t.Errorf("ACK MSH-7 %q: %v", msh.Field(7), err)
	}
	msa, _ := ack.Segment("MSA")
	if msa.Field(2) != "CTRL-9" {
		t.Errorf("MSA-2 %q", msa.Field(2))
	}
	if _, ok := ack.Segment("ERR"); ok {
		t.Error("an AA carries an ERR")
	}
}
