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

import data.phigate.abuse
import data.phigate.approval
import data.phigate.break_glass
import data.phigate.consent
import data.phigate.mfa
import data.phigate.minimum_necessary
import data.phigate.purpose
import data.phigate.rbac
import data.phigate.relationship
import data.phigate.request
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
	"abuse.alert_open": 205,
	"rbac.no_role": 210,
	"purpose.required": 220,
	"purpose.not_permitted": 221,
	"rbac.not_permitted": 230,
	"rbac.include_not_permitted": 231,
	"smart_scopes.not_permitted": 240,
	"smart_scopes.include_not_permitted": 241,
	"mfa.required:break_glass": 250,
	"mfa.required:export": 251,
	"break_glass.reason_required": 260,
	"break_glass.role_not_eligible": 261,
	"purpose.emergency_requires_break_glass": 262,
	"time.outside_shift": 270,
	"relationship.not_on_care_team": 280,
	"relationship.not_delegated": 281,
	"relationship.not_self": 282,
	"relationship.service_not_permitted": 283,
	"relationship.no_patient_access": 284,
	"consent.opt_out": 285,
	"consent.restricted": 286,
	"minimum_necessary.invalid_directive": 290,
	# Last of the library's reasons: a request is refused for want of an
	# approval (and phigate asks for one) only when nothing else refuses it.
	"approval.unknown_stage": 295,
	"approval.mfa_required": 296,
	"approval.method_not_supported": 297,
	"approval.required": 298,
	"approval.not_approved": 299,
}

status_of(reason) := 400 if {
	startswith(reason, "request.")
} else := 400 if {
	reason == "break_glass.patient_ambiguous"
} else := 403

# Requests anyone may make, signed in or not (the capability statement a
# SMART client reads before it can log in). They touch no patient data.
public if {
	not request.is_bundle
	request.fhir.malformed == ""
	request.fhir.interaction in data.phigate.public_interactions
	count(request.fhir.patients) == 0
}

# Request-level reasons (not tied to one entry), one union of the modules'
# complete sets rather than a rule per module copying elements one by one.
request_denies := ((((((((((rbac.deny | purpose.deny) | timing.deny) | mfa.deny) | break_glass.deny) | break_glass.bad_request) | minimum_necessary.deny) | consent.deny) | abuse.deny) | approval.deny) | own_denies) | ext_denies

# A site's own rules: every package under data.phigate.ext that defines a
# deny set contributes its reasons without an edit to this module, so a
# rule cannot be written and then silently left out of the decision. Name
# reasons "ext.<package>.<why>" so the trail says whose rule decided;
# reasons absent from the precedence table sort after the library's own
# and deny with 403. A deny that is not a set of strings denies all the
# same, as "ext.malformed_deny".
ext_denies contains r if {
	some name
	d := data.phigate.ext[name].deny
	is_set(d)
	some r in d
	is_string(r)
}

ext_denies contains "ext.malformed_deny" if {
	some name
	d := data.phigate.ext[name].deny
	not is_set(d)
}

ext_denies contains "ext.malformed_deny" if {
	some name
	some r in data.phigate.ext[name].deny
	not is_string(r)
}

own_denies contains request.fhir.malformed if request.fhir.malformed != ""

own_denies contains "request.malformed_purpose" if request.malformed_purpose

own_denies contains "request.empty_bundle" if {
	request.is_bundle
	request.fhir.malformed == ""
	count(request.targets) == 0
}

# target_denies(f) is every reason one request or entry is refused.
target_denies(f) := {f.malformed} if {
	f.malformed != ""
} else := {"request.nested_bundle"} if {
	f.interaction in request.bundle_interactions
} else := ((rbac.deny_target(f) | smart_scopes.deny_target(f)) | mfa.deny_target(f)) | relationship.deny_target(f)

# Candidates are [precedence, entry index, reason]: sorting them puts the
# winning reason first; among entries the lowest index wins. Index -1 is the
# request itself.
candidates contains [object.get(precedence, r, 999), -1, r] if some r in request_denies

candidates contains [object.get(precedence, r, 999), -1, r] if {
	not request.is_bundle
	request.fhir.malformed == ""
	some r in target_denies(request.fhir)
}

candidates contains [object.get(precedence, r, 999), i, r] if {
	request.is_bundle
	request.fhir.malformed == ""
	some i, f in request.targets
	some r in target_denies(f)
}

# The first reason in precedence order, or "" when nothing denies.
default deny_reason := ""

deny_reason := reason if {
	not public
	not request.authenticated
	reason := concat(".", ["identity", request.identity_error])
} else := reason if {
	not public
	first := sort(candidates)[0]
	reason := entry_reason(first[1], first[2])
}

entry_reason(-1, r) := r

entry_reason(i, r) := concat("", ["entry[", format_int(i, 10), "].", r]) if i >= 0

default status := 403

status := 200 if {
	allow
} else := 401 if {
	not request.authenticated
} else := s if {
	first := sort(candidates)[0]
	s := status_of(first[2])
}

default allow := false

allow if public

allow if {
	request.authenticated
	deny_reason == ""
}

# ---- the decision document -------------------------------------------------

# Upstream headers phigate owns: a client must never be able to supply one
# the policy did not set, so those not set are removed.
owned_headers := ["x-phigate-user", "x-phigate-purpose", "x-phigate-roles", "x-phigate-break-glass"]

default headers := {}

headers := {k: v | some k, v in all_headers; v != ""} if allow

all_headers := {
	"x-phigate-user": request.subject,
	"x-phigate-purpose": purpose.effective,
	"x-phigate-roles": concat(",", sort(purpose.active_roles)),
	"x-phigate-break-glass": break_glass_header,
}

default break_glass_header := ""

break_glass_header := "true" if break_glass.active

remove_headers := [h | some h in owned_headers; all_headers[h] == ""] if {
	allow
} else := owned_headers

# Responses carrying PHI must not be stored by shared caches.
default response_headers := {}

response_headers := {"cache-control": "no-store"} if {
	allow
	not public
}

default redact := []

redact := minimum_necessary.redact if {
	allow
	not public
	not approval.released
}

# The patients a response may carry. Named patients narrow it to exactly
# those (each already checked); otherwise it is every patient the caller is
# related to, so a search over all patients returns only the caller's own.
# A patient-context SMART scope narrows further, to the launch patient.
enforce_patients := request.touched if {
	count(request.touched) > 0
	not request.any_all_patients
} else := relationship.mine

narrowed_patients := {p | some p in enforce_patients; p == request.launch_patient} if {
	smart_scopes.narrowed
} else := enforce_patients

# The resource types a response may carry: what both the roles and the
# scopes let the caller read, plus the Bundle that wraps a search and the
# OperationOutcome that explains an error. "*" alone means any type.
response_types := ["*"] if {
	"*" in rbac.readable
	"*" in smart_scopes.readable
} else := sort(rbac_types | wrappers) if {
	"*" in smart_scopes.readable
} else := sort(scope_types | wrappers) if {
	"*" in rbac.readable
} else := sort(((rbac_types & scope_types) | wrappers))

wrappers := {"Bundle", "OperationOutcome"}

rbac_types := {t | some t in rbac.readable; t != "*"}

scope_types := {t | some t in smart_scopes.readable; t != "*"}

default enforce := {"patients": [], "any_patient": false, "permitted_labels": [], "resource_types": []}

enforce := {
	"patients": sort(narrowed_patients),
	"any_patient": any_patient,
	"permitted_labels": sort(sensitivity.permitted - consent.withheld),
	"resource_types": response_types,
} if {
	allow
	not public
	not approval.released
}

# The status manifest and the output files of an approved export are
# released as the upstream wrote them: a second person approved the
# export whole, and its NDJSON files are not a format the response side
# filters (it would refuse them).
enforce := {} if {
	allow
	approval.released
}

default any_patient := false

any_patient if {
	relationship.any_patient
	not smart_scopes.narrowed
}

default break_glass_doc := {"active": false, "reason": "", "expires": ""}

break_glass_doc := {
	"active": true,
	"reason": break_glass.reason,
	"expires": break_glass.expires,
} if {
	allow
	break_glass.active
}

default obligations := []

obligations := [o | some o in (break_glass.obligations | abuse.obligations)] if allow

# The rules that decided: on allow every grant that took part, on deny the
# winning reason.
allow_rules := (((((((((rbac_rules | relationship.rules) | purpose.rules) | break_glass.rules) | smart_scopes.rules) | timing.rules) | sensitivity.rules) | minimum_necessary.rules) | consent.rules) | abuse.rules) | approval.rules

rbac_rules := rbac.allow_rules(request.fhir) if {
	not request.is_bundle
} else := {r | some f in request.targets; some r in rbac.allow_rules(f)}

audit_rules := ["public.capabilities"] if {
	public
} else := sort(allow_rules) if {
	allow
} else := [concat(":", ["deny", deny_reason])] if {
	deny_reason != ""
} else := ["deny:policy.default"]

reason := "public.capabilities" if {
	public
} else := "allow" if {
	allow
} else := deny_reason if {
	deny_reason != ""
} else := "policy.default"

# ---- reuse -------------------------------------------------------------------

# cache_until_ns tells phigate until when this same decision holds for the
# same request (every input field the policy reads, except the request
# time): a later identical request before that instant may be answered
# without evaluating again. 0 means never reuse. The time module's answer
# holds to the next minute or account bound, a held grant until it
# expires. A break-glass request writes its grant's expiry (derived from
# the request time) into the decision, so it is never reused.
default cache_until_ns := 0

cache_until_ns := min((({timing.stable_until_ns} | grant_expiries_ahead) | approval.expiries_ahead)) if not request.bg_requested

grant_expiries_ahead contains e if {
	some g in request.grants
	e := g.expires_ns
	e > request.time_ns
}

decision := {
	"allow": allow,
	"status": status,
	"reason": reason,
	"headers": headers,
	"remove_headers": remove_headers,
	"response_headers": response_headers,
	"redact": redact,
	"enforce": enforce,
	"break_glass": break_glass_doc,
	"obligations": obligations,
	"audit": {
		"patients": sort(request.touched),
		"purpose": purpose.effective,
		"rules": audit_rules,
	},
	"cache": {"until_ns": cache_until_ns},
}
