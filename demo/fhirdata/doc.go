// Package fhirdata generates the demo's synthetic FHIR R4 data set: a
// hospital's worth of patients with the identifiers, narratives, labs and
// sensitivity labels an authorization layer has to get right. Nothing in it
// describes a real person; it is seeded and deterministic, so a test can name
// a resource id and know what it holds.
//
// # Rules (the demo's policy data relies on them; change them only together)
//
// Patients are numbered n = 1..Config.Patients (default 1200) with ids
// "pat-0001" … "pat-1200" (PatientID). Practitioners are numbered
// K = 1..Config.Practitioners (default 60), ids "prac-001" … "prac-060"
// (PractitionerID).
//
//   - Care team: practitioner prac-K is on the care team of patient n exactly
//     when (n-1) % Practitioners == K-1 (CareTeamPractitioner). prac-001 cares
//     for pat-0001, pat-0061, pat-0121, …; with the defaults every
//     practitioner has 20 patients. Each patient has one CareTeam "ct-pat-NNNN"
//     with that single practitioner as member, and the same practitioner is
//     the patient's generalPractitioner and the performer of its
//     Observations and Encounters.
//   - Organizations: "org-001" … "org-003"; patient n is managed by
//     org-((n-1)%3+1), practitioner K belongs to org-((K-1)%3+1).
//   - RelatedPerson: every patient with n % 10 == 0 (pat-0010, pat-0020, …)
//     has one RelatedPerson "rp-NNNN" (same number as the patient) whose
//     patient is that patient (HasRelatedPerson, RelatedPersonID).
//   - Observations per patient: four vital signs "obs-pat-NNNN-01" … "-04"
//     (heart rate, blood pressure, body weight, body temperature), then one
//     to three laboratory results "-05" … with LOINC codes, all unlabelled.
//   - Sensitive Observations, each carrying one meta.security label from
//     http://terminology.hl7.org/CodeSystem/v3-ActCode (Labels):
//     n % 15 == 1 → "obs-pat-NNNN-psy" (PHQ-9, PSY; about 6.7% of patients,
//     pat-0001 included, see ExamplePSYObservation); n % 20 == 3 →
//     "obs-pat-NNNN-eth" (AUDIT-C, ETH); n % 25 == 7 → "obs-pat-NNNN-hiv"
//     (HIV 1+2 antibody, HIV); n % 40 == 9 → "obs-pat-NNNN-sdv" (HARK
//     screening, SDV). PSY patients also have the PSY-labelled Condition
//     "cond-pat-NNNN-psy" (major depressive disorder).
//   - Encounters: two or three per patient, "enc-pat-NNNN-1" …
//   - Conditions: every patient with n % 3 != 2 has "cond-pat-NNNN-1"
//     (a chronic problem), in addition to the PSY rule above.
//
// Each Patient carries an MRN (SystemMRN), a synthetic SSN (SystemSSN, area
// 900-999, which is never issued), a driver's license, a passport number and
// an insurance member id; its narrative text.div repeats the name, the MRN
// and the birth date, as real systems do, so that redaction has to deal with
// it. Phone numbers use the reserved 555-01xx range and e-mail addresses the
// example.org domain.
//
// Names, birth dates, addresses, values and the number of labs and
// encounters come from a PCG generator seeded per patient from Config.Seed,
// so the whole set is identical for the same seed and generation can be
// split per patient. The ids and the rules above never depend on the seed.
package fhirdata
