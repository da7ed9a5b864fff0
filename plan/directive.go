package plan

// Action is what a directive does to the elements its path selects.
type Action string

const (
	// ActionRemove deletes the selected elements.
	ActionRemove Action = "remove"
	// ActionMask replaces values with a type-preserving mask.
	ActionMask Action = "mask"
	// ActionTokenize replaces values with a keyed deterministic token.
	ActionTokenize Action = "tokenize"
	// ActionAllow keeps only the elements named in Keep for the resource type
	// named by Path (minimum necessary); everything else is removed.
	ActionAllow Action = "allow"
	// ActionDeidentify applies a named de-identification profile
	// (Profile, e.g. "safe-harbor") to every resource.
	ActionDeidentify Action = "deidentify"
)

// ProfileSafeHarbor names the HIPAA Safe Harbor de-identification profile
// (45 CFR 164.514(b)(2)), the one profile ActionDeidentify knows; the
// response filters say how it maps to FHIR and HL7 v2.
const ProfileSafeHarbor = "safe-harbor"

// Directive is one redaction instruction as a policy writes it. It is not
// applied as it is: Compile checks it and turns it into a Rule.
//
// Path is a FHIR element path: "Patient.telecom",
// "Patient.identifier.where(system='http://hl7.org/fhir/sid/us-ssn').value",
// "*.text". For ActionAllow, Path is the resource type ("Patient").
type Directive struct {
	Path    string   `json:"path,omitempty"`
	Action  Action   `json:"action"`
	KeyID   string   `json:"key_id,omitempty"`  // tokenize: which key
	Format  string   `json:"format,omitempty"`  // tokenize: "hmac" (default) or "ff1"
	Keep    []string `json:"keep,omitempty"`    // allow: element names kept
	Profile string   `json:"profile,omitempty"` // deidentify: profile name
}

// Enforcement is the response-side check a decision asks for.
type Enforcement struct {
	// Patients are the patient ids the caller may see; resources about any
	// other patient are withheld. Ignored when AnyPatient is true.
	Patients   []string `json:"patients,omitempty"`
	AnyPatient bool     `json:"any_patient,omitempty"`
	// PermittedLabels are the sensitivity codes (meta.security, e.g. PSY, ETH,
	// HIV) the caller may see; resources labelled with any other code from
	// the sensitivity vocabulary are withheld.
	PermittedLabels []string `json:"permitted_labels,omitempty"`
	// ResourceTypes are the resource types the caller may receive; "*"
	// means any. Resources of any other type (Bundle entries, contained
	// and nested resources, deleted entries named by their URLs) are
	// withheld like those of other patients; a single resource of another
	// type is Forbidden. Bundle is the container and is not checked
	// itself. Empty or absent means no type restriction, for policies
	// that do not emit the list.
	ResourceTypes []string `json:"resource_types,omitempty"`
}
