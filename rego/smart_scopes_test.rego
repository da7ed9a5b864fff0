package phigate.smart_scopes_test

import data.phigate.authz
import data.phigate.fixtures_test as fx
import data.phigate.smart_scopes

decide(doc) := d if {
	d := authz.decision with input as doc
}

patient_app := fx.with_scopes(fx.patient, [fx.scope("patient", "Observation", "rs")], "pat-0001")

doc_app := fx.with_scopes(fx.physician, [fx.scope("user", "Observation", "rs")], "")

# A patient app with patient/Observation.rs reads the launch patient's observations.
test_patient_scope_allows if decide(fx.req(patient_app, fx.search("Observation", ["pat-0001"]))).allow

# The same app may not read Conditions: no scope covers them.
test_patient_scope_type if decide(fx.req(patient_app, fx.search("Condition", ["pat-0001"]))).reason == "smart_scopes.not_permitted"

# Patient-context scopes reach only the launch patient.
test_patient_scope_other_patient if decide(fx.req(fx.with_scopes(fx.physician, [fx.scope("patient", "Observation", "rs")], "pat-0061"), fx.search("Observation", ["pat-0001"]))).reason == "smart_scopes.not_permitted"

# A patient-context scope narrows a wide search to the launch patient.
test_patient_scope_narrows if decide(fx.req(fx.with_scopes(fx.physician, [fx.scope("patient", "Observation", "rs")], "pat-0061"), fx.search_all("Observation"))).enforce.patients == ["pat-0061"]

# Without a launch patient a patient-context scope permits nothing.
test_patient_scope_needs_launch if decide(fx.req(fx.with_scopes(fx.physician, [fx.scope("patient", "Observation", "rs")], ""), fx.search("Observation", ["pat-0001"]))).reason == "smart_scopes.not_permitted"

# user/Observation.rs lets the physician read observations of their patients.
test_user_scope_read if decide(fx.req(doc_app, fx.read("Observation", "o1", ["pat-0001"]))).allow

# The scope carries no "c": creating an Observation is refused though the role allows it.
test_scope_narrows_role if decide(fx.req(doc_app, fx.create("Observation", ["pat-0001"]))).reason == "smart_scopes.not_permitted"

# Scopes never widen: user/*.cruds does not give a nurse delete.
test_scope_never_widens if decide(fx.req(fx.with_scopes(fx.nurse, [fx.scope("user", "*", "cruds")], ""), {"interaction": "delete", "resource_type": "Observation", "id": "o1", "patients": ["pat-0002"]})).reason == "rbac.not_permitted"

# A "*" scope covers every resource type.
test_wildcard_scope if decide(fx.req(fx.with_scopes(fx.physician, [fx.scope("user", "*", "rs")], ""), fx.read_patient("pat-0001"))).allow

# Search needs "s", not "r".
test_search_needs_s if decide(fx.req(fx.with_scopes(fx.physician, [fx.scope("user", "Observation", "r")], ""), fx.search("Observation", ["pat-0001"]))).reason == "smart_scopes.not_permitted"

# $everything maps to "r" on Patient.
test_everything_letter if smart_scopes.letter({"interaction": "operation", "operation": "everything"}) == "r"

# Scopes that could not be parsed still narrow, to nothing.
test_garbage_scopes_deny if decide(fx.req(object.union(fx.physician, {"scopes": [{"context": "bogus"}]}), fx.read_patient("pat-0001"))).reason == "smart_scopes.not_permitted"

# No scopes in the token: roles alone decide.
test_no_scopes_no_check if not smart_scopes.applies with input as fx.req(fx.physician, fx.read_patient("pat-0001"))

# The scope that permitted the request is named in the audit.
test_scope_rule if "smart_scopes.allow:patient/Observation.rs" in decide(fx.req(patient_app, fx.search("Observation", ["pat-0001"]))).audit.rules

# An included type needs a search scope of its own.
test_include_needs_a_scope if {
	id := fx.with_scopes(fx.physician, [fx.scope("user", "Observation", "rs")], "")
	d := decide(fx.req(id, fx.with_included(fx.search("Observation", ["pat-0001"]), ["Patient"])))
	d.reason == "smart_scopes.include_not_permitted"
}

test_include_with_a_scope if {
	id := fx.with_scopes(fx.physician, [fx.scope("user", "Observation", "rs"), fx.scope("user", "Patient", "rs")], "")
	d := decide(fx.req(id, fx.with_included(fx.search("Observation", ["pat-0001"]), ["Patient"])))
	d.allow
}

# Scopes narrow the types a response may carry.
test_scopes_narrow_response_types if {
	id := fx.with_scopes(fx.physician, [fx.scope("user", "Observation", "rs")], "")
	d := decide(fx.req(id, fx.search("Observation", ["pat-0001"])))
	d.enforce.resource_types == ["Bundle", "Observation", "OperationOutcome"]
}
