# The sensitivity module computes which sensitivity labels (meta.security
# codes from data.phigate.labels: PSY, ETH, SUD under 42 CFR
# Part 2, HIV, SDV, STD, SEX) the caller may receive. The response filter
# withholds any resource carrying a label outside enforce.permitted_labels.
#
# A label is permitted by the role and purpose
# (data.phigate.label_permits[role][purpose]), or by the consent of
# every patient the request names (data.phigate.consents[patient]: labels
# released to given roles and purposes). Break glass permits every label;
# the access is flagged by the break_glass module.
package phigate.sensitivity

import data.phigate.break_glass
import data.phigate.purpose
import data.phigate.request

vocabulary := {l | some l in data.phigate.labels}

by_role := {l |
	some r in purpose.active_roles
	some l in data.phigate.label_permits[r][purpose.effective]
} & vocabulary

# consented(p) is the set of labels patient p released to one of the
# caller's active roles for the effective purpose ("*" matches any).
consented(p) := {l |
	some c in data.phigate.consents[p]
	some r in purpose.active_roles
	r in object.get(c, "roles", [])
	pm := object.get(c, "purposes", [])
	some x in pm
	x in {purpose.effective, "*"}
	some l in c.labels
	l in vocabulary
}

# Consent counts only when the request names its patients: one list of
# labels covers the whole response, so it must hold for every patient in it.
# Most patients have no consent on file: one of them empties the
# intersection without computing the others'.
default by_consent := set()

by_consent := intersection({consented(p) | some p in request.touched}) if {
	not request.any_all_patients
	count(request.touched) > 0
	every p in request.touched {
		data.phigate.consents[p]
	}
}

permitted := vocabulary if break_glass.active

else := by_role | by_consent

rules contains "sensitivity.consent" if count(by_consent - by_role) > 0

rules contains "sensitivity.break_glass" if {
	break_glass.active
	count(vocabulary - by_role) > 0
}
