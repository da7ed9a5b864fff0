package filters

import (
	"bytes"
	"strconv"
	"strings"

	"github.com/phigate/phigate/plan"
)

// HL7 v2 ER7 messages are filtered field by field: the directive
// vocabulary names FHIR elements, and v2Map (hl7map.go) says which fields
// and components of which segments carry them. A directive for an element
// with no v2 counterpart in the table is an error, and so is a segment the
// table does not know: the engine cannot show that the element is absent
// from every segment, so it fails closed rather than pass a message it did
// not redact.
//
// Header segments (MSH, BHS, FHS) are copied verbatim except for safe
// harbor's timestamp; every other segment is rewritten only where a
// directive reaches it. Segment terminators are preserved (CR, LF or
// CRLF), so the output is the input with field contents replaced.

type er7 struct {
	fs, cs, rs, ec, ss byte
}

type segment struct {
	fields [][]byte
	term   []byte
	dirty  bool
}

// name is the segment's three-character name; a header keeps its whole
// line in fields[0].
func (s *segment) name() string {
	if len(s.fields) == 1 && len(s.fields[0]) > 3 && isHeader(s.fields[0]) {
		return string(s.fields[0][:3])
	}
	return string(s.fields[0])
}

func (s *segment) field(i int) []byte {
	if i < len(s.fields) {
		return s.fields[i]
	}
	return nil
}

func (s *segment) setField(i int, v []byte) {
	for len(s.fields) <= i {
		if len(v) == 0 {
			return
		}
		s.fields = append(s.fields, nil)
	}
	if !bytes.Equal(s.fields[i], v) {
		s.fields[i] = v
		s.dirty = true
	}
}

type message struct {
	d    er7
	segs []*segment
	raw  [][]byte // original segment text, for verbatim output
}

func parseER7(body []byte) (*message, error) {
	if len(body) < 8 {
		return nil, errorf(CodeMalformed, "hl7: message too short")
	}
	hdr := string(body[:3])
	if hdr != "MSH" && hdr != "FHS" && hdr != "BHS" {
		return nil, errorf(CodeMalformed, "hl7: no MSH header")
	}
	d := er7{fs: body[3]}
	enc := body[4:]
	if i := bytes.IndexByte(enc, d.fs); i >= 0 {
		enc = enc[:i]
	} else {
		return nil, errorf(CodeMalformed, "hl7: header has no encoding characters")
	}
	if len(enc) < 3 || len(enc) > 5 {
		return nil, errorf(CodeMalformed, "hl7: MSH-2 must hold 3 to 5 encoding characters")
	}
	d.cs, d.rs, d.ec = enc[0], enc[1], enc[2]
	if len(enc) >= 4 {
		d.ss = enc[3]
	}
	seen := map[byte]bool{}
	for _, c := range append([]byte{d.fs}, enc...) {
		if seen[c] || c == '\r' || c == '\n' || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') {
			return nil, errorf(CodeMalformed, "hl7: invalid or repeated delimiter")
		}
		seen[c] = true
	}
	// MSH-1 and MSH-2 with the separator that follows them. A batch
	// (FHS, BHS) holds one MSH per message and each declares delimiters
	// again; every segment here is read with the first header's, so a
	// later header declaring others would make a reader that honours it
	// see other fields (another PID-3, a telecom no directive reached).
	delims := body[3 : 4+len(enc)+1]
	m := &message{d: d}
	for i := 0; i < len(body); {
		j := i
		for j < len(body) && body[j] != '\r' && body[j] != '\n' {
			j++
		}
		k := j
		if k < len(body) && body[k] == '\r' {
			k++
		}
		if k < len(body) && body[k] == '\n' {
			k++
		}
		line := body[i:j]
		if len(line) > 0 {
			if len(line) < 3 {
				return nil, errorf(CodeMalformed, "hl7: segment %d has no name", len(m.segs)+1)
			}
			var fields [][]byte
			if isHeader(line) {
				if len(line) < 3+len(delims) || !bytes.Equal(line[3:3+len(delims)], delims) {
					return nil, errorf(CodeMalformed, "hl7: segment %d: header declares other delimiters than the first", len(m.segs)+1)
				}
				// MSH-1 is the separator itself; keep the header whole.
				fields = [][]byte{line}
			} else {
				fields = bytes.Split(line, []byte{d.fs})
			}
			m.segs = append(m.segs, &segment{fields: fields, term: body[j:k]})
			m.raw = append(m.raw, line)
		} else if j < len(body) || k > j {
			// blank line between segments: keep its terminator
			if len(m.segs) > 0 {
				last := m.segs[len(m.segs)-1]
				last.term = body[i-len(last.term) : k]
			}
		}
		i = k
	}
	return m, nil
}

func isHeader(line []byte) bool {
	n := string(line[:3])
	return n == "MSH" || n == "FHS" || n == "BHS"
}

func (m *message) bytes() []byte {
	var out []byte
	for i, s := range m.segs {
		if s.dirty {
			out = append(out, bytes.Join(s.fields, []byte{m.d.fs})...)
		} else {
			out = append(out, m.raw[i]...)
		}
		out = append(out, s.term...)
	}
	return out
}

// unescape decodes the v2 escape sequences of one leaf value.
func (d er7) unescape(v []byte) string {
	if bytes.IndexByte(v, d.ec) < 0 {
		return string(v)
	}
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		if v[i] != d.ec {
			b.WriteByte(v[i])
			continue
		}
		j := bytes.IndexByte(v[i+1:], d.ec)
		if j < 0 {
			b.Write(v[i:])
			break
		}
		seq := string(v[i+1 : i+1+j])
		switch {
		case seq == "F":
			b.WriteByte(d.fs)
		case seq == "S":
			b.WriteByte(d.cs)
		case seq == "R":
			b.WriteByte(d.rs)
		case seq == "E":
			b.WriteByte(d.ec)
		case seq == "T":
			b.WriteByte(d.ss)
		case seq == ".br":
			b.WriteByte('\n')
		case len(seq) > 1 && seq[0] == 'X':
			for k := 1; k+1 < len(seq); k += 2 {
				if x, err := strconv.ParseUint(seq[k:k+2], 16, 8); err == nil {
					b.WriteByte(byte(x))
				}
			}
		default:
			// formatting or character-set escapes: keep as text
			b.WriteByte(d.ec)
			b.WriteString(seq)
			b.WriteByte(d.ec)
		}
		i += j + 1
	}
	return b.String()
}

// escape encodes s so that none of the message's delimiters appear raw.
func (d er7) escape(s string) []byte {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == d.fs:
			out = append(out, d.ec, 'F', d.ec)
		case c == d.cs:
			out = append(out, d.ec, 'S', d.ec)
		case c == d.rs:
			out = append(out, d.ec, 'R', d.ec)
		case c == d.ec:
			out = append(out, d.ec, 'E', d.ec)
		case d.ss != 0 && c == d.ss:
			out = append(out, d.ec, 'T', d.ec)
		case c == '\r' || c == '\n':
			out = append(out, d.ec, '.', 'b', 'r', d.ec)
		default:
			out = append(out, c)
		}
	}
	return out
}

// mapLeaves rewrites every non-empty leaf (subcomponent) of the selected
// components of a field. comps nil selects all.
func (d er7) mapLeaves(field []byte, comps []int, fn func(string) string) []byte {
	if len(field) == 0 {
		return field
	}
	reps := bytes.Split(field, []byte{d.rs})
	for r, rep := range reps {
		cs := bytes.Split(rep, []byte{d.cs})
		for c := range cs {
			if comps != nil && !containsInt(comps, c+1) {
				continue
			}
			var subs [][]byte
			if d.ss != 0 {
				subs = bytes.Split(cs[c], []byte{d.ss})
			} else {
				subs = [][]byte{cs[c]}
			}
			for s, v := range subs {
				if len(v) == 0 || string(v) == `""` {
					continue
				}
				subs[s] = d.escape(fn(d.unescape(v)))
			}
			cs[c] = bytes.Join(subs, []byte{d.ss})
		}
		reps[r] = bytes.Join(cs, []byte{d.cs})
	}
	return bytes.Join(reps, []byte{d.rs})
}

// clearComps empties the selected components in every repetition.
func (d er7) clearComps(field []byte, comps []int) []byte {
	if len(field) == 0 {
		return field
	}
	reps := bytes.Split(field, []byte{d.rs})
	for r, rep := range reps {
		cs := bytes.Split(rep, []byte{d.cs})
		for c := range cs {
			if containsInt(comps, c+1) {
				cs[c] = nil
			}
		}
		reps[r] = bytes.TrimRight(bytes.Join(cs, []byte{d.cs}), string([]byte{d.cs}))
	}
	return bytes.TrimRight(bytes.Join(reps, []byte{d.rs}), string([]byte{d.rs}))
}

func containsInt(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// v2Mask masks one value '*' per character; v2MaskTS keeps the year of a
// timestamp field (PID-7 birth, PID-29 death), as mask does for FHIR dates.
func v2Mask(s string) string { return strings.Repeat("*", len([]rune(s))) }

func v2MaskTS(s string) string {
	if len(s) >= 4 && digitsAt(s, 0, 4) {
		return s[:4]
	}
	return v2Mask(s)
}

func (r *run) hl7(body []byte) (Result, error) {
	m, err := parseER7(body)
	if err != nil {
		return Result{}, err
	}
	for i, s := range m.segs {
		// The position, not the name: a name is three characters of the
		// message, and those could be anything.
		if _, ok := v2Segments[s.name()]; !ok {
			return Result{}, errorf(CodeUnsupportedSegment, "hl7: segment %d has no field mapping", i+1)
		}
	}
	if r.enf != nil && !r.enf.typeAllowed("Patient") {
		// Every v2 message here is about its PID's patient.
		return Result{Forbidden: true}, nil
	}
	if r.enf != nil && !r.enf.any {
		pids := 0
		for _, s := range m.segs {
			if s.name() != "PID" {
				continue
			}
			pids++
			granted := false
			for _, rep := range bytes.Split(s.field(3), []byte{m.d.rs}) {
				id, _, _ := bytes.Cut(rep, []byte{m.d.cs})
				if len(id) > 0 && r.enf.patients[m.d.unescape(id)] {
					granted = true
				}
			}
			if !granted {
				return Result{Forbidden: true}, nil
			}
		}
		if pids == 0 {
			// Nothing says whose the message is, so it cannot be shown
			// to be the granted patient's.
			return Result{Forbidden: true}, nil
		}
	}
	for i := range r.rules {
		if err := r.hl7Rule(m, &r.rules[i]); err != nil {
			return Result{}, err
		}
	}
	changed := false
	for _, s := range m.segs {
		changed = changed || s.dirty
	}
	if !changed {
		res := r.result(body, false)
		res.Released = 1
		return res, nil
	}
	res := r.result(m.bytes(), true)
	res.Released = 1
	return res, nil
}

func (r *run) hl7Rule(m *message, rl *rule) error {
	switch rl.Action {
	case plan.ActionDeidentify:
		r.hl7SafeHarbor(m)
		return nil
	case plan.ActionAllow:
		if t := rl.Elem().Type; t != "Patient" && t != "*" {
			return errorf(CodeBadDirective, "allow on %s has no HL7 v2 mapping", t)
		}
		for _, s := range m.segs {
			def := v2Segments[s.name()]
			switch def.allow {
			case allowPatient:
				first := 1
				if def.setID {
					first = 2
				}
				for f := first; f < len(s.fields); f++ {
					if fd, ok := def.field(f); !ok || !rl.Keeps(keepName(fd.elem)) {
						r.clearField(s, f)
					}
				}
			case allowContact:
				if !rl.Keeps("contact") {
					for f := 2; f < len(s.fields); f++ {
						r.clearField(s, f)
					}
				}
			case allowFields:
				for _, fd := range def.fields {
					if !allowKeeps(rl, fd) {
						r.clearField(s, fd.n)
					}
				}
			}
		}
		return nil
	}
	if v2Absent[rl.Path] {
		return nil
	}
	locs, ok := v2Map[rl.Path]
	if !ok {
		return errorf(CodeBadDirective, "path %q has no HL7 v2 mapping", rl.Path)
	}
	for _, l := range locs {
		for _, s := range m.segs {
			if s.name() != l.seg {
				continue
			}
			f := s.field(l.field)
			if len(f) == 0 {
				continue
			}
			var nv []byte
			switch rl.Action {
			case plan.ActionRemove:
				if l.comps == nil {
					nv = nil
				} else {
					nv = m.d.clearComps(f, l.comps)
				}
			case plan.ActionMask:
				fn := v2Mask
				if l.ts {
					fn = v2MaskTS
				}
				nv = m.d.mapLeaves(f, l.comps, fn)
			case plan.ActionTokenize:
				nv = m.d.mapLeaves(f, l.comps, func(v string) string { return rl.key.token(v, rl.FF1()) })
			}
			if !bytes.Equal(nv, f) {
				s.setField(l.field, nv)
				r.note(l.seg + "-" + strconv.Itoa(l.field))
			}
		}
	}
	return nil
}

func (r *run) clearField(s *segment, f int) {
	if len(s.field(f)) > 0 {
		s.setField(f, nil)
		r.note(s.name() + "-" + strconv.Itoa(f))
	}
}

// allowKeeps decides one field of a guarantor, insured or contact segment
// under an allow-list on Patient. A guarantor or insured may be the patient
// or someone else, so their fields stay only if the element is kept and
// contacts are kept too; their employers and contact persons are contacts.
func allowKeeps(rl *rule, fd v2Field) bool {
	switch fd.role {
	case rolePatient:
		return rl.Keeps(keepName(fd.elem))
	case roleEither:
		return rl.Keeps(keepName(fd.elem)) && rl.Keeps("contact")
	case roleContact, roleAssociate:
		return rl.Keeps("contact")
	}
	return true
}
