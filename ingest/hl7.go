package ingest

import (
	"bytes"
	"fmt"
	"strings"
)

// HL7 error codes (HL7 table 0357) the acknowledgements use.
const (
	codeSegmentSequence = "100"
	codeRequiredMissing = "101"
	codeDataType        = "102"
	codeUnsupportedType = "200"
	codeUnsupportedEvt  = "201"
	codeUnsupportedProc = "202"
	codeInternal        = "207"
)

// ParseError is why a message was refused. It names a position (segment,
// field) and never a value, so it can go to the sender, the log and the
// audit trail alike.
type ParseError struct {
	Code    string // HL7 table 0357
	Segment string
	Field   int
	Reason  string
}

func (e *ParseError) Error() string {
	if e.Segment == "" {
		return e.Reason
	}
	if e.Field == 0 {
		return e.Segment + ": " + e.Reason
	}
	return fmt.Sprintf("%s-%d: %s", e.Segment, e.Field, e.Reason)
}

func perr(code, seg string, field int, format string, args ...any) *ParseError {
	return &ParseError{Code: code, Segment: seg, Field: field, Reason: fmt.Sprintf(format, args...)}
}

// Encoding holds a message's delimiters, from MSH-1 and MSH-2.
type Encoding struct {
	Field, Component, Repetition, Escape, Subcomponent byte
}

// DefaultEncoding is |^~\& , which acknowledgements of a message whose
// own delimiters could not be read use.
var DefaultEncoding = Encoding{'|', '^', '~', '\\', '&'}

func (e Encoding) msh2() string {
	return string([]byte{e.Component, e.Repetition, e.Escape, e.Subcomponent})
}

// Message is a parsed HL7 v2 message: its delimiters and its segments,
// each a list of raw (still escaped) fields.
type Message struct {
	Enc      Encoding
	Segments []Segment
}

// Segment is one segment. Fields[0] is its name; for MSH, Fields[1] is
// the field separator and Fields[2] the encoding characters, so that
// Field(n) is HL7's MSH-n.
type Segment struct {
	Fields []string
}

// Name is the segment's id (MSH, PID, ...).
func (s Segment) Name() string { return s.Fields[0] }

// Field returns field n, raw; "" when the segment has fewer.
func (s Segment) Field(n int) string {
	if n <= 0 || n >= len(s.Fields) {
		return ""
	}
	return s.Fields[n]
}

// maxSegments bounds how many segments one message may hold.
const maxSegments = 5000

// Parse reads one HL7 v2 message: segments separated by CR (a LF after a
// CR is tolerated), the first one MSH, with the delimiters it declares.
// It checks structure only; what a message must hold is its reader's.
func Parse(b []byte) (*Message, error) {
	if len(b) < 8 || string(b[:3]) != "MSH" {
		return nil, perr(codeSegmentSequence, "", 0, "the message does not begin with an MSH segment")
	}
	enc := Encoding{Field: b[3]}
	end := bytes.IndexAny(b, "\r\n")
	if end < 0 {
		end = len(b)
	}
	i := 4
	for i < end && b[i] != enc.Field {
		i++
	}
	chars := b[4:i]
	if len(chars) != 4 && len(chars) != 5 { // v2.7 adds a truncation character
		return nil, perr(codeDataType, "MSH", 2, "the encoding characters are not 4 (or 5) characters")
	}
	enc.Component, enc.Repetition, enc.Escape, enc.Subcomponent = chars[0], chars[1], chars[2], chars[3]
	all := append([]byte{enc.Field}, chars...)
	for j, c := range all {
		if c < 0x21 || c > 0x7e || isAlnum(c) {
			return nil, perr(codeDataType, "MSH", 1+min(j, 1), "a delimiter is not a printable punctuation character")
		}
		if bytes.IndexByte(all[j+1:], c) >= 0 {
			return nil, perr(codeDataType, "MSH", 2, "the delimiters are not distinct")
		}
	}
	m := &Message{Enc: enc}
	for len(b) > 0 {
		line := b
		if k := bytes.IndexByte(b, '\r'); k >= 0 {
			line, b = b[:k], b[k+1:]
			if len(b) > 0 && b[0] == '\n' {
				b = b[1:]
			}
		} else {
			b = nil
		}
		if len(line) == 0 {
			continue
		}
		if len(m.Segments) == maxSegments {
			return nil, perr(codeSegmentSequence, "", 0, "more than %d segments", maxSegments)
		}
		seg, err := parseSegment(line, enc, len(m.Segments) == 0)
		if err != nil {
			return nil, err
		}
		m.Segments = append(m.Segments, seg)
	}
	return m, nil
}

func isAlnum(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z'
}

func parseSegment(line []byte, enc Encoding, first bool) (Segment, error) {
	if len(line) < 3 {
		return Segment{}, perr(codeSegmentSequence, "", 0, "a segment id is shorter than 3 characters")
	}
	name := string(line[:3])
	if !validName(name) {
		return Segment{}, perr(codeSegmentSequence, "", 0, "a segment id is not 3 upper-case letters or digits")
	}
	if len(line) > 3 && line[3] != enc.Field {
		return Segment{}, perr(codeSegmentSequence, name, 0, "the segment id is not followed by the field separator")
	}
	if first != (name == "MSH") {
		if first {
			return Segment{}, perr(codeSegmentSequence, "", 0, "the message does not begin with an MSH segment")
		}
		return Segment{}, perr(codeSegmentSequence, "MSH", 0, "a second MSH segment (batches are not accepted)")
	}
	for _, c := range line {
		if c == '\n' || c == 0 {
			return Segment{}, perr(codeDataType, name, 0, "a line feed or NUL inside a segment")
		}
	}
	s := string(line)
	if name != "MSH" {
		return Segment{Fields: strings.Split(s, string(enc.Field))}, nil
	}
	// MSH-1 is the separator itself and MSH-2 is not split further.
	rest := strings.Split(s[4:], string(enc.Field))
	fields := make([]string, 0, len(rest)+2)
	fields = append(fields, "MSH", string(enc.Field))
	return Segment{Fields: append(fields, rest...)}, nil
}

func validName(n string) bool {
	if len(n) != 3 || n[0] < 'A' || n[0] > 'Z' {
		return false
	}
	for i := 1; i < 3; i++ {
		if c := n[i]; !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// Segment returns the first segment named name.
func (m *Message) Segment(name string) (Segment, bool) {
	for _, s := range m.Segments {
		if s.Name() == name {
			return s, true
		}
	}
	return Segment{}, false
}

// Repetitions splits a raw field into its repetitions; none for "".
func (m *Message) Repetitions(field string) []string {
	if field == "" {
		return nil
	}
	return strings.Split(field, string(m.Enc.Repetition))
}

// Component returns component n (1-based) of a raw repetition, raw.
func (m *Message) Component(rep string, n int) string { return nth(rep, m.Enc.Component, n) }

// Subcomponent returns subcomponent n (1-based) of a raw component, raw.
func (m *Message) Subcomponent(comp string, n int) string { return nth(comp, m.Enc.Subcomponent, n) }

func nth(s string, sep byte, n int) string {
	for i := 1; i < n; i++ {
		k := strings.IndexByte(s, sep)
		if k < 0 {
			return ""
		}
		s = s[k+1:]
	}
	if k := strings.IndexByte(s, sep); k >= 0 {
		return s[:k]
	}
	return s
}

// Value returns field f, repetition 1, component c, subcomponent 1 of
// segment s, unescaped.
func (m *Message) Value(s Segment, f, c int) (string, error) {
	reps := m.Repetitions(s.Field(f))
	if len(reps) == 0 {
		return "", nil
	}
	v, err := m.Unescape(m.Subcomponent(m.Component(reps[0], c), 1))
	if err != nil {
		return "", perr(codeDataType, s.Name(), f, "%s", err.Error())
	}
	return v, nil
}

// Unescape decodes the escape sequences of a raw value: \F\ \S\ \T\ \R\
// \E\ stand for the delimiters, \Xhh…\ for bytes given in hexadecimal,
// and the formatting sequences \H\ and \N\ (highlighting) are dropped.
// Anything else, or an escape left open, is an error.
func (m *Message) Unescape(raw string) (string, error) {
	esc := m.Enc.Escape
	if strings.IndexByte(raw, esc) < 0 {
		return raw, nil
	}
	var b strings.Builder
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c != esc {
			b.WriteByte(c)
			continue
		}
		j := strings.IndexByte(raw[i+1:], esc)
		if j < 0 {
			return "", fmt.Errorf("an escape sequence is not closed")
		}
		seq := raw[i+1 : i+1+j]
		i += j + 1
		switch {
		case seq == "F":
			b.WriteByte(m.Enc.Field)
		case seq == "S":
			b.WriteByte(m.Enc.Component)
		case seq == "T":
			b.WriteByte(m.Enc.Subcomponent)
		case seq == "R":
			b.WriteByte(m.Enc.Repetition)
		case seq == "E":
			b.WriteByte(m.Enc.Escape)
		case seq == "H" || seq == "N":
		case len(seq) > 1 && seq[0] == 'X' && len(seq)%2 == 1:
			for k := 1; k < len(seq); k += 2 {
				hi, ok1 := unhex(seq[k])
				lo, ok2 := unhex(seq[k+1])
				if !ok1 || !ok2 {
					return "", fmt.Errorf("a \\X\\ escape holds a character that is not hexadecimal")
				}
				b.WriteByte(hi<<4 | lo)
			}
		default:
			return "", fmt.Errorf("an escape sequence is not one of \\F\\ \\S\\ \\T\\ \\R\\ \\E\\ \\Xhh\\ \\H\\ \\N\\")
		}
	}
	return b.String(), nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// Encode escapes s for a field of a message with these delimiters: each
// delimiter becomes its escape sequence, and a CR or LF (which would end
// the segment) becomes \X0D\ or \X0A\.
func (e Encoding) Encode(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case e.Field:
			b.WriteString(string(e.Escape) + "F" + string(e.Escape))
		case e.Component:
			b.WriteString(string(e.Escape) + "S" + string(e.Escape))
		case e.Subcomponent:
			b.WriteString(string(e.Escape) + "T" + string(e.Escape))
		case e.Repetition:
			b.WriteString(string(e.Escape) + "R" + string(e.Escape))
		case e.Escape:
			b.WriteString(string(e.Escape) + "E" + string(e.Escape))
		case '\r', '\n', 0:
			fmt.Fprintf(&b, "%cX%02X%c", e.Escape, c, e.Escape)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}
