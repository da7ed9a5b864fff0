# The purpose module decides the purpose of use (HL7 v3 PurposeOfUse codes)
# and which of the caller's roles it activates.
#
# data.phigate.purposes maps a role to the purposes it may act under and
# data.phigate.default_purposes to the purpose assumed when the request
# states none. Only the roles that allow the effective purpose are active:
# a physician who is also a researcher reading under HRESCH is a researcher
# for that request, with the researcher's minimum-necessary redaction.
package phigate.purpose

import data.phigate.break_glass
import data.phigate.request

# The first of the caller's roles (token order) with a default purpose
# decides the default; taking the first keeps the answer unique.
defaults := [d |
	some r in request.role_list
	d := data.phigate.default_purposes[r]
	is_string(d)
]

# effective is the purpose the request is evaluated under, "" when none.
effective := request.purpose if request.purpose != ""

else := data.phigate.emergency.purpose if request.bg_requested

else := defaults[0] if count(defaults) > 0

else := ""

# stated is true when the purpose came from the request, not a default.
stated if request.purpose != ""

active_roles := {r |
	some r in request.known_roles
	effective in data.phigate.purposes[r]
}

deny contains "purpose.required" if {
	count(request.known_roles) > 0
	effective == ""
}

deny contains "purpose.not_permitted" if {
	count(request.known_roles) > 0
	effective != ""
	count(active_roles) == 0
}

# Emergency purposes (data.phigate.emergency.purposes, ETREAT and BTG)
# unlock what break-glass unlocks. Stated in a header or a token outside an
# activated break-glass they would open sensitive labels with no reason, no
# second factor, no flag and no notification, so they count only inside one.
emergency_purposes := {p | some p in object.get(data.phigate.emergency, "purposes", [])} | {data.phigate.emergency.purpose}

deny contains "purpose.emergency_requires_break_glass" if {
	effective in emergency_purposes
	not break_glass.active
}

rules contains concat(":", ["purpose", effective]) if count(active_roles) > 0
