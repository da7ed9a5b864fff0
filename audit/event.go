package audit

import (
	"encoding/base64"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/phigate/phigate/authz"
)

// Code systems used in records. Kept as constants so queries and tests match
// on exactly what the builder writes.
const (
	SystemAuditEventType  = "http://terminology.hl7.org/CodeSystem/audit-event-type"
	SystemRestInteraction = "http://hl7.org/fhir/restful-interaction"
	SystemDCM             = "http://dicom.nema.org/resources/ontology/DCM"
	SystemActReason       = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
	SystemParticipation   = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
	SystemEntityType      = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
	SystemObjectRole      = "http://terminology.hl7.org/CodeSystem/object-role"
	SystemSourceType      = "http://terminology.hl7.org/CodeSystem/security-source-type"
	SystemBALPEntityType  = "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType"
	SystemDecisionID      = "urn:phigate:decision-id"
	SystemPhigateEvent    = "urn:phigate:audit-event"
	// DCM codes for emergency access (DICOM PS3.16 CID 403).
	CodeOverrideStarted = "110127"
	CodeOverrideStopped = "110138"
)

// Detail types of the decision entity that say where the decision came
// from: the policy revision that evaluated it and, for a decision reused
// from the decision cache, when it was evaluated (RFC 3339).
const (
	DetailPolicyRevision = "policy-revision"
	DetailReusedFrom     = "reused-from"
	// DetailTruncated on a decision entity says the record is a compact
	// substitute; its value is the reason (ReasonRecordTooLarge).
	DetailTruncated = "truncated"
	// DetailDroppedPatients and DetailDroppedEntities count what a compact
	// substitute left out; DetailRecordBytes is the size it would have had.
	DetailDroppedPatients = "dropped-patients"
	DetailDroppedEntities = "dropped-entities"
	DetailRecordBytes     = "record-bytes"
	ReasonRecordTooLarge  = "record too large"
)

// Outcome codes of AuditEvent.outcome (R4 audit-event-outcome).
const (
	OutcomeSuccess = "0"
	OutcomeMinor   = "4" // denials: the caller's request failed
	OutcomeSerious = "8" // our own failure (policy error, audit, timeout)
)

// AuditEvent is the subset of FHIR R4 AuditEvent phigate writes.
type AuditEvent struct {
	ResourceType   string            `json:"resourceType"`
	ID             string            `json:"id,omitempty"`
	Meta           *Meta             `json:"meta,omitempty"`
	Type           Coding            `json:"type"`
	Subtype        []Coding          `json:"subtype,omitempty"`
	Action         string            `json:"action,omitempty"`
	Recorded       string            `json:"recorded"`
	Outcome        string            `json:"outcome,omitempty"`
	OutcomeDesc    string            `json:"outcomeDesc,omitempty"`
	PurposeOfEvent []CodeableConcept `json:"purposeOfEvent,omitempty"`
	Agent          []Agent           `json:"agent"`
	Source         Source            `json:"source"`
	Entity         []Entity          `json:"entity,omitempty"`
}

// Meta carries the BALP profile the record claims.
type Meta struct {
	Profile []string `json:"profile,omitempty"`
}

// Coding is a FHIR Coding.
type Coding struct {
	System  string `json:"system,omitempty"`
	Code    string `json:"code,omitempty"`
	Display string `json:"display,omitempty"`
}

// CodeableConcept is a FHIR CodeableConcept.
type CodeableConcept struct {
	Coding []Coding `json:"coding,omitempty"`
	Text   string   `json:"text,omitempty"`
}

// Identifier is a FHIR Identifier.
type Identifier struct {
	System string `json:"system,omitempty"`
	Value  string `json:"value,omitempty"`
}

// Reference is a FHIR Reference.
type Reference struct {
	Reference  string      `json:"reference,omitempty"`
	Identifier *Identifier `json:"identifier,omitempty"`
	Display    string      `json:"display,omitempty"`
}

// Agent is AuditEvent.agent.
type Agent struct {
	Type         *CodeableConcept  `json:"type,omitempty"`
	Role         []CodeableConcept `json:"role,omitempty"`
	Who          *Reference        `json:"who,omitempty"`
	AltID        string            `json:"altId,omitempty"`
	Requestor    bool              `json:"requestor"`
	Policy       []string          `json:"policy,omitempty"`
	Network      *Network          `json:"network,omitempty"`
	PurposeOfUse []CodeableConcept `json:"purposeOfUse,omitempty"`
}

// Network is AuditEvent.agent.network; Type "2" is an IP address.
type Network struct {
	Address string `json:"address,omitempty"`
	Type    string `json:"type,omitempty"`
}

// Source is AuditEvent.source.
type Source struct {
	Site     string    `json:"site,omitempty"`
	Observer Reference `json:"observer"`
	Type     []Coding  `json:"type,omitempty"`
}

// Entity is AuditEvent.entity.
type Entity struct {
	What        *Reference     `json:"what,omitempty"`
	Type        *Coding        `json:"type,omitempty"`
	Role        *Coding        `json:"role,omitempty"`
	Lifecycle   *Coding        `json:"lifecycle,omitempty"`
	Description string         `json:"description,omitempty"`
	Query       string         `json:"query,omitempty"` // base64Binary
	Detail      []EntityDetail `json:"detail,omitempty"`
}

// EntityDetail is AuditEvent.entity.detail with a string value.
type EntityDetail struct {
	Type        string `json:"type"`
	ValueString string `json:"valueString"`
}

// Builder turns decisions into AuditEvents. Server names the phigate
// instance in the server agent and the source observer.
type Builder struct {
	Server string
	Site   string
}

var (
	typeRest       = Coding{System: SystemAuditEventType, Code: "rest", Display: "Restful Operation"}
	entityPerson   = Coding{System: SystemEntityType, Code: "1", Display: "Person"}
	entitySystem   = Coding{System: SystemEntityType, Code: "2", Display: "System Object"}
	rolePatient    = Coding{System: SystemObjectRole, Code: "1", Display: "Patient"}
	roleDomain     = Coding{System: SystemObjectRole, Code: "4", Display: "Domain Resource"}
	roleQuery      = Coding{System: SystemObjectRole, Code: "24", Display: "Query"}
	roleJob        = Coding{System: SystemObjectRole, Code: "20", Display: "Job"}
	entityXRequest = Coding{System: SystemBALPEntityType, Code: "XrequestId", Display: "X-Request-Id"}
	overrideStart  = Coding{System: SystemDCM, Code: CodeOverrideStarted, Display: "Emergency Override Started"}
	overrideStop   = Coding{System: SystemDCM, Code: CodeOverrideStopped, Display: "Emergency Override Stopped"}
	purposeBTG     = Coding{System: SystemActReason, Code: "BTG", Display: "break the glass"}

	sourceApplicationServer = Coding{System: SystemSourceType, Code: "4", Display: "Application Server"}
	agentRecipient          = Coding{System: SystemParticipation, Code: "IRCP", Display: "information recipient"}
	agentSource             = Coding{System: SystemDCM, Code: "110153", Display: "Source Role ID"}
	agentDestination        = Coding{System: SystemDCM, Code: "110152", Display: "Destination Role ID"}
)

// actionOf maps a FHIR interaction to AuditEvent.action the way BALP does:
// searches, operations and batches are executions (E), not reads.
func actionOf(interaction authz.Interaction) string {
	switch interaction {
	case authz.InteractionCreate:
		return "C"
	case authz.InteractionRead, authz.InteractionVRead, authz.InteractionHistoryInstance:
		return "R"
	case authz.InteractionUpdate, authz.InteractionPatch:
		return "U"
	case authz.InteractionDelete:
		return "D"
	default:
		return "E"
	}
}

// actionOfRequest is actionOf, and for a legacy route (no FHIR
// interaction to go by) the action its method performs: a GET of an HL7
// message is a read.
func actionOfRequest(req *authz.Request) string {
	if req.FHIR.Interaction != authz.InteractionNonFHIR {
		return actionOf(req.FHIR.Interaction)
	}
	switch req.Method {
	case "GET", "HEAD":
		return "R"
	case "POST":
		return "C"
	case "PUT", "PATCH":
		return "U"
	case "DELETE":
		return "D"
	default:
		return "E"
	}
}

// restCode maps phigate's interaction words to R4 restful-interaction codes.
func restCode(interaction authz.Interaction) string {
	switch interaction {
	case authz.InteractionSearchCompartment:
		// R4 has no compartment code; the compartment is in the query entity.
		return string(authz.InteractionSearchType)
	case authz.InteractionNonFHIR, "":
		return ""
	default:
		return string(interaction)
	}
}

// OutcomeOf maps a decision to the AuditEvent outcome code.
func OutcomeOf(d *authz.Decision) string {
	switch {
	case d.Allow:
		return OutcomeSuccess
	case d.Status >= 500:
		return OutcomeSerious
	default:
		return OutcomeMinor
	}
}

// decisionParts holds, in one allocation, a decision's AuditEvent and the
// values its pointers and short slices refer to. The event is built on the
// decision path of every Check, where some forty small allocations were a
// measurable share of its cost. Slices that outgrow their array here (many
// patients, many rules) spill to the heap as append does.
type decisionParts struct {
	ev           AuditEvent
	subtype      [3]Coding
	meta         Meta
	profile      [1]string
	purposes     [3]CodeableConcept
	purposeCodes [3]Coding
	sourceType   [1]Coding
	network      Network
	agents       [3]Agent
	agentTypes   [3]CodeableConcept
	agentCodes   [3]Coding
	who          [3]Reference
	ids          [4]Identifier // user, client, request id, decision id
	roles        [2]CodeableConcept
	entities     [5]Entity // one patient, resource, query, request id, decision
	refs         [4]Reference
	codings      [10]Coding      // entity types and roles
	details      [5]EntityDetail // status, a rule, policy revision, reused-from, one more
	nIDs, nRefs  int
	nCodings     int
}

// slot stores v in the next free element of arr and returns a pointer to
// it, or to a heap copy of v once arr is full.
func slot[T any](arr []T, used *int, v T) *T {
	if *used == len(arr) {
		h := new(T) // only here: &v would move v to the heap on every call
		*h = v
		return h
	}
	arr[*used] = v
	*used++
	return &arr[*used-1]
}

func (p *decisionParts) identifier(v Identifier) *Identifier { return slot(p.ids[:], &p.nIDs, v) }
func (p *decisionParts) reference(v Reference) *Reference    { return slot(p.refs[:], &p.nRefs, v) }
func (p *decisionParts) coding(v Coding) *Coding             { return slot(p.codings[:], &p.nCodings, v) }

// Decision builds the AuditEvent for one decision. stopped says the user's
// emergency override ended with this decision (see the package comment).
func (b Builder) Decision(req *authz.Request, d *authz.Decision, recorded time.Time, stopped bool) *AuditEvent {
	p := new(decisionParts)
	ev := &p.ev
	*ev = AuditEvent{
		ResourceType: "AuditEvent",
		ID:           d.ID,
		Type:         typeRest,
		Action:       actionOfRequest(req),
		Recorded:     recorded.UTC().Format(time.RFC3339Nano),
		Outcome:      OutcomeOf(d),
		OutcomeDesc:  outcomeDesc(d),
		Source:       Source{Site: b.Site, Observer: Reference{Display: b.Server}, Type: p.sourceType[:]},
	}
	p.sourceType[0] = sourceApplicationServer
	subtype := p.subtype[:0]
	if code := restCode(req.FHIR.Interaction); code != "" {
		subtype = append(subtype, Coding{System: SystemRestInteraction, Code: code, Display: code})
	} else if req.FHIR.Interaction == authz.InteractionNonFHIR && req.FHIR.Kind != "" {
		// A configured legacy route (an HL7 v2 feed, a report): its kind
		// says what was read, as a FHIR interaction code would.
		subtype = append(subtype, Coding{System: SystemPhigateEvent, Code: "legacy:" + req.FHIR.Kind, Display: req.FHIR.Kind})
	}
	if d.BreakGlass.Active {
		subtype = append(subtype, overrideStart)
	}
	if stopped {
		subtype = append(subtype, overrideStop)
	}
	if len(subtype) > 0 {
		ev.Subtype = subtype
	}
	var patientBuf [8]string
	patients := patientsOf(patientBuf[:0], req, d)
	if profile := balpProfile(ev.Action, len(patients) > 0, d.Allow); profile != "" {
		p.profile[0] = profile
		p.meta.Profile = p.profile[:]
		ev.Meta = &p.meta
	}

	// The distinct purposes of the request and of the policy, sorted.
	pc := [2]string{req.Purpose, d.Audit.Purpose}
	if pc[0] > pc[1] {
		pc[0], pc[1] = pc[1], pc[0]
	}
	n := 0
	for i, code := range pc {
		if code == "" || i == 1 && code == pc[0] {
			continue
		}
		p.purposeCodes[n] = Coding{System: SystemActReason, Code: code}
		p.purposes[n] = CodeableConcept{Coding: p.purposeCodes[n : n+1 : n+1]}
		n++
	}
	if d.BreakGlass.Active {
		p.purposeCodes[n] = purposeBTG
		p.purposes[n] = CodeableConcept{Coding: p.purposeCodes[n : n+1 : n+1], Text: d.BreakGlass.Reason}
		n++
	}
	var purposes []CodeableConcept
	if n > 0 {
		purposes = p.purposes[:n:n]
	}
	ev.PurposeOfEvent = purposes

	id := req.Identity
	var network *Network
	if req.Source.Address != "" {
		p.network = Network{Address: hostOf(req.Source.Address), Type: "2"}
		network = &p.network
	}
	p.agentCodes = [3]Coding{agentRecipient, agentSource, agentDestination}
	for i := range p.agentTypes {
		p.agentTypes[i].Coding = p.agentCodes[i : i+1 : i+1]
	}
	p.who[0] = Reference{Reference: id.FHIRUser}
	user := Agent{
		Type:         &p.agentTypes[0],
		Who:          &p.who[0],
		Requestor:    true,
		Network:      network,
		PurposeOfUse: purposes,
	}
	switch {
	case id.Subject != "":
		user.Who.Identifier = p.identifier(Identifier{System: id.Issuer, Value: id.Subject})
	case id.Error != "":
		user.Who.Display = "unauthenticated (" + id.Error + ")"
	default:
		user.Who.Display = "unauthenticated"
	}
	if len(id.Roles) > 0 {
		roles := p.roles[:0]
		for _, r := range id.Roles {
			roles = append(roles, CodeableConcept{Text: r})
		}
		user.Role = roles
	}
	client := Agent{
		Type:    &p.agentTypes[1],
		Who:     &p.who[1],
		Network: network,
	}
	switch {
	case id.ClientID != "":
		client.Who.Identifier = p.identifier(Identifier{Value: id.ClientID})
	case req.Source.Principal != "":
		client.Who.Identifier = p.identifier(Identifier{Value: req.Source.Principal})
	default:
		client.Who.Display = "unidentified client"
	}
	if req.Source.Principal != "" && id.ClientID != "" {
		client.AltID = req.Source.Principal
	}
	p.who[2] = Reference{Display: b.Server}
	server := Agent{Type: &p.agentTypes[2], Who: &p.who[2]}
	p.agents = [3]Agent{user, client, server}
	ev.Agent = p.agents[:]

	entities := p.entities[:0]
	for _, pt := range patients {
		entities = append(entities, Entity{What: p.reference(Reference{Reference: "Patient/" + pt}),
			Type: p.coding(entityPerson), Role: p.coding(rolePatient)})
	}
	if req.FHIR.ResourceType != "" && req.FHIR.ID != "" {
		ref := req.FHIR.ResourceType + "/" + req.FHIR.ID
		if req.FHIR.Version != "" {
			ref += "/_history/" + req.FHIR.Version
		}
		entities = append(entities, Entity{What: p.reference(Reference{Reference: ref}), Type: p.coding(entitySystem), Role: p.coding(roleDomain)})
	}
	if len(req.Query) > 0 || ev.Action == "E" && req.FHIR.ResourceType != "" {
		// BALP carries the query base64 encoded; url.Values.Encode sorts the
		// keys, so the same search always yields the same bytes.
		q := Entity{Type: p.coding(entitySystem), Role: p.coding(roleQuery),
			Query: base64.StdEncoding.EncodeToString([]byte(url.Values(req.Query).Encode()))}
		if req.FHIR.ResourceType != "" {
			q.Description = req.FHIR.ResourceType
		}
		if c := req.FHIR.Compartment; c != nil {
			q.What = p.reference(Reference{Reference: c.Type + "/" + c.ID})
		}
		entities = append(entities, q)
	}
	if req.ID != "" {
		entities = append(entities, Entity{Type: p.coding(entityXRequest),
			What: p.reference(Reference{Identifier: p.identifier(Identifier{Value: req.ID})})})
	}
	dec := Entity{Type: p.coding(entitySystem), Role: p.coding(roleJob), Description: "policy decision",
		What: p.reference(Reference{Identifier: p.identifier(Identifier{System: SystemDecisionID, Value: d.ID})})}
	details := append(p.details[:0], EntityDetail{Type: "status", ValueString: strconv.Itoa(d.Status)})
	for _, r := range d.Audit.Rules {
		details = append(details, EntityDetail{Type: "rule", ValueString: r})
	}
	for _, o := range d.Obligations {
		details = append(details, EntityDetail{Type: "obligation", ValueString: o.Type})
	}
	if d.BreakGlass.Active && d.BreakGlass.Expires != "" {
		details = append(details, EntityDetail{Type: "break-glass-expires", ValueString: d.BreakGlass.Expires})
	}
	if d.Policy.Revision != "" {
		details = append(details, EntityDetail{Type: DetailPolicyRevision, ValueString: d.Policy.Revision})
		if d.Policy.Reused {
			details = append(details, EntityDetail{Type: DetailReusedFrom,
				ValueString: time.Unix(0, d.Policy.EvaluatedNS).UTC().Format(time.RFC3339Nano)})
		}
	}
	dec.Detail = details
	ev.Entity = append(entities, dec)
	return ev
}

// FilterEvent describes what the response side did to one response. Removed
// holds element paths only (e.g. "Patient.telecom"), never values.
type FilterEvent struct {
	RequestID  string
	DecisionID string
	Removed    []string
	Withheld   int  // Bundle entries withheld
	Forbidden  bool // the body was data outside the grant: the client got 403
	// Reason says why a refused response was refused, in the response
	// side's fixed words ("outside_grant" for another patient's data,
	// "malformed_body" for a body it could not read, "plan_marker_missing"
	// for a request that reached it without a decision, ...), and Status
	// is what the client got instead (403, 502). Both are empty for a
	// response that was released. They go to the filtering entity's
	// details "reason" and "status".
	Reason string
	Status int
	// Subject, Issuer and FHIRUser name who asked, and Patients the
	// patients the request named, as the plan metadata carried them (a
	// decision side writing metadata version 1 sends none; audit query
	// then takes them from the decision record). They make the filtering
	// record's requestor agent and patient entities, so a query by user
	// or patient finds it.
	Subject  string
	Issuer   string
	FHIRUser string
	Patients []string
}

// Filtering builds the record linked to a decision that says what was taken
// out of the response.
func (b Builder) Filtering(fe FilterEvent, recorded time.Time) *AuditEvent {
	ev := &AuditEvent{
		ResourceType: "AuditEvent",
		Type:         typeRest,
		Subtype:      []Coding{{System: SystemPhigateEvent, Code: "response-filtered", Display: "Response filtered"}},
		Action:       "E",
		Recorded:     recorded.UTC().Format(time.RFC3339Nano),
		Outcome:      OutcomeSuccess,
		OutcomeDesc:  "response redacted",
		Source: Source{Site: b.Site, Observer: Reference{Display: b.Server},
			Type: []Coding{sourceApplicationServer}},
		Agent: []Agent{{
			Type: &CodeableConcept{Coding: []Coding{agentDestination}},
			Who:  &Reference{Display: b.Server},
		}},
	}
	if fe.Subject != "" || fe.FHIRUser != "" {
		ev.Agent = append([]Agent{requestorAgent(fe.Subject, fe.Issuer, fe.FHIRUser)}, ev.Agent...)
	}
	for _, p := range fe.Patients {
		ev.Entity = append(ev.Entity, patientEntity(p))
	}
	if fe.DecisionID != "" {
		ev.ID = fe.DecisionID + "-f"
	}
	if fe.Forbidden || fe.Reason != "" {
		// A 403 answers what the caller asked for; a 5xx is a failure on
		// our side of the exchange (a body or a plan we could not read).
		ev.Outcome, ev.OutcomeDesc = OutcomeMinor, "response refused"
		if fe.Status >= 500 {
			ev.Outcome = OutcomeSerious
		}
		if fe.Reason != "" {
			ev.OutcomeDesc += ": " + fe.Reason
		}
	}
	if fe.RequestID != "" {
		ev.Entity = append(ev.Entity, Entity{Type: ptr(entityXRequest), What: &Reference{Identifier: &Identifier{Value: fe.RequestID}}})
	}
	dec := Entity{Type: ptr(entitySystem), Role: ptr(roleJob), Description: "response filtering",
		What:      &Reference{Identifier: &Identifier{System: SystemDecisionID, Value: fe.DecisionID}},
		Lifecycle: &Coding{System: "http://terminology.hl7.org/CodeSystem/iso-21089-lifecycle", Code: "deidentify"}}
	for _, p := range fe.Removed {
		dec.Detail = append(dec.Detail, EntityDetail{Type: "removed", ValueString: p})
	}
	dec.Detail = append(dec.Detail,
		EntityDetail{Type: "withheld", ValueString: strconv.Itoa(fe.Withheld)},
		EntityDetail{Type: "forbidden", ValueString: strconv.FormatBool(fe.Forbidden)})
	if fe.Reason != "" {
		dec.Detail = append(dec.Detail, EntityDetail{Type: DetailReason, ValueString: fe.Reason})
	}
	if fe.Status != 0 {
		dec.Detail = append(dec.Detail, EntityDetail{Type: "status", ValueString: strconv.Itoa(fe.Status)})
	}
	ev.Entity = append(ev.Entity, dec)
	return ev
}

// requestorAgent is the user who asked, as a filtering record names them:
// the recipient of the response.
func requestorAgent(subject, issuer, fhirUser string) Agent {
	a := Agent{Type: &CodeableConcept{Coding: []Coding{agentRecipient}}, Who: &Reference{Reference: fhirUser}, Requestor: true}
	if subject != "" {
		a.Who.Identifier = &Identifier{System: issuer, Value: subject}
	}
	return a
}

// patientEntity is the entity of one patient, as a decision record has it.
func patientEntity(id string) Entity {
	return Entity{What: &Reference{Reference: "Patient/" + id}, Type: ptr(entityPerson), Role: ptr(rolePatient)}
}

func outcomeDesc(d *authz.Decision) string {
	if d.Reason != "" {
		return d.Reason
	}
	if d.Allow {
		return "allowed"
	}
	return "denied"
}

// balpProfile names the BALP profile a successful record conforms to; BALP
// profiles only describe successes, so failures claim none.
func balpProfile(action string, patient, ok bool) string {
	if !ok {
		return ""
	}
	const base = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit."
	switch {
	case action == "R" && patient:
		return base + "PatientRead"
	case action == "R":
		return base + "Read"
	case action == "E" && patient:
		return base + "PatientQuery"
	case action == "E":
		return base + "Query"
	case action == "C" && patient:
		return base + "PatientCreate"
	case action == "C":
		return base + "Create"
	case action == "U" && patient:
		return base + "PatientUpdate"
	case action == "U":
		return base + "Update"
	case action == "D" && patient:
		return base + "PatientDelete"
	default:
		return base + "Delete"
	}
}

// patientsOf appends to buf the distinct patient ids of the request and of
// the policy's audit, sorted.
func patientsOf(buf []string, req *authz.Request, d *authz.Decision) []string {
	all := append(append(buf, req.FHIR.Patients...), d.Audit.Patients...)
	slices.Sort(all)
	all = slices.Compact(all)
	if len(all) > 0 && all[0] == "" {
		all = all[1:]
	}
	return all
}

// hostOf returns the host of a peer address. An IPv4 address with a port,
// the usual case, is cut without parsing it as a URL, which answers the same.
func hostOf(addr string) string {
	if ap, err := netip.ParseAddrPort(addr); err == nil && ap.Addr().Is4() {
		return addr[:strings.LastIndexByte(addr, ':')]
	}
	u, err := url.Parse("//" + addr)
	if err != nil || u.Hostname() == "" {
		return addr
	}
	return u.Hostname()
}

func ptr[T any](v T) *T { return &v }

// Patients lists the patient ids the event is about.
func (ev *AuditEvent) Patients() []string {
	var out []string
	for _, e := range ev.Entity {
		if e.Role != nil && e.Role.System == SystemObjectRole && e.Role.Code == "1" && e.What != nil {
			if id, ok := cutPrefix(e.What.Reference, "Patient/"); ok {
				out = append(out, id)
			}
		}
	}
	return out
}

// User returns the requesting user's identifier value and fhirUser reference.
func (ev *AuditEvent) User() (subject, fhirUser string) {
	for _, a := range ev.Agent {
		if a.Requestor && a.Who != nil {
			if a.Who.Identifier != nil {
				subject = a.Who.Identifier.Value
			}
			return subject, a.Who.Reference
		}
	}
	return "", ""
}

// BreakGlass reports whether the event records an emergency override.
func (ev *AuditEvent) BreakGlass() bool {
	for _, c := range ev.Subtype {
		if c.System == SystemDCM && c.Code == CodeOverrideStarted {
			return true
		}
	}
	return false
}

// DecisionID returns the id of the decision the event records or refers to.
func (ev *AuditEvent) DecisionID() string {
	for _, e := range ev.Entity {
		if e.What != nil && e.What.Identifier != nil && e.What.Identifier.System == SystemDecisionID {
			return e.What.Identifier.Value
		}
	}
	return ""
}

// PolicyRevision returns the policy revision that evaluated the decision
// (the decision entity's policy-revision detail), or "" when no policy did
// or the record predates the detail.
func (ev *AuditEvent) PolicyRevision() string {
	for _, e := range ev.Entity {
		if e.What == nil || e.What.Identifier == nil || e.What.Identifier.System != SystemDecisionID {
			continue
		}
		for _, d := range e.Detail {
			if d.Type == DetailPolicyRevision {
				return d.ValueString
			}
		}
	}
	return ""
}

// RequestID returns the X-Request-Id entity's value.
func (ev *AuditEvent) RequestID() string {
	for _, e := range ev.Entity {
		if e.Type != nil && e.Type.Code == entityXRequest.Code && e.What != nil && e.What.Identifier != nil {
			return e.What.Identifier.Value
		}
	}
	return ""
}

func cutPrefix(s, p string) (string, bool) {
	if len(s) > len(p) && s[:len(p)] == p {
		return s[len(p):], true
	}
	return "", false
}

// Compact returns the substitute for a decision event whose record would
// exceed the size cap: the same id, time, outcome, purposes and agents (who
// asked, from where, with which client), the request id and the decision
// entity with its details, plus counts of what was left out. Patient,
// resource and query entities are dropped, since they are what grows.
func Compact(ev *AuditEvent, recordBytes int) *AuditEvent {
	c := &AuditEvent{
		ResourceType: ev.ResourceType, ID: ev.ID, Type: ev.Type, Subtype: ev.Subtype, Action: ev.Action,
		Recorded: ev.Recorded, Outcome: ev.Outcome, OutcomeDesc: ev.OutcomeDesc,
		PurposeOfEvent: ev.PurposeOfEvent, Agent: ev.Agent, Source: ev.Source,
	}
	patients, dropped := 0, 0
	var dec *Entity
	for i := range ev.Entity {
		en := ev.Entity[i]
		switch {
		case en.Type != nil && *en.Type == entityXRequest:
			c.Entity = append(c.Entity, en)
		case en.Role != nil && *en.Role == roleJob:
			dec = &en
		default:
			dropped++
			if en.Role != nil && *en.Role == rolePatient {
				patients++
			}
		}
	}
	if dec == nil {
		dec = &Entity{Type: ptr(entitySystem), Role: ptr(roleJob), Description: "policy decision",
			What: &Reference{Identifier: &Identifier{System: SystemDecisionID, Value: ev.ID}}}
	}
	dec.Detail = append(slices.Clip(dec.Detail),
		EntityDetail{Type: DetailTruncated, ValueString: ReasonRecordTooLarge},
		EntityDetail{Type: DetailDroppedPatients, ValueString: strconv.Itoa(patients)},
		EntityDetail{Type: DetailDroppedEntities, ValueString: strconv.Itoa(dropped)},
		EntityDetail{Type: DetailRecordBytes, ValueString: strconv.Itoa(recordBytes)})
	c.Entity = append(c.Entity, *dec)
	return c
}

// QuarantineEvent describes a range of the trail Open moved aside because
// it could not be read. Segment and Offset locate the first unreadable
// byte; FromSeq is the first sequence number that no longer holds its
// original record; Checkpointed is the largest size a checkpoint or the
// witness had vouched for (records up to it were signed over, and are now
// only in the quarantine files); CheckpointsOffset is the length of
// checkpoints.jsonl before Open appended to it: checkpoints before that
// offset describe the trail as it was before the quarantine.
type QuarantineEvent struct {
	Segment           string
	Offset            int64
	Bytes             int64
	FromSeq           uint64
	Segments          int
	Reason            string
	Checkpointed      uint64
	CheckpointsOffset int64
}

// Detail types of a quarantine record's entity.
const (
	DetailSegment           = "segment"
	DetailOffset            = "offset"
	DetailBytes             = "bytes"
	DetailFromSeq           = "from-seq"
	DetailSegments          = "segments"
	DetailReason            = "reason"
	DetailCheckpointed      = "checkpointed"
	DetailCheckpointsOffset = "checkpoints-offset"
	CodeTrailQuarantined    = "trail-quarantined"
)

// Quarantine builds the record of a quarantined range: an application
// activity by phigate itself, outcome serious failure, whose one entity is
// the trail with the range in its details.
func (b Builder) Quarantine(q QuarantineEvent, recorded time.Time) *AuditEvent {
	return &AuditEvent{
		ResourceType: "AuditEvent",
		Type:         Coding{System: SystemDCM, Code: "110100", Display: "Application Activity"},
		Subtype:      []Coding{{System: SystemPhigateEvent, Code: CodeTrailQuarantined, Display: "Audit trail range quarantined"}},
		Action:       "E",
		Recorded:     recorded.UTC().Format(time.RFC3339Nano),
		Outcome:      OutcomeSerious,
		OutcomeDesc:  "unreadable audit records moved aside at startup",
		Source: Source{Site: b.Site, Observer: Reference{Display: b.Server},
			Type: []Coding{sourceApplicationServer}},
		Agent: []Agent{{Type: &CodeableConcept{Coding: []Coding{agentSource}}, Who: &Reference{Display: b.Server}}},
		Entity: []Entity{{
			Type: ptr(entitySystem), Description: "audit trail",
			What: &Reference{Identifier: &Identifier{System: "urn:phigate:audit-segment", Value: q.Segment}},
			Detail: []EntityDetail{
				{Type: DetailSegment, ValueString: q.Segment},
				{Type: DetailOffset, ValueString: strconv.FormatInt(q.Offset, 10)},
				{Type: DetailBytes, ValueString: strconv.FormatInt(q.Bytes, 10)},
				{Type: DetailFromSeq, ValueString: strconv.FormatUint(q.FromSeq, 10)},
				{Type: DetailSegments, ValueString: strconv.Itoa(q.Segments)},
				{Type: DetailReason, ValueString: q.Reason},
				{Type: DetailCheckpointed, ValueString: strconv.FormatUint(q.Checkpointed, 10)},
				{Type: DetailCheckpointsOffset, ValueString: strconv.FormatInt(q.CheckpointsOffset, 10)},
			},
		}},
	}
}
