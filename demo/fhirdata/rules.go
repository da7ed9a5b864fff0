package fhirdata

import (
	"fmt"
	"strconv"
	"strings"
)

// Code systems and identifier systems used by the data set.
const (
	SystemMRN        = "http://hospital.example.org/mrn"
	SystemSSN        = "http://hl7.org/fhir/sid/us-ssn"
	SystemDriverMA   = "urn:oid:2.16.840.1.113883.4.3.25" // Massachusetts driver's license numbers
	SystemPassportUS = "http://hl7.org/fhir/sid/passport-USA"
	SystemMember     = "http://payer.example.org/member-id"
	SystemNPI        = "http://hl7.org/fhir/sid/us-npi"
	SystemV2ID       = "http://terminology.hl7.org/CodeSystem/v2-0203"
	SystemActCode    = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
	SystemLOINC      = "http://loinc.org"
	SystemSNOMED     = "http://snomed.info/sct"
	SystemUCUM       = "http://unitsofmeasure.org"
	SystemObsCat     = "http://terminology.hl7.org/CodeSystem/observation-category"
	SystemRoleCode   = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
)

// Sensitivity labels (v3-ActCode) that appear in meta.security.
const (
	LabelPSY = "PSY"
	LabelETH = "ETH"
	LabelHIV = "HIV"
	LabelSDV = "SDV"
)

// ExamplePSYObservation is a PSY-labelled Observation of pat-0001 that tests
// can target without searching for one.
const ExamplePSYObservation = "obs-pat-0001-psy"

// Defaults of Config.
const (
	DefaultSeed          = 20240101
	DefaultPatients      = 1200
	DefaultPractitioners = 60
	Organizations        = 3
)

// PatientID is the id of patient number n: "pat-0001" for n = 1.
func PatientID(n int) string { return fmt.Sprintf("pat-%04d", n) }

// PractitionerID is the id of practitioner number k: "prac-001" for k = 1.
func PractitionerID(k int) string { return fmt.Sprintf("prac-%03d", k) }

// OrganizationID is the id of organization number o: "org-001" for o = 1.
func OrganizationID(o int) string { return fmt.Sprintf("org-%03d", o) }

// RelatedPersonID is the id of the RelatedPerson of patient n, which exists
// only when HasRelatedPerson(n).
func RelatedPersonID(n int) string { return fmt.Sprintf("rp-%04d", n) }

// CareTeamID is the id of patient n's CareTeam.
func CareTeamID(n int) string { return "ct-" + PatientID(n) }

// PatientNumber parses "pat-0001" (or "Patient/pat-0001") back to 1.
func PatientNumber(id string) (int, bool) {
	return number(strings.TrimPrefix(id, "Patient/"), "pat-", 4)
}

// PractitionerNumber parses "prac-001" (or "Practitioner/prac-001") back to 1.
func PractitionerNumber(id string) (int, bool) {
	return number(strings.TrimPrefix(id, "Practitioner/"), "prac-", 3)
}

func number(id, prefix string, width int) (int, bool) {
	digits, ok := strings.CutPrefix(id, prefix)
	if !ok || len(digits) < width {
		return 0, false
	}
	n, err := strconv.Atoi(digits)
	if err != nil || n < 1 {
		return 0, false
	}
	// Reject non-canonical spellings ("pat-01", "pat-+001") so that one
	// patient has exactly one id.
	if fmt.Sprintf("%0*d", width, n) != digits {
		return 0, false
	}
	return n, true
}

// CareTeamPractitioner is the number K of the practitioner caring for
// patient n when there are practitioners practitioners: (n-1)%practitioners + 1.
func CareTeamPractitioner(n, practitioners int) int {
	return (n-1)%practitioners + 1
}

// PatientsOf lists the ids of the patients practitioner k cares for, in
// order, for a data set of the given size.
func PatientsOf(k, patients, practitioners int) []string {
	var ids []string
	for n := k; n <= patients; n += practitioners {
		ids = append(ids, PatientID(n))
	}
	return ids
}

// HasRelatedPerson reports whether patient n has a RelatedPerson.
func HasRelatedPerson(n int) bool { return n%10 == 0 }

// Labels lists the sensitivity labels of patient n's labelled Observations,
// in the order PSY, ETH, HIV, SDV.
func Labels(n int) []string {
	var l []string
	if n%15 == 1 {
		l = append(l, LabelPSY)
	}
	if n%20 == 3 {
		l = append(l, LabelETH)
	}
	if n%25 == 7 {
		l = append(l, LabelHIV)
	}
	if n%40 == 9 {
		l = append(l, LabelSDV)
	}
	return l
}

// LabelledObservationID is the id of patient n's Observation carrying label.
func LabelledObservationID(n int, label string) string {
	return "obs-" + PatientID(n) + "-" + strings.ToLower(label)
}

// hasChronicCondition reports whether patient n has cond-pat-NNNN-1.
func hasChronicCondition(n int) bool { return n%3 != 2 }
