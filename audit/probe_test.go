package audit

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestProbe runs both phases briefly and checks what a reader of the report
// relies on: every record offered to the log was appended and timed, the
// quantiles are a distribution, the scratch directory is gone afterwards,
// and the synthetic record is the size of a real one.
func TestProbe(t *testing.T) {
	dir := t.TempDir()
	rep, err := Probe(t.Context(), dir, ProbeOptions{Rate: 200, Duration: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Phases) != 3 {
		t.Fatalf("phases %+v, want 3", rep.Phases)
	}
	if rep.Phases[0].Count == 0 || rep.Phases[1].Count == 0 || rep.Phases[2].Count != 100 {
		t.Errorf("counts %d, %d and %d, want some write+fsyncs of each kind and all 100 offered records",
			rep.Phases[0].Count, rep.Phases[1].Count, rep.Phases[2].Count)
	}
	for _, p := range rep.Phases {
		if !(p.P50 > 0 && p.P50 <= p.P99 && p.P99 <= p.P999 && p.P999 <= p.Max) {
			t.Errorf("%s: p50 %.3f p99 %.3f p99.9 %.3f max %.3f is not a distribution", p.Name, p.P50, p.P99, p.P999, p.Max)
		}
	}
	if rep.RecordBytes < 2000 || rep.RecordBytes > 8000 {
		t.Errorf("record of %d bytes; a decision record is 3-5 kB", rep.RecordBytes)
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("probe left %v behind", left)
	}
	var table, js bytes.Buffer
	if err := WriteProbeReport(&table, rep, "ext4", false); err != nil || !strings.Contains(table.String(), "audit log offered 200/s") {
		t.Errorf("table %q: %v", table.String(), err)
	}
	if err := WriteProbeReport(&js, rep, "ext4", true); err != nil {
		t.Fatal(err)
	}
	var back struct {
		ProbeReport
		FileSystem string `json:"file_system"`
	}
	if err := json.Unmarshal(js.Bytes(), &back); err != nil || back.FileSystem != "ext4" || len(back.Phases) != 3 || back.Phases[2].P99 != rep.Phases[2].P99 {
		t.Errorf("json %s: %v", js.String(), err)
	}
}

func TestProbeRefusesBadInput(t *testing.T) {
	dir := t.TempDir()
	for _, o := range []ProbeOptions{{Rate: 0, Duration: time.Second}, {Rate: 1e6, Duration: time.Second}, {Rate: 100, Duration: time.Millisecond}} {
		if _, err := Probe(t.Context(), dir, o); err == nil || !strings.Contains(err.Error(), "probe") {
			t.Errorf("Probe(%+v) = %v, want a probe setting error", o, err)
		}
	}
	if _, err := Probe(t.Context(), filepath.Join(dir, "missing"), ProbeOptions{Rate: 100, Duration: time.Second}); err == nil {
		t.Error("a missing directory was probed")
	}
}
