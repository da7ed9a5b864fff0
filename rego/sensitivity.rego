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
import data.phigate.request.req

# ctx is the module's answer, computed once when the decision allows:
#   permitted - the labels the response may carry;
#   rules     - audit ids when consent or break glass widened them.
ctx := {
	"permitted": {true: vocabulary, false: by_role | by_consent}[break_glass.ctx.active],
	"rules": {r |
		some [ok, r] in [
			[count(by_consent - by_role) > 0, "sensitivity.consent"],
			[[break_glass.ctx.active, count(vocabulary - by_role) > 0] == [true, true], "sensitivity.break_glass"],
		]
		ok
	},
} if {
	vocabulary := {l | some l in data.phigate.labels}
	active := purpose.ctx.active_roles
	effective := purpose.ctx.effective
	by_role := {l | some r in active; some l in data.phigate.label_permits[r][effective]} & vocabulary

	# Consent counts only when the request names its patients: one list of
	# labels covers the whole response, so it must hold for every patient
	# in it. Most patients have no consent on file: one of them empties the
	# intersection without computing the others'.
	touched := req.touched
	eligible := [
		req.any_all_patients,
		count(touched) > 0,
		count([p | some p in touched; data.phigate.consents[p]]) == count(touched),
	] == [false, true, true]
	by_consent := array.concat([intersection({{l |
		some c in data.phigate.consents[p]
		some r in active
		r in object.get(c, "roles", [])
		some x in object.get(c, "purposes", [])
		x in {effective, "*"}
		some l in c.labels
		l in vocabulary
	} |
		some p in touched
	}) | eligible], [set()])[0]
}

# consented(p) is the set of labels patient p released to one of the
# caller's active roles for the effective purpose ("*" matches any).
consented(p) := {l |
	some c in data.phigate.consents[p]
	some r in purpose.active_roles
	r in object.get(c, "roles", [])
	some x in object.get(c, "purposes", [])
	x in {purpose.effective, "*"}
	some l in c.labels
	l in {v | some v in data.phigate.labels}
}

permitted := ctx.permitted

rules := ctx.rules
