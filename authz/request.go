package authz

import (
	"errors"
	"fmt"
	"github.com/phigate/phigate/internal/credential"
	"strings"
)

// Defaults of RequestConfig.
const (
	DefaultFHIRBase    = "/fhir"
	DefaultMaxBody     = 1 << 20
	DefaultMaxEntries  = 100
	DefaultMaxPatients = 100
	DefaultMaxParamIDs = 100
	// maxRefusedPatients is how many patients the record of a request
	// refused before the policy (an unauthenticated caller) still lists;
	// FHIRRequest.PatientsWithheld counts the rest.
	maxRefusedPatients  = 10
	maxBreakGlassReason = 512
	maxQueryParams      = 256
	maxPathSegments     = 16
	headerPurpose       = "x-purpose-of-use"
	headerBreakGlass    = "x-break-glass"
	headerIfNoneExist   = "if-none-exist"
)

// RequestConfig configures a RequestParser.
type RequestConfig struct {
	// Base is the FHIR base path, e.g. "/fhir".
	Base string `json:"base" yaml:"base"`
	// MaxBody bounds the request bodies phigate reads (form searches,
	// create/update resources, batch and transaction bundles).
	MaxBody int `json:"max_body,omitempty" yaml:"max_body,omitempty"`
	// MaxEntries bounds the entries of a batch or transaction. Every entry
	// is a target the policy evaluates on its own, so the cap bounds the
	// policy's work for one request. Default 100.
	MaxEntries int `json:"max_entries,omitempty" yaml:"max_entries,omitempty"`
	// MaxPatients bounds the distinct patients one request names, across
	// its parameters, body and bundle entries. A request naming more is
	// refused (400): each patient is policy work and an audit entity.
	// Default 100.
	MaxPatients int `json:"max_patients,omitempty" yaml:"max_patients,omitempty"`
	// MaxParamIDs bounds the alternatives in one value of a patient search
	// parameter ("patient=a,b,c" is three). Default 100.
	MaxParamIDs  int           `json:"max_param_ids,omitempty" yaml:"max_param_ids,omitempty"`
	LegacyRoutes []LegacyRoute `json:"legacy_routes,omitempty" yaml:"legacy_routes,omitempty"`
}

// LegacyRoute describes a non-FHIR endpoint so the policy can reason about
// it. Pattern segments are literals or {name}; PatientFrom says where the
// patient id is: "path:NAME", "query:NAME" or "header:NAME". A route with
// no PatientFrom may return any patient's data and reads as all patients.
type LegacyRoute struct {
	Method      string `json:"method" yaml:"method"`
	Pattern     string `json:"pattern" yaml:"pattern"`
	Kind        string `json:"kind" yaml:"kind"`
	PatientFrom string `json:"patient_from,omitempty" yaml:"patient_from,omitempty"`
}

// Validate fills defaults and names the first bad field.
func (c *RequestConfig) Validate() error {
	if c.Base == "" {
		c.Base = DefaultFHIRBase
	}
	if !strings.HasPrefix(c.Base, "/") || strings.HasSuffix(c.Base, "/") || len(c.Base) < 2 {
		return errors.New(`request.base: must start with "/" and not end with "/"`)
	}
	if _, err := splitPath(c.Base); err != nil {
		return errors.New("request.base: not a canonical path")
	}
	switch {
	case c.MaxBody == 0:
		c.MaxBody = DefaultMaxBody
	case c.MaxBody < 0:
		return errors.New("request.max_body: negative")
	}
	switch {
	case c.MaxEntries == 0:
		c.MaxEntries = DefaultMaxEntries
	case c.MaxEntries < 0:
		return errors.New("request.max_entries: negative")
	}
	switch {
	case c.MaxPatients == 0:
		c.MaxPatients = DefaultMaxPatients
	case c.MaxPatients < 0:
		return errors.New("request.max_patients: negative")
	}
	switch {
	case c.MaxParamIDs == 0:
		c.MaxParamIDs = DefaultMaxParamIDs
	case c.MaxParamIDs < 0:
		return errors.New("request.max_param_ids: negative")
	}
	for i, r := range c.LegacyRoutes {
		if _, err := compileLegacy(r); err != nil {
			return fmt.Errorf("request.legacy_routes[%d].%w", i, err)
		}
	}
	return nil
}

// RequestParser builds the canonical Request from what the proxy saw. It
// refuses, with CodeAmbiguous, every request that two reasonable HTTP or
// FHIR implementations could read differently, because the upstream must
// act on exactly the request the policy decided. It is safe for concurrent use.
type RequestParser struct {
	base        string
	maxBody     int
	maxEntries  int
	maxPatients int
	maxParamIDs int
	legacy      []legacyRoute
}

var _ Parser = (*RequestParser)(nil)

// NewRequestParser validates cfg and returns a parser.
func NewRequestParser(cfg RequestConfig) (*RequestParser, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	p := &RequestParser{base: cfg.Base, maxBody: cfg.MaxBody, maxEntries: cfg.MaxEntries,
		maxPatients: cfg.MaxPatients, maxParamIDs: cfg.MaxParamIDs}
	for _, r := range cfg.LegacyRoutes {
		lr, _ := compileLegacy(r)
		p.legacy = append(p.legacy, lr)
	}
	return p, nil
}

// ambiguous builds the refusal error. Details name the rule, never the
// offending value, which may carry PHI.
func ambiguous(detail string) error { return &Error{Code: CodeAmbiguous, Detail: detail} }

func unsupported(detail string) error { return &Error{Code: CodeUnsupported, Detail: detail} }

func overLimit(detail string) error { return &Error{Code: CodeOverLimit, Detail: detail} }

// overrideHeaders would let the upstream (or a framework in front of it)
// act on another method or path than the one decided.
var overrideHeaders = []string{"x-http-method-override", "x-http-method", "x-method-override",
	"x-original-url", "x-rewrite-url", "x-original-method"}

// Parse implements Parser.
func (p *RequestParser) Parse(in *CheckInput) (*Request, error) {
	for _, h := range overrideHeaders {
		if _, ok := in.Headers[h]; ok {
			return nil, ambiguous("method or path override header")
		}
	}
	req := &Request{
		ID: in.ID, Time: in.Received, TimeNS: in.Received.UnixNano(), Method: in.Method,
		Source: in.Source, Headers: make(map[string]string, len(in.Headers)),
		Identity:   Identity{Roles: []string{}, Scopes: []Scope{}},
		BreakGlass: BreakGlassRequest{Grants: []Grant{}}, Care: []CareRelationship{},
		Consents: []ConsentDirective{}, Elevations: []Elevation{}, Alerts: []Alert{}, Throttle: []string{},
		Approval: ApprovalInput{},
	}
	for k, v := range in.Headers {
		// Credentials are withheld from the policy input, which is
		// also what the audit trail records; both read one list.
		if !credential.Header(k, v) {
			req.Headers[k] = v
		}
	}
	if err := parseIntent(in.Headers, req); err != nil {
		return nil, err
	}
	path, query, err := p.parseURL(in.Path)
	if err != nil {
		return nil, err
	}
	req.Path, req.Query = path.canonical, query
	fr, err := p.interpret(in.Method, path, query, in.Headers, in.Body, false)
	if err != nil {
		return nil, err
	}
	req.FHIR = fr
	return req, nil
}

// parseIntent reads the purpose-of-use and break-glass headers.
func parseIntent(h map[string]string, req *Request) error {
	if v, ok := h[headerPurpose]; ok {
		code, ok := CanonicalPurpose(strings.TrimSpace(v))
		if !ok {
			return ambiguous("unknown purpose of use")
		}
		req.Purpose = code
	}
	if v, ok := h[headerBreakGlass]; ok {
		v = strings.TrimSpace(v)
		if len(v) > maxBreakGlassReason || hasControl(v) {
			return ambiguous("break-glass reason too long or not text")
		}
		req.BreakGlass.Requested = true
		req.BreakGlass.Reason = v
	}
	return nil
}
