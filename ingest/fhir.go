package ingest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/phigate/phigate/audit"
	"github.com/phigate/phigate/store"
)

// applyTimeout bounds storing and recording one resource; past it the
// transaction is cancelled (nothing applied) and the client gets 503.
const applyTimeout = 30 * time.Second

// Sources of the relationships the FHIR path writes.
const (
	SourceCareTeam  = "careteam"
	SourceEncounter = "encounter"
)

// FHIR takes CareTeam and Encounter resources over HTTP (PUT
// /fhir/CareTeam/{id}, POST /fhir/CareTeam, and the same for Encounter)
// and turns their participants into care relationships with their
// subject. Each version of a resource is applied once; the newest
// (meta.lastUpdated) wins.
type FHIR struct {
	st    store.Ingester
	rec   Recorder
	cfg   FHIRConfig
	token []byte
	log   *zap.Logger
	m     *Metrics
	now   func() time.Time
}

// NewFHIR serves cfg's path; cfg must have been validated. token is the
// bearer token clients present, nil when only mTLS authenticates.
func NewFHIR(st store.Ingester, rec Recorder, cfg FHIRConfig, token []byte, log *zap.Logger, m *Metrics) *FHIR {
	return &FHIR{st: st, rec: rec, cfg: cfg, token: token, log: log, m: m, now: time.Now}
}

// Handler is the FHIR path's HTTP handler.
func (h *FHIR) Handler() http.Handler {
	mux := http.NewServeMux()
	for _, t := range []string{"CareTeam", "Encounter"} {
		mux.HandleFunc("PUT /fhir/"+t+"/{id}", func(w http.ResponseWriter, r *http.Request) { h.serve(w, r, t, r.PathValue("id")) })
		mux.HandleFunc("POST /fhir/"+t, func(w http.ResponseWriter, r *http.Request) { h.serve(w, r, t, "") })
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		outcome(w, http.StatusNotFound, "error", "not-found", "only CareTeam and Encounter are accepted, by PUT /fhir/<type>/<id> or POST /fhir/<type>")
	})
	return mux
}

// outcome writes an OperationOutcome of one issue.
func outcome(w http.ResponseWriter, status int, severity, code, text string) {
	w.Header().Set("content-type", "application/fhir+json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"resourceType": "OperationOutcome",
		"issue": []any{map[string]any{"severity": severity, "code": code, "diagnostics": text}}})
}

// authenticated checks the bearer token, when one is configured; a
// client certificate was already verified by the handshake when
// ingest.fhir.tls.client_ca is set.
func (h *FHIR) authenticated(r *http.Request) (string, bool) {
	who := "bearer"
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		who = "mtls:" + r.TLS.PeerCertificates[0].Subject.CommonName
	}
	if h.token == nil {
		return who, r.TLS != nil && len(r.TLS.VerifiedChains) > 0
	}
	got, ok := strings.CutPrefix(r.Header.Get("authorization"), "Bearer ")
	return who, ok && subtle.ConstantTimeCompare([]byte(got), h.token) == 1
}

type fhirRef struct {
	Reference string `json:"reference"`
}

type fhirPeriod struct {
	Start string `json:"start"`
	End   string `json:"end"`
}

type fhirCodeable struct {
	Coding []struct {
		Code string `json:"code"`
	} `json:"coding"`
}

type fhirParticipant struct {
	Member     *fhirRef       `json:"member"`     // CareTeam
	Individual *fhirRef       `json:"individual"` // Encounter
	Role       []fhirCodeable `json:"role"`       // CareTeam
	Type       []fhirCodeable `json:"type"`       // Encounter
	Period     *fhirPeriod    `json:"period"`
}

type fhirResource struct {
	ResourceType string `json:"resourceType"`
	ID           string `json:"id"`
	Meta         *struct {
		VersionID   string `json:"versionId"`
		LastUpdated string `json:"lastUpdated"`
	} `json:"meta"`
	Status      string            `json:"status"`
	Subject     *fhirRef          `json:"subject"`
	Period      *fhirPeriod       `json:"period"`
	Participant []fhirParticipant `json:"participant"`
}

// fhirError is a refusal: the status and the words the client gets.
type fhirError struct {
	status int
	code   string
	text   string
}

func (e *fhirError) Error() string { return e.text }

func unprocessable(text string) *fhirError {
	return &fhirError{http.StatusUnprocessableEntity, "invalid", text}
}

func (h *FHIR) serve(w http.ResponseWriter, r *http.Request, typ, pathID string) {
	start := time.Now()
	source := SourceCareTeam
	if typ == "Encounter" {
		source = SourceEncounter
	}
	ev := audit.IngestEvent{Source: source, Event: typ, Peer: r.RemoteAddr}
	who, ok := h.authenticated(r)
	ev.Sender = who
	if !ok {
		// Not recorded: an unauthenticated caller could fill the trail.
		h.m.messages.WithLabelValues(source, typ, "unauthenticated").Inc()
		w.Header().Set("www-authenticate", `Bearer realm="phigate-ingest"`)
		outcome(w, http.StatusUnauthorized, "error", "login", "authentication required")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), applyTimeout)
	defer cancel()
	r = r.WithContext(ctx)
	status, sev, code, text := h.apply(r, typ, source, pathID, &ev)
	if err := h.rec.RecordIngest(ctx, ev); err != nil {
		h.log.Error("audit record of a FHIR resource failed; answering 503", zap.Error(err))
		ev.Outcome = audit.IngestError
		status, sev, code, text = http.StatusServiceUnavailable, "error", "transient", "the audit trail did not record the resource; retry"
	}
	h.m.messages.WithLabelValues(source, typ, ev.Outcome).Inc()
	h.m.duration.WithLabelValues(source).Observe(time.Since(start).Seconds())
	if status >= 300 {
		h.log.Info("FHIR resource not applied", zap.String("type", typ), zap.Int("status", status), zap.String("reason", ev.Reason))
	}
	outcome(w, status, sev, code, text)
}

// apply reads, checks and stores one resource; it fills ev and returns
// the answer.
func (h *FHIR) apply(r *http.Request, typ, source, pathID string, ev *audit.IngestEvent) (int, string, string, string) {
	refuse := func(e *fhirError) (int, string, string, string) {
		ev.Outcome, ev.Reason = audit.IngestRejected, e.text
		return e.status, "error", e.code, e.text
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("content-type")); err != nil || (mt != "application/fhir+json" && mt != "application/json") {
		return refuse(&fhirError{http.StatusUnsupportedMediaType, "not-supported", "the body must be application/fhir+json"})
	}
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, int64(h.cfg.MaxBody)))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return refuse(&fhirError{http.StatusRequestEntityTooLarge, "too-costly", "the body is over ingest.fhir.max_body"})
		}
		return refuse(&fhirError{http.StatusBadRequest, "structure", "the body could not be read"})
	}
	if err := checkJSON(body); err != nil {
		return refuse(&fhirError{http.StatusBadRequest, "structure", "the body is not one JSON document without duplicate keys"})
	}
	var res fhirResource
	if err := json.Unmarshal(body, &res); err != nil {
		return refuse(&fhirError{http.StatusBadRequest, "structure", "the body is not a resource of the expected shape"})
	}
	if res.ResourceType != typ {
		return refuse(&fhirError{http.StatusBadRequest, "structure", "resourceType is not " + typ})
	}
	in, ferr := h.read(&res, typ, pathID, body)
	if ferr != nil {
		return refuse(ferr)
	}
	ev.MessageID, ev.Patient = in.messageID, in.patient
	msg := store.IngestMessage{Source: source, ID: in.messageID, Subject: typ + "/" + res.ID, At: in.at}
	var put, ended []string
	created := false
	out, err := h.st.Ingest(r.Context(), msg, func(st store.IngestState, found bool) (store.IngestPlan, error) {
		p := planFHIR(in, source, st)
		put, ended = describe(p)
		created = !found
		return p, nil
	})
	switch {
	case errors.Is(err, store.ErrInvalid):
		return refuse(unprocessable("the resource holds a value the store refuses"))
	case err != nil:
		h.log.Warn("FHIR resource not stored", zap.String("type", typ), zap.Error(err))
		ev.Outcome, ev.Reason = audit.IngestError, "the store did not apply the resource"
		return http.StatusServiceUnavailable, "error", "transient", "the resource was not stored; retry"
	}
	switch out {
	case store.IngestDuplicate:
		ev.Outcome, ev.Reason = audit.IngestDuplicate, "this version was applied before"
		return http.StatusOK, "information", "informational", "this version was applied before"
	case store.IngestStale:
		ev.Outcome, ev.Reason = audit.IngestStale, "a newer version was applied"
		return http.StatusOK, "information", "informational", "a newer version was applied; this one changed nothing"
	}
	ev.Outcome, ev.Put, ev.Ended = audit.IngestApplied, put, ended
	if created {
		return http.StatusCreated, "information", "informational", "stored"
	}
	return http.StatusOK, "information", "informational", "stored"
}

// fhirInput is one resource, read and checked.
type fhirInput struct {
	messageID string
	patient   string
	at        time.Time
	// state is "active", "ended" (relationships end at until), "never"
	// (none was ever in force) or "none" (planned or proposed: none yet).
	state   string
	until   time.Time
	members []fhirMember
}

type fhirMember struct {
	store.IngestMember
	until time.Time
}

func (h *FHIR) read(res *fhirResource, typ, pathID string, body []byte) (*fhirInput, *fhirError) {
	if pathID != "" && res.ID != pathID {
		return nil, unprocessable("the resource's id is not the one in the path")
	}
	if !validID(res.ID) {
		return nil, unprocessable("id is missing or not a FHIR id")
	}
	in := &fhirInput{at: h.now().UTC()}
	if res.Subject == nil {
		return nil, unprocessable("subject is missing")
	}
	pat, ok := strings.CutPrefix(res.Subject.Reference, "Patient/")
	if !ok || !validID(pat) {
		return nil, unprocessable("subject is not a reference Patient/<id>")
	}
	in.patient = pat
	version := ""
	if res.Meta != nil {
		version = res.Meta.VersionID
		if res.Meta.LastUpdated != "" {
			t, err := time.Parse(time.RFC3339Nano, res.Meta.LastUpdated)
			if err != nil {
				return nil, unprocessable("meta.lastUpdated is not an instant")
			}
			in.at = t.UTC()
			if version == "" {
				version = in.at.Format(time.RFC3339Nano)
			}
		}
	}
	if version == "" {
		sum := sha256.Sum256(body)
		version = "sha256:" + hex.EncodeToString(sum[:16])
	}
	if !printable(version, 100) {
		return nil, unprocessable("meta.versionId is longer than 100 characters or holds a space")
	}
	in.messageID = typ + "/" + res.ID + "/_history/" + version
	from, until, err := period(res.Period)
	if err != nil {
		return nil, unprocessable("period: " + err.Error())
	}
	if from.IsZero() {
		from = in.at
	}
	in.state, in.until = "active", until
	switch typ + ":" + res.Status {
	case "CareTeam:entered-in-error", "Encounter:entered-in-error", "Encounter:cancelled":
		in.state = "never"
	case "CareTeam:inactive", "CareTeam:suspended":
		in.state = "ended"
		if in.until.IsZero() {
			in.until = in.at
		}
	case "CareTeam:proposed", "Encounter:planned":
		in.state = "none"
	case "Encounter:finished":
		in.state = "ended"
		if in.until.IsZero() {
			in.until = in.at
		}
		in.until = in.until.Add(h.cfg.FinishedGrace)
	case "CareTeam:active", "CareTeam:", "Encounter:arrived", "Encounter:triaged", "Encounter:in-progress", "Encounter:onleave", "Encounter:unknown":
	default:
		return nil, unprocessable("status is not a " + typ + " status")
	}
	for _, p := range res.Participant {
		ref, codes := p.Member, p.Role
		if typ == "Encounter" {
			ref, codes = p.Individual, p.Type
		}
		if ref == nil {
			continue
		}
		id, ok := strings.CutPrefix(ref.Reference, "Practitioner/")
		if !ok {
			continue // an organization, a related person, a patient: no practitioner to relate
		}
		if !validID(id) {
			return nil, unprocessable("a participant is not a reference Practitioner/<id>")
		}
		pf, pu, err := period(p.Period)
		if err != nil {
			return nil, unprocessable("participant.period: " + err.Error())
		}
		if pf.IsZero() {
			pf = from
		}
		m := fhirMember{IngestMember: store.IngestMember{Practitioner: "Practitioner/" + id, Role: roleOf(typ, codes), From: pf}, until: pu}
		in.members = append(in.members, m)
	}
	return in, nil
}

// roleOf is the participant's role: the first code, with Encounter's
// v3 ParticipationType codes in the words the ADT feed uses.
func roleOf(typ string, cs []fhirCodeable) string {
	code := ""
	if len(cs) > 0 && len(cs[0].Coding) > 0 {
		code = cs[0].Coding[0].Code
	}
	switch code {
	case "ATND":
		return "attending"
	case "ADM":
		return "admitting"
	case "REF":
		return "referring"
	case "CON":
		return "consulting"
	case "":
		if typ == "CareTeam" {
			return "member"
		}
		return "participant"
	}
	if !printable(code, 64) {
		return "participant"
	}
	return strings.ToLower(code)
}

// period reads a FHIR Period; a date alone is its day's start, UTC.
func period(p *fhirPeriod) (from, until time.Time, err error) {
	if p == nil {
		return
	}
	parse := func(s string) (time.Time, error) {
		if s == "" {
			return time.Time{}, nil
		}
		if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
			return t.UTC(), nil
		}
		if t, err := time.Parse("2006-01-02", s); err == nil {
			return t, nil
		}
		return time.Time{}, errors.New("not a dateTime with a time zone, or a date")
	}
	if from, err = parse(p.Start); err != nil {
		return
	}
	if until, err = parse(p.End); err != nil {
		return
	}
	if !from.IsZero() && !until.IsZero() && !until.After(from) {
		err = errors.New("end is not after start")
	}
	return
}

// planFHIR is what a version of a resource writes: its participants put
// (with the resource's window), those of the previous version it no
// longer names ended at its time.
func planFHIR(in *fhirInput, source string, st store.IngestState) store.IngestPlan {
	var p store.IngestPlan
	key := func(patient string, m store.IngestMember) store.RelationshipKey {
		return store.RelationshipKey{Practitioner: m.Practitioner, Patient: patient, Role: m.Role, Source: source}
	}
	var next []store.IngestMember
	if in.state != "none" {
		for _, m := range in.members {
			next = append(next, m.IngestMember)
		}
	}
	for _, old := range st.Members {
		gone := st.Patient != in.patient || !containsMember(next, old)
		switch {
		case in.state == "never":
			p.End = append(p.End, store.IngestEnd{Key: key(st.Patient, old), At: old.From})
		case gone:
			p.End = append(p.End, store.IngestEnd{Key: key(st.Patient, old), At: earlier(in.at, time.Now())})
		}
	}
	if in.state == "never" {
		p.State = store.IngestState{Patient: in.patient, Status: in.state}
		return p
	}
	if in.state != "none" {
		for _, m := range in.members {
			until := in.until
			if !m.until.IsZero() && (until.IsZero() || m.until.Before(until)) {
				until = m.until
			}
			if until.IsZero() || until.After(m.From) {
				p.Put = append(p.Put, store.Relationship{RelationshipKey: key(in.patient, m.IngestMember), From: m.From, Until: until})
			}
		}
	}
	p.State = store.IngestState{Patient: in.patient, Status: in.state, Members: next, Until: in.until}
	return p
}

func containsMember(ms []store.IngestMember, m store.IngestMember) bool {
	for _, x := range ms {
		if x.Practitioner == m.Practitioner && x.Role == m.Role {
			return true
		}
	}
	return false
}

// maxJSONDepth bounds how deeply a resource may nest.
const maxJSONDepth = 64

// checkJSON refuses what encoding/json would read ambiguously: a key
// twice in one object (parsers disagree on which copy wins, and Go's
// decoder also folds case, so keys are compared case-insensitively),
// nesting beyond maxJSONDepth, or anything after the document.
func checkJSON(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	var stack []map[string]bool // one per open object; nil for an array
	expectKey := func() bool { return len(stack) > 0 && stack[len(stack)-1] != nil }
	for {
		if expectKey() && dec.More() {
			tok, err := dec.Token()
			if err != nil {
				return err
			}
			k := strings.ToLower(tok.(string))
			if stack[len(stack)-1][k] {
				return errors.New("duplicate key")
			}
			stack[len(stack)-1][k] = true
		}
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, map[string]bool{})
		case json.Delim('['):
			stack = append(stack, nil)
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
		}
		if len(stack) > maxJSONDepth {
			return errors.New("nested too deeply")
		}
		if len(stack) == 0 {
			if _, err := dec.Token(); !errors.Is(err, io.EOF) {
				return errors.New("data after the document")
			}
			return nil
		}
	}
}
