package envoy

import "encoding/json"

// ApprovalHeader carries, on a kick-off refused for want of a second
// person's approval, the reference of the approval it asked for.
const ApprovalHeader = "x-phigate-approval"

// approvalOutcome is the OperationOutcome of a request refused until an
// approver acts: the decision's reference, as on every refusal, and the
// approval's, which names no patient and no parameter.
func approvalOutcome(decision, approval string) []byte {
	type issue struct {
		Severity    string `json:"severity"`
		Code        string `json:"code"`
		Diagnostics string `json:"diagnostics"`
	}
	b, _ := json.Marshal(struct {
		ResourceType string  `json:"resourceType"`
		Issue        []issue `json:"issue"`
	}{"OperationOutcome", []issue{{"error", "forbidden",
		"Approval required: have an approver approve reference " + approval +
			", then repeat this request. Approval reference: " + approval + ". Reference: " + decision}}})
	return b
}
