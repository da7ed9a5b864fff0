package decisionlog

import "testing"

// BenchmarkNewEvent is what a Check pays for its decision log event: the
// cut-down copy and the masking, for a request full of identifiers.
func BenchmarkNewEvent(b *testing.B) {
	req, d := phiRequest(0)
	labels := map[string]string{"id": "inst"}
	b.ReportAllocs()
	for b.Loop() {
		_ = NewEvent(req, d, labels)
	}
}
