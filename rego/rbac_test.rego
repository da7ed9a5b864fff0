package phigate.rbac_test

import data.phigate.authz
import data.phigate.fixtures_test as fx
import data.phigate.rbac

# Helper: the decision's reason for a caller and request.
reason(identity, f) := r if {
	r := authz.decision.reason with input as fx.req(identity, f)
}

allowed(identity, f) if authz.decision.allow with input as fx.req(identity, f)

decide(doc) := d if {
	d := authz.decision with input as doc
}

# A physician's "*" grant covers reading any resource type.
test_physician_reads_observation if allowed(fx.physician, fx.read("Observation", "o1", ["pat-0001"]))

# The audit id names role, action and target so a reviewer sees which grant applied.
test_physician_read_rule_id if {
	d := authz.decision with input as fx.req(fx.physician, fx.read("Observation", "o1", ["pat-0001"]))
	"rbac.allow:physician:read:Observation" in d.audit.rules
}

# Physicians may create clinical resources ("*" includes create).
test_physician_creates_observation if allowed(fx.physician, fx.create("Observation", ["pat-0001"]))

# Delete is granted to no clinical role: records are corrected, not erased.
test_physician_cannot_delete if reason(fx.physician, {"interaction": "delete", "resource_type": "Observation", "id": "o1", "patients": ["pat-0001"]}) == "rbac.not_permitted"

# $everything is granted explicitly on Patient to physicians.
test_physician_everything if allowed(fx.physician, fx.op("Patient", "pat-0001", "everything", ["pat-0001"]))

# $everything is not implied by read: a nurse has read on "*" but no $everything.
test_nurse_no_everything if reason(fx.nurse, fx.op("Patient", "pat-0002", "everything", ["pat-0002"])) == "rbac.not_permitted"

# Nurses may record observations for their patients.
test_nurse_creates_observation if allowed(fx.nurse, fx.create("Observation", ["pat-0002"]))

# Nurses may not create other clinical resources, such as orders.
test_nurse_cannot_create_medication_request if reason(fx.nurse, fx.create("MedicationRequest", ["pat-0002"])) == "rbac.not_permitted"

# Billing reads Patient demographics for claims.
test_billing_reads_patient if allowed(fx.billing, fx.read_patient("pat-0500"))

# Billing has no grant on clinical notes.
test_billing_no_document_reference if reason(fx.billing, fx.read("DocumentReference", "d1", [])) == "rbac.not_permitted"

# Billing may not delete a Patient (the first policy's case, kept).
test_billing_cannot_delete_patient if reason(fx.billing, {"interaction": "delete", "resource_type": "Patient", "id": "pat-0500", "patients": ["pat-0500"]}) == "rbac.not_permitted"

# Front desk books appointments.
test_front_desk_creates_appointment if allowed(fx.front_desk, fx.create("Appointment", ["pat-0003"]))

# Front desk sees no lab results.
test_front_desk_no_observation if reason(fx.front_desk, fx.read("Observation", "o1", ["pat-0003"])) == "rbac.not_permitted"

# Admins manage the practitioner directory.
test_admin_updates_practitioner if allowed(fx.admin, {"interaction": "update", "resource_type": "Practitioner", "id": "prac-001", "patients": []})

# Admins do not read clinical data.
test_admin_no_observation if reason(fx.admin, fx.read("Observation", "o1", ["pat-0001"])) == "rbac.not_permitted"

# A role the data does not define grants nothing, and the reason says so.
test_unknown_role if reason(fx.ident("x", ["superuser"], ""), fx.read("Observation", "o1", [])) == "rbac.no_role"

# No roles at all is the same as an unknown role.
test_no_roles if reason(fx.ident("x", [], ""), fx.read("Observation", "o1", [])) == "rbac.no_role"

# An operation's action is "$" + name, keeping operations apart from interactions.
test_action_of_operation if rbac.action({"interaction": "operation", "operation": "export"}) == "$export"

# A system-level request is checked against the "_system" target.
test_target_system if rbac.target({"interaction": "search-system", "resource_type": "", "kind": ""}) == "_system"

# A legacy route is checked against "legacy:<kind>".
test_target_legacy if rbac.target({"interaction": "non-fhir", "resource_type": "", "kind": "hl7v2"}) == "legacy:hl7v2"

# No role grants legacy routes by default: they are denied until configured.
test_legacy_route_denied if reason(fx.physician, {"interaction": "non-fhir", "kind": "hl7v2", "patients": []}) == "rbac.not_permitted"

# System search is not in any default grant: a physician cannot sweep the server.
test_system_search_denied if reason(fx.physician, {"interaction": "search-system", "patients": [], "all_patients": true}) == "rbac.not_permitted"

# A type an _include or _revinclude brings in is a target of its own: an
# admin may search Organization but not Patient, so
# Organization?_revinclude=Patient:organization is refused.
test_revinclude_needs_its_own_permission if {
	d := decide(fx.req(fx.admin, fx.with_included(fx.search_all("Organization"), ["Patient"])))
	not d.allow
	d.reason == "rbac.include_not_permitted"
}

test_revinclude_of_a_permitted_type if decide(fx.req(fx.admin, fx.with_included(fx.search_all("Organization"), ["Practitioner"]))).allow

# "*" (any type) needs a "*" grant.
test_include_any_type_needs_wildcard if {
	decide(fx.req(fx.admin, fx.with_included(fx.search_all("Organization"), ["*"]))).reason == "rbac.include_not_permitted"
	decide(fx.with_purpose(fx.req(fx.researcher, fx.with_included(fx.search_all("Observation"), ["*"])), "HRESCH")).allow
}

# Billing may search Encounter but not Observation or Condition.
test_billing_include_observation if {
	d := decide(fx.req(fx.billing, fx.with_included(fx.search("Encounter", ["pat-0001"]), ["Observation"])))
	d.reason == "rbac.include_not_permitted"
}

# Each bundle entry's includes are checked on its own.
test_bundle_entry_include if {
	e := fx.with_included(fx.search_all("Organization"), ["Patient"])
	d := decide(fx.req(fx.admin, fx.bundle("batch", [fx.search_all("Organization"), e])))
	d.reason == "entry[1].rbac.include_not_permitted"
}

# A malformed include list is a bad request, not an empty one.
test_included_types_malformed if {
	d := decide(fx.req(fx.admin, object.union(fx.search_all("Organization"), {"included_types": "Patient"})))
	d.status == 400
}

# The response may carry only the types the caller may read, plus the
# Bundle and OperationOutcome that wrap them.
test_response_types_of_a_narrow_role if {
	d := decide(fx.req(fx.admin, fx.search_all("Organization")))
	d.allow
	not "Patient" in d.enforce.resource_types
	"Organization" in d.enforce.resource_types
	"Bundle" in d.enforce.resource_types
	"OperationOutcome" in d.enforce.resource_types
}

test_response_types_of_a_wildcard_role if decide(fx.req(fx.physician, fx.read_patient("pat-0001"))).enforce.resource_types == ["*"]

test_response_types_billing if {
	ts := decide(fx.req(fx.billing, fx.read_patient("pat-0001"))).enforce.resource_types
	ts == ["Account", "Bundle", "Claim", "Coverage", "Encounter", "ExplanationOfBenefit", "OperationOutcome", "Patient"]
}
