package filters

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
)

// segField returns field n of the first segment named name.
func segField(msg []byte, name string, n int) string {
	for _, seg := range strings.Split(string(msg), "\r") {
		if strings.HasPrefix(seg, name+"|") {
			f := strings.Split(seg, "|")
			if name == "MSH" {
				n-- // MSH-1 is the separator itself
			}
			if n < len(f) {
				return f[n]
			}
			return ""
		}
	}
	return "<no " + name + ">"
}

// TestHL7ADTA01Directives: the directive vocabulary reaches every segment
// of an admission that describes the patient or the people around them:
// guarantor (GT1), insured (IN1, IN2) and next of kin (NK1), not PID
// alone.
func TestHL7ADTA01Directives(t *testing.T) {
	e := testEngine(t)
	msg := readTestdata(t, "adt_a01.hl7")
	cases := []struct {
		name    string
		d       []Directive
		absent  []string
		present []string
	}{
		{
			name:    "remove patient telecom",
			d:       []Directive{{Path: "Patient.telecom", Action: ActionRemove}},
			absent:  []string{"5550142", "marta.k@example.net", "5550177", "5550143", "5550190"},
			present: []string{"5550166", "5550111", "5550100", "Kowalski^Marta"},
		},
		{
			name:    "remove patient address",
			d:       []Directive{{Path: "Patient.address", Action: ActionRemove}},
			absent:  []string{"48 Birch Lane", "St. Louis"},
			present: []string{"PO Box 64560", "12 Clinic Road", "7 Pine Court"},
		},
		{
			name:    "remove address line keeps city",
			d:       []Directive{{Path: "Patient.address.line", Action: ActionRemove}},
			absent:  []string{"48 Birch Lane", "Unit 2"},
			present: []string{"^^Duluth^MN^55802^USA"},
		},
		{
			name:    "remove ssn",
			d:       []Directive{{Path: ssnPath, Action: ActionRemove}},
			absent:  []string{"455-21-9876", "512-44-8811"},
			present: []string{"MRN7712001", "399-12-4455"},
		},
		{
			name:    "remove identifiers",
			d:       []Directive{{Path: "Patient.identifier", Action: ActionRemove}},
			absent:  []string{"MRN7712001", "K1234567", "ACCT9020031", "455-21-9876", "G778812", "512-44-8811", "POL88120034", "XZK900112233", "E51120"},
			present: []string{"BCBSMN01", "GRP4410"},
		},
		{
			name:    "mask patient name",
			d:       []Directive{{Path: "Patient.name", Action: ActionMask}},
			absent:  []string{"Kowalski^Marta", "Kowalski^Piotr"},
			present: []string{"Kowalski^Adam", "Nguyen^Tran"},
		},
		{
			name:    "remove contacts",
			d:       []Directive{{Path: "Patient.contact", Action: ActionRemove}},
			absent:  []string{"Kowalski^Adam", "7 Pine Court", "5550166", "399-12-4455", "Arrowhead Freight", "900 Dock St", "5550195"},
			present: []string{"Kowalski^Marta", "5550142"},
		},
		{
			name:    "remove related person telecom",
			d:       []Directive{{Path: "RelatedPerson.telecom", Action: ActionRemove}},
			absent:  []string{"5550166", "5550167", "5550143", "5550190"},
			present: []string{"5550142"},
		},
		{
			name:    "remove general practitioner",
			d:       []Directive{{Path: "Patient.generalPractitioner", Action: ActionRemove}},
			absent:  []string{"PD1|||Lakeside Clinic^^LC01|PCP9"},
			present: []string{"Lakeside Clinic"},
		},
		{
			name:    "remove encounter identifier",
			d:       []Directive{{Path: "Encounter.identifier", Action: ActionRemove}},
			absent:  []string{"V4410023"},
			present: []string{"ATT1^Osei"},
		},
		{
			name:    "remove notes",
			d:       []Directive{{Path: "*.note", Action: ActionRemove}},
			absent:  []string{"Prefers to be called"},
			present: []string{"NTE|1|P"},
		},
		{
			name:    "front desk allow-list",
			d:       []Directive{{Path: "Patient", Action: ActionAllow, Keep: []string{"name", "gender"}}},
			absent:  []string{"48 Birch Lane", "5550142", "19620314", "455-21-9876", "Kowalski^Piotr", "Kowalski^Adam", "5550143", "512-44-8811", "POL88120034", "Arrowhead", "Zielinska"},
			present: []string{"Kowalski^Marta", "|F|", "Essential hypertension", "Penicillin", "8480-6", "Blue Cross MN"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res, err := apply(e, hl7CT, msg, Plan{Redact: tc.d})
			if err != nil {
				t.Fatal(err)
			}
			for _, v := range tc.absent {
				if bytes.Contains(res.Body, []byte(v)) {
					t.Errorf("%q survived:\n%s", v, bytes.ReplaceAll(res.Body, []byte("\r"), []byte("\n")))
				}
			}
			for _, v := range tc.present {
				if !bytes.Contains(res.Body, []byte(v)) {
					t.Errorf("%q lost:\n%s", v, bytes.ReplaceAll(res.Body, []byte("\r"), []byte("\n")))
				}
			}
			if n := bytes.Count(res.Body, []byte("\r")); n != bytes.Count(msg, []byte("\r")) {
				t.Errorf("segments = %d", n)
			}
		})
	}
}

// TestHL7UnknownSegments: a segment without a mapping could carry anything,
// so a message holding one is refused rather than passed unredacted, and
// the error names its position, never its content.
func TestHL7UnknownSegments(t *testing.T) {
	e := testEngine(t)
	msg := readTestdata(t, "adt_a01.hl7")
	rm := Plan{Redact: []Directive{{Path: "Patient.telecom", Action: ActionRemove}}}
	cases := []struct {
		name string
		add  string
		plan Plan
	}{
		{"Z-segment", "ZPI|1|Kowalski^Marta|5550142", rm},
		{"Z-segment under enforcement only", "ZPI|1|Kowalski^Marta|5550142", Plan{Enforce: &Enforcement{AnyPatient: true}}},
		{"segment without a mapping", "ACC|20240601|AUTO|Kowalski driveway", rm},
		{"lower-case name", "pid|1||X", rm},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			body := append(append([]byte{}, msg...), tc.add+"\r"...)
			res, err := apply(e, hl7CT, body, tc.plan)
			if !errors.Is(err, ErrUnsupportedSegment) {
				t.Fatalf("err = %v, want %v", err, ErrUnsupportedSegment)
			}
			if res.Body != nil {
				t.Error("refused message carries a body")
			}
			for _, v := range []string{"Kowalski", "5550142", "ZPI", "ACC", "pid"} {
				if strings.Contains(err.Error(), v) {
					t.Errorf("error %q names %q", err, v)
				}
			}
		})
	}
}

func TestHL7ResourceTypes(t *testing.T) {
	e := testEngine(t)
	msg := readTestdata(t, "adt_a01.hl7")
	cases := []struct {
		name      string
		types     []string
		forbidden bool
	}{
		{"patient permitted", []string{"Patient", "Encounter"}, false},
		{"any type", []string{"*"}, false},
		{"no list", nil, false},
		{"patient not permitted", []string{"Organization"}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res, err := apply(e, hl7CT, msg, Plan{Enforce: &Enforcement{AnyPatient: true, ResourceTypes: tc.types}})
			if err != nil {
				t.Fatal(err)
			}
			if res.Forbidden != tc.forbidden || (tc.forbidden && res.Body != nil) {
				t.Errorf("Forbidden = %v", res.Forbidden)
			}
		})
	}
}

func TestSafeHarborADTA01(t *testing.T) {
	e, err := NewEngine(Config{Now: func() time.Time { return time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC) }})
	if err != nil {
		t.Fatal(err)
	}
	res, err := apply(e, hl7CT, readTestdata(t, "adt_a01.hl7"), Plan{Redact: []Directive{{Action: ActionDeidentify, Profile: ProfileSafeHarbor}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"Kowalski", "Marta", "Piotr", "Adam", "Zielinska", "Birch Lane", "55802", "54880", "St. Louis", "Pine Court", "Superior",
		"5550142", "marta.k", "5550177", "5550143", "5550190", "5550166", "5550167", "5550195",
		"MRN7712001", "K1234567", "ACCT9020031", "455-21-9876", "512-44-8811", "399-12-4455", "G778812", "POL88120034", "XZK900112233", "E51120",
		"MRN7700999", "V4410023", "Arrowhead", "900 Dock", "Prefers to be called", "drives her",
		"20240612083015", "19620314", "19600101", "19900521", "20240612081500", "20190402", "20240612082000", "20240101"} {
		if bytes.Contains(res.Body, []byte(v)) {
			t.Errorf("identifier %q survived", v)
		}
	}
	checks := []struct {
		seg   string
		field int
		want  string
	}{
		{"MSH", 7, "2024"},
		{"PID", 7, "1962"},
		{"PID", 11, "^^^MN^558^USA"},
		{"GT1", 8, "1960"},
		{"IN1", 18, "1960"},
		{"IN1", 4, "Blue Cross MN"},
		{"DG1", 3, "I10^Essential hypertension^I10C"},
		{"DG1", 5, "2024"},
		{"AL1", 6, "2019"},
		{"OBX", 2, "TX"},
		{"OBX", 5, ""},
		{"NTE", 3, ""},
	}
	for _, c := range checks {
		if got := segField(res.Body, c.seg, c.field); got != c.want {
			t.Errorf("%s-%d = %q, want %q", c.seg, c.field, got, c.want)
		}
	}
	// A provider's office is not the patient's geography (as Practitioner
	// addresses stay in FHIR).
	if !bytes.Contains(res.Body, []byte("12 Clinic Road^^Duluth")) {
		t.Error("provider address lost")
	}
	if !bytes.Contains(res.Body, []byte("OBX|2|NM|8480-6^Systolic blood pressure^LN||148|mm[Hg]|||||F|||2024\r")) {
		t.Error("clinical content lost")
	}
}

// TestHL7WithoutPID: under a grant limited to patients, a message must
// show whose it is; one without a PID (a bare GT1 or NK1) cannot.
func TestHL7WithoutPID(t *testing.T) {
	e := testEngine(t)
	msg := []byte("MSH|^~\\&|ADT|GH|EHR|GH|20240612083015||ADT^A01|M1|P|2.5\rGT1|1|G778812|Kowalski^Piotr\r")
	cases := []struct {
		name      string
		enf       *Enforcement
		forbidden bool
	}{
		{"patient grant", &Enforcement{Patients: []string{"MRN7712001"}}, true},
		{"any patient", &Enforcement{AnyPatient: true}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res, err := apply(e, hl7CT, msg, Plan{Enforce: tc.enf})
			if err != nil {
				t.Fatal(err)
			}
			if res.Forbidden != tc.forbidden {
				t.Errorf("Forbidden = %v", res.Forbidden)
			}
		})
	}
}
