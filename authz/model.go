package authz

import (
	"time"
)

// CheckInput is what the proxy knows about one HTTP request, before phigate
// interprets any of it. Header names are lower case.
type CheckInput struct {
	ID       string
	Method   string
	Path     string // raw path with query string, exactly as received
	Headers  map[string]string
	Body     []byte // request body when the proxy sent it (batch/transaction)
	Source   Peer
	Received time.Time
	// Foreign is the request as another authorization API renders it
	// (OPA-Envoy's input document, JSON), for a ForeignEvaluator; nil
	// in phigate's own mode. It holds credentials: it is never recorded.
	// ForeignErr says why the proxy side could not build it; the request
	// is then refused.
	Foreign    []byte
	ForeignErr error
}

// Peer is the network client of the proxy.
type Peer struct {
	Address string `json:"address,omitempty"`
	// Principal is the mTLS identity (SPIFFE URI SAN or subject) when the
	// connection was authenticated with a client certificate.
	Principal string `json:"principal,omitempty"`
}

// The policy input, the decision cache key and the audit record's copy of
// the input are generated from Request; run it after changing a type here.
//go:generate go run ../internal/gen -root ..

// Request is the policy input document (input in Rego). Its JSON shape is a
// contract with policy authors: fields are only added, never renamed.
type Request struct {
	ID         string              `json:"id"`
	Time       time.Time           `json:"-"`
	TimeNS     int64               `json:"time_ns"`
	Method     string              `json:"method"`
	Path       string              `json:"path"` // canonical path without query
	Query      map[string][]string `json:"query"`
	Headers    map[string]string   `json:"headers"`
	Source     Peer                `json:"source"`
	Identity   Identity            `json:"identity"`
	FHIR       FHIRRequest         `json:"fhir"`
	Purpose    string              `json:"purpose_of_use,omitempty"`
	BreakGlass BreakGlassRequest   `json:"break_glass"`
	// Care is the caller's care relationships, from the shared store, with
	// the patients this request names (never the caller's whole panel, so
	// the input and the decision cache key stay the same while the panel
	// changes elsewhere). Sorted, never nil.
	Care []CareRelationship `json:"care"`
	// Consents is the directives, from the shared store, of the patients
	// this request names that are in force at the request's time. Sorted,
	// never nil.
	Consents []ConsentDirective `json:"consents"`
	// Elevations is the caller's just-in-time roles in force at the
	// request's time, from the shared store. Their roles are already in
	// identity.roles; this says which of them are elevations, and until
	// when. Sorted, never nil.
	Elevations []Elevation `json:"elevations"`
	// Alerts is the caller's open alerts from the shared store (a bulk
	// read crossed a limit, say), until a person clears them. Sorted,
	// never nil.
	Alerts []Alert `json:"alerts"`
	// Throttle names the token buckets (abuse.buckets) this request took a
	// token from: a request one of them refused got 429 and never reached
	// the policy. In configuration order, never nil.
	Throttle []string `json:"throttle"`
	// Approval is the second person's approval this request needs (a bulk
	// export kick-off, its status polls and file downloads, another
	// configured operation): whether one is required, and the one found
	// for this requester and this exact request. See docs/approvals.md.
	Approval ApprovalInput `json:"approval"`
}

// Alert is an open alert on the caller: its kind (a reason code such as
// "bulk_read.distinct_patients") and when it was raised.
type Alert struct {
	Kind     string `json:"kind"`
	RaisedNS int64  `json:"raised_ns"`
}

// ApprovalInput is what the policy knows of a request's approval.
type ApprovalInput struct {
	// Required is true when the configuration names this request.
	Required bool `json:"required"`
	// Stage is "kickoff" (the operation itself), "status" (a poll of the
	// job it started) or "file" (a download of its output).
	Stage string `json:"stage,omitempty"`
	// ID is the approval's opaque reference: the approved one a request
	// runs under, or the pending one it asked for.
	ID string `json:"id,omitempty"`
	// State is "none", "pending", "approved" or "denied".
	State     string `json:"state,omitempty"`
	Requester string `json:"requester,omitempty"`
	Approver  string `json:"approver,omitempty"`
	// ExpiresNS is when an approved approval ends (Unix nanoseconds).
	ExpiresNS int64 `json:"expires_ns,omitempty"`
}

// ConsentDirective is one patient's opt-out ("deny") or restriction
// ("restrict") of a purpose of use, a sensitivity label, or a label under
// one purpose. An empty purpose or label means any.
type ConsentDirective struct {
	Patient string `json:"patient"`
	Effect  string `json:"effect"`
	Purpose string `json:"purpose"`
	Label   string `json:"label"`
}

// Elevation is a role granted to the caller until ExpiresNS.
type Elevation struct {
	Role      string `json:"role"`
	ExpiresNS int64  `json:"expires_ns"`
}

// CareRelationship is a practitioner's relationship with one patient, in
// force at the request's time, as the store holds it (from an admission
// feed, a CareTeam, an operator).
type CareRelationship struct {
	Patient string `json:"patient"`
	Role    string `json:"role"`
	Source  string `json:"source"`
}

// Identity is the verified caller. When Authenticated is false, Error says why
// (missing, invalid, expired, ...) in a word safe for audit and metrics.
type Identity struct {
	Authenticated bool     `json:"authenticated"`
	Error         string   `json:"error,omitempty"`
	Subject       string   `json:"subject,omitempty"`
	Issuer        string   `json:"issuer,omitempty"`
	FHIRUser      string   `json:"fhir_user,omitempty"`
	Roles         []string `json:"roles"`
	Scopes        []Scope  `json:"scopes"`
	// Patient is the SMART launch context patient id, if any.
	Patient  string   `json:"patient,omitempty"`
	ClientID string   `json:"client_id,omitempty"`
	MFA      bool     `json:"mfa"`
	AMR      []string `json:"amr,omitempty"`
	ACR      string   `json:"acr,omitempty"`
	IssuedAt int64    `json:"iat,omitempty"`
	Expires  int64    `json:"exp,omitempty"`
	// Service is true when the caller is a workload identified by mTLS.
	Service bool `json:"service"`
	// Purpose is the purpose-of-use claim of the token, as issued. The
	// effective purpose the policy should read is Request.Purpose.
	Purpose string `json:"purpose_of_use,omitempty"`
}

// Scope is one parsed SMART on FHIR scope (v1 or v2 syntax).
type Scope struct {
	Raw      string `json:"raw"`
	Context  string `json:"context"`  // patient, user or system
	Resource string `json:"resource"` // resource type or "*"
	// Permissions in SMART v2 "cruds" letters; v1 read maps to "rs", write to "cud", * to "cruds".
	Permissions string `json:"permissions"`
}

// FHIRRequest is the request interpreted as a FHIR REST interaction.
type FHIRRequest struct {
	Interaction  Interaction  `json:"interaction"`
	ResourceType string       `json:"resource_type,omitempty"`
	ID           string       `json:"id,omitempty"`
	Version      string       `json:"version,omitempty"`
	Compartment  *Compartment `json:"compartment,omitempty"`
	Operation    string       `json:"operation,omitempty"` // without the "$"
	// Patients lists every patient id the request touches, sorted, unique.
	Patients []string `json:"patients"`
	// AllPatients is true when the request is not restricted to named
	// patients (a search without a patient parameter, system-level $export).
	AllPatients bool     `json:"all_patients"`
	Include     []string `json:"include,omitempty"`
	RevInclude  []string `json:"revinclude,omitempty"`
	// IncludedTypes lists every resource type an _include or _revinclude
	// (and their :iterate and :recurse forms) can bring into the response,
	// sorted, unique, never nil; "*" when any type can come. Omitted from
	// the input when empty, like include and revinclude.
	IncludedTypes []string      `json:"included_types,omitempty"`
	Entries       []FHIRRequest `json:"entries,omitempty"` // batch/transaction entries, each on its own
	Method        string        `json:"method,omitempty"`  // entry method inside a batch
	Kind          string        `json:"kind,omitempty"`    // legacy route kind
	// PatientsWithheld counts the distinct patients the request named that
	// Patients does not list. It is nonzero only for a request refused
	// before the policy ran (an unauthenticated caller): its record keeps
	// a few patients and this count, so one refused request cannot write
	// an unbounded audit record. Not policy input.
	PatientsWithheld int `json:"-"`
}

// Compartment is the owner of a compartment search such as /Patient/123/Observation.
type Compartment struct {
	Type string `json:"type"`
	ID   string `json:"id"`
}

// BreakGlassRequest is the caller's declaration of an emergency, with the
// emergency grants the caller already holds for the patients this request
// names (looked up before the policy runs). A grant opens one patient, so
// grants for patients the request does not name cannot change its
// decision; leaving them out keeps the input, and the decision cache key
// built from it, the same while the caller collects grants elsewhere.
type BreakGlassRequest struct {
	Requested bool    `json:"requested"`
	Reason    string  `json:"reason,omitempty"`
	Grants    []Grant `json:"grants"`
}

// Grant is a time-boxed break-glass grant to one patient.
type Grant struct {
	Patient   string `json:"patient"`
	Reason    string `json:"reason"`
	ExpiresNS int64  `json:"expires_ns"`
}
