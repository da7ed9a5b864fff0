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

# by_role maps each active role to its directives for the effective purpose
# (its "*" directives when it has none for that purpose).
by_role := {r: ds |
	effective := purpose.ctx.effective
	some r in purpose.ctx.active_roles
	ds := array.concat(
		array.concat(
			[d | d := data.phigate.redaction[r][effective]],
			[d | d := data.phigate.redaction[r]["*"]],
		),
		[[]],
	)[0]
}

for_role(r) := by_role[r]

# ctx is the module's answer:
#   deny   - a directive the response filter would not understand must not
#            silently mean "no redaction": the authz module denies instead;
#   redact - the directives, a sorted array (sets of objects iterate in a
#            fixed order);
#   rules  - audit ids naming role and purpose of each set applied.
ctx := {
	"deny": {"minimum_necessary.invalid_directive" |
		some ds in by_role
		some d in ds
		o := {true: d, false: {}}[is_object(d)]
		[is_object(d), object.get(o, "action", null) in actions] != [true, true]
	},
	"redact": [d | some d in {object.union(shape, d) |
		some ds in by_role
		some d in ds
		is_object(d)
		d.action in actions
	}],
	"rules": {concat(":", ["minimum_necessary", r, purpose.ctx.effective]) |
		some r, ds in by_role
		count(ds) > 0
	},
}

deny := ctx.deny

redact := ctx.redact

rules := ctx.rules
