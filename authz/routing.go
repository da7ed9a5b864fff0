package authz

import (
	"strings"
)

// interpret turns a canonical path and query into a FHIR interaction.
// inEntry is true inside a batch or transaction, where nesting is refused.
func (p *RequestParser) interpret(method string, path canonPath, q map[string][]string,
	h map[string]string, body []byte, inEntry bool) (FHIRRequest, error) {
	switch method {
	case "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE":
	default:
		return FHIRRequest{}, unsupported("method")
	}
	if !inEntry {
		for i := range p.legacy {
			if fr, ok, err := p.legacy[i].match(method, path.segs, q, h); ok || err != nil {
				fr.IncludedTypes = []string{}
				return fr, err
			}
		}
	}
	rel, ok := p.relative(path.segs)
	if !ok {
		return FHIRRequest{}, &Error{Code: CodeNoRoute, Detail: "path outside the FHIR base and every legacy route"}
	}
	fr, err := p.fhir(method, rel, q, h, body, inEntry)
	if err != nil {
		return FHIRRequest{}, err
	}
	if err := p.includes(q, &fr); err != nil {
		return FHIRRequest{}, err
	}
	finishPatients(&fr)
	if len(fr.Patients) > p.maxPatients {
		return FHIRRequest{}, overLimit("more patients than request.max_patients")
	}
	return fr, nil
}

// relative returns the segments after the base.
func (p *RequestParser) relative(segs []string) ([]string, bool) {
	base := p.base[1:]
	for base != "" {
		var b string
		b, base, _ = strings.Cut(base, "/")
		if len(segs) == 0 || segs[0] != b {
			return nil, false
		}
		segs = segs[1:]
	}
	return segs, true
}

func isRead(method string) bool { return method == "GET" || method == "HEAD" }

func (p *RequestParser) fhir(method string, s []string, q map[string][]string,
	h map[string]string, body []byte, inEntry bool) (FHIRRequest, error) {
	var fr FHIRRequest
	if len(s) == 0 {
		switch {
		case isRead(method):
			fr.Interaction = InteractionSearchSystem
			if err := p.searchPatients("", q, &fr); err != nil {
				return fr, err
			}
			fr.AllPatients = true
			return fr, nil
		case method == "POST" && !inEntry:
			return p.bundle(q, h, body)
		}
		return fr, unsupported("method on the FHIR base")
	}
	first := s[0]
	switch {
	case first == "metadata":
		if len(s) != 1 || !isRead(method) {
			return fr, unsupported("metadata shape")
		}
		fr.Interaction = InteractionCapabilities
		return fr, nil
	case first == "_history":
		if len(s) != 1 || !isRead(method) {
			return fr, unsupported("history shape")
		}
		fr.Interaction, fr.AllPatients = InteractionHistorySystem, true
		return fr, nil
	case first == "_search":
		if len(s) != 1 || method != "POST" {
			return fr, unsupported("search shape")
		}
		if err := p.formBody(h, body, q); err != nil {
			return fr, err
		}
		fr.Interaction, fr.AllPatients = InteractionSearchSystem, true
		if err := p.searchPatients("", q, &fr); err != nil {
			return fr, err
		}
		return fr, nil
	case strings.HasPrefix(first, "$"):
		if len(s) != 1 {
			return fr, unsupported("operation shape")
		}
		return p.operation(method, "", "", first, q, h)
	}
	if !IsResourceType(first) {
		return fr, ambiguous("not an R4 resource type")
	}
	fr.ResourceType = first
	switch len(s) {
	case 1:
		return p.typeLevel(method, first, q, h, body)
	case 2:
		second := s[1]
		switch {
		case second == "_search":
			if method != "POST" {
				return fr, unsupported("_search needs POST")
			}
			if err := p.formBody(h, body, q); err != nil {
				return fr, err
			}
			fr.Interaction = InteractionSearchType
			if err := p.searchPatients(first, q, &fr); err != nil {
				return fr, err
			}
			return fr, nil
		case second == "_history":
			if !isRead(method) {
				return fr, unsupported("history needs GET")
			}
			fr.Interaction = InteractionHistoryType
			fr.AllPatients = isPatientData(first)
			return fr, nil
		case strings.HasPrefix(second, "$"):
			return p.operation(method, first, "", second, q, h)
		}
		if !validID(second) {
			return fr, ambiguous("invalid resource id")
		}
		return p.instance(method, first, second, q, h, body)
	case 3:
		id, third := s[1], s[2]
		if !validID(id) {
			return fr, ambiguous("invalid resource id")
		}
		switch {
		case third == "_history":
			if !isRead(method) {
				return fr, unsupported("history needs GET")
			}
			fr.Interaction, fr.ID = InteractionHistoryInstance, id
			if first == "Patient" {
				fr.Patients = []string{id}
			}
			return fr, nil
		case strings.HasPrefix(third, "$"):
			return p.operation(method, first, id, third, q, h)
		}
		if !isRead(method) {
			return fr, unsupported("compartment search needs GET")
		}
		return p.compartment(first, id, third, q)
	case 4:
		id, third, fourth := s[1], s[2], s[3]
		if !validID(id) {
			return fr, ambiguous("invalid resource id")
		}
		switch {
		case third == "_history":
			if !isRead(method) {
				return fr, unsupported("vread needs GET")
			}
			if !validID(fourth) {
				return fr, ambiguous("invalid version id")
			}
			fr.Interaction, fr.ID, fr.Version = InteractionVRead, id, fourth
			if first == "Patient" {
				fr.Patients = []string{id}
			}
			return fr, nil
		case fourth == "_search" && method == "POST":
			if err := p.formBody(h, body, q); err != nil {
				return fr, err
			}
			return p.compartment(first, id, third, q)
		}
	}
	return fr, unsupported("FHIR path shape")
}

// typeLevel handles [base]/Type: search, create, and conditional
// update/patch/delete (whose criteria are a search).
func (p *RequestParser) typeLevel(method, rt string, q map[string][]string, h map[string]string, body []byte) (FHIRRequest, error) {
	fr := FHIRRequest{ResourceType: rt}
	switch method {
	case "GET", "HEAD":
		fr.Interaction = InteractionSearchType
		if err := p.searchPatients(rt, q, &fr); err != nil {
			return fr, err
		}
		return fr, nil
	case "POST":
		fr.Interaction = InteractionCreate
		if cond, ok := h[headerIfNoneExist]; ok {
			// Conditional create: the server searches first and creates
			// only when nothing matches, so the criteria are a search
			// whose patients count like any other.
			cq, err := parseQuery(cond, nil)
			if err != nil {
				return fr, err
			}
			if err := p.searchPatients(rt, cq, &fr); err != nil {
				return fr, err
			}
		}
		if err := p.resourceBody(h, body, rt, "", &fr, true); err != nil {
			return fr, err
		}
		return fr, nil
	case "PUT", "PATCH", "DELETE":
		fr.Interaction = map[string]Interaction{"PUT": InteractionUpdate, "PATCH": InteractionPatch, "DELETE": InteractionDelete}[method]
		// Conditional: the server picks the resource by search, so the
		// search decides which patients are touched.
		if err := p.searchPatients(rt, q, &fr); err != nil {
			return fr, err
		}
		if method != "DELETE" {
			if err := p.resourceBody(h, body, rt, "", &fr, method == "PUT"); err != nil {
				return fr, err
			}
		}
		return fr, nil
	}
	return fr, unsupported("method")
}

func (p *RequestParser) instance(method, rt, id string, q map[string][]string, h map[string]string, body []byte) (FHIRRequest, error) {
	fr := FHIRRequest{ResourceType: rt, ID: id}
	if rt == "Patient" {
		fr.Patients = []string{id}
	}
	switch method {
	case "GET", "HEAD":
		fr.Interaction = InteractionRead
	case "DELETE":
		fr.Interaction = InteractionDelete
	case "PUT":
		fr.Interaction = InteractionUpdate
		if err := p.resourceBody(h, body, rt, id, &fr, true); err != nil {
			return fr, err
		}
	case "PATCH":
		fr.Interaction = InteractionPatch
		if err := p.resourceBody(h, body, rt, id, &fr, false); err != nil {
			return fr, err
		}
	default:
		return fr, unsupported("method on an instance")
	}
	return fr, nil
}

func (p *RequestParser) compartment(ctype, id, rt string, q map[string][]string) (FHIRRequest, error) {
	fr := FHIRRequest{Interaction: InteractionSearchCompartment, Compartment: &Compartment{Type: ctype, ID: id}}
	if !compartmentTypes[ctype] {
		return fr, unsupported("not a compartment type")
	}
	if rt != "*" && !IsResourceType(rt) {
		return fr, ambiguous("not an R4 resource type")
	}
	fr.ResourceType = rt
	if rt == "*" {
		if err := p.searchPatients("", q, &fr); err != nil {
			return fr, err
		}
		fr.AllPatients = ctype != "Patient"
	} else {
		if err := p.searchPatients(rt, q, &fr); err != nil {
			return fr, err
		}
	}
	if ctype == "Patient" {
		// The compartment bounds the result to this patient, whatever the
		// other parameters say.
		fr.AllPatients = false
		fr.Patients = append(fr.Patients, id)
	}
	return fr, nil
}

func (p *RequestParser) operation(method, rt, id, op string, q map[string][]string, h map[string]string) (FHIRRequest, error) {
	name := op[1:]
	fr := FHIRRequest{Interaction: InteractionOperation, ResourceType: rt, ID: id, Operation: name}
	if !validOpName(name) {
		return fr, ambiguous("invalid operation name")
	}
	if method != "GET" && method != "POST" && method != "HEAD" {
		return fr, unsupported("operation method")
	}
	if method == "POST" {
		if err := p.contentType(h, fhirTypes, true); err != nil {
			return fr, err
		}
	}
	switch {
	case rt == "":
		// System-level operations ($export, $process-message, ...) reach
		// across patients.
		fr.AllPatients = true
	case id != "" && rt == "Patient":
		fr.Patients = []string{id}
	case id != "":
		// Group/x/$export and friends reach the group's members, unknown here.
		fr.AllPatients = rt == "Group" || rt == "List"
	case rt == "Patient":
		// Patient/$everything, Patient/$export, Patient/$match: all patients.
		fr.AllPatients = true
	case isPatientData(rt):
		if method == "POST" {
			// Parameters in the body are not read: assume the widest.
			fr.AllPatients = true
			break
		}
		if err := p.searchPatients(rt, q, &fr); err != nil {
			return fr, err
		}
	}
	return fr, nil
}

func validOpName(s string) bool {
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

func isAlpha(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }

// validID is the FHIR id grammar: [A-Za-z0-9\-\.]{1,64}.
func validID(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isAlpha(c) && !('0' <= c && c <= '9') && c != '-' && c != '.' {
			return false
		}
	}
	return true
}
