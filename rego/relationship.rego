# The relationship module answers "may this caller see this patient?".
#
# Each role has a patient_access mode (data.phigate.roles[role]):
#   care_team  - a practitioner (fhirUser Practitioner/...) sees the patients
#                of data.phigate.care_teams[fhirUser] and those the shared
#                store relates them to (input.care);
#   self       - a patient (fhirUser Patient/<id>) sees only <id>;
#   delegation - a RelatedPerson sees data.phigate.delegations[fhirUser];
#   service    - a workload sees data.phigate.service_accounts[subject]
#                (any_patient, or a list of patients);
#   any        - no patient restriction (billing, front desk, research:
#                their limits are purpose, rbac and minimum necessary).
# A request touching a patient outside these relationships is denied unless
# a break-glass grant covers that patient.
package phigate.relationship

import data.phigate.break_glass
import data.phigate.purpose
import data.phigate.request

modes := {m |
	some r in purpose.active_roles
	m := data.phigate.roles[r].patient_access
}

any_patient if "any" in modes

any_patient if {
	"service" in modes
	data.phigate.service_accounts[request.subject].any_patient == true
}

# mine is the set of patients the caller is related to. Each branch is one
# keyed lookup: the care-team index is practitioner -> patients, so nothing
# here iterates over the whole population.
mine contains p if {
	"care_team" in modes
	startswith(request.fhir_user, "Practitioner/")
	some p in data.phigate.care_teams[request.fhir_user]
}

mine contains p if {
	"care_team" in modes
	startswith(request.fhir_user, "Practitioner/")
	some p in request.care_patients
}

mine contains p if {
	"self" in modes
	p := trim_prefix(request.fhir_user, "Patient/")
	startswith(request.fhir_user, "Patient/")
	p != ""
}

mine contains p if {
	"delegation" in modes
	startswith(request.fhir_user, "RelatedPerson/")
	some p in data.phigate.delegations[request.fhir_user]
}

mine contains p if {
	"service" in modes
	some p in data.phigate.service_accounts[request.subject].patients
}

related(_) if any_patient

# related(p) asks the one keyed lookup its mode needs instead of building
# mine: a request naming a patient never materialises the caller's list.
related(p) if {
	"care_team" in modes
	startswith(request.fhir_user, "Practitioner/")
	p in data.phigate.care_teams[request.fhir_user]
}

related(p) if {
	"care_team" in modes
	startswith(request.fhir_user, "Practitioner/")
	p in request.care_patients
}

related(p) if {
	"self" in modes
	startswith(request.fhir_user, "Patient/")
	p != ""
	p == trim_prefix(request.fhir_user, "Patient/")
}

related(p) if {
	"delegation" in modes
	startswith(request.fhir_user, "RelatedPerson/")
	p in data.phigate.delegations[request.fhir_user]
}

related(p) if {
	"service" in modes
	p in data.phigate.service_accounts[request.subject].patients
}

# covered(p): related, or reached through break glass.
covered(p) if related(p)

covered(p) if break_glass.covers(p)

# The reason names the relationship the caller lacks, so an operator can
# tell a care-team gap from a patient reaching for someone else's record.
default deny_reason := "relationship.no_patient_access"

deny_reason := "relationship.not_on_care_team" if "care_team" in modes

else := "relationship.not_delegated" if "delegation" in modes

else := "relationship.not_self" if "self" in modes

else := "relationship.service_not_permitted" if "service" in modes

deny_target(f) := {deny_reason} if {
	some p in f.patients
	not covered(p)
}

else := set()

# Audit ids naming the relationship that granted access.
rules contains concat(":", ["relationship.care_team", request.fhir_user]) if {
	"care_team" in modes
	some p in request.touched
	p in data.phigate.care_teams[request.fhir_user]
}

rules contains concat(":", ["relationship.care", request.fhir_user]) if {
	"care_team" in modes
	some p in request.touched
	p in request.care_patients
}

rules contains concat(":", ["relationship.self", request.fhir_user]) if {
	"self" in modes
	count(request.touched) > 0
	count(mine) > 0
}

rules contains concat(":", ["relationship.delegation", request.fhir_user]) if {
	"delegation" in modes
	some p in request.touched
	p in mine
}

rules contains concat(":", ["relationship.service", request.subject]) if {
	"service" in modes
	count(request.touched) > 0
}

rules contains "relationship.any_patient" if {
	any_patient
	count(request.touched) > 0
}

rules contains "relationship.all_patients_filtered" if {
	request.any_all_patients
	not any_patient
}
