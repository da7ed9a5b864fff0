# The authz module is the entry point: data.phigate.authz.decision is the
# decision document phigate decodes into authz.Decision.
#
# Every module contributes deny reasons; the decision allows only when none
# has one, and otherwise reports the reason that comes first in a fixed
# precedence: identity (401), then ambiguous requests (400), then the 403
# reasons in the order of the precedence table below. Batch and transaction
# entries are each authorized on their own; one denied entry denies the
# whole request and the reason names its index.
package phigate.authz

import data.phigate.break_glass
import data.phigate.mfa
import data.phigate.minimum_necessary
import data.phigate.purpose
import data.phigate.rbac
import data.phigate.relationship
import data.phigate.request
import data.phigate.request.req
import data.phigate.sensitivity
import data.phigate.smart_scopes
import data.phigate.time as timing

# precedence orders deny reasons; lower wins. Reasons not listed sort last
# (but still deny).
precedence := {
	"request.malformed": 100,
	"request.unknown_interaction": 101,
	"request.malformed_patients": 102,
	"request.malformed_compartment": 109,
	"request.malformed_purpose": 110,
	"request.missing_resource_type": 103,
	"request.missing_id": 104,
	"request.missing_operation": 105,
	"request.missing_kind": 106,
	"request.empty_bundle": 107,
	"request.nested_bundle": 108,
	"break_glass.patient_ambiguous": 120,
	"time.request_time_missing": 200,
	"time.account_invalid": 201,
	"time.account_not_yet_valid": 202,
	"time.account_expired": 203,
	"rbac.no_role": 210,
	"purpose.required": 220,
	"purpose.not_permitted": 221,
	"rbac.not_permitted": 230,
	"smart_scopes.not_permitted": 240,
	"mfa.required:break_glass": 250,
	"mfa.required:export": 251,
	"break_glass.reason_required": 260,
	"break_glass.role_not_eligible": 261,
	"time.outside_shift": 270,
	"relationship.not_on_care_team": 280,
	"relationship.not_delegated": 281,
	"relationship.not_self": 282,
	"relationship.service_not_permitted": 283,
	"relationship.no_patient_access": 284,
	"minimum_necessary.invalid_directive": 290,
}

# Request-level reasons (not tied to one entry).
request_denies := ((((((rbac.deny | purpose.ctx.deny) | timing.ctx.deny) | mfa.deny) | break_glass.ctx.deny) | break_glass.ctx.bad_request) | minimum_necessary.ctx.deny) | {r |
	some [bad, r] in [
		[req.fhir.malformed != "", req.fhir.malformed],
		[req.malformed_purpose, "request.malformed_purpose"],
		[[req.is_bundle, req.fhir.malformed, count(req.targets)] == [true, "", 0], "request.empty_bundle"],
	]
	bad
}

# Candidates are [precedence, entry index, reason]: the least puts the
# winning reason first; among entries the lowest index wins. Index -1 is the
# request itself. A target (the request, or each bundle entry) is refused
# for its own shape first, then for being a nested bundle, and only then
# for what the modules find; the modules answer for every target in one
# rule each.
candidates := {[object.get(precedence, r, 999), -1, r] | some r in request_denies} | {[object.get(precedence, r, 999), idx, r] |
	req.fhir.malformed == ""
	bundle := req.is_bundle
	uncovered := relationship.ctx.uncovered
	rel_reason := relationship.ctx.deny_reason
	smart_denied := smart_scopes.deny
	some i, f in req.targets
	idx := {true: i, false: -1}[bundle]
	module_denies := (({"rbac.not_permitted" | count(rbac.grants[i]) == 0} | {"smart_scopes.not_permitted" | i in smart_denied}) | {r | some r in mfa.target_deny[i]}) | {rel_reason | count(f.patients & uncovered) > 0}
	denies := {true: {f.malformed}, false: {true: {"request.nested_bundle"}, false: module_denies}[f.interaction in request.bundle_interactions]}[f.malformed != ""]
	some r in denies
}

# verdict is allow, status and reason in one body. Requests anyone may make,
# signed in or not (the capability statement a SMART client reads before it
# can log in), touch no patient data and are allowed; without a verified
# identity the answer is 401 whatever else is wrong; otherwise the first
# candidate decides (400 for an ambiguous request, 403 for the rest).
verdict := {"public": pub, "allow": allow, "status": status, "reason": reason} if {
	pub := [1 |
		not req.is_bundle
		req.fhir.malformed == ""
		req.fhir.interaction in data.phigate.public_interactions
		count(req.fhir.patients) == 0
	] != []
	auth := req.authenticated
	first := [c | not pub; auth; count(candidates) > 0; c := min(candidates)]
	allow := true in [pub, [auth, first] == [true, []]]
	denied_status := array.concat([st |
		some c in first
		st := {true: 400, false: 403}[[startswith(c[2], "request."), c[2] == "break_glass.patient_ambiguous"] != [false, false]]
	], [403])[0]
	status := {true: 200, false: {true: denied_status, false: 401}[auth]}[allow]
	denied_reason := array.concat(
		[r | some c in first; r := {true: c[2], false: concat("", ["entry[", format_int(c[1], 10), "].", c[2]])}[c[1] == -1]],
		["policy.default"],
	)[0]
	reason := array.concat([r |
		some [ok, r] in [
			[pub, "public.capabilities"],
			[allow, "allow"],
			[auth == false, concat(".", ["identity", req.identity_error])],
		]
		ok
	], [denied_reason])[0]
}

public := verdict.public

allow := verdict.allow

status := verdict.status

reason := verdict.reason

# ---- the decision document -------------------------------------------------

# Upstream headers phigate owns: a client must never be able to supply one
# the policy did not set, so those not set are removed.
owned_headers := ["x-phigate-user", "x-phigate-purpose", "x-phigate-roles", "x-phigate-break-glass"]

# The parts of the decision only an allow fills in.
default granted := {
	"headers": {}, "response_headers": {}, "redact": [],
	"remove_headers": ["x-phigate-user", "x-phigate-purpose", "x-phigate-roles", "x-phigate-break-glass"],
	"enforce": {"patients": [], "any_patient": false, "permitted_labels": []},
	"break_glass": {"active": false, "reason": "", "expires": ""}, "obligations": [],
}

granted := {
	"headers": {k: v | some k, v in all_headers; v != ""},
	"remove_headers": [h | some h in owned_headers; all_headers[h] == ""],
	# Responses carrying PHI must not be stored by shared caches.
	"response_headers": {true: {}, false: {"cache-control": "no-store"}}[pub],
	"redact": array.concat([r | not pub; r := minimum_necessary.ctx.redact], [[]])[0],
	"enforce": array.concat([e | not pub; e := enforce], [{"patients": [], "any_patient": false, "permitted_labels": []}])[0],
	"break_glass": {true: {"active": true, "reason": break_glass.reason, "expires": break_glass.expires}, false: {"active": false, "reason": "", "expires": ""}}[bg_active],
	"obligations": [o | some o in break_glass.obligations],
} if {
	verdict.allow
	pub := verdict.public
	bg_active := break_glass.ctx.active
	all_headers := {
		"x-phigate-user": req.subject,
		"x-phigate-purpose": purpose.ctx.effective,
		"x-phigate-roles": concat(",", sort(purpose.ctx.active_roles)),
		"x-phigate-break-glass": {true: "true", false: ""}[bg_active],
	}
}

# The patients a response may carry. Named patients narrow it to exactly
# those (each already checked); otherwise it is every patient the caller is
# related to, so a search over all patients returns only the caller's own.
# A patient-context SMART scope narrows further, to the launch patient.
enforce := {
	"patients": sort({true: {p | some p in patients; p == req.launch_patient}, false: patients}[narrowed]),
	"any_patient": [relationship.reach.any_patient, narrowed] == [true, false],
	"permitted_labels": sort(sensitivity.ctx.permitted),
} if {
	named := [count(req.touched) > 0, req.any_all_patients] == [true, false]
	patients := array.concat([req.touched | named], [m | not named; m := relationship.mine])[0]
	narrowed := [1 | smart_scopes.narrowed] != []
}

# The rules that decided: on allow every grant that took part, on deny the
# winning reason.
audit_rules := ["public.capabilities"] if verdict.public

else := sort(((((((({r | some g in rbac.grants; some r in g} | relationship.rules) | purpose.ctx.rules) | break_glass.rules) | smart_scopes.rules) | timing.ctx.rules) | sensitivity.ctx.rules) | minimum_necessary.ctx.rules)) if verdict.allow

else := [concat(":", ["deny", verdict.reason])]

decision := {
	"allow": v.allow,
	"status": v.status,
	"reason": v.reason,
	"headers": g.headers,
	"remove_headers": g.remove_headers,
	"response_headers": g.response_headers,
	"redact": g.redact,
	"enforce": g.enforce,
	"break_glass": g.break_glass,
	"obligations": g.obligations,
	"audit": {
		"patients": sort(req.touched),
		"purpose": purpose.ctx.effective,
		"rules": audit_rules,
	},
} if {
	v := verdict
	g := granted
}
