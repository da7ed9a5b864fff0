package audit

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/rego"

	"github.com/phigate/phigate/authz"
)

// queryLog writes a small, varied log: u1 reads p1 and p2, u2 is denied p1,
// u3 breaks the glass on p3, and one response is filtered.
func queryLog(t *testing.T, mod func(*Config)) Config {
	t.Helper()
	base := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	var now time.Time
	clock := func() time.Time { return now }
	l, cfg := openTest(t, mod, WithClock(clock))
	rec := func(i int, user, patient string, d *authz.Decision) {
		now = base.Add(time.Duration(i) * time.Hour)
		if err := l.Record(t.Context(), testRequest(i, user, patient), d); err != nil {
			t.Fatal(err)
		}
	}
	rec(1, "u1", "p1", testDecision(1, true))
	rec(2, "u1", "p2", testDecision(2, true))
	rec(3, "u2", "p1", testDecision(3, false))
	bg := testDecision(4, true)
	bg.BreakGlass = authz.BreakGlass{Active: true, Reason: "emergency"}
	rec(4, "u3", "p3", bg)
	now = base.Add(5 * time.Hour)
	if err := l.RecordFiltering(t.Context(), FilterEvent{RequestID: "req-1", DecisionID: "dec-1",
		Removed: []string{"Patient.telecom"}, Withheld: 1}); err != nil {
		t.Fatal(err)
	}
	// Written from plan metadata version 2: the user and patient travel
	// with the plan.
	if err := l.RecordFiltering(t.Context(), FilterEvent{RequestID: "req-2", DecisionID: "dec-2",
		Removed: []string{"Patient.telecom"}, Subject: "u1", FHIRUser: "Practitioner/u1", Patients: []string{"p2"}}); err != nil {
		t.Fatal(err)
	}
	// Version 1, and its decision is in another replica's trail.
	if err := l.RecordFiltering(t.Context(), FilterEvent{RequestID: "req-9", DecisionID: "dec-9",
		Removed: []string{"Patient.telecom"}}); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func seqs(es []Entry) []uint64 {
	var out []uint64
	for _, e := range es {
		out = append(out, e.Seq)
	}
	return out
}

func TestQueryFilters(t *testing.T) {
	cfg := queryLog(t, nil)
	yes, no := true, false
	base := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		name string
		f    Filter
		want []uint64
	}{
		{"everything", Filter{}, []uint64{1, 2, 3, 4, 5, 6, 7}},
		{"who looked at p1 (a version 1 filtering record joined)", Filter{Patient: "p1"}, []uint64{1, 3, 5}},
		{"who looked at p2 (a version 2 filtering record)", Filter{Patient: "p2"}, []uint64{2, 6}},
		{"by user subject", Filter{User: "u1"}, []uint64{1, 2, 5, 6}},
		{"by fhirUser", Filter{User: "Practitioner/u2"}, []uint64{3}},
		{"denials", Filter{Outcome: OutcomeMinor}, []uint64{3}},
		{"break-glass only", Filter{BreakGlass: &yes}, []uint64{4}},
		{"no break-glass, p3", Filter{BreakGlass: &no, Patient: "p3"}, nil},
		{"time window", Filter{Since: base.Add(2 * time.Hour), Until: base.Add(4 * time.Hour)}, []uint64{2, 3}},
		{"decision and its filtering", Filter{DecisionID: "dec-1"}, []uint64{1, 5}},
		{"filtering records", Filter{Kind: KindFiltering}, []uint64{5, 6, 7}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Query(cfg.Dir, tc.f, QueryOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if g := seqs(got); !equalU(g, tc.want) {
				t.Fatalf("seqs = %v, want %v", g, tc.want)
			}
		})
	}
}

// TestQueryJoinsVersion1Filtering: a filtering record without its user and
// patients is shown with its decision's, and says so; one whose decision
// is not in the trail, and one that carries its own, are shown as stored.
func TestQueryJoinsVersion1Filtering(t *testing.T) {
	cfg := queryLog(t, nil)
	got, err := Query(cfg.Dir, Filter{Kind: KindFiltering}, QueryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Fatalf("%d filtering records, want 3", len(got))
	}
	joinedFrom := func(ev *AuditEvent) string {
		for _, en := range ev.Entity {
			for _, d := range en.Detail {
				if d.Type == DetailJoined {
					return d.ValueString
				}
			}
		}
		return ""
	}
	for i, want := range []struct{ user, patients, joined string }{
		{"u1", "p1", "dec-1"},
		{"u1", "p2", ""},
		{"", "", ""},
	} {
		ev := got[i].Event
		sub, _ := ev.User()
		if sub != want.user || strings.Join(ev.Patients(), ",") != want.patients || joinedFrom(ev) != want.joined {
			t.Errorf("record %d: user %q patients %v joined %q; want %+v", got[i].Seq, sub, ev.Patients(), joinedFrom(ev), want)
		}
	}
}

func equalU(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestWriters(t *testing.T) {
	cfg := queryLog(t, nil)
	es, err := Query(cfg.Dir, Filter{Patient: "p1"}, QueryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var tb bytes.Buffer
	if err := WriteTable(&tb, es); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(tb.String()), "\n")
	if len(lines) != 4 || !strings.Contains(lines[1], "u1 (Practitioner/u1)") || !strings.Contains(lines[2], "4 role_not_permitted") ||
		!strings.Contains(lines[3], "filtering  u1 (Practitioner/u1)") {
		t.Fatalf("table:\n%s", tb.String())
	}
	var jb bytes.Buffer
	if err := WriteJSON(&jb, es); err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(&jb)
	n := 0
	for dec.More() {
		var ev AuditEvent
		if err := dec.Decode(&ev); err != nil || ev.ResourceType != "AuditEvent" {
			t.Fatalf("line %d: %v %+v", n, err, ev)
		}
		n++
	}
	if n != 3 {
		t.Fatalf("%d JSON lines, want 3", n)
	}
	var bb bytes.Buffer
	if err := WriteBundle(&bb, es); err != nil {
		t.Fatal(err)
	}
	var bundle struct {
		ResourceType string
		Total        int
		Entry        []struct{ Resource AuditEvent }
	}
	if err := json.Unmarshal(bb.Bytes(), &bundle); err != nil || bundle.Total != 3 || bundle.Entry[1].Resource.ID != "dec-3" {
		t.Fatalf("bundle: %v %+v", err, bundle)
	}
}

func TestEncryptionAtRest(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	t.Setenv("PHIGATE_TEST_AUDIT_KEY", hex.EncodeToString(key))
	cfg := queryLog(t, func(c *Config) { c.EncryptionKeyEnv = "PHIGATE_TEST_AUDIT_KEY" })
	pub, err := LoadPublicKey(PublicKeyPath(cfg.SigningKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range segNames(t, cfg.Dir) {
		data, _ := os.ReadFile(filepath.Join(cfg.Dir, name))
		// Markers long enough that random ciphertext cannot contain them by chance.
		for _, leak := range []string{"Patient/p1", "Practitioner/u1", "AuditEvent", "role_not_permitted"} {
			if bytes.Contains(data, []byte(leak)) {
				t.Fatalf("%s holds %q in clear", name, leak)
			}
		}
	}
	wrong := bytes.Repeat([]byte{8}, 32)
	cases := []struct {
		name     string
		verify   VerifyOptions
		query    QueryOptions
		wantErr  error
		decrypts bool
	}{
		{"integrity without the key", VerifyOptions{}, QueryOptions{}, nil, false},
		{"right key", VerifyOptions{EncryptionKey: key}, QueryOptions{EncryptionKey: key}, nil, true},
		{"wrong key", VerifyOptions{EncryptionKey: wrong}, QueryOptions{EncryptionKey: wrong}, ErrDecrypt, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rep, err := Verify(cfg.Dir, pub, tc.verify)
			if !errors.Is(err, tc.wantErr) && !(tc.wantErr == nil && err == nil) {
				t.Fatalf("Verify = %v, want %v", err, tc.wantErr)
			}
			if rep.Decrypted != tc.decrypts {
				t.Fatalf("Decrypted = %v", rep.Decrypted)
			}
			if tc.wantErr != nil {
				if pos, ok := PositionOf(err); !ok || pos.Seq != 1 {
					t.Fatalf("position = %+v, want seq 1", pos)
				}
				if ExitCode(err) != ExitDecrypt {
					t.Fatalf("exit code %d", ExitCode(err))
				}
			}
			if !tc.decrypts {
				return
			}
			es, err := Query(cfg.Dir, Filter{Patient: "p1"}, tc.query)
			switch {
			case tc.wantErr != nil && !errors.Is(err, tc.wantErr):
				t.Fatalf("Query = %v, want %v", err, tc.wantErr)
			case tc.wantErr == nil && (err != nil || len(es) != 3):
				t.Fatalf("Query = %d entries, %v; want 3", len(es), err)
			}
		})
	}
	if _, err := Query(cfg.Dir, Filter{}, QueryOptions{}); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("Query without key = %v, want ErrDecrypt", err)
	}
}

// regoEvaluator is the real OPA engine over a one-rule policy.
type regoEvaluator struct{ q rego.PreparedEvalQuery }

func newRegoEvaluator(t *testing.T, policy string) *regoEvaluator {
	t.Helper()
	q, err := rego.New(rego.Query("data.replay.decision"), rego.Module("replay.rego", policy)).PrepareForEval(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return &regoEvaluator{q: q}
}

func (e *regoEvaluator) Evaluate(ctx context.Context, req *authz.Request) (authz.Decision, error) {
	b, err := json.Marshal(req)
	if err != nil {
		return authz.Decision{}, err
	}
	var in map[string]any
	if err := json.Unmarshal(b, &in); err != nil {
		return authz.Decision{}, err
	}
	rs, err := e.q.Eval(ctx, rego.EvalInput(in))
	if err != nil || len(rs) == 0 {
		return authz.Decision{}, errors.Join(err, errors.New("no decision"))
	}
	raw, _ := json.Marshal(rs[0].Expressions[0].Value)
	var d authz.Decision
	err = json.Unmarshal(raw, &d)
	return d, err
}

func TestReplay(t *testing.T) {
	cfg := queryLog(t, nil)
	// The new policy denies u1 everything and allows u2: decisions 1, 2
	// (allowed before) and 3 (denied before) change; 4 stays allowed.
	ev := newRegoEvaluator(t, `package replay
decision := {"allow": false, "status": 403} if input.identity.subject == "u1"
else := {"allow": true, "status": 200}
`)
	changes, rep, err := Replay(t.Context(), cfg.Dir, ev, Filter{}, ReplayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Evaluated != 4 || rep.Changed != 3 || len(changes) != 3 {
		t.Fatalf("report %+v, changes %+v", rep, changes)
	}
	want := []struct {
		id       string
		was, now bool
	}{{"dec-1", true, false}, {"dec-2", true, false}, {"dec-3", false, true}}
	for i, w := range want {
		c := changes[i]
		if c.DecisionID != w.id || c.WasAllow != w.was || c.NowAllow != w.now {
			t.Fatalf("change %d = %+v, want %+v", i, c, w)
		}
	}
	// Filtered replay only looks at matching decisions.
	changes, rep, err = Replay(t.Context(), cfg.Dir, ev, Filter{Patient: "p2"}, ReplayOptions{})
	if err != nil || rep.Evaluated != 1 || len(changes) != 1 || changes[0].DecisionID != "dec-2" {
		t.Fatalf("filtered replay: %+v %+v %v", rep, changes, err)
	}
	// A policy that fails to evaluate replays as a denial with the error kept.
	broken := newRegoEvaluator(t, `package replay
decision := {"allow": true, "status": 200} if input.nothing
`)
	changes, _, err = Replay(t.Context(), cfg.Dir, broken, Filter{User: "u1"}, ReplayOptions{})
	if err != nil || len(changes) != 2 || changes[0].NowError == "" || changes[0].NowStatus != 503 {
		t.Fatalf("broken policy replay: %+v %v", changes, err)
	}
}

func TestReportWriters(t *testing.T) {
	cfg := queryLog(t, nil)
	pub, _ := LoadPublicKey(PublicKeyPath(cfg.SigningKeyFile))
	rep, err := Verify(cfg.Dir, pub, VerifyOptions{})
	var out bytes.Buffer
	if werr := WriteVerifyReport(&out, rep, err, false); werr != nil || !strings.HasPrefix(out.String(), "OK 7 records") {
		t.Fatalf("report %q %v %v", out.String(), err, werr)
	}
	out.Reset()
	bad := &Error{Code: CodeChainBroken, Pos: &Position{File: "seg-x", Seq: 3, Offset: 99}}
	if werr := WriteVerifyReport(&out, VerifyReport{Code: CodeChainBroken}, bad, true); werr != nil {
		t.Fatal(werr)
	}
	var js struct {
		OK    bool
		Code  string
		Error string
	}
	if err := json.Unmarshal(out.Bytes(), &js); err != nil || js.OK || js.Code != "chain_broken" || !strings.Contains(js.Error, "seg-x seq 3 offset 99") {
		t.Fatalf("json report %s: %v", out.String(), err)
	}
	out.Reset()
	if err := WriteChanges(&out, []Change{{Seq: 2, DecisionID: "d", WasPolicy: "3f2a9c", WasAllow: true, WasStatus: 200, NowStatus: 403}}, false); err != nil ||
		!strings.Contains(out.String(), "3f2a9c  allow 200") || !strings.Contains(out.String(), "deny 403") {
		t.Fatalf("changes table %q %v", out.String(), err)
	}
}
