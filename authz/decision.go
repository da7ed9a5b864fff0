package authz

import (
	"time"

	"github.com/phigate/phigate/plan"
)

// Decision is the typed form of data.phigate.authz.decision.
type Decision struct {
	Allow  bool   `json:"allow"`
	Status int    `json:"status"`
	Reason string `json:"reason,omitempty"` // for audit and operators, never the client
	// Headers are set on the upstream request when allowed.
	Headers       map[string]string `json:"headers,omitempty"`
	RemoveHeaders []string          `json:"remove_headers,omitempty"`
	// ResponseHeaders are added to the response the client receives.
	ResponseHeaders map[string]string `json:"response_headers,omitempty"`
	// Plan is what the response side must do to the body: the redaction
	// rules and response-side checks, compiled when the decision was
	// decoded, so that a directive that cannot be applied denies the
	// request instead of failing its response. Embedded so that its
	// "redact" and "enforce" keys stay where the stored decision has
	// always had them.
	plan.Plan
	BreakGlass  BreakGlass   `json:"break_glass"`
	Obligations []Obligation `json:"obligations,omitempty"`
	Audit       AuditInfo    `json:"audit"`
	// Metadata is dynamic metadata the policy adds beside phigate's own
	// keys under the ext_authz namespace, on an allowed request
	// (OPA-Envoy's dynamic_metadata). Keys starting with "phigate" are
	// phigate's: the decoder refuses them and the adapter denies a
	// decision that carries one. Not recorded.
	Metadata map[string]any `json:"-"`
	// ResponseLimits are the usage limits the response side counts what it
	// releases against, read from the decision's limit obligations by the
	// Guard that watched it.
	ResponseLimits []plan.Limit `json:"-"`
	// RetryAfter is, for a 429, how long the client should wait.
	RetryAfter time.Duration `json:"-"`
	// ID identifies this decision in the audit trail and response metadata.
	ID string `json:"-"`
	// ApprovalRef is the pending approval a refused request asked for:
	// the reference the client is given to have it approved.
	ApprovalRef string `json:"-"`
	// CacheUntilNS is decision.cache.until_ns: the same request (every
	// input field the policy reads but the time) gets the same decision
	// until this instant (Unix nanoseconds). 0: never reuse.
	CacheUntilNS int64 `json:"-"`
	// Policy says which policy revision decided and when. The evaluator
	// sets it; a decision document cannot.
	Policy Provenance `json:"-"`
}

// Provenance is where a decision came from, for the audit record.
type Provenance struct {
	// Revision is the policy revision that evaluated the decision; empty
	// when no policy did.
	Revision string
	// EvaluatedNS is the request time (Unix nanoseconds) the policy
	// evaluated the decision for.
	EvaluatedNS int64
	// Reused is true when the decision was evaluated for an earlier,
	// identical request and taken from the decision cache.
	Reused bool
}

// BreakGlass reports an emergency-access grant in effect for this request.
type BreakGlass struct {
	Active  bool   `json:"active"`
	Reason  string `json:"reason,omitempty"`
	Expires string `json:"expires,omitempty"` // RFC 3339
}

// Obligation is something that must happen because of this decision, such as
// notifying the privacy office of a break-glass access.
type Obligation struct {
	Type   string            `json:"type"`
	Params map[string]string `json:"params,omitempty"`
}

// AuditInfo is what the policy wants written into the audit record.
type AuditInfo struct {
	Patients []string `json:"patients,omitempty"`
	Purpose  string   `json:"purpose,omitempty"`
	Rules    []string `json:"rules,omitempty"`
}
