package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Ingester applies the messages of a clinical event feed (an HL7 v2 ADT
// stream, FHIR CareTeam and Encounter resources) to the care
// relationships. Each message is applied exactly once, in one
// transaction with the record that it was, so every replica taking the
// same feed agrees on what it changed; messages about one subject (a
// patient, a resource) are applied one at a time, and one older than the
// newest applied for its subject changes nothing.
type Ingester interface {
	// Ingest applies m. It reads the feed's state for m.Subject and calls
	// plan with it (found is false for a subject never seen); plan says
	// what to write and the state to keep. Nothing is written when plan
	// fails, when a write is refused, or when m was applied before
	// (IngestDuplicate) or is older than the subject's newest applied
	// event (IngestStale, recorded so that it too is a duplicate next
	// time). plan may run more than once, and must not have effects.
	Ingest(ctx context.Context, m IngestMessage, plan func(st IngestState, found bool) (IngestPlan, error)) (IngestOutcome, error)
	// PruneIngested forgets the ids of messages received before before,
	// and returns how many. A message delivered again after that is
	// applied again, unless a newer one for its subject was (stale): the
	// subject's state is kept.
	PruneIngested(ctx context.Context, before time.Time) (int64, error)
}

// IngestMessage identifies one message of a feed.
type IngestMessage struct {
	// Source is the feed ("adt", "careteam", "encounter"); Sender and ID
	// identify the message within it (MSH-3^MSH-4 and MSH-10 for HL7).
	Source string
	Sender string
	ID     string
	// Subject is what messages are ordered by: the patient for ADT, the
	// resource (CareTeam/123) for FHIR.
	Subject string
	// At is when the event happened, by the sender's clock.
	At time.Time
}

// IngestOutcome says what Ingest did with a message.
type IngestOutcome string

// Outcomes of Ingest.
const (
	IngestApplied   IngestOutcome = "applied"
	IngestDuplicate IngestOutcome = "duplicate"
	IngestStale     IngestOutcome = "stale"
)

// IngestState is what a feed keeps about one subject between messages.
type IngestState struct {
	// Patient is the patient the practitioners are related to.
	Patient string `json:"patient,omitempty"`
	// Status is the feed's word for where the subject stands
	// ("admitted", "discharged", "cancelled", "active", ...).
	Status string `json:"status,omitempty"`
	// Members are the practitioners named, each with its role and the
	// window of its relationship; Previous is the set before the last
	// transfer, which a cancelled transfer restores.
	Members  []IngestMember `json:"members,omitempty"`
	Previous []IngestMember `json:"previous,omitempty"`
	// Until is when the members' relationships end (a discharge plus its
	// grace); zero is open.
	Until time.Time `json:"until,omitzero"`
	// At is the event time of the newest message applied.
	At time.Time `json:"at"`
}

// IngestMember is one practitioner a feed names for a subject.
type IngestMember struct {
	Practitioner string    `json:"practitioner"`
	Role         string    `json:"role"`
	From         time.Time `json:"from"`
}

// IngestPlan is what one message writes: relationships put, and ended.
type IngestPlan struct {
	Put   []Relationship
	End   []IngestEnd
	State IngestState
}

// IngestEnd closes one relationship at At.
type IngestEnd struct {
	Key RelationshipKey
	At  time.Time
}

func (m IngestMessage) validate() error {
	for _, f := range []struct{ name, v string }{{"source", m.Source}, {"message id", m.ID}, {"subject", m.Subject}} {
		if err := checkID(f.name, f.v); err != nil {
			return err
		}
	}
	if len(m.Sender) > maxID {
		return invalid("sender is longer than %d bytes", maxID)
	}
	if m.At.IsZero() {
		return invalid("the event time is required")
	}
	return nil
}

func (p IngestPlan) validate() error {
	for _, r := range p.Put {
		if err := r.validate(); err != nil {
			return err
		}
	}
	for _, e := range p.End {
		if err := e.Key.validate(); err != nil {
			return err
		}
		if e.At.IsZero() {
			return invalid("the end time is required")
		}
	}
	return nil
}

type ingestKey struct{ source, sender, id string }
type stateKey struct{ source, subject string }

// Ingest implements Ingester. The whole message is applied under the
// store's lock, after every write it makes was validated, so a refusal
// leaves nothing half-applied.
func (m *Memory) Ingest(_ context.Context, msg IngestMessage, plan func(IngestState, bool) (IngestPlan, error)) (IngestOutcome, error) {
	if err := msg.validate(); err != nil {
		return "", err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return "", ErrClosed
	}
	if m.ingested == nil {
		m.ingested, m.ingestState = map[ingestKey]time.Time{}, map[stateKey]IngestState{}
	}
	k := ingestKey{msg.Source, msg.Sender, msg.ID}
	if _, dup := m.ingested[k]; dup {
		return IngestDuplicate, nil
	}
	sk := stateKey{msg.Source, msg.Subject}
	st, found := m.ingestState[sk]
	if found && msg.At.Before(st.At) {
		m.ingested[k] = time.Now()
		return IngestStale, nil
	}
	p, err := plan(st, found)
	if err != nil {
		return "", err
	}
	if err := p.validate(); err != nil {
		return "", err
	}
	for _, r := range p.Put {
		m.putRelationship(r)
	}
	for _, e := range p.End {
		m.endRelationship(e.Key, e.At)
	}
	p.State.At = msg.At.UTC()
	m.ingestState[sk] = p.State
	m.ingested[k] = time.Now()
	return IngestApplied, nil
}

// PruneIngested implements Ingester.
func (m *Memory) PruneIngested(_ context.Context, before time.Time) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var n int64
	for k, at := range m.ingested {
		if at.Before(before) {
			delete(m.ingested, k)
			n++
		}
	}
	return n, nil
}

// PruneIngested implements Ingester.
func (p *Postgres) PruneIngested(ctx context.Context, before time.Time) (int64, error) {
	tag, err := p.pool.Exec(ctx, "DELETE FROM phigate_ingest_messages WHERE received_at < $1", before.UTC())
	if err != nil {
		return 0, fmt.Errorf("store: postgres: %w", err)
	}
	return tag.RowsAffected(), nil
}

// ingestLockSpace keeps the feed's advisory locks apart from the
// migration lock (a two-key advisory lock never collides with a one-key
// one).
const ingestLockSpace = 0x696e67 // "ing"

// Ingest implements Ingester: one transaction that takes an advisory lock
// on the subject (so replicas taking one feed apply a subject's messages
// one at a time), records the message id (a second delivery finds it and
// rolls back), and writes the plan, the state and the change notices.
func (p *Postgres) Ingest(ctx context.Context, msg IngestMessage, plan func(IngestState, bool) (IngestPlan, error)) (IngestOutcome, error) {
	if err := msg.validate(); err != nil {
		return "", err
	}
	tx, err := p.pool.Begin(ctx)
	if err != nil {
		return "", fmt.Errorf("store: postgres: %w", err)
	}
	defer tx.Rollback(context.Background()) //nolint:errcheck // after Commit, a no-op
	out, err := p.ingestTx(ctx, tx, msg, plan)
	if err != nil || out == IngestDuplicate {
		return out, err
	}
	if err := tx.Commit(ctx); err != nil {
		return "", fmt.Errorf("store: postgres: commit: %w", err)
	}
	return out, nil
}

func (p *Postgres) ingestTx(ctx context.Context, tx pgx.Tx, msg IngestMessage, plan func(IngestState, bool) (IngestPlan, error)) (IngestOutcome, error) {
	pg := func(err error) error { return fmt.Errorf("store: postgres: %w", err) }
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1, hashtext($2 || '/' || $3))", ingestLockSpace, msg.Source, msg.Subject); err != nil {
		return "", pg(err)
	}
	var raw []byte
	found := true
	err := tx.QueryRow(ctx, "SELECT state FROM phigate_ingest_state WHERE source = $1 AND subject = $2", msg.Source, msg.Subject).Scan(&raw)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		found = false
	case err != nil:
		return "", pg(err)
	}
	var st IngestState
	if found {
		if err := json.Unmarshal(raw, &st); err != nil {
			return "", pg(fmt.Errorf("ingest state of a subject does not decode: %w", err))
		}
	}
	outcome := IngestApplied
	if found && msg.At.Before(st.At) {
		outcome = IngestStale
	}
	tag, err := tx.Exec(ctx, `INSERT INTO phigate_ingest_messages (source, sender, message_id, subject, outcome, event_time)
		VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING`,
		msg.Source, msg.Sender, msg.ID, msg.Subject, string(outcome), msg.At.UTC())
	if err != nil {
		return "", pg(err)
	}
	if tag.RowsAffected() == 0 {
		return IngestDuplicate, nil
	}
	if outcome == IngestStale {
		return outcome, nil
	}
	pl, err := plan(st, found)
	if err != nil {
		return "", err
	}
	if err := pl.validate(); err != nil {
		return "", err
	}
	notified := map[Change]bool{}
	announce := func(c Change) error {
		if notified[c] {
			return nil
		}
		notified[c] = true
		return notify(ctx, tx, c)
	}
	for _, r := range pl.Put {
		if _, err := tx.Exec(ctx, `INSERT INTO phigate_relationships (practitioner, patient, role, source, valid_from, valid_until)
			VALUES ($1, $2, $3, $4, $5, $6)
			ON CONFLICT (practitioner, patient, role, source) DO UPDATE SET valid_from = EXCLUDED.valid_from, valid_until = EXCLUDED.valid_until`,
			r.Practitioner, r.Patient, r.Role, r.Source, r.From.UTC(), nullTime(r.Until)); err != nil {
			return "", pg(err)
		}
		if err := announce(Change{Kind: KindRelationship, Subject: r.Practitioner, Patient: r.Patient}); err != nil {
			return "", pg(err)
		}
	}
	for _, e := range pl.End {
		k := e.Key
		if _, err := tx.Exec(ctx, `UPDATE phigate_relationships SET valid_until = GREATEST($5, valid_from)
			WHERE practitioner = $1 AND patient = $2 AND role = $3 AND source = $4`,
			k.Practitioner, k.Patient, k.Role, k.Source, e.At.UTC()); err != nil {
			return "", pg(err)
		}
		if err := announce(Change{Kind: KindRelationship, Subject: k.Practitioner, Patient: k.Patient}); err != nil {
			return "", pg(err)
		}
	}
	pl.State.At = msg.At.UTC()
	b, err := json.Marshal(pl.State)
	if err != nil {
		return "", pg(err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO phigate_ingest_state (source, subject, event_time, state) VALUES ($1, $2, $3, $4)
		ON CONFLICT (source, subject) DO UPDATE SET event_time = EXCLUDED.event_time, state = EXCLUDED.state`,
		msg.Source, msg.Subject, msg.At.UTC(), b); err != nil {
		return "", pg(err)
	}
	return IngestApplied, nil
}

var (
	_ Ingester = (*Memory)(nil)
	_ Ingester = (*Postgres)(nil)
)
