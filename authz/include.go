package authz

import (
	"github.com/phigate/phigate/internal/compartment"
	"slices"
	"strings"
)

// includeKeys are the include parameters a server honours; any other
// spelling that starts like one is refused, since a server might read it
// as one of these.
var includeKeys = []string{"_include", "_include:iterate", "_include:recurse",
	"_revinclude", "_revinclude:iterate", "_revinclude:recurse"}

// includes records the request's _include and _revinclude values and the
// resource types they can bring into the response (IncludedTypes), for
// every interaction: a server that honours an include where phigate
// expected none would otherwise return types the policy never saw.
//
// An include that can bring patient data (a patient-compartment type, or
// "*") reads as all patients, unless the resources it brings are bounded
// by the patients the search is pinned to. Only two shapes are:
//
//   - a forward _include, on the searched type, through the very parameter
//     that pins the search (patient and subject count as one: in R4 each
//     type's patient parameter is its subject restricted to Patient), so
//     it brings back the pinned patients themselves;
//   - a _revinclude from a Patient search pinned by _id, through the
//     parameter naming the one patient the source resource is about, so it
//     brings the pinned patients' own resources.
//
// Either way the parameter must be a single reference to the patient the
// resource is about (patient, subject, beneficiary, individual) on a type
// where that is one patient: a multi-valued reference (performer,
// participant, an appointment's patients) matched on one patient may
// bring others along.
//
// :iterate and :recurse follow references of the included resources as
// well, so they never keep a pin; neither does a compartment search, whose
// matches reach the owner through any of several parameters.
func (p *RequestParser) includes(q map[string][]string, fr *FHIRRequest) error {
	for k := range q {
		lk := strings.ToLower(k)
		if (strings.HasPrefix(lk, "_include") || strings.HasPrefix(lk, "_revinclude")) && !slices.Contains(includeKeys, k) {
			return ambiguous("unknown include parameter")
		}
	}
	// A bundle arrives with the union of its entries' types.
	types := append([]string{}, fr.IncludedTypes...)
	var pins []string
	pinsRead := false
	for _, k := range includeKeys {
		reverse := strings.HasPrefix(k, "_revinclude")
		iterate := strings.Contains(k, ":")
		for _, v := range q[k] {
			inc, err := parseInclude(v)
			if err != nil {
				return err
			}
			if reverse {
				fr.RevInclude = append(fr.RevInclude, includeValue(k, v))
			} else {
				fr.Include = append(fr.Include, includeValue(k, v))
			}
			brought := inc.forwardTypes()
			if reverse {
				brought = inc.reverseTypes()
			}
			types = append(types, brought...)
			if !bringsPatientData(brought) {
				continue
			}
			if !pinsRead {
				// Read before any include widens the request.
				pins, pinsRead = p.pins(q, fr), true
			}
			if iterate || !inc.bounded(fr.ResourceType, reverse, pins) {
				fr.AllPatients = true
			}
		}
	}
	slices.Sort(types)
	fr.IncludedTypes = slices.Compact(types)
	return nil
}

// include is one parsed include value: Source:param[:Target], or the
// wildcard ("*" for any part).
type include struct {
	source, param, target string
	wild                  bool
}

func parseInclude(v string) (include, error) {
	if v == "*" {
		return include{wild: true}, nil
	}
	parts := strings.Split(v, ":")
	if len(parts) < 2 || len(parts) > 3 {
		return include{}, ambiguous("include value is not Source:parameter[:Target]")
	}
	inc := include{source: parts[0], param: parts[1]}
	if len(parts) == 3 {
		inc.target = parts[2]
	}
	if inc.source != "*" && !IsResourceType(inc.source) {
		return include{}, ambiguous("include source is not an R4 resource type")
	}
	if inc.param != "*" && !validParamName(inc.param) {
		return include{}, ambiguous("include parameter name")
	}
	if inc.target != "" && inc.target != "*" && !IsResourceType(inc.target) {
		return include{}, ambiguous("include target is not an R4 resource type")
	}
	inc.wild = inc.source == "*" || inc.param == "*" || inc.target == "*"
	return inc, nil
}

func validParamName(s string) bool {
	if s == "" || len(s) > 64 || !isAlpha(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; !isAlpha(c) && !('0' <= c && c <= '9') && c != '-' && c != '_' {
			return false
		}
	}
	return true
}

// forwardTypes are the types an _include brings: the named target, else
// every target of the reference parameter, else anything.
func (inc include) forwardTypes() []string {
	switch {
	case inc.wild:
		return []string{"*"}
	case inc.target != "":
		return []string{inc.target}
	}
	if only, _ := compartment.PatientRef(inc.source, inc.param); only {
		// R4 lists Group among the shared patient parameter's targets,
		// but on this type its element can hold only a Patient.
		return []string{"Patient"}
	}
	if t, ok := compartment.RefTargets(inc.source, inc.param); ok {
		return t
	}
	return []string{"*"}
}

// reverseTypes are the types a _revinclude brings: its source.
func (inc include) reverseTypes() []string {
	if inc.wild {
		return []string{"*"}
	}
	return []string{inc.source}
}

// bounded reports whether the include brings only data of the patients
// the search on rt is pinned to through pins (see includes).
func (inc include) bounded(rt string, reverse bool, pins []string) bool {
	if inc.wild || len(pins) == 0 || !ownerParam(inc.source, inc.param) {
		return false
	}
	if reverse {
		return rt == "Patient" && slices.Contains(pins, "_id") && (inc.target == "" || inc.target == "Patient")
	}
	if inc.source != rt {
		return false
	}
	// patient and subject count as one pin: R4 defines a type's patient
	// parameter as its subject restricted to Patient.
	subjectLike := func(s string) bool { return s == "patient" || s == "subject" }
	return slices.Contains(pins, inc.param) || subjectLike(inc.param) && slices.ContainsFunc(pins, subjectLike)
}

// ownerParams are the parameters that reference the one patient a
// resource is about (a single reference, so matching it on one patient
// leaves room for no other). performer, author, participant and the like
// may name several patients at once, and bound nothing.
var ownerParams = map[string]bool{"patient": true, "subject": true, "beneficiary": true, "individual": true}

// sharedTypes have a patient parameter over a list of references (an
// appointment's participants, a provenance's targets, an audit event's
// entities, a person's links): a match on one patient brings the others.
var sharedTypes = map[string]bool{"Appointment": true, "AuditEvent": true, "Provenance": true, "Person": true}

func ownerParam(source, param string) bool {
	return ownerParams[param] && !sharedTypes[source] && slices.Contains(patientParams[source], param)
}

func bringsPatientData(types []string) bool {
	for _, t := range types {
		if t == "*" || isPatientData(t) {
			return true
		}
	}
	return false
}

// pins returns the parameters that pin a search to its named patients, or
// nil when it is not pinned (all patients, a compartment search, or not a
// type-level search at all).
func (p *RequestParser) pins(q map[string][]string, fr *FHIRRequest) []string {
	if fr.Interaction != InteractionSearchType || fr.AllPatients || len(fr.Patients) == 0 || fr.Compartment != nil {
		return nil
	}
	if fr.ResourceType == "Patient" {
		if len(q["_id"]) > 0 {
			return []string{"_id"}
		}
		return nil
	}
	var pins []string
	for key, vals := range q {
		name, mod, chain := splitParamName(key)
		if mod != "" || chain != "" || !slices.Contains(patientParams[fr.ResourceType], name) || len(vals) == 0 {
			continue
		}
		only, _ := compartment.PatientRef(fr.ResourceType, name)
		if _, ok := p.paramPatients(mod, chain, vals[0], only); ok {
			pins = append(pins, name)
		}
	}
	return pins
}

func includeValue(key, v string) string {
	if _, mod, ok := strings.Cut(key, ":"); ok {
		return v + ":" + mod
	}
	return v
}
