package filters

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// secretName stands for PHI in the bodies below: it must reach neither the
// output nor an error message.
const secretName = "Zyxwarth"

// manyKeys returns n distinct members "k0":0 ... so that an object is large
// enough to leave the small-object comparison for the map.
func manyKeys(n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"k%d":%d`, i, i)
	}
	return b.String()
}

// TestDuplicateKeysRefused: a reader that keeps the first copy of a key and
// one that keeps the last see different documents, and the filter can only
// check one of them, so a body with a duplicate key anywhere is refused as
// malformed (which the ext_proc adapter answers with 502), whatever the
// plan asks for.
func TestDuplicateKeysRefused(t *testing.T) {
	e := testEngine(t)
	other := `{"resourceType":"Patient","id":"B","name":[{"family":"` + secretName + `","given":["Q"]}]}`
	cases := []struct {
		name string
		body string
	}{
		{
			// The reported leak: entry checked, entry released.
			name: "two Bundle.entry members",
			body: `{"resourceType":"Bundle","type":"searchset","entry":[` + entry(patA, "match") + `],"entry":[` + entry(other, "match") + `]}`,
		},
		{
			name: "two entry members, the second escaped",
			body: `{"resourceType":"Bundle","type":"searchset","entry":[` + entry(patA, "match") + `],"\u0065ntry":[` + entry(other, "match") + `]}`,
		},
		{
			name: "two entry members, both escaped differently",
			body: `{"resourceType":"Bundle","type":"searchset","\u0065ntry":[` + entry(patA, "match") + `],"en\u0074ry":[` + entry(other, "match") + `]}`,
		},
		{
			// The PSY label hidden behind an innocuous second copy.
			name: "two meta.security members",
			body: `{"resourceType":"Observation","id":"o1","meta":{"security":[{"system":"http://terminology.hl7.org/CodeSystem/v3-ActCode","code":"PSY"}],"security":[]},"subject":{"reference":"Patient/A"},"valueString":"` + secretName + `"}`,
		},
		{
			name: "two meta members",
			body: `{"resourceType":"Observation","id":"o1","meta":{"security":[{"system":"http://terminology.hl7.org/CodeSystem/v3-ActCode","code":"PSY"}]},"meta":{},"subject":{"reference":"Patient/A"}}`,
		},
		{
			name: "two resourceType members",
			body: `{"resourceType":"Patient","id":"A","resourceType":"Practitioner"}`,
		},
		{
			name: "two id members on a Patient",
			body: `{"resourceType":"Patient","id":"A","id":"B","name":[{"family":"` + secretName + `"}]}`,
		},
		{
			name: "two subject members",
			body: `{"resourceType":"Observation","id":"o1","subject":{"reference":"Patient/A"},"subject":{"reference":"Patient/B"}}`,
		},
		{
			name: "two reference members in one Reference",
			body: `{"resourceType":"Observation","id":"o1","subject":{"reference":"Patient/A","reference":"Patient/B"}}`,
		},
		{
			name: "two telecom members",
			body: `{"resourceType":"Patient","id":"A","telecom":[{"value":"1"}],"telecom":[{"value":"` + secretName + `"}]}`,
		},
		{
			name: "two resource members in an entry",
			body: `{"resourceType":"Bundle","type":"searchset","entry":[{"resource":` + patA + `,"resource":` + other + `}]}`,
		},
		{
			name: "two fullUrl members in an entry",
			body: `{"resourceType":"Bundle","type":"searchset","entry":[{"fullUrl":"Patient/A","fullUrl":"Patient/B","resource":` + patA + `}]}`,
		},
		{
			name: "two type members on a Bundle",
			body: `{"resourceType":"Bundle","type":"searchset","type":"batch-response","entry":[` + entry(patA, "match") + `]}`,
		},
		{
			name: "duplicate inside a contained resource",
			body: `{"resourceType":"Observation","id":"o1","contained":[{"resourceType":"Observation","meta":{"security":[{"code":"PSYTHPN"}]},"meta":{}}],"subject":{"reference":"Patient/A"}}`,
		},
		{
			name: "two contained members",
			body: `{"resourceType":"Observation","id":"o1","contained":[` + other + `],"contained":[],"subject":{"reference":"Patient/A"}}`,
		},
		{
			// Deep in a subtree no check or directive looks at.
			name: "duplicate deep in a value never expanded",
			body: `{"resourceType":"Observation","id":"o1","subject":{"reference":"Patient/A"},"component":[{"code":{"coding":[{"system":"s","code":"c","code":"d"}]}}]}`,
		},
		{
			name: "duplicate in a resource nested in Parameters",
			body: `{"resourceType":"Parameters","parameter":[{"name":"p","resource":{"resourceType":"Patient","id":"A","id":"B"}}]}`,
		},
		{
			name: "duplicate in a Bundle inside an entry",
			body: `{"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Bundle","type":"searchset","entry":[],"entry":[` + entry(other, "match") + `]}}]}`,
		},
		{
			name: "empty keys",
			body: `{"resourceType":"Patient","id":"A","":1,"":2}`,
		},
		{
			name: "escaped solidus",
			body: `{"resourceType":"Patient","id":"A","extension":[{"url":"u","a/b":1,"a\/b":2}]}`,
		},
		{
			name: "surrogate pair and raw UTF-8",
			body: `{"resourceType":"Patient","id":"A","extension":[{"url":"u","\ud83d\ude00":1,"😀":2}]}`,
		},
		{
			name: "escaped control character and its other escape",
			body: `{"resourceType":"Patient","id":"A","extension":[{"url":"u","a\nb":1,"a\u000ab":2}]}`,
		},
		{
			// A reader may decode a lone surrogate to U+FFFD or keep it;
			// the check takes the view that finds more duplicates.
			name: "lone surrogate and the replacement character",
			body: `{"resourceType":"Patient","id":"A","extension":[{"url":"u","\ud800":1,"\ufffd":2}]}`,
		},
		{
			// Go's decoder fills one struct field from both.
			name: "two entry members differing in case",
			body: `{"resourceType":"Bundle","type":"searchset","entry":[` + entry(patA, "match") + `],"Entry":[` + entry(other, "match") + `]}`,
		},
		{
			name: "two security members differing in case",
			body: `{"resourceType":"Observation","id":"o1","meta":{"security":[],"SECURITY":[{"system":"http://terminology.hl7.org/CodeSystem/v3-ActCode","code":"PSY"}]},"subject":{"reference":"Patient/A"}}`,
		},
		{
			name: "Kelvin sign for k",
			body: `{"resourceType":"Patient","id":"A","extension":[{"url":"u","kind":1,"\u212aind":2}]}`,
		},
		{
			name: "long s for s",
			body: `{"resourceType":"Observation","id":"o1","subject":{"reference":"Patient/A"},"ſubject":{"reference":"Patient/B"}}`,
		},
		{
			name: "duplicate differing in case in a large object",
			body: `{"resourceType":"Patient","id":"A","extension":[{"url":"u",` + manyKeys(100) + `,"K42":1}]}`,
		},
		{
			name: "duplicate in a large object",
			body: `{"resourceType":"Patient","id":"A","extension":[{"url":"u",` + manyKeys(100) + `,"k37":1}]}`,
		},
		{
			name: "duplicate in a large object, first pair",
			body: `{"resourceType":"Patient","id":"A","extension":[{` + manyKeys(100) + `,"k0":1}]}`,
		},
		{
			// Readers disagree on what invalid UTF-8 in a key is (one
			// replacement character per byte, per sequence, or an error),
			// so such a key is refused rather than compared.
			name: "key of invalid UTF-8",
			body: "{\"resourceType\":\"Patient\",\"id\":\"A\",\"extension\":[{\"url\":\"u\",\"a\xffb\":1}]}",
		},
	}
	plans := []struct {
		name string
		plan Plan
	}{
		{"enforce", Plan{Enforce: &Enforcement{Patients: []string{"A"}}}},
		{"enforce any patient", Plan{Enforce: &Enforcement{AnyPatient: true}}},
		{"redact only", Plan{Redact: []Directive{{Path: "Patient.telecom", Action: ActionRemove}}}},
	}
	for _, tc := range cases {
		for _, p := range plans {
			t.Run(tc.name+"/"+p.name, func(t *testing.T) {
				res, err := apply(e, fhirJSON, []byte(tc.body), p.plan)
				if err == nil {
					t.Fatalf("accepted (forbidden=%v changed=%v):\n%s", res.Forbidden, res.Changed, res.Body)
				}
				if !errors.Is(err, ErrMalformed) || CodeOf(err) != CodeMalformed {
					t.Fatalf("err = %v, want code %s", err, CodeMalformed)
				}
				if res.Body != nil {
					t.Errorf("body returned with the error: %d bytes", len(res.Body))
				}
				if msg := err.Error(); strings.Contains(msg, secretName) || strings.Contains(msg, "k37") || strings.Contains(msg, "K42") || strings.Contains(msg, "😀") {
					t.Errorf("error names a value: %q", msg)
				}
			})
		}
	}
}

// TestRepeatedNamesThatAreNotDuplicates: the same name in different objects
// is ordinary FHIR and must still pass.
func TestRepeatedNamesThatAreNotDuplicates(t *testing.T) {
	e := testEngine(t)
	cases := []struct {
		name string
		body string
	}{
		{"same name in sibling objects", `{"resourceType":"Patient","id":"A","name":[{"family":"X","given":["a"]},{"family":"Y","given":["b"]}]}`},
		{"same name in parent and child", `{"resourceType":"Patient","id":"A","extension":[{"url":"u","extension":[{"url":"v","valueString":"s"}]}]}`},
		{"same name after a nested object closes", `{"resourceType":"Patient","id":"A","contact":[{"name":{"family":"X"},"telecom":[{"value":"1"}]}],"telecom":[{"value":"2"}]}`},
		{"names that share a prefix", `{"resourceType":"Observation","id":"o","subject":{"reference":"Patient/A"},"value":1,"valueString":"s","_valueString":{"id":"x"}}`},
		{"keys sharing length and end letters", `{"resourceType":"Patient","id":"A","extension":[{"url":"u","abc":1,"aXc":2,"ABD":3,"a":4,"A_":5}]}`},
		{"keys differing in more than case", `{"resourceType":"Patient","id":"A","extension":[{"url":"u","ab":1,"a_b":2,"AB_":3}]}`},
		{"non-ASCII keys that do not fold together", `{"resourceType":"Patient","id":"A","extension":[{"url":"u","é":1,"e":2,"ß":3,"ss":4}]}`},
		{"escaped key without a twin", `{"resourceType":"Patient","id":"A","extension":[{"url":"u","\u00e9":1,"e":2}]}`},
		{"large object without a duplicate", `{"resourceType":"Patient","id":"A","extension":[{"url":"u",` + manyKeys(100) + `}]}`},
		{"Bundle with entries", bundleOf("searchset", 2, entry(patA, "match"), entry(obsA, "match"))},
	}
	plan := Plan{Enforce: &Enforcement{Patients: []string{"A"}}, Redact: []Directive{{Path: "Patient.telecom", Action: ActionRemove}}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res, err := apply(e, fhirJSON, []byte(tc.body), plan)
			if err != nil {
				t.Fatalf("err = %v", err)
			}
			if res.Forbidden {
				t.Fatal("forbidden")
			}
		})
	}
}

// TestHL7EveryPIDChecked: HL7 v2 has its own "which copy counts": a
// message (or a batch) may hold several PID segments. Every one of them
// must name a granted patient, not only the first or the last.
func TestHL7EveryPIDChecked(t *testing.T) {
	e := testEngine(t)
	const (
		hdr  = "MSH|^~\\&|ADT|GH|EHR|GH|20240612083015||ADT^A08|M1|P|2.5\r"
		pidA = "PID|1||A^^^GH^MR||Alpha^Ann\r"
		pidB = "PID|1||B^^^GH^MR||" + secretName + "^Bo\r"
	)
	cases := []struct {
		name      string
		msg       string
		forbidden bool
	}{
		{"one granted PID", hdr + pidA, false},
		{"granted then other", hdr + pidA + pidB, true},
		{"other then granted", hdr + pidB + pidA, true},
		{"two messages in a batch, second other", "BHS|^~\\&|GH\r" + hdr + pidA + hdr + pidB + "BTS|2\r", true},
		{"two granted PIDs", hdr + pidA + pidA, false},
	}
	plan := Plan{Enforce: &Enforcement{Patients: []string{"A"}}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res, err := apply(e, hl7CT, []byte(tc.msg), plan)
			if err != nil {
				t.Fatal(err)
			}
			if res.Forbidden != tc.forbidden {
				t.Errorf("Forbidden = %v, want %v", res.Forbidden, tc.forbidden)
			}
			if tc.forbidden && res.Body != nil {
				t.Errorf("forbidden with a body of %d bytes", len(res.Body))
			}
		})
	}
}

// TestHL7HeadersShareDelimiters: the engine reads every segment with the
// delimiters of the first header. A later MSH, BHS or FHS declaring other
// ones makes a reader that honours each header see other fields (another
// PID-3, a telecom where no directive reached), so the body is refused.
func TestHL7HeadersShareDelimiters(t *testing.T) {
	e := testEngine(t)
	const hdr = "MSH|^~\\&|ADT|GH|EHR|GH|20240612083015||ADT^A08|M1|P|2.5\r"
	cases := []struct {
		name string
		msg  string
		want error // nil: accepted
	}{
		{"same delimiters", hdr + "PID|1||A\r" + hdr + "PID|1||A\r", nil},
		{"batch with same delimiters", "BHS|^~\\&|GH\r" + hdr + "PID|1||A\rBTS|1\r", nil},
		// Read with '|', PID-3 is A; read with '#', it is B.
		{"other field separator", hdr + "PID|1||A\rMSH#^~\\&#ADT#GH\rPID|1||A||#x#B\r", ErrMalformed},
		{"other component separator", hdr + "PID|1||A\rMSH|$~\\&|ADT|GH\rPID|1||B$$$GH$MR~A\r", ErrMalformed},
		{"other repetition separator", hdr + "PID|1||A\rMSH|^$\\&|ADT|GH\rPID|1||A\r", ErrMalformed},
		{"other escape character", hdr + "PID|1||A\rMSH|^~#&|ADT|GH\rPID|1||A\r", ErrMalformed},
		{"subcomponent separator added", "MSH|^~\\|ADT|GH\rPID|1||A\rMSH|^~\\&|ADT|GH\rPID|1||A\r", ErrMalformed},
		{"truncated later header", hdr + "PID|1||A\rMSH\rPID|1||A\r", ErrMalformed},
	}
	plan := Plan{Enforce: &Enforcement{Patients: []string{"A"}}, Redact: []Directive{{Path: "Patient.name", Action: ActionRemove}}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res, err := apply(e, hl7CT, []byte(tc.msg), plan)
			if tc.want == nil {
				if err != nil || res.Forbidden {
					t.Fatalf("err = %v, forbidden = %v", err, res.Forbidden)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v (forbidden = %v), want %v", err, res.Forbidden, tc.want)
			}
		})
	}
}
