package filters

import (
	"bytes"
	"strconv"

	"github.com/phigate/phigate/plan"
)

// ProfileSafeHarbor names the HIPAA Safe Harbor de-identification profile
// (45 CFR 164.514(b)(2)). It maps the eighteen identifiers to FHIR R4
// elements:
//
//	identifier                        FHIR R4
//	(A) names                         Patient/RelatedPerson/Person.name, Patient.contact.name,
//	                                  display of every Reference, mothersMaidenName extension
//	(B) geography smaller than state  address line/city/district/text removed; postalCode
//	                                  cut to 3 digits, "000" for the 17 restricted ZIP3s;
//	                                  birthPlace extension
//	(C) dates except year; ages > 89  every date/dateTime/instant with a month becomes the
//	                                  year, meta.lastUpdated and the Bundle's own dates
//	                                  included; birthDate removed when the person may be
//	                                  over 89
//	(D-F) telephone, fax, email       telecom of Patient, RelatedPerson, Person, contact
//	(G-K) SSN, MRN, plan, account,    every resource's identifier, Reference.identifier,
//	      licence numbers             Coverage.subscriberId
//	(L) vehicle identifiers           no R4 element
//	(M) device identifiers, serials   Device.identifier, udiCarrier, serialNumber, lotNumber,
//	                                  distinctIdentifier
//	(N) URLs                          telecom (system url), photo, Attachment url/data in
//	                                  Media.content and DocumentReference.content
//	(O) IP addresses                  AuditEvent.agent.network
//	(P) biometric identifiers         no R4 element
//	(Q) full-face photographs         Patient/RelatedPerson/Person.photo, Media.content
//	(R) any other unique number       identifiers above, Patient.link, free text (note,
//	                                  narrative text) which may repeat any of the above
//
// In HL7 v2 the same identifiers follow the segment table (hl7map.go): the
// name, address, telecom, identifier and link fields of the patient, next
// of kin, guarantor, insured, their employers and contact persons, and of
// the visit are emptied (PID, PD1, MRG, NK1, GT1, IN1, IN2, DB1, PV1), and
// so are relatives' names and birth places carried as PID-6/-23, GT1-42/-56,
// IN1-52, IN2-40. PID-11 keeps state, country and the ZIP3. Every
// timestamp field listed (MSH-7, EVN, PID-29, PV1-44/-45, DG1, AL1, PR1,
// OBX, OBR, ORC, ...) becomes its year; birth dates (PID-7, NK1-16, GT1-8,
// IN1-18) too, or are emptied when the person may be over 89. Free text
// (NTE-3, OBX-5 of type TX or FT, PV2-12, OBR-13) is emptied. Providers'
// names and offices (ROL, PV1-7) stay, as Practitioner does in FHIR.
//
// Known limits: resource ids and references between resources are kept so
// a de-identified Bundle stays connected; they are server record locators,
// so a recipient outside the covered entity should receive them only
// re-keyed (tokenize with a key the recipient does not hold). Free text
// inside other elements (Observation.valueString, code.text, OBX-5 of type
// ST) is not scanned. An instant cut to its year (meta.lastUpdated,
// Observation.issued) no longer has the precision R4 requires of an
// instant: a strict parser on the receiving side may refuse it.
const ProfileSafeHarbor = plan.ProfileSafeHarbor

// restrictedZip3 are the three-digit ZIP prefixes with 20,000 people or
// fewer (HHS guidance, 2000 census); they become "000".
var restrictedZip3 = map[string]bool{
	"036": true, "059": true, "063": true, "102": true, "203": true, "556": true, "692": true, "790": true,
	"821": true, "823": true, "830": true, "831": true, "878": true, "879": true, "884": true, "890": true, "893": true,
}

type shRule struct {
	rtype string
	steps []plan.Step
}

func mustSteps(rtype, path string) shRule {
	p, err := plan.ParsePath(rtype + "." + path)
	if err != nil {
		panic(err) // a constant table: caught by every test run
	}
	return shRule{rtype: rtype, steps: p.Steps}
}

var shRemove, shZip = func() ([]shRule, []shRule) {
	var rm, zip []shRule
	addr := []string{"line", "city", "district", "text"}
	for _, rt := range []string{"Patient", "RelatedPerson", "Person"} {
		for _, p := range []string{"name", "telecom", "photo"} {
			rm = append(rm, mustSteps(rt, p))
		}
		for _, a := range addr {
			rm = append(rm, mustSteps(rt, "address."+a))
		}
		zip = append(zip, mustSteps(rt, "address.postalCode"))
	}
	for _, p := range []string{"contact.name", "contact.telecom", "link",
		"extension.where(url='http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName')",
		"extension.where(url='http://hl7.org/fhir/StructureDefinition/patient-birthPlace')"} {
		rm = append(rm, mustSteps("Patient", p))
	}
	for _, a := range addr {
		rm = append(rm, mustSteps("Patient", "contact.address."+a))
	}
	zip = append(zip, mustSteps("Patient", "contact.address.postalCode"))
	rm = append(rm,
		mustSteps("Coverage", "subscriberId"),
		mustSteps("Device", "udiCarrier"), mustSteps("Device", "serialNumber"),
		mustSteps("Device", "lotNumber"), mustSteps("Device", "distinctIdentifier"),
		mustSteps("Media", "content"),
		mustSteps("DocumentReference", "content.attachment.url"), mustSteps("DocumentReference", "content.attachment.data"),
		mustSteps("AuditEvent", "agent.network"),
		mustSteps("*", "identifier"), mustSteps("*", "note"), mustSteps("*", "text"),
	)
	return rm, zip
}()

func (s shRule) applies(rt string) bool {
	return s.rtype == rt || (s.rtype == "*" && rt != "Bundle")
}

func (r *run) safeHarbor(res *node, rt string, _ *rule) bool {
	if rt == "Bundle" {
		// The envelope's own dates (meta.lastUpdated, timestamp,
		// response.lastModified) date the search or the document as
		// precisely as the entries' own; entries are de-identified on
		// their own pass.
		return r.shGeneric(res, rt, true)
	}
	changed := false
	drop := func(*node) (bool, bool) { return false, true }
	for _, s := range shRemove {
		if s.applies(rt) && visit(res, s.steps, drop) {
			changed = true
			r.note(rt + "." + stepsString(s.steps))
		}
	}
	for _, s := range shZip {
		if s.applies(rt) && visit(res, s.steps, func(v *node) (bool, bool) {
			if v.kind != kStr {
				return false, true
			}
			z := zip3(v.str())
			if z == v.str() {
				return false, false
			}
			v.setStr(z)
			return true, false
		}) {
			changed = true
			r.note(rt + "." + stepsString(s.steps))
		}
	}
	if rt == "Patient" || rt == "RelatedPerson" || rt == "Person" {
		if bd := res.get("birthDate"); bd != nil && bd.kind == kStr {
			s := bd.str()
			if len(s) >= 4 && digitsAt(s, 0, 4) {
				y, _ := strconv.Atoi(s[:4])
				if r.e.cfg.Now().Year()-y >= 90 {
					res.del("birthDate")
					r.note(rt + ".birthDate")
					changed = true
				}
			}
		}
	}
	if r.shGeneric(res, rt, true) {
		changed = true
	}
	return changed
}

func stepsString(st []plan.Step) string {
	var b bytes.Buffer
	for i, s := range st {
		if i > 0 {
			b.WriteByte('.')
		}
		b.WriteString(s.Name)
		for _, c := range s.Where {
			b.WriteString(".where(")
			for j, f := range c.Field {
				if j > 0 {
					b.WriteByte('.')
				}
				b.WriteString(f)
			}
			b.WriteString("='" + c.Value + "')")
		}
	}
	return b.String()
}

// zip3 keeps the first three digits of a US ZIP code, or "000" for sparse
// areas. Anything that is not a ZIP is replaced by "000" as well: a foreign
// postal code can be as specific as a street.
func zip3(s string) string {
	if len(s) >= 5 && digitsAt(s, 0, 5) && !restrictedZip3[s[:3]] {
		return s[:3]
	}
	return "000"
}

// shGeneric coarsens dates to the year and strips Reference display and
// identifier everywhere in the resource, but not inside nested resources
// (they are de-identified on their own). meta is included: lastUpdated
// tells when the record was written, which for most clinical records is
// within minutes of the encounter it records, so it identifies as much as
// the encounter's own date.
func (r *run) shGeneric(n *node, rt string, top bool) bool {
	n.x()
	changed := false
	switch n.kind {
	case kObj:
		if !top {
			if t := n.get("resourceType"); t != nil && t.kind == kStr {
				return false
			}
		}
		if n.get("reference") != nil {
			if n.del("display") {
				r.note(rt + ".*.display")
				changed = true
			}
			if n.del("identifier") {
				r.note(rt + ".*.identifier")
				changed = true
			}
		}
		for i := range n.mem {
			v := n.mem[i].val
			if v.kind == kStr {
				if s := v.str(); isDateLike(s) {
					v.setStr(s[:4])
					if top {
						r.note(rt + "." + n.mem[i].name())
					} else {
						r.note(rt + ".*." + n.mem[i].name())
					}
					changed = true
				}
				continue
			}
			changed = r.shGeneric(v, rt, false) || changed
		}
	case kArr:
		for _, e := range n.arr {
			if e.kind == kStr {
				if s := e.str(); isDateLike(s) {
					e.setStr(s[:4])
					changed = true
				}
				continue
			}
			changed = r.shGeneric(e, rt, false) || changed
		}
	}
	return changed
}

// hl7SafeHarbor applies the v2 column of the table above, from the
// segment table in hl7map.go.
func (r *run) hl7SafeHarbor(m *message) {
	for _, s := range m.segs {
		name := s.name()
		def := v2Segments[name]
		if isHeader(s.fields[0]) {
			r.headerYear(m, s, def)
			continue
		}
		for _, f := range def.fields {
			if f.n == 11 && name == "PID" {
				continue // state, country and ZIP3 stay: below
			}
			if shElements[f.elem] && f.role != rolePractitioner && f.role != roleObservation && f.role != roleNote {
				r.clearField(s, f.n)
			}
		}
		for _, f := range def.empty {
			r.clearField(s, f)
		}
		for _, f := range def.text {
			r.clearField(s, f)
		}
		if name == "OBX" {
			// A text result is narrative: it may name anyone.
			if t := string(s.field(2)); t == "TX" || t == "FT" {
				r.clearField(s, 5)
			}
		}
		for _, f := range def.births {
			r.shYear(s, f, true)
		}
		for _, f := range def.years {
			r.shYear(s, f, false)
		}
		if name == "PID" {
			if f := s.field(11); len(f) > 0 {
				nv := m.d.clearComps(f, []int{1, 2, 3, 7, 8, 9, 10, 11, 12, 13, 14})
				nv = m.d.mapLeaves(nv, []int{5}, zip3)
				if !bytes.Equal(nv, f) {
					s.setField(11, nv)
					r.note("PID-11")
				}
			}
		}
	}
}

// shYear cuts a timestamp field to its year. A value that does not start
// with a year is not a timestamp this code can coarsen, so it goes; a
// birth date goes when the person may be over 89.
func (r *run) shYear(s *segment, f int, birth bool) {
	v := s.field(f)
	if len(v) == 0 {
		return
	}
	if len(v) < 4 || !digitsAt(string(v[:4]), 0, 4) {
		r.clearField(s, f)
		return
	}
	y, _ := strconv.Atoi(string(v[:4]))
	if birth && r.e.cfg.Now().Year()-y >= 90 {
		r.clearField(s, f)
		return
	}
	if len(v) > 4 {
		s.setField(f, v[:4])
		r.note(s.name() + "-" + strconv.Itoa(f))
	}
}

// headerYear coarsens the header's own timestamp (MSH-7, BHS-7, FHS-7),
// which dates the event the message reports. The header is kept as one
// line because its first field is the separator itself, so field n is
// the n-th piece after splitting.
func (r *run) headerYear(m *message, s *segment, def *v2Segment) {
	parts := bytes.Split(s.fields[0], []byte{m.d.fs})
	changed := false
	for _, f := range def.years {
		i := f - 1
		if i >= len(parts) || len(parts[i]) == 0 {
			continue
		}
		v := parts[i]
		switch {
		case len(v) < 4 || !digitsAt(string(v[:4]), 0, 4):
			parts[i] = nil
		case len(v) > 4:
			parts[i] = v[:4]
		default:
			continue
		}
		changed = true
		r.note(s.name() + "-" + strconv.Itoa(f))
	}
	if changed {
		s.fields[0] = bytes.Join(parts, []byte{m.d.fs})
		s.dirty = true
	}
}
