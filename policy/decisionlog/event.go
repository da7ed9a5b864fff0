package decisionlog

import (
	"strconv"
	"strings"
	"time"

	"github.com/phigate/phigate/authz"
)

// Event is one decision in the shape of OPA's decision log plugin. Input
// and Result are phigate's policy input and decision document cut down to
// what an operator needs; Erased names the JSON pointers of what was cut
// that held something, Masked those of the strings kept in place but
// replaced by Mask.
type Event struct {
	Labels     map[string]string     `json:"labels"`
	DecisionID string                `json:"decision_id"`
	Bundles    map[string]BundleInfo `json:"bundles,omitempty"`
	Path       string                `json:"path"`
	Input      Input                 `json:"input"`
	Result     Result                `json:"result"`
	Erased     []string              `json:"erased,omitempty"`
	Masked     []string              `json:"masked,omitempty"`
	Timestamp  time.Time             `json:"timestamp"`
	Metrics    map[string]int64      `json:"metrics,omitempty"`
}

// BundleInfo is the revision of the policy that decided.
type BundleInfo struct {
	Revision string `json:"revision"`
}

// Input is the part of authz.Request an event carries, under the same
// names as the policy input.
type Input struct {
	ID         string          `json:"id,omitempty"`
	TimeNS     int64           `json:"time_ns"`
	Method     string          `json:"method,omitempty"`
	Source     InputSource     `json:"source,omitzero"`
	Identity   InputIdentity   `json:"identity"`
	FHIR       InputFHIR       `json:"fhir"`
	Purpose    string          `json:"purpose_of_use,omitempty"`
	BreakGlass InputBreakGlass `json:"break_glass"`
}

// InputSource keeps the workload's mTLS principal, not the network address.
type InputSource struct {
	Principal string `json:"principal,omitempty"`
}

// InputIdentity keeps how the caller was identified and what it may do,
// not who the person is.
type InputIdentity struct {
	Authenticated bool         `json:"authenticated"`
	Error         string       `json:"error,omitempty"`
	Issuer        string       `json:"issuer,omitempty"`
	ClientID      string       `json:"client_id,omitempty"`
	Roles         []string     `json:"roles"`
	Scopes        []InputScope `json:"scopes"`
	MFA           bool         `json:"mfa"`
	Service       bool         `json:"service"`
}

// InputScope is a parsed SMART scope without its raw text (a v2 scope can
// carry search values).
type InputScope struct {
	Context     string `json:"context"`
	Resource    string `json:"resource"`
	Permissions string `json:"permissions"`
}

// InputFHIR is the FHIR interaction without ids, versions, patients or
// parameters.
type InputFHIR struct {
	Interaction   string            `json:"interaction"`
	ResourceType  string            `json:"resource_type,omitempty"`
	Compartment   *InputCompartment `json:"compartment,omitempty"`
	Operation     string            `json:"operation,omitempty"`
	AllPatients   bool              `json:"all_patients"`
	IncludedTypes []string          `json:"included_types,omitempty"`
	Entries       []InputFHIR       `json:"entries,omitempty"`
	Method        string            `json:"method,omitempty"`
	Kind          string            `json:"kind,omitempty"`
}

// InputCompartment is the compartment's type, without its owner.
type InputCompartment struct {
	Type string `json:"type"`
}

// InputBreakGlass says whether an emergency was declared, not why.
type InputBreakGlass struct {
	Requested bool `json:"requested"`
}

// Result is the decision without headers, patients, free text or
// redaction directives.
type Result struct {
	Allow       bool               `json:"allow"`
	Status      int                `json:"status"`
	Reason      string             `json:"reason,omitempty"`
	BreakGlass  ResultBreakGlass   `json:"break_glass"`
	Obligations []ResultObligation `json:"obligations,omitempty"`
	Audit       ResultAudit        `json:"audit"`
}

// ResultBreakGlass keeps whether a grant is in effect and until when.
type ResultBreakGlass struct {
	Active  bool   `json:"active"`
	Expires string `json:"expires,omitempty"`
}

// ResultObligation keeps an obligation's type, not its parameters.
type ResultObligation struct {
	Type string `json:"type"`
}

// ResultAudit keeps the purpose and the rules that decided.
type ResultAudit struct {
	Purpose string   `json:"purpose,omitempty"`
	Rules   []string `json:"rules,omitempty"`
}

// Mask replaces a string an event keeps in place but may not carry.
const Mask = "**REDACTED**"

// DecisionPath is the event's path: the rule phigate evaluates.
const DecisionPath = "phigate/authz/decision"

// BundleName is the name the policy's revision is reported under.
const BundleName = "phigate"

// NewEvent builds the event for one decision. It copies what it keeps,
// so req and d may change afterwards.
func NewEvent(req *authz.Request, d *authz.Decision, labels map[string]string) Event {
	m := masker{secrets: secretsOf(req, d)}
	ev := Event{
		Labels: labels, DecisionID: d.ID, Path: DecisionPath, Timestamp: req.Time.UTC(),
	}
	if ev.Timestamp.IsZero() && req.TimeNS != 0 {
		ev.Timestamp = time.Unix(0, req.TimeNS).UTC()
	}
	if d.Policy.Revision != "" {
		ev.Bundles = map[string]BundleInfo{BundleName: {Revision: d.Policy.Revision}}
	}
	if d.Policy.Reused {
		ev.Metrics = map[string]int64{"counter_decision_cache_hit": 1}
	}

	in := &ev.Input
	in.ID = m.code("/input/id", req.ID)
	in.TimeNS = req.TimeNS
	in.Method = m.code("/input/method", req.Method)
	m.erase("/input/path", req.Path != "")
	m.erase("/input/query", len(req.Query) > 0)
	m.erase("/input/headers", len(req.Headers) > 0)
	m.erase("/input/source/address", req.Source.Address != "")
	in.Source.Principal = m.code("/input/source/principal", req.Source.Principal)

	id := &req.Identity
	in.Identity = InputIdentity{
		Authenticated: id.Authenticated, MFA: id.MFA, Service: id.Service,
		Error:    m.code("/input/identity/error", id.Error),
		Issuer:   m.code("/input/identity/issuer", id.Issuer),
		ClientID: m.code("/input/identity/client_id", id.ClientID),
		Roles:    make([]string, len(id.Roles)),
		Scopes:   make([]InputScope, len(id.Scopes)),
	}
	m.erase("/input/identity/subject", id.Subject != "")
	m.erase("/input/identity/fhir_user", id.FHIRUser != "")
	m.erase("/input/identity/patient", id.Patient != "")
	for i, r := range id.Roles {
		in.Identity.Roles[i] = m.keep("/input/identity/roles", i, "", r)
	}
	for i, s := range id.Scopes {
		const p = "/input/identity/scopes"
		in.Identity.Scopes[i] = InputScope{
			Context:     m.keep(p, i, "/context", s.Context),
			Resource:    m.keep(p, i, "/resource", s.Resource),
			Permissions: m.keep(p, i, "/permissions", s.Permissions),
		}
		m.cut(p, i, "/raw", s.Raw != "")
	}
	in.FHIR = m.fhir("/input/fhir", &req.FHIR)
	in.Purpose = m.code("/input/purpose_of_use", req.Purpose)
	in.BreakGlass.Requested = req.BreakGlass.Requested
	m.erase("/input/break_glass/reason", req.BreakGlass.Reason != "")
	m.erase("/input/break_glass/grants", len(req.BreakGlass.Grants) > 0)
	m.erase("/input/care", len(req.Care) > 0)

	r := &ev.Result
	r.Allow, r.Status = d.Allow, d.Status
	r.Reason = m.code("/result/reason", d.Reason)
	r.BreakGlass = ResultBreakGlass{Active: d.BreakGlass.Active, Expires: m.code("/result/break_glass/expires", d.BreakGlass.Expires)}
	m.erase("/result/break_glass/reason", d.BreakGlass.Reason != "")
	m.erase("/result/headers", len(d.Headers) > 0)
	m.erase("/result/remove_headers", len(d.RemoveHeaders) > 0)
	m.erase("/result/response_headers", len(d.ResponseHeaders) > 0)
	m.erase("/result/redact", !d.Plan.Empty())
	for i, o := range d.Obligations {
		const p = "/result/obligations"
		r.Obligations = append(r.Obligations, ResultObligation{Type: m.keep(p, i, "/type", o.Type)})
		m.cut(p, i, "/params", len(o.Params) > 0)
	}
	r.Audit.Purpose = m.code("/result/audit/purpose", d.Audit.Purpose)
	m.erase("/result/audit/patients", len(d.Audit.Patients) > 0)
	for i, rule := range d.Audit.Rules {
		r.Audit.Rules = append(r.Audit.Rules, m.keep("/result/audit/rules", i, "", rule))
	}
	ev.Erased, ev.Masked = m.erased, m.masked
	return ev
}

func (m *masker) fhir(p string, f *authz.FHIRRequest) InputFHIR {
	out := InputFHIR{
		Interaction:  m.keep(p, -1, "/interaction", string(f.Interaction)),
		ResourceType: m.keep(p, -1, "/resource_type", f.ResourceType),
		Operation:    m.keep(p, -1, "/operation", f.Operation),
		AllPatients:  f.AllPatients,
		Method:       m.keep(p, -1, "/method", f.Method),
		Kind:         m.keep(p, -1, "/kind", f.Kind),
	}
	m.cut(p, -1, "/id", f.ID != "")
	m.cut(p, -1, "/version", f.Version != "")
	m.cut(p, -1, "/patients", len(f.Patients) > 0)
	m.cut(p, -1, "/include", len(f.Include) > 0)
	m.cut(p, -1, "/revinclude", len(f.RevInclude) > 0)
	if c := f.Compartment; c != nil {
		out.Compartment = &InputCompartment{Type: m.keep(p, -1, "/compartment/type", c.Type)}
		m.cut(p, -1, "/compartment/id", c.ID != "")
	}
	for i, t := range f.IncludedTypes {
		out.IncludedTypes = append(out.IncludedTypes, m.keep(p+"/included_types", i, "", t))
	}
	for i := range f.Entries {
		out.Entries = append(out.Entries, m.fhir(p+"/entries/"+strconv.Itoa(i), &f.Entries[i]))
	}
	return out
}

// masker keeps the strings an event may carry and records what it cut.
type masker struct {
	secrets map[string]bool
	erased  []string
	masked  []string
}

func (m *masker) erase(path string, present bool) { m.cut(path, -1, "", present) }

// cut records prefix[/i]field as erased when present. The pointer is
// built only then: most fields are kept, and a Check pays for each event.
func (m *masker) cut(prefix string, i int, field string, present bool) {
	if present {
		m.erased = append(m.erased, pointer(prefix, i, field))
	}
}

func pointer(prefix string, i int, field string) string {
	if i < 0 {
		return prefix + field
	}
	return prefix + "/" + strconv.Itoa(i) + field
}

// code returns s when it is shaped like a code (a role, a rule name, a
// resource type) and names none of the request's identifiers; otherwise
// Mask, recording path. A policy that writes a patient id into its reason
// or rule names does not get it out this way.
func (m *masker) code(path, s string) string { return m.keep(path, -1, "", s) }

// keep is code for the string at prefix[/i]field.
func (m *masker) keep(prefix string, i int, field, s string) string {
	if s == "" {
		return ""
	}
	if codeLike(s) && !m.names(s) {
		return s
	}
	m.masked = append(m.masked, pointer(prefix, i, field))
	return Mask
}

// names reports whether s holds one of the request's identifiers: where
// it is not part of a longer word (ids are often short: patient 12 must
// not mask rule12, but must mask deny:12), or anywhere for long ones.
func (m *masker) names(s string) bool {
	for sec := range m.secrets {
		if len(sec) >= 6 {
			if strings.Contains(s, sec) {
				return true
			}
			continue
		}
		for i := 0; ; {
			j := strings.Index(s[i:], sec)
			if j < 0 {
				break
			}
			at := i + j
			end := at + len(sec)
			if (at == 0 || !alnum(s[at-1]) || !alnum(sec[0])) && (end == len(s) || !alnum(s[end]) || !alnum(sec[len(sec)-1])) {
				return true
			}
			i = at + 1
		}
	}
	return false
}

func alnum(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' }

func codeLike(s string) bool {
	if len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("_.:/*+-=#@", c) >= 0) {
			return false
		}
	}
	return true
}

// secretsOf collects the identifiers and free text of a request: what no
// kept string may contain.
func secretsOf(req *authz.Request, d *authz.Decision) map[string]bool {
	s := map[string]bool{}
	add := func(v string) {
		if v = strings.TrimSpace(v); v != "" {
			s[v] = true
			// A reference (Patient/123) names its id too.
			if _, id, ok := strings.Cut(v, "/"); ok && id != "" {
				s[id] = true
			}
		}
	}
	var fhir func(f *authz.FHIRRequest)
	fhir = func(f *authz.FHIRRequest) {
		for _, p := range f.Patients {
			add(p)
		}
		add(f.ID)
		add(f.Version)
		if f.Compartment != nil {
			add(f.Compartment.ID)
		}
		for i := range f.Entries {
			fhir(&f.Entries[i])
		}
	}
	fhir(&req.FHIR)
	for _, vs := range req.Query {
		for _, v := range vs {
			add(v)
		}
	}
	add(req.BreakGlass.Reason)
	for _, g := range req.BreakGlass.Grants {
		add(g.Patient)
		add(g.Reason)
	}
	for _, c := range req.Care {
		add(c.Patient)
	}
	add(req.Identity.Subject)
	add(req.Identity.FHIRUser)
	add(req.Identity.Patient)
	add(req.Source.Address)
	for _, p := range d.Audit.Patients {
		add(p)
	}
	add(d.BreakGlass.Reason)
	return s
}
