package authz

import (
	"errors"
	"fmt"
	"github.com/phigate/phigate/internal/compartment"
	"github.com/phigate/phigate/internal/credential"
	"net/url"
	"slices"
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
	maxRefusedPatients   = 10
	maxBreakGlassReason  = 512
	maxQueryParams       = 256
	maxPathSegments      = 16
	headerPurpose        = "x-purpose-of-use"
	headerBreakGlass     = "x-break-glass"
	headerIfNoneExist    = "if-none-exist"
	interactionNonFHIR   = "non-fhir"
	interactionSearchTyp = "search-type"
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
		BreakGlass: BreakGlassRequest{Grants: []Grant{}},
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

func hasControl(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f {
			return true
		}
	}
	return false
}

// canonPath is a path split into decoded segments, with its canonical text.
type canonPath struct {
	segs      []string
	canonical string
}

// parseURL canonicalizes the raw request target (path and query).
func (p *RequestParser) parseURL(raw string) (canonPath, map[string][]string, error) {
	for i := 0; i < len(raw); i++ {
		switch c := raw[i]; {
		case c <= 0x20 || c >= 0x7f:
			return canonPath{}, nil, ambiguous("control, space or non-ASCII byte in the request target")
		case c == '#':
			return canonPath{}, nil, ambiguous("fragment in the request target")
		case c == '\\':
			return canonPath{}, nil, ambiguous("backslash in the request target")
		}
	}
	rawPath, rawQuery, _ := strings.Cut(raw, "?")
	if rawPath == p.base+"/" {
		rawPath = p.base
	}
	segs, err := splitPath(rawPath)
	if err != nil {
		return canonPath{}, nil, err
	}
	q, err := parseQuery(rawQuery, nil)
	if err != nil {
		return canonPath{}, nil, err
	}
	return canonPath{segs: segs, canonical: joinPath(rawPath, segs)}, q, nil
}

// splitPath splits an absolute path into segments, refusing every form that
// path normalizers disagree on: empty segments (// and trailing /), dot
// segments, ";" parameters, and encoded "/", ".", "\", "%" or control bytes.
func splitPath(raw string) ([]string, error) {
	if !strings.HasPrefix(raw, "/") {
		return nil, ambiguous("path is not absolute")
	}
	if raw == "/" {
		return nil, nil
	}
	n := strings.Count(raw, "/")
	if n > maxPathSegments {
		return nil, ambiguous("too many path segments")
	}
	segs := make([]string, 0, n)
	rest := raw[1:]
	for {
		seg, tail, more := strings.Cut(rest, "/")
		switch {
		case seg == "":
			return nil, ambiguous("empty path segment")
		case seg == "." || seg == "..":
			return nil, ambiguous("dot segment")
		case strings.IndexByte(seg, ';') >= 0:
			return nil, ambiguous("path parameter")
		case strings.IndexByte(seg, '%') >= 0:
			d, err := decodeSegment(seg)
			if err != nil {
				return nil, err
			}
			seg = d
		}
		segs = append(segs, seg)
		if !more {
			return segs, nil
		}
		rest = tail
	}
}

func decodeSegment(seg string) (string, error) {
	var b strings.Builder
	b.Grow(len(seg))
	for i := 0; i < len(seg); i++ {
		c := seg[i]
		if c != '%' {
			b.WriteByte(c)
			continue
		}
		if i+2 >= len(seg) || !isHex(seg[i+1]) || !isHex(seg[i+2]) {
			return "", ambiguous("bad percent-encoding in path")
		}
		d := unhex(seg[i+1])<<4 | unhex(seg[i+2])
		switch {
		case d == '/' || d == '.' || d == '\\' || d == '%' || d == ';':
			return "", ambiguous("encoded delimiter in path")
		case d < 0x20 || d == 0x7f:
			return "", ambiguous("encoded control byte in path")
		}
		b.WriteByte(d)
		i += 2
	}
	return b.String(), nil
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	default:
		return c - 'a' + 10
	}
}

// joinPath returns raw itself when no segment needed decoding (no
// allocation), else the segments re-escaped one canonical way.
func joinPath(raw string, segs []string) string {
	if strings.IndexByte(raw, '%') < 0 {
		return raw
	}
	var b strings.Builder
	for _, s := range segs {
		b.WriteByte('/')
		b.WriteString(url.PathEscape(s))
	}
	return b.String()
}

// parseQuery parses an application/x-www-form-urlencoded string into q
// (allocated when nil). Separators other than "&", access tokens and
// method overrides in the query are refused.
func parseQuery(raw string, q map[string][]string) (map[string][]string, error) {
	if q == nil {
		q = map[string][]string{}
	}
	if raw == "" {
		return q, nil
	}
	if strings.IndexByte(raw, ';') >= 0 {
		return nil, ambiguous(`";" in the query`)
	}
	n := 0
	for raw != "" {
		var kv string
		kv, raw, _ = strings.Cut(raw, "&")
		if kv == "" {
			continue
		}
		if n++; n > maxQueryParams {
			return nil, ambiguous("too many query parameters")
		}
		k, v, _ := strings.Cut(kv, "=")
		k, err1 := url.QueryUnescape(k)
		v, err2 := url.QueryUnescape(v)
		if err1 != nil || err2 != nil {
			return nil, ambiguous("bad percent-encoding in query")
		}
		if k == "" || hasControl(k) || hasControl(v) {
			return nil, ambiguous("empty or control bytes in query")
		}
		switch strings.ToLower(k) {
		case "access_token", "_method":
			return nil, ambiguous("credential or method override in query")
		}
		q[k] = append(q[k], v)
	}
	return q, nil
}

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
		return FHIRRequest{}, unsupported("path outside the FHIR base")
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
			fr.Interaction = "search-system"
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
		fr.Interaction = "capabilities"
		return fr, nil
	case first == "_history":
		if len(s) != 1 || !isRead(method) {
			return fr, unsupported("history shape")
		}
		fr.Interaction, fr.AllPatients = "history-system", true
		return fr, nil
	case first == "_search":
		if len(s) != 1 || method != "POST" {
			return fr, unsupported("search shape")
		}
		if err := p.formBody(h, body, q); err != nil {
			return fr, err
		}
		fr.Interaction, fr.AllPatients = "search-system", true
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
			fr.Interaction = interactionSearchTyp
			if err := p.searchPatients(first, q, &fr); err != nil {
				return fr, err
			}
			return fr, nil
		case second == "_history":
			if !isRead(method) {
				return fr, unsupported("history needs GET")
			}
			fr.Interaction = "history-type"
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
			fr.Interaction, fr.ID = "history-instance", id
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
			fr.Interaction, fr.ID, fr.Version = "vread", id, fourth
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
		fr.Interaction = interactionSearchTyp
		if err := p.searchPatients(rt, q, &fr); err != nil {
			return fr, err
		}
		return fr, nil
	case "POST":
		fr.Interaction = "create"
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
		fr.Interaction = map[string]string{"PUT": "update", "PATCH": "patch", "DELETE": "delete"}[method]
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
		fr.Interaction = "read"
	case "DELETE":
		fr.Interaction = "delete"
	case "PUT":
		fr.Interaction = "update"
		if err := p.resourceBody(h, body, rt, id, &fr, true); err != nil {
			return fr, err
		}
	case "PATCH":
		fr.Interaction = "patch"
		if err := p.resourceBody(h, body, rt, id, &fr, false); err != nil {
			return fr, err
		}
	default:
		return fr, unsupported("method on an instance")
	}
	return fr, nil
}

func (p *RequestParser) compartment(ctype, id, rt string, q map[string][]string) (FHIRRequest, error) {
	fr := FHIRRequest{Interaction: "search-compartment", Compartment: &Compartment{Type: ctype, ID: id}}
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
	fr := FHIRRequest{Interaction: "operation", ResourceType: rt, ID: id, Operation: name}
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

func includeValue(key, v string) string {
	if _, mod, ok := strings.Cut(key, ":"); ok {
		return v + ":" + mod
	}
	return v
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
