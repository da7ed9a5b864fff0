package server

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/phigate/phigate/audit"
	"github.com/phigate/phigate/authz"
	"github.com/phigate/phigate/notify"
	"github.com/phigate/phigate/policy"
)

// ObligationNotify is the obligation type carried out by notifying sinks.
const ObligationNotify = "notify"

// obligedRecorder writes each decision to the audit trail and then
// carries out its notify obligations. A notification is queued only once
// the decision's record is durable: a decision that was not recorded is
// denied, and no access happened to notify of.
type obligedRecorder struct {
	next     authz.Recorder // the audit trail, and what else records decisions
	notifier *notify.Notifier
}

func (r obligedRecorder) Record(ctx context.Context, req *authz.Request, d *authz.Decision) error {
	if err := r.next.Record(ctx, req, d); err != nil {
		return err
	}
	for _, o := range d.Obligations {
		if o.Type == ObligationNotify {
			r.notifier.Notify(notifyEvent(req, d), o.Params["to"])
		}
	}
	return nil
}

// notifyEvent copies what a notification may say out of the request and
// the decision, which are not kept past the Check. The break-glass reason
// is not among it.
func notifyEvent(req *authz.Request, d *authz.Decision) notify.Event {
	ev := notify.Event{
		DecisionID: d.ID, Time: req.Time, Allowed: d.Allow,
		BreakGlass: d.BreakGlass.Active, BreakGlassExpires: d.BreakGlass.Expires,
		Subject: req.Identity.Subject, Issuer: req.Identity.Issuer, FHIRUser: req.Identity.FHIRUser,
		Roles: slices.Clone(req.Identity.Roles), Purpose: req.Purpose, PolicyRevision: d.Policy.Revision,
		Rules: slices.Clone(d.Audit.Rules), Interaction: string(req.FHIR.Interaction), ResourceType: req.FHIR.ResourceType,
	}
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	if ev.Purpose == "" {
		ev.Purpose = d.Audit.Purpose
	}
	ev.Patients = append(slices.Clone(req.FHIR.Patients), d.Audit.Patients...)
	slices.Sort(ev.Patients)
	ev.Patients = slices.Compact(ev.Patients)
	return ev
}

// notifyAudit writes notification outcomes to the trail.
type notifyAudit struct{ log *audit.Log }

func (n notifyAudit) RecordOutcome(ctx context.Context, o notify.Outcome) error {
	return n.log.RecordNotification(ctx, audit.NotificationEvent{DecisionID: o.DecisionID, Obligation: ObligationNotify,
		Sink: o.Sink, Outcome: o.Result, Attempts: o.Attempts, Error: o.Error})
}

// NotifyProblems checks the policy's default notify recipient
// (data.phigate.emergency.notify, the "to" of the shipped break-glass
// obligation) against the configured sinks. With sinks configured, a
// recipient none of them has is an error; without a notify section it is
// a warning, since obligations are then only recorded. A policy that
// computes its recipients some other way is checked when it obliges: an
// unknown sink is audited as a failed notification.
func (c *Config) NotifyProblems(s *policy.Snapshot) (problem error, warning string) {
	if s == nil {
		return nil, ""
	}
	to, ok := s.DataString("phigate", "emergency", "notify")
	if !ok {
		return nil, ""
	}
	err := c.Notify.Targets(to)
	switch {
	case err == nil:
		return nil, ""
	case len(c.Notify.Sinks) == 0:
		return nil, fmt.Sprintf("notify: the policy's data.phigate.emergency.notify (%q) names a recipient, and no notify.sinks are configured: break-glass notifications are only recorded in the audit trail, each as a failure", to)
	default:
		return fmt.Errorf("notify: the policy's data.phigate.emergency.notify (%q) %v", to, err), ""
	}
}
