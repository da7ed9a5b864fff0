package filters

import (
	"bytes"
	"strconv"
)

// ProfileSafeHarbor names the HIPAA Safe Harbor de-identification profile
// (45 CFR 164.514(b)(2)). It maps the eighteen identifiers to FHIR R4 and
// HL7 v2 elements:
//
//	identifier                        FHIR R4                                                   HL7 v2
//	(A) names                         Patient/RelatedPerson/Person.name, Patient.contact.name,  PID-5, PID-6, PID-9, NK1-2, NK1-30
//	                                  display of every Reference, mothersMaidenName extension
//	(B) geography smaller than state  address line/city/district/text removed; postalCode       PID-11 (state, country kept; zip to 3
//	                                  cut to 3 digits, "000" for the 17 restricted ZIP3s;       digits), PID-12, PID-23, NK1-4, NK1-32
//	                                  birthPlace extension
//	(C) dates except year; ages > 89  every date/dateTime/instant with a month becomes the     PID-7, PID-29, PV1-44, PV1-45, EVN-2,
//	                                  year, meta.lastUpdated and the Bundle's own dates         EVN-6, OBX-14, OBX-19, OBR-7, OBR-8,
//	                                  included; birthDate removed when the person may be        OBR-22 to year; PID-7 emptied when age
//	                                  over 89                                                   may exceed 89 (MSH-7 is kept)
//	(D-F) telephone, fax, email       telecom of Patient, RelatedPerson, Person, contact        PID-13, PID-14, PID-40, NK1-5, NK1-6,
//	                                                                                            NK1-31, NK1-40
//	(G-K) SSN, MRN, plan, account,    every resource's identifier, Reference.identifier,       PID-2, PID-3, PID-4, PID-18, PID-19,
//	      licence numbers             Coverage.subscriberId                                    PID-20, PID-21, NK1-33, PV1-19, PV1-50
//	(L) vehicle identifiers           no R4 element                                             -
//	(M) device identifiers, serials   Device.identifier, udiCarrier, serialNumber, lotNumber,   -
//	                                  distinctIdentifier
//	(N) URLs                          telecom (system url), photo, Attachment url/data in      -
//	                                  Media.content and DocumentReference.content
//	(O) IP addresses                  AuditEvent.agent.network                                  -
//	(P) biometric identifiers         no R4 element                                             -
//	(Q) full-face photographs         Patient/RelatedPerson/Person.photo, Media.content         -
//	(R) any other unique number       identifiers above, Patient.link, free text (note,        -
//	                                  narrative text) which may repeat any of the above
//
// Known limits: resource ids and references between resources are kept so
// a de-identified Bundle stays connected; they are server record locators,
// so a recipient outside the covered entity should receive them only
// re-keyed (tokenize with a key the recipient does not hold). Free text
// inside other elements (Observation.valueString, code.text) is not
// scanned.
const ProfileSafeHarbor = "safe-harbor"

// restrictedZip3 are the three-digit ZIP prefixes with 20,000 people or
// fewer (HHS guidance, 2000 census); they become "000".
var restrictedZip3 = map[string]bool{
	"036": true, "059": true, "063": true, "102": true, "203": true, "556": true, "692": true, "790": true,
	"821": true, "823": true, "830": true, "831": true, "878": true, "879": true, "884": true, "890": true, "893": true,
}

type shRule struct {
	rtype string
	steps []step
}

func mustSteps(rtype, path string) shRule {
	p, err := parsePath(rtype + "." + path)
	if err != nil {
		panic(err) // a constant table: caught by every test run
	}
	return shRule{rtype: rtype, steps: p.steps}
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

func stepsString(st []step) string {
	var b bytes.Buffer
	for i, s := range st {
		if i > 0 {
			b.WriteByte('.')
		}
		b.WriteString(s.name)
		for _, c := range s.where {
			b.WriteString(".where(")
			for j, f := range c.field {
				if j > 0 {
					b.WriteByte('.')
				}
				b.WriteString(f)
			}
			b.WriteString("='" + c.value + "')")
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

// hl7SafeHarbor applies the v2 column of the table above.
func (r *run) hl7SafeHarbor(m *message) {
	emptied := map[string][]int{
		"PID": {2, 3, 4, 5, 6, 9, 12, 13, 14, 18, 19, 20, 21, 23, 40},
		"NK1": {2, 4, 5, 6, 30, 31, 32, 33, 40},
		"PV1": {19, 50},
	}
	years := map[string][]int{"PID": {7, 29}, "PV1": {44, 45}, "EVN": {2, 6}, "OBX": {14, 19}, "OBR": {7, 8, 22}}
	for _, s := range m.segs {
		name := s.name()
		for _, f := range emptied[name] {
			r.clearField(s, f)
		}
		for _, f := range years[name] {
			v := s.field(f)
			if len(v) < 4 || !digitsAt(string(v[:4]), 0, 4) {
				if len(v) > 0 {
					r.clearField(s, f)
				}
				continue
			}
			y, _ := strconv.Atoi(string(v[:4]))
			if name == "PID" && f == 7 && r.e.cfg.Now().Year()-y >= 90 {
				r.clearField(s, f)
				continue
			}
			if len(v) > 4 {
				s.setField(f, v[:4])
				r.note(name + "-" + strconv.Itoa(f))
			}
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
