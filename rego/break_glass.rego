# The break_glass module handles emergency access ("break the glass").
#
# A caller in an eligible role (data.phigate.emergency.eligible_roles) who
# states a reason and has authenticated with multiple factors gets access to
# the one patient of the request for data.phigate.emergency.duration.
# Grants issued earlier (input.break_glass.grants, looked up by phigate before
# the policy runs) are honoured until they expire, only for their patient.
# Every access made through break glass is flagged: break_glass.active, the
# audit rule "break_glass.used" and a notify obligation to the privacy office.
package phigate.break_glass

import data.phigate.purpose
import data.phigate.relationship
import data.phigate.request.req

# The module's whole answer when break glass is neither requested nor backed
# by a grant: the common case costs one rule.
default ctx := {
	"requested": false, "deny": set(), "bad_request": set(), "activated": false,
	"covered": set(), "used_grants": [], "active": false,
}

# ctx:
#   deny, bad_request - why a request for break glass is refused (an
#                       ambiguous patient is a 400, not a 403);
#   activated         - a new break-glass access that passed every check
#                       (MFA is the mfa module's check, repeated here so a
#                       missing factor never activates);
#   covered           - the patients break glass opens: the one patient of
#                       an activated request and those of grants still valid
#                       at the request time (for eligible callers only);
#   used_grants       - grants that actually open a patient the caller is not
#                       otherwise related to; a grant that changes nothing
#                       is not flagged.
ctx := {
	"requested": requested,
	"deny": deny,
	"bad_request": bad_request,
	"activated": activated,
	"covered": {p | activated; p := single[0]} | {g.patient | some g in valid_grants},
	"used_grants": used,
	"active": true in [activated, count(used) > 0],
} if {
	requested := req.bg_requested
	[requested, count(req.grants) > 0] != [false, false]
	eligible := count({r | some r in purpose.ctx.active_roles; r in data.phigate.emergency.eligible_roles}) > 0

	# The request's single patient; break glass is scoped to exactly one.
	single := [p | count(req.touched) == 1; not req.any_all_patients; some p in req.touched]
	deny := {r |
		some [bad, r] in [
			[[requested, req.bg_reason] == [true, ""], "break_glass.reason_required"],
			[[requested, eligible] == [true, false], "break_glass.role_not_eligible"],
		]
		bad
	}
	bad_request := {"break_glass.patient_ambiguous" | requested; count(single) == 0}
	activated := [requested, count(deny), count(bad_request), req.mfa, count(single)] == [true, 0, 0, true, 1]
	valid_grants := [g |
		eligible
		req.time_valid
		some g in req.grants
		g.expires_ns > req.time_ns
	]
	used := [g |
		some g in valid_grants
		g.patient in req.touched
		not relationship.related(g.patient)
	]
}

requested := ctx.requested

deny := ctx.deny

bad_request := ctx.bad_request

activated if ctx.activated

active if ctx.active

covers(p) if p in ctx.covered

default duration_ns := 0

duration_ns := time.parse_duration_ns(data.phigate.emergency.duration)

default reason := ""

reason := req.bg_reason if activated

else := ctx.used_grants[0].reason if {
	count(ctx.used_grants) > 0
	is_string(ctx.used_grants[0].reason)
}

default expires := ""

# RFC 3339 in UTC; for grants the earliest expiry among those used.
expires := time.format([req.time_ns + duration_ns, "UTC", "2006-01-02T15:04:05Z07:00"]) if activated

else := time.format([min([g.expires_ns | some g in ctx.used_grants]), "UTC", "2006-01-02T15:04:05Z07:00"]) if count(ctx.used_grants) > 0

obligations contains {"type": "notify", "params": {"to": data.phigate.emergency.notify}} if active

rules contains "break_glass.used" if active
