package regolib

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/rego"
)

// TestCacheContract checks the promise behind decision.cache.until_ns:
// evaluated at t0, the decision must be exactly the same (every field but
// cache) at any later instant before until_ns, for the same input. phigate
// reuses decisions on that promise alone, so a time rule that changes
// inside the window would let a stale allow through.
//
// Inputs are those of the equivalence harness, each moved to a random
// instant (so windows start mid-minute, around shift edges and on other
// days) and then probed at the last nanosecond of its window, at its
// middle, and just after it (where the answer may change but the new
// window must start).
func TestCacheContract(t *testing.T) {
	// The shipped data, plus account bounds off the minute for callers the
	// inputs use often, so some windows must end at a bound.
	bounds := []string{"2025-03-12T14:59:47.5Z", "2025-03-12T15:02:13Z", "2025-03-12T15:00:42Z", "2025-03-12T15:00:42.000000001Z"}
	data := shippedData(t)
	merge(data["phigate"].(map[string]any), map[string]any{"accounts": map[string]any{
		"dr-house":   map[string]any{"not_before": bounds[0], "not_after": bounds[1]},
		"nurse-joy":  map[string]any{"not_after": bounds[2]},
		"biller-1":   map[string]any{"not_before": bounds[3]},
		"locum-2023": map[string]any{"not_after": "2024-01-01T00:00:00Z"},
	}})
	pq := prepareWithData(t, data)
	inputs := equivalenceInputs(t)
	r := rand.New(rand.NewPCG(20261126, 1))
	const samples = 1500
	var checked, reusable, boundHits, grantSamples int
	for i := 0; i < samples; i++ {
		raw := inputs[r.IntN(len(inputs))]
		in, ok := decodeObject(raw)
		if !ok {
			continue
		}
		var t0 int64
		switch r.IntN(4) {
		case 0: // shortly before an account bound
			t0 = mustNS(t, bounds[r.IntN(len(bounds))]) - r.Int64N(int64(90*time.Second))
		default: // anywhere in a week, to any nanosecond
			t0 = wed11NY + r.Int64N(int64(7*24*time.Hour)) - int64(3*24*time.Hour)
		}
		in["time_ns"] = t0
		// In a third of the samples the caller holds a grant, for a patient
		// the request touches, that expires around t0.
		if bg, ok := in["break_glass"].(map[string]any); ok && r.IntN(3) == 0 {
			patient := "pat-0002"
			if f, ok := in["fhir"].(map[string]any); ok {
				if ps, ok := f["patients"].([]any); ok && len(ps) > 0 {
					patient, _ = ps[r.IntN(len(ps))].(string)
				}
			}
			bg["requested"] = false
			bg["grants"] = []any{map[string]any{"patient": patient, "reason": "code blue",
				"expires_ns": t0 - int64(10*time.Second) + r.Int64N(int64(90*time.Second))}}
			grantSamples++
		}
		d0 := evalObject(t, pq, in)
		until := untilNS(t, d0)
		checked++
		if until == 0 {
			continue
		}
		if until <= t0 || until > t0+int64(24*time.Hour) {
			t.Fatalf("input %s at %d: until_ns %d is not in (t0, t0+24h]", raw, t0, until)
		}
		reusable++
		if until%int64(time.Minute) != 0 && until != t0+int64(24*time.Hour) {
			boundHits++
		}
		for _, t1 := range []int64{until - 1, t0 + (until-t0)/2} {
			in["time_ns"] = t1
			d1 := evalObject(t, pq, in)
			if !sameButCache(d0, d1) {
				t.Fatalf("input %s: decision at %d (held until %d) differs at %d:\n%v\n%v", raw, t0, until, t1, d0, d1)
			}
		}
		in["time_ns"] = until
		if u2 := untilNS(t, evalObject(t, pq, in)); u2 != 0 && u2 <= until {
			t.Fatalf("input %s: the window after %d ends at %d, not after it", raw, until, u2)
		}
	}
	t.Logf("%d decisions checked, %d reusable, %d windows ended off the minute, %d grants moved near t0", checked, reusable, boundHits, grantSamples)
	if reusable < checked/2 || boundHits == 0 || grantSamples == 0 {
		t.Fatalf("the sample exercised too little: %d of %d reusable, %d bound windows", reusable, checked, boundHits)
	}
}

func mustNS(t *testing.T, s string) int64 {
	t.Helper()
	ts, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatal(err)
	}
	return ts.UnixNano()
}

func shippedData(t *testing.T) map[string]any {
	t.Helper()
	raw, err := FS.ReadFile("data.json")
	if err != nil {
		t.Fatal(err)
	}
	doc, ok := decodeObject(raw)
	if !ok {
		t.Fatal("data.json is not an object")
	}
	return doc
}

func decodeObject(raw []byte) (map[string]any, bool) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil || m == nil {
		return nil, false
	}
	return m, true
}

func evalObject(t *testing.T, pq rego.PreparedEvalQuery, in map[string]any) map[string]any {
	t.Helper()
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	d, ok := evalJSON(t, pq, b)
	if !ok {
		t.Fatalf("input does not decode: %s", b)
	}
	return d
}

func untilNS(t *testing.T, d map[string]any) int64 {
	t.Helper()
	c, _ := d["cache"].(map[string]any)
	n, ok := c["until_ns"].(json.Number)
	if !ok {
		t.Fatalf("decision has no cache.until_ns: %v", d)
	}
	v, err := n.Int64()
	if err != nil {
		t.Fatalf("cache.until_ns %v: %v", n, err)
	}
	return v
}

func sameButCache(a, b map[string]any) bool {
	ac, bc := make(map[string]any, len(a)), make(map[string]any, len(b))
	for k, v := range a {
		if k != "cache" {
			ac[k] = v
		}
	}
	for k, v := range b {
		if k != "cache" {
			bc[k] = v
		}
	}
	return reflect.DeepEqual(ac, bc)
}
