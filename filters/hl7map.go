package filters

import "strings"

// This file says which HL7 v2.5 fields carry which FHIR element, segment by
// segment, following the HL7 v2-to-FHIR mapping (PID → Patient, NK1 →
// Patient.contact / RelatedPerson, GT1 → Account.guarantor, IN1/IN2 →
// Coverage.subscriber, PV1 → Encounter). A message is filtered only if
// every segment in it is listed here: a segment the table does not know
// (every Z-segment, ACC, UB1, ...) may carry anything, and the engine could
// not show that a directive reached it, so the message is refused.
//
// Fields are tagged with whose data they hold (a role) and which element:
// the role decides which directive prefixes reach the field. A guarantor or
// an insured is often the patient ("self") and otherwise a relative, so
// their person fields answer to Patient.*, Patient.contact.* and
// RelatedPerson.* alike: a directive that removes the patient's telecom
// cannot leave it standing in GT1-6 because the patient pays their own
// bills.

// v2Role is whose data a field holds.
type v2Role uint8

const (
	rolePatient      v2Role = iota + 1 // the patient (PID, PD1, MRG)
	roleEither                         // guarantor, insured, disabled person: the patient or another person
	roleContact                        // next of kin or associated party (NK1)
	roleAssociate                      // employer or contact person of one of the above
	roleEncounter                      // the visit (PV1, MRG prior visit)
	rolePractitioner                   // a care provider (ROL)
	roleObservation                    // a result (OBX)
	roleNote                           // a comment (NTE)
)

// rolePrefixes are the directive prefixes that reach a role's fields.
var rolePrefixes = map[v2Role][]string{
	rolePatient:      {"Patient"},
	roleEither:       {"Patient", "Patient.contact", "RelatedPerson"},
	roleContact:      {"Patient.contact", "RelatedPerson"},
	roleAssociate:    {"Patient.contact"},
	roleEncounter:    {"Encounter"},
	rolePractitioner: {"Practitioner"},
	roleObservation:  {"Observation"},
	roleNote:         {"*", "Observation"},
}

// v2Type is a field's data type, which decides what its components mean.
type v2Type uint8

const (
	tAny v2Type = iota
	tXPN        // person name: 1 family, 2 given, 3 further given, 4 suffix, 5 prefix
	tXAD        // address: 1-2 lines, 3 city, 4 state, 5 postal code, 6 country, 9 county
	tCX         // identifier: 1 the number
	tST         // identifier as one string (policy, Medicaid numbers)
	tSSN        // social security number as one string
	tTS         // timestamp: mask keeps the year
)

type v2Field struct {
	n    int
	role v2Role
	elem string   // element below the role's prefix: "name", "telecom", ...
	typ  v2Type   //
	also []string // further element paths the whole field answers to
}

// allowMode is how an allow-list on Patient (minimum necessary) treats a
// segment.
type allowMode uint8

const (
	allowNone    allowMode = iota // not patient demographics: untouched
	allowPatient                  // every field goes unless its element is kept
	allowContact                  // every field goes unless "contact" is kept
	allowFields                   // the listed fields go by role; others stay
)

type v2Segment struct {
	fields []v2Field
	allow  allowMode
	setID  bool  // field 1 is a Set ID, kept by allow
	years  []int // timestamps safe harbor cuts to the year
	births []int // birth dates: emptied instead when the person may be over 89
	text   []int // free text safe harbor empties: it may repeat any identifier
	empty  []int // further fields safe harbor empties (relatives' names, birth places)
}

func pf(n int, elem string, typ v2Type, also ...string) v2Field {
	return v2Field{n: n, role: rolePatient, elem: elem, typ: typ, also: also}
}

func rf(role v2Role, n int, elem string, typ v2Type) v2Field {
	return v2Field{n: n, role: role, elem: elem, typ: typ}
}

// v2Segments is the allow-list of segments, with the fields of each that
// carry data a directive names (HL7 v2.5 field numbers).
var v2Segments = map[string]*v2Segment{
	"MSH": {years: []int{7}}, "BHS": {years: []int{7}}, "FHS": {years: []int{7}},
	"BTS": {}, "FTS": {}, "SFT": {},
	"EVN": {years: []int{2, 3, 6}},
	"PID": {allow: allowPatient, setID: true, fields: []v2Field{
		pf(2, "identifier", tCX), pf(3, "identifier", tCX), pf(4, "identifier", tCX),
		pf(5, "name", tXPN), pf(6, "extension", tAny), pf(7, "birthDate", tTS), pf(8, "gender", tAny),
		pf(9, "name", tXPN), pf(10, "extension", tAny), pf(11, "address", tXAD), pf(12, "address", tAny, "address.district"),
		pf(13, "telecom", tAny), pf(14, "telecom", tAny), pf(15, "communication", tAny), pf(16, "maritalStatus", tAny),
		pf(18, "identifier", tCX), pf(19, "identifier", tSSN), pf(20, "identifier", tCX),
		pf(22, "extension", tAny), pf(23, "extension", tAny), pf(24, "multipleBirth[x]", tAny), pf(25, "multipleBirth[x]", tAny),
		pf(29, "deceased[x]", tTS, "deceasedDateTime"), pf(30, "deceased[x]", tAny, "deceasedBoolean"), pf(40, "telecom", tAny),
	}, years: []int{29}, births: []int{7}, empty: []int{6, 21, 23}},
	"PD1": {allow: allowPatient, fields: []v2Field{
		pf(3, "managingOrganization", tAny), pf(4, "generalPractitioner", tAny), pf(10, "link", tCX),
	}, years: []int{13, 17, 18}},
	"MRG": {allow: allowPatient, fields: []v2Field{
		pf(1, "identifier", tCX, "link"), pf(2, "identifier", tCX), pf(3, "identifier", tCX), pf(4, "identifier", tCX),
		rf(roleEncounter, 5, "identifier", tCX), rf(roleEncounter, 6, "identifier", tCX), pf(7, "name", tXPN),
	}},
	"NK1": {allow: allowContact, setID: true, fields: []v2Field{
		rf(roleContact, 2, "name", tXPN), rf(roleContact, 3, "relationship", tAny), rf(roleContact, 4, "address", tXAD),
		rf(roleContact, 5, "telecom", tAny), rf(roleContact, 6, "telecom", tAny), rf(roleContact, 12, "identifier", tCX),
		rf(roleContact, 13, "organization", tAny), rf(roleContact, 15, "gender", tAny), rf(roleContact, 16, "birthDate", tTS),
		rf(roleContact, 30, "name", tXPN), rf(roleContact, 31, "telecom", tAny), rf(roleContact, 32, "address", tXAD),
		rf(roleContact, 33, "identifier", tCX), rf(roleContact, 37, "identifier", tSSN), rf(roleContact, 40, "telecom", tAny),
		rf(roleContact, 41, "telecom", tAny),
	}, years: []int{8, 9}, births: []int{16}, empty: []int{13}},
	"GT1": {allow: allowFields, setID: true, fields: []v2Field{
		rf(roleEither, 2, "identifier", tCX), rf(roleEither, 3, "name", tXPN), rf(roleAssociate, 4, "name", tXPN),
		rf(roleEither, 5, "address", tXAD), rf(roleEither, 6, "telecom", tAny), rf(roleEither, 7, "telecom", tAny),
		rf(roleEither, 8, "birthDate", tTS), rf(roleEither, 9, "gender", tAny), rf(roleEither, 12, "identifier", tSSN),
		rf(roleAssociate, 16, "name", tXPN), rf(roleAssociate, 17, "address", tXAD), rf(roleAssociate, 18, "telecom", tAny),
		rf(roleEither, 19, "identifier", tCX), rf(roleEither, 24, "deceased[x]", tTS), rf(roleAssociate, 29, "identifier", tCX),
		rf(roleEither, 30, "maritalStatus", tAny), rf(roleEither, 36, "communication", tAny), rf(roleEither, 42, "extension", tAny),
		rf(roleEither, 44, "extension", tAny), rf(roleAssociate, 45, "name", tXPN), rf(roleAssociate, 46, "telecom", tAny),
		rf(roleAssociate, 51, "name", tAny), rf(roleEither, 55, "extension", tAny), rf(roleEither, 56, "extension", tAny),
	}, years: []int{13, 14, 24, 31, 32}, births: []int{8}, empty: []int{42, 56}},
	"IN1": {allow: allowFields, setID: true, fields: []v2Field{
		rf(roleAssociate, 10, "identifier", tCX), rf(roleAssociate, 11, "name", tAny), rf(roleEither, 16, "name", tXPN),
		rf(roleEither, 18, "birthDate", tTS), rf(roleEither, 19, "address", tXAD), rf(roleEither, 36, "identifier", tST),
		rf(roleEither, 43, "gender", tAny), rf(roleAssociate, 44, "address", tXAD), rf(roleEither, 49, "identifier", tCX),
		rf(roleEither, 52, "extension", tAny),
	}, years: []int{12, 13, 24, 26, 29, 51}, births: []int{18}, empty: []int{52}},
	"IN2": {allow: allowFields, fields: []v2Field{
		rf(roleEither, 1, "identifier", tCX), rf(roleEither, 2, "identifier", tSSN), rf(roleAssociate, 3, "name", tAny),
		rf(roleEither, 6, "identifier", tST), rf(roleEither, 7, "name", tXPN), rf(roleEither, 8, "identifier", tST),
		rf(roleAssociate, 9, "name", tXPN), rf(roleEither, 10, "identifier", tST), rf(roleEither, 26, "identifier", tCX),
		rf(roleEither, 34, "communication", tAny), rf(roleEither, 40, "extension", tAny), rf(roleEither, 42, "extension", tAny),
		rf(roleEither, 43, "maritalStatus", tAny), rf(roleAssociate, 49, "name", tXPN), rf(roleAssociate, 50, "telecom", tAny),
		rf(roleAssociate, 52, "name", tXPN), rf(roleAssociate, 53, "telecom", tAny), rf(roleEither, 61, "identifier", tCX),
		rf(roleEither, 63, "telecom", tAny), rf(roleAssociate, 64, "telecom", tAny), rf(roleAssociate, 70, "name", tAny),
		rf(roleEither, 71, "extension", tAny),
	}, years: []int{17, 44, 45, 55, 56}, empty: []int{40}},
	"DB1": {allow: allowFields, setID: true, fields: []v2Field{rf(roleEither, 3, "identifier", tCX)}, years: []int{5, 6}},
	"PV1": {setID: true, fields: []v2Field{
		rf(roleEncounter, 3, "location", tAny), rf(roleEncounter, 6, "location", tAny), rf(roleEncounter, 7, "participant", tAny),
		rf(roleEncounter, 8, "participant", tAny), rf(roleEncounter, 9, "participant", tAny), rf(roleEncounter, 11, "location", tAny),
		rf(roleEncounter, 17, "participant", tAny), rf(roleEncounter, 19, "identifier", tCX), rf(roleEncounter, 42, "location", tAny),
		rf(roleEncounter, 43, "location", tAny), rf(roleEncounter, 44, "period", tTS), rf(roleEncounter, 45, "period", tTS),
		rf(roleEncounter, 50, "identifier", tCX), rf(roleEncounter, 52, "participant", tAny),
	}, years: []int{44, 45}},
	"PV2": {years: []int{8, 9, 26, 33}, text: []int{12}},
	"ROL": {fields: []v2Field{
		rf(rolePractitioner, 4, "name", tAny), rf(rolePractitioner, 11, "address", tXAD), rf(rolePractitioner, 12, "telecom", tAny),
	}, years: []int{5, 6}},
	"OBX": {fields: []v2Field{rf(roleObservation, 5, "value[x]", tAny), rf(roleObservation, 16, "performer", tAny)}, years: []int{12, 14, 19}},
	"NTE": {fields: []v2Field{rf(roleNote, 3, "note", tAny)}, text: []int{3}},
	"AL1": {years: []int{6}},
	"DG1": {years: []int{5, 19}},
	"PR1": {years: []int{5}},
	"DRG": {years: []int{2}},
	"OBR": {years: []int{6, 7, 8, 14, 22, 36}, text: []int{13}},
	"ORC": {years: []int{9, 15}},
}

// shElements are the elements safe harbor empties wherever a person or
// visit field carries them: names, addresses, telecom and every number
// that identifies a person, record, plan or visit.
var shElements = map[string]bool{"name": true, "address": true, "telecom": true, "identifier": true, "link": true}

// v2Loc is one field (and optionally some components, 1-based) of a segment.
type v2Loc struct {
	seg   string
	field int
	comps []int
	ts    bool // a timestamp: mask keeps the year
}

const ssnWhere = ".where(system='http://hl7.org/fhir/sid/us-ssn')"

// v2Map says, for each directive path with a v2 counterpart, which fields
// and components carry it. It is derived from v2Segments.
var v2Map = func() map[string][]v2Loc {
	m := map[string][]v2Loc{}
	add := func(path string, l v2Loc) { m[path] = append(m[path], l) }
	for name, seg := range v2Segments {
		for _, f := range seg.fields {
			whole := v2Loc{seg: name, field: f.n, ts: f.typ == tTS}
			part := func(comps ...int) v2Loc { return v2Loc{seg: name, field: f.n, comps: comps} }
			for _, prefix := range rolePrefixes[f.role] {
				base := prefix + "." + f.elem
				add(base, whole)
				if strings.Contains(prefix, ".") {
					add(prefix, whole) // Patient.contact as a whole
				}
				for _, a := range f.also {
					add(prefix+"."+a, whole)
				}
				switch f.typ {
				case tXPN:
					add(base+".family", part(1))
					add(base+".given", part(2, 3))
					add(base+".suffix", part(4))
					add(base+".prefix", part(5))
				case tXAD:
					add(base+".line", part(1, 2))
					add(base+".city", part(3))
					add(base+".state", part(4))
					add(base+".postalCode", part(5))
					add(base+".country", part(6))
					add(base+".district", part(9))
				case tCX:
					add(base+".value", part(1))
				case tST:
					add(base+".value", whole)
				case tSSN:
					add(base+".value", whole)
					add(base+ssnWhere, whole)
					add(base+ssnWhere+".value", whole)
				}
			}
		}
	}
	return m
}()

// v2Absent are elements that have no v2 field at all, so a directive on
// them has nothing to do in a message.
var v2Absent = map[string]bool{
	"*.text": true, "Patient.text": true, "Patient.photo": true, "Patient.meta": true,
}

func (s *v2Segment) field(n int) (v2Field, bool) {
	for _, f := range s.fields {
		if f.n == n {
			return f, true
		}
	}
	return v2Field{}, false
}

// keepName is the element an allow-list names: "deceased" for deceased[x].
func keepName(elem string) string { return strings.TrimSuffix(elem, "[x]") }
