package console

import (
	"net/http"
	"strings"
	"time"

	"github.com/phigate/phigate/audit"
	"github.com/phigate/phigate/authz"
	"github.com/phigate/phigate/store"
)

func (c *Console) approvals(w http.ResponseWriter, r *http.Request, s session) {
	if !c.viewed(w, r, audit.ConsoleEvent{Officer: s.Subject, Action: "approvals"}) {
		return
	}
	data := page(r, s, "approvals")
	if c.d.Approvals == nil {
		data["Off"] = true
		c.render(w, "approvals.html", data)
		return
	}
	pending, err := c.d.Approvals.Pending(r.Context())
	if err != nil {
		data["Error"] = "The approval store could not be read."
	}
	data["Pending"] = pending
	c.render(w, "approvals.html", data)
}

func (c *Console) decide(w http.ResponseWriter, r *http.Request, s session) {
	if c.d.Approvals == nil {
		http.NotFound(w, r)
		return
	}
	id := r.PathValue("id")
	approve := r.PostFormValue("decision") == "approve"
	if !approve && r.PostFormValue("decision") != "deny" {
		http.Error(w, "decision must be approve or deny", http.StatusBadRequest)
		return
	}
	// The approval itself is recorded by the desk as a workflow record;
	// the console records that an officer acted through it.
	who := authz.Identity{Authenticated: true, Subject: s.Subject, Roles: s.Roles, MFA: s.MFA}
	code, err := c.d.Approvals.Decide(r.Context(), who, id, approve)
	action := "approval_denied"
	if approve {
		action = "approval_approved"
	}
	ce := audit.ConsoleEvent{Officer: s.Subject, Action: action, Target: "approval/" + id}
	if code != "" || err != nil {
		ce.Refused, ce.Reason = true, code
	}
	if rerr := c.record(r, ce); rerr != nil && err == nil && code == "" {
		http.Error(w, "the approval was decided, but the console's record could not be written", http.StatusServiceUnavailable)
		return
	}
	switch {
	case err != nil:
		http.Redirect(w, r, "/console/approvals?done=unavailable", http.StatusSeeOther)
	case code != "":
		http.Redirect(w, r, "/console/approvals?done="+code, http.StatusSeeOther)
	case approve:
		http.Redirect(w, r, "/console/approvals?done=approved", http.StatusSeeOther)
	default:
		http.Redirect(w, r, "/console/approvals?done=denied", http.StatusSeeOther)
	}
}

// reviewed are the decision ids of break-glass accesses marked reviewed.
func (c *Console) reviewed(r *http.Request) ([]string, error) {
	if c.d.Reviews == nil {
		return nil, nil
	}
	rs, err := c.d.Reviews.Reviews(r.Context())
	ids := make([]string, len(rs))
	for i, x := range rs {
		ids[i] = x.DecisionID
	}
	return ids, err
}

func (c *Console) buildReview(r *http.Request, sample int, seed uint64) (audit.Review, error) {
	entries, err := audit.Query(c.d.AuditDir, audit.Filter{}, audit.QueryOptions{EncryptionKey: c.d.EncryptionKey})
	if err != nil {
		return audit.Review{}, err
	}
	ids, err := c.reviewed(r)
	if err != nil {
		return audit.Review{}, err
	}
	return audit.BuildReview(entries, audit.ReviewOptions{UnusedFor: 30 * 24 * time.Hour, AsOf: c.d.Now(), Roles: c.d.Roles,
		Reviewed: ids, Sample: sample, Seed: seed}), nil
}

func (c *Console) breakGlass(w http.ResponseWriter, r *http.Request, s session) {
	if !c.viewed(w, r, audit.ConsoleEvent{Officer: s.Subject, Action: "break_glass_queue"}) {
		return
	}
	data := page(r, s, "breakglass", map[string]any{"Writable": c.d.Reviews != nil})
	rev, err := c.buildReview(r, 0, 0)
	if err != nil {
		data["Error"] = "The audit trail or the review store could not be read."
	}
	data["Queue"] = rev.UnreviewedBreakGlass
	c.render(w, "breakglass.html", data)
}

func (c *Console) markReviewed(w http.ResponseWriter, r *http.Request, s session) {
	if c.d.Reviews == nil {
		http.NotFound(w, r)
		return
	}
	id := r.PathValue("id")
	verdict := r.PostFormValue("verdict")
	note := strings.TrimSpace(r.PostFormValue("note"))
	ce := audit.ConsoleEvent{Officer: s.Subject, Action: "break_glass_" + verdict, Target: "decision/" + id}
	if verdict != "justified" && verdict != "referred" {
		http.Error(w, "verdict must be justified or referred", http.StatusBadRequest)
		return
	}
	if note == "" {
		http.Redirect(w, r, "/console/breakglass?done=note", http.StatusSeeOther)
		return
	}
	err := c.d.Reviews.MarkReviewed(r.Context(), store.Review{DecisionID: id, Reviewer: s.Subject, Note: verdict + ": " + note, At: c.d.Now()})
	if err != nil {
		ce.Refused, ce.Reason = true, "store refused"
	}
	if rerr := c.record(r, ce); rerr != nil && err == nil {
		http.Error(w, "the review was kept, but its audit record could not be written", http.StatusServiceUnavailable)
		return
	}
	if err != nil {
		http.Redirect(w, r, "/console/breakglass?done=refused", http.StatusSeeOther)
		return
	}
	http.Redirect(w, r, "/console/breakglass?done="+verdict, http.StatusSeeOther)
}

func (c *Console) review(w http.ResponseWriter, r *http.Request, s session) {
	if !c.viewed(w, r, audit.ConsoleEvent{Officer: s.Subject, Action: "entitlement_review"}) {
		return
	}
	// The day's sample: the same for every officer who opens it that day.
	day := c.d.Now().UTC().Truncate(24 * time.Hour)
	rev, err := c.buildReview(r, 20, uint64(day.Unix()))
	data := page(r, s, "review", map[string]any{"R": rev, "Day": day.Format("2006-01-02")})
	if err != nil {
		data["Error"] = "The audit trail or the review store could not be read."
	}
	c.render(w, "review.html", data)
}
