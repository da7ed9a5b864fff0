package filters

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"unicode/utf16"
)

const planted = "PLANTED-7731"

func fuzzPlan() Plan {
	return Plan{
		Redact: []Directive{
			{Path: "Patient.telecom", Action: ActionRemove},
			{Path: "*.telecom", Action: ActionRemove},
			{Path: ssnPath, Action: ActionTokenize, KeyID: "k1", Format: "ff1"},
			{Path: "Patient.name", Action: ActionMask},
			{Path: "Observation", Action: ActionAllow, Keep: []string{"status", "code"}},
		},
		Enforce: &Enforcement{Patients: []string{"p1", "A"}},
	}
}

func addSeeds(f *testing.F, pattern string) {
	files, _ := filepath.Glob(filepath.Join("testdata", pattern))
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
}

func FuzzRedactJSON(f *testing.F) {
	addSeeds(f, "*.json")
	addSeeds(f, "golden/*.in.json")
	f.Add([]byte(bundleOf("searchset", 3, entry(patA, "match"), entry(obsB, "match"), entry(obsPsy, "match"))))
	f.Add(genBundle(3))
	// Duplicate keys, which must all be refused.
	f.Add([]byte(`{"resourceType":"Bundle","type":"searchset","entry":[` + entry(patA, "match") + `],"entry":[` + entry(patB, "match") + `]}`))
	f.Add([]byte(`{"resourceType":"Bundle","type":"searchset","entry":[` + entry(patA, "match") + `],"\u0065ntry":[` + entry(patB, "match") + `]}`))
	f.Add([]byte(`{"resourceType":"Observation","id":"o","meta":{"security":[{"code":"PSY"}],"security":[]},"subject":{"reference":"Patient/A"}}`))
	f.Add([]byte(`{"resourceType":"Observation","id":"o","contained":[{"resourceType":"Patient","id":"c","id":"d"}],"subject":{"reference":"#c"}}`))
	f.Add([]byte(`{"resourceType":"Patient","id":"p1","extension":[{"url":"u","a\/b":1,"a/b":2}]}`))
	e := testEngine(f)
	plan := fuzzPlan()
	f.Fuzz(func(t *testing.T, in []byte) {
		res, err := apply(e, fhirJSON, in, plan)
		if hasDuplicateKey(in) && CodeOf(err) != CodeMalformed {
			t.Fatalf("duplicate key not refused: err=%v forbidden=%v\n%s", err, res.Forbidden, res.Body)
		}
		if err == nil {
			// Accepted as it is, so a second copy of its first member is
			// the only thing wrong with the variants below.
			for _, dup := range duplicateFirstMember(in) {
				if _, derr := apply(e, fhirJSON, dup, plan); CodeOf(derr) != CodeMalformed {
					t.Fatalf("duplicated member not refused: err=%v\n%s", derr, dup)
				}
			}
		}
		if err == nil && !res.Forbidden && res.Changed && !json.Valid(res.Body) {
			t.Fatalf("invalid JSON output for valid run:\n%s", res.Body)
		}
		if err == nil && !res.Forbidden && !res.Changed && !bytes.Equal(res.Body, in) {
			t.Fatal("unchanged result differs from input")
		}
		if bytes.Contains(in, []byte(planted)) {
			return
		}
		// The same bytes inside a Patient whose telecom must go.
		doc := []byte(`{"resourceType":"Patient","id":"p1","telecom":[{"system":"phone","value":"` + planted + `"}],"extension":[`)
		doc = append(append(doc, in...), "]}"...)
		res, err = apply(e, fhirJSON, doc, plan)
		if err != nil || res.Forbidden {
			return
		}
		if !json.Valid(res.Body) {
			t.Fatalf("invalid JSON output:\n%s", res.Body)
		}
		if bytes.Contains(res.Body, []byte(planted)) {
			t.Fatalf("removed value survived:\n%s", res.Body)
		}
		// The same bytes accepted deep in a resource, with their first
		// member twice: the duplicate sits in a subtree no check expands.
		for _, dup := range duplicateFirstMember(in) {
			d := append(append([]byte(`{"resourceType":"Patient","id":"p1","extension":[`), dup...), "]}"...)
			if _, derr := apply(e, fhirJSON, d, plan); CodeOf(derr) != CodeMalformed {
				t.Fatalf("nested duplicated member not refused: err=%v\n%s", derr, d)
			}
		}
	})
}

// hasDuplicateKey is an independent reading of b (encoding/json's token
// stream, which decodes escapes) that reports whether any object in it
// holds a key twice. It reports false for what encoding/json cannot read.
func hasDuplicateKey(b []byte) bool {
	type frame struct {
		obj, wantKey bool
		keys         map[string]bool
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	var st []*frame
	valueDone := func() {
		if len(st) > 0 && st[len(st)-1].obj {
			st[len(st)-1].wantKey = true
		}
	}
	for {
		tok, err := dec.Token()
		if err != nil {
			return false
		}
		if n := len(st); n > 0 && st[n-1].obj && st[n-1].wantKey {
			if tok == json.Delim('}') {
				st = st[:n-1]
				valueDone()
				continue
			}
			k, _ := tok.(string)
			if st[n-1].keys[k] {
				return true
			}
			st[n-1].keys[k], st[n-1].wantKey = true, false
			continue
		}
		switch tok {
		case json.Delim('{'):
			st = append(st, &frame{obj: true, wantKey: true, keys: map[string]bool{}})
		case json.Delim('['):
			st = append(st, &frame{})
		case json.Delim(']'):
			st = st[:len(st)-1]
			valueDone()
		default:
			valueDone()
		}
		if len(st) == 0 {
			return false
		}
	}
}

// duplicateFirstMember returns in, an object, with its first member
// repeated right after it: as it is, with the key spelled entirely in \u
// escapes, and with the key's ASCII letters in the other case (a member
// Go's decoder reads as the same). It returns nothing for anything else.
func duplicateFirstMember(in []byte) [][]byte {
	dec := json.NewDecoder(bytes.NewReader(in))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil
	}
	start := int(dec.InputOffset())
	tok, err := dec.Token()
	key, ok := tok.(string)
	if err != nil || !ok {
		return nil
	}
	keyEnd := int(dec.InputOffset())
	var v json.RawMessage
	if err := dec.Decode(&v); err != nil {
		return nil
	}
	end := int(dec.InputOffset())
	// The member's text, from its key's opening quote.
	for start < keyEnd && in[start] != '"' {
		start++
	}
	member := in[start:end]
	var esc []byte
	esc = append(esc, '"')
	for _, r := range key {
		if r >= 0x10000 {
			r1, r2 := utf16.EncodeRune(r)
			esc = fmt.Appendf(esc, `\u%04x\u%04x`, r1, r2)
			continue
		}
		esc = fmt.Appendf(esc, `\u%04x`, r)
	}
	esc = append(esc, '"')
	escaped := append(append([]byte{}, esc...), in[keyEnd:end]...)
	flipped := append([]byte{}, member...)
	for i := 0; i < keyEnd-start; i++ {
		if c := flipped[i]; (c|0x20) >= 'a' && (c|0x20) <= 'z' {
			flipped[i] = c ^ 0x20
		}
	}
	var out [][]byte
	for _, m := range [][]byte{member, escaped, flipped} {
		d := append([]byte{}, in[:end]...)
		d = append(append(append(d, ','), m...), in[end:]...)
		out = append(out, d)
	}
	return out
}

func FuzzRedactHL7(f *testing.F) {
	addSeeds(f, "*.hl7")
	f.Add([]byte("MSH#$%@!#A#B\nPID#1##ID1$$$X##Doe$Jane##19800101\n"))
	f.Add([]byte("MSH|^~\\&|A|B\r\nPID|1||ID1||O\\S\\Brien^Pat\r\n"))
	e := testEngine(f)
	plan := Plan{Redact: []Directive{
		{Path: "Patient.telecom", Action: ActionRemove},
		{Path: "Patient.name", Action: ActionMask},
		{Path: "Patient.identifier.value", Action: ActionTokenize, KeyID: "k1", Format: "ff1"},
	}}
	f.Fuzz(func(t *testing.T, in []byte) {
		if _, err := apply(e, hl7CT, in, plan); err != nil {
			return
		}
		if bytes.Contains(in, []byte(planted)) {
			return
		}
		msg := append([]byte("MSH|^~\\&|A|B\rPID|1||X||||||||||^PRN^PH^^^"+planted+"\r"), in...)
		res, err := apply(e, hl7CT, msg, plan)
		if err != nil {
			return
		}
		if bytes.Contains(res.Body, []byte(planted)) {
			t.Fatalf("removed value survived:\n%q", res.Body)
		}
	})
}
