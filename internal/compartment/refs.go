package compartment

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
)

// patientrefs.json lists, for every resource type, each FHIR R4 search
// parameter of type reference whose targets include Patient, and whether
// Patient is its only target. It is generated from the specification's
// SearchParameter definitions (see spec_test.go) rather than written by
// hand: a parameter missing here is a search that names a patient without
// the request side noticing.
//
//go:embed patientrefs.json
var patientRefsJSON []byte

type patientRefsFile struct {
	FHIRVersion string                     `json:"fhirVersion"`
	Source      string                     `json:"source"`
	Note        string                     `json:"note"`
	Params      map[string]map[string]bool `json:"params"`
}

var refs = mustRefs(patientRefsJSON)

// reftargets.json holds the target types of every R4 reference search
// parameter, generated like patientrefs.json.
//
//go:embed reftargets.json
var refTargetsJSON []byte

var targets = func() map[string]map[string][]string {
	var f struct {
		FHIRVersion string                         `json:"fhirVersion"`
		Params      map[string]map[string][]string `json:"params"`
	}
	if err := json.Unmarshal(refTargetsJSON, &f); err != nil || f.FHIRVersion != "4.0.1" || len(f.Params) == 0 {
		panic(fmt.Errorf("compartment: reftargets.json: not the R4 table (%v)", err))
	}
	return f.Params
}()

// RefTargets returns the target types of rt's reference search parameter
// code, ["*"] for one that may reference any type, and false when rt has
// no such reference parameter. The slice is the caller's.
func RefTargets(rt, code string) ([]string, bool) {
	ts, ok := targets[rt][code]
	return slices.Clone(ts), ok
}

func mustRefs(b []byte) patientRefsFile {
	var f patientRefsFile
	if err := json.Unmarshal(b, &f); err != nil {
		panic(fmt.Errorf("compartment: patientrefs.json: %w", err))
	}
	if f.FHIRVersion != "4.0.1" || len(f.Params) == 0 {
		panic("compartment: patientrefs.json: not the R4 table")
	}
	return f
}

// PatientRef reports whether code is a reference search parameter of rt
// that can point at a Patient (ok), and whether Patient is its only target
// (only), in which case a bare id can mean nothing but a patient.
func PatientRef(rt, code string) (only, ok bool) {
	only, ok = refs.Params[rt][code]
	return
}

// PatientRefCodes returns, as a new map, every search parameter code that
// is a reference to Patient on at least one resource type. A search not
// bound to one type (the system level, or _type) may apply any of them.
func PatientRefCodes() map[string]bool {
	m := map[string]bool{}
	for _, ps := range refs.Params {
		for code := range ps {
			m[code] = true
		}
	}
	return m
}

// PatientRefTypes returns the resource types that have at least one
// reference search parameter that can point at a Patient, sorted.
func PatientRefTypes() []string {
	return slices.Sorted(maps.Keys(refs.Params))
}
