// Package compartment is the one statement, shared by the request side
// (authz) and the response side (filters), of which FHIR R4 resources
// belong to a patient and through which elements.
//
// Both sides used to carry their own hand-written table, and the two had
// drifted: a type or element known to one side but not the other is a
// resource one check lets through. The facts are kept as data, embedded
// from the FHIR R4 (4.0.1) specification: patient.json is the Patient
// CompartmentDefinition (resource type → search parameters) and
// searchparams.json holds, for each of those parameters, the element paths
// of its SearchParameter expression. Types that R4 leaves out of the
// compartment but that carry patient data are a separate list in Go
// (extras.go), so that what comes from the specification and what this
// product adds stay apart.
package compartment

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

//go:embed patient.json
var definitionJSON []byte

//go:embed searchparams.json
var searchParamsJSON []byte

// definition is patient.json.
type definition struct {
	Definition  string              `json:"definition"`
	FHIRVersion string              `json:"fhirVersion"`
	Resources   map[string][]string `json:"resources"`
}

// searchParams is searchparams.json: "Type.param" → element paths.
type searchParams struct {
	FHIRVersion string              `json:"fhirVersion"`
	Params      map[string][]string `json:"params"`
}

// entry is what the package knows about one resource type.
type entry struct {
	params []string   // search parameters that pin a search to patients
	paths  [][]string // element paths, split on dots
}

var table = mustBuild(definitionJSON, searchParamsJSON, extras)

// mustBuild panics on inconsistent data: the files are embedded, so any
// test run of a dependent package catches a bad edit before it ships.
func mustBuild(def, sp []byte, extra []extraType) map[string]entry {
	t, err := build(def, sp, extra)
	if err != nil {
		panic(err)
	}
	return t
}

func build(defJSON, spJSON []byte, extra []extraType) (map[string]entry, error) {
	var def definition
	if err := json.Unmarshal(defJSON, &def); err != nil {
		return nil, fmt.Errorf("compartment: patient.json: %w", err)
	}
	var sp searchParams
	if err := json.Unmarshal(spJSON, &sp); err != nil {
		return nil, fmt.Errorf("compartment: searchparams.json: %w", err)
	}
	t := make(map[string]entry, len(def.Resources)+len(extra))
	for rt, params := range def.Resources {
		var e entry
		for _, p := range params {
			paths, ok := sp.Params[rt+"."+p]
			if !ok || len(paths) == 0 {
				return nil, fmt.Errorf("compartment: %s.%s has no element path", rt, p)
			}
			e.add(p, paths)
		}
		// A type's own "patient" parameter is the compartment constraint
		// restricted to Patient targets, so it pins a search just as well.
		if paths, ok := sp.Params[rt+".patient"]; ok && !slices.Contains(e.params, "patient") {
			e.add("patient", paths)
		}
		if rt == "Patient" {
			// Patient?link=X returns the patients linked to X, not X:
			// the parameter names a patient but selects others, so it
			// must not count as pinning the search. Its path stays, for
			// readers that check references.
			e.params = nil
		}
		t[rt] = e
	}
	for key := range sp.Params {
		rt, p, _ := strings.Cut(key, ".")
		if _, ok := def.Resources[rt]; !ok {
			return nil, fmt.Errorf("compartment: %s: type not in the compartment definition", key)
		}
		if !slices.Contains(def.Resources[rt], p) && p != "patient" {
			return nil, fmt.Errorf("compartment: %s: parameter not in the compartment definition", key)
		}
	}
	for _, x := range extra {
		if _, ok := t[x.Type]; ok {
			return nil, fmt.Errorf("compartment: extra %s is already in the compartment definition", x.Type)
		}
		e := entry{params: slices.Clone(x.Params)}
		for _, p := range x.Paths {
			e.addPath(p)
		}
		t[x.Type] = e
	}
	return t, nil
}

func (e *entry) add(param string, paths []string) {
	e.params = append(e.params, param)
	for _, p := range paths {
		e.addPath(p)
	}
}

func (e *entry) addPath(p string) {
	split := strings.Split(p, ".")
	if !slices.ContainsFunc(e.paths, func(q []string) bool { return slices.Equal(q, split) }) {
		e.paths = append(e.paths, split)
	}
}

// Params returns the search parameters that restrict a search on rt to the
// patients they name, and whether rt holds patient data at all. A type
// with ok and no parameters (Patient, Binary, Bundle) is patient data that
// no parameter but _id pins. The slice is the caller's.
func Params(rt string) ([]string, bool) {
	e, ok := table[rt]
	if !ok {
		return nil, false
	}
	return slices.Clone(e.params), true
}

// ParamsByType returns Params for every patient-data type, as a new map.
func ParamsByType() map[string][]string {
	m := make(map[string][]string, len(table))
	for rt, e := range table {
		m[rt] = slices.Clone(e.params)
	}
	return m
}

// Paths returns the element paths, split on dots, whose Patient references
// place a resource of type rt in a patient's compartment, or nil when rt is
// not patient data. It runs per resource on the response path, so the
// slices are shared: callers must not modify them.
func Paths(rt string) [][]string { return table[rt].paths }

// Member reports whether resources of type rt hold patient data: a type of
// the R4 Patient compartment or one of the extras.
func Member(rt string) bool {
	_, ok := table[rt]
	return ok
}
