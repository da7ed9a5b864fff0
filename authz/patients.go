package authz

import (
	"github.com/phigate/phigate/internal/compartment"
	"net/url"
	"slices"
	"strings"
)

// searchPatients finds the patients a search on rt is constrained to ("" for
// a system or all-types search). Search parameters are ANDed, so one
// parameter that pins the search to named patients bounds the result; a
// search on patient data without such a parameter reads as all patients.
// Every patient named is recorded, constraining or not.
//
// Repeated occurrences of one patient parameter must agree: servers differ
// on whether repeats AND, OR, or keep the first or last, so disagreeing
// repeats are refused.
func (p *RequestParser) searchPatients(rt string, q map[string][]string, fr *FHIRRequest) error {
	if rt == "Patient" {
		vals := q["_id"]
		if len(vals) == 0 {
			fr.AllPatients = true
			return nil
		}
		var first []string
		for i, v := range vals {
			if err := p.checkIDs(v); err != nil {
				return err
			}
			ids, ok := resolveRefs(v, true, p.base)
			if !ok {
				fr.AllPatients = true
			}
			if i == 0 {
				first = ids
			} else if !slices.Equal(first, ids) {
				return errConflict
			}
			fr.Patients = append(fr.Patients, ids...)
		}
		return nil
	}
	// Every reference parameter that can point at a Patient names the
	// patients its value resolves to, on any type: a search on Group by
	// member, or on Observation by focus, is still a question about those
	// patients. Only the compartment parameters of a patient-data type can
	// pin the search (bound its result to the patients named).
	pins, patientData := patientParams[rt]
	if rt == "" {
		pins, patientData = []string{"patient"}, true
	}
	constrained := false
	for key, vals := range q {
		name, mod, chain := splitParamName(key)
		var only, isRef bool
		if rt == "" {
			isRef, only = anyPatientRef[name], name == "patient"
		} else {
			only, isRef = compartment.PatientRef(rt, name)
		}
		if !isRef {
			continue
		}
		pinning := patientData && slices.Contains(pins, name)
		var first []string
		for i, v := range vals {
			if err := p.checkIDs(v); err != nil {
				return err
			}
			ids, ok := p.paramPatients(mod, chain, v, only)
			fr.Patients = append(fr.Patients, ids...)
			if ok && pinning {
				constrained = true
			}
			if i == 0 {
				first = ids
			} else if !slices.Equal(first, ids) {
				return errConflict
			}
		}
	}
	if !constrained && patientData {
		fr.AllPatients = true
	}
	return nil
}

// anyPatientRef holds the codes that are a Patient reference on some
// type, for searches not bound to one type (the system level, a
// compartment's "*").
var anyPatientRef = compartment.PatientRefCodes()

var errConflict = ambiguous("repeated patient parameter with different values")

// checkIDs bounds the OR alternatives of one patient parameter value
// before any of them is resolved.
func (p *RequestParser) checkIDs(v string) error {
	if strings.Count(v, ",") >= p.maxParamIDs {
		return overLimit("more ids in one parameter value than request.max_param_ids")
	}
	return nil
}

// splitParamName splits "subject:Patient.name" into "subject", "Patient", "name".
func splitParamName(k string) (name, mod, chain string) {
	name, chain, _ = strings.Cut(k, ".")
	name, mod, _ = strings.Cut(name, ":")
	return
}

// paramPatients resolves one occurrence of a reference parameter that can
// point at a Patient. ids are every patient the value may name; ok is true
// when the occurrence pins the search to them.
//
// FHIR reads a reference value without a type ("subject=123") as any
// resource with that id, and a server may well resolve it to the Patient,
// so a bare id always names that patient, typed or not, relative or
// absolute, on the FHIR base or elsewhere. Naming too many patients can
// only deny; naming too few lets the search reach a patient the policy
// never saw.
//
// Only the plain forms pin: "patient=123" where Patient is the
// parameter's one target, "subject=Patient/123", an absolute URL on the
// base, which every server reads the same way. A modifier or a chain
// never pins, not even "subject:Patient=123" or "patient._id=123": a
// server that does not support the form may ignore the parameter and
// return every patient's resources.
func (p *RequestParser) paramPatients(mod, chain, v string, only bool) ([]string, bool) {
	switch {
	case mod == "":
	case mod == "Patient":
		only = true
	default:
		// :identifier, :missing, :not, :text, :above, another type: no
		// patient id to name. The search stays unpinned.
		return nil, false
	}
	if chain != "" {
		if chain == "_id" {
			ids, _ := resolveRefs(v, true, p.base)
			return ids, false
		}
		return nil, false // subject.name=..., patient.identifier=...: unresolvable
	}
	ids, ok := resolveRefs(v, only, p.base)
	return ids, ok && mod == ""
}

// resolveRefs resolves a comma-separated (OR) list of references to the
// patient ids they may name. ok is true when every alternative pins: a
// typed Patient reference, or a bare id where onlyPatient.
func resolveRefs(v string, onlyPatient bool, base string) (ids []string, ok bool) {
	ok = true
	for item := range strings.SplitSeq(v, ",") {
		id, named, pins := patientRef(item, onlyPatient, base)
		if named {
			ids = append(ids, id)
		}
		if !pins {
			ok = false
		}
	}
	slices.Sort(ids)
	return slices.Compact(ids), ok && len(ids) > 0
}

// patientRef reads one reference value: "Patient/123",
// "Patient/123/_history/1", an absolute URL ending in either, or a bare
// "123". named reports that the value may mean patient id; pins that it
// can mean nothing else: a typed reference relative to or on the FHIR
// base, or a bare id where onlyPatient.
func patientRef(r string, onlyPatient bool, base string) (id string, named, pins bool) {
	onBase := true
	if strings.Contains(r, "://") {
		u, err := url.Parse(r)
		if err != nil || u.RawQuery != "" || u.Fragment != "" {
			return "", false, false
		}
		path := u.EscapedPath()
		rest, found := strings.CutPrefix(path, base+"/")
		if !found {
			// Another server's Patient/123 may still be resolved by id.
			onBase = false
			i := strings.LastIndex(path, "/Patient/")
			if i < 0 {
				return "", false, false
			}
			rest = path[i+1:]
		}
		r = rest
	}
	if rest, found := strings.CutPrefix(r, "Patient/"); found {
		id, hist, _ := strings.Cut(rest, "/")
		if !validID(id) || hist != "" && !validHistory(hist) {
			return "", false, false
		}
		return id, true, onBase
	}
	if strings.Contains(r, "/") || !validID(r) {
		return "", false, false // Group/5, urn:uuid:..., an identifier
	}
	return r, true, onlyPatient
}

// validHistory accepts "_history/<version>".
func validHistory(s string) bool {
	v, ok := strings.CutPrefix(s, "_history/")
	return ok && validID(v)
}

// finishPatients sorts and de-duplicates patients and refuses conflicts.
func finishPatients(fr *FHIRRequest) {
	if fr.Patients == nil {
		fr.Patients = []string{}
	}
	slices.Sort(fr.Patients)
	fr.Patients = slices.Compact(fr.Patients)
}
