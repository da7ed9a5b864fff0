package audit

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
)

// WriteVerifyReport prints the outcome of Verify for people; with asJSON it
// writes the report as one JSON object instead. err is Verify's error.
func WriteVerifyReport(w io.Writer, rep VerifyReport, err error, asJSON bool) error {
	if asJSON {
		out := struct {
			VerifyReport
			OK    bool   `json:"ok"`
			Error string `json:"error,omitempty"`
		}{VerifyReport: rep, OK: err == nil}
		if err != nil {
			out.Error = err.Error()
		}
		return json.NewEncoder(w).Encode(&out)
	}
	if err != nil {
		_, werr := fmt.Fprintf(w, "FAILED %s: %v\nchecked %d records in %d segments and %d checkpoints before the problem\n",
			rep.Code, err, rep.Records, rep.Segments, rep.Checkpoints)
		return werr
	}
	_, werr := fmt.Fprintf(w, "OK %d records in %d segments, %d signed checkpoints (newest covers %d records), head %s, decrypted=%v\n",
		rep.Records, rep.Segments, rep.Checkpoints, rep.Checkpointed, rep.Head, rep.Decrypted)
	return werr
}

// WriteChanges prints Replay's result: a table, or JSON lines with asJSON.
func WriteChanges(w io.Writer, changes []Change, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		for i := range changes {
			if err := enc.Encode(&changes[i]); err != nil {
				return err
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tRECORDED\tUSER\tRESOURCE\tDECISION\tREQUEST\tPOLICY\tWAS\tNOW\tERROR")
	for _, c := range changes {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", c.Seq, c.Recorded, dash(c.User), dash(c.Resource),
			c.DecisionID, dash(c.RequestID), dash(c.WasPolicy), verdict(c.WasAllow, c.WasStatus, c.WasReason),
			verdict(c.NowAllow, c.NowStatus, c.NowReason), dash(c.NowError))
	}
	return tw.Flush()
}

func verdict(allow bool, status int, reason string) string {
	if allow {
		return fmt.Sprintf("allow %d", status)
	}
	if reason != "" {
		return fmt.Sprintf("deny %d %s", status, reason)
	}
	return fmt.Sprintf("deny %d", status)
}

// WriteProbeReport prints Probe's result: a table, or one JSON object with
// asJSON. fsName names the file system, when the caller knows it.
func WriteProbeReport(w io.Writer, rep ProbeReport, fsName string, asJSON bool) error {
	if asJSON {
		out := struct {
			ProbeReport
			FileSystem string `json:"file_system,omitempty"`
		}{rep, fsName}
		return json.NewEncoder(w).Encode(&out)
	}
	fmt.Fprintf(w, "durable appends in %s (%s), %d bytes per record\n", rep.Dir, fsName, rep.RecordBytes)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "phase\tcount\tp50 ms\tp99 ms\tp99.9 ms\tmax ms\t")
	for _, p := range rep.Phases {
		fmt.Fprintf(tw, "%s\t%d\t%.3f\t%.3f\t%.3f\t%.3f\t\n", p.Name, p.Count, p.P50, p.P99, p.P999, p.Max)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintln(w, "A Check that allows waits for its record's append: the audit log's row is what the trail adds to it on this disk, before any other load.")
	return err
}
