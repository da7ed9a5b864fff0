package notify

import (
	"encoding/json"
	"time"
)

// payloadVersion is the version of the notification document; a sink's
// parser can tell a later shape from this one.
const payloadVersion = 1

// payload is the notification document, the body of a webhook's POST and
// the MSG of a syslog message. It holds what a privacy office needs to
// follow up, and no PHI unless the sink has include_patient: the user, who
// is a member of the workforce, not a patient; the decision id, which
// opens the full record in the audit trail; never the break-glass reason,
// free text that may name a patient or a diagnosis.
type payload struct {
	V                 int      `json:"v"`
	Type              string   `json:"type"` // "break-glass", or "obligation" for another notify
	DecisionID        string   `json:"decision_id"`
	Time              string   `json:"time"` // RFC 3339, the decision's
	Server            string   `json:"server,omitempty"`
	Allowed           bool     `json:"allowed"`
	Subject           string   `json:"subject,omitempty"`
	Issuer            string   `json:"issuer,omitempty"`
	FHIRUser          string   `json:"fhir_user,omitempty"`
	Roles             []string `json:"roles,omitempty"`
	PurposeOfUse      string   `json:"purpose_of_use,omitempty"`
	PolicyRevision    string   `json:"policy_revision,omitempty"`
	Rules             []string `json:"rules,omitempty"`
	BreakGlassExpires string   `json:"break_glass_expires,omitempty"`
	Interaction       string   `json:"interaction,omitempty"`
	ResourceType      string   `json:"resource_type,omitempty"`
	Patients          []string `json:"patients,omitempty"`
	// AuditQuery is the command that prints the decision's full record
	// on the phigate that wrote it.
	AuditQuery string `json:"audit_query"`
}

func payloadOf(ev *Event, includePatient bool, o options) *payload {
	p := &payload{V: payloadVersion, Type: "obligation", DecisionID: ev.DecisionID,
		Time: ev.Time.UTC().Format(time.RFC3339Nano), Server: o.server, Allowed: ev.Allowed,
		Subject: ev.Subject, Issuer: ev.Issuer, FHIRUser: ev.FHIRUser, Roles: ev.Roles,
		PurposeOfUse: ev.Purpose, PolicyRevision: ev.PolicyRevision, Rules: ev.Rules,
		Interaction: ev.Interaction, ResourceType: ev.ResourceType}
	if ev.BreakGlass {
		p.Type, p.BreakGlassExpires = "break-glass", ev.BreakGlassExpires
	}
	if includePatient {
		p.Patients = ev.Patients
	}
	dir := o.auditDir
	if dir == "" {
		dir = "<audit.dir>"
	}
	p.AuditQuery = "phigate audit query " + dir + " --decision " + ev.DecisionID
	return p
}

func (p *payload) json() ([]byte, error) { return json.Marshal(p) }
