# The purpose module decides the purpose of use (HL7 v3 PurposeOfUse codes)
# and which of the caller's roles it activates.
#
# data.phigate.purposes maps a role to the purposes it may act under and
# data.phigate.default_purposes to the purpose assumed when the request
# states none. Only the roles that allow the effective purpose are active:
# a physician who is also a researcher reading under HRESCH is a researcher
# for that request, with the researcher's minimum-necessary redaction.
package phigate.purpose

import data.phigate.request.req

# ctx is the module's whole answer, computed in one body:
#   effective    - the purpose the request is evaluated under, "" when none:
#                  the stated one, else the emergency purpose under break
#                  glass, else the default of the first of the caller's roles
#                  (token order) that has one, taking the first keeps the
#                  answer unique;
#   active_roles - the known roles that allow the effective purpose;
#   deny         - purpose.required / purpose.not_permitted;
#   rules        - the audit id naming the purpose that took part.
ctx := {
	"effective": effective,
	"active_roles": active,
	"deny": {r |
		some [bad, r] in [
			[[known, effective] == [true, ""], "purpose.required"],
			[[known, effective != "", count(active)] == [true, true, 0], "purpose.not_permitted"],
		]
		bad
	},
	"rules": {concat(":", ["purpose", effective]) | count(active) > 0},
} if {
	stated := req.purpose
	effective := array.concat(
		array.concat([stated | stated != ""], [p | req.bg_requested; p := data.phigate.emergency.purpose]),
		array.concat([d | some r in req.role_list; d := data.phigate.default_purposes[r]; is_string(d)], [""]),
	)[0]
	active := {r | some r in req.known_roles; effective in data.phigate.purposes[r]}
	known := count(req.known_roles) > 0
}

effective := ctx.effective

# stated is true when the purpose came from the request, not a default.
stated if req.purpose != ""

active_roles := ctx.active_roles

deny := ctx.deny

rules := ctx.rules
