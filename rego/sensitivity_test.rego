package phigate.sensitivity_test

import data.phigate.authz
import data.phigate.fixtures_test as fx
import data.phigate.sensitivity

labels(doc) := l if {
	l := authz.decision.enforce.permitted_labels with input as doc
}

# A treating physician sees HIV, SDV, SEX and STD labels by role and purpose.
test_physician_treat if labels(fx.req(fx.physician, fx.read_patient("pat-0061"))) == ["HIV", "SDV", "SEX", "STD"]

# pat-0001 consented to release ETH and SUD (Part 2) to treating physicians.
test_consent_adds_part2 if labels(fx.req(fx.physician, fx.read_patient("pat-0001"))) == ["ETH", "HIV", "SDV", "SEX", "STD", "SUD"]

# Consent is per patient: asking about pat-0001 and pat-0061 together keeps only what both allow.
test_consent_intersection if labels(fx.req(fx.physician, fx.search("Observation", ["pat-0001", "pat-0061"]))) == ["HIV", "SDV", "SEX", "STD"]

# Consent is for a purpose: under HOPERAT the consent does not apply.
test_consent_purpose if not "SUD" in labels(fx.with_purpose(fx.req(fx.physician, fx.read_patient("pat-0001")), "HOPERAT"))

# Consent is for a role: a nurse of pat-0001 would not get SUD from a physician-only consent.
test_consent_role if not "SUD" in sensitivity.consented("pat-0001") with input as fx.req(fx.ident("n", ["nurse"], "Practitioner/prac-001"), fx.read_patient("pat-0001"))

# Nurses see HIV and STD labels only.
test_nurse_treat if labels(fx.req(fx.nurse, fx.read_patient("pat-0002"))) == ["HIV", "STD"]

# Billing sees no sensitive labels.
test_billing_none if labels(fx.req(fx.billing, fx.read_patient("pat-0002"))) == []

# A patient sees all of their own labels.
test_patient_all if count(labels(fx.req(fx.patient, fx.read_patient("pat-0001")))) == 7

# pat-0010 released PSY to the family member holding the delegation.
test_related_psy if labels(fx.req(fx.related, fx.read_patient("pat-0010"))) == ["PSY"]

# A search over all patients cannot use consent: it names no patient.
test_all_patients_no_consent if labels(fx.req(fx.physician, fx.search_all("Observation"))) == ["HIV", "SDV", "SEX", "STD"]

# Break glass permits every label.
test_break_glass_all if count(labels(fx.with_bg(fx.req(fx.physician_mfa, fx.read_patient("pat-0002")), "code blue"))) == 7

# Consented labels are recorded as a reason in the audit.
test_consent_rule if "sensitivity.consent" in authz.decision.audit.rules with input as fx.req(fx.physician, fx.read_patient("pat-0001"))

# Labels outside the vocabulary in the data are never permitted.
test_vocabulary_only if labels(fx.req(fx.physician, fx.read_patient("pat-0061"))) == ["HIV"] with data.phigate.label_permits.physician.TREAT as ["HIV", "XYZ"]

# A denial permits no label at all.
test_denied_none if labels(fx.req(fx.physician, fx.read_patient("pat-0002"))) == []

# Two patients with consents on file: only the labels both released count.
test_consent_two_patients_intersect if {
	l := labels(fx.req(fx.physician, fx.search("Observation", ["pat-0001", "pat-0061"])))
		with data.phigate.consents as {
			"pat-0001": [{"labels": ["ETH", "SUD"], "roles": ["physician"], "purposes": ["TREAT"]}],
			"pat-0061": [{"labels": ["SUD", "PSY"], "roles": ["physician"], "purposes": ["*"]}],
		}
	l == ["HIV", "SDV", "SEX", "STD", "SUD"]
}
