package authz

import (
	"context"
	"time"
)

// Verifier turns a bearer token into a verified Identity. An invalid token is
// an error whose Code (see Error) says why, in a word safe to log.
type Verifier interface {
	Verify(ctx context.Context, token string) (Identity, error)
}

// Evaluator is the policy engine seen from the decision path.
type Evaluator interface {
	Evaluate(ctx context.Context, req *Request) (Decision, error)
}

// ForeignEvaluator is a policy engine that decides from the request as
// another authorization API renders it (CheckInput.Foreign), beside the
// canonical Request, which phigate still builds, checks and records.
type ForeignEvaluator interface {
	EvaluateForeign(ctx context.Context, req *Request, doc []byte) (Decision, error)
}

// Recorder is the audit trail seen from the decision path. Record returns
// only once the record is durable; an error means the decision must not
// take effect.
type Recorder interface {
	Record(ctx context.Context, req *Request, d *Decision) error
}

// Parser builds the canonical Request (all but Identity) from what the
// proxy saw. Anything ambiguous is an error with CodeAmbiguous.
type Parser interface {
	Parse(in *CheckInput) (*Request, error)
}

// GrantStore keeps break-glass grants between requests: a grant, once
// given, covers later requests of the same subject for the same patient
// until it expires. Implementations must drop expired grants.
type GrantStore interface {
	Active(ctx context.Context, subject string, now time.Time) ([]Grant, error)
	Put(ctx context.Context, subject string, g Grant) error
}

// OwnerResolver reads who owns a stored resource: the ids of the patients
// whose compartment the resource is in. A write is authorized on them as
// well as on the patients its new body names, so a record cannot be moved
// away from, or deleted for, a patient the caller may not touch.
//
// A resource that does not exist is an error with CodeNotFound, and only
// that: any other error means the owners are unknown, and the write is
// refused.
type OwnerResolver interface {
	Owners(ctx context.Context, resourceType, id string) ([]string, error)
}

// CareSource reads a practitioner's care relationships in force at now.
// practitioner is the caller's fhirUser reference (Practitioner/<id>).
type CareSource interface {
	CareRelationships(ctx context.Context, practitioner string, now time.Time) ([]CareRelationship, error)
}

// ConsentSource reads a patient's consent directives in force at now.
type ConsentSource interface {
	ConsentDirectives(ctx context.Context, patient string, now time.Time) ([]ConsentDirective, error)
}

// ElevationSource reads a user's just-in-time roles in force at now.
type ElevationSource interface {
	Elevations(ctx context.Context, subject string, now time.Time) ([]Elevation, error)
}

// Guard keeps what is decided over time: it throttles callers before the
// policy, and counts an allowed decision against the limits the policy
// set on it (its "limit" obligations). A refusal it returns replaces the
// decision; an error means its counters could not be read, and the
// request is refused.
type Guard interface {
	Admit(ctx context.Context, req *Request) (refusal *Decision, err error)
	Watch(ctx context.Context, req *Request, d *Decision, patients []string) (refusal *Decision, err error)
}

// AlertSource reads the caller's open alerts (bulk reads and the like
// that a person has not yet cleared).
type AlertSource interface {
	OpenAlerts(ctx context.Context, subject string) ([]Alert, error)
}
