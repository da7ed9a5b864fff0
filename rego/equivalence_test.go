package regolib

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
)

// The equivalence golden pins the whole decision document for thousands of
// inputs, so a restructuring of the library (for speed, for readability) can
// prove it changed no decision: not the outcome, not a reason, not a header,
// not an audit rule. Only the SHA-256 of each canonical decision is stored;
// the inputs are regenerated from equivalenceSeed.

var updateEquivalence = flag.Bool("update-equivalence", false, "rewrite testdata/equivalence.golden.gz from the current policy")

const (
	equivalenceSeed   = 20250312
	equivalenceGolden = "testdata/equivalence.golden.gz"
	equivalenceHeader = "# phigate decision equivalence v1"
)

// The demo clock: Wednesday 2025-03-12 15:00 UTC (11:00 in New York).
const wed11NY = 1741791600000000000

// equivalenceInputs returns every input of the harness as JSON text, in a
// fixed order: the decision cases, the garbage seeds, structured requests
// over the policy's whole vocabulary, mutations of the cases and random
// documents.
func equivalenceInputs(t testing.TB) [][]byte {
	t.Helper()
	r := rand.New(rand.NewPCG(equivalenceSeed, 7))
	var out [][]byte
	add := func(v any) {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("marshal input: %v", err)
		}
		out = append(out, b)
	}
	cases := loadCases(t)
	for _, tc := range cases {
		add(tc.Input)
	}
	for _, s := range garbageSeeds {
		out = append(out, []byte(s))
	}
	for range 5000 {
		add(structuredInput(r))
	}
	for _, tc := range cases {
		for range 40 {
			add(mutate(r, tc.Input))
		}
	}
	for range 600 {
		add(randomInput(r))
	}
	return out
}

// pick returns one of xs.
func pick[T any](r *rand.Rand, xs ...T) T { return xs[r.IntN(len(xs))] }

func patientID(n int) string { return fmt.Sprintf("pat-%04d", n) }

// caller is one identity of the structured generator with the patients it is
// (usually) related to, so that a good share of requests is allowed.
type caller struct {
	identity map[string]any
	own      []string
}

func structuredCaller(r *rand.Rand) caller {
	ident := func(subject string, roles []any, fhirUser string) map[string]any {
		return map[string]any{
			"authenticated": true, "subject": subject, "fhir_user": fhirUser,
			"roles": roles, "scopes": []any{}, "mfa": r.IntN(3) == 0, "service": false,
		}
	}
	k := 1 + r.IntN(60)
	prac := fmt.Sprintf("Practitioner/prac-%03d", k)
	careTeam := []string{patientID(k), patientID(k + 60), patientID(k + 600)}
	p := 1 + r.IntN(1200)
	d := 10 * (1 + r.IntN(120))
	switch r.IntN(16) {
	case 0, 1, 2:
		return caller{ident(pick(r, "dr-house", "locum-2023", "resident-2031", "bad-date"), []any{"physician"}, prac), careTeam}
	case 3, 4:
		return caller{ident(pick(r, "nurse-joy", "nurse-night-01"), []any{"nurse"}, prac), careTeam}
	case 5:
		return caller{ident("biller-1", []any{"billing"}, ""), []string{patientID(p)}}
	case 6:
		return caller{ident("desk-1", []any{"front-desk"}, ""), []string{patientID(p)}}
	case 7:
		return caller{ident("researcher-1", []any{"researcher"}, ""), []string{patientID(p)}}
	case 8:
		return caller{ident("pat-user", []any{"patient"}, "Patient/"+patientID(p)), []string{patientID(p)}}
	case 9:
		return caller{ident("rp-user", []any{"related-person"}, fmt.Sprintf("RelatedPerson/rp-%04d", d)), []string{patientID(d)}}
	case 10:
		return caller{ident("admin-1", []any{"admin"}, ""), []string{patientID(p)}}
	case 11:
		id := ident(pick(r, "spiffe://phigate.local/ns/lab/sa/lab-interface", "spiffe://phigate.local/ns/portal/sa/reminders", "spiffe://unknown"), []any{"service"}, "")
		id["service"] = r.IntN(4) != 0
		return caller{id, []string{patientID(1 + r.IntN(4))}}
	case 12:
		return caller{ident("dual", pick(r, []any{"billing", "physician"}, []any{"physician", "researcher"}, []any{"nurse", "front-desk"}), prac), careTeam}
	case 13:
		return caller{ident("auditor-1", pick(r, []any{"auditor"}, []any{"auditor", "admin"}), ""), []string{patientID(p)}}
	case 14:
		return caller{ident("nobody", pick(r, []any{}, []any{"wizard"}), prac), careTeam}
	default:
		id := map[string]any{"authenticated": false, "roles": []any{}, "scopes": []any{}, "mfa": false, "service": false}
		if r.IntN(2) == 0 {
			id["error"] = pick(r, "missing_token", "expired", "Bad token for someone")
		}
		return caller{id, careTeam}
	}
}

var resourceTypes = []string{"Patient", "Observation", "Claim", "Coverage", "Appointment", "Group", "Practitioner", "AuditEvent", "Encounter", "DocumentReference"}

// structuredTarget returns one FHIR request (top level or bundle entry).
func structuredTarget(r *rand.Rand, c caller, depth int) map[string]any {
	patients := func() []any {
		var ps []any
		for range r.IntN(3) + 1 {
			if r.IntN(4) != 0 {
				ps = append(ps, pick(r, c.own...))
			} else {
				ps = append(ps, patientID(pick(r, 1, 2, 10, 1+r.IntN(1200))))
			}
		}
		return ps
	}
	typ := pick(r, resourceTypes...)
	if r.IntN(3) == 0 {
		typ = "Patient"
	}
	switch n := r.IntN(20); {
	case n < 7:
		ps := patients()[:1]
		id := ps[0].(string)
		if typ != "Patient" {
			id = "obs-1"
		}
		return map[string]any{"interaction": pick(r, "read", "read", "vread", "history-instance", "update", "patch", "delete"), "resource_type": typ, "id": id, "patients": ps, "all_patients": false}
	case n < 11:
		if r.IntN(2) == 0 {
			return map[string]any{"interaction": "search-type", "resource_type": typ, "patients": []any{}, "all_patients": true}
		}
		return map[string]any{"interaction": "search-type", "resource_type": typ, "patients": patients(), "all_patients": false}
	case n == 11:
		return map[string]any{"interaction": "search-compartment", "resource_type": typ, "compartment": map[string]any{"type": "Patient", "id": pick(r, c.own...)}, "patients": []any{}, "all_patients": false}
	case n == 12:
		return map[string]any{"interaction": "create", "resource_type": typ, "patients": patients()[:1], "all_patients": false}
	case n == 13:
		op := pick(r, "everything", "export", "validate")
		ps := []any{}
		if op == "everything" {
			ps = patients()[:1]
		}
		return map[string]any{"interaction": "operation", "resource_type": pick(r, "Patient", "Group", ""), "id": "x", "operation": op, "patients": ps, "all_patients": len(ps) == 0}
	case n == 14:
		return map[string]any{"interaction": pick(r, "search-system", "history-system", "history-type", "capabilities"), "resource_type": pick(r, "", typ), "patients": []any{}, "all_patients": r.IntN(2) == 0}
	case n == 15:
		return map[string]any{"interaction": "non-fhir", "kind": pick(r, "hl7v2", ""), "method": pick(r, "GET", "post", "DELETE"), "patients": patients()[:1], "all_patients": false}
	case n == 16 && depth == 0:
		var es []any
		for range r.IntN(4) {
			es = append(es, structuredTarget(r, c, depth+1))
		}
		return map[string]any{"interaction": pick(r, "batch", "transaction"), "patients": []any{}, "all_patients": false, "entries": es}
	case n == 17:
		return map[string]any{"interaction": pick(r, "teleport", "batch", "read"), "resource_type": pick(r, "", typ), "patients": []any{}}
	default:
		ps := patients()[:1]
		return map[string]any{"interaction": "read", "resource_type": "Patient", "id": ps[0], "patients": ps, "all_patients": false}
	}
}

func structuredScopes(r *rand.Rand, own []string) ([]any, string) {
	scope := func(ctx, res, perms string) map[string]any {
		return map[string]any{"raw": ctx + "/" + res + "." + perms, "context": ctx, "resource": res, "permissions": perms}
	}
	launch := ""
	if r.IntN(2) == 0 {
		launch = pick(r, own...)
	}
	switch r.IntN(8) {
	case 0:
		return []any{scope("patient", "*", "rs")}, launch
	case 1:
		return []any{scope("user", pick(r, "Patient", "Observation", "*"), pick(r, "rs", "r", "cruds"))}, launch
	case 2:
		return []any{scope("patient", "Observation", "r"), scope("user", "Patient", "s")}, launch
	case 3:
		return []any{scope("system", "*", "cruds")}, launch
	case 4:
		return []any{"patient/*.read", map[string]any{"context": "patient"}}, launch
	default:
		return []any{}, launch
	}
}

// structuredInput is a well-formed request document built the way phigate's
// request parser builds them, over roles, interactions, patients in and out
// of the caller's relationships, purposes, scopes, break glass, bundles and
// times of day.
func structuredInput(r *rand.Rand) map[string]any {
	c := structuredCaller(r)
	if r.IntN(5) == 0 {
		c.identity["scopes"], c.identity["patient"] = structuredScopes(r, c.own)
	}
	fhir := structuredTarget(r, c, 0)
	in := map[string]any{
		"id": "req-1", "time_ns": int64(wed11NY), "method": pick(r, "GET", "POST"), "path": "/fhir",
		"query": map[string]any{}, "headers": map[string]any{}, "source": map[string]any{"address": "127.0.0.1"},
		"identity": c.identity, "fhir": fhir, "break_glass": map[string]any{"requested": false, "grants": []any{}},
	}
	// Times over a whole week in hours, plus odd minutes, so shift edges and
	// weekends (in New York and Chicago) are crossed.
	switch r.IntN(6) {
	case 0, 1, 2:
	case 3:
		in["time_ns"] = int64(wed11NY) + int64(r.IntN(7*24*60))*60_000_000_000
	case 4:
		in["time_ns"] = pick[any](r, 0, -1, nil, "now", int64(1704067200000000000), int64(1940000000000000000))
	default:
		in["time_ns"] = int64(wed11NY) + int64(r.IntN(7*24))*3_600_000_000_000
	}
	if r.IntN(3) == 0 {
		in["purpose_of_use"] = pick[any](r, "TREAT", "ETREAT", "HPAYMT", "HOPERAT", "HRESCH", "PATRQT", "FAMRQT", "HSYSADMIN", "BOGUS", "", []any{"TREAT"})
	}
	switch r.IntN(8) {
	case 0:
		c.identity["mfa"] = r.IntN(4) != 0
		in["break_glass"] = map[string]any{"requested": true, "reason": pick(r, "unconscious in ED", "", "  "), "grants": []any{}}
	case 1:
		t, _ := in["time_ns"].(int64)
		in["break_glass"] = map[string]any{"requested": false, "grants": []any{
			map[string]any{"patient": patientID(pick(r, 2, 3, 1+r.IntN(1200))), "reason": pick[any](r, "code blue", 7), "expires_ns": t + int64(r.IntN(3)-1)*3_600_000_000_000},
		}}
	case 2:
		in["break_glass"] = map[string]any{"requested": true, "reason": "code blue", "grants": []any{
			map[string]any{"patient": patientID(2), "reason": "earlier", "expires_ns": int64(wed11NY) + 1800_000_000_000},
		}}
	}
	return in
}

// mutate returns a deep copy of in with one to three fields replaced,
// deleted or retyped, at the top level, in identity, fhir or a bundle entry.
func mutate(r *rand.Rand, in map[string]any) map[string]any {
	var cp map[string]any
	b, _ := json.Marshal(in)
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	_ = dec.Decode(&cp)
	for range 1 + r.IntN(3) {
		obj := cp
		switch r.IntN(4) {
		case 0:
		case 1:
			if o, ok := cp["identity"].(map[string]any); ok {
				obj = o
			}
		case 2:
			if o, ok := cp["fhir"].(map[string]any); ok {
				obj = o
				if es, ok := o["entries"].([]any); ok && len(es) > 0 {
					if e, ok := es[r.IntN(len(es))].(map[string]any); ok {
						obj = e
					}
				}
			}
		default:
			if o, ok := cp["break_glass"].(map[string]any); ok {
				obj = o
			}
		}
		key := vocabKeys[r.IntN(len(vocabKeys))]
		if r.IntN(3) == 0 && len(obj) > 0 {
			keys := make([]string, 0, len(obj))
			for k := range obj {
				keys = append(keys, k)
			}
			// Map order is random: sort so the mutation is reproducible.
			slices.Sort(keys)
			key = keys[r.IntN(len(keys))]
		}
		if r.IntN(4) == 0 {
			delete(obj, key)
		} else {
			obj[key] = randomValue(r, 1)
		}
	}
	return cp
}

// variantData is the shipped data with the shapes it does not exercise: a
// directive the filter cannot apply, a role without patient access, an
// account bound that does not parse, a shift in an unknown time zone, an
// overnight role shift, consent for any purpose, and workloads no longer
// exempt from MFA. The rewritten policy must agree on these too.
func variantData(t testing.TB) map[string]any {
	t.Helper()
	raw, err := FS.ReadFile("data.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		t.Fatal(err)
	}
	var patch map[string]any
	dec = json.NewDecoder(strings.NewReader(`{
		"roles": {"auditor": {"permissions": {"AuditEvent": ["read", "search-type"], "*": ["read"]}}},
		"purposes": {"auditor": ["HSYSADMIN"]},
		"default_purposes": {"auditor": "HSYSADMIN"},
		"redaction": {"admin": {"*": [{"path": "Patient.name", "action": "explode"}, {"path": "Patient.telecom", "action": "mask"}]},
			"physician": {"ETREAT": [{"path": "Patient.photo", "action": "remove"}]}},
		"accounts": {"bad-date": {"not_before": "yesterday"}, "dr-house": {"not_before": "2020-01-01T00:00:00Z", "not_after": "2030-01-01T00:00:00Z"}},
		"shifts": {"users": {"resident-2031": [{"tz": "Mars/Olympus", "days": ["Wed"], "start": "00:00", "end": "23:59"}]},
			"roles": {"nurse": [{"tz": "America/Chicago", "days": ["Mon", "Tue", "Wed", "Thu", "Fri"], "start": "20:00", "end": "08:00"}]}},
		"consents": {"pat-0002": [{"labels": ["PSY", "HIV", "XYZ"], "roles": ["physician", "nurse"], "purposes": ["*"]}]},
		"mfa_required": {"operations": ["export", "everything"], "service_exempt": false},
		"emergency": {"eligible_roles": ["physician", "nurse", "admin"]}
	}`))
	dec.UseNumber()
	if err := dec.Decode(&patch); err != nil {
		t.Fatal(err)
	}
	merge(doc["phigate"].(map[string]any), patch)
	return doc
}

func merge(dst, src map[string]any) {
	for k, v := range src {
		if sv, ok := v.(map[string]any); ok {
			if dv, ok := dst[k].(map[string]any); ok {
				merge(dv, sv)
				continue
			}
		}
		dst[k] = v
	}
}

// prepareWithData compiles the decision query over the library's modules
// and the given data document.
func prepareWithData(t testing.TB, data map[string]any) rego.PreparedEvalQuery {
	t.Helper()
	res, _ := load(t)
	store := inmem.NewFromObjectWithOpts(data, inmem.OptReturnASTValuesOnRead(true))
	opts := []func(*rego.Rego){
		rego.Query("data.phigate.authz.decision"),
		rego.Store(store),
		rego.StoreReadAST(true),
		rego.SetRegoVersion(ast.RegoV1),
	}
	for _, m := range policyModules(res) {
		opts = append(opts, rego.ParsedModule(m))
	}
	pq, err := rego.New(opts...).PrepareForEval(context.Background())
	if err != nil {
		t.Fatalf("prepare: %v", err)
	}
	return pq
}

// variantEvery is how many of the inputs (every n-th) are also decided
// against variantData.
const variantEvery = 3

// TestEquivalence decides every generated input with the shipped data (and a
// share of them with variantData) and compares the SHA-256 of each canonical
// decision document with the golden file. It also checks that the inputs
// still reach what they were built to reach: hundreds of allows and every
// deny reason of every module.
func TestEquivalence(t *testing.T) {
	inputs := equivalenceInputs(t)
	shipped := prepare(t)
	variant := prepareWithData(t, variantData(t))

	var got []string
	var docs [][]byte
	allowed := 0
	reasons := map[string]int{}
	decideAll := func(pq rego.PreparedEvalQuery, every int) {
		for i, raw := range inputs {
			if i%every != 0 {
				continue
			}
			d, ok := evalJSON(t, pq, raw)
			if !ok {
				t.Fatalf("input %d is not JSON: %s", i, raw)
			}
			checkComplete(t, d)
			if d["allow"] == true {
				allowed++
			}
			reason := d["reason"].(string)
			if strings.HasPrefix(reason, "entry[") {
				reason = "entry." + reason[strings.Index(reason, "].")+2:]
			}
			reasons[reason]++
			// How long a decision holds is pinned by TestCacheContract, which
			// checks it against evaluations at later instants; here it
			// would tie every hash to the input's clock.
			delete(d, "cache")
			// encoding/json writes map keys sorted: this is the canonical form.
			b, err := json.Marshal(d)
			if err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256(b)
			got = append(got, hex.EncodeToString(sum[:]))
			docs = append(docs, b)
		}
	}
	decideAll(shipped, 1)
	decideAll(variant, variantEvery)
	header := fmt.Sprintf("%s seed=%d inputs=%d variant_every=%d decisions=%d", equivalenceHeader, equivalenceSeed, len(inputs), variantEvery, len(got))

	if *updateEquivalence {
		writeGolden(t, header, got)
		t.Logf("wrote %s: %s", equivalenceGolden, header)
	}

	t.Run("coverage", func(t *testing.T) {
		if allowed < 500 {
			t.Errorf("only %d of %d decisions allow; the harness must exercise allowed paths", allowed, len(got))
		}
		for _, want := range coverageReasons() {
			if reasons[want] == 0 {
				t.Errorf("no input yields reason %q", want)
			}
		}
		t.Logf("%d decisions, %d allowed, %d distinct reasons", len(got), allowed, len(reasons))
	})

	wantHeader, want := readGolden(t)
	if wantHeader != header {
		t.Fatalf("golden header %q, generated %q: the generator changed; regenerate the golden from the policy it pins (-update-equivalence)", wantHeader, header)
	}
	mismatches := 0
	for i := range got {
		if got[i] == want[i] {
			continue
		}
		mismatches++
		if mismatches <= 5 {
			n := i
			data := "shipped"
			if n >= len(inputs) {
				n = (n - len(inputs)) * variantEvery
				data = "variant"
			}
			t.Errorf("decision %d (input %d, %s data) changed:\ninput:    %s\ndecision: %s", i, n, data, inputs[n], docs[i])
		}
	}
	if mismatches > 0 {
		t.Fatalf("%d of %d decisions differ from the golden", mismatches, len(got))
	}
}

// coverageReasons are the reasons the inputs must reach: every deny reason
// of every module, the identity and public answers, and batch entries.
func coverageReasons() []string {
	return []string{
		"allow", "public.capabilities", "identity.missing", "identity.missing_token", "identity.expired",
		"request.malformed", "request.unknown_interaction", "request.malformed_patients", "request.malformed_compartment",
		"request.malformed_purpose", "request.missing_resource_type", "request.missing_id", "request.missing_operation",
		"request.missing_kind", "request.empty_bundle",
		"break_glass.patient_ambiguous", "break_glass.reason_required", "break_glass.role_not_eligible",
		"time.request_time_missing", "time.account_invalid", "time.account_not_yet_valid", "time.account_expired", "time.outside_shift",
		"rbac.no_role", "rbac.not_permitted", "purpose.required", "purpose.not_permitted",
		"smart_scopes.not_permitted", "mfa.required:break_glass", "mfa.required:export",
		"relationship.not_on_care_team", "relationship.not_delegated", "relationship.not_self",
		"relationship.service_not_permitted", "relationship.no_patient_access",
		"minimum_necessary.invalid_directive",
		"entry.rbac.not_permitted", "entry.relationship.not_on_care_team", "entry.request.nested_bundle",
	}
}

func writeGolden(t testing.TB, header string, sums []string) {
	t.Helper()
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	fmt.Fprintln(zw, header)
	for _, s := range sums {
		fmt.Fprintln(zw, s)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.FromSlash(equivalenceGolden), buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readGolden(t testing.TB) (string, []string) {
	t.Helper()
	f, err := os.Open(filepath.FromSlash(equivalenceGolden))
	if err != nil {
		t.Fatalf("%v (create it with -update-equivalence from the policy it pins)", err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(zr)
	if !sc.Scan() {
		t.Fatal("empty golden")
	}
	header := sc.Text()
	var sums []string
	for sc.Scan() {
		sums = append(sums, sc.Text())
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return header, sums
}
