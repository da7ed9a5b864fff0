package authz

// resourceTypes are the FHIR R4 (4.0.1) resource types. A path segment must
// match one exactly: "patient" is not "Patient", and a server that
// tolerated the difference would be answering a request the policy never saw.
var resourceTypes = func() map[string]bool {
	m := make(map[string]bool, len(r4Types))
	for _, t := range r4Types {
		m[t] = true
	}
	return m
}()

var r4Types = []string{
	"Account", "ActivityDefinition", "AdverseEvent", "AllergyIntolerance", "Appointment",
	"AppointmentResponse", "AuditEvent", "Basic", "Binary", "BiologicallyDerivedProduct",
	"BodyStructure", "Bundle", "CapabilityStatement", "CarePlan", "CareTeam", "CatalogEntry",
	"ChargeItem", "ChargeItemDefinition", "Claim", "ClaimResponse", "ClinicalImpression",
	"CodeSystem", "Communication", "CommunicationRequest", "CompartmentDefinition",
	"Composition", "ConceptMap", "Condition", "Consent", "Contract", "Coverage",
	"CoverageEligibilityRequest", "CoverageEligibilityResponse", "DetectedIssue", "Device",
	"DeviceDefinition", "DeviceMetric", "DeviceRequest", "DeviceUseStatement",
	"DiagnosticReport", "DocumentManifest", "DocumentReference", "EffectEvidenceSynthesis",
	"Encounter", "Endpoint", "EnrollmentRequest", "EnrollmentResponse", "EpisodeOfCare",
	"EventDefinition", "Evidence", "EvidenceVariable", "ExampleScenario",
	"ExplanationOfBenefit", "FamilyMemberHistory", "Flag", "Goal", "GraphDefinition", "Group",
	"GuidanceResponse", "HealthcareService", "ImagingStudy", "Immunization",
	"ImmunizationEvaluation", "ImmunizationRecommendation", "ImplementationGuide",
	"InsurancePlan", "Invoice", "Library", "Linkage", "List", "Location", "Measure",
	"MeasureReport", "Media", "Medication", "MedicationAdministration", "MedicationDispense",
	"MedicationKnowledge", "MedicationRequest", "MedicationStatement", "MedicinalProduct",
	"MedicinalProductAuthorization", "MedicinalProductContraindication",
	"MedicinalProductIndication", "MedicinalProductIngredient", "MedicinalProductInteraction",
	"MedicinalProductManufactured", "MedicinalProductPackaged", "MedicinalProductPharmaceutical",
	"MedicinalProductUndesirableEffect", "MessageDefinition", "MessageHeader",
	"MolecularSequence", "NamingSystem", "NutritionOrder", "Observation",
	"ObservationDefinition", "OperationDefinition", "OperationOutcome", "Organization",
	"OrganizationAffiliation", "Parameters", "Patient", "PaymentNotice", "PaymentReconciliation",
	"Person", "PlanDefinition", "Practitioner", "PractitionerRole", "Procedure", "Provenance",
	"Questionnaire", "QuestionnaireResponse", "RelatedPerson", "RequestGroup",
	"ResearchDefinition", "ResearchElementDefinition", "ResearchStudy", "ResearchSubject",
	"RiskAssessment", "RiskEvidenceSynthesis", "Schedule", "SearchParameter", "ServiceRequest",
	"Slot", "Specimen", "SpecimenDefinition", "StructureDefinition", "StructureMap",
	"Subscription", "Substance", "SubstanceNucleicAcid", "SubstancePolymer",
	"SubstanceProtein", "SubstanceReferenceInformation", "SubstanceSourceMaterial",
	"SubstanceSpecification", "SupplyDelivery", "SupplyRequest", "Task",
	"TerminologyCapabilities", "TestReport", "TestScript", "ValueSet", "VerificationResult",
	"VisionPrescription",
}

// IsResourceType reports whether t is exactly a FHIR R4 resource type.
func IsResourceType(t string) bool { return resourceTypes[t] }

// patientParams is the FHIR R4 Patient CompartmentDefinition: for each
// resource type in the patient compartment, the search parameters whose
// Patient references put a resource in a patient's compartment. The
// "patient" search parameter is added where R4 defines it on the type, since
// it is the same constraint restricted to Patient targets. Types absent from
// the table are not patient data (Practitioner, Medication, ValueSet, ...).
//
// Task, GuidanceResponse and Device are not in the R4 compartment but carry
// a patient search parameter and patient data; they are listed so that an
// unconstrained search on them reads as all patients (fail closed).
// Binary and Bundle can hold anything and have no patient parameter: any
// search on them reads as all patients.
var patientParams = map[string][]string{
	"Account":                     {"subject", "patient"},
	"AdverseEvent":                {"subject"},
	"AllergyIntolerance":          {"patient", "recorder", "asserter"},
	"Appointment":                 {"actor", "patient"},
	"AppointmentResponse":         {"actor", "patient"},
	"AuditEvent":                  {"patient"},
	"Basic":                       {"patient", "author"},
	"Binary":                      {},
	"BodyStructure":               {"patient"},
	"Bundle":                      {},
	"CarePlan":                    {"patient", "performer"},
	"CareTeam":                    {"patient", "participant"},
	"ChargeItem":                  {"subject", "patient"},
	"Claim":                       {"patient", "payee"},
	"ClaimResponse":               {"patient"},
	"ClinicalImpression":          {"subject", "patient"},
	"Communication":               {"subject", "patient", "sender", "recipient"},
	"CommunicationRequest":        {"subject", "patient", "sender", "recipient", "requester"},
	"Composition":                 {"subject", "patient", "author", "attester"},
	"Condition":                   {"patient", "asserter"},
	"Consent":                     {"patient"},
	"Coverage":                    {"policy-holder", "subscriber", "beneficiary", "payor", "patient"},
	"CoverageEligibilityRequest":  {"patient"},
	"CoverageEligibilityResponse": {"patient"},
	"DetectedIssue":               {"patient"},
	"Device":                      {"patient"},
	"DeviceRequest":               {"subject", "patient", "performer"},
	"DeviceUseStatement":          {"subject", "patient"},
	"DiagnosticReport":            {"subject", "patient"},
	"DocumentManifest":            {"subject", "patient", "author", "recipient"},
	"DocumentReference":           {"subject", "patient", "author"},
	"Encounter":                   {"patient"},
	"EnrollmentRequest":           {"subject", "patient"},
	"EpisodeOfCare":               {"patient"},
	"ExplanationOfBenefit":        {"patient", "payee"},
	"FamilyMemberHistory":         {"patient"},
	"Flag":                        {"patient"},
	"Goal":                        {"patient"},
	"Group":                       {"member"},
	"GuidanceResponse":            {"subject", "patient"},
	"ImagingStudy":                {"patient"},
	"Immunization":                {"patient"},
	"ImmunizationEvaluation":      {"patient"},
	"ImmunizationRecommendation":  {"patient"},
	"Invoice":                     {"subject", "patient", "recipient"},
	"List":                        {"subject", "patient", "source"},
	"MeasureReport":               {"patient"},
	"Media":                       {"subject", "patient"},
	"MedicationAdministration":    {"patient", "performer", "subject"},
	"MedicationDispense":          {"subject", "patient", "receiver"},
	"MedicationRequest":           {"subject", "patient"},
	"MedicationStatement":         {"subject", "patient"},
	"MolecularSequence":           {"patient"},
	"NutritionOrder":              {"patient"},
	"Observation":                 {"subject", "patient", "performer"},
	"Patient":                     {}, // only _id constrains a Patient search; link returns other patients
	"Person":                      {"patient"},
	"Procedure":                   {"patient", "performer"},
	"Provenance":                  {"patient"},
	"QuestionnaireResponse":       {"subject", "patient", "author"},
	"RelatedPerson":               {"patient"},
	"RequestGroup":                {"subject", "patient", "participant"},
	"ResearchSubject":             {"individual", "patient"},
	"RiskAssessment":              {"subject", "patient"},
	"Schedule":                    {"actor"},
	"ServiceRequest":              {"subject", "patient", "performer"},
	"Specimen":                    {"subject", "patient"},
	"SupplyDelivery":              {"patient"},
	"SupplyRequest":               {"subject"},
	"Task":                        {"patient", "subject"},
	"VisionPrescription":          {"patient"},
}

// patientOnlyParams target only Patient, so a bare id ("patient=123") is
// unambiguous. Other parameters (subject, performer, ...) may reference a
// Group or Device with the same id, so a bare id there constrains nothing.
var patientOnlyParams = map[string]bool{"patient": true, "beneficiary": true, "individual": true}

// compartmentTypes own the R4 compartments searchable as /Type/id/Resource.
var compartmentTypes = map[string]bool{
	"Patient": true, "Encounter": true, "RelatedPerson": true, "Practitioner": true, "Device": true,
}

// isPatientData reports whether resources of type t belong to patients.
func isPatientData(t string) bool {
	_, ok := patientParams[t]
	return ok
}
