package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/phigate/phigate/audit"
	"github.com/phigate/phigate/policy"
)

// ExitReplayChanged is what `audit replay` returns when at least one
// recorded decision would come out differently, so a policy pipeline can
// stop a push that silently changes who may see what.
const ExitReplayChanged = 3

// parseInterleaved parses flags that may come before or after positional
// arguments (`audit verify <dir> --json` reads naturally, but the flag
// package stops at the first non-flag). It returns the positionals.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, int, bool) {
	var pos []string
	for {
		if code, ok := parse(fs, args); !ok {
			return nil, code, false
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, 0, true
		}
		if rest[0] == "--" {
			return append(pos, rest[1:]...), 0, true
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// keyFlags are the encryption-key flags every audit reader shares.
type keyFlags struct{ file, env *string }

func addKeyFlags(fs *flag.FlagSet) keyFlags {
	return keyFlags{
		file: fs.String("encryption-key-file", "", "AES-256 key file, when records are sealed at rest"),
		env:  fs.String("encryption-key-env", "", "name of an environment variable holding the AES-256 key"),
	}
}

func (k keyFlags) load() ([]byte, error) { return audit.LoadEncryptionKey(*k.file, *k.env) }

// selection is the record filter shared by query and replay.
type selection struct {
	patient, user, since, until, outcome, decision, kind *string
	breakGlass                                           *bool
}

func addSelectionFlags(fs *flag.FlagSet) selection {
	return selection{
		patient:    fs.String("patient", "", "only records about this patient id (as in Patient/<id>)"),
		user:       fs.String("user", "", "only records of this user (token subject or fhirUser reference)"),
		since:      fs.String("since", "", "only records at or after this time (RFC 3339, or a duration back from now such as 24h)"),
		until:      fs.String("until", "", "only records before this time (RFC 3339, or a duration back from now)"),
		outcome:    fs.String("outcome", "", "allow or deny (or an AuditEvent outcome code 0, 4, 8)"),
		decision:   fs.String("decision", "", "only this decision id and its filtering record"),
		kind:       fs.String("kind", "", "decision or filtering"),
		breakGlass: fs.Bool("break-glass", false, "only emergency-override (break-glass) decisions"),
	}
}

// filter turns the flags into an audit.Filter. deny is returned separately
// because a denial is either outcome 4 (the caller's request failed) or 8
// (phigate failed closed), and audit.Filter matches one code.
func (s selection) filter(now time.Time) (f audit.Filter, deny bool, err error) {
	f = audit.Filter{Patient: *s.patient, User: *s.user, DecisionID: *s.decision}
	if f.Since, err = parseWhen(*s.since, now); err != nil {
		return f, false, fmt.Errorf("--since: %w", err)
	}
	if f.Until, err = parseWhen(*s.until, now); err != nil {
		return f, false, fmt.Errorf("--until: %w", err)
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Until.After(f.Since) {
		return f, false, errors.New("--until: must be after --since")
	}
	switch *s.outcome {
	case "":
	case "allow":
		f.Outcome = audit.OutcomeSuccess
	case "deny":
		deny = true
	case audit.OutcomeSuccess, audit.OutcomeMinor, audit.OutcomeSerious:
		f.Outcome = *s.outcome
	default:
		return f, false, fmt.Errorf("--outcome: %q is not allow, deny, 0, 4 or 8", *s.outcome)
	}
	switch *s.kind {
	case "", audit.KindDecision, audit.KindFiltering:
		f.Kind = *s.kind
	default:
		return f, false, fmt.Errorf("--kind: %q is not %s or %s", *s.kind, audit.KindDecision, audit.KindFiltering)
	}
	if *s.breakGlass {
		yes := true
		f.BreakGlass = &yes
	}
	return f, deny, nil
}

// parseWhen reads an absolute RFC 3339 time or a duration counted back from
// now ("24h" means since a day ago).
func parseWhen(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time nor a positive duration", s)
	}
	return now.Add(-d), nil
}

// parseDir parses an audit subcommand's flags around its one directory
// argument; on failure it returns the exit code, having said why.
func parseDir(fs *flag.FlagSet, args []string, usage string, stderr io.Writer) (string, int, bool) {
	pos, code, ok := parseInterleaved(fs, args)
	if !ok {
		return "", code, false
	}
	if len(pos) != 1 || pos[0] == "" {
		fmt.Fprintln(stderr, "usage:", usage)
		return "", 2, false
	}
	return pos[0], 0, true
}

const (
	usageVerify = "phigate audit verify <dir> [--key signing.key.pub] [--encryption-key-file f | --encryption-key-env VAR] [--require-checkpointed] [--json]"
	usageQuery  = "phigate audit query <dir> [--patient P] [--user U] [--since T] [--until T] [--outcome allow|deny] [--break-glass] [--json | --bundle]"
	usageReplay = "phigate audit replay <dir> --policy <dir|bundle.tar.gz> [--patient P] [--user U] [--since T] [--until T] [--json]"
	usageProbe  = "phigate audit probe <dir> [--rate 1000] [--duration 10s] [--json]"
)

// cmdAuditProbe measures durable appends on the disk that would hold the
// trail, so an operator can choose the volume before the latency shows up
// in every Check.
func cmdAuditProbe(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flags("audit probe", stderr)
	var o audit.ProbeOptions
	fs.Float64Var(&o.Rate, "rate", 1000, "records per second offered to the audit log")
	fs.DurationVar(&o.Duration, "duration", 10*time.Second, "length of each of the two phases")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	dir, code, ok := parseDir(fs, args, usageProbe, stderr)
	if !ok {
		return code
	}
	if err := o.Validate(); err != nil {
		fmt.Fprintln(stderr, "phigate audit probe:", err)
		return 2
	}
	rep, err := audit.Probe(ctx, dir, o)
	if err != nil {
		fmt.Fprintln(stderr, "phigate audit probe:", err)
		return 1
	}
	if err := audit.WriteProbeReport(stdout, rep, fsKind(dir), *asJSON); err != nil {
		fmt.Fprintln(stderr, "phigate audit probe:", err)
		return 1
	}
	return 0
}

// cmdAuditVerify checks the whole trail: hashes, chain, signed checkpoints.
// Its exit code says which kind of damage was found (audit.ExitCode) and the
// report names the first bad position.
func cmdAuditVerify(_ context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flags("audit verify", stderr)
	key := fs.String("key", "", "the checkpoint signing public key (default <dir>/signing.key.pub); keep a copy off-host, since one beside the log can be replaced with it")
	keys := addKeyFlags(fs)
	strict := fs.Bool("require-checkpointed", false, "fail when records follow the newest checkpoint (the log was not closed cleanly)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	dir, code, ok := parseDir(fs, args, usageVerify, stderr)
	if !ok {
		return code
	}
	if *key == "" {
		*key = audit.PublicKeyPath(filepath.Join(dir, audit.DefaultSigningKeyName))
	}
	enc, err := keys.load()
	if err != nil {
		fmt.Fprintln(stderr, "phigate audit verify:", err)
		return audit.ExitCode(err)
	}
	rep, err := audit.VerifyKeyFile(dir, *key, audit.VerifyOptions{EncryptionKey: enc, RequireCheckpointedTail: *strict})
	if werr := audit.WriteVerifyReport(stdout, rep, err, *asJSON); werr != nil {
		fmt.Fprintln(stderr, "phigate audit verify:", werr)
		if err == nil {
			return audit.ExitOther
		}
	}
	return audit.ExitCode(err)
}

// cmdAuditQuery answers "who looked at this patient's record" and similar
// questions, as a table for people or AuditEvent JSON for tools.
func cmdAuditQuery(_ context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flags("audit query", stderr)
	sel := addSelectionFlags(fs)
	keys := addKeyFlags(fs)
	asJSON := fs.Bool("json", false, "one AuditEvent JSON document per line (NDJSON)")
	bundle := fs.Bool("bundle", false, "one FHIR searchset Bundle of AuditEvents")
	limit := fs.Int("limit", 0, "stop after this many records (0: no limit)")
	dir, code, ok := parseDir(fs, args, usageQuery, stderr)
	if !ok {
		return code
	}
	if *asJSON && *bundle {
		fmt.Fprintln(stderr, "phigate audit query: --json and --bundle are mutually exclusive")
		return 2
	}
	if *limit < 0 {
		fmt.Fprintln(stderr, "phigate audit query: --limit must not be negative")
		return 2
	}
	f, deny, err := sel.filter(time.Now())
	if err != nil {
		fmt.Fprintln(stderr, "phigate audit query:", err)
		return 2
	}
	enc, err := keys.load()
	if err != nil {
		fmt.Fprintln(stderr, "phigate audit query:", err)
		return audit.ExitCode(err)
	}
	opts := audit.QueryOptions{EncryptionKey: enc, Limit: *limit}
	if deny {
		opts.Limit = 0 // applied after the outcome filter below
	}
	entries, err := audit.Query(dir, f, opts)
	if err != nil {
		// A damaged log still answers up to the damage; print what was read
		// and fail with the damage's exit code.
		fmt.Fprintln(stderr, "phigate audit query:", err)
	}
	if deny {
		entries = denials(entries, *limit)
	}
	var werr error
	switch {
	case *asJSON:
		werr = audit.WriteJSON(stdout, entries)
	case *bundle:
		werr = audit.WriteBundle(stdout, entries)
	default:
		werr = audit.WriteTable(stdout, entries)
	}
	if werr != nil {
		fmt.Fprintln(stderr, "phigate audit query:", werr)
		if err == nil {
			return audit.ExitOther
		}
	}
	return audit.ExitCode(err)
}

// denials keeps entries whose outcome is not success, up to limit.
func denials(entries []audit.Entry, limit int) []audit.Entry {
	out := entries[:0]
	for _, e := range entries {
		if e.Event.Outcome != audit.OutcomeSuccess {
			out = append(out, e)
			if limit > 0 && len(out) == limit {
				break
			}
		}
	}
	return out
}

// cmdAuditReplay re-evaluates recorded decisions under another policy and
// lists those whose outcome would change: the impact of a policy change
// measured on real traffic before it ships.
func cmdAuditReplay(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flags("audit replay", stderr)
	sel := addSelectionFlags(fs)
	keys := addKeyFlags(fs)
	policyDir := fs.String("policy", "", "policy directory (or .tar.gz bundle) to replay under")
	asJSON := fs.Bool("json", false, "one JSON object per changed decision")
	dir, code, ok := parseDir(fs, args, usageReplay, stderr)
	if !ok {
		return code
	}
	if *policyDir == "" {
		fmt.Fprintln(stderr, "phigate audit replay: --policy is required\nusage:", usageReplay)
		return 2
	}
	f, deny, err := sel.filter(time.Now())
	if err == nil && (deny || *sel.kind == audit.KindFiltering) {
		err = errors.New("--outcome deny and --kind filtering do not apply to replay")
	}
	if err != nil {
		fmt.Fprintln(stderr, "phigate audit replay:", err)
		return 2
	}
	enc, err := keys.load()
	if err != nil {
		fmt.Fprintln(stderr, "phigate audit replay:", err)
		return audit.ExitCode(err)
	}
	// Every recorded decision is evaluated afresh: a review must not rest
	// on the candidate policy's own promise of how long a decision holds.
	engine, err := policy.NewEngine(ctx, policy.Config{Source: policySource(*policyDir),
		DecisionCache: policy.DecisionCacheConfig{Disabled: true}}, zap.NewNop(), nil)
	if err != nil {
		fmt.Fprintln(stderr, "phigate audit replay:", err)
		return audit.ExitOther
	}
	defer engine.Close()
	changes, rep, err := audit.Replay(ctx, dir, engine, f, audit.ReplayOptions{EncryptionKey: enc})
	if err != nil {
		fmt.Fprintln(stderr, "phigate audit replay:", err)
		return audit.ExitCode(err)
	}
	if err := audit.WriteChanges(stdout, changes, *asJSON); err != nil {
		fmt.Fprintln(stderr, "phigate audit replay:", err)
		return audit.ExitOther
	}
	summary := stdout
	if *asJSON {
		summary = stderr // keep stdout pure JSON lines
	}
	fmt.Fprintf(summary, "replayed %d decisions under %s: %d would change (%d skipped: denied before the policy ran)\n",
		rep.Evaluated, strings.TrimPrefix(policySource(*policyDir).String(), "dir:"), rep.Changed, rep.Skipped)
	if rep.Changed > 0 {
		return ExitReplayChanged
	}
	return 0
}
