package plan

import (
	"bytes"
	"reflect"
	"testing"
)

// FuzzDecodeMetadata: whatever the bytes, decoding either refuses them or
// gives a compiled plan whose encoding decodes to the same plan again, so
// the filter side never holds a plan it could not have been sent.
func FuzzDecodeMetadata(f *testing.F) {
	for _, s := range []string{
		`{"v":1,"decision_id":"d"}`,
		`{"v":1,"decision_id":"d","request_id":"r","redact":[{"path":"Patient.telecom","action":"remove"}],"enforce":{"patients":["p1"]}}`,
		`{"v":1,"decision_id":"d","redact":[{"path":"Patient.identifier.where(system='x').value","action":"tokenize","key_id":"k1","format":"ff1"}]}`,
		`{"v":1,"decision_id":"d","redact":[{"path":"Patient","action":"allow","keep":["name"]},{"path":"*","action":"deidentify","profile":"safe-harbor"}]}`,
		`{"v":2,"decision_id":"d"}`,
		`{"v":2,"decision_id":"d","request_id":"r","user":{"sub":"s","iss":"i","fhir_user":"Practitioner/1"},"patients":["p1","p2"],"redact":[{"path":"Patient.telecom","action":"remove"}],"enforce":{"patients":["p1"]}}`,
		`{"v":2,"decision_id":"d","patients":["p2","p1"]}`,
		`{"v":1,"decision_id":"d","patients":["p1"]}`,
		`{"v":3,"decision_id":"d"}`,
		`{"decision_id":"d"}`,
		`{"v":1,"decision_id":"d","redact":[{"path":"Patient","action":"remove"}]}`,
	} {
		f.Add([]byte(s))
	}
	keys := NewKeys("k1")
	f.Fuzz(func(t *testing.T, raw []byte) {
		m, err := DecodeMetadata(raw, keys)
		if err != nil {
			if CodeOf(err) == "" {
				t.Fatalf("error without a code: %v", err)
			}
			return
		}
		for i := range m.Redact {
			if !m.Redact[i].Compiled() {
				t.Fatalf("rule %d decoded but not compiled", i)
			}
		}
		enc, err := m.Encode()
		if err != nil {
			t.Fatalf("a decoded plan does not encode: %v", err)
		}
		again, err := DecodeMetadata(enc, keys)
		if err != nil {
			t.Fatalf("a plan's own encoding does not decode: %v", err)
		}
		// Compared as encodings: an empty list and none ("keep": [] and no
		// keep) are the same plan, though not the same Go value.
		enc2, err := again.Encode()
		if err != nil || !bytes.Equal(enc, enc2) {
			t.Fatalf("re-encoded %s, %v; want %s", enc2, err, enc)
		}
		if len(again.Redact) != len(m.Redact) || again.DecisionID != m.DecisionID || again.Version != m.Version ||
			again.User != m.User || !reflect.DeepEqual(again.Patients, m.Patients) {
			t.Fatalf("re-decoded %+v; want %+v", again, m)
		}
	})
}
