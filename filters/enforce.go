package filters

import (
	"strings"
)

// SensitivityCodes is the vocabulary of v3-ActCode sensitivity labels
// (meta.security) that Enforcement.PermittedLabels governs: a resource
// carrying any of these codes is withheld unless the code is permitted.
// Codes outside this list (confidentiality R/N, REDACTED, purpose codes) do
// not withhold. The list follows the v3 ActCode _InformationSensitivityPolicy
// hierarchy and the behavioural-health codes used by 42 CFR Part 2 and
// HL7 DS4P profiles.
var SensitivityCodes = []string{
	"ETH",      // substance abuse information (any)
	"SUD",      // substance use disorder information
	"ALCUD",    // alcohol use disorder
	"OPIOIDUD", // opioid use disorder
	"COCAINEUD",
	"DRGIS",   // drug information sensitivity
	"PSY",     // psychiatry disorder information
	"PSYTHPN", // psychotherapy note
	"BH",      // behavioural health
	"MH",      // mental health
	"HIV",     // HIV/AIDS
	"STD",     // sexually transmitted disease
	"SEX",     // sexuality and reproductive health
	"SDV",     // sexual assault, abuse or domestic violence
	"GDIS",    // genetic disease
	"SCA",     // sickle cell anemia
	"SICKLE",
	"TBOO", // taboo
	"MST",  // military sexual trauma
	"PREGNANT",
	"LSRDISCL", // legally sealed records
	"REPRODUCTIVE",
}

var sensitivity = func() map[string]bool {
	m := make(map[string]bool, len(SensitivityCodes))
	for _, c := range SensitivityCodes {
		m[c] = true
	}
	return m
}()

// patientCompartment maps a resource type to the elements whose references
// make it part of a patient's compartment (FHIR R4 CompartmentDefinition
// "patient"). Types not listed fall back to compartmentDefault.
var patientCompartment = map[string][]string{
	"Account":                     {"subject"},
	"AdverseEvent":                {"subject"},
	"AllergyIntolerance":          {"patient", "recorder", "asserter"},
	"Appointment":                 {"participant.actor"},
	"AppointmentResponse":         {"actor"},
	"Basic":                       {"subject", "author"},
	"BodyStructure":               {"patient"},
	"CarePlan":                    {"subject", "activity.detail.performer"},
	"CareTeam":                    {"subject", "participant.member"},
	"ChargeItem":                  {"subject"},
	"Claim":                       {"patient", "payee.party"},
	"ClaimResponse":               {"patient"},
	"ClinicalImpression":          {"subject"},
	"Communication":               {"subject", "sender", "recipient"},
	"CommunicationRequest":        {"subject", "sender", "recipient", "requester"},
	"Composition":                 {"subject", "author", "attester.party"},
	"Condition":                   {"subject", "asserter"},
	"Consent":                     {"patient"},
	"Coverage":                    {"policyHolder", "subscriber", "beneficiary", "payor"},
	"CoverageEligibilityRequest":  {"patient"},
	"CoverageEligibilityResponse": {"patient"},
	"DetectedIssue":               {"patient"},
	"DeviceRequest":               {"subject", "performer"},
	"DeviceUseStatement":          {"subject"},
	"DiagnosticReport":            {"subject"},
	"DocumentManifest":            {"subject", "author", "recipient"},
	"DocumentReference":           {"subject", "author"},
	"Encounter":                   {"subject"},
	"EnrollmentRequest":           {"candidate"},
	"EpisodeOfCare":               {"patient"},
	"ExplanationOfBenefit":        {"patient", "payee.party"},
	"FamilyMemberHistory":         {"patient"},
	"Flag":                        {"subject"},
	"Goal":                        {"subject"},
	"Group":                       {"member.entity"},
	"ImagingStudy":                {"subject"},
	"Immunization":                {"patient"},
	"ImmunizationEvaluation":      {"patient"},
	"ImmunizationRecommendation":  {"patient"},
	"Invoice":                     {"subject", "recipient"},
	"List":                        {"subject", "source"},
	"MeasureReport":               {"subject"},
	"Media":                       {"subject"},
	"MedicationAdministration":    {"subject", "performer.actor"},
	"MedicationDispense":          {"subject", "performer.actor", "receiver"},
	"MedicationRequest":           {"subject"},
	"MedicationStatement":         {"subject"},
	"MolecularSequence":           {"patient"},
	"NutritionOrder":              {"patient"},
	"Observation":                 {"subject", "performer"},
	"Person":                      {"link.target"},
	"Procedure":                   {"subject", "performer.actor"},
	"Provenance":                  {"target"},
	"QuestionnaireResponse":       {"subject", "author"},
	"RelatedPerson":               {"patient"},
	"RequestGroup":                {"subject", "action.participant"},
	"ResearchSubject":             {"individual"},
	"RiskAssessment":              {"subject"},
	"Schedule":                    {"actor"},
	"ServiceRequest":              {"subject", "performer"},
	"Specimen":                    {"subject"},
	"SupplyDelivery":              {"patient"},
	"SupplyRequest":               {"requester"},
	"VisionPrescription":          {"patient"},
}

var compartmentDefault = []string{"subject", "patient", "beneficiary", "individual"}

// enforcer is the compiled Enforcement.
type enforcer struct {
	any       bool
	patients  map[string]bool
	permitted map[string]bool
}

func newEnforcer(e *Enforcement) *enforcer {
	x := &enforcer{any: e.AnyPatient, patients: map[string]bool{}, permitted: map[string]bool{}}
	for _, p := range e.Patients {
		x.patients[p] = true
	}
	for _, l := range e.PermittedLabels {
		x.permitted[l] = true
	}
	return x
}

// withhold reports whether the caller may not see res at all.
func (x *enforcer) withhold(res *node) bool {
	if x.labelled(res) {
		return true
	}
	for _, c := range arrayOf(res.get("contained")) {
		if x.labelled(c) {
			return true
		}
	}
	if x.any {
		return false
	}
	rt := res.get("resourceType").str()
	if rt == "Patient" {
		id := res.get("id")
		// A Patient without a server id cannot be matched to the grant.
		return id == nil || id.kind != kStr || !x.patients[id.str()]
	}
	paths, ok := patientCompartment[rt]
	if !ok {
		paths = compartmentDefault
	}
	outside := false
	for _, p := range paths {
		eachAt(res, strings.Split(p, "."), func(ref *node) {
			id, isPatient, known := patientRef(ref)
			if isPatient && (!known || !x.patients[id]) {
				outside = true
			}
		})
	}
	return outside
}

// labelled reports a sensitivity label the caller is not permitted.
func (x *enforcer) labelled(res *node) bool {
	for _, c := range arrayOf(res.get("meta").get("security")) {
		sys := c.get("system")
		if sys != nil && !sys.strIs(systemActCode) {
			continue
		}
		code := c.get("code").str()
		if sensitivity[code] && !x.permitted[code] {
			return true
		}
	}
	return false
}

func arrayOf(n *node) []*node {
	if n == nil {
		return nil
	}
	n.x()
	if n.kind == kArr {
		return n.arr
	}
	return []*node{n}
}

// eachAt calls fn for every value at the member path below n, through
// repeating elements.
func eachAt(n *node, names []string, fn func(*node)) {
	if n == nil || n.kind != kObj {
		return
	}
	n.x()
	for i := range n.mem {
		if n.mem[i].name() != names[0] {
			continue
		}
		for _, v := range arrayOf(n.mem[i].val) {
			if len(names) == 1 {
				fn(v)
			} else {
				eachAt(v, names[1:], fn)
			}
		}
	}
}

// patientRef reads a Reference. isPatient says it points at a Patient;
// known says the id could be read. Conditional references
// ("Patient?identifier=...") and logical references (type Patient with only
// an identifier) point at a patient we cannot name, which enforcement treats
// as outside the grant.
func patientRef(ref *node) (id string, isPatient, known bool) {
	if ref == nil || ref.kind != kObj {
		return "", false, false
	}
	s := ref.get("reference")
	if s == nil {
		if ref.get("type").strIs("Patient") {
			return "", true, false
		}
		return "", false, false
	}
	v := s.str()
	if strings.HasPrefix(v, "#") {
		return "", false, false // contained: no server identity
	}
	var rest string
	switch {
	case strings.HasPrefix(v, "Patient/"):
		rest = v[len("Patient/"):]
	case strings.Contains(v, "/Patient/"):
		rest = v[strings.LastIndex(v, "/Patient/")+len("/Patient/"):]
	case strings.HasPrefix(v, "Patient?") || strings.Contains(v, "/Patient?"):
		return "", true, false
	default:
		if ref.get("type").strIs("Patient") {
			return "", true, false
		}
		return "", false, false
	}
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		rest = rest[:i] // drop /_history/n
	}
	if rest == "" {
		return "", true, false
	}
	return rest, true, true
}

// bundle filters a Bundle's entries. It reports whether anything inside
// changed and whether entries were withheld.
func (r *run) bundle(b *node) (changed, withheld bool) {
	typ := b.get("type").str()
	responses := typ == "batch-response" || typ == "transaction-response"
	entryNode := b.get("entry")
	if entryNode != nil && entryNode.kind != kArr {
		r.fail(errorf(CodeMalformed, "Bundle.entry is not an array"))
		return false, false
	}
	var entries []*node
	if entryNode != nil {
		entries = entryNode.x().arr
	}
	kept := entries[:0]
	nWithheld, nMatches := 0, 0
	for _, e := range entries {
		res := e.get("resource")
		if res != nil && res.kind == kObj && r.enf != nil && r.enf.withhold(res) {
			nWithheld++
			if responses {
				// A response Bundle answers its request entry by entry;
				// removing one would shift the answers, so the entry stays
				// and says it was refused.
				e.del("resource")
				e.del("fullUrl")
				resp := e.get("response")
				if resp == nil || resp.kind != kObj {
					resp = objNode()
					e.set("response", resp)
				}
				resp.set("status", strNode("403 Forbidden"))
				resp.del("etag")
				resp.del("location")
				resp.del("lastModified")
				resp.set("outcome", r.suppressedOutcome())
				kept = append(kept, e)
				continue
			}
			if mode := e.get("search").get("mode"); mode == nil || mode.strIs("match") {
				nMatches++
			}
			continue
		}
		if e.kind == kObj || e.kind == kArr {
			changed = r.nested(e, false) || changed
		}
		kept = append(kept, e)
	}
	for i := range b.mem {
		if b.mem[i].name() != "entry" {
			v := b.mem[i].val
			if v.kind == kObj || v.kind == kArr {
				changed = r.nested(v, false) || changed
			}
		}
	}
	if nWithheld == 0 {
		return changed, false
	}
	r.withheld += nWithheld
	if !responses {
		clear(entries[len(kept):])
		entryNode.arr = kept
		entryNode.dirty = true
		oe := objNode("resource", r.suppressedOutcome())
		if typ == "searchset" {
			oe.set("search", objNode("mode", "outcome"))
		}
		entryNode.arr = append(entryNode.arr, oe)
		if typ == "searchset" && paged(b) {
			// Other pages hold matches outside the grant too, in numbers
			// this response cannot know: a total would be a guess, and
			// the unadjusted one counts patients the caller may not see.
			b.del("total")
		} else if total := b.get("total"); total != nil && total.kind == kNum && (typ == "searchset" || typ == "history") {
			removed := nMatches
			if typ == "history" {
				removed = nWithheld
			}
			if n, ok := atoiNum(total.raw); ok {
				total.setNum(itoa(max(n-removed, 0)))
			}
		}
	}
	return true, true
}

// paged reports whether a Bundle is one page of several (a next or previous link).
func paged(b *node) bool {
	links := b.get("link")
	if links == nil || links.kind != kArr {
		return false
	}
	links.x()
	for _, l := range links.arr {
		if l == nil || l.kind != kObj {
			continue
		}
		if rel := l.get("relation"); rel != nil && (rel.strIs("next") || rel.strIs("previous") || rel.strIs("prev")) {
			return true
		}
	}
	return false
}

func atoiNum(raw []byte) (int, bool) {
	n := 0
	if len(raw) == 0 || len(raw) > 15 {
		return 0, false
	}
	for _, c := range raw {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

// suppressedOutcome explains withheld entries without saying whose or how
// many: a count of hidden psychotherapy notes is itself a disclosure.
func (r *run) suppressedOutcome() *node {
	msg := "Some content was withheld by access policy."
	if r.plan.DecisionID != "" && safeID(r.plan.DecisionID) {
		msg += " Decision " + r.plan.DecisionID + "."
	}
	issue := objNode("severity", "information", "code", "suppressed", "diagnostics", msg)
	return objNode("resourceType", "OperationOutcome", "issue", arrNode(issue))
}

func safeID(s string) bool {
	if len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '-' || c == '_' || c == '.' || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
			return false
		}
	}
	return true
}
