# The relationship module answers "may this caller see this patient?".
#
# Each role has a patient_access mode (data.phigate.roles[role]):
#   care_team  - a practitioner (fhirUser Practitioner/...) sees the patients
#                of data.phigate.care_teams[fhirUser];
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
import data.phigate.request.req

# reach is what the caller's modes give, computed once:
#   modes       - the patient_access modes of the active roles;
#   any_patient - no patient restriction;
#   sources     - the lists the caller's patients are in, each found by one
#                 keyed lookup (the care-team index is practitioner ->
#                 patients), so nothing iterates over the whole population.
reach := {
	"modes": modes,
	"any_patient": true in [
		"any" in modes,
		[1 | "service" in modes; data.phigate.service_accounts[req.subject].any_patient == true] != [],
	],
	"sources": array.concat(
		array.concat(
			[l |
				"care_team" in modes
				startswith(fu, "Practitioner/")
				l := data.phigate.care_teams[fu]
			],
			[[p] |
				"self" in modes
				startswith(fu, "Patient/")
				p := trim_prefix(fu, "Patient/")
				p != ""
			],
		),
		array.concat(
			[l |
				"delegation" in modes
				startswith(fu, "RelatedPerson/")
				l := data.phigate.delegations[fu]
			],
			[l |
				"service" in modes
				l := data.phigate.service_accounts[req.subject].patients
			],
		),
	),
} if {
	modes := {m | some r in purpose.ctx.active_roles; m := data.phigate.roles[r].patient_access}
	fu := req.fhir_user
}

any_patient if reach.any_patient

# mine is the set of patients the caller is related to.
mine := {p | some s in reach.sources; some p in s}

related(_) if any_patient

# related(p) asks the keyed lookups instead of building mine: a request
# naming a patient never materialises the caller's list.
related(p) if {
	some s in reach.sources
	p in s
}

# ctx is the module's verdict on the request:
#   uncovered   - the touched patients neither related nor reached through
#                 break glass (a target touching one is denied);
#   deny_reason - the relationship the caller lacks, so an operator can
#                 tell a care-team gap from a patient reaching for someone
#                 else's record.
ctx := {
	"uncovered": {p |
		not reach.any_patient
		some p in req.touched
		count([s | some s in reach.sources; p in s]) == 0
		not p in break_glass.ctx.covered
	},
	"deny_reason": array.concat([r |
		some [m, r] in [
			["care_team", "relationship.not_on_care_team"],
			["delegation", "relationship.not_delegated"],
			["self", "relationship.not_self"],
			["service", "relationship.service_not_permitted"],
		]
		m in reach.modes
	], ["relationship.no_patient_access"])[0],
}

# covered(p): related, or reached through break glass.
covered(p) if related(p)

covered(p) if p in break_glass.ctx.covered

deny_reason := ctx.deny_reason

deny_target(f) := {deny_reason} if {
	some p in f.patients
	p in ctx.uncovered
}

else := set()

# Audit ids naming the relationship that granted access.
rules contains concat(":", ["relationship.care_team", req.fhir_user]) if {
	"care_team" in reach.modes
	some p in req.touched
	p in data.phigate.care_teams[req.fhir_user]
}

rules contains concat(":", ["relationship.self", req.fhir_user]) if {
	"self" in reach.modes
	count(req.touched) > 0
	count(mine) > 0
}

rules contains concat(":", ["relationship.delegation", req.fhir_user]) if {
	"delegation" in reach.modes
	some p in req.touched
	p in mine
}

rules contains concat(":", ["relationship.service", req.subject]) if {
	"service" in reach.modes
	count(req.touched) > 0
}

rules contains "relationship.any_patient" if {
	any_patient
	count(req.touched) > 0
}

rules contains "relationship.all_patients_filtered" if {
	req.any_all_patients
	not any_patient
}
