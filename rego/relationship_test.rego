package phigate.relationship_test

import data.phigate.authz
import data.phigate.fixtures_test as fx
import data.phigate.relationship

decide(doc) := d if {
	d := authz.decision with input as doc
}

# prac-001 cares for pat-0001: (1-1) % 60 == 0.
test_care_team_first if decide(fx.req(fx.physician, fx.read_patient("pat-0001"))).allow

# prac-001 also cares for pat-1141: (1141-1) % 60 == 0.
test_care_team_last if decide(fx.req(fx.physician, fx.read_patient("pat-1141"))).allow

# pat-0061 is prac-001's too: the rule wraps every 60 patients.
test_care_team_wraps if decide(fx.req(fx.physician, fx.read_patient("pat-0061"))).allow

# pat-0002 belongs to prac-002, not prac-001.
test_not_on_care_team if decide(fx.req(fx.physician, fx.read_patient("pat-0002"))).reason == "relationship.not_on_care_team"

# pat-1200 belongs to prac-060: (1200-1) % 60 == 59.
test_prac_060 if decide(fx.req(fx.ident("dr-60", ["physician"], "Practitioner/prac-060"), fx.read_patient("pat-1200"))).allow

# A search naming one foreign patient among own ones is denied: every patient counts.
test_one_foreign_patient_denies if decide(fx.req(fx.physician, fx.search("Observation", ["pat-0001", "pat-0002"]))).reason == "relationship.not_on_care_team"

# A compartment search is about the compartment's patient.
test_compartment_patient if decide(fx.req(fx.physician, {"interaction": "search-compartment", "resource_type": "Observation", "compartment": {"type": "Patient", "id": "pat-0002"}, "patients": []})).reason == "relationship.not_on_care_team"

# A clinician's search over all patients is allowed and filtered to their 20 patients.
test_all_patients_filtered if {
	d := decide(fx.req(fx.physician, fx.search_all("Observation")))
	d.allow
	count(d.enforce.patients) == 20
	"pat-0061" in d.enforce.patients
	not d.enforce.any_patient
}

# A named-patient request is enforced on exactly the named patients.
test_named_patients_enforced if decide(fx.req(fx.physician, fx.read_patient("pat-0061"))).enforce.patients == ["pat-0061"]

# A read whose patient is unknown (Observation/o1) is enforced on the caller's patients.
test_unknown_patient_enforced_on_mine if count(decide(fx.req(fx.physician, fx.read("Observation", "o1", []))).enforce.patients) == 20

# A practitioner reference that is not a Practitioner gets no care team.
test_fhir_user_must_be_practitioner if decide(fx.req(fx.ident("x", ["physician"], "Patient/pat-0001"), fx.read_patient("pat-0001"))).reason == "relationship.not_on_care_team"

# A patient reads their own record.
test_patient_self if decide(fx.req(fx.patient, fx.read_patient("pat-0001"))).allow

# A patient cannot read another patient.
test_patient_other if decide(fx.req(fx.patient, fx.read_patient("pat-0002"))).reason == "relationship.not_self"

# A patient's search over all patients returns only their own id.
test_patient_all_patients if decide(fx.req(fx.patient, fx.search_all("Observation"))).enforce.patients == ["pat-0001"]

# rp-0010 holds a delegation for pat-0010.
test_delegation if decide(fx.req(fx.related, fx.read_patient("pat-0010"))).allow

# rp-0010 holds no delegation for pat-0020 (that is rp-0020's).
test_delegation_other if decide(fx.req(fx.related, fx.read_patient("pat-0020"))).reason == "relationship.not_delegated"

# The audit names the delegation that granted access.
test_delegation_rule if "relationship.delegation:RelatedPerson/rp-0010" in decide(fx.req(fx.related, fx.read_patient("pat-0010"))).audit.rules

# The lab interface workload may reach any patient.
test_service_any if decide(fx.req(fx.lab_service, fx.read("Observation", "o1", ["pat-0999"]))).enforce.any_patient

# The reminders workload reaches only its three patients.
test_service_list if decide(fx.req(fx.reminder_service, fx.read("Appointment", "a1", ["pat-0003"]))).allow

# Outside its list the reminders workload is refused.
test_service_list_outside if decide(fx.req(fx.reminder_service, fx.read("Appointment", "a1", ["pat-0004"]))).reason == "relationship.service_not_permitted"

# An unlisted workload has no patients at all.
test_unknown_service if decide(fx.req(object.union(fx.lab_service, {"subject": "spiffe://x/y"}), fx.read("Observation", "o1", ["pat-0001"]))).reason == "relationship.service_not_permitted"

# Billing's access mode is "any": no relationship needed for payment.
test_billing_any if relationship.any_patient with input as fx.req(fx.billing, fx.read_patient("pat-0777"))

# The care-team audit id names the practitioner.
test_care_team_rule if "relationship.care_team:Practitioner/prac-001" in decide(fx.req(fx.physician, fx.read_patient("pat-0001"))).audit.rules

# "Patient/" with no id names nobody: it is not the caller's own record.
test_patient_empty_reference if decide(fx.req(fx.ident("u", ["patient"], "Patient/"), fx.read_patient("pat-0001"))).reason == "relationship.not_self"

# A relationship from the shared store (input.care) opens the patient like
# the care-team data does, for a practitioner only, and says so in the
# audit rules.
test_store_relationship_opens if {
	doc := object.union(fx.req(fx.physician, fx.read_patient("pat-0100")), {"care": [{"patient": "pat-0100", "role": "attending", "source": "adt"}]})
	d := decide(doc)
	d.allow
	"relationship.care:Practitioner/prac-001" in d.audit.rules
}

test_store_relationship_other_patient if {
	doc := object.union(fx.req(fx.physician, fx.read_patient("pat-0101")), {"care": [{"patient": "pat-0100", "role": "attending", "source": "adt"}]})
	decide(doc).reason == "relationship.not_on_care_team"
}

test_store_relationship_without_it if decide(fx.req(fx.physician, fx.read_patient("pat-0100"))).reason == "relationship.not_on_care_team"
