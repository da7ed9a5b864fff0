package authz

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"maps"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"
)

// Authorizer turns a CheckInput into a Decision. It is safe for concurrent use.
type Authorizer struct {
	verifier  Verifier
	parser    Parser
	evaluator Evaluator
	recorder  Recorder
	grants    GrantStore
	care      CareSource
	consents  ConsentSource
	elevs     ElevationSource
	alerts    AlertSource
	guard     Guard
	approvals approvalRules
	owners    OwnerResolver
	services  ServiceAccounts
	log       *zap.Logger
	now       func() time.Time
}

// Options wires an Authorizer. Verifier, Parser and Evaluator are required;
// a nil Recorder means decisions are not audited (tests and tools only).
type Options struct {
	Verifier  Verifier
	Parser    Parser
	Evaluator Evaluator
	Recorder  Recorder
	// Grants keeps break-glass grants between requests; nil means a grant
	// lasts for the one request that declared the emergency.
	Grants GrantStore
	// Care reads the caller's care relationships from the shared store;
	// nil means the policy's own data is the only source.
	Care CareSource
	// Consents reads the patients' consent directives from the shared
	// store; nil means there are none beyond the policy's own data.
	Consents ConsentSource
	// Elevations reads the caller's just-in-time roles from the shared
	// store; nil means there are none.
	Elevations ElevationSource
	// Alerts reads the caller's open alerts from the shared store; nil
	// means there are none.
	Alerts AlertSource
	// Guard throttles callers and watches the limits decisions set; nil
	// means neither.
	Guard Guard
	// Approvals names the requests that need a second person's approval
	// and where approvals are kept (approval.go); zero means none do.
	Approvals Approvals
	// Owners reads who owns the stored resource a write changes. Nil
	// means writes to patient data other than a Patient are refused.
	Owners OwnerResolver
	// ServiceAccounts are the mTLS principals accepted as callers when a
	// request carries no bearer token. Validate it before use.
	ServiceAccounts ServiceAccounts
	Logger          *zap.Logger
	Now             func() time.Time
}

// NewAuthorizer returns an Authorizer over the given seams.
func NewAuthorizer(o Options) *Authorizer {
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Authorizer{verifier: o.Verifier, parser: o.Parser, evaluator: o.Evaluator,
		recorder: o.Recorder, grants: o.Grants, care: o.Care,
		consents: o.Consents, elevs: o.Elevations, alerts: o.Alerts, guard: o.Guard, approvals: o.Approvals.compile(), owners: o.Owners, services: o.ServiceAccounts, log: o.Logger, now: o.Now}
}

// Authorize decides one request. It always returns a Decision; when any step
// fails the Decision denies with the status the failure maps to, and err
// says what failed (for logs and metrics, never for the client). The returned
// Request may be partial (nil fields) when parsing failed.
func (a *Authorizer) Authorize(ctx context.Context, in *CheckInput) (*Request, Decision, error) {
	if in.Received.IsZero() {
		in.Received = a.now()
	}
	req, err := a.parser.Parse(in)
	if err != nil {
		req = partialRequest(in)
		return req, a.finish(ctx, req, deny(err)), err
	}
	token, err := BearerToken(in)
	switch {
	case err != nil:
		req.Identity = Identity{Error: string(CodeOf(err)), Roles: []string{}, Scopes: []Scope{}}
		withholdPatients(&req.FHIR)
		return req, a.finish(ctx, req, deny(err)), err
	case token != "":
		id, verr := a.verifier.Verify(ctx, token)
		if verr != nil {
			code := CodeOf(verr)
			if code == "" {
				code = CodeInvalidToken
			}
			id = Identity{Error: string(code)}
		}
		req.Identity = id
	default:
		// A bearer token, when present, always wins; only without one does
		// the mTLS principal speak for the caller.
		if id, ok := a.services.identity(in.Source.Principal); ok {
			req.Identity = id
		} else {
			req.Identity = Identity{Error: string(CodeMissingToken)}
		}
	}
	if req.Identity.Roles == nil {
		req.Identity.Roles = []string{}
	}
	if req.Identity.Scopes == nil {
		req.Identity.Scopes = []Scope{}
	}
	if !req.Identity.Authenticated && !isPublic(&req.FHIR) {
		// Only a public request (the capability statement) is worth the
		// policy's time without an identity: anything else is refused
		// here, so an anonymous caller can make phigate do neither policy
		// work nor owner lookups, and its record stays small.
		withholdPatients(&req.FHIR)
		reason := "identity." + identityWord(req.Identity.Error)
		d := Decision{Status: 401, Reason: reason, Audit: AuditInfo{Rules: []string{"deny:" + reason}}}
		return req, a.finish(ctx, req, d), nil
	}
	if err := reconcilePurpose(req); err != nil {
		return req, a.finish(ctx, req, deny(err)), err
	}
	if a.guard != nil {
		// Throttled before anything costs more: owner lookups, the store,
		// the policy.
		refusal, err := a.guard.Admit(ctx, req)
		if err != nil {
			err = &Error{Code: CodeCountersUnavailable, Detail: "throttle", Err: err}
			return req, a.finish(ctx, req, deny(err)), err
		}
		if refusal != nil {
			return req, a.finish(ctx, req, *refusal), nil
		}
	}
	if err := a.resolveOwners(ctx, req); err != nil {
		return req, a.finish(ctx, req, deny(err)), err
	}
	named := &patientSet{f: &req.FHIR}
	// Consents only ever take access away: without them there is no
	// decision to make. Elevations, grants and relationships only add:
	// without them the policy decides on less, and a denial it then
	// gives is reported as the store's failure, not the caller's, since
	// the missing state might have allowed it.
	if err := a.loadConsents(ctx, req, named); err != nil {
		return req, a.finish(ctx, req, deny(err)), err
	}
	// Open alerts only take away, as consents do: a request for patient
	// data cannot be decided without them. One that touches no patient
	// (a Practitioner read) needs no shared state and goes on without.
	if err := a.loadAlerts(ctx, req); err != nil && touchesPatients(&req.FHIR, named) {
		return req, a.finish(ctx, req, deny(err)), err
	}
	missing := errors.Join(a.loadElevations(ctx, req), a.loadGrants(ctx, req, named), a.loadCare(ctx, req, named))
	if err := in.ForeignErr; err != nil {
		if CodeOf(err) == "" {
			err = &Error{Code: CodeUnsupported, Err: err}
		}
		return req, a.finish(ctx, req, deny(err)), err
	}
	// An approval only adds too; one that cannot be read is missing.
	missing = errors.Join(missing, a.loadApproval(ctx, req))
	d, err := a.evaluate(ctx, in, req)
	if err != nil {
		return req, a.finish(ctx, req, deny(&Error{Code: CodePolicy, Err: err})), err
	}
	if !d.Allow && missing != nil && d.Status != 400 {
		return req, a.finish(ctx, req, deny(missing)), missing
	}
	// The context may have ended while the policy ran; an answer nobody
	// waits for must not be recorded as given.
	if cerr := ctx.Err(); cerr != nil {
		err = &Error{Code: CodeCanceled, Err: cerr}
		return req, a.finish(ctx, req, deny(err)), err
	}
	if d.Allow && !d.Plan.Empty() && unfilterableFormat(req) {
		// The response must be filtered, and phigate filters FHIR JSON and
		// HL7 v2 only: refuse before the upstream is asked, with a status
		// that tells the client to ask for JSON, rather than fetch a
		// response that could only be refused.
		d = Decision{Status: 406, Reason: "format_not_filterable", Audit: AuditInfo{Rules: []string{"request.format_not_filterable"}}}
	}
	if d.Allow && a.guard != nil {
		refusal, err := a.guard.Watch(ctx, req, &d, named.sorted())
		if err != nil {
			err = &Error{Code: CodeCountersUnavailable, Detail: "usage limits", Err: err}
			return req, a.finish(ctx, req, deny(err)), err
		}
		if refusal != nil {
			return req, a.finish(ctx, req, *refusal), nil
		}
	}
	if err := a.settleApproval(ctx, req, &d, missing); err != nil {
		return req, a.finish(ctx, req, deny(err)), err
	}
	// A break-glass grant is kept before the access is recorded as given:
	// one the fleet cannot share would leave the clinician's next request,
	// on another replica, refused in the middle of an emergency.
	if err := a.storeGrant(ctx, req, &d); err != nil {
		return req, a.finish(ctx, req, deny(err)), err
	}
	return req, a.finish(ctx, req, d), nil
}

// evaluate asks the evaluator, in the API the proxy spoke: a request that
// carries a foreign rendering goes to a ForeignEvaluator only, never
// decided on the canonical form alone (one that could not be rendered was
// refused before).
func (a *Authorizer) evaluate(ctx context.Context, in *CheckInput, req *Request) (Decision, error) {
	if in.Foreign == nil {
		return a.evaluator.Evaluate(ctx, req)
	}
	fe, ok := a.evaluator.(ForeignEvaluator)
	if !ok {
		return Decision{}, errors.New("the evaluator does not read the proxy's input document")
	}
	return fe.EvaluateForeign(ctx, req, in.Foreign)
}

// unfilterableFormat reports a request that asks for a format phigate
// cannot filter: _format naming XML, or an Accept header that names XML
// and no JSON (nor a wildcard that JSON satisfies).
func unfilterableFormat(req *Request) bool {
	for _, f := range req.Query["_format"] {
		if xmlFormat(strings.ToLower(strings.TrimSpace(f))) {
			return true
		}
	}
	accept := req.Headers["accept"]
	if !MentionsXML(accept) {
		return false // the common case, without lower-casing the header
	}
	accept = strings.ToLower(accept)
	xml, json := false, false
	for part := range strings.SplitSeq(accept, ",") {
		mt, _, _ := strings.Cut(strings.TrimSpace(part), ";")
		mt = strings.TrimSpace(mt)
		switch {
		case xmlFormat(mt):
			xml = true
		case mt == "*/*" || mt == "application/*" || strings.Contains(mt, "json"):
			json = true
		}
	}
	return xml && !json
}

// MentionsXML reports whether s contains "xml" in any case, without
// allocating: it runs on allowed requests whose response is filtered.
func MentionsXML(s string) bool {
	for i := 0; i+3 <= len(s); i++ {
		if (s[i]|0x20) == 'x' && (s[i+1]|0x20) == 'm' && (s[i+2]|0x20) == 'l' {
			return true
		}
	}
	return false
}

func xmlFormat(f string) bool {
	switch f {
	case "xml", "text/xml", "application/xml", "application/fhir+xml", "application/xml+fhir":
		return true
	}
	return false
}

// isPublic reports whether f is the one request the policy may allow
// without an identity: the capability statement, naming no patient and
// reaching none. The policy still decides it; this only chooses which
// unauthenticated requests it is asked about.
func isPublic(f *FHIRRequest) bool {
	return f.Interaction == InteractionCapabilities && len(f.Patients) == 0 && !f.AllPatients &&
		len(f.Entries) == 0 && len(f.IncludedTypes) == 0
}

// withholdPatients cuts the patient lists of a request refused before the
// policy: the record keeps the first few patients (enough to say whose
// data an anonymous caller went for) and counts the rest.
func withholdPatients(f *FHIRRequest) {
	if n := len(f.Patients); n > maxRefusedPatients {
		f.PatientsWithheld = n - maxRefusedPatients
		f.Patients = f.Patients[:maxRefusedPatients:maxRefusedPatients]
	}
	for i := range f.Entries {
		f.Entries[i].Patients = []string{}
	}
}

// identityWord is the verifier's error word when it is a short code safe
// as an audit reason, "missing" otherwise (the policy's own fallback).
func identityWord(e string) string {
	if e == "" || len(e) > 64 {
		return "missing"
	}
	for i := 0; i < len(e); i++ {
		if c := e[i]; !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_' || c == '.' || c == '-') {
			return "missing"
		}
	}
	return e
}

// loadGrants puts the caller's active break-glass grants with the patients
// the request names into the input. A store that cannot answer leaves
// none, and says so.
func (a *Authorizer) loadGrants(ctx context.Context, req *Request, named *patientSet) error {
	if a.grants == nil || !req.Identity.Authenticated || req.Identity.Subject == "" || named.empty() {
		return nil
	}
	gs, err := a.grants.Active(ctx, req.Identity.Subject, req.Time)
	if err != nil {
		a.log.Warn("break-glass grant lookup failed; evaluating without grants", zap.Error(err))
		return &Error{Code: CodeStoreUnavailable, Detail: "break-glass grants", Err: err}
	}
	if len(gs) == 0 {
		return nil
	}
	kept := make([]Grant, 0, len(gs))
	for _, g := range gs {
		if named.has(g.Patient) {
			kept = append(kept, g)
		}
	}
	req.BreakGlass.Grants = kept
	return nil
}

// loadCare puts the caller's care relationships with the patients the
// request names into the input. A store that cannot answer leaves none,
// and says so.
func (a *Authorizer) loadCare(ctx context.Context, req *Request, named *patientSet) error {
	if req.Care == nil {
		req.Care = []CareRelationship{}
	}
	fu := req.Identity.FHIRUser
	if a.care == nil || !req.Identity.Authenticated || !strings.HasPrefix(fu, "Practitioner/") {
		return nil
	}
	if named.empty() {
		return nil
	}
	rs, err := a.care.CareRelationships(ctx, fu, req.Time)
	if err != nil {
		a.log.Warn("care relationship lookup failed; evaluating without them", zap.Error(err))
		return &Error{Code: CodeStoreUnavailable, Detail: "care relationships", Err: err}
	}
	for _, r := range rs {
		if named.has(r.Patient) {
			req.Care = append(req.Care, r)
		}
	}
	slices.SortFunc(req.Care, func(x, y CareRelationship) int {
		return cmp.Or(cmp.Compare(x.Patient, y.Patient), cmp.Compare(x.Role, y.Role), cmp.Compare(x.Source, y.Source))
	})
	return nil
}

// loadConsents puts the directives of every patient the request names
// into the input. Without them the request cannot be decided: a consent
// that cannot be read is refused as the store's failure.
func (a *Authorizer) loadConsents(ctx context.Context, req *Request, named *patientSet) error {
	if req.Consents == nil {
		req.Consents = []ConsentDirective{}
	}
	if a.consents == nil || named.empty() {
		return nil
	}
	for _, p := range named.sorted() {
		cs, err := a.consents.ConsentDirectives(ctx, p, req.Time)
		if err != nil {
			a.log.Warn("consent lookup failed; refusing", zap.Error(err))
			req.Consents = []ConsentDirective{}
			return &Error{Code: CodeStoreUnavailable, Detail: "consents", Err: err}
		}
		req.Consents = append(req.Consents, cs...)
	}
	slices.SortFunc(req.Consents, func(x, y ConsentDirective) int {
		return cmp.Or(cmp.Compare(x.Patient, y.Patient), cmp.Compare(x.Effect, y.Effect),
			cmp.Compare(x.Purpose, y.Purpose), cmp.Compare(x.Label, y.Label))
	})
	req.Consents = slices.Compact(req.Consents)
	return nil
}

// touchesPatients reports whether f can reach a patient's data: it names
// one, or it reads across patients.
func touchesPatients(f *FHIRRequest, named *patientSet) bool {
	if !named.empty() || f.AllPatients {
		return true
	}
	for i := range f.Entries {
		if f.Entries[i].AllPatients {
			return true
		}
	}
	return false
}

// loadAlerts puts the caller's open alerts into the input. Without them
// the request cannot be decided: an alert that cannot be read is refused
// as the store's failure.
func (a *Authorizer) loadAlerts(ctx context.Context, req *Request) error {
	if req.Alerts == nil {
		req.Alerts = []Alert{}
	}
	if a.alerts == nil || !req.Identity.Authenticated || req.Identity.Subject == "" {
		return nil
	}
	as, err := a.alerts.OpenAlerts(ctx, req.Identity.Subject)
	if err != nil {
		a.log.Warn("alert lookup failed; refusing", zap.Error(err))
		return &Error{Code: CodeStoreUnavailable, Detail: "alerts", Err: err}
	}
	if len(as) > 0 {
		req.Alerts = slices.Clone(as)
		slices.SortFunc(req.Alerts, func(x, y Alert) int {
			return cmp.Or(cmp.Compare(x.Kind, y.Kind), cmp.Compare(x.RaisedNS, y.RaisedNS))
		})
	}
	return nil
}

// loadElevations adds the caller's just-in-time roles to identity.roles
// and lists them in the input. A store that cannot answer adds none, and
// says so.
func (a *Authorizer) loadElevations(ctx context.Context, req *Request) error {
	if req.Elevations == nil {
		req.Elevations = []Elevation{}
	}
	if a.elevs == nil || !req.Identity.Authenticated || req.Identity.Subject == "" {
		return nil
	}
	es, err := a.elevs.Elevations(ctx, req.Identity.Subject, req.Time)
	if err != nil {
		a.log.Warn("elevation lookup failed; evaluating without them", zap.Error(err))
		return &Error{Code: CodeStoreUnavailable, Detail: "elevations", Err: err}
	}
	if len(es) == 0 {
		return nil
	}
	req.Elevations = slices.Clone(es)
	slices.SortFunc(req.Elevations, func(x, y Elevation) int {
		return cmp.Or(cmp.Compare(x.Role, y.Role), cmp.Compare(x.ExpiresNS, y.ExpiresNS))
	})
	// The identity may be shared with a token cache: build new roles
	// rather than append to its slice.
	roles := slices.Clone(req.Identity.Roles)
	for _, e := range req.Elevations {
		roles = append(roles, e.Role)
	}
	slices.Sort(roles)
	req.Identity.Roles = slices.Compact(roles)
	return nil
}

// patientSet is the set of patients a request names, built on first use
// and then shared by every lookup that narrows to it (grants, care).
type patientSet struct {
	f *FHIRRequest
	m map[string]bool
}

func (s *patientSet) set() map[string]bool {
	if s.m == nil {
		s.m = map[string]bool{}
		namedPatients(s.f, s.m)
	}
	return s.m
}

func (s *patientSet) has(p string) bool { return s.set()[p] }

// sorted lists the patients in order, so lookups and their results are
// the same for the same request.
func (s *patientSet) sorted() []string { return slices.Sorted(maps.Keys(s.set())) }
func (s *patientSet) empty() bool      { return len(s.set()) == 0 }

// namedPatients adds every patient f names to set: its patient list, the
// owner of a Patient compartment, a Patient instance, and the same for each
// batch entry.
func namedPatients(f *FHIRRequest, set map[string]bool) {
	for _, p := range f.Patients {
		set[p] = true
	}
	if f.Compartment != nil && f.Compartment.Type == "Patient" && f.Compartment.ID != "" {
		set[f.Compartment.ID] = true
	}
	if f.ResourceType == "Patient" && f.ID != "" {
		set[f.ID] = true
	}
	for i := range f.Entries {
		namedPatients(&f.Entries[i], set)
	}
}

// storeGrant keeps a new emergency grant: the request declared break-glass,
// the policy granted it, and it concerns exactly one patient. A grant the
// store cannot keep is an error: the emergency access is then refused
// rather than given on this replica alone.
func (a *Authorizer) storeGrant(ctx context.Context, req *Request, d *Decision) error {
	if a.grants == nil || !d.Allow || !d.BreakGlass.Active || !req.BreakGlass.Requested || len(req.FHIR.Patients) != 1 {
		return nil
	}
	exp, err := time.Parse(time.RFC3339Nano, d.BreakGlass.Expires)
	if err != nil || !exp.After(req.Time) {
		return nil
	}
	g := Grant{Patient: req.FHIR.Patients[0], Reason: d.BreakGlass.Reason, ExpiresNS: exp.UnixNano()}
	if err := a.grants.Put(ctx, req.Identity.Subject, g); err != nil {
		a.log.Warn("break-glass grant not kept; refusing the emergency access", zap.Error(err))
		return &Error{Code: CodeStoreUnavailable, Detail: "break-glass grant not kept", Err: err}
	}
	return nil
}

// finish assigns the decision id and writes the audit record. A record that
// cannot be written turns an allow into a denial.
func (a *Authorizer) finish(ctx context.Context, req *Request, d Decision) Decision {
	d.ID = newID()
	if !d.Allow && d.Status == 0 {
		d.Status = 403
	}
	if d.Allow {
		d.Status = 200
	}
	if a.recorder == nil {
		return d
	}
	if err := a.recorder.Record(ctx, req, &d); err != nil {
		a.log.Error("audit append failed; denying", zap.String("decision_id", d.ID), zap.Error(err))
		if d.Allow {
			id := d.ID
			d = deny(&Error{Code: CodeAudit, Err: err})
			d.ID = id
		}
	}
	return d
}

func deny(err error) Decision {
	d := Decision{Allow: false, Status: StatusOf(err), Reason: string(CodeOf(err))}
	if rule := refusalRule(err); rule != "" {
		d.Audit.Rules = []string{rule}
	}
	return d
}

// refusalRule names, for a request refused before the policy (400, 404,
// 413), the rule that refused it, so the audit trail says which
// canonicalization or limit it broke: "request.ambiguous_request.
// backslash_in_the_request_target". An error's detail names rules and
// limits, never request values, so it is fit for the trail.
func refusalRule(err error) string {
	var e *Error
	if !errors.As(err, &e) || e.Detail == "" {
		return ""
	}
	switch e.Code {
	case CodeAmbiguous, CodeUnsupported, CodeOverLimit, CodeTooLarge, CodeNoRoute:
	default:
		return ""
	}
	var b strings.Builder
	b.WriteString("request.")
	b.WriteString(string(e.Code))
	b.WriteByte('.')
	sep := false
	for _, c := range strings.ToLower(e.Detail) {
		switch {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
			if sep && !strings.HasSuffix(b.String(), ".") {
				b.WriteByte('_')
			}
			b.WriteRune(c)
			sep = false
		default:
			sep = true
		}
		if b.Len() >= 96 {
			break
		}
	}
	return b.String()
}

func partialRequest(in *CheckInput) *Request {
	return &Request{
		ID: in.ID, Time: in.Received, TimeNS: in.Received.UnixNano(), Method: in.Method,
		Source: in.Source, Query: map[string][]string{}, Headers: map[string]string{},
		Identity: Identity{Roles: []string{}, Scopes: []Scope{}},
		FHIR:     FHIRRequest{Patients: []string{}, IncludedTypes: []string{}},
	}
}

// BearerToken returns the token of an "Authorization: Bearer" header, "" when
// there is none, and an error for a malformed header.
func BearerToken(in *CheckInput) (string, error) {
	h, ok := in.Headers["authorization"]
	if !ok {
		return "", nil
	}
	scheme, tok, found := strings.Cut(strings.TrimSpace(h), " ")
	if !found || !strings.EqualFold(scheme, "bearer") || strings.TrimSpace(tok) == "" {
		return "", Errorf(CodeInvalidToken, "authorization header is not a bearer token")
	}
	return strings.TrimSpace(tok), nil
}

func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
