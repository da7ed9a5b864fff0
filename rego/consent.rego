# The consent module applies the directives patients keep in the shared
# store (input.consents: those of the patients this request names, in
# force at its time). Each names a purpose of use, a sensitivity label, or
# a label under one purpose; an empty purpose or label means any.
#
#   deny     - the patient opted out. A directive with a purpose and no
#              label refuses requests under that purpose
#              ("consent.opt_out"); one with a label withholds resources
#              carrying it from the response. Only break-glass overrides
#              (an emergency is the exception the law makes to an
#              opt-out), and the patient's own access is never refused.
#   restrict - the purpose or label is kept to the patient's treating
#              relationships: a practitioner the store or the care-team
#              data relates to the patient, the patient, or break-glass.
#              Anyone else is refused ("consent.restricted") or has the
#              label withheld.
package phigate.consent

import data.phigate.break_glass
import data.phigate.purpose
import data.phigate.request

applies(c) if c.purpose == ""

applies(c) if c.purpose == purpose.effective

self(p) if request.fhir_user == concat("", ["Patient/", p])

treating(p) if self(p)

treating(p) if {
	startswith(request.fhir_user, "Practitioner/")
	p in request.care_patients
}

treating(p) if {
	startswith(request.fhir_user, "Practitioner/")
	p in data.phigate.care_teams[request.fhir_user]
}

overridden(_) if break_glass.active

overridden(c) if self(c.patient)

overridden(c) if {
	c.effect == "restrict"
	treating(c.patient)
}

reason := {"deny": "consent.opt_out", "restrict": "consent.restricted"}

deny contains reason[c.effect] if {
	some c in input.consents
	c.label == ""
	applies(c)
	not overridden(c)
}

# withheld is the labels the response must not carry, whatever the role,
# the purpose or a label consent would otherwise permit.
withheld contains c.label if {
	some c in input.consents
	c.label != ""
	c.effect in {"deny", "restrict"}
	applies(c)
	not overridden(c)
}

rules contains "consent.label_withheld" if count(withheld) > 0
