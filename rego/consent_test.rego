package phigate.consent_test

import data.phigate.authz
import data.phigate.fixtures_test as fx

decide(doc) := d if {
	d := authz.decision with input as doc
}

with_consents(doc, cs) := object.union(doc, {"consents": cs})

directive(patient, effect, purpose, label) := {"patient": patient, "effect": effect, "purpose": purpose, "label": label}

with_care(doc, patient) := object.union(doc, {"care": [{"patient": patient, "role": "attending", "source": "adt"}]})

# prac-001 cares for pat-0001 and may read it under TREAT.
own := fx.req(fx.physician, fx.read_patient("pat-0001"))

# billing reads any patient under HPAYMT.
bill := fx.req(fx.billing, fx.read_patient("pat-0001"))

test_no_directive_allows if decide(with_consents(own, [])).allow

# An opt-out of the request's purpose refuses it, care team or not.
test_opt_out_of_purpose_refuses if {
	d := decide(with_consents(own, [directive("pat-0001", "deny", "TREAT", "")]))
	not d.allow
	d.reason == "consent.opt_out"
	d.status == 403
}

# An opt-out of another purpose does not touch this one.
test_opt_out_other_purpose_allows if decide(with_consents(bill, [directive("pat-0001", "deny", "HRESCH", "")])).allow

# An opt-out with neither purpose nor label is an opt-out of everything.
test_opt_out_of_all if decide(with_consents(bill, [directive("pat-0001", "deny", "", "")])).reason == "consent.opt_out"

# Break-glass overrides an opt-out: an emergency is the law's exception.
test_break_glass_overrides_opt_out if {
	doc := fx.with_bg(fx.req(fx.physician_mfa, fx.read_patient("pat-0002")), "unconscious in ED")
	decide(with_consents(doc, [directive("pat-0002", "deny", "", "")])).allow
}

# The patient's own access is never refused by their own directive.
test_self_never_refused if decide(with_consents(fx.req(fx.patient, fx.read_patient("pat-0001")), [directive("pat-0001", "deny", "", "")])).allow

# A restriction refuses a caller without a treating relationship...
test_restrict_refuses_unrelated if decide(with_consents(bill, [directive("pat-0001", "restrict", "HPAYMT", "")])).reason == "consent.restricted"

# ... and lets the care team through, from the data or from the store.
test_restrict_allows_care_team if decide(with_consents(own, [directive("pat-0001", "restrict", "", "")])).allow

test_restrict_allows_store_relationship if {
	doc := with_care(fx.req(fx.physician, fx.read_patient("pat-0002")), "pat-0002")
	decide(with_consents(doc, [directive("pat-0002", "restrict", "", "")])).allow
}

# A label opt-out withholds the label the role would otherwise receive.
test_label_opt_out_withholds if {
	d := decide(with_consents(own, [directive("pat-0001", "deny", "", "HIV")]))
	d.allow
	not "HIV" in d.enforce.permitted_labels
	"STD" in d.enforce.permitted_labels
	"consent.label_withheld" in d.audit.rules
}

# A label opt-out under one purpose leaves the label under others.
test_label_opt_out_other_purpose if "HIV" in decide(with_consents(own, [directive("pat-0001", "deny", "HRESCH", "HIV")])).enforce.permitted_labels

# A label restriction holds against the unrelated, not against the care team.
test_label_restrict_care_team if "HIV" in decide(with_consents(own, [directive("pat-0001", "restrict", "", "HIV")])).enforce.permitted_labels

test_label_restrict_unrelated if {
	doc := fx.with_purpose(fx.req(fx.physician, fx.read_patient("pat-0002")), "TREAT")
	d := decide(with_consents(with_care(doc, "pat-0002"), [directive("pat-0002", "restrict", "", "HIV"), directive("pat-0001", "restrict", "", "STD")]))
	"HIV" in d.enforce.permitted_labels
}

# Break-glass opens a label the patient withheld, as it opens every label.
test_break_glass_opens_withheld_label if {
	doc := fx.with_bg(fx.req(fx.physician_mfa, fx.read_patient("pat-0002")), "unconscious in ED")
	"PSY" in decide(with_consents(doc, [directive("pat-0002", "deny", "", "PSY")])).enforce.permitted_labels
}

# An opt-out outranks the relationship check in the reason it reports
# only after it: a stranger is told they are not on the care team.
test_precedence_relationship_first if decide(with_consents(fx.req(fx.physician, fx.read_patient("pat-0002")), [directive("pat-0002", "deny", "", "")])).reason == "relationship.not_on_care_team"
