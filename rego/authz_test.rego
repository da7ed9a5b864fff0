package phigate.authz_test

import data.phigate.authz
import data.phigate.fixtures_test as fx

decide(doc) := d if {
	d := authz.decision with input as doc
}

# Without a verified identity the answer is 401, whatever else is asked.
test_no_identity_401 if {
	d := decide(fx.req(fx.anonymous, fx.read_patient("pat-0001")))
	not d.allow
	d.status == 401
	d.reason == "identity.missing_token"
}

# Identity comes before a malformed request: 401 beats 400.
test_401_before_400 if decide(fx.req(fx.anonymous, {"interaction": "teleport"})).status == 401

# An error word that is not a short code is not echoed into the reason.
test_identity_error_sanitized if decide(fx.req(object.union(fx.anonymous, {"error": "Bad token for John Smith"}), fx.read_patient("pat-0001"))).reason == "identity.missing"

# "true" as a string does not authenticate.
test_string_true_not_authenticated if decide(fx.req(object.union(fx.physician, {"authenticated": "true"}), fx.read_patient("pat-0001"))).status == 401

# The capability statement is public: a SMART client reads it before login.
test_capabilities_public if decide(fx.req(fx.anonymous, {"interaction": "capabilities", "patients": []})).allow

# 400 comes before 403: an unknown interaction by a role-less caller is ambiguous first.
test_400_before_403 if decide(fx.req(fx.ident("x", [], ""), {"interaction": "teleport"})).status == 400

# A read without an id is ambiguous.
test_missing_id if decide(fx.req(fx.physician, {"interaction": "read", "resource_type": "Patient", "patients": []})).reason == "request.missing_id"

# RBAC comes before relationship: a billing clerk reading notes is told about the role.
test_rbac_before_relationship if decide(fx.req(fx.nurse, fx.op("Patient", "pat-0001", "everything", ["pat-0001"]))).reason == "rbac.not_permitted"

# Purpose comes before RBAC.
test_purpose_before_rbac if decide(fx.with_purpose(fx.req(fx.billing, fx.read("DocumentReference", "d", [])), "TREAT")).reason == "purpose.not_permitted"

# Every denial names one rule, prefixed deny:.
test_deny_rule if decide(fx.req(fx.physician, fx.read_patient("pat-0002"))).audit.rules == ["deny:relationship.not_on_care_team"]

# A denial sets no upstream headers and removes every phigate header.
test_deny_headers if {
	d := decide(fx.req(fx.physician, fx.read_patient("pat-0002")))
	d.headers == {}
	count(d.remove_headers) == 4
}

# On allow the upstream learns who, why and in which role.
test_allow_headers if decide(fx.req(fx.physician, fx.read_patient("pat-0001"))).headers == {"x-phigate-user": "dr-house", "x-phigate-purpose": "TREAT", "x-phigate-roles": "physician"}

# A client-supplied break-glass header is removed when break glass is not active.
test_break_glass_header_removed if "x-phigate-break-glass" in decide(fx.req(fx.physician, fx.read_patient("pat-0001"))).remove_headers

# Responses with PHI must not be cached.
test_no_store if decide(fx.req(fx.physician, fx.read_patient("pat-0001"))).response_headers == {"cache-control": "no-store"}

# The audit lists the patients the request touched, even on denial.
test_audit_patients_on_deny if decide(fx.req(fx.physician, fx.read_patient("pat-0002"))).audit.patients == ["pat-0002"]

# A batch is allowed when each entry is.
test_batch_allowed if decide(fx.req(fx.physician, fx.bundle("batch", [fx.read_patient("pat-0001"), fx.read_patient("pat-0061")]))).allow

# One denied entry denies the whole batch, naming the entry.
test_batch_entry_denied if decide(fx.req(fx.physician, fx.bundle("transaction", [fx.read_patient("pat-0001"), fx.read_patient("pat-0002")]))).reason == "entry[1].relationship.not_on_care_team"

# The lowest denied entry is reported.
test_batch_first_entry if decide(fx.req(fx.physician, fx.bundle("batch", [fx.read_patient("pat-0003"), fx.read_patient("pat-0002")]))).reason == "entry[0].relationship.not_on_care_team"

# A denied entry's RBAC reason outranks another entry's relationship reason.
test_batch_precedence if decide(fx.req(fx.physician, fx.bundle("batch", [fx.read_patient("pat-0002"), {"interaction": "delete", "resource_type": "Observation", "id": "o", "patients": []}]))).reason == "entry[1].rbac.not_permitted"

# An empty batch cannot be judged: 400.
test_empty_batch if decide(fx.req(fx.physician, fx.bundle("batch", []))).reason == "request.empty_bundle"

# A batch inside a batch is refused.
test_nested_batch if decide(fx.req(fx.physician, fx.bundle("batch", [fx.bundle("batch", [])]))).reason == "entry[0].request.nested_bundle"

# A malformed entry is a 400 naming the entry.
test_malformed_entry if {
	d := decide(fx.req(fx.physician, fx.bundle("batch", ["read"])))
	d.status == 400
	d.reason == "entry[0].request.malformed"
}

# The enforce patients of a batch are all its entries' patients.
test_batch_enforce if decide(fx.req(fx.physician, fx.bundle("batch", [fx.read_patient("pat-0061"), fx.read_patient("pat-0001")]))).enforce.patients == ["pat-0001", "pat-0061"]

# Garbage input still yields a complete denial.
test_garbage_input if {
	d := authz.decision with input as "garbage"
	d.allow == false
	d.status == 401
	is_object(d.enforce)
	is_array(d.redact)
}

# A denial enforces nothing open: no patients, no labels.
test_deny_enforce_closed if decide(fx.req(fx.physician, fx.read_patient("pat-0002"))).enforce == {"patients": [], "any_patient": false, "permitted_labels": [], "resource_types": []}

# An allowed caller without a subject sends no user header, and the header
# is removed so a client cannot supply it.
test_allow_without_subject_removes_user_header if {
	d := decide(fx.req(fx.ident("", ["physician"], "Practitioner/prac-001"), fx.read_patient("pat-0001")))
	d.allow
	not d.headers["x-phigate-user"]
	d.remove_headers == ["x-phigate-user", "x-phigate-break-glass"]
}

# A site module under data.phigate.ext denies without an edit to this
# library, and its reason is the one reported when nothing of the
# library's own denies first.
test_ext_deny_collected if {
	d := authz.decision with input as fx.req(fx.physician, fx.read_patient("pat-0001"))
		with data.phigate.ext.site.deny as {"ext.site.closed_ward"}
	not d.allow
	d.status == 403
	d.reason == "ext.site.closed_ward"
}

test_ext_deny_after_library if {
	d := authz.decision with input as fx.req(fx.billing, fx.read("DocumentReference", "d", []))
		with data.phigate.ext.site.deny as {"ext.site.closed_ward"}
	d.reason != "ext.site.closed_ward"
	not d.allow
}

test_ext_empty_deny_allows if {
	d := authz.decision with input as fx.req(fx.physician, fx.read_patient("pat-0001"))
		with data.phigate.ext.site.deny as set()
	d.allow
}

test_ext_malformed_deny if {
	d := authz.decision with input as fx.req(fx.physician, fx.read_patient("pat-0001"))
		with data.phigate.ext.site.deny as ["not a set"]
	not d.allow
	d.reason == "ext.malformed_deny"
}
