# The minimum_necessary module turns role and purpose into redaction
# directives for the response (data.phigate.redaction[role][purpose],
# with "*" for any purpose): billing loses contact details, nurses see
# tokenized identifiers, research gets de-identified data, the front desk an
# allow-list of Patient elements.
#
# When several roles are active the directives of all of them apply, the
# most restrictive combination: with two hats on, the caller gets what both
# may see, never what either alone may see.
package phigate.minimum_necessary

import data.phigate.purpose

# A directive always carries every field, typed, so the Go side never meets
# an absent key or a wrong type.
shape := {"path": "", "action": "", "key_id": "", "format": "", "keep": [], "profile": ""}

actions := {"remove", "mask", "tokenize", "allow", "deidentify"}

for_role(r) := ds if {
	ds := data.phigate.redaction[r][purpose.effective]
} else := ds if {
	ds := data.phigate.redaction[r]["*"]
} else := []

directives := {object.union(shape, d) |
	some r in purpose.active_roles
	some d in for_role(r)
	is_object(d)
	d.action in actions
}

# A directive the response filter would not understand must not silently
# mean "no redaction": the authz module denies instead.
deny contains "minimum_necessary.invalid_directive" if {
	some r in purpose.active_roles
	some d in for_role(r)
	not valid(d)
}

valid(d) if {
	is_object(d)
	d.action in actions
}

# A sorted array: sets of objects iterate in a fixed order.
redact := [d | some d in directives]

rules contains concat(":", ["minimum_necessary", r, purpose.effective]) if {
	some r in purpose.active_roles
	count(for_role(r)) > 0
}
