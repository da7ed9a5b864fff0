package ingest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/phigate/phigate/audit"
	"github.com/phigate/phigate/store"
)

// Recorder writes a feed message's record to the audit trail; nil only
// once the record is durable.
type Recorder interface {
	RecordIngest(ctx context.Context, ev audit.IngestEvent) error
}

// SourceADT is the source of the relationships the ADT feed writes.
const SourceADT = "adt"

// ADT turns HL7 v2 ADT messages into care relationships: the doctors
// PV1 names, related to the patient PID-3 names, for as long as the
// visit lasts (plus a grace period after discharge).
type ADT struct {
	st  store.Ingester
	rec Recorder
	cfg MLLPConfig
	log *zap.Logger
	m   *Metrics
	now func() time.Time
	seq atomic.Uint64
}

// NewADT applies messages to st and records each in rec. cfg must have
// been validated.
func NewADT(st store.Ingester, rec Recorder, cfg MLLPConfig, log *zap.Logger, m *Metrics) *ADT {
	return &ADT{st: st, rec: rec, cfg: cfg, log: log, m: m, now: time.Now}
}

// The events read, and what each does.
const (
	evAdmit            = "A01"
	evTransfer         = "A02"
	evDischarge        = "A03"
	evRegister         = "A04"
	evUpdate           = "A08"
	evCancelAdmit      = "A11"
	evCancelTransfer   = "A12"
	evCancelDischarge  = "A13"
	statusAdmitted     = "admitted"
	statusDischarged   = "discharged"
	statusCancelled    = "cancelled"
	explicitlyNullHL7v = `""`
)

var supportedEvents = []string{evAdmit, evTransfer, evDischarge, evRegister, evUpdate, evCancelAdmit, evCancelTransfer, evCancelDischarge}

// doctorFields are the PV1 fields read, in the order relationships are
// written: XCN, the id in component 1.
var doctorFields = []struct {
	field int
	role  string
}{{7, "attending"}, {8, "referring"}, {9, "consulting"}, {17, "admitting"}}

// result is what handling one message came to: the ACK's fields and the
// audit record's.
type result struct {
	enc     Encoding
	msh     *Segment
	control string // MSH-10, raw
	event   string // trigger event, for the metric ("other" when unsupported)
	ev      audit.IngestEvent
	ack     string // AA, AE, AR
	errCode string
	errSeg  string
	errFld  int
}

func (r *result) refuse(e *ParseError) *result {
	r.ack, r.errCode, r.errSeg, r.errFld = "AR", e.Code, e.Segment, e.Field
	r.ev.Outcome, r.ev.Reason = audit.IngestRejected, e.Error()
	return r
}

func (r *result) fail(reason string) *result {
	r.ack, r.errCode = "AE", codeInternal
	r.ev.Outcome, r.ev.Reason = audit.IngestError, reason
	return r
}

// Handle implements Handler: the message is parsed, applied in one store
// transaction, recorded in the audit trail, and only then acknowledged:
// AA when it is stored (or was already, or is older than what is), AE
// when the store or the trail failed (nothing half-applied; the sender
// should retry), AR when it is malformed or not one this feed reads
// (retrying will not help).
func (a *ADT) Handle(ctx context.Context, raw []byte, peer string) []byte {
	start := time.Now()
	r := a.process(ctx, raw)
	r.ev.Source, r.ev.Peer = SourceADT, peer
	if r.ev.Event == "" {
		r.ev.Event = "ADT"
	}
	if err := a.rec.RecordIngest(ctx, r.ev); err != nil {
		a.log.Error("audit record of an ADT message failed; answering AE", zap.Error(err))
		if r.ack == "AA" {
			// The change is stored; the retry will be a duplicate, and
			// recorded as one.
			r.ack, r.errCode = "AE", codeInternal
			r.ev.Outcome = audit.IngestError
		}
		r.ev.Reason = "the audit trail did not record the message"
	}
	a.m.messages.WithLabelValues(SourceADT, r.event, r.ev.Outcome).Inc()
	a.m.duration.WithLabelValues(SourceADT).Observe(time.Since(start).Seconds())
	if r.ack != "AA" {
		a.log.Info("ADT message not applied", zap.String("event", r.event), zap.String("ack", r.ack),
			zap.String("outcome", r.ev.Outcome), zap.String("reason", r.ev.Reason))
	} else if ce := a.log.Check(zap.DebugLevel, "ADT message"); ce != nil {
		ce.Write(zap.String("event", r.event), zap.String("outcome", r.ev.Outcome),
			zap.Int("put", len(r.ev.Put)), zap.Int("ended", len(r.ev.Ended)))
	}
	return a.ack(r)
}

// Refuse implements Handler for a frame too long to read.
func (a *ADT) Refuse(ctx context.Context, reason, peer string) []byte {
	r := &result{enc: DefaultEncoding, event: "other"}
	r.refuse(perr(codeDataType, "", 0, "%s", reason))
	r.ev.Source, r.ev.Event, r.ev.Peer = SourceADT, "ADT", peer
	if err := a.rec.RecordIngest(ctx, r.ev); err != nil {
		a.log.Error("audit record of a refused ADT message failed", zap.Error(err))
	}
	a.m.messages.WithLabelValues(SourceADT, r.event, r.ev.Outcome).Inc()
	return a.ack(r)
}

func (a *ADT) process(ctx context.Context, raw []byte) *result {
	r := &result{enc: DefaultEncoding, event: "other"}
	m, err := Parse(raw)
	if err != nil {
		return r.refuse(asParseError(err))
	}
	msh := m.Segments[0]
	r.enc, r.msh = m.Enc, &msh
	r.control = msh.Field(10)
	control, err := m.Value(msh, 10, 1)
	switch {
	case err != nil:
		return r.refuse(asParseError(err))
	case control == "":
		return r.refuse(perr(codeRequiredMissing, "MSH", 10, "the message control id is missing"))
	case !printable(control, 199):
		return r.refuse(perr(codeDataType, "MSH", 10, "the message control id is longer than 199 characters or holds a space or control character"))
	}
	r.ev.MessageID = control
	app, _ := m.Value(msh, 3, 1)
	fac, _ := m.Value(msh, 4, 1)
	r.ev.Sender = clip(app, 100) + "^" + clip(fac, 100)
	typ, _ := m.Value(msh, 9, 1)
	trig, _ := m.Value(msh, 9, 2)
	if typ != "ADT" {
		return r.refuse(perr(codeUnsupportedType, "MSH", 9, "the message type is not ADT"))
	}
	if !slices.Contains(supportedEvents, trig) {
		return r.refuse(perr(codeUnsupportedEvt, "MSH", 9, "the trigger event is not one of %s", strings.Join(supportedEvents, ", ")))
	}
	r.event, r.ev.Event = trig, "ADT^"+trig
	if p, _ := m.Value(msh, 11, 1); p != "P" {
		return r.refuse(perr(codeUnsupportedProc, "MSH", 11, "the processing id is not P (production)"))
	}
	var segs [3]Segment
	for i, name := range []string{"EVN", "PID", "PV1"} {
		s, ok := m.Segment(name)
		if !ok {
			return r.refuse(perr(codeSegmentSequence, name, 0, "the segment is missing"))
		}
		segs[i] = s
	}
	evn, pid, pv1 := segs[0], segs[1], segs[2]
	in := adtInput{event: trig}
	if in.at, err = a.eventTime(m, msh, evn); err != nil {
		return r.refuse(asParseError(err))
	}
	if in.patient, err = a.patientID(m, pid); err != nil {
		return r.refuse(asParseError(err))
	}
	r.ev.Patient = in.patient
	if in.admitAt, err = a.optionalTime(m, pv1, 44); err != nil {
		return r.refuse(asParseError(err))
	}
	if in.dischargeAt, err = a.optionalTime(m, pv1, 45); err != nil {
		return r.refuse(asParseError(err))
	}
	in.named = map[string][]string{}
	for _, d := range doctorFields {
		if d.field == 17 && !a.cfg.AdmittingEnabled() {
			continue
		}
		ids, present, err := doctors(m, pv1, d.field)
		if err != nil {
			return r.refuse(asParseError(err))
		}
		if present {
			in.named[d.role] = ids
		}
	}
	msg := store.IngestMessage{Source: SourceADT, Sender: r.ev.Sender, ID: control, Subject: in.patient, At: in.at}
	var put, ended []string
	out, err := a.st.Ingest(ctx, msg, func(st store.IngestState, found bool) (store.IngestPlan, error) {
		p := planADT(in, st, found, a.now(), a.cfg.DischargeGrace)
		put, ended = describe(p)
		return p, nil
	})
	switch {
	case errors.Is(err, store.ErrInvalid):
		return r.refuse(perr(codeDataType, "", 0, "the message holds a value the store refuses"))
	case err != nil:
		a.log.Warn("ADT message not stored", zap.String("event", trig), zap.Error(err))
		return r.fail("the store did not apply the message")
	}
	r.ack = "AA"
	switch out {
	case store.IngestApplied:
		r.ev.Outcome, r.ev.Put, r.ev.Ended = audit.IngestApplied, put, ended
	case store.IngestDuplicate:
		r.ev.Outcome, r.ev.Reason = audit.IngestDuplicate, "the message control id was applied before"
	case store.IngestStale:
		r.ev.Outcome, r.ev.Reason = audit.IngestStale, "an event newer than this one was applied for the patient"
	}
	return r
}

func asParseError(err error) *ParseError {
	var pe *ParseError
	if errors.As(err, &pe) {
		return pe
	}
	return perr(codeDataType, "", 0, "the message could not be read")
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// printable reports whether s is 1..n bytes of printable ASCII, no space.
func printable(s string, n int) bool {
	if s == "" || len(s) > n {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// validID reports whether s is a FHIR id ([A-Za-z0-9.-]{1,64}): the
// patients and practitioners named here are compared with the ids of
// FHIR references (Patient/<id>, a token's fhirUser).
func validID(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isAlnum(c) && c != '-' && c != '.' {
			return false
		}
	}
	return true
}

// eventTime is EVN-2 (recorded date/time), or MSH-7 when EVN-2 is empty.
func (a *ADT) eventTime(m *Message, msh, evn Segment) (time.Time, error) {
	for _, f := range []struct {
		seg Segment
		n   int
	}{{evn, 2}, {msh, 7}} {
		v, err := m.Value(f.seg, f.n, 1)
		if err != nil {
			return time.Time{}, err
		}
		if v == "" {
			continue
		}
		t, err := ParseTS(v, a.cfg.Location())
		if err != nil {
			return time.Time{}, perr(codeDataType, f.seg.Name(), f.n, "%s", err.Error())
		}
		return t, nil
	}
	return time.Time{}, perr(codeRequiredMissing, "EVN", 2, "neither EVN-2 nor MSH-7 gives the event time")
}

func (a *ADT) optionalTime(m *Message, s Segment, n int) (time.Time, error) {
	v, err := m.Value(s, n, 1)
	if err != nil || v == "" {
		return time.Time{}, err
	}
	t, err := ParseTS(v, a.cfg.Location())
	if err != nil {
		return time.Time{}, perr(codeDataType, s.Name(), n, "%s", err.Error())
	}
	return t, nil
}

// patientID chooses the PID-3 repetition the configuration names.
func (a *ADT) patientID(m *Message, pid Segment) (string, error) {
	want := a.cfg.PatientIdentifier
	for _, rep := range m.Repetitions(pid.Field(3)) {
		if want.AssigningAuthority != "" {
			auth, err := m.Unescape(m.Subcomponent(m.Component(rep, 4), 1))
			if err != nil || auth != want.AssigningAuthority {
				continue
			}
		}
		if want.Type != "" {
			typ, err := m.Unescape(m.Component(rep, 5))
			if err != nil || typ != want.Type {
				continue
			}
		}
		id, err := m.Unescape(m.Subcomponent(m.Component(rep, 1), 1))
		if err != nil {
			return "", perr(codeDataType, "PID", 3, "%s", err.Error())
		}
		if !validID(id) {
			return "", perr(codeDataType, "PID", 3, "the patient identifier is not 1 to 64 letters, digits, '-' or '.'")
		}
		return id, nil
	}
	if want.AssigningAuthority != "" || want.Type != "" {
		return "", perr(codeRequiredMissing, "PID", 3, "no identifier of the configured assigning authority and type")
	}
	return "", perr(codeRequiredMissing, "PID", 3, "the patient identifier is missing")
}

// doctors reads the ids of an XCN field. present is false for an empty
// field (no change, for an update); the HL7 null "" is present and empty
// (the doctors of that role are no longer).
func doctors(m *Message, pv1 Segment, n int) (ids []string, present bool, err error) {
	raw := pv1.Field(n)
	switch raw {
	case "":
		return nil, false, nil
	case explicitlyNullHL7v:
		return []string{}, true, nil
	}
	ids = []string{}
	for _, rep := range m.Repetitions(raw) {
		id, err := m.Unescape(m.Subcomponent(m.Component(rep, 1), 1))
		if err != nil {
			return nil, false, perr(codeDataType, "PV1", n, "%s", err.Error())
		}
		if id == "" {
			continue // a name without an id relates no one
		}
		if !validID(id) {
			return nil, false, perr(codeDataType, "PV1", n, "a doctor's id is not 1 to 64 letters, digits, '-' or '.'")
		}
		if !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	return ids, true, nil
}

// ParseTS reads an HL7 timestamp, YYYYMMDD[HH[MM[SS[.S…]]]][+/-ZZZZ]; one
// without an offset is in loc.
func ParseTS(s string, loc *time.Location) (time.Time, error) {
	bad := errors.New("the timestamp is not YYYYMMDD[HHMM[SS[.S]]][+/-ZZZZ]")
	if i := strings.IndexAny(s, "+-"); i >= 0 {
		off := s[i+1:]
		if len(off) != 4 {
			return time.Time{}, bad
		}
		h, err1 := strconv.Atoi(off[:2])
		mi, err2 := strconv.Atoi(off[2:])
		if err1 != nil || err2 != nil || h > 14 || mi > 59 {
			return time.Time{}, bad
		}
		secs := h*3600 + mi*60
		if s[i] == '-' {
			secs = -secs
		}
		loc, s = time.FixedZone("", secs), s[:i]
	}
	frac := ""
	if i := strings.IndexByte(s, '.'); i >= 0 {
		s, frac = s[:i], s[i+1:]
		if len(s) != 14 || frac == "" || len(frac) > 4 {
			return time.Time{}, bad
		}
	}
	layouts := map[int]string{8: "20060102", 10: "2006010215", 12: "200601021504", 14: "20060102150405"}
	layout, ok := layouts[len(s)]
	if !ok {
		return time.Time{}, bad
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return time.Time{}, bad
		}
	}
	t, err := time.ParseInLocation(layout, s, loc)
	if err != nil {
		return time.Time{}, bad
	}
	if frac != "" {
		n, err := strconv.Atoi(frac)
		if err != nil || n < 0 {
			return time.Time{}, bad
		}
		for range 9 - len(frac) {
			n *= 10
		}
		t = t.Add(time.Duration(n))
	}
	return t, nil
}

// adtInput is what one message says, read and checked.
type adtInput struct {
	event       string
	patient     string
	at          time.Time
	admitAt     time.Time // PV1-44, may be zero
	dischargeAt time.Time // PV1-45, may be zero
	// named maps a role to the doctors the message names for it; a role
	// absent from the map was not sent.
	named map[string][]string
}

// planADT is what the message does, given what the feed last stored for
// the patient. Times in the future (a sender's clock ahead of ours) are
// taken as now, so a relationship is not withheld until then.
func planADT(in adtInput, st store.IngestState, found bool, now time.Time, grace time.Duration) store.IngestPlan {
	at := earlier(in.at, now)
	key := func(m store.IngestMember) store.RelationshipKey {
		return store.RelationshipKey{Practitioner: m.Practitioner, Patient: in.patient, Role: m.Role, Source: SourceADT}
	}
	var p store.IngestPlan
	putAll := func(ms []store.IngestMember, until time.Time) {
		for _, m := range ms {
			if until.IsZero() || until.After(m.From) {
				p.Put = append(p.Put, store.Relationship{RelationshipKey: key(m), From: m.From, Until: until})
			}
		}
	}
	endAll := func(ms []store.IngestMember, at func(store.IngestMember) time.Time) {
		for _, m := range ms {
			p.End = append(p.End, store.IngestEnd{Key: key(m), At: at(m)})
		}
	}
	never := func(m store.IngestMember) time.Time { return m.From }
	p.State = st
	p.State.Patient = in.patient
	switch in.event {
	case evAdmit, evRegister, evUpdate, evTransfer:
		from := at
		keepAbsent := in.event == evUpdate || in.event == evTransfer
		if !keepAbsent && !in.admitAt.IsZero() {
			from = earlier(in.admitAt, now)
		}
		next := members(in.named, st.Members, keepAbsent, from)
		endAll(minus(st.Members, next), func(store.IngestMember) time.Time { return at })
		until := time.Time{}
		switch in.event {
		case evAdmit, evRegister:
			p.State.Status, p.State.Until, p.State.Previous = statusAdmitted, time.Time{}, nil
		case evTransfer:
			p.State.Previous = st.Members
			if p.State.Status == "" || p.State.Status == statusCancelled {
				p.State.Status = statusAdmitted
			}
			until = st.Until
		case evUpdate:
			if p.State.Status == "" || p.State.Status == statusCancelled {
				p.State.Status = statusAdmitted
			}
			until = st.Until // an update after discharge does not reopen the visit
		}
		putAll(next, until)
		p.State.Members = next
	case evDischarge:
		end := at
		if !in.dischargeAt.IsZero() {
			end = earlier(in.dischargeAt, now)
		}
		until := end.Add(grace)
		endAll(st.Members, func(store.IngestMember) time.Time { return until })
		p.State.Status, p.State.Until = statusDischarged, until
	case evCancelDischarge:
		if found && st.Status == statusDischarged {
			putAll(st.Members, time.Time{})
			p.State.Status, p.State.Until = statusAdmitted, time.Time{}
		}
	case evCancelAdmit:
		endAll(st.Members, never)
		p.State = store.IngestState{Patient: in.patient, Status: statusCancelled}
	case evCancelTransfer:
		if found && st.Previous != nil {
			endAll(minus(st.Members, st.Previous), never)
			putAll(minus(st.Previous, st.Members), st.Until)
			p.State.Members, p.State.Previous = st.Previous, nil
		}
	}
	return p
}

func earlier(t, now time.Time) time.Time {
	if t.After(now) {
		return now
	}
	return t
}

// members is the doctors after a message naming named: for each role the
// ones it names, or (keepAbsent) those already there for a role it does
// not send. A doctor already there keeps the relationship's start.
func members(named map[string][]string, cur []store.IngestMember, keepAbsent bool, from time.Time) []store.IngestMember {
	var out []store.IngestMember
	for _, d := range doctorFields {
		ids, ok := named[d.role]
		if !ok {
			if keepAbsent {
				for _, m := range cur {
					if m.Role == d.role {
						out = append(out, m)
					}
				}
			}
			continue
		}
		for _, id := range ids {
			m := store.IngestMember{Practitioner: "Practitioner/" + id, Role: d.role, From: from}
			if i := slices.IndexFunc(cur, func(c store.IngestMember) bool { return c.Practitioner == m.Practitioner && c.Role == m.Role }); i >= 0 {
				m.From = cur[i].From
			}
			out = append(out, m)
		}
	}
	return out
}

// minus is the members of a not in b (by practitioner and role).
func minus(a, b []store.IngestMember) []store.IngestMember {
	var out []store.IngestMember
	for _, m := range a {
		if !slices.ContainsFunc(b, func(x store.IngestMember) bool { return x.Practitioner == m.Practitioner && x.Role == m.Role }) {
			out = append(out, m)
		}
	}
	return out
}

// describe lists a plan's writes for the audit record.
func describe(p store.IngestPlan) (put, ended []string) {
	for _, r := range p.Put {
		put = append(put, r.Practitioner+" "+r.Role)
	}
	for _, e := range p.End {
		ended = append(ended, e.Key.Practitioner+" "+e.Key.Role)
	}
	return put, ended
}

// ack builds the acknowledgement: MSH addressed back to the sender, MSA
// with the code and the message's control id, and for a refusal an ERR
// naming the HL7 error code, where, and why (fixed words, no value from
// the message).
func (a *ADT) ack(r *result) []byte {
	e := r.enc
	f := string(e.Field)
	var b strings.Builder
	field := func(n int) string {
		if r.msh == nil {
			return ""
		}
		return r.msh.Field(n)
	}
	version := field(12)
	if version == "" {
		version = "2.5"
	}
	trig := ""
	if r.msh != nil {
		trig = nth(nth(field(9), e.Repetition, 1), e.Component, 2)
	}
	id := fmt.Sprintf("PG%d.%d", a.now().UnixNano(), a.seq.Add(1))
	b.WriteString("MSH" + f + e.msh2())
	for _, v := range []string{field(5), field(6), field(3), field(4), a.now().UTC().Format("20060102150405.0000-0700"), "",
		"ACK" + string(e.Component) + trig + string(e.Component) + "ACK", id, "P", version} {
		b.WriteString(f + v)
	}
	b.WriteString("\rMSA" + f + r.ack + f + r.control)
	if r.ack != "AA" {
		b.WriteString(f + e.Encode(clip(r.ev.Reason, 80)))
		loc := ""
		if r.errSeg != "" {
			loc = r.errSeg + string(e.Component) + "1"
			if r.errFld > 0 {
				loc += string(e.Component) + strconv.Itoa(r.errFld)
			}
		}
		severity := "E"
		b.WriteString("\rERR" + f + f + loc + f + r.errCode + string(e.Component) + e.Encode(errText[r.errCode]) +
			string(e.Component) + "HL70357" + f + severity + f + f + f + f + e.Encode(r.ev.Reason))
	}
	b.WriteString("\r")
	return []byte(b.String())
}

var errText = map[string]string{
	codeSegmentSequence: "Segment sequence error",
	codeRequiredMissing: "Required field missing",
	codeDataType:        "Data type error",
	codeUnsupportedType: "Unsupported message type",
	codeUnsupportedEvt:  "Unsupported event code",
	codeUnsupportedProc: "Unsupported processing id",
	codeInternal:        "Application internal error",
}
