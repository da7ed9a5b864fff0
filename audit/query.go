package audit

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/phigate/phigate/authz"
)

// Filter selects records. Zero fields match everything.
type Filter struct {
	Patient    string    // patient id (as in Patient/<id>)
	User       string    // user subject or fhirUser reference
	Since      time.Time // recorded at or after
	Until      time.Time // recorded before
	Outcome    string    // "0", "4" or "8"
	BreakGlass *bool     // only (or never) emergency overrides
	DecisionID string    // the decision and its filtering record
	Kind       string    // KindDecision, KindFiltering, KindIngest, KindWorkflow, ...
	Approval   string    // the records of one approval (Entry.ApprovalID)
}

// QueryOptions tunes Query.
type QueryOptions struct {
	EncryptionKey []byte // needed for sealed records
	Limit         int    // stop after this many matches; 0 means no limit
}

// Entry is one record as read back.
type Entry struct {
	Replica  string          `json:"replica,omitempty"` // at the centre (QueryCentral)
	Seq      uint64          `json:"seq"`
	Segment  string          `json:"segment"`
	Offset   int64           `json:"offset"`
	Kind     string          `json:"kind"`
	Event    *AuditEvent     `json:"event"`
	Input    json.RawMessage `json:"input,omitempty"` // policy input document (decisions)
	Decision *authz.Decision `json:"decision,omitempty"`
	Recorded time.Time       `json:"-"`
}

// Matches reports whether e passes f.
func (f *Filter) Matches(e *Entry) bool {
	ev := e.Event
	switch {
	case f.Kind != "" && e.Kind != f.Kind:
		return false
	case f.Patient != "" && !slices.Contains(ev.Patients(), f.Patient):
		return false
	case f.Outcome != "" && ev.Outcome != f.Outcome:
		return false
	case f.BreakGlass != nil && ev.BreakGlass() != *f.BreakGlass:
		return false
	case f.DecisionID != "" && ev.DecisionID() != f.DecisionID:
		return false
	case !f.Since.IsZero() && e.Recorded.Before(f.Since):
		return false
	case !f.Until.IsZero() && !e.Recorded.Before(f.Until):
		return false
	case f.Approval != "" && e.ApprovalID() != f.Approval:
		return false
	}
	if f.User != "" {
		sub, fu := ev.User()
		if sub != f.User && fu != f.User {
			return false
		}
	}
	return true
}

// Query reads the log in dir in sequence order and returns the records that
// match f. It checks each frame's hash as it reads (a damaged record is an
// error, not a silent skip) but not the signed checkpoints: run Verify for
// that. A filtering record that names no user and no patient (written from
// plan metadata version 1) is given those of its decision record when the
// decision is in the trail, before it is matched (see DetailJoined).
func Query(dir string, f Filter, opts QueryOptions) ([]Entry, error) {
	var out []Entry
	j := newJoiner()
	err := scan(dir, opts.EncryptionKey, func(e *Entry) bool {
		j.see(e)
		if f.Matches(e) {
			out = append(out, *e)
		}
		return opts.Limit == 0 || len(out) < opts.Limit
	})
	return out, err
}

// scan walks every record of the log, calling fn until it returns false.
func scan(dir string, key []byte, fn func(*Entry) bool) error {
	aead, err := newAEAD(key)
	if err != nil {
		return err
	}
	names, _, err := listSegments(dir)
	if err != nil {
		return err
	}
	var prev [32]byte
	var seq uint64
	for _, name := range names {
		data, err := readFile(dir, name)
		if err != nil {
			return err
		}
		frames, serr := parseFrames(data)
		for i := range frames {
			fr := &frames[i]
			pos := &Position{File: name, Seq: fr.Seq, Offset: fr.Offset}
			if fr.Seq != seq+1 || fr.Prev != prev {
				return errf(CodeChainBroken, pos, nil, "chain does not link")
			}
			seq, prev = fr.Seq, fr.Hash
			r, err := decodeFrame(aead, fr)
			if err != nil {
				var e *Error
				if ok := asError(err, &e); ok {
					e.Pos = pos
				}
				return err
			}
			e := &Entry{Seq: fr.Seq, Segment: name, Offset: fr.Offset, Kind: r.Kind, Event: r.Event,
				Input: r.Input, Decision: r.Decision}
			if e.Decision != nil {
				e.Decision.ID = r.DecisionID
			}
			e.Recorded, _ = time.Parse(time.RFC3339Nano, r.Event.Recorded)
			if !fn(e) {
				return nil
			}
		}
		if serr != nil {
			return errf(serr.code, &Position{File: name, Seq: seq + 1, Offset: serr.offset}, nil, "%s", serr.detail)
		}
	}
	return nil
}

func asError(err error, target **Error) bool {
	e, ok := err.(*Error)
	if ok {
		*target = e
	}
	return ok
}

// WriteTable prints entries for people: one line each, no policy input.
func WriteTable(w io.Writer, entries []Entry) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	central := slices.ContainsFunc(entries, func(e Entry) bool { return e.Replica != "" })
	if central {
		fmt.Fprint(tw, "REPLICA\t")
	}
	fmt.Fprintln(tw, "SEQ\tRECORDED\tKIND\tUSER\tACTION\tOUTCOME\tBREAK-GLASS\tPATIENTS\tWHAT\tDECISION")
	for i := range entries {
		e := &entries[i]
		if central {
			fmt.Fprintf(tw, "%s\t", e.Replica)
		}
		ev := e.Event
		sub, fu := ev.User()
		who := sub
		if fu != "" {
			who += " (" + fu + ")"
		}
		bg := ""
		if ev.BreakGlass() {
			bg = "yes"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Seq, ev.Recorded, e.Kind, dash(who), ev.Action,
			ev.Outcome+" "+ev.OutcomeDesc, dash(bg), dash(strings.Join(ev.Patients(), ",")), dash(what(ev)), dash(ev.DecisionID()))
	}
	return tw.Flush()
}

func what(ev *AuditEvent) string {
	var parts []string
	for _, c := range ev.Subtype {
		if c.System == SystemRestInteraction || c.System == SystemPhigateEvent {
			parts = append(parts, c.Code)
		}
	}
	for _, en := range ev.Entity {
		if en.Role != nil && en.Role.Code == roleDomain.Code && en.What != nil {
			parts = append(parts, en.What.Reference)
		}
		if en.Role != nil && en.Role.Code == roleQuery.Code && en.Description != "" {
			parts = append(parts, en.Description)
		}
	}
	return strings.Join(parts, " ")
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// WriteJSON writes one AuditEvent JSON document per line (NDJSON), the form
// FHIR bulk data and most SIEM shippers take.
func WriteJSON(w io.Writer, entries []Entry) error {
	enc := json.NewEncoder(w)
	for i := range entries {
		if err := enc.Encode(entries[i].Event); err != nil {
			return err
		}
	}
	return nil
}

// WriteBundle writes the events as one FHIR searchset Bundle.
func WriteBundle(w io.Writer, entries []Entry) error {
	type bundleEntry struct {
		Resource *AuditEvent `json:"resource"`
	}
	b := struct {
		ResourceType string        `json:"resourceType"`
		Type         string        `json:"type"`
		Total        int           `json:"total"`
		Entry        []bundleEntry `json:"entry"`
	}{ResourceType: "Bundle", Type: "searchset", Total: len(entries), Entry: []bundleEntry{}}
	for i := range entries {
		b.Entry = append(b.Entry, bundleEntry{Resource: entries[i].Event})
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(&b)
}
