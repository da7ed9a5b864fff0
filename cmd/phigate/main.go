// Command phigate is the HIPAA access-control sidecar for Envoy: it serves
// ext_authz and ext_proc, and carries the tools an operator needs around
// them (config and policy checks, the Envoy bootstrap, the audit trail's
// readers). Each verb parses its flags and calls a package; the demo stack
// and the bench live in phigate-demo, so this binary carries neither.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/phigate/phigate/internal/cli"
	"github.com/phigate/phigate/server"
)

func commands() map[string]cli.Command {
	return map[string]cli.Command{
		"serve":               {Summary: "serve ext_authz and ext_proc (phigate serve --config phigate.yaml)", Run: cmdServe},
		"version":             {Summary: "print the version, VCS revision and Go version of this binary", Run: cmdVersion},
		"config check":        {Summary: "validate a configuration file without starting", Run: cmdConfigCheck},
		"envoy bootstrap":     {Summary: "write the Envoy bootstrap for the sidecar pattern", Run: cmdEnvoyBootstrap},
		"policy test":         {Summary: "run a policy directory's Rego tests", Run: cmdPolicyTest},
		"policy check":        {Summary: "compile a policy strictly and check its decision shape", Run: cmdPolicyCheck},
		"policy eval":         {Summary: "evaluate one request against a policy, optionally explained", Run: cmdPolicyEval},
		"audit verify":        {Summary: "verify the audit trail's hash chain and signed checkpoints", Run: cmdAuditVerify},
		"audit query":         {Summary: "list audit records (who accessed a patient, denials, break-glass)", Run: cmdAuditQuery},
		"audit replay":        {Summary: "re-evaluate recorded decisions under another policy, list changes", Run: cmdAuditReplay},
		"audit review":        {Summary: "entitlement review: unused identities and scopes, unexercised roles, unreviewed break-glass, a seeded sample of reads", Run: cmdAuditReview},
		"audit mark-reviewed": {Summary: "record that a break-glass access was reviewed (approver token, through the admin listener)", Run: cmdAuditMarkReviewed},
		"audit probe":         {Summary: "measure what a durable audit append costs on a directory's disk", Run: cmdAuditProbe},
		"audit keygen":        {Summary: "create the audit checkpoint signing key and print its public key for pinning", Run: cmdAuditKeygen},
		"audit pubkey":        {Summary: "print the audit signing key's public key (PEM or JWK Set) for verify --trusted-keys", Run: cmdAuditPubkey},
		"audit sink-read":     {Summary: "print a jsonl audit sink's file as NDJSON, opening encrypted lines", Run: cmdAuditSinkRead},
		"store migrate":       {Summary: "bring the shared PostgreSQL store's schema to this build's version", Run: cmdStoreMigrate},
		"store check":         {Summary: "check that the shared PostgreSQL store is at this build's schema version", Run: cmdStoreCheck},
		"store consent":       {Summary: "store a patient's consent directive (opt-out or restriction) in the shared store", Run: cmdStoreConsent},
		"store consents":      {Summary: "list a patient's consent directives in force", Run: cmdStoreConsents},
		"store elevate":       {Summary: "grant a user a role for a time (just-in-time elevation)", Run: cmdStoreElevate},
		"store elevations":    {Summary: "list a user's elevations in force", Run: cmdStoreElevations},
		"store relate":        {Summary: "store a care relationship (practitioner and patient)", Run: cmdStoreRelate},
		"store unrelate":      {Summary: "end a care relationship now", Run: cmdStoreUnrelate},
		"store alerts":        {Summary: "list alerts raised on identities (bulk reads over a limit)", Run: cmdStoreAlerts},
		"store resolve-alert": {Summary: "clear an alert (the identity may go on) or escalate it", Run: cmdStoreResolveAlert},
		"store relationships": {Summary: "list a practitioner's care relationships in force", Run: cmdStoreRelationships},
		"approvals list":      {Summary: "list requests waiting for a second person's approval (approver token)", Run: cmdApprovalsList},
		"approvals approve":   {Summary: "approve a request by its reference (approver token; not your own)", Run: decideCmd("approvals approve", true)},
		"approvals deny":      {Summary: "deny a request by its reference (approver token)", Run: decideCmd("approvals deny", false)},
		"elevation request":   {Summary: "ask, with your own token, for a role for a time (just-in-time elevation)", Run: cmdElevationRequest},
		"elevation approve":   {Summary: "grant a requested elevation (approver token; not your own)", Run: decideCmd("elevation approve", true)},
		"elevation deny":      {Summary: "refuse a requested elevation (approver token)", Run: decideCmd("elevation deny", false)},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := dispatch(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return cli.Dispatch(ctx, "phigate", commands(), args, stdout, stderr)
}

func flags(name string, stderr io.Writer) *flag.FlagSet { return cli.Flags("phigate "+name, stderr) }

func parse(fs *flag.FlagSet, args []string) (int, bool) { return cli.Parse(fs, args) }

func cmdServe(ctx context.Context, args []string, _, stderr io.Writer) int {
	fs := flags("serve", stderr)
	path := fs.String("config", "phigate.yaml", "configuration file")
	grpcAddr := fs.String("grpc", "", "override listen.grpc")
	adminAddr := fs.String("admin", "", "override listen.admin")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	cfg, err := server.LoadConfig(*path)
	if err == nil && (*grpcAddr != "" || *adminAddr != "") {
		if *grpcAddr != "" {
			cfg.Listen.GRPC = *grpcAddr
		}
		if *adminAddr != "" {
			cfg.Listen.Admin = *adminAddr
		}
		err = cfg.Validate()
	}
	if err != nil {
		fmt.Fprintln(stderr, "phigate:", err)
		return 1
	}
	server.ApplyRuntime(cfg.Runtime)
	log, err := server.NewLogger(cfg.Log)
	if err != nil {
		fmt.Fprintln(stderr, "phigate: log:", err)
		return 1
	}
	defer func() { _ = log.Sync() }()
	s, err := server.New(ctx, cfg, log, server.WithBuildInfo(buildInfo()))
	if err != nil {
		fmt.Fprintln(stderr, "phigate:", err)
		return 1
	}
	if err := s.Run(ctx); err != nil {
		fmt.Fprintln(stderr, "phigate:", err)
		return 1
	}
	return 0
}

// cmdConfigCheck validates a file as serve would start with it: every field,
// the policy compiled and shape-checked, and the JWKS readable.
func cmdConfigCheck(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flags("config check", stderr)
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "usage: phigate config check <phigate.yaml>")
		return 2
	}
	cfg, err := server.LoadConfig(fs.Arg(0))
	if err != nil {
		// Every problem, one per line.
		fmt.Fprintln(stderr, "phigate:", strings.ReplaceAll(err.Error(), "\n", "\n  "))
		return 1
	}
	for _, w := range cfg.Warnings() {
		fmt.Fprintln(stderr, "warning:", w)
	}
	engine, verifier, err := decisionPath(ctx, cfg)
	if err != nil {
		fmt.Fprintln(stderr, "phigate:", err)
		return 1
	}
	defer engine.Close()
	_ = verifier.Close()
	if err, w := cfg.NotifyProblems(engine.Snapshot()); err != nil {
		fmt.Fprintln(stderr, "phigate:", err)
		return 1
	} else if w != "" {
		fmt.Fprintln(stderr, "warning:", w)
	}
	fmt.Fprintf(stdout, "%s: ok (policy revision %s)\n", fs.Arg(0), engine.Status().Revision)
	return 0
}
