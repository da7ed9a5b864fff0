package ingest

import (
	"errors"
	"strings"
	"testing"
	"time"
)

const a01 = "MSH|^~\\&|ADT|HOSP|PHIGATE|HOSP|20261204080000+0000||ADT^A01^ADT_A01|MSG-1|P|2.5\r" +
	"EVN|A01|20261204080000+0000\r" +
	"PID|1||pat-0100^^^HOSP^MR~999-99^^^SSA^SS||Doe^Jane\r" +
	"PV1|1|I|W1^101^1||||prac-001^House^Greg~prac-002^Wilson|prac-003^Cuddy|||||||||prac-004^Foreman\r"

func TestParse(t *testing.T) {
	m, err := Parse([]byte(a01))
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Segments) != 4 {
		t.Fatalf("%d segments, want 4", len(m.Segments))
	}
	msh := m.Segments[0]
	for n, want := range map[int]string{1: "|", 2: "^~\\&", 3: "ADT", 9: "ADT^A01^ADT_A01", 10: "MSG-1", 12: "2.5"} {
		if got := msh.Field(n); got != want {
			t.Errorf("MSH-%d = %q, want %q", n, got, want)
		}
	}
	pid, _ := m.Segment("PID")
	reps := m.Repetitions(pid.Field(3))
	if len(reps) != 2 || m.Component(reps[1], 4) != "SSA" || m.Component(reps[0], 1) != "pat-0100" {
		t.Errorf("PID-3 repetitions %q", reps)
	}
	pv1, _ := m.Segment("PV1")
	if v, _ := m.Value(pv1, 7, 2); v != "House" {
		t.Errorf("PV1-7.2 = %q", v)
	}
	if v, _ := m.Value(pv1, 99, 1); v != "" {
		t.Errorf("a field past the end is %q, want empty", v)
	}
	// Other delimiters, CRLF between segments, a trailing CR.
	alt := strings.NewReplacer("|", "#", "^", "$", "~", "*", "\\", "!", "&", "%").Replace(a01)
	alt = strings.ReplaceAll(alt, "\r", "\r\n")
	m2, err := Parse([]byte(alt))
	if err != nil {
		t.Fatal(err)
	}
	pv1, _ = m2.Segment("PV1")
	if v, _ := m2.Value(pv1, 7, 2); v != "House" || m2.Enc.Escape != '!' {
		t.Errorf("other delimiters: PV1-7.2 = %q, escape %q", v, m2.Enc.Escape)
	}
}

func TestParseRefuses(t *testing.T) {
	for name, in := range map[string]string{
		"empty":               "",
		"not MSH first":       "PID|1\rMSH|^~\\&|A\r",
		"short encoding":      "MSH|^~|A|B\r",
		"alnum delimiter":     "MSH|^~a&|A|B\r",
		"repeated delimiter":  "MSH|^^\\&|A|B\r",
		"second MSH":          "MSH|^~\\&|A\rMSH|^~\\&|B\r",
		"lower-case segment":  "MSH|^~\\&|A\rpid|1\r",
		"segment id too long": "MSH|^~\\&|A\rPIDX|1\r",
		"lone line feed":      "MSH|^~\\&|A\nPID|1\r",
		"NUL":                 "MSH|^~\\&|A\rPID|1\x00\r",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Parse([]byte(in))
			var pe *ParseError
			if !errors.As(err, &pe) || pe.Code == "" {
				t.Fatalf("Parse: %v, want a coded ParseError", err)
			}
		})
	}
}

func TestEscapes(t *testing.T) {
	m := &Message{Enc: DefaultEncoding}
	for in, want := range map[string]string{
		`a\F\b`:          "a|b",
		`\S\\T\\R\\E\`:   `^&~\`,
		`\X0D0A\x`:       "\r\nx",
		`\H\bold\N\`:     "bold",
		`plain`:          "plain",
		`\X41\\X4243\`:   "ABC",
		`caf\XC3A9\`:     "café",
		`a\E\F\E\b`:      `a\F\b`,
		`\T\`:            "&",
		`two \F\ \F\ ok`: "two | | ok",
	} {
		got, err := m.Unescape(in)
		if err != nil || got != want {
			t.Errorf("Unescape(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{`\F`, `\Z99\`, `\X4\`, `\XZZ\`, `\\`, `\.br\`} {
		if _, err := m.Unescape(in); err == nil {
			t.Errorf("Unescape(%q) accepted", in)
		}
	}
	for _, s := range []string{"a|b^c~d\\e&f", "line\rbreak\n", ""} {
		got, err := m.Unescape(DefaultEncoding.Encode(s))
		if err != nil || got != s {
			t.Errorf("round trip of %q: %q, %v", s, got, err)
		}
	}
}

func TestParseTS(t *testing.T) {
	ny, _ := time.LoadLocation("America/New_York")
	for in, want := range map[string]time.Time{
		"20261204":                 time.Date(2026, 12, 4, 0, 0, 0, 0, ny),
		"202612040830":             time.Date(2026, 12, 4, 8, 30, 0, 0, ny),
		"20261204083015":           time.Date(2026, 12, 4, 8, 30, 15, 0, ny),
		"20261204083015.25":        time.Date(2026, 12, 4, 8, 30, 15, 250000000, ny),
		"20261204083015+0100":      time.Date(2026, 12, 4, 7, 30, 15, 0, time.UTC),
		"20261204083015.1234-0500": time.Date(2026, 12, 4, 13, 30, 15, 123400000, time.UTC),
	} {
		got, err := ParseTS(in, ny)
		if err != nil || !got.Equal(want) {
			t.Errorf("ParseTS(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "2026", "2026120", "20261304", "20261204+01", "2026120408301x", "20261204.5", "20261204083015.12345"} {
		if _, err := ParseTS(in, ny); err == nil {
			t.Errorf("ParseTS(%q) accepted", in)
		}
	}
}

// FuzzParseHL7: any input is parsed or refused with a coded error, never
// a panic; a parsed message's every value unescapes or is refused, and
// the acknowledgement built for it parses and echoes its control id.
func FuzzParseHL7(f *testing.F) {
	f.Add([]byte(a01))
	f.Add([]byte("MSH|^~\\&|A|B|C|D|20260101||ADT^A03|X\\F\\1|P|2.5\rEVN||20260101\rPID|||p\rPV1|||||||\"\"\r"))
	f.Add([]byte("MSH#$*!%#A\r"))
	f.Add([]byte("MSH|^~\\&#|A\r\nPID|\\X41\\\r"))
	a := &ADT{cfg: MLLPConfig{}, now: time.Now}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Parse(b)
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) || pe.Code == "" {
				t.Fatalf("uncoded error %v", err)
			}
			return
		}
		for _, s := range m.Segments {
			for i := range s.Fields {
				for _, rep := range m.Repetitions(s.Field(i)) {
					for c := 1; c <= 3; c++ {
						_, _ = m.Unescape(m.Subcomponent(m.Component(rep, c), 1))
					}
				}
			}
		}
		msh := m.Segments[0]
		r := &result{enc: m.Enc, msh: &msh, control: msh.Field(10), ack: "AR", errCode: codeDataType}
		r.ev.Reason = "fuzz"
		ack, err := Parse(a.ack(r))
		if err != nil {
			t.Fatalf("the acknowledgement does not parse: %v", err)
		}
		msa, ok := ack.Segment("MSA")
		if !ok || msa.Field(1) != "AR" || msa.Field(2) != nth(msh.Field(10), m.Enc.Field, 1) {
			t.Fatalf("MSA %q does not echo MSH-10 %q", msa.Fields, msh.Field(10))
		}
	})
}
