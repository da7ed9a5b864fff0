# The approval module requires a second person's approval for the
# requests phigate's configuration names (approvals.operations, .kinds):
# a bulk export kick-off at any level, another operation, a legacy route.
# phigate puts what it found into input.approval (see docs/approvals.md):
# whether an approval is required, at which stage (the kick-off, a status
# poll of the job it started, a download of its output), and the approval
# of this requester for this exact request (the kick-off's canonical
# scope) or, for a poll or a download, the requester's approved export
# that was kicked off.
#
# A kick-off needs multi-factor authentication and an approval that is
# approved, the requester's own, given by someone else, and unexpired. A
# poll or a download needs the same approval, still unexpired. When a
# kick-off is refused with approval.required, phigate records a pending
# request and gives its reference to the client; an approver acts on it.
package phigate.approval

import data.phigate.request

required if input.approval.required == true

default stage := ""

stage := s if {
	s := input.approval.stage
	is_string(s)
}

stages := {"kickoff", "status", "file"}

followup if stage in {"status", "file"}

# approved: the approval found holds for this caller at this time.
approved if {
	input.approval.state == "approved"
	request.subject != ""
	input.approval.requester == request.subject
	is_string(input.approval.approver)
	input.approval.approver != ""
	input.approval.approver != request.subject
	is_number(input.approval.expires_ns)
	input.approval.expires_ns > request.time_ns
}

# A kick-off under an approval must be the request that was approved: a
# GET (or HEAD), whose parameters are all in the scope. A POST kick-off
# carries parameters in its body that phigate does not read.
read_method if request.method in {"GET", "HEAD"}

deny contains "approval.unknown_stage" if {
	required
	not stage in stages
}

deny contains "approval.mfa_required" if {
	required
	stage == "kickoff"
	not request.mfa
}

deny contains "approval.method_not_supported" if {
	required
	stage == "kickoff"
	not read_method
}

deny contains "approval.required" if {
	required
	stage == "kickoff"
	not approved
}

deny contains "approval.not_approved" if {
	required
	followup
	not approved
}

# released: an approved export's status poll or download, whose response
# the decision asks no filtering of (see enforce in the authz module).
released if {
	required
	followup
	approved
}

# rules names the approval an allowed request ran under, for the trail.
rules contains concat(":", ["approval", stage, input.approval.id]) if {
	required
	approved
	is_string(input.approval.id)
}

# expiries_ahead bounds the reuse of a decision taken under an approval.
expiries_ahead contains e if {
	required
	approved
	e := input.approval.expires_ns
}
