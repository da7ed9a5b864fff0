package audit

import (
	"context"
	"time"
)

// KindConsole records what a person did in the privacy officer's console:
// signing in (or being refused), reading a patient's accesses, resolving
// an alert. Reading the trail through the console is itself an access to
// be accounted for.
const KindConsole = "console"

// ConsoleEvent is one console action. It holds identifiers and fixed
// words: the officer's subject, the action, what it concerned, and the
// officer's note only as its length (free text stays in the store).
type ConsoleEvent struct {
	Officer string
	Peer    string
	// Action is a fixed word: login, login_refused, patient_accesses,
	// alert_cleared, alert_escalated, ...
	Action string
	// Patient is the patient whose accesses were read, if any.
	Patient string
	// Target names what the action changed ("alert/12"), if anything.
	Target string
	// Refused is true when the action was not carried out; Reason then
	// says why in fixed words.
	Refused bool
	Reason  string
}

// Detail types of console records.
const (
	CodeConsole         = "console"
	SystemConsoleTarget = "urn:phigate:console-target"
	DetailAction        = "action"
)

var typeAuditLogUsed = Coding{System: SystemDCM, Code: "110101", Display: "Audit Log Used"}

// Console builds the record of one console action: a DICOM Audit Log Used
// event, the officer as the requesting agent, the patient and the target
// as entities.
func (b Builder) Console(ce ConsoleEvent, recorded time.Time) *AuditEvent {
	action := "R"
	if ce.Target != "" {
		action = "U"
	}
	ev := &AuditEvent{
		ResourceType: "AuditEvent",
		Type:         typeAuditLogUsed,
		Subtype:      []Coding{{System: SystemPhigateEvent, Code: CodeConsole + ":" + ce.Action, Display: ce.Action}},
		Action:       action,
		Recorded:     recorded.UTC().Format(time.RFC3339Nano),
		Outcome:      OutcomeSuccess,
		OutcomeDesc:  ce.Action,
		Source: Source{Site: b.Site, Observer: Reference{Display: b.Server},
			Type: []Coding{sourceApplicationServer}},
	}
	if ce.Refused {
		ev.Outcome = OutcomeMinor
		ev.OutcomeDesc += ": refused"
		if ce.Reason != "" {
			ev.OutcomeDesc += ": " + ce.Reason
		}
	}
	ev.Agent = b.requestedBy("urn:phigate:console-officer", ce.Officer, ce.Peer)
	if ce.Patient != "" {
		ev.Entity = append(ev.Entity, Entity{Type: ptr(entityPerson), Role: ptr(rolePatient),
			What: &Reference{Reference: "Patient/" + ce.Patient}})
	}
	act := Entity{Type: ptr(entitySystem), Role: ptr(roleJob), Description: "console action",
		Detail: []EntityDetail{{Type: DetailAction, ValueString: ce.Action}}}
	if ce.Target != "" {
		act.What = &Reference{Identifier: &Identifier{System: SystemConsoleTarget, Value: ce.Target}}
	}
	ev.Entity = append(ev.Entity, act)
	return ev
}

// RecordConsole appends the record of one console action and returns once
// it is durable.
func (l *Log) RecordConsole(ctx context.Context, ce ConsoleEvent) error {
	ev := l.builder.Console(ce, l.now())
	return l.append(ctx, encodeConsole(getPayloadBuf(), ev), ev)
}

func encodeConsole(dst []byte, ev *AuditEvent) []byte {
	dst = append(dst, `{"v":1,"kind":"console","event":`...)
	dst = appendEvent(dst, ev)
	return append(dst, '}')
}

// Describe says what the event was about in a few words: its interaction
// or event code and the resource or query, as audit query prints it.
func (ev *AuditEvent) Describe() string { return what(ev) }
