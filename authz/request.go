package authz

import (
	"net/url"
	"strings"
)

// RequestParser is a first, minimal FHIR request parser: base path, resource
// type, id. It is replaced by the full canonicalizing parser.
type RequestParser struct {
	Base string // e.g. "/fhir"
}

// Parse implements Parser.
func (p *RequestParser) Parse(in *CheckInput) (*Request, error) {
	u, err := url.ParseRequestURI(in.Path)
	if err != nil {
		return nil, Errorf(CodeAmbiguous, "unparsable path")
	}
	req := partialRequest(in)
	req.Path = u.Path
	req.Query = u.Query()
	req.Headers = in.Headers
	rest, ok := strings.CutPrefix(u.Path, p.Base)
	if !ok {
		return nil, Errorf(CodeUnsupported, "path outside the FHIR base")
	}
	seg := strings.Split(strings.Trim(rest, "/"), "/")
	switch {
	case len(seg) == 1 && seg[0] != "":
		req.FHIR.Interaction = "search-type"
		req.FHIR.ResourceType = seg[0]
	case len(seg) == 2:
		req.FHIR.Interaction = "read"
		req.FHIR.ResourceType, req.FHIR.ID = seg[0], seg[1]
		if seg[0] == "Patient" {
			req.FHIR.Patients = []string{seg[1]}
		}
	default:
		return nil, Errorf(CodeUnsupported, "unsupported FHIR path shape")
	}
	return req, nil
}
