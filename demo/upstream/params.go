package upstream

import (
	"sort"
	"strings"
)

type paramKind int

const (
	kindToken paramKind = iota
	kindString
	kindReference
	kindDate
)

func (k paramKind) String() string {
	return [...]string{"token", "string", "reference", "date"}[k]
}

// searchParam is one supported search parameter: the element paths it reads
// and, for references, the resource type it points to ("" for any).
type searchParam struct {
	kind   paramKind
	paths  []string // dotted element paths from the resource root
	target string
}

// compartmentParams are the parameters that put a resource in a patient's
// compartment, per type (the subset of the FHIR R4 Patient compartment
// definition that this server holds).
var compartmentParams = map[string][]string{
	"Observation":   {"subject", "performer"},
	"Encounter":     {"subject"},
	"Condition":     {"subject", "asserter"},
	"CareTeam":      {"subject", "participant"},
	"RelatedPerson": {"patient"},
	"Patient":       {"link"},
}

// params is the search parameter table. Types absent here still support
// the common parameters.
var params = map[string]map[string]searchParam{
	"Patient": {
		"identifier":           {kindToken, []string{"identifier"}, ""},
		"name":                 {kindString, []string{"name"}, ""},
		"family":               {kindString, []string{"name.family"}, ""},
		"given":                {kindString, []string{"name.given"}, ""},
		"birthdate":            {kindDate, []string{"birthDate"}, ""},
		"gender":               {kindToken, []string{"gender"}, ""},
		"telecom":              {kindToken, []string{"telecom"}, ""},
		"general-practitioner": {kindReference, []string{"generalPractitioner"}, ""},
		"organization":         {kindReference, []string{"managingOrganization"}, "Organization"},
		"link":                 {kindReference, []string{"link.other"}, ""},
	},
	"Observation": {
		"patient":   {kindReference, []string{"subject"}, "Patient"},
		"subject":   {kindReference, []string{"subject"}, ""},
		"code":      {kindToken, []string{"code"}, ""},
		"category":  {kindToken, []string{"category"}, ""},
		"encounter": {kindReference, []string{"encounter"}, "Encounter"},
		"performer": {kindReference, []string{"performer"}, ""},
		"status":    {kindToken, []string{"status"}, ""},
		"date":      {kindDate, []string{"effectiveDateTime"}, ""},
	},
	"Encounter": {
		"patient":          {kindReference, []string{"subject"}, "Patient"},
		"subject":          {kindReference, []string{"subject"}, ""},
		"participant":      {kindReference, []string{"participant.individual"}, ""},
		"practitioner":     {kindReference, []string{"participant.individual"}, "Practitioner"},
		"service-provider": {kindReference, []string{"serviceProvider"}, "Organization"},
		"type":             {kindToken, []string{"type"}, ""},
		"class":            {kindToken, []string{"class"}, ""},
		"status":           {kindToken, []string{"status"}, ""},
		"date":             {kindDate, []string{"period.start"}, ""},
	},
	"Condition": {
		"patient":  {kindReference, []string{"subject"}, "Patient"},
		"subject":  {kindReference, []string{"subject"}, ""},
		"asserter": {kindReference, []string{"asserter", "recorder"}, ""},
		"code":     {kindToken, []string{"code"}, ""},
		"category": {kindToken, []string{"category"}, ""},
	},
	"CareTeam": {
		"patient":     {kindReference, []string{"subject"}, "Patient"},
		"subject":     {kindReference, []string{"subject"}, ""},
		"participant": {kindReference, []string{"participant.member"}, ""},
		"status":      {kindToken, []string{"status"}, ""},
	},
	"RelatedPerson": {
		"patient":      {kindReference, []string{"patient"}, "Patient"},
		"name":         {kindString, []string{"name"}, ""},
		"identifier":   {kindToken, []string{"identifier"}, ""},
		"relationship": {kindToken, []string{"relationship"}, ""},
	},
	"Practitioner": {
		"name":       {kindString, []string{"name"}, ""},
		"identifier": {kindToken, []string{"identifier"}, ""},
		"family":     {kindString, []string{"name.family"}, ""},
		"given":      {kindString, []string{"name.given"}, ""},
	},
	"Organization": {
		"name":       {kindString, []string{"name"}, ""},
		"identifier": {kindToken, []string{"identifier"}, ""},
	},
}

// commonParams apply to every type.
var commonParams = map[string]searchParam{
	"_id":       {kindToken, []string{"id"}, ""},
	"_security": {kindToken, []string{"meta.security"}, ""},
	"_tag":      {kindToken, []string{"meta.tag"}, ""},
}

// resultParams shape the result rather than select resources.
var resultParams = map[string]bool{
	"_count": true, "_offset": true, "_include": true, "_revinclude": true,
	"_format": true, "_pretty": true, "_summary": false, "_elements": false, "_sort": false,
}

// knownTypes are the resource types this server accepts. The data set's
// types come first; the others exist so that clients can create them.
var knownTypes = []string{
	"AllergyIntolerance", "AuditEvent", "CareTeam", "Condition", "Consent", "DiagnosticReport",
	"DocumentReference", "Encounter", "Immunization", "MedicationRequest", "Observation",
	"Organization", "Patient", "Practitioner", "PractitionerRole", "Procedure", "Provenance",
	"RelatedPerson",
}

func isKnownType(t string) bool {
	i := sort.SearchStrings(knownTypes, t)
	return i < len(knownTypes) && knownTypes[i] == t
}

func lookupParam(typ, name string) (searchParam, bool) {
	if p, ok := commonParams[name]; ok {
		return p, true
	}
	p, ok := params[typ][name]
	return p, ok
}

// splitModifier splits "subject:Patient" into ("subject", "Patient").
func splitModifier(name string) (string, string) {
	base, mod, _ := strings.Cut(name, ":")
	return base, mod
}
