package policy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"

	"github.com/phigate/phigate/authz"
	"github.com/phigate/phigate/plan"
)

// DefaultOPAEnvoyPath is the decision OPA-Envoy queries when its
// configuration names none.
const DefaultOPAEnvoyPath = "envoy/authz/allow"

// OPAEnvoyConfig (policy.opa_envoy) serves a policy written for the
// OPA-Envoy plugin unchanged: it is queried with the plugin's input
// document and its result read as the plugin reads it. Path and Query
// mirror the plugin's own settings of those names (its query is the
// older, deprecated spelling); skip_request_body_parse is the plugin's
// skip-request-body-parse.
type OPAEnvoyConfig struct {
	// Path is the decision's path below data, slash-separated
	// ("envoy/authz/allow", the default).
	Path string `yaml:"path"`
	// Query is the decision as a reference ("data.envoy.authz.allow"),
	// instead of Path.
	Query string `yaml:"query"`
	// SkipRequestBodyParse leaves parsed_body and truncated_body out of
	// the input.
	SkipRequestBodyParse bool `yaml:"skip_request_body_parse"`
	// Response is how the response to an allowed request is filtered: an
	// OPA-Envoy result carries no plan of its own.
	Response OPAEnvoyResponse `yaml:"response"`
}

// OPAEnvoyResponse is the response plan of every request an OPA-Envoy
// policy allows. Either Enforce is set, or Unfiltered says in so many
// words that responses pass as the upstream wrote them.
type OPAEnvoyResponse struct {
	Unfiltered bool                `yaml:"unfiltered"`
	Redact     []OPAEnvoyDirective `yaml:"redact"`
	Enforce    *OPAEnvoyEnforce    `yaml:"enforce"`
}

// OPAEnvoyDirective is a redaction directive (see plan.Directive).
type OPAEnvoyDirective struct {
	Path    string   `yaml:"path"`
	Action  string   `yaml:"action"`
	KeyID   string   `yaml:"key_id"`
	Format  string   `yaml:"format"`
	Keep    []string `yaml:"keep"`
	Profile string   `yaml:"profile"`
}

// OPAEnvoyEnforce is the response-side enforcement (see plan.Enforcement).
type OPAEnvoyEnforce struct {
	// Patients is "request": a response may carry the patients the
	// request names and no other (a request that reaches every patient,
	// such as a search without a patient, cannot be planned and is
	// refused); or "any": no patient restriction.
	Patients        string   `yaml:"patients"`
	PermittedLabels []string `yaml:"permitted_labels"`
	ResourceTypes   []string `yaml:"resource_types"`
}

const (
	opaEnvoyPatientsRequest = "request"
	opaEnvoyPatientsAny     = "any"
)

var regoName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// Validate checks the section; errors name its YAML fields.
func (c *OPAEnvoyConfig) Validate() error {
	if c.Path != "" && c.Query != "" {
		return errors.New("policy.opa_envoy.query: set policy.opa_envoy.path or policy.opa_envoy.query, not both")
	}
	if c.Path == "" && c.Query == "" {
		c.Path = DefaultOPAEnvoyPath
	}
	if c.Path != "" {
		for _, seg := range strings.Split(strings.Trim(c.Path, "/"), "/") {
			if !regoName.MatchString(seg) {
				return fmt.Errorf("policy.opa_envoy.path: %q is not a slash-separated path of rule names", c.Path)
			}
		}
	} else if _, err := queryRef(c.Query); err != nil {
		return fmt.Errorf("policy.opa_envoy.query: %w", err)
	}
	r := &c.Response
	switch {
	case r.Unfiltered && (r.Enforce != nil || len(r.Redact) > 0):
		return errors.New("policy.opa_envoy.response.unfiltered: not with response.redact or response.enforce")
	case !r.Unfiltered && r.Enforce == nil:
		return errors.New("policy.opa_envoy.response.enforce: required (or response.unfiltered: true): an OPA-Envoy result carries no response plan, and an allowed response is not served unfiltered unless the configuration says so")
	}
	if e := r.Enforce; e != nil && e.Patients != opaEnvoyPatientsRequest && e.Patients != opaEnvoyPatientsAny {
		return fmt.Errorf("policy.opa_envoy.response.enforce.patients: %q is not request or any", e.Patients)
	}
	if _, err := c.plan(plan.AnyKey()); err != nil {
		return err
	}
	return nil
}

// Ref is the decision's reference: data.envoy.authz.allow.
func (c *OPAEnvoyConfig) Ref() string {
	if c.Query != "" {
		return c.Query
	}
	return "data." + strings.ReplaceAll(strings.Trim(c.Path, "/"), "/", ".")
}

// queryRef parses a query that must be one reference into data.
func queryRef(q string) (ast.Ref, error) {
	ref, err := ast.ParseRef(q)
	if err != nil || !ref.HasPrefix(ast.DefaultRootRef) || !ref.IsGround() {
		return nil, fmt.Errorf("%q is not a reference into data such as data.envoy.authz.allow", q)
	}
	return ref, nil
}

// plan compiles the static part of the response plan: the directives
// and the enforcement's labels and types (the patients are the request's).
func (c *OPAEnvoyConfig) plan(keys plan.Keys) (plan.Plan, error) {
	ds := make([]plan.Directive, len(c.Response.Redact))
	for i, d := range c.Response.Redact {
		ds[i] = plan.Directive{Path: d.Path, Action: plan.Action(d.Action), KeyID: d.KeyID,
			Format: d.Format, Keep: d.Keep, Profile: d.Profile}
	}
	var enf *plan.Enforcement
	if e := c.Response.Enforce; e != nil {
		enf = &plan.Enforcement{AnyPatient: e.Patients == opaEnvoyPatientsAny,
			PermittedLabels: e.PermittedLabels, ResourceTypes: e.ResourceTypes}
	}
	p, err := plan.Compile(ds, enf, keys)
	if err != nil {
		return plan.Plan{}, fmt.Errorf("policy.opa_envoy.response.redact: %w", err)
	}
	return p, nil
}

// opaEnvoyQuery is the prepared OPA-Envoy decision of a Snapshot.
type opaEnvoyQuery struct {
	ref      string
	query    rego.PreparedEvalQuery
	plan     plan.Plan
	patients bool // enforce patients: "request"
}

// Reason codes of OPA-Envoy decisions, for the audit trail and metrics.
const (
	reasonOPAEnvoyAllowed   = "opa_envoy.allowed"
	reasonOPAEnvoyDenied    = "opa_envoy.denied"
	reasonOPAEnvoyUndefined = "opa_envoy.undefined"
	// The policy allowed, but phigate refuses the answer:
	reasonOPAEnvoyReserved    = "opa_envoy.reserved_header"
	reasonOPAEnvoyQueryMut    = "opa_envoy.query_mutation"
	reasonOPAEnvoyUnplannable = "opa_envoy.unplannable"
)

// reservedHeader reports a header an OPA-Envoy result may not set or
// remove: phigate's own (x-phigate-*: identity, purpose, roles,
// break-glass, decision id), the pseudo-headers and host (the request that
// was decided), x-request-id (which ties the plan's marker to the
// request), and the headers that say how a body reads (accept,
// content-type, content-length, content-encoding, transfer-encoding),
// which phigate relies on to filter the response.
func reservedHeader(name string) bool {
	n := strings.ToLower(name)
	switch {
	case strings.HasPrefix(n, "x-phigate-"), strings.HasPrefix(n, ":"):
		return true
	}
	switch n {
	case "host", "x-request-id", "accept", "content-type", "content-length", "content-encoding", "transfer-encoding":
		return true
	}
	return false
}

// ownedHeaders are phigate's identity headers to the upstream: written
// from the verified identity, or removed, so a client can supply none.
var ownedHeaders = []string{"x-phigate-user", "x-phigate-purpose", "x-phigate-roles", "x-phigate-break-glass"}

// EvaluateForeign implements authz.ForeignEvaluator: doc is OPA-Envoy's
// input document. The decision cache is not used: the document holds the
// request's headers, credentials and body, so no two requests are known
// to share a decision.
func (e *Engine) EvaluateForeign(ctx context.Context, req *authz.Request, doc []byte) (authz.Decision, error) {
	s := e.cur.Load()
	if s == nil {
		return authz.Decision{}, &Error{Code: CodeEval, Err: errors.New("no policy loaded")}
	}
	ctx, cancel := context.WithTimeout(ctx, e.cfg.EvalTimeout)
	defer cancel()
	return s.EvaluateOPAEnvoy(ctx, req, doc)
}

// EvaluateOPAEnvoy evaluates the snapshot's OPA-Envoy decision for one
// request and maps it onto phigate's decision.
func (s *Snapshot) EvaluateOPAEnvoy(ctx context.Context, req *authz.Request, doc []byte) (authz.Decision, error) {
	q := s.opaEnvoy
	if q == nil {
		return authz.Decision{}, &Error{Code: CodeEval, Err: errors.New("the policy is not served in OPA-Envoy mode")}
	}
	input, err := ast.ValueFromReader(bytes.NewReader(doc))
	if err != nil {
		return authz.Decision{}, &Error{Code: CodeEval, Err: errors.New("the input document does not parse")}
	}
	rs, err := q.query.Eval(ctx, rego.EvalParsedInput(input))
	if err != nil {
		return authz.Decision{}, &Error{Code: CodeEval, Err: err}
	}
	var d authz.Decision
	if len(rs) == 0 || len(rs[0].Expressions) == 0 {
		// The plugin refuses an undefined decision; so does phigate.
		d = authz.Decision{Status: 403, Reason: reasonOPAEnvoyUndefined}
	} else {
		res, err := decodeOPAEnvoy(rs[0].Expressions[0].Value)
		if err != nil {
			return authz.Decision{}, &Error{Code: CodeShape, Err: err}
		}
		d = q.decision(req, res)
	}
	d.Audit.Rules = append(d.Audit.Rules, "opa_envoy:"+q.ref)
	d.Audit.Purpose = req.Purpose
	d.Policy = authz.Provenance{Revision: s.Revision, EvaluatedNS: req.TimeNS}
	return d, nil
}

// opaEnvoyResult is the plugin's result document, decoded: a boolean is
// {allowed: b}.
type opaEnvoyResult struct {
	allowed         bool
	headers         map[string]string
	responseHeaders map[string]string
	remove          []string
	body            string
	status          int
	metadata        map[string]any
	queryMutation   bool
}

// opaEnvoyKeys are the keys of the result object, as the plugin reads
// them (OPA documentation, "Envoy › Policy Primer via Examples", "Output
// Document"; dynamic_metadata and the query parameter keys as the
// plugin's envoyauth package reads them). Any other key is refused, as in
// phigate's own decision: a misspelt request_headers_to_remove would leave
// a header in place.
var opaEnvoyKeys = []string{"allowed", "body", "dynamic_metadata", "headers", "http_status",
	"query_parameters_to_remove", "query_parameters_to_set", "request_headers_to_remove", "response_headers_to_add"}

func decodeOPAEnvoy(v any) (opaEnvoyResult, error) {
	var r opaEnvoyResult
	switch v := v.(type) {
	case bool:
		r.allowed = v
		return r, nil
	case map[string]any:
		for k := range v {
			if !slices.Contains(opaEnvoyKeys, k) {
				name := k
				if !isFieldName(k) {
					name = fmt.Sprintf("<%d-byte key>", len(k))
				}
				return r, fmt.Errorf("result.%s: unknown field (known: %s)", name, strings.Join(opaEnvoyKeys, ", "))
			}
		}
		a, ok := v["allowed"].(bool)
		if !ok {
			return r, errors.New("result.allowed: want boolean")
		}
		r.allowed = a
		var err error
		if r.headers, err = opaEnvoyHeaders("result.headers", v["headers"]); err != nil {
			return r, err
		}
		if r.responseHeaders, err = opaEnvoyHeaders("result.response_headers_to_add", v["response_headers_to_add"]); err != nil {
			return r, err
		}
		if x, ok := v["request_headers_to_remove"]; ok {
			xs, ok := x.([]any)
			if !ok {
				return r, errors.New("result.request_headers_to_remove: want array of strings")
			}
			for _, e := range xs {
				s, ok := e.(string)
				if !ok {
					return r, errors.New("result.request_headers_to_remove: want array of strings")
				}
				r.remove = append(r.remove, strings.ToLower(s))
			}
		}
		if x, ok := v["body"]; ok {
			if r.body, ok = x.(string); !ok {
				return r, errors.New("result.body: want string")
			}
		}
		if x, ok := v["http_status"]; ok {
			n, ok := x.(json.Number)
			i, err := n.Int64()
			if !ok || err != nil || http.StatusText(int(i)) == "" {
				return r, errors.New("result.http_status: want an HTTP status code")
			}
			r.status = int(i)
		}
		if x, ok := v["dynamic_metadata"]; ok {
			if r.metadata, ok = x.(map[string]any); !ok {
				return r, errors.New("result.dynamic_metadata: want object")
			}
			for k := range r.metadata {
				if strings.HasPrefix(k, "phigate") {
					return r, errors.New("result.dynamic_metadata: keys starting with phigate are phigate's")
				}
			}
		}
		for _, k := range []string{"query_parameters_to_set", "query_parameters_to_remove"} {
			switch x := v[k].(type) {
			case nil:
			case map[string]any:
				r.queryMutation = r.queryMutation || len(x) > 0
			case []any:
				r.queryMutation = r.queryMutation || len(x) > 0
			default:
				return r, fmt.Errorf("result.%s: want object or array", k)
			}
		}
		return r, nil
	}
	return r, fmt.Errorf("result: want boolean or object, got %T", v)
}

// opaEnvoyHeaders reads a header field: an object of strings or of string
// arrays, or an array of such objects. phigate sets one value per header,
// so a header's values are joined with ",", as HTTP reads them.
func opaEnvoyHeaders(path string, v any) (map[string]string, error) {
	if v == nil {
		return nil, nil
	}
	out := map[string]string{}
	add := func(o map[string]any) error {
		for k, x := range o {
			var vals []string
			switch x := x.(type) {
			case string:
				vals = []string{x}
			case []any:
				for _, e := range x {
					s, ok := e.(string)
					if !ok {
						return fmt.Errorf("%s: want string values", path)
					}
					vals = append(vals, s)
				}
			default:
				return fmt.Errorf("%s: want string values", path)
			}
			k = strings.ToLower(k)
			if prev, ok := out[k]; ok {
				vals = append([]string{prev}, vals...)
			}
			out[k] = strings.Join(vals, ",")
		}
		return nil
	}
	switch v := v.(type) {
	case map[string]any:
		if err := add(v); err != nil {
			return nil, err
		}
	case []any:
		for _, e := range v {
			o, ok := e.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("%s: want object or array of objects", path)
			}
			if err := add(o); err != nil {
				return nil, err
			}
		}
	default:
		return nil, fmt.Errorf("%s: want object or array of objects", path)
	}
	return out, nil
}

// decision maps a result onto phigate's decision. A denial keeps the
// plugin's status; its body and headers are not sent (phigate answers
// with its own OperationOutcome). An allowed result is refused when it
// would set or remove a header phigate owns, rewrite the query phigate
// decided on, or when no response plan fits the request.
func (q *opaEnvoyQuery) decision(req *authz.Request, r opaEnvoyResult) authz.Decision {
	if !r.allowed {
		status := r.status
		if status < 400 || status > 599 {
			status = 403
		}
		return authz.Decision{Status: status, Reason: reasonOPAEnvoyDenied}
	}
	refuse := func(reason, rule string) authz.Decision {
		d := authz.Decision{Status: 403, Reason: reason}
		if rule != "" {
			d.Audit.Rules = []string{reason + ":" + rule}
		}
		return d
	}
	for _, set := range []map[string]string{r.headers, r.responseHeaders} {
		for _, k := range slices.Sorted(maps.Keys(set)) {
			if reservedHeader(k) {
				return refuse(reasonOPAEnvoyReserved, safeHeaderName(k))
			}
		}
	}
	for _, k := range r.remove {
		if reservedHeader(k) {
			return refuse(reasonOPAEnvoyReserved, safeHeaderName(k))
		}
	}
	if r.queryMutation {
		return refuse(reasonOPAEnvoyQueryMut, "")
	}
	refused, withheld := consentFor(req)
	if refused != "" {
		return refuse(refused, "")
	}
	d := authz.Decision{Allow: true, Reason: reasonOPAEnvoyAllowed, Plan: q.plan,
		ResponseHeaders: r.responseHeaders, Metadata: r.metadata}
	d.Audit.Patients = authz.NamedPatients(&req.FHIR)
	if q.patients || len(withheld) > 0 {
		if q.plan.Enforce == nil {
			// Unfiltered, yet a patient's consent withholds a label:
			// nothing would withhold it.
			return refuse(reasonOPAEnvoyUnplannable, "consent")
		}
		enf := *q.plan.Enforce
		if q.patients {
			if authz.NamesAllPatients(&req.FHIR) {
				return refuse(reasonOPAEnvoyUnplannable, "")
			}
			enf.Patients = d.Audit.Patients
		}
		if len(withheld) > 0 {
			enf.PermittedLabels = slices.DeleteFunc(slices.Clone(enf.PermittedLabels), func(l string) bool { return withheld[l] })
			d.Audit.Rules = append(d.Audit.Rules, "consent.label_withheld")
		}
		d.Plan.Enforce = &enf
	}
	d.Headers = make(map[string]string, len(r.headers)+len(ownedHeaders))
	for k, v := range r.headers {
		d.Headers[k] = v
	}
	id := req.Identity
	owned := map[string]string{"x-phigate-purpose": req.Purpose}
	if id.Authenticated {
		owned["x-phigate-user"] = id.Subject
		owned["x-phigate-roles"] = strings.Join(slices.Sorted(slices.Values(id.Roles)), ",")
	}
	d.RemoveHeaders = slices.Clone(r.remove)
	for _, h := range ownedHeaders {
		if v := owned[h]; v != "" {
			d.Headers[h] = v
		} else {
			d.RemoveHeaders = append(d.RemoveHeaders, h)
		}
	}
	return d
}

// safeHeaderName is a header name fit for the audit trail: a token of
// at most 64 bytes, or "other".
func safeHeaderName(k string) string {
	if len(k) == 0 || len(k) > 64 {
		return "other"
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == ':') {
			return "other"
		}
	}
	return k
}

// opaEnvoyProbe is the input every OPA-Envoy policy must answer without
// an error, and with a result of the plugin's shape when it answers at
// all: a plain GET of "/".
const opaEnvoyProbe = `{"attributes":{"request":{"http":{"id":"probe","method":"GET","path":"/","host":"probe",` +
	`"scheme":"http","protocol":"HTTP/1.1","headers":{":method":"GET",":path":"/",":authority":"probe"}}},` +
	`"metadataContext":{}},"parsed_path":[""],"parsed_query":{},"parsed_body":null,"truncated_body":false,` +
	`"version":{"encoding":"protojson","ext_authz":"v3"}}`

// buildOPAEnvoy prepares the OPA-Envoy decision of a snapshot and probes it.
func buildOPAEnvoy(ctx context.Context, s *Snapshot, c *ast.Compiler, o BuildOptions, prepare func(string) (rego.PreparedEvalQuery, error)) error {
	cfg := o.OPAEnvoy
	ref := cfg.Ref()
	if !hasRule(c, ref) {
		return fmt.Errorf("no rule defines %s (policy.opa_envoy)", ref)
	}
	pq, err := prepare(ref)
	if err != nil {
		return err
	}
	p, err := cfg.plan(o.TokenKeys)
	if err != nil {
		return err
	}
	q := &opaEnvoyQuery{ref: ref, query: pq, plan: p,
		patients: cfg.Response.Enforce != nil && cfg.Response.Enforce.Patients == opaEnvoyPatientsRequest}
	s.opaEnvoy = q
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := s.EvaluateOPAEnvoy(ctx, shapeProbes[0], []byte(opaEnvoyProbe)); err != nil {
		s.opaEnvoy = nil
		return fmt.Errorf("probe input: %w", err)
	}
	return nil
}

// consentFor applies the consent directives of the patients the request
// names (authz.Request.Consents, from the shared store) after an OPA-Envoy
// policy allowed: a policy written for the plugin knows nothing of them,
// and a patient's opt-out holds whatever policy runs. It reads them as
// phigate's library does (rego/consent.rego), minus what only that library
// knows, so never more leniently: a directive applies when it names no
// purpose or the request's; the patient's own access is never refused; a
// restriction yields to a practitioner the store relates to the patient;
// break-glass, which only the library grants, overrides nothing here. A
// directive without a label refuses the request (its reason); one with a
// label withholds that label from the response.
func consentFor(req *authz.Request) (refused string, withheld map[string]bool) {
	fu := req.Identity.FHIRUser
	treating := func(p string) bool {
		if fu == "Patient/"+p {
			return true
		}
		if !strings.HasPrefix(fu, "Practitioner/") {
			return false
		}
		return slices.ContainsFunc(req.Care, func(c authz.CareRelationship) bool { return c.Patient == p })
	}
	for _, c := range req.Consents {
		if c.Purpose != "" && c.Purpose != req.Purpose {
			continue
		}
		if fu == "Patient/"+c.Patient || (c.Effect == "restrict" && treating(c.Patient)) {
			continue
		}
		if c.Effect != "deny" && c.Effect != "restrict" {
			continue
		}
		if c.Label == "" {
			if refused == "" || c.Effect == "deny" {
				refused = map[string]string{"deny": "consent.opt_out", "restrict": "consent.restricted"}[c.Effect]
			}
			continue
		}
		if withheld == nil {
			withheld = map[string]bool{}
		}
		withheld[c.Label] = true
	}
	return refused, withheld
}
