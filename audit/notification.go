package audit

import (
	"context"
	"strconv"
	"time"
)

// KindNotification records the outcome of one notification a decision's
// obligation asked for (a break-glass access reported to the privacy
// office): delivered, or failed, dropped or abandoned, and to which sink.
// It is joined to its decision by the decision id, so "audit query
// --decision" lists the decision, its filtering and its notifications.
const KindNotification = "notification"

// CodeNotification is the subtype of a notification record.
const CodeNotification = "notification"

// Detail types of a notification record's decision entity, besides
// DetailOutcome.
const (
	DetailSink     = "sink"
	DetailAttempts = "attempts"
	DetailError    = "error"
)

// NotificationEvent is the outcome of one notification. Error is a fixed
// word ("http_503", "timeout", "queue_full"), never a message from the
// sink or data from the request. Outcome is the notify package's word:
// delivered, failed, dropped, abandoned or unknown_sink.
type NotificationEvent struct {
	DecisionID string
	Obligation string // the obligation type, "notify"
	Sink       string
	Outcome    string
	Attempts   int
	Error      string
}

// Notification builds the record of a notification's outcome: an
// application activity of phigate's, a success only when delivered.
func (b Builder) Notification(ne NotificationEvent, recorded time.Time) *AuditEvent {
	ev := &AuditEvent{
		ResourceType: "AuditEvent",
		Type:         Coding{System: SystemDCM, Code: "110100", Display: "Application Activity"},
		Subtype:      []Coding{{System: SystemPhigateEvent, Code: CodeNotification, Display: "Obligation notification"}},
		Action:       "E",
		Recorded:     recorded.UTC().Format(time.RFC3339Nano),
		Outcome:      OutcomeSuccess,
		OutcomeDesc:  "notification " + ne.Outcome + ": " + ne.Sink,
		Source: Source{Site: b.Site, Observer: Reference{Display: b.Server},
			Type: []Coding{sourceApplicationServer}},
		Agent: []Agent{{Type: &CodeableConcept{Coding: []Coding{agentSource}}, Who: &Reference{Display: b.Server}}},
	}
	if ne.Outcome != "delivered" {
		ev.Outcome = OutcomeSerious
		if ne.Error != "" {
			ev.OutcomeDesc += " (" + ne.Error + ")"
		}
	}
	if ne.DecisionID != "" {
		ev.ID = ne.DecisionID + "-n-" + ne.Sink
	}
	dec := Entity{Type: ptr(entitySystem), Role: ptr(roleJob), Description: "obligation " + ne.Obligation,
		What: &Reference{Identifier: &Identifier{System: SystemDecisionID, Value: ne.DecisionID}},
		Detail: []EntityDetail{
			{Type: DetailSink, ValueString: ne.Sink},
			{Type: DetailOutcome, ValueString: ne.Outcome},
			{Type: DetailAttempts, ValueString: strconv.Itoa(ne.Attempts)},
		}}
	if ne.Error != "" {
		dec.Detail = append(dec.Detail, EntityDetail{Type: DetailError, ValueString: ne.Error})
	}
	ev.Entity = []Entity{dec}
	return ev
}

// RecordNotification appends the record of a notification's outcome.
func (l *Log) RecordNotification(ctx context.Context, ne NotificationEvent) error {
	ev := l.builder.Notification(ne, l.now())
	return l.append(ctx, encodeNotification(getPayloadBuf(), ev, ne.DecisionID), ev)
}

// encodeNotification appends the stored record of a notification outcome.
func encodeNotification(dst []byte, ev *AuditEvent, decisionID string) []byte {
	dst = append(dst, `{"v":1,"kind":"notification","event":`...)
	dst = appendEvent(dst, ev)
	if decisionID != "" {
		dst = append(dst, `,"decision_id":`...)
		dst = appendString(dst, decisionID)
	}
	return append(dst, '}')
}
