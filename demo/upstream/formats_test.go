package upstream

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"io"
	"strings"
	"testing"

	"github.com/phigate/phigate/demo/fhirdata"
)

// xmlElements walks an XML document and returns the sequence of element
// names (local part) and the value attributes, proving it is well formed.
func xmlElements(t *testing.T, body []byte) ([]string, map[string][]string) {
	t.Helper()
	dec := xml.NewDecoder(bytes.NewReader(body))
	var names []string
	vals := map[string][]string{}
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("XML not well formed: %v", err)
		}
		if se, ok := tok.(xml.StartElement); ok {
			names = append(names, se.Name.Local)
			for _, a := range se.Attr {
				if a.Name.Local == "value" {
					vals[se.Name.Local] = append(vals[se.Name.Local], a.Value)
				}
			}
		}
	}
	return names, vals
}

func index(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}

func TestXML(t *testing.T) {
	s := newServer(t, Config{})
	p, _ := dataset().Get("Patient", "pat-0001")
	mrn := identifierValue(p, fhirdata.SystemMRN)
	tests := []struct {
		name      string
		target    string
		header    map[string]string
		wantXML   bool
		wantRoot  string
		wantValue map[string]string // element -> one of its values
		order     []string          // elements that must appear in this order
	}{
		{"_format=xml", "/fhir/Patient/pat-0001?_format=xml", nil, true, "Patient",
			map[string]string{"id": "pat-0001", "value": mrn, "birthDate": p["birthDate"].(string)},
			[]string{"id", "meta", "text", "div", "identifier", "name", "telecom", "gender", "birthDate", "address", "generalPractitioner", "managingOrganization"}},
		{"Accept fhir+xml", "/fhir/Observation/obs-pat-0001-01", map[string]string{"Accept": "application/fhir+xml"}, true, "Observation",
			map[string]string{"status": "final", "code": "8867-4"},
			[]string{"meta", "status", "category", "code", "subject", "encounter", "effectiveDateTime", "issued", "performer", "valueQuantity"}},
		{"bundle with nested resources", "/fhir/Observation?patient=pat-0001&_count=2&_format=application/fhir%2Bxml", nil, true, "Bundle",
			map[string]string{"type": "searchset", "mode": "match"},
			[]string{"type", "total", "link", "entry", "fullUrl", "resource", "Observation", "search"}},
		{"operation outcome", "/fhir/Patient/pat-9999?_format=xml", nil, true, "OperationOutcome",
			map[string]string{"severity": "error", "code": "not-found"}, []string{"issue", "severity", "code"}},
		{"accept json wins when first", "/fhir/Patient/pat-0001", map[string]string{"Accept": "application/fhir+json, application/fhir+xml"}, false, "Patient", nil, nil},
		{"browser accept gets json", "/fhir/Patient/pat-0001", map[string]string{"Accept": "text/html,*/*"}, false, "Patient", nil, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, s, "GET", tc.target, nil, tc.header)
			ct := r.header.Get("Content-Type")
			if !tc.wantXML {
				if !strings.HasPrefix(ct, "application/fhir+json") || r.json(t)["resourceType"] != tc.wantRoot {
					t.Fatalf("want JSON %s, got %q", tc.wantRoot, ct)
				}
				return
			}
			if !strings.HasPrefix(ct, "application/fhir+xml") {
				t.Fatalf("Content-Type = %q", ct)
			}
			if !bytes.Contains(r.body, []byte(`<`+tc.wantRoot+` xmlns="http://hl7.org/fhir">`)) {
				t.Fatalf("no %s root with FHIR namespace: %.200s", tc.wantRoot, r.body)
			}
			names, vals := xmlElements(t, r.body)
			for el, v := range tc.wantValue {
				if !strings.Contains(strings.Join(vals[el], "\x00"), v) {
					t.Errorf("<%s value=%q> missing; have %v", el, v, vals[el])
				}
			}
			last := -1
			for _, el := range tc.order {
				i := index(names[last+1:], el)
				if i < 0 {
					t.Errorf("element %s missing or out of order in %v", el, names)
					break
				}
				last += i + 1
			}
		})
	}
	// XML narrative is inline XHTML, not an escaped string.
	r := do(t, s, "GET", "/fhir/Patient/pat-0001?_format=xml", nil, nil)
	if !bytes.Contains(r.body, []byte(`<div xmlns="http://www.w3.org/1999/xhtml"><p>`)) {
		t.Errorf("narrative not inline XHTML: %.300s", r.body)
	}
	if r := do(t, s, "GET", "/fhir/Patient/pat-0001?_format=yaml", nil, nil); r.status != 406 {
		t.Errorf("_format=yaml: status %d", r.status)
	}
}

func TestGzip(t *testing.T) {
	s := newServer(t, Config{})
	tests := []struct {
		name     string
		target   string
		encoding string
		wantGzip bool
	}{
		{"gzip accepted", "/fhir/Patient/pat-0001", "gzip", true},
		{"gzip among others", "/fhir/Observation?patient=pat-0001", "br, gzip;q=0.8", true},
		{"gzip refused with q=0", "/fhir/Patient/pat-0001", "gzip;q=0", false},
		{"no header", "/fhir/Patient/pat-0001", "", false},
		{"xml gzipped", "/fhir/Patient/pat-0001?_format=xml", "gzip", true},
		{"error gzipped", "/fhir/Patient/pat-9999", "gzip", true},
		{"legacy gzipped", "/legacy/patients/pat-0001/summary", "gzip", true},
		{"hl7 gzipped", "/hl7/patients/pat-0001/adt", "gzip", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := map[string]string{}
			if tc.encoding != "" {
				h["Accept-Encoding"] = tc.encoding
			}
			r := do(t, s, "GET", tc.target, nil, h) // do() gunzips and fails on a bad stream
			if got := r.header.Get("Content-Encoding") == "gzip"; got != tc.wantGzip {
				t.Fatalf("gzip = %v, want %v", got, tc.wantGzip)
			}
			if !strings.Contains(strings.Join(r.header.Values("Vary"), ","), "Accept-Encoding") {
				t.Errorf("Vary = %q", r.header.Values("Vary"))
			}
			if len(r.body) == 0 {
				t.Error("empty body")
			}
		})
	}
}

func TestLegacyAndHL7(t *testing.T) {
	s := newServer(t, Config{})
	p, _ := dataset().Get("Patient", "pat-0001")
	given, family := names(p)
	mrn := identifierValue(p, fhirdata.SystemMRN)
	ssn := identifierValue(p, fhirdata.SystemSSN)
	t.Run("legacy summary", func(t *testing.T) {
		r := do(t, s, "GET", "/legacy/patients/pat-0001/summary", nil, nil)
		if r.status != 200 || r.header.Get("Content-Type") != "application/json" {
			t.Fatalf("status %d type %q", r.status, r.header.Get("Content-Type"))
		}
		var sum legacySummary
		if err := json.Unmarshal(r.body, &sum); err != nil {
			t.Fatal(err)
		}
		if sum.MRN != mrn || !strings.Contains(sum.Name, family) || sum.Phone == "" || sum.PatientID != "pat-0001" {
			t.Errorf("summary = %+v", sum)
		}
		if bytes.Contains(r.body, []byte("resourceType")) {
			t.Error("legacy route looks like FHIR")
		}
	})
	t.Run("hl7 adt", func(t *testing.T) {
		r := do(t, s, "GET", "/hl7/patients/pat-0001/adt", nil, nil)
		if r.status != 200 || r.header.Get("Content-Type") != ContentTypeHL7 {
			t.Fatalf("status %d type %q", r.status, r.header.Get("Content-Type"))
		}
		msg := string(r.body)
		if !strings.HasPrefix(msg, `MSH|^~\&|`) || strings.Contains(msg, "\n") {
			t.Fatalf("not ER7 with default delimiters and CR separators: %q", msg)
		}
		segs := strings.Split(strings.TrimSuffix(msg, "\r"), "\r")
		var pid []string
		for _, seg := range segs {
			f := strings.Split(seg, "|")
			switch f[0] {
			case "MSH":
				if f[8] != "ADT^A08^ADT_A01" || f[11] != "2.5.1" {
					t.Errorf("MSH-9 %q MSH-12 %q", f[8], f[11])
				}
			case "PID":
				pid = f
			}
		}
		if pid == nil || len(pid) < 20 {
			t.Fatalf("PID = %v", pid)
		}
		checks := []struct {
			field int
			want  string
		}{
			{3, mrn + "^^^HOSP"},
			{5, family + "^" + given[0]},
			{7, strings.ReplaceAll(p["birthDate"].(string), "-", "")},
			{11, "^MA^"},
			{13, "^PRN^PH"},
			{19, ssn},
		}
		for _, c := range checks {
			if !strings.Contains(pid[c.field], hl7Escape(c.want)) && !strings.Contains(pid[c.field], c.want) {
				t.Errorf("PID-%d = %q, want it to contain %q", c.field, pid[c.field], c.want)
			}
		}
	})
	tests := []struct {
		name   string
		method string
		target string
		want   int
	}{
		{"legacy unknown patient", "GET", "/legacy/patients/pat-9999/summary", 404},
		{"legacy unknown route", "GET", "/legacy/patients/pat-0001/notes", 404},
		{"legacy post", "POST", "/legacy/patients/pat-0001/summary", 405},
		{"hl7 unknown patient", "GET", "/hl7/patients/pat-9999/adt", 404},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if r := do(t, s, tc.method, tc.target, nil, nil); r.status != tc.want {
				t.Errorf("status %d, want %d", r.status, tc.want)
			}
		})
	}
}

func TestHL7Escape(t *testing.T) {
	tests := []struct{ in, want string }{
		{"O'Brien", "O'Brien"},
		{"A|B", `A\F\B`},
		{`a^b~c&d\e`, `a\S\b\R\c\T\d\E\e`},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			if got := hl7Escape(tc.in); got != tc.want {
				t.Errorf("hl7Escape(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestJSONLayout(t *testing.T) {
	s := newServer(t, Config{})
	tests := []struct {
		name   string
		target string
		prefix string
		order  []string
	}{
		{"resourceType first", "/fhir/Patient/pat-0001", `{"resourceType":"Patient","id":"pat-0001","meta":{"versionId":"1"`,
			[]string{`"text"`, `"identifier"`, `"name"`, `"birthDate"`, `"managingOrganization"`}},
		{"bundle", "/fhir/Observation?patient=pat-0001&_count=1", `{"resourceType":"Bundle"`,
			[]string{`"type":"searchset"`, `"total"`, `"link"`, `"entry"`, `"fullUrl"`, `"resource":{"resourceType":"Observation"`, `"search"`}},
		{"narrative unescaped", "/fhir/Patient/pat-0001", `{"resourceType"`, []string{`"div":"<div xmlns=\"http://www.w3.org/1999/xhtml\"><p>`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, s, "GET", tc.target, nil, nil)
			body := string(r.body)
			if !strings.HasPrefix(body, tc.prefix) {
				t.Fatalf("body starts %.120s, want %s", body, tc.prefix)
			}
			at := 0
			for _, o := range tc.order {
				i := strings.Index(body[at:], o)
				if i < 0 {
					t.Fatalf("%s missing or out of order", o)
				}
				at += i
			}
			r.json(t) // still valid JSON
		})
	}
	// The encoder and encoding/json agree on content for every resource type.
	for _, typ := range dataset().Types() {
		res := dataset().OfType(typ)[0]
		mine, err := encodeJSON(res)
		if err != nil {
			t.Fatal(err)
		}
		var a, b any
		std, _ := json.Marshal(res)
		if json.Unmarshal(mine, &a) != nil || json.Unmarshal(std, &b) != nil {
			t.Fatalf("%s: invalid JSON", typ)
		}
		ra, _ := json.Marshal(a)
		rb, _ := json.Marshal(b)
		if !bytes.Equal(ra, rb) {
			t.Errorf("%s: encodeJSON changes content", typ)
		}
	}
}
