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
import data.phigate.request

eligible if {
	some r in purpose.active_roles
	r in data.phigate.emergency.eligible_roles
}

requested if request.bg_requested

# The request's single patient; break glass is scoped to exactly one.
single_patient := p if {
	count(request.touched) == 1
	not request.any_all_patients
	some p in request.touched
}

deny contains "break_glass.reason_required" if {
	requested
	request.bg_reason == ""
}

deny contains "break_glass.role_not_eligible" if {
	requested
	not eligible
}

# Ambiguous, not forbidden: the caller must name the one patient.
bad_request contains "break_glass.patient_ambiguous" if {
	requested
	not single_patient
}

# activated: a new break-glass access that passed every check (MFA is the
# mfa module's check, repeated here so a missing factor never activates).
activated if {
	requested
	count(deny) == 0
	count(bad_request) == 0
	request.mfa
	single_patient
}

# Grants still valid at the request time, for eligible callers only.
valid_grants := [g |
	eligible
	request.time_valid
	some g in request.grants
	g.expires_ns > request.time_ns
]

covers(p) if {
	activated
	p == single_patient
}

covers(p) if {
	some g in valid_grants
	g.patient == p
}

# used_grants are grants that actually open a patient the caller is not
# otherwise related to; a grant that changes nothing is not flagged.
used_grants := [g |
	some g in valid_grants
	g.patient in request.touched
	not related_(g.patient)
]

related_(p) if data.phigate.relationship.related(p)

active if activated

active if count(used_grants) > 0

default duration_ns := 0

duration_ns := time.parse_duration_ns(data.phigate.emergency.duration)

default reason := ""

reason := request.bg_reason if activated

else := used_grants[0].reason if {
	count(used_grants) > 0
	is_string(used_grants[0].reason)
}

default expires := ""

# RFC 3339 in UTC; for grants the earliest expiry among those used.
expires := time.format([request.time_ns + duration_ns, "UTC", "2006-01-02T15:04:05Z07:00"]) if activated

else := time.format([min([g.expires_ns | some g in used_grants]), "UTC", "2006-01-02T15:04:05Z07:00"]) if count(used_grants) > 0

obligations contains {"type": "notify", "params": {"to": data.phigate.emergency.notify}} if active

rules contains "break_glass.used" if active
