package fhirdata

import (
	"errors"
	"fmt"
	"html"
	"math"
	"math/rand/v2"
	"sort"
	"strings"
	"time"
)

// Resource is one FHIR resource in its JSON object form, exactly as
// encoding/json decodes it: objects are map[string]any, arrays []any,
// numbers float64. Keeping the generic form lets a server treat generated
// and client-written resources alike.
type Resource = map[string]any

// TypeOf returns the resourceType of r, or "".
func TypeOf(r Resource) string { s, _ := r["resourceType"].(string); return s }

// IDOf returns the id of r, or "".
func IDOf(r Resource) string { s, _ := r["id"].(string); return s }

// Config sizes and seeds the data set. The zero value is not valid; call
// Validate (or use Default) to fill the defaults.
type Config struct {
	Seed          uint64
	Patients      int // 1..9999, default 1200
	Practitioners int // 1..999, default 60
}

// Validate fills defaults and rejects impossible sizes, naming the field.
func (c *Config) Validate() error {
	if c.Seed == 0 {
		c.Seed = DefaultSeed
	}
	if c.Patients == 0 {
		c.Patients = DefaultPatients
	}
	if c.Practitioners == 0 {
		c.Practitioners = DefaultPractitioners
	}
	// Ids are zero-padded to 4 and 3 digits; larger sets would break the
	// one-id-per-patient rule.
	if c.Patients < 1 || c.Patients > 9999 {
		return fmt.Errorf("fhirdata: Config.Patients must be 1..9999, got %d", c.Patients)
	}
	if c.Practitioners < 1 || c.Practitioners > 999 {
		return fmt.Errorf("fhirdata: Config.Practitioners must be 1..999, got %d", c.Practitioners)
	}
	return nil
}

// Dataset is a generated set of resources. It is immutable once built:
// callers share the maps and must copy before changing anything.
type Dataset struct {
	cfg       Config
	resources []Resource
	byKey     map[string]Resource
	byType    map[string][]Resource
}

// Default generates the default set (DefaultSeed, 1200 patients, 60
// practitioners).
func Default() *Dataset {
	d, err := Generate(Config{})
	if err != nil {
		// The zero Config always validates; reaching here is a programming error.
		panic(err)
	}
	return d
}

// Generate builds the data set for cfg.
func Generate(cfg Config) (*Dataset, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d := &Dataset{cfg: cfg, byKey: map[string]Resource{}, byType: map[string][]Resource{}}
	base := time.Date(2024, 1, 1, 8, 0, 0, 0, time.UTC)
	for o := 1; o <= Organizations; o++ {
		d.add(organization(o, base))
	}
	for k := 1; k <= cfg.Practitioners; k++ {
		rng := rand.New(rand.NewPCG(cfg.Seed, 0x9000_0000+uint64(k)))
		d.add(practitioner(k, rng, base))
	}
	for n := 1; n <= cfg.Patients; n++ {
		rng := rand.New(rand.NewPCG(cfg.Seed, uint64(n)))
		g := patientGen{n: n, cfg: cfg, rng: rng, base: base}
		for _, r := range g.resources() {
			d.add(r)
		}
	}
	return d, nil
}

func (d *Dataset) add(r Resource) {
	key := TypeOf(r) + "/" + IDOf(r)
	if _, dup := d.byKey[key]; dup {
		panic(errors.New("fhirdata: duplicate resource " + key))
	}
	d.resources = append(d.resources, r)
	d.byKey[key] = r
	d.byType[TypeOf(r)] = append(d.byType[TypeOf(r)], r)
}

// Config returns the validated configuration the set was built from.
func (d *Dataset) Config() Config { return d.cfg }

// All returns every resource in generation order (organizations,
// practitioners, then each patient with its resources).
func (d *Dataset) All() []Resource { return d.resources }

// Get returns the resource typ/id.
func (d *Dataset) Get(typ, id string) (Resource, bool) {
	r, ok := d.byKey[typ+"/"+id]
	return r, ok
}

// OfType returns the resources of one type in generation order.
func (d *Dataset) OfType(typ string) []Resource { return d.byType[typ] }

// Types lists the resource types present, sorted.
func (d *Dataset) Types() []string {
	t := make([]string, 0, len(d.byType))
	for k := range d.byType {
		t = append(t, k)
	}
	sort.Strings(t)
	return t
}

// ---- builders -------------------------------------------------------------

type obj = map[string]any
type arr = []any

func coding(c code) obj { return obj{"system": c.system, "code": c.code, "display": c.display} }

func concept(c code) obj { return obj{"coding": arr{coding(c)}, "text": c.display} }

func ref(typ, id, display string) obj {
	r := obj{"reference": typ + "/" + id}
	if display != "" {
		r["display"] = display
	}
	return r
}

func meta(t time.Time, labels ...string) obj {
	m := obj{"versionId": "1", "lastUpdated": t.Format(time.RFC3339)}
	if len(labels) > 0 {
		sec := arr{}
		for _, l := range labels {
			sec = append(sec, obj{"system": SystemActCode, "code": l, "display": labelDisplay[l]})
		}
		m["security"] = sec
	}
	return m
}

var labelDisplay = map[string]string{
	LabelPSY: "psychiatry information sensitivity",
	LabelETH: "substance abuse information sensitivity",
	LabelHIV: "HIV/AIDS information sensitivity",
	LabelSDV: "sexual assault, abuse, or domestic violence information sensitivity",
}

func identifier(typeCode, typeDisplay, system, value, use string) obj {
	id := obj{
		"type":   obj{"coding": arr{obj{"system": SystemV2ID, "code": typeCode, "display": typeDisplay}}},
		"system": system,
		"value":  value,
	}
	if use != "" {
		id["use"] = use
	}
	return id
}

func narrative(parts ...string) obj {
	var b strings.Builder
	b.WriteString(`<div xmlns="http://www.w3.org/1999/xhtml">`)
	for _, p := range parts {
		b.WriteString("<p>")
		b.WriteString(html.EscapeString(p))
		b.WriteString("</p>")
	}
	b.WriteString("</div>")
	return obj{"status": "generated", "div": b.String()}
}

func pick[T any](rng *rand.Rand, s []T) T { return s[rng.IntN(len(s))] }

func round(v float64, decimals int) float64 {
	p := math.Pow(10, float64(decimals))
	return math.Round(v*p) / p
}

func phone(rng *rand.Rand) string {
	return fmt.Sprintf("(%s) 555-01%02d", pick(rng, areaCodes), rng.IntN(100))
}

func organization(o int, base time.Time) Resource {
	names := []string{"General Hospital", "Riverside Clinic", "Harbor Health Center"}
	name := names[(o-1)%len(names)]
	return Resource{
		"resourceType": "Organization",
		"id":           OrganizationID(o),
		"meta":         meta(base),
		"identifier":   arr{obj{"system": SystemNPI, "value": fmt.Sprintf("19%08d", 4242000+o)}},
		"active":       true,
		"name":         name,
		"telecom":      arr{obj{"system": "phone", "value": fmt.Sprintf("(617) 555-01%02d", o), "use": "work"}},
		"address": arr{obj{"use": "work", "line": arr{fmt.Sprintf("%d Hospital Way", o*100)},
			"city": "Boston", "state": "MA", "postalCode": "02115", "country": "US"}},
	}
}

func practitioner(k int, rng *rand.Rand, base time.Time) Resource {
	female := rng.IntN(2) == 0
	given := pick(rng, maleGiven)
	gender := "male"
	if female {
		given, gender = pick(rng, femaleGiven), "female"
	}
	family := pick(rng, familyNames)
	id := PractitionerID(k)
	return Resource{
		"resourceType": "Practitioner",
		"id":           id,
		"meta":         meta(base),
		"text":         narrative(fmt.Sprintf("Dr. %s %s, NPI %s", given, family, npi(k))),
		"identifier":   arr{obj{"system": SystemNPI, "value": npi(k)}},
		"active":       true,
		"name":         arr{obj{"use": "official", "family": family, "given": arr{given}, "prefix": arr{"Dr."}, "text": "Dr. " + given + " " + family}},
		"telecom": arr{
			obj{"system": "phone", "value": phone(rng), "use": "work"},
			obj{"system": "email", "value": strings.ToLower(fmt.Sprintf("%s.%s@hospital.example.org", given, strings.ReplaceAll(family, "'", ""))), "use": "work"},
		},
		"gender": gender,
		"qualification": arr{obj{"code": obj{"coding": arr{obj{"system": "http://terminology.hl7.org/CodeSystem/v2-0360", "code": "MD", "display": "Doctor of Medicine"}}, "text": "MD"},
			"issuer": ref("Organization", OrganizationID((k-1)%Organizations+1), "")}},
	}
}

func npi(k int) string { return fmt.Sprintf("15%08d", 3000000+k*7) }

// practitionerName is recomputed from the practitioner's own stream so a
// patient's references can carry the display without a lookup table.
func practitionerName(seed uint64, k int) string {
	rng := rand.New(rand.NewPCG(seed, 0x9000_0000+uint64(k)))
	female := rng.IntN(2) == 0
	given := pick(rng, maleGiven)
	if female {
		given = pick(rng, femaleGiven)
	}
	return "Dr. " + given + " " + pick(rng, familyNames)
}

type patientGen struct {
	n    int
	cfg  Config
	rng  *rand.Rand
	base time.Time

	id, name, pracID, pracName, orgID string
	encounters                        []string
}

func (g *patientGen) day(maxDays int) time.Time {
	return g.base.Add(time.Duration(g.rng.IntN(maxDays))*24*time.Hour + time.Duration(g.rng.IntN(9*60))*time.Minute)
}

func (g *patientGen) resources() []Resource {
	n, rng := g.n, g.rng
	g.id = PatientID(n)
	k := CareTeamPractitioner(n, g.cfg.Practitioners)
	g.pracID = PractitionerID(k)
	g.pracName = practitionerName(g.cfg.Seed, k)
	g.orgID = OrganizationID((n-1)%Organizations + 1)

	female := rng.IntN(2) == 0
	gender, given, middle := "male", pick(rng, maleGiven), pick(rng, maleGiven)
	if female {
		gender, given, middle = "female", pick(rng, femaleGiven), pick(rng, femaleGiven)
	}
	family := pick(rng, familyNames)
	g.name = given + " " + family
	birth := time.Date(1935+rng.IntN(85), time.Month(1+rng.IntN(12)), 1+rng.IntN(28), 0, 0, 0, 0, time.UTC).Format("2006-01-02")
	mrn := fmt.Sprintf("%08d", 20000000+n*137)
	ssn := fmt.Sprintf("9%02d-%02d-%04d", rng.IntN(100), 10+rng.IntN(90), n)
	pl := pick(rng, places)
	emailLocal := strings.ToLower(strings.ReplaceAll(given+"."+family, "'", ""))

	out := []Resource{{
		"resourceType": "Patient",
		"id":           g.id,
		"meta":         meta(g.base.Add(time.Duration(n) * time.Minute)),
		"text":         narrative(fmt.Sprintf("%s %s %s, MRN %s, born %s", given, middle, family, mrn, birth)),
		"identifier": arr{
			identifier("MR", "Medical record number", SystemMRN, mrn, "usual"),
			identifier("SS", "Social Security number", SystemSSN, ssn, ""),
			identifier("DL", "Driver's license number", SystemDriverMA, fmt.Sprintf("S%08d", rng.IntN(100000000)), ""),
			identifier("PPN", "Passport number", SystemPassportUS, fmt.Sprintf("5%08d", rng.IntN(100000000)), ""),
			identifier("MB", "Member Number", SystemMember, fmt.Sprintf("XQH%09d", rng.IntN(1000000000)), "secondary"),
		},
		"active": true,
		"name": arr{obj{"use": "official", "family": family, "given": arr{given, middle},
			"text": given + " " + middle + " " + family}},
		"telecom": arr{
			obj{"system": "phone", "value": phone(rng), "use": "home"},
			obj{"system": "phone", "value": phone(rng), "use": "mobile"},
			obj{"system": "email", "value": fmt.Sprintf("%s%d@example.org", emailLocal, n), "use": "home"},
		},
		"gender":    gender,
		"birthDate": birth,
		"address": arr{obj{"use": "home", "line": arr{fmt.Sprintf("%d %s", 1+rng.IntN(9000), pick(rng, streetNames))},
			"city": pl.city, "state": "MA", "postalCode": pl.postal, "country": "US"}},
		"generalPractitioner":  arr{ref("Practitioner", g.pracID, g.pracName)},
		"managingOrganization": ref("Organization", g.orgID, ""),
	}}

	encCount := 2 + rng.IntN(2)
	for e := 1; e <= encCount; e++ {
		out = append(out, g.encounter(e))
	}
	out = append(out, g.vitals()...)
	labCount := 1 + rng.IntN(3)
	perm := rng.Perm(len(labs))
	for i := 0; i < labCount; i++ {
		out = append(out, g.lab(5+i, labs[perm[i]]))
	}
	for _, l := range Labels(n) {
		out = append(out, g.sensitive(l))
	}
	if hasChronicCondition(n) {
		out = append(out, g.condition("1", pick(rng, chronic), nil))
	}
	if n%15 == 1 {
		out = append(out, g.condition("psy", code{SystemSNOMED, "370143000", "Major depressive disorder"}, []string{LabelPSY}))
	}
	out = append(out, g.careTeam())
	if HasRelatedPerson(n) {
		out = append(out, g.relatedPerson(family))
	}
	return out
}

func (g *patientGen) subject() obj { return ref("Patient", g.id, g.name) }

func (g *patientGen) encounter(e int) Resource {
	id := fmt.Sprintf("enc-%s-%d", g.id, e)
	g.encounters = append(g.encounters, id)
	start := g.day(365)
	class := obj{"system": SystemActCode, "code": "AMB", "display": "ambulatory"}
	typ := code{SystemSNOMED, "185349003", "Encounter for check up"}
	hours := 1
	if g.rng.IntN(6) == 0 {
		class = obj{"system": SystemActCode, "code": "IMP", "display": "inpatient encounter"}
		typ = code{SystemSNOMED, "32485007", "Hospital admission"}
		hours = 24 * (1 + g.rng.IntN(5))
	}
	return Resource{
		"resourceType": "Encounter",
		"id":           id,
		"meta":         meta(start.Add(time.Duration(hours) * time.Hour)),
		"status":       "finished",
		"class":        class,
		"type":         arr{concept(typ)},
		"subject":      g.subject(),
		"participant":  arr{obj{"individual": ref("Practitioner", g.pracID, g.pracName)}},
		"period": obj{"start": start.Format(time.RFC3339),
			"end": start.Add(time.Duration(hours) * time.Hour).Format(time.RFC3339)},
		"serviceProvider": ref("Organization", g.orgID, ""),
	}
}

func (g *patientGen) observation(suffix string, category, categoryDisplay string, c code, when time.Time, labels ...string) Resource {
	return Resource{
		"resourceType":      "Observation",
		"id":                "obs-" + g.id + "-" + suffix,
		"meta":              meta(when.Add(2*time.Hour), labels...),
		"status":            "final",
		"category":          arr{obj{"coding": arr{obj{"system": SystemObsCat, "code": category, "display": categoryDisplay}}}},
		"code":              concept(c),
		"subject":           g.subject(),
		"encounter":         ref("Encounter", pick(g.rng, g.encounters), ""),
		"effectiveDateTime": when.Format(time.RFC3339),
		"issued":            when.Add(2 * time.Hour).Format(time.RFC3339),
		"performer":         arr{ref("Practitioner", g.pracID, g.pracName)},
	}
}

func quantity(v float64, unit, ucum string) obj {
	return obj{"value": v, "unit": unit, "system": SystemUCUM, "code": ucum}
}

func (g *patientGen) vitals() []Resource {
	rng := g.rng
	when := g.day(365)
	hr := g.observation("01", "vital-signs", "Vital Signs", code{SystemLOINC, "8867-4", "Heart rate"}, when)
	hr["valueQuantity"] = quantity(float64(55+rng.IntN(45)), "beats/minute", "/min")
	bp := g.observation("02", "vital-signs", "Vital Signs", code{SystemLOINC, "85354-9", "Blood pressure panel with all children optional"}, when)
	bp["component"] = arr{
		obj{"code": concept(code{SystemLOINC, "8480-6", "Systolic blood pressure"}), "valueQuantity": quantity(float64(100+rng.IntN(60)), "mmHg", "mm[Hg]")},
		obj{"code": concept(code{SystemLOINC, "8462-4", "Diastolic blood pressure"}), "valueQuantity": quantity(float64(60+rng.IntN(35)), "mmHg", "mm[Hg]")},
	}
	wt := g.observation("03", "vital-signs", "Vital Signs", code{SystemLOINC, "29463-7", "Body weight"}, when)
	wt["valueQuantity"] = quantity(round(45+rng.Float64()*75, 1), "kg", "kg")
	tmp := g.observation("04", "vital-signs", "Vital Signs", code{SystemLOINC, "8310-5", "Body temperature"}, when)
	tmp["valueQuantity"] = quantity(round(36.1+rng.Float64()*1.6, 1), "Cel", "Cel")
	return []Resource{hr, bp, wt, tmp}
}

func (g *patientGen) lab(i int, k quantityKind) Resource {
	o := g.observation(fmt.Sprintf("%02d", i), "laboratory", "Laboratory", k.code, g.day(365))
	o["valueQuantity"] = quantity(round(k.min+g.rng.Float64()*(k.max-k.min), k.decimals), k.unit, k.ucum)
	return o
}

func (g *patientGen) sensitive(label string) Resource {
	when := g.day(365)
	suffix := strings.ToLower(label)
	var o Resource
	switch label {
	case LabelPSY:
		o = g.observation(suffix, "survey", "Survey", code{SystemLOINC, "44261-6", "Patient Health Questionnaire 9 item (PHQ-9) total score [Reported]"}, when, label)
		o["valueInteger"] = float64(5 + g.rng.IntN(20))
	case LabelETH:
		o = g.observation(suffix, "survey", "Survey", code{SystemLOINC, "75626-2", "Total score [AUDIT-C]"}, when, label)
		o["valueInteger"] = float64(3 + g.rng.IntN(10))
	case LabelHIV:
		o = g.observation(suffix, "laboratory", "Laboratory", code{SystemLOINC, "75622-1", "HIV 1 and 2 Ab [Presence] in Serum or Plasma"}, when, label)
		res := code{SystemSNOMED, "260385009", "Negative"}
		if g.rng.IntN(4) == 0 {
			res = code{SystemSNOMED, "10828004", "Positive"}
		}
		o["valueCodeableConcept"] = concept(res)
	case LabelSDV:
		o = g.observation(suffix, "survey", "Survey", code{SystemLOINC, "76499-3", "Humiliation, Afraid, Rape, and Kick questionnaire [HARK]"}, when, label)
		o["valueInteger"] = float64(1 + g.rng.IntN(4))
	}
	return o
}

func (g *patientGen) condition(suffix string, c code, labels []string) Resource {
	onset := time.Date(2005+g.rng.IntN(18), time.Month(1+g.rng.IntN(12)), 1+g.rng.IntN(28), 0, 0, 0, 0, time.UTC)
	return Resource{
		"resourceType":       "Condition",
		"id":                 "cond-" + g.id + "-" + suffix,
		"meta":               meta(g.base.Add(time.Duration(g.n)*time.Minute), labels...),
		"clinicalStatus":     obj{"coding": arr{obj{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}}},
		"verificationStatus": obj{"coding": arr{obj{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed"}}},
		"category":           arr{obj{"coding": arr{obj{"system": "http://terminology.hl7.org/CodeSystem/condition-category", "code": "problem-list-item", "display": "Problem List Item"}}}},
		"code":               concept(c),
		"subject":            g.subject(),
		"onsetDateTime":      onset.Format("2006-01-02"),
		"recorder":           ref("Practitioner", g.pracID, g.pracName),
	}
}

func (g *patientGen) careTeam() Resource {
	return Resource{
		"resourceType": "CareTeam",
		"id":           CareTeamID(g.n),
		"meta":         meta(g.base),
		"status":       "active",
		"name":         "Primary care team",
		"subject":      g.subject(),
		"participant": arr{obj{
			"role":   arr{concept(code{SystemSNOMED, "446050000", "Primary care physician"})},
			"member": ref("Practitioner", g.pracID, g.pracName),
		}},
		"managingOrganization": arr{ref("Organization", g.orgID, "")},
	}
}

func (g *patientGen) relatedPerson(family string) Resource {
	rels := []code{
		{SystemRoleCode, "SPS", "spouse"}, {SystemRoleCode, "MTH", "mother"},
		{SystemRoleCode, "FTH", "father"}, {SystemRoleCode, "CHILD", "child"},
	}
	rel := pick(g.rng, rels)
	given := pick(g.rng, femaleGiven)
	gender := "female"
	if g.rng.IntN(2) == 0 {
		given, gender = pick(g.rng, maleGiven), "male"
	}
	return Resource{
		"resourceType": "RelatedPerson",
		"id":           RelatedPersonID(g.n),
		"meta":         meta(g.base),
		"active":       true,
		"patient":      g.subject(),
		"relationship": arr{concept(rel)},
		"name":         arr{obj{"use": "official", "family": family, "given": arr{given}, "text": given + " " + family}},
		"telecom":      arr{obj{"system": "phone", "value": phone(g.rng), "use": "mobile"}},
		"gender":       gender,
	}
}
