package audit

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	"github.com/phigate/phigate/authz"
)

// Change is a recorded decision whose outcome differs under another
// evaluator.
type Change struct {
	Seq        uint64 `json:"seq"`
	DecisionID string `json:"decision_id"`
	RequestID  string `json:"request_id"`
	Recorded   string `json:"recorded"`
	// WasPolicy is the revision that made the recorded decision, when the
	// record names one.
	WasPolicy string `json:"was_policy,omitempty"`
	// User is the caller (fhirUser, else the token subject); Resource what
	// the request addressed (Type/id, the type searched, or the legacy
	// route's kind), so a reviewer sees whose access changes, to what.
	User      string `json:"user,omitempty"`
	Resource  string `json:"resource,omitempty"`
	WasAllow  bool   `json:"was_allow"`
	WasStatus int    `json:"was_status"`
	WasReason string `json:"was_reason,omitempty"`
	NowAllow  bool   `json:"now_allow"`
	NowStatus int    `json:"now_status"`
	NowReason string `json:"now_reason,omitempty"`
	// NowError is set when the evaluator failed; the replayed outcome is then
	// a denial, as it would be on the decision path.
	NowError string `json:"now_error,omitempty"`
}

// ReplayOptions tunes Replay.
type ReplayOptions struct {
	EncryptionKey []byte
}

// ReplayReport counts what Replay looked at.
type ReplayReport struct {
	Evaluated int `json:"evaluated"`
	Changed   int `json:"changed"`
	// Skipped counts decisions the policy never made (see decidedByPolicy).
	Skipped int `json:"skipped"`
}

// Replay re-evaluates each recorded decision's policy input (matching f)
// under eval and returns those whose allow or status would change. The
// request's Time is restored from its recorded time_ns so time-based rules
// see the original moment.
func Replay(ctx context.Context, dir string, eval authz.Evaluator, f Filter, opts ReplayOptions) ([]Change, ReplayReport, error) {
	var changes []Change
	var rep ReplayReport
	f.Kind = KindDecision
	var inner error
	err := scan(dir, opts.EncryptionKey, func(e *Entry) bool {
		if !f.Matches(e) || e.Decision == nil || len(e.Input) == 0 {
			return true
		}
		if inner = ctx.Err(); inner != nil {
			return false
		}
		if !decidedByPolicy(e.Decision) {
			rep.Skipped++
			return true
		}
		var req authz.Request
		if err := json.Unmarshal(e.Input, &req); err != nil {
			inner = errf(CodeEncode, &Position{File: e.Segment, Seq: e.Seq, Offset: e.Offset}, nil, "policy input does not decode")
			return false
		}
		req.Time = time.Unix(0, req.TimeNS)
		rep.Evaluated++
		d, err := eval.Evaluate(ctx, &req)
		c := Change{Seq: e.Seq, DecisionID: e.Decision.ID, RequestID: req.ID, Recorded: e.Event.Recorded,
			WasPolicy: e.Event.PolicyRevision(), User: replayUser(&req), Resource: replayResource(&req),
			WasAllow: e.Decision.Allow, WasStatus: e.Decision.Status, WasReason: e.Decision.Reason}
		if err != nil {
			c.NowAllow, c.NowStatus, c.NowError = false, authz.StatusOf(&authz.Error{Code: authz.CodePolicy, Err: err}), err.Error()
			c.NowReason = string(authz.CodePolicy)
		} else {
			c.NowAllow, c.NowStatus, c.NowReason = d.Allow, normalStatus(d), d.Reason
		}
		if c.NowAllow != c.WasAllow || c.NowStatus != c.WasStatus {
			changes = append(changes, c)
			rep.Changed++
		}
		return true
	})
	if err == nil {
		err = inner
	}
	return changes, rep, err
}

func replayUser(r *authz.Request) string {
	if r.Identity.FHIRUser != "" {
		return r.Identity.FHIRUser
	}
	return r.Identity.Subject
}

func replayResource(r *authz.Request) string {
	f := r.FHIR
	switch {
	case f.ResourceType != "" && f.ID != "":
		return f.ResourceType + "/" + f.ID
	case f.Compartment != nil && f.ResourceType != "":
		return f.Compartment.Type + "/" + f.Compartment.ID + "/" + f.ResourceType
	case f.ResourceType != "":
		return f.ResourceType
	case f.Kind != "":
		return "legacy:" + f.Kind
	default:
		return string(f.Interaction)
	}
}

// normalStatus applies the Authorizer's status rules so a raw evaluator
// result compares with what was recorded.
func normalStatus(d authz.Decision) int {
	switch {
	case d.Allow:
		return 200
	case d.Status == 0:
		return 403
	default:
		return d.Status
	}
}

// decidedByPolicy reports whether the policy's answer is what was recorded.
// The Authorizer denies some requests itself, with its own error code as
// the reason: a request it could not parse (the recorded input is then
// partial, so re-evaluating it would report a change no policy made), a
// malformed Authorization header, or an answer discarded because the call
// was canceled or could not be audited. A policy error is kept: whether
// another policy would answer is exactly what a replay should show.
func decidedByPolicy(d *authz.Decision) bool {
	if d.Allow {
		return true
	}
	switch authz.Code(d.Reason) {
	case authz.CodeAmbiguous, authz.CodeUnsupported, authz.CodeMissingToken, authz.CodeInvalidToken,
		authz.CodeExpiredToken, authz.CodeCanceled, authz.CodeAudit, authz.CodeOverLimit, authz.CodeTooLarge:
		return false
	}
	// An unauthenticated request is refused before the policy (reason
	// identity.<word>, no policy revision); the policy's own identity
	// denials name the revision that made them.
	return !(strings.HasPrefix(d.Reason, "identity.") && d.Policy.Revision == "")
}
