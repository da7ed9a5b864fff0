// Package notify carries out the notify obligation of a decision: a
// break-glass access is reported to the sinks the obligation names (an
// HTTPS webhook, a syslog collector), so that a privacy office hears of it
// while it matters, not at the next audit review.
//
// The access has already happened when a notification is due, so nothing
// here blocks or fails the request: a notification is queued for each sink
// and delivered in the background, with retries and exponential backoff up
// to a bound. Every outcome (delivered, failed after its attempts, dropped
// because the sink's queue was full, abandoned when phigate stopped before
// it was delivered, or a sink the configuration does not name) is handed to
// an OutcomeRecorder, which writes it to the audit trail beside the
// decision, and counted in phigate_notify_total.
//
// A notification carries what a privacy office needs to follow up and no
// more: the decision id (the key to the full audit record), the time, the
// user, their roles, the purpose of use, the policy revision and the rules
// that decided. The patient is sent only to a sink configured with
// include_patient; the break-glass reason, free text a clinician typed, is
// never sent.
package notify
