package filters

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

const hl7CT = "x-application/hl7-v2+er7"

func pidField(t *testing.T, msg []byte, n int) string {
	t.Helper()
	for _, seg := range strings.Split(string(msg), "\r") {
		if strings.HasPrefix(seg, "PID|") {
			f := strings.Split(seg, "|")
			if n < len(f) {
				return f[n]
			}
			return ""
		}
	}
	t.Fatal("no PID segment")
	return ""
}

func TestHL7Directives(t *testing.T) {
	e := testEngine(t)
	msg := readTestdata(t, "adt_a08.hl7")
	cases := []struct {
		name    string
		d       []Directive
		field   int
		want    string
		removed []string
	}{
		{"remove telecom", []Directive{{Path: "Patient.telecom", Action: ActionRemove}}, 13, "", []string{"PID-13", "PID-14"}},
		{"remove ssn", []Directive{{Path: ssnPath, Action: ActionRemove}}, 19, "", []string{"PID-19"}},
		{"remove address line keeps city", []Directive{{Path: "Patient.address.line", Action: ActionRemove}}, 11, "^^Springfield^MO^65804-1234^USA^H^^Greene", []string{"PID-11"}},
		{"mask name", []Directive{{Path: "Patient.name", Action: ActionMask}}, 5, "***^****^*****^^^^*", []string{"PID-5", "PID-9"}},
		{"mask birth date keeps year", []Directive{{Path: "Patient.birthDate", Action: ActionMask}}, 7, "1984", []string{"PID-7"}},
		{"mask ssn hides every digit", []Directive{{Path: ssnPath, Action: ActionMask}}, 19, "***********", []string{"PID-19"}},
		{"tokenize ssn ff1", []Directive{{Path: ssnPath, Action: ActionTokenize, KeyID: "k1", Format: "ff1"}}, 19, "", []string{"PID-19"}},
		{"tokenize identifier value keeps authority", []Directive{{Path: "Patient.identifier.value", Action: ActionTokenize, KeyID: "k1"}}, 3, "", []string{"PID-18", "PID-19", "PID-20", "PID-3"}},
		{"allow gender only", []Directive{{Path: "Patient", Action: ActionAllow, Keep: []string{"gender"}}}, 8, "F", nil},
		{"text has no v2 field", []Directive{{Path: "*.text", Action: ActionRemove}}, 5, "Doe^Jane^Quinn^^^^L", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res, err := apply(e, hl7CT, msg, Plan{Redact: tc.d})
			if err != nil {
				t.Fatal(err)
			}
			got := pidField(t, res.Body, tc.field)
			switch tc.name {
			case "tokenize ssn ff1":
				if len(got) != 11 || got[3] != '-' || got == "123-45-6789" {
					t.Errorf("PID-19 = %q", got)
				}
			case "tokenize identifier value keeps authority":
				if !strings.HasPrefix(got, "tok:k1:") || !strings.Contains(got, "^^^ACME^MR~tok:k1:") || !strings.HasSuffix(got, "^^^STATE^DL") {
					t.Errorf("PID-3 = %q", got)
				}
			case "allow gender only":
				if pidField(t, res.Body, 5) != "" || pidField(t, res.Body, 1) != "1" || pidField(t, res.Body, 19) != "" {
					t.Errorf("allow kept too much: %q", res.Body)
				}
				if got != tc.want {
					t.Errorf("PID-8 = %q", got)
				}
				return
			default:
				if got != tc.want {
					t.Errorf("field = %q, want %q", got, tc.want)
				}
			}
			if tc.removed != nil && strings.Join(res.Removed, ",") != strings.Join(tc.removed, ",") {
				t.Errorf("Removed = %v, want %v", res.Removed, tc.removed)
			}
			if !bytes.Contains(res.Body, []byte("OBX|1|ST|8867-4^Heart rate^LN||72|")) {
				t.Error("other segments were altered")
			}
		})
	}
}

func TestHL7Delimiters(t *testing.T) {
	e := testEngine(t)
	cases := []struct {
		name, msg, want string
	}{
		{
			name: "custom delimiters and LF terminators",
			msg:  "MSH#$%@!#A#B\nPID#1##ID1$$$X##Doe$Jane##19800101\n",
			want: "MSH#$%@!#A#B\nPID#1##ID1$$$X##***$****##19800101\n",
		},
		{
			name: "mask character that is a delimiter is escaped",
			msg:  "MSH|^*\\&|A\rPID|1||X||Doe\r",
			want: "MSH|^*\\&|A\rPID|1||X||\\R\\\\R\\\\R\\\r",
		},
		{
			name: "escaped delimiters decode before masking and tokens re-escape",
			msg:  "MSH|^~\\&|A|B\r\nPID|1||ID1||O\\S\\Brien^Pat\r\n",
			want: "MSH|^~\\&|A|B\r\nPID|1||ID1||*******^***\r\n",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res, err := apply(e, "application/hl7-v2", []byte(tc.msg), Plan{Redact: []Directive{{Path: "Patient.name", Action: ActionMask}}})
			if err != nil {
				t.Fatal(err)
			}
			if string(res.Body) != tc.want {
				t.Errorf("got  %q\nwant %q", res.Body, tc.want)
			}
		})
	}
	d := er7{fs: '|', cs: '^', rs: '~', ec: '\\', ss: '&'}
	if got := string(d.escape("a|b^c~d\\e&f")); got != `a\F\b\S\c\R\d\E\e\T\f` {
		t.Errorf("escape = %s", got)
	}
	if got := d.unescape([]byte(`a\F\b\S\c\R\d\E\e\T\f\X41\`)); got != "a|b^c~d\\e&fA" {
		t.Errorf("unescape = %s", got)
	}
}

func TestHL7Enforcement(t *testing.T) {
	e := testEngine(t)
	msg := readTestdata(t, "adt_a08.hl7")
	cases := []struct {
		name      string
		enf       *Enforcement
		forbidden bool
	}{
		{"granted mrn", &Enforcement{Patients: []string{"MRN0042117"}}, false},
		{"granted second identifier", &Enforcement{Patients: []string{"987654"}}, false},
		{"other patient", &Enforcement{Patients: []string{"MRN1"}}, true},
		{"any patient", &Enforcement{AnyPatient: true}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res, err := apply(e, hl7CT, msg, Plan{Enforce: tc.enf})
			if err != nil {
				t.Fatal(err)
			}
			if res.Forbidden != tc.forbidden || (tc.forbidden && res.Body != nil) {
				t.Errorf("Forbidden = %v body=%d", res.Forbidden, len(res.Body))
			}
		})
	}
}

func TestHL7Errors(t *testing.T) {
	e := testEngine(t)
	msg := readTestdata(t, "adt_a08.hl7")
	rm := Plan{Redact: []Directive{{Path: "Patient.name", Action: ActionRemove}}}
	cases := []struct {
		name string
		body string
		plan Plan
		want error
	}{
		{"no header", "PID|1||X", rm, ErrMalformed},
		{"short", "MSH|^", rm, ErrMalformed},
		{"repeated delimiter", "MSH|^^\\&|A\rPID|1", rm, ErrMalformed},
		{"alphanumeric delimiter", "MSH|^~a&|A\rPID|1", rm, ErrMalformed},
		{"unmapped path", string(msg), Plan{Redact: []Directive{{Path: "Observation.component", Action: ActionRemove}}}, ErrBadDirective},
		{"allow on other type", string(msg), Plan{Redact: []Directive{{Path: "Observation", Action: ActionAllow}}}, ErrBadDirective},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := apply(e, hl7CT, []byte(tc.body), tc.plan); !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}
