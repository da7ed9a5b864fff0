package upstream

import (
	"bytes"
	"encoding/xml"
	"sort"
	"strconv"
	"strings"
)

// FHIR XML differs from FHIR JSON in ways a response filter must survive:
// primitives are value attributes, arrays are repeated elements, contained
// resources are wrapped in an element named after their type, the
// narrative is inline XHTML, and element order is fixed by the
// specification. The orders below cover what this server emits; elements
// not listed follow in alphabetical order.

var resourceBase = []string{"id", "meta", "implicitRules", "language", "text", "contained", "extension", "modifierExtension"}

var resourceOrder = map[string][]string{
	"Patient":             {"identifier", "active", "name", "telecom", "gender", "birthDate", "deceasedBoolean", "deceasedDateTime", "address", "maritalStatus", "multipleBirthBoolean", "multipleBirthInteger", "photo", "contact", "communication", "generalPractitioner", "managingOrganization", "link"},
	"Practitioner":        {"identifier", "active", "name", "telecom", "address", "gender", "birthDate", "photo", "qualification", "communication"},
	"Organization":        {"identifier", "active", "type", "name", "alias", "telecom", "address", "partOf", "contact", "endpoint"},
	"Observation":         {"identifier", "basedOn", "partOf", "status", "category", "code", "subject", "focus", "encounter", "effectiveDateTime", "effectivePeriod", "issued", "performer", "valueQuantity", "valueCodeableConcept", "valueString", "valueBoolean", "valueInteger", "dataAbsentReason", "interpretation", "note", "bodySite", "method", "specimen", "device", "referenceRange", "hasMember", "derivedFrom", "component"},
	"Encounter":           {"identifier", "status", "statusHistory", "class", "classHistory", "type", "serviceType", "priority", "subject", "episodeOfCare", "basedOn", "participant", "appointment", "period", "length", "reasonCode", "reasonReference", "diagnosis", "account", "hospitalization", "location", "serviceProvider", "partOf"},
	"Condition":           {"identifier", "clinicalStatus", "verificationStatus", "category", "severity", "code", "bodySite", "subject", "encounter", "onsetDateTime", "onsetPeriod", "abatementDateTime", "recordedDate", "recorder", "asserter", "stage", "evidence", "note"},
	"CareTeam":            {"identifier", "status", "category", "name", "subject", "encounter", "period", "participant", "reasonCode", "reasonReference", "managingOrganization", "telecom", "note"},
	"RelatedPerson":       {"identifier", "active", "patient", "relationship", "name", "telecom", "gender", "birthDate", "address", "photo", "period", "communication"},
	"Bundle":              {"identifier", "type", "timestamp", "total", "link", "entry", "signature"},
	"OperationOutcome":    {"issue"},
	"CapabilityStatement": {"url", "version", "name", "title", "status", "experimental", "date", "publisher", "contact", "description", "useContext", "jurisdiction", "purpose", "copyright", "kind", "instantiates", "imports", "software", "implementation", "fhirVersion", "format", "patchFormat", "implementationGuide", "rest"},
}

// elementOrder orders complex elements by their name (the datatype or
// backbone element they hold in the resources served here).
var elementOrder = map[string][]string{
	"meta":           {"versionId", "lastUpdated", "source", "profile", "security", "tag"},
	"coding":         codingOrder,
	"security":       codingOrder,
	"tag":            codingOrder,
	"class":          codingOrder,
	"identifier":     {"use", "type", "system", "value", "period", "assigner"},
	"telecom":        {"system", "value", "use", "rank", "period"},
	"address":        {"use", "type", "text", "line", "city", "district", "state", "postalCode", "country", "period"},
	"name":           {"use", "text", "family", "given", "prefix", "suffix", "period"},
	"valueQuantity":  quantityOrder,
	"text":           {"status", "div"},
	"period":         {"start", "end"},
	"link":           {"relation", "url", "other", "type"},
	"entry":          {"link", "fullUrl", "resource", "search", "request", "response"},
	"search":         {"mode", "score"},
	"request":        {"method", "url", "ifNoneMatch", "ifModifiedSince", "ifMatch", "ifNoneExist"},
	"response":       {"status", "location", "etag", "lastModified", "outcome"},
	"issue":          {"severity", "code", "details", "diagnostics", "location", "expression"},
	"participant":    {"type", "role", "member", "onBehalfOf", "period", "individual"},
	"component":      {"code", "valueQuantity", "valueCodeableConcept", "valueString", "valueInteger", "dataAbsentReason", "interpretation", "referenceRange"},
	"qualification":  {"identifier", "code", "period", "issuer"},
	"rest":           {"mode", "documentation", "security", "resource", "interaction", "searchParam", "operation", "compartment"},
	"resource":       {"type", "profile", "supportedProfile", "documentation", "interaction", "versioning", "readHistory", "updateCreate", "conditionalCreate", "conditionalRead", "conditionalUpdate", "conditionalDelete", "referencePolicy", "searchInclude", "searchRevInclude", "searchParam", "operation"},
	"searchParam":    {"name", "definition", "type", "documentation"},
	"operation":      {"name", "definition", "documentation"},
	"software":       {"name", "version", "releaseDate"},
	"implementation": {"description", "url", "custodian"},
}

var (
	codingOrder   = []string{"system", "version", "code", "display", "userSelected"}
	quantityOrder = []string{"value", "comparator", "unit", "system", "code"}
)

// renderXML renders a resource in FHIR XML.
func renderXML(res Resource) []byte {
	var b bytes.Buffer
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>`)
	writeResource(&b, res, true)
	return b.Bytes()
}

func writeResource(b *bytes.Buffer, res map[string]any, root bool) {
	typ, _ := res["resourceType"].(string)
	b.WriteString("<" + typ)
	if root {
		b.WriteString(` xmlns="http://hl7.org/fhir"`)
	}
	b.WriteString(">")
	order := append(append([]string{}, resourceBase...), resourceOrder[typ]...)
	writeChildren(b, res, order, true)
	b.WriteString("</" + typ + ">")
}

func writeChildren(b *bytes.Buffer, m map[string]any, order []string, isResource bool) {
	for _, k := range orderedKeys(m, order) {
		if k == "resourceType" || strings.HasPrefix(k, "_") {
			continue
		}
		writeElement(b, k, m[k], m["_"+k])
	}
}

func orderedKeys(m map[string]any, order []string) []string {
	rank := make(map[string]int, len(order))
	for i, k := range order {
		rank[k] = i + 1
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		ri, rj := rank[keys[i]], rank[keys[j]]
		switch {
		case keys[i] == "extension" && rj == 0:
			return true // extensions come first in every datatype
		case keys[j] == "extension" && ri == 0:
			return false
		case ri != 0 && rj != 0:
			return ri < rj
		case ri != 0:
			return true
		case rj != 0:
			return false
		}
		return keys[i] < keys[j]
	})
	return keys
}

func writeElement(b *bytes.Buffer, name string, v, ext any) {
	switch x := v.(type) {
	case []any:
		exts, _ := ext.([]any)
		for i, item := range x {
			var e any
			if i < len(exts) {
				e = exts[i]
			}
			writeElement(b, name, item, e)
		}
	case map[string]any:
		if _, ok := x["resourceType"]; ok {
			// A resource inside an element (Bundle.entry.resource, contained).
			b.WriteString("<" + name + ">")
			writeResource(b, x, false)
			b.WriteString("</" + name + ">")
			return
		}
		b.WriteString("<" + name)
		if u, ok := x["url"].(string); ok && (name == "extension" || name == "modifierExtension") {
			b.WriteString(` url="` + escapeAttr(u) + `"`)
			x = withoutKey(x, "url")
		}
		b.WriteString(">")
		writeChildren(b, x, orderFor(name, x), false)
		b.WriteString("</" + name + ">")
	default:
		if name == "div" {
			if s, ok := v.(string); ok {
				b.WriteString(s) // narrative XHTML is already XML
				return
			}
		}
		b.WriteString("<" + name + ` value="` + escapeAttr(primitive(v)) + `"`)
		if em, ok := ext.(map[string]any); ok && len(em) > 0 {
			b.WriteString(">")
			writeChildren(b, em, []string{"id", "extension"}, false)
			b.WriteString("</" + name + ">")
			return
		}
		b.WriteString("/>")
	}
}

func orderFor(name string, m map[string]any) []string {
	if o, ok := elementOrder[name]; ok {
		return o
	}
	if _, ok := m["coding"]; ok {
		return []string{"coding", "text"}
	}
	if _, ok := m["reference"]; ok {
		return []string{"reference", "type", "identifier", "display"}
	}
	if _, ok := m["unit"]; ok {
		return quantityOrder
	}
	if _, ok := m["system"]; ok {
		return codingOrder
	}
	return nil
}

func withoutKey(m map[string]any, key string) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		if k != key {
			out[k] = v
		}
	}
	return out
}

func primitive(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case bool:
		return strconv.FormatBool(x)
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case int:
		return strconv.Itoa(x)
	case nil:
		return ""
	default:
		return ""
	}
}

func escapeAttr(s string) string {
	var b bytes.Buffer
	_ = xml.EscapeText(&b, []byte(s))
	return strings.ReplaceAll(b.String(), `"`, "&#34;")
}
