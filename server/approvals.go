package server

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/phigate/phigate/audit"
	"github.com/phigate/phigate/authz"
	"github.com/phigate/phigate/store"
)

// approvalAdmin serves the approval workflow on the admin listener, for
// `phigate approvals` and `phigate elevation` and for a console:
//
//	GET  /approvals[?state=pending]   approver token: list requests
//	GET  /approvals/{id}              approver token, or the requester's own
//	POST /approvals/{id}/approve      approver token
//	POST /approvals/{id}/deny         approver token
//	POST /elevations                  the user's own token: ask for a role
//
// Every caller is identified by a bearer token the server's verifier
// accepts; an approver holds approvals.approver_role in the token itself
// (an elevated role does not count) and signed in with a second factor.
// Each step is written to the audit trail before it is answered; a step
// that cannot be recorded is refused when it would grant something.
type approvalAdmin struct {
	cfg      ApprovalsConfig
	st       store.ApprovalStore
	verifier authz.Verifier
	trail    *audit.Log
	log      *zap.Logger
	now      func() time.Time
}

func (a *approvalAdmin) register(mux *http.ServeMux) {
	mux.HandleFunc("GET /approvals", a.list)
	mux.HandleFunc("GET /approvals/{id}", a.get)
	mux.HandleFunc("POST /approvals/{id}/approve", func(w http.ResponseWriter, r *http.Request) { a.decide(w, r, true) })
	mux.HandleFunc("POST /approvals/{id}/deny", func(w http.ResponseWriter, r *http.Request) { a.decide(w, r, false) })
	mux.HandleFunc("POST /elevations", a.requestElevation)
	mux.HandleFunc("GET /reviews", a.reviews)
	mux.HandleFunc("POST /reviews", a.markReviewed)
}

// reviewRequest is the body of POST /reviews: a break-glass access (its
// decision id) a reviewer has looked at.
type reviewRequest struct {
	DecisionID string `json:"decision_id"`
	Note       string `json:"note"`
}

func (a *approvalAdmin) reviews(w http.ResponseWriter, r *http.Request) {
	if _, code := a.approver(w, r); code != "" {
		return
	}
	rs, err := a.st.Reviews(r.Context())
	if err != nil {
		refuse(w, http.StatusServiceUnavailable, "store_unavailable")
		return
	}
	if rs == nil {
		rs = []store.Review{}
	}
	writeJSON(w, http.StatusOK, rs)
}

func (a *approvalAdmin) markReviewed(w http.ResponseWriter, r *http.Request) {
	who, code := a.approver(w, r)
	if code != "" {
		return
	}
	var req reviewRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, 8<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		refuse(w, http.StatusBadRequest, "malformed_body")
		return
	}
	rv := store.Review{DecisionID: req.DecisionID, Reviewer: who.Subject, Note: req.Note, At: a.now()}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	// Recorded first: a review the trail does not show did not happen.
	if err := a.trail.RecordWorkflow(ctx, audit.WorkflowEvent{Action: audit.WorkflowReviewed, Actor: who.Subject,
		DecisionID: req.DecisionID}); err != nil {
		refuse(w, http.StatusServiceUnavailable, "audit_unavailable")
		return
	}
	switch err := a.st.MarkReviewed(ctx, rv); {
	case errors.Is(err, store.ErrInvalid):
		refuse(w, http.StatusBadRequest, "invalid")
		return
	case err != nil:
		refuse(w, http.StatusServiceUnavailable, "store_unavailable")
		return
	}
	writeJSON(w, http.StatusOK, rv)
}

// apiError is every refusal's body: a fixed code, never request data.
type apiError struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("content-type", "application/json")
	w.Header().Set("cache-control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func refuse(w http.ResponseWriter, status int, code string) { writeJSON(w, status, apiError{code}) }

// caller verifies the request's bearer token.
func (a *approvalAdmin) caller(r *http.Request) (authz.Identity, bool) {
	h := r.Header.Get("authorization")
	scheme, tok, ok := strings.Cut(strings.TrimSpace(h), " ")
	if !ok || !strings.EqualFold(scheme, "bearer") || strings.TrimSpace(tok) == "" {
		return authz.Identity{}, false
	}
	id, err := a.verifier.Verify(r.Context(), strings.TrimSpace(tok))
	if err != nil || !id.Authenticated || id.Subject == "" || id.Service {
		return authz.Identity{}, false
	}
	return id, true
}

// approver verifies the token and the approver role; it answers the
// refusal itself.
func (a *approvalAdmin) approver(w http.ResponseWriter, r *http.Request) (authz.Identity, string) {
	id, ok := a.caller(r)
	code := ""
	switch {
	case !ok:
		w.Header().Set("www-authenticate", `Bearer realm="phigate"`)
		refuse(w, http.StatusUnauthorized, "unauthenticated")
		return id, "unauthenticated"
	case !slices.Contains(id.Roles, a.cfg.ApproverRole):
		code = "not_an_approver"
	case !id.MFA:
		code = "mfa_required"
	default:
		return id, ""
	}
	refuse(w, http.StatusForbidden, code)
	return id, code
}

func (a *approvalAdmin) list(w http.ResponseWriter, r *http.Request) {
	if _, code := a.approver(w, r); code != "" {
		return
	}
	state := r.URL.Query().Get("state")
	switch state {
	case "", store.ApprovalPending, store.ApprovalApproved, store.ApprovalDenied, store.ApprovalLapsed:
	default:
		refuse(w, http.StatusBadRequest, "unknown_state")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	as, err := a.st.ListApprovals(ctx, state, a.now())
	if err != nil {
		a.log.Warn("approvals not listed", zap.Error(err))
		refuse(w, http.StatusServiceUnavailable, "store_unavailable")
		return
	}
	if as == nil {
		as = []store.Approval{}
	}
	writeJSON(w, http.StatusOK, as)
}

func (a *approvalAdmin) get(w http.ResponseWriter, r *http.Request) {
	id, ok := a.caller(r)
	if !ok {
		refuse(w, http.StatusUnauthorized, "unauthenticated")
		return
	}
	ap, err := a.st.GetApproval(r.Context(), r.PathValue("id"))
	switch {
	case errors.Is(err, store.ErrNotFound):
		refuse(w, http.StatusNotFound, "not_found")
		return
	case err != nil:
		refuse(w, http.StatusServiceUnavailable, "store_unavailable")
		return
	}
	if ap.Requester != id.Subject && !(slices.Contains(id.Roles, a.cfg.ApproverRole) && id.MFA) {
		// Another user's request is as good as absent.
		refuse(w, http.StatusNotFound, "not_found")
		return
	}
	writeJSON(w, http.StatusOK, ap.Reported(a.now()))
}

func (a *approvalAdmin) decide(w http.ResponseWriter, r *http.Request, approve bool) {
	ref := r.PathValue("id")
	who, code := a.approver(w, r)
	if code != "" {
		if who.Subject != "" {
			// An authenticated user who may not decide tried to: the
			// trail keeps the attempt.
			_ = a.trail.RecordWorkflow(r.Context(), audit.WorkflowEvent{Action: audit.WorkflowRefused, ApprovalID: ref,
				Actor: who.Subject, Reason: code})
		}
		return
	}
	ap, code, status := a.decideAs(r.Context(), who, ref, approve)
	if code != "" {
		refuse(w, status, code)
		return
	}
	writeJSON(w, http.StatusOK, ap)
}

// decideAs decides request ref as who, a verified identity the caller
// has found to hold the approver role with a second factor, and records
// it. A refusal is a code and an HTTP status, recorded too.
func (a *approvalAdmin) decideAs(ctx context.Context, who authz.Identity, ref string, approve bool) (store.Approval, string, int) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	now := a.now()
	if approve {
		// An approval grants: it is recorded as about to be given before
		// it is, so the trail never lacks one that took effect. A grant
		// that then fails leaves a refusal after it.
		cur, err := a.st.GetApproval(ctx, ref)
		if err == nil && cur.Requester != who.Subject && cur.Reported(now).State == store.ApprovalPending {
			ev := audit.WorkflowEvent{Action: audit.WorkflowApproved, ApprovalID: ref, Kind: cur.Kind, Requester: cur.Requester,
				Actor: who.Subject, Role: elevationRole(cur), Expires: now.Add(cur.TTL)}
			if err := a.trail.RecordWorkflow(ctx, ev); err != nil {
				a.log.Error("audit append failed; approval not given", zap.String("approval_id", ref), zap.Error(err))
				return store.Approval{}, "audit_unavailable", http.StatusServiceUnavailable
			}
		}
	}
	ap, err := a.st.DecideApproval(ctx, ref, who.Subject, approve, now)
	code, status := "", http.StatusOK
	switch {
	case err == nil:
	case errors.Is(err, store.ErrSelfApproval):
		code, status = "self_approval", http.StatusForbidden
	case errors.Is(err, store.ErrNotPending):
		code, status = "not_pending", http.StatusConflict
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrInvalid):
		code, status = "not_found", http.StatusNotFound
	default:
		a.log.Warn("approval not decided", zap.String("approval_id", ref), zap.Error(err))
		code, status = "store_unavailable", http.StatusServiceUnavailable
	}
	if code != "" {
		_ = a.trail.RecordWorkflow(ctx, audit.WorkflowEvent{Action: audit.WorkflowRefused, ApprovalID: ref, Kind: ap.Kind,
			Requester: ap.Requester, Actor: who.Subject, Reason: code})
		return ap, code, status
	}
	if !approve {
		if err := a.trail.RecordWorkflow(ctx, audit.WorkflowEvent{Action: audit.WorkflowDenied, ApprovalID: ref, Kind: ap.Kind,
			Requester: ap.Requester, Actor: who.Subject, Role: elevationRole(ap)}); err != nil {
			a.log.Error("audit append of a denial failed", zap.String("approval_id", ref), zap.Error(err))
		}
	}
	a.log.Info("approval decided", zap.String("approval_id", ref), zap.String("state", ap.State))
	return ap, "", http.StatusOK
}

// Decide implements console.ApprovalDesk: who must hold the approver role
// with a second factor, as on the admin endpoint.
func (a *approvalAdmin) Decide(ctx context.Context, who authz.Identity, ref string, approve bool) (string, error) {
	code := ""
	switch {
	case !slices.Contains(who.Roles, a.cfg.ApproverRole):
		code = "not_an_approver"
	case !who.MFA:
		code = "mfa_required"
	}
	if code != "" {
		_ = a.trail.RecordWorkflow(ctx, audit.WorkflowEvent{Action: audit.WorkflowRefused, ApprovalID: ref,
			Actor: who.Subject, Reason: code})
		return code, nil
	}
	_, code, status := a.decideAs(ctx, who, ref, approve)
	if status == http.StatusServiceUnavailable {
		return code, errors.New("approval: " + code)
	}
	return code, nil
}

// Pending implements console.ApprovalDesk.
func (a *approvalAdmin) Pending(ctx context.Context) ([]store.Approval, error) {
	return a.st.ListApprovals(ctx, store.ApprovalPending, a.now())
}

func elevationRole(a store.Approval) string {
	if a.Kind == store.ApprovalElevation {
		return a.Scope
	}
	return ""
}

// elevationRequest is the body of POST /elevations.
type elevationRequest struct {
	Role     string `json:"role"`
	Reason   string `json:"reason"`
	Duration string `json:"duration"` // a Go duration: "30m", "4h"
}

func (a *approvalAdmin) requestElevation(w http.ResponseWriter, r *http.Request) {
	who, ok := a.caller(r)
	if !ok {
		refuse(w, http.StatusUnauthorized, "unauthenticated")
		return
	}
	var req elevationRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, 8<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		refuse(w, http.StatusBadRequest, "malformed_body")
		return
	}
	d, err := time.ParseDuration(req.Duration)
	switch {
	case err != nil || d <= 0 || d > a.cfg.Elevation.MaxDuration:
		refuse(w, http.StatusBadRequest, "bad_duration")
		return
	case !slices.Contains(a.cfg.Elevation.Roles, req.Role):
		refuse(w, http.StatusForbidden, "role_not_requestable")
		return
	case strings.TrimSpace(req.Reason) == "":
		refuse(w, http.StatusBadRequest, "reason_required")
		return
	case slices.Contains(who.Roles, req.Role):
		refuse(w, http.StatusConflict, "role_held")
		return
	}
	now := a.now()
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	ap, created, err := a.st.RequestApproval(ctx, store.Approval{Kind: store.ApprovalElevation, Requester: who.Subject,
		Scope: req.Role, Reason: req.Reason, TTL: d, Expires: now.Add(a.cfg.PendingTTL)}, now)
	switch {
	case errors.Is(err, store.ErrInvalid):
		refuse(w, http.StatusBadRequest, "invalid")
		return
	case err != nil:
		refuse(w, http.StatusServiceUnavailable, "store_unavailable")
		return
	}
	if created {
		if err := a.trail.RecordWorkflow(ctx, audit.WorkflowEvent{Action: audit.WorkflowRequested, ApprovalID: ap.ID,
			Kind: ap.Kind, Requester: who.Subject, Actor: who.Subject, Role: req.Role}); err != nil {
			a.log.Error("audit append of an elevation request failed", zap.String("approval_id", ap.ID), zap.Error(err))
		}
	}
	status := http.StatusCreated
	if !created {
		status = http.StatusOK
	}
	writeJSON(w, status, ap)
}

// watchExpiries records each granted elevation that ends, so the trail
// shows the end as well as the grant: every tick asks for those that
// ended since the last, so each end is recorded once by every replica
// running when it happens. It runs until ctx ends.
func (a *approvalAdmin) watchExpiries(ctx context.Context, every time.Duration) {
	from := a.now()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		to := a.now()
		lctx, cancel := context.WithTimeout(ctx, every)
		as, err := a.st.EndedBetween(lctx, store.ApprovalElevation, from, to)
		cancel()
		if err != nil {
			continue // the same window is asked again on the next tick
		}
		for _, ap := range as {
			if err := a.trail.RecordWorkflow(ctx, audit.WorkflowEvent{Action: audit.WorkflowExpired, ApprovalID: ap.ID,
				Kind: ap.Kind, Requester: ap.Requester, Role: ap.Scope, Expires: ap.Expires}); err != nil {
				a.log.Error("audit append of an elevation's end failed", zap.String("approval_id", ap.ID), zap.Error(err))
			}
		}
		from = to
	}
}

// newApprovals wires the approval workflow the configuration asks for:
// the rules the authorizer applies and the admin endpoints. Nothing is
// configured: zero rules and no endpoints.
func newApprovals(c ApprovalsConfig, st store.Store, r *store.Reader, v authz.Verifier, trail *audit.Log, log *zap.Logger) (authz.Approvals, *approvalAdmin, error) {
	if !c.Enabled() {
		return authz.Approvals{}, nil, nil
	}
	as, ok := st.(store.ApprovalStore)
	if !ok {
		return authz.Approvals{}, nil, errors.New("approvals: the store keeps no approvals")
	}
	src, err := r.Approvals(c.TTL, c.PendingTTL)
	if err != nil {
		return authz.Approvals{}, nil, err
	}
	adm := &approvalAdmin{cfg: c, st: as, verifier: v, trail: trail, log: log, now: time.Now}
	return c.Rules(src), adm, nil
}
