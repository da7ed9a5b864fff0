package authz

import (
	"errors"
	"fmt"
	"strings"
)

// legacyRoute is a compiled LegacyRoute.
type legacyRoute struct {
	method string
	segs   []string // literal, or "" for a {name} capture
	names  []string // capture name per segment ("" for literals)
	kind   string
	from   string // "path", "query", "header" or ""
	name   string
	pos    int // segment index of the path capture
}

func compileLegacy(r LegacyRoute) (legacyRoute, error) {
	lr := legacyRoute{method: r.Method, kind: r.Kind, pos: -1}
	switch r.Method {
	case "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE":
	default:
		return lr, errors.New("method: must be an upper-case HTTP method")
	}
	if r.Kind == "" {
		return lr, errors.New("kind: required")
	}
	segs, err := splitPath(r.Pattern)
	if err != nil || len(segs) == 0 {
		return lr, errors.New("pattern: must be a canonical absolute path")
	}
	for _, s := range segs {
		if strings.HasPrefix(s, "{") && strings.HasSuffix(s, "}") && len(s) > 2 {
			lr.segs = append(lr.segs, "")
			lr.names = append(lr.names, s[1:len(s)-1])
			continue
		}
		if strings.ContainsAny(s, "{}") {
			return lr, fmt.Errorf("pattern: segment %q mixes a capture and text", s)
		}
		lr.segs = append(lr.segs, s)
		lr.names = append(lr.names, "")
	}
	if r.PatientFrom == "" {
		return lr, nil
	}
	from, name, ok := strings.Cut(r.PatientFrom, ":")
	if !ok || name == "" {
		return lr, errors.New(`patient_from: want "path:NAME", "query:NAME" or "header:NAME"`)
	}
	lr.from, lr.name = from, name
	switch from {
	case "path":
		for i, n := range lr.names {
			if n == name {
				lr.pos = i
			}
		}
		if lr.pos < 0 {
			return lr, fmt.Errorf("patient_from: the pattern has no {%s}", name)
		}
	case "query":
	case "header":
		lr.name = strings.ToLower(name)
	default:
		return lr, errors.New(`patient_from: want "path:NAME", "query:NAME" or "header:NAME"`)
	}
	return lr, nil
}

// match reports whether the route matches; when it does, the FHIRRequest
// is the non-FHIR interaction of the route's kind. A route that names where
// the patient is but finds none, or finds several, refuses the request.
func (r *legacyRoute) match(method string, segs []string, q map[string][]string, h map[string]string) (FHIRRequest, bool, error) {
	if method != r.method && !(method == "HEAD" && r.method == "GET") || len(segs) != len(r.segs) {
		return FHIRRequest{}, false, nil
	}
	for i, s := range r.segs {
		if s != "" && s != segs[i] {
			return FHIRRequest{}, false, nil
		}
	}
	fr := FHIRRequest{Interaction: InteractionNonFHIR, Kind: r.kind, Patients: []string{}}
	var id string
	switch r.from {
	case "":
		fr.AllPatients = true
		return fr, true, nil
	case "path":
		id = segs[r.pos]
	case "query":
		vals := q[r.name]
		for _, v := range vals[min(1, len(vals)):] {
			if v != vals[0] {
				return fr, true, errConflict
			}
		}
		if len(vals) > 0 {
			id = vals[0]
		}
	case "header":
		id = strings.TrimSpace(h[r.name])
	}
	if !validID(id) {
		return fr, true, ambiguous("legacy route without a valid patient id")
	}
	fr.Patients = []string{id}
	return fr, true, nil
}
