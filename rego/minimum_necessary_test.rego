package phigate.minimum_necessary_test

import data.phigate.authz
import data.phigate.fixtures_test as fx
import data.phigate.minimum_necessary

redact(doc) := r if {
	r := authz.decision.redact with input as doc
}

# Billing does not see how to reach the patient.
test_billing_removes_contact if {
	r := redact(fx.req(fx.billing, fx.read_patient("pat-0002")))
	{"path": "Patient.telecom", "action": "remove", "key_id": "", "format": "", "keep": [], "profile": ""} in r
	{"path": "Patient.address", "action": "remove", "key_id": "", "format": "", "keep": [], "profile": ""} in r
}

# Nurses get identifiers tokenized with key demo-1.
test_nurse_tokenizes if redact(fx.req(fx.nurse, fx.read_patient("pat-0002"))) == [{"path": "Patient.identifier.value", "action": "tokenize", "key_id": "demo-1", "format": "hmac", "keep": [], "profile": ""}]

# Research under HRESCH is de-identified with the safe-harbor profile.
test_researcher_deidentified if redact(fx.with_purpose(fx.req(fx.researcher, fx.search_all("Observation")), "HRESCH")) == [{"path": "*", "action": "deidentify", "key_id": "", "format": "", "keep": [], "profile": "safe-harbor"}]

# The front desk keeps only the listed Patient elements.
test_front_desk_allow_list if {
	some d in redact(fx.req(fx.front_desk, fx.read_patient("pat-0002")))
	d.action == "allow"
	d.path == "Patient"
	"birthDate" in d.keep
	not "communication" in d.keep
}

# A treating physician gets the full record.
test_physician_no_redaction if redact(fx.req(fx.physician, fx.read_patient("pat-0001"))) == []

# A patient gets their full record.
test_patient_no_redaction if redact(fx.req(fx.patient, fx.read_patient("pat-0001"))) == []

# A denial carries no directives: nothing is sent.
test_denied_empty if redact(fx.req(fx.billing, fx.read("DocumentReference", "d", []))) == []

# Every directive has every field, so the Go side decodes without guessing.
test_directives_complete if {
	every d in redact(fx.req(fx.billing, fx.read_patient("pat-0002"))) {
		object.keys(d) == {"path", "action", "key_id", "format", "keep", "profile"}
	}
}

# A directive with an unknown action fails closed: the request is denied.
test_invalid_directive_denies if authz.decision.reason == "minimum_necessary.invalid_directive" with input as fx.req(fx.billing, fx.read_patient("pat-0002"))
	with data.phigate.redaction.billing as {"*": [{"path": "Patient.telecom", "action": "scramble"}]}

# The audit names the role and purpose whose directives applied.
test_rule if "minimum_necessary:billing:HPAYMT" in authz.decision.audit.rules with input as fx.req(fx.billing, fx.read_patient("pat-0002"))

# A purpose-specific entry wins over "*".
test_purpose_specific if minimum_necessary.for_role("billing") == [] with input as fx.req(fx.billing, fx.read_patient("pat-0002"))
	with data.phigate.redaction.billing as {"HPAYMT": [], "*": [{"path": "x", "action": "remove"}]}
