package main

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/phigate/phigate/audit"
	"github.com/phigate/phigate/internal/fskind"
	"github.com/phigate/phigate/plan"
	"github.com/phigate/phigate/policy"
	"github.com/phigate/phigate/server"
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
	approval                                             *string
	breakGlass                                           *bool
}

func addSelectionFlags(fs *flag.FlagSet) selection {
	return selection{
		patient:    fs.String("patient", "", "only records about this patient: its id, or Patient/<id>"),
		user:       fs.String("user", "", "only records of this user (token subject or fhirUser reference)"),
		since:      fs.String("since", "", "only records at or after this time (RFC 3339, or a duration back from now such as 24h)"),
		until:      fs.String("until", "", "only records before this time (RFC 3339, or a duration back from now)"),
		outcome:    fs.String("outcome", "", "allow or deny (or an AuditEvent outcome code 0, 4, 8)"),
		decision:   fs.String("decision", "", "only this decision id and its filtering record"),
		kind:       fs.String("kind", "", "decision, filtering, notification (outcomes of break-glass notifications), workflow (approval steps), quarantine (ranges moved aside at startup) or ingest (clinical event feed messages)"),
		approval:   fs.String("approval", "", "only the records of this approval: its steps and the decisions taken under it"),
		breakGlass: fs.Bool("break-glass", false, "only emergency-override (break-glass) decisions"),
	}
}

// patientFlag reads --patient: an id, or the reference Patient/<id>. Any
// other reference is refused rather than matched against nothing, which
// would answer "nobody looked" when the question was malformed.
func patientFlag(v string) (string, error) {
	if v == "" {
		return "", nil
	}
	id := strings.TrimPrefix(v, "Patient/")
	if id == "" || strings.ContainsAny(id, "/?#, \t") || len(id) > 64 {
		return "", errors.New("--patient: want a patient id or Patient/<id>")
	}
	return id, nil
}

// filter turns the flags into an audit.Filter. deny is returned separately
// because a denial is either outcome 4 (the caller's request failed) or 8
// (phigate failed closed), and audit.Filter matches one code.
func (s selection) filter(now time.Time) (f audit.Filter, deny bool, err error) {
	f = audit.Filter{User: *s.user, DecisionID: *s.decision, Approval: *s.approval}
	if f.Patient, err = patientFlag(*s.patient); err != nil {
		return f, false, err
	}
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
	case "", audit.KindDecision, audit.KindFiltering, audit.KindQuarantine, audit.KindIngest, audit.KindNotification, audit.KindConsole, audit.KindWorkflow:
		f.Kind = *s.kind
	default:
		return f, false, fmt.Errorf("--kind: %q is not %s, %s, %s, %s, %s, %s or %s", *s.kind, audit.KindDecision, audit.KindFiltering, audit.KindNotification, audit.KindWorkflow, audit.KindQuarantine, audit.KindIngest, audit.KindConsole)
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
	usageVerify = "phigate audit verify <dir> (--trusted-keys FILE | --trust-on-first-use) [--witness FILE] [--encryption-key-file f | --encryption-key-env VAR] [--require-checkpointed] [--json]\n" +
		"       phigate audit verify --central --trusted-keys FILE [--dsn-file F | --dsn-env NAME] [--replica ID] [--encryption-key-file f | --encryption-key-env VAR] [--json]"
	usageKeygen = "phigate audit keygen --out FILE [--jwk]"
	usagePubkey = "phigate audit pubkey (--signing-key-file FILE | --config phigate.yaml) [--jwk]"
	usageSink   = "phigate audit sink-read <jsonl sink file> [--encryption-key-file f | --encryption-key-env VAR]"
	usageQuery  = "phigate audit query (<dir> | --central [--dsn-file F | --dsn-env NAME]) [--patient P] [--user U] [--since T] [--until T] [--outcome allow|deny] [--break-glass] [--json | --bundle]"
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
	fs.DurationVar(&o.Duration, "duration", 10*time.Second, "length of each phase")
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
	if err := audit.WriteProbeReport(stdout, rep, fskind.Of(dir), *asJSON); err != nil {
		fmt.Fprintln(stderr, "phigate audit probe:", err)
		return 1
	}
	return 0
}

// cmdAuditVerify checks the whole trail: hashes, chain, signed checkpoints.
// Its exit code says which kind of damage was found (audit.ExitCode) and the
// report names the first bad position. The public key is pinned: one read
// from beside the trail proves nothing to an attacker who can replace both.
func cmdAuditVerify(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flags("audit verify", stderr)
	central := addCentralFlags(fs)
	trusted := fs.String("trusted-keys", "", "the pinned checkpoint public key(s), held off the audit host: PEM (one or more PUBLIC KEY blocks), a JWK or a JWK Set (from phigate audit pubkey)")
	fs.StringVar(trusted, "key", "", "same as --trusted-keys")
	tofu := fs.Bool("trust-on-first-use", false, "trust the public key stored in the audit directory (proves integrity only against someone who cannot write the directory)")
	witness := fs.String("witness", "", "checkpoints kept off the trail: the witness file (audit.witness_file) or a jsonl sink's output; the trail must reach and match each")
	keys := addKeyFlags(fs)
	strict := fs.Bool("require-checkpointed", false, "fail when records follow the newest checkpoint (the log was not closed cleanly)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	dir, code, ok := central.parse(fs, args, usageVerify, stderr)
	if !ok {
		return code
	}
	if *central.on {
		if *tofu || *witness != "" || *strict {
			fmt.Fprintln(stderr, "phigate audit verify --central: --trust-on-first-use, --witness and --require-checkpointed apply to a local trail only")
			return 2
		}
		return central.verify(ctx, *trusted, keys, *asJSON, stdout, stderr)
	}
	var ks audit.KeySet
	var err error
	switch {
	case *trusted != "" && *tofu:
		fmt.Fprintln(stderr, "phigate audit verify: --trusted-keys and --trust-on-first-use are mutually exclusive")
		return 2
	case *trusted != "":
		ks, err = audit.LoadTrustedKeys(*trusted)
	case *tofu:
		ks, err = audit.LoadTrustedKeys(audit.DirPublicKeyFile(dir))
		if err == nil {
			warn := fmt.Sprintf("WARNING: --trust-on-first-use: verifying against the public key stored in %s (key id %s). "+
				"Anyone who can write that directory can replace the key with the trail. Pin it: "+
				"phigate audit pubkey --signing-key-file <key> > trusted.pem, keep the file off this host, and pass --trusted-keys trusted.pem.",
				dir, strings.Join(ks.IDs(), ","))
			fmt.Fprintln(stderr, warn)
			if !*asJSON {
				fmt.Fprintln(stdout, warn)
			}
		}
	default:
		fmt.Fprintln(stderr, "phigate audit verify: no trusted key: pass --trusted-keys FILE, a copy of the public key held off the audit host "+
			"(phigate audit pubkey prints it), or --trust-on-first-use to trust the key stored in the directory\nusage:", usageVerify)
		return audit.ExitConfig
	}
	if err != nil {
		fmt.Fprintln(stderr, "phigate audit verify:", err)
		return audit.ExitCode(err)
	}
	opts := audit.VerifyOptions{RequireCheckpointedTail: *strict}
	if *witness != "" {
		if opts.Witness, err = audit.ReadCheckpointFile(*witness); err != nil {
			fmt.Fprintln(stderr, "phigate audit verify: --witness:", err)
			return audit.ExitCode(err)
		}
	}
	if opts.EncryptionKey, err = keys.load(); err != nil {
		fmt.Fprintln(stderr, "phigate audit verify:", err)
		return audit.ExitCode(err)
	}
	rep, err := audit.VerifyTrusted(dir, ks, opts)
	if werr := audit.WriteVerifyReport(stdout, rep, err, *asJSON); werr != nil {
		fmt.Fprintln(stderr, "phigate audit verify:", werr)
		if err == nil {
			return audit.ExitOther
		}
	}
	return audit.ExitCode(err)
}

// cmdAuditKeygen makes the checkpoint signing key before the first start,
// so the public key can be pinned (and copied off the host) before there is
// anything to verify. It never overwrites a key.
func cmdAuditKeygen(_ context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flags("audit keygen", stderr)
	out := fs.String("out", "", "where to write the private key (PEM PKCS#8, mode 0600); the public key goes to FILE.pub. Keep it outside the audit directory (audit.signing_key_file)")
	jwk := fs.Bool("jwk", false, "print the public key as a JWK Set instead of PEM")
	pos, code, ok := parseInterleaved(fs, args)
	if !ok {
		return code
	}
	if *out == "" || len(pos) != 0 {
		fmt.Fprintln(stderr, "usage:", usageKeygen)
		return 2
	}
	priv, err := audit.CreateSigningKey(*out)
	if err != nil {
		fmt.Fprintln(stderr, "phigate audit keygen:", err)
		return audit.ExitCode(err)
	}
	pub := priv.Public().(ed25519.PublicKey)
	fmt.Fprintf(stderr, "wrote %s and %s (key id %s); pin the public key printed below where audit verify runs\n",
		*out, audit.PublicKeyPath(*out), audit.KeyID(pub))
	return writePublic(stdout, stderr, pub, *jwk)
}

// cmdAuditPubkey prints the public half of the signing key for pinning.
func cmdAuditPubkey(_ context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flags("audit pubkey", stderr)
	keyFile := fs.String("signing-key-file", "", "the private signing key (audit.signing_key_file)")
	cfgFile := fs.String("config", "", "read audit.signing_key_file from this phigate.yaml")
	jwk := fs.Bool("jwk", false, "print a JWK Set (with the key id as kid) instead of PEM")
	pos, code, ok := parseInterleaved(fs, args)
	if !ok {
		return code
	}
	if (*keyFile == "") == (*cfgFile == "") || len(pos) != 0 {
		fmt.Fprintln(stderr, "usage:", usagePubkey)
		return 2
	}
	if *cfgFile != "" {
		cfg, err := server.LoadConfig(*cfgFile)
		if err != nil {
			fmt.Fprintln(stderr, "phigate audit pubkey:", err)
			return audit.ExitConfig
		}
		*keyFile = cfg.Audit.SigningKeyFile
	}
	priv, err := audit.LoadSigningKey(*keyFile)
	if err != nil {
		fmt.Fprintln(stderr, "phigate audit pubkey:", err)
		return audit.ExitCode(err)
	}
	return writePublic(stdout, stderr, priv.Public().(ed25519.PublicKey), *jwk)
}

func writePublic(stdout, stderr io.Writer, pub ed25519.PublicKey, jwk bool) int {
	var err error
	if jwk {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(struct {
			Keys []audit.JWK `json:"keys"`
		}{[]audit.JWK{audit.PublicJWK(pub)}})
	} else {
		_, err = stdout.Write(audit.PublicKeyPEM(pub))
	}
	if err != nil {
		fmt.Fprintln(stderr, "phigate audit:", err)
		return audit.ExitOther
	}
	return 0
}

// cmdAuditSinkRead prints a jsonl sink's file as plain NDJSON, opening the
// lines that were sealed with the trail's encryption key.
func cmdAuditSinkRead(_ context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flags("audit sink-read", stderr)
	keys := addKeyFlags(fs)
	file, code, ok := parseDir(fs, args, usageSink, stderr)
	if !ok {
		return code
	}
	key, err := keys.load()
	if err != nil {
		fmt.Fprintln(stderr, "phigate audit sink-read:", err)
		return audit.ExitCode(err)
	}
	f, err := os.Open(file)
	if err != nil {
		fmt.Fprintln(stderr, "phigate audit sink-read:", err)
		return audit.ExitIO
	}
	defer f.Close()
	bw := bufio.NewWriter(stdout)
	err = audit.ReadJSONLines(f, key, func(line []byte) error {
		bw.Write(line)
		return bw.WriteByte('\n')
	})
	if ferr := bw.Flush(); err == nil && ferr != nil {
		err = ferr
	}
	if err != nil {
		fmt.Fprintln(stderr, "phigate audit sink-read:", err)
		return audit.ExitCode(err)
	}
	return 0
}

// cmdAuditQuery answers "who looked at this patient's record" and similar
// questions, as a table for people or AuditEvent JSON for tools.
func cmdAuditQuery(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flags("audit query", stderr)
	central := addCentralFlags(fs)
	sel := addSelectionFlags(fs)
	keys := addKeyFlags(fs)
	asJSON := fs.Bool("json", false, "one AuditEvent JSON document per line (NDJSON)")
	bundle := fs.Bool("bundle", false, "one FHIR searchset Bundle of AuditEvents")
	limit := fs.Int("limit", 0, "stop after this many records (0: no limit)")
	dir, code, ok := central.parse(fs, args, usageQuery, stderr)
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
	var entries []audit.Entry
	if *central.on {
		entries, err = central.query(ctx, f, opts)
	} else {
		entries, err = audit.Query(dir, f, opts)
	}
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
	if err == nil && (deny || *sel.kind == audit.KindFiltering || *sel.kind == audit.KindQuarantine || *sel.kind == audit.KindNotification) {
		err = errors.New("--outcome deny and --kind filtering, notification or quarantine do not apply to replay")
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
	// Replay asks whether the policy decides otherwise; which token keys a
	// deployment holds is not the policy's, and replay has none, so any
	// key id is taken as held.
	engine, err := policy.NewEngine(ctx, policy.Config{Source: policy.SourceFor(*policyDir),
		DecisionCache: policy.DecisionCacheConfig{Disabled: true}, TokenKeys: plan.AnyKey()}, zap.NewNop(), nil)
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
		rep.Evaluated, strings.TrimPrefix(policy.SourceFor(*policyDir).String(), "dir:"), rep.Changed, rep.Skipped)
	if rep.Changed > 0 {
		return ExitReplayChanged
	}
	return 0
}
