package audit

import (
	"context"
	"time"
)

// IngestEvent describes one message of a clinical event feed: which feed
// and message, who sent it from where, the patient it is about, what it
// did to the care relationships and why it was refused if it was. It
// holds identifiers and fixed words only: no names, no free text of the
// message.
type IngestEvent struct {
	// Source is the feed ("adt", "careteam", "encounter"); Event the
	// message's kind ("ADT^A01", "CareTeam").
	Source string
	Event  string
	// MessageID is MSH-10, or the resource's type/id/_history/version.
	MessageID string
	// Sender is the sending application and facility (MSH-3^MSH-4) or the
	// authenticated client; Peer its network address.
	Sender string
	Peer   string
	// Patient is the patient id, when the message was read far enough.
	Patient string
	// Outcome is applied, duplicate, stale, rejected or error; Reason the
	// refusal's fixed words.
	Outcome string
	Reason  string
	// Put and Ended are the relationships written, "<practitioner> <role>".
	Put   []string
	Ended []string
}

// Ingest outcomes.
const (
	IngestApplied   = "applied"
	IngestDuplicate = "duplicate"
	IngestStale     = "stale"
	IngestRejected  = "rejected"
	IngestError     = "error"
)

// Detail types and codes of ingest records.
const (
	CodeIngest          = "ingest"
	SystemIngestMessage = "urn:phigate:ingest-message"
	DetailSource        = "source"
	DetailEvent         = "event"
	DetailOutcome       = "outcome"
	DetailPut           = "put"
	DetailEnded         = "ended"
)

var typePatientRecord = Coding{System: SystemDCM, Code: "110110", Display: "Patient Record"}

// Ingest builds the record of one feed message: a DICOM Patient Record
// event, action U (the patient's care relationships are updated), its
// sender as the requesting agent, phigate as the destination, the
// patient and the message as entities.
func (b Builder) Ingest(ie IngestEvent, recorded time.Time) *AuditEvent {
	ev := &AuditEvent{
		ResourceType: "AuditEvent",
		Type:         typePatientRecord,
		Subtype:      []Coding{{System: SystemPhigateEvent, Code: CodeIngest + ":" + ie.Source, Display: ie.Event}},
		Action:       "U",
		Recorded:     recorded.UTC().Format(time.RFC3339Nano),
		Outcome:      OutcomeSuccess,
		OutcomeDesc:  ie.Outcome,
		Source: Source{Site: b.Site, Observer: Reference{Display: b.Server},
			Type: []Coding{sourceApplicationServer}},
	}
	switch ie.Outcome {
	case IngestRejected:
		ev.Outcome = OutcomeMinor
	case IngestError:
		ev.Outcome = OutcomeSerious
	}
	if ie.Reason != "" {
		ev.OutcomeDesc += ": " + ie.Reason
	}
	ev.Agent = b.requestedBy("urn:phigate:ingest-sender", ie.Sender, ie.Peer)
	if ie.Patient != "" {
		ev.Entity = append(ev.Entity, Entity{Type: ptr(entityPerson), Role: ptr(rolePatient),
			What: &Reference{Reference: "Patient/" + ie.Patient}})
	}
	msg := Entity{Type: ptr(entitySystem), Role: ptr(roleJob), Description: "clinical event feed message",
		What: &Reference{Identifier: &Identifier{System: SystemIngestMessage, Value: ie.MessageID}},
		Detail: []EntityDetail{{Type: DetailSource, ValueString: ie.Source}, {Type: DetailEvent, ValueString: ie.Event},
			{Type: DetailOutcome, ValueString: ie.Outcome}}}
	if ie.Reason != "" {
		msg.Detail = append(msg.Detail, EntityDetail{Type: DetailReason, ValueString: ie.Reason})
	}
	for _, p := range ie.Put {
		msg.Detail = append(msg.Detail, EntityDetail{Type: DetailPut, ValueString: p})
	}
	for _, p := range ie.Ended {
		msg.Detail = append(msg.Detail, EntityDetail{Type: DetailEnded, ValueString: p})
	}
	ev.Entity = append(ev.Entity, msg)
	return ev
}

// requestedBy is the agents of a record something outside the decision
// path asked phigate for: the requester (who, named in system, from peer)
// as the source, phigate as the destination.
func (b Builder) requestedBy(system, who, peer string) []Agent {
	src := Agent{Type: &CodeableConcept{Coding: []Coding{agentSource}}, Requestor: true,
		Who: &Reference{Identifier: &Identifier{System: system, Value: who}}}
	if peer != "" {
		src.Network = &Network{Address: hostOf(peer), Type: "2"}
	}
	return []Agent{src, {Type: &CodeableConcept{Coding: []Coding{agentDestination}}, Who: &Reference{Display: b.Server}}}
}

// RecordIngest appends the record of one feed message and returns once
// it is durable.
func (l *Log) RecordIngest(ctx context.Context, ie IngestEvent) error {
	ev := l.builder.Ingest(ie, l.now())
	return l.append(ctx, encodeIngest(getPayloadBuf(), ev), ev)
}

// encodeIngest appends the stored record of one feed message.
func encodeIngest(dst []byte, ev *AuditEvent) []byte {
	dst = append(dst, `{"v":1,"kind":"ingest","event":`...)
	dst = appendEvent(dst, ev)
	return append(dst, '}')
}
