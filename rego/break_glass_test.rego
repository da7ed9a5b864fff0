package phigate.break_glass_test

import data.phigate.authz
import data.phigate.break_glass
import data.phigate.fixtures_test as fx

decide(doc) := d if {
	d := authz.decision with input as doc
}

emergency := fx.with_bg(fx.req(fx.physician_mfa, fx.read_patient("pat-0002")), "unconscious in ED")

# A physician with MFA and a reason reaches a patient outside the care team.
test_break_glass_allows if decide(emergency).allow

# The access is flagged for the upstream and the audit trail.
test_break_glass_flagged if {
	d := decide(emergency)
	d.break_glass.active
	d.headers["x-phigate-break-glass"] == "true"
	"break_glass.used" in d.audit.rules
}

# The privacy office is notified.
test_break_glass_notifies if {"type": "notify", "params": {"to": "privacy-office"}} in decide(emergency).obligations

# The grant lasts data.phigate.emergency.duration (1h) from the request time: 15:00Z + 1h.
test_break_glass_expiry if decide(emergency).break_glass.expires == "2025-03-12T16:00:00Z"

# The stated reason is carried into the decision for the audit record.
test_break_glass_reason if decide(emergency).break_glass.reason == "unconscious in ED"

# Break glass is scoped to the request's patient: enforcement names only it.
test_break_glass_scope if decide(emergency).enforce.patients == ["pat-0002"]

# Break glass lifts label restrictions (flagged), so the emergency team sees everything.
test_break_glass_all_labels if count(decide(emergency).enforce.permitted_labels) == 7

# A blank reason is no reason.
test_reason_required if decide(fx.with_bg(fx.req(fx.physician_mfa, fx.read_patient("pat-0002")), "   ")).reason == "break_glass.reason_required"

# Without MFA break glass is refused.
test_mfa_required if decide(fx.with_bg(fx.req(fx.physician, fx.read_patient("pat-0002")), "code blue")).reason == "mfa.required:break_glass"

# Billing cannot break the glass: ETREAT is not one of billing's purposes.
test_billing_not_eligible if decide(fx.with_bg(fx.req(object.union(fx.billing, {"mfa": true}), fx.read_patient("pat-0002")), "x")).reason == "purpose.not_permitted"

# A researcher stating HRESCH is active but not an eligible role.
test_researcher_not_eligible if decide(fx.with_purpose(fx.with_bg(fx.req(object.union(fx.researcher, {"mfa": true}), fx.read_patient("pat-0002")), "x"), "HRESCH")).reason == "break_glass.role_not_eligible"

# Break glass over two patients is ambiguous: it is granted for one.
test_two_patients_ambiguous if {
	d := decide(fx.with_bg(fx.req(fx.physician_mfa, fx.search("Observation", ["pat-0002", "pat-0003"])), "x"))
	d.status == 400
	d.reason == "break_glass.patient_ambiguous"
}

# Break glass over all patients is ambiguous too.
test_all_patients_ambiguous if decide(fx.with_bg(fx.req(fx.physician_mfa, fx.search_all("Observation")), "x")).status == 400

# Break glass never widens the role: a nurse still has no $everything.
test_break_glass_keeps_rbac if decide(fx.with_bg(fx.req(object.union(fx.nurse, {"mfa": true}), fx.op("Patient", "pat-0005", "everything", ["pat-0005"])), "x")).reason == "rbac.not_permitted"

# An unexpired grant opens its patient without a new declaration.
test_grant_honoured if decide(fx.with_grant(fx.req(fx.physician, fx.read_patient("pat-0002")), "pat-0002", fx.wed_11_ny + fx.hour)).allow

# A grant in use is flagged like a new break glass.
test_grant_flagged if decide(fx.with_grant(fx.req(fx.physician, fx.read_patient("pat-0002")), "pat-0002", fx.wed_11_ny + fx.hour)).break_glass.active

# The grant's own expiry is reported.
test_grant_expiry if decide(fx.with_grant(fx.req(fx.physician, fx.read_patient("pat-0002")), "pat-0002", fx.wed_11_ny + fx.hour)).break_glass.expires == "2025-03-12T16:00:00Z"

# An expired grant opens nothing.
test_grant_expired if decide(fx.with_grant(fx.req(fx.physician, fx.read_patient("pat-0002")), "pat-0002", fx.wed_11_ny)).reason == "relationship.not_on_care_team"

# A grant covers only its own patient.
test_grant_other_patient if decide(fx.with_grant(fx.req(fx.physician, fx.read_patient("pat-0003")), "pat-0002", fx.wed_11_ny + fx.hour)).reason == "relationship.not_on_care_team"

# A grant held by a caller whose role lost eligibility is ignored.
test_grant_needs_eligible_role if decide(fx.with_grant(fx.req(fx.billing, fx.read("Observation", "o1", ["pat-0002"])), "pat-0002", fx.wed_11_ny + fx.hour)).reason == "rbac.not_permitted"

# A grant that changes nothing (own patient) is not flagged.
test_unused_grant_not_flagged if not decide(fx.with_grant(fx.req(fx.physician, fx.read_patient("pat-0001")), "pat-0001", fx.wed_11_ny + fx.hour)).break_glass.active

# A denied break glass reports no active grant and no obligation.
test_denied_not_active if {
	d := decide(fx.with_bg(fx.req(fx.physician, fx.read_patient("pat-0002")), "x"))
	not d.break_glass.active
	d.obligations == []
}

# Activation needs every check to pass: without MFA nothing is activated.
test_not_activated_without_mfa if not break_glass.activated with input as fx.with_bg(fx.req(fx.physician, fx.read_patient("pat-0002")), "x")

# A break-glass decision carries an expiry computed from the request time,
# so it is never reused.
test_bg_request_not_cached if {
	d := decide(emergency)
	d.allow
	d.cache.until_ns == 0
}

# A held grant expires on its own clock: a decision made while it is held
# lasts no longer than the grant (here 20 s, inside the minute)...
test_bg_grant_bounds_cache if {
	d := decide(fx.with_grant(fx.req(fx.physician, fx.read_patient("pat-0002")), "pat-0002", fx.wed_11_ny + 20000000000))
	d.allow
	d.cache.until_ns == fx.wed_11_ny + 20000000000
}

# ...and one expiring after the time module's horizon (a day for a
# physician) leaves that horizon as the bound.
test_bg_grant_later_expiry if decide(fx.with_grant(fx.req(fx.physician, fx.read_patient("pat-0002")), "pat-0002", fx.wed_11_ny + 90000000000000)).cache.until_ns == fx.wed_11_ny + 86400000000000
