package phigate.approval_test

import data.phigate.authz
import data.phigate.fixtures_test as fx

decide(doc) := d if {
	d := authz.decision with input as doc
}

export := fx.op("", "", "export", [])

group_export := fx.op("Group", "g1", "export", [])

status_poll := {"interaction": "non-fhir", "kind": "export-status", "patients": [], "all_patients": true}

file_get := {"interaction": "non-fhir", "kind": "export-file", "patients": [], "all_patients": true}

approval(stage, state, requester, approver, expires_ns) := {
	"required": true, "stage": stage, "id": "a1b2", "state": state,
	"requester": requester, "approver": approver, "expires_ns": expires_ns,
}

with_approval(doc, a) := object.union(doc, {"approval": a})

later := fx.wed_11_ny + fx.hour

approved_kickoff := approval("kickoff", "approved", "admin-1", "po-1", later)

# Without an approval the kick-off is refused with approval.required.
test_kickoff_without_approval if {
	d := decide(with_approval(fx.req(fx.admin_mfa, export), {"required": true, "stage": "kickoff", "state": "none"}))
	not d.allow
	d.reason == "approval.required"
	d.status == 403
}

# A pending request is not an approval.
test_pending_refused if {
	d := decide(with_approval(fx.req(fx.admin_mfa, export), approval("kickoff", "pending", "admin-1", "", 0)))
	d.reason == "approval.required"
}

# Approved, by someone else, unexpired: allowed, and the rule names it.
test_approved_kickoff if {
	d := decide(with_approval(fx.req(fx.admin_mfa, export), approved_kickoff))
	d.allow
	"approval:kickoff:a1b2" in d.audit.rules
}

# A group export under its own approval passes too.
test_group_export_approved if decide(with_approval(fx.req(fx.admin_mfa, group_export), approved_kickoff)).allow

# An approval the requester gave themselves is none.
test_self_approved_refused if {
	d := decide(with_approval(fx.req(fx.admin_mfa, export), approval("kickoff", "approved", "admin-1", "admin-1", later)))
	d.reason == "approval.required"
}

# Another user's approval does not carry over.
test_other_requester_refused if {
	d := decide(with_approval(fx.req(fx.admin_mfa, export), approval("kickoff", "approved", "admin-2", "po-1", later)))
	d.reason == "approval.required"
}

# An expired approval is refused, to the nanosecond.
test_expired_refused if {
	d := decide(with_approval(fx.req(fx.admin_mfa, export), approval("kickoff", "approved", "admin-1", "po-1", fx.wed_11_ny)))
	d.reason == "approval.required"
}

# MFA first: without it the export rule refuses before the approval is asked for.
test_mfa_before_approval if {
	d := decide(with_approval(fx.req(fx.admin, export), approved_kickoff))
	d.reason == "mfa.required:export"
}

# Where the export rule does not ask for MFA (another configured
# operation), the approval module asks for it itself.
test_other_operation_needs_mfa if {
	doc := with_approval(fx.req(fx.admin, export), approved_kickoff)
	d := decide(doc) with data.phigate.mfa_required.operations as []
	d.reason == "approval.mfa_required"
}

# RBAC first: a nurse gets the role reason, and so asks for no approval.
test_rbac_before_approval if {
	d := decide(with_approval(fx.req(fx.nurse, export), {"required": true, "stage": "kickoff", "state": "none"}))
	d.reason == "rbac.not_permitted"
}

# A POST kick-off carries parameters phigate does not read: refused.
test_post_kickoff_refused if {
	doc := object.union(with_approval(fx.req(fx.admin_mfa, export), approved_kickoff), {"method": "POST"})
	decide(doc).reason == "approval.method_not_supported"
}

# A status poll and a download run under the started approval: the
# library's export roles hold the legacy:export-status and
# legacy:export-file kinds.
test_followups if {
	a := approval("status", "approved", "admin-1", "po-1", later)
	decide(with_approval(fx.req(fx.admin, status_poll), a)).allow
	f := object.union(a, {"stage": "file"})
	decide(with_approval(fx.req(fx.admin, file_get), f)).allow
}

# Their responses are released unfiltered: the export was approved whole.
test_followups_unfiltered if {
	a := approval("file", "approved", "admin-1", "po-1", later)
	d := decide(with_approval(fx.req(fx.admin, file_get), a))
	d.enforce == {}
	d.redact == []
}

# Without one, or past its end, or for another user: refused.
test_followups_refused if {
	none := {"required": true, "stage": "status", "state": "none"}
	decide(with_approval(fx.req(fx.admin, status_poll), none)).reason == "approval.not_approved"
	old := approval("file", "approved", "admin-1", "po-1", fx.wed_11_ny - 1)
	decide(with_approval(fx.req(fx.admin, file_get), old)).reason == "approval.not_approved"
	theirs := approval("file", "approved", "researcher-1", "po-1", later)
	decide(with_approval(fx.req(fx.admin, file_get), theirs)).reason == "approval.not_approved"
}

# An unknown stage refuses rather than passing.
test_unknown_stage if {
	d := decide(with_approval(fx.req(fx.admin_mfa, export), object.union(approved_kickoff, {"stage": "later"})))
	d.reason == "approval.unknown_stage"
}

# A request that needs no approval is untouched by the module.
test_not_required if decide(with_approval(fx.req(fx.admin_mfa, export), {"required": false})).allow

# A decision under an approval is not reused past its end.
test_cache_bounded if {
	d := decide(with_approval(fx.req(fx.admin_mfa, export), approved_kickoff))
	d.cache.until_ns <= later
}
