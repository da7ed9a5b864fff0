package phigate.purpose_test

import data.phigate.authz
import data.phigate.fixtures_test as fx
import data.phigate.purpose

decide(doc) := d if {
	d := authz.decision with input as doc
}

# Without a stated purpose a physician acts under the role default, TREAT.
test_physician_default_treat if purpose.effective == "TREAT" with input as fx.req(fx.physician, fx.read_patient("pat-0001"))

# The default is reported to the upstream and to the audit trail.
test_default_in_headers_and_audit if {
	d := decide(fx.req(fx.physician, fx.read_patient("pat-0001")))
	d.headers["x-phigate-purpose"] == "TREAT"
	d.audit.purpose == "TREAT"
}

# A stated purpose wins over the default.
test_stated_purpose_wins if purpose.effective == "HOPERAT" with input as fx.with_purpose(fx.req(fx.physician, fx.read_patient("pat-0001")), "HOPERAT")

# Billing acts for payment by default.
test_billing_default if purpose.effective == "HPAYMT" with input as fx.req(fx.billing, fx.read_patient("pat-0001"))

# Billing may not claim treatment: the purpose activates no role.
test_billing_treat_denied if decide(fx.with_purpose(fx.req(fx.billing, fx.read_patient("pat-0001")), "TREAT")).reason == "purpose.not_permitted"

# Research has no default purpose: it must be stated.
test_researcher_requires_purpose if decide(fx.req(fx.researcher, fx.search_all("Observation"))).reason == "purpose.required"

# Research under HRESCH is allowed.
test_researcher_hresch if decide(fx.with_purpose(fx.req(fx.researcher, fx.search_all("Observation")), "HRESCH")).allow

# An unknown purpose code activates no role.
test_unknown_purpose if decide(fx.with_purpose(fx.req(fx.physician, fx.read_patient("pat-0001")), "HMARKT")).reason == "purpose.not_permitted"

# The first role in token order with a default decides it.
test_first_role_default if purpose.effective == "HPAYMT" with input as fx.req(fx.ident("u", ["billing", "physician"], "Practitioner/prac-001"), fx.read_patient("pat-0001"))

# Only roles allowing the purpose are active: a billing+physician user under TREAT is a physician.
test_active_roles_follow_purpose if purpose.active_roles == {"physician"} with input as fx.with_purpose(fx.req(fx.ident("u", ["billing", "physician"], "Practitioner/prac-001"), fx.read_patient("pat-0001")), "TREAT")

# A dual-role user under HPAYMT gets billing's redaction, not the physician's full view.
test_dual_role_billing_redacts if {
	d := decide(fx.req(fx.ident("u", ["billing", "physician"], "Practitioner/prac-001"), fx.read_patient("pat-0001")))
	d.allow
	count(d.redact) > 0
}

# Break glass without a stated purpose is emergency treatment.
test_break_glass_defaults_etreat if purpose.effective == "ETREAT" with input as fx.with_bg(fx.req(fx.physician_mfa, fx.read_patient("pat-0002")), "code blue")

# Patients act under PATRQT.
test_patient_default if purpose.effective == "PATRQT" with input as fx.req(fx.patient, fx.read_patient("pat-0001"))

# A purpose that is not a string is refused as malformed, not replaced by the default.
test_non_string_purpose if decide(fx.with_purpose(fx.req(fx.physician, fx.read_patient("pat-0001")), ["TREAT"])).reason == "request.malformed_purpose"

# The audit records the purpose as a rule too.
test_purpose_rule if "purpose:TREAT" in decide(fx.req(fx.physician, fx.read_patient("pat-0001"))).audit.rules

# An emergency purpose stated without break-glass unlocks nothing: without a
# reason, a second factor, a flag and a notification it would open the
# sensitive labels that only break-glass may open.
test_etreat_without_break_glass_denied if {
	d := decide(fx.with_purpose(fx.req(fx.physician, fx.read_patient("pat-0001")), "ETREAT"))
	not d.allow
	d.reason == "purpose.emergency_requires_break_glass"
	d.enforce.permitted_labels == []
}

# BTG is an emergency purpose too (and no role lists it as an everyday one).
test_btg_without_break_glass_denied if {
	d := decide(fx.with_purpose(fx.req(fx.physician_mfa, fx.read_patient("pat-0001")), "BTG"))
	not d.allow
	d.enforce.permitted_labels == []
}

test_btg_is_emergency if "BTG" in purpose.emergency_purposes

# A token that carries the emergency purpose is held to the same rule.
test_etreat_with_mfa_still_needs_break_glass if {
	d := decide(fx.with_purpose(fx.req(fx.nurse, fx.read_patient("pat-0001")), "ETREAT"))
	d.reason == "purpose.emergency_requires_break_glass"
}

# Inside an activated break-glass the emergency purpose is the effective one,
# and the access is flagged and notified.
test_etreat_inside_break_glass if {
	d := decide(fx.with_purpose(fx.with_bg(fx.req(fx.physician_mfa, fx.read_patient("pat-0002")), "unconscious in ED"), "ETREAT"))
	d.allow
	d.audit.purpose == "ETREAT"
	d.break_glass.active
	count([o | some o in d.obligations; o.type == "notify"]) == 1
}

# A break-glass that does not activate (no second factor) leaves the more
# specific reason in front.
test_etreat_break_glass_without_mfa if {
	d := decide(fx.with_purpose(fx.with_bg(fx.req(fx.physician, fx.read_patient("pat-0002")), "unconscious in ED"), "ETREAT"))
	d.reason == "mfa.required:break_glass"
}
