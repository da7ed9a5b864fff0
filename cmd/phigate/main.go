// Command phigate is the HIPAA access-control sidecar for Envoy: it serves
// ext_authz and ext_proc, and carries the tools around them (config and
// policy checks, the Envoy bootstrap, the demo stack, audit and bench).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"

	"github.com/phigate/phigate/server"
)

// command is one subcommand. run returns the process exit code.
type command struct {
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) int
}

func commands() map[string]command {
	return map[string]command{
		"serve":           {"serve ext_authz and ext_proc (phigate serve --config phigate.yaml)", cmdServe},
		"version":         {"print the version, VCS revision and Go version of this binary", cmdVersion},
		"config check":    {"validate a configuration file without starting", cmdConfigCheck},
		"envoy bootstrap": {"write the Envoy bootstrap for the sidecar pattern", cmdEnvoyBootstrap},
		"policy test":     {"run a policy directory's Rego tests", cmdPolicyTest},
		"policy check":    {"compile a policy strictly and check its decision shape", cmdPolicyCheck},
		"policy eval":     {"evaluate one request against a policy, optionally explained", cmdPolicyEval},
		"demo token":      {"mint a token the demo stack trusts", cmdDemoToken},
		"bench":           {"load-test the authorization path (phigate bench --baseline)", cmdBench},
		"demo up":         {"start Envoy, phigate and the legacy service on loopback", cmdDemoUp},
		"demo upstream":   {"serve the legacy FHIR service alone", cmdDemoUpstream},
		"audit verify":    {"verify the audit trail's hash chain and signed checkpoints", cmdAuditVerify},
		"audit query":     {"list audit records (who accessed a patient, denials, break-glass)", cmdAuditQuery},
		"audit replay":    {"re-evaluate recorded decisions under another policy, list changes", cmdAuditReplay},
		"audit probe":     {"measure what a durable audit append costs on a directory's disk", cmdAuditProbe},
		"audit keygen":    {"create the audit checkpoint signing key and print its public key for pinning", cmdAuditKeygen},
		"audit pubkey":    {"print the audit signing key's public key (PEM or JWK Set) for verify --trusted-keys", cmdAuditPubkey},
		"audit sink-read": {"print a jsonl audit sink's file as NDJSON, opening encrypted lines", cmdAuditSinkRead},
		"store migrate":   {"bring the shared PostgreSQL store's schema to this build's version", cmdStoreMigrate},
		"store check":     {"check that the shared PostgreSQL store is at this build's schema version", cmdStoreCheck},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := dispatch(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// dispatch finds the longest command name that prefixes args.
func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmds := commands()
	for n := 2; n >= 1; n-- {
		if len(args) < n {
			continue
		}
		if c, ok := cmds[strings.Join(args[:n], " ")]; ok {
			return c.run(ctx, args[n:], stdout, stderr)
		}
	}
	usage(stderr, cmds)
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		return 0
	}
	return 2
}

func usage(w io.Writer, cmds map[string]command) {
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Fprintln(w, "usage: phigate <command> [flags]")
	fmt.Fprintln(w)
	for _, n := range names {
		fmt.Fprintf(w, "  %-18s %s\n", n, cmds[n].summary)
	}
}

// flags returns a FlagSet that reports errors instead of exiting.
func flags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("phigate "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// parse parses flags, mapping -h to exit 0 and bad flags to exit 2.
func parse(fs *flag.FlagSet, args []string) (int, bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, false
		}
		return 2, false
	}
	return 0, true
}

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
		fmt.Fprintln(stderr, "phigate:", err)
		return 1
	}
	engine, verifier, err := decisionPath(ctx, cfg)
	if err != nil {
		fmt.Fprintln(stderr, "phigate:", err)
		return 1
	}
	defer engine.Close()
	_ = verifier.Close()
	fmt.Fprintf(stdout, "%s: ok (policy revision %s)\n", fs.Arg(0), engine.Status().Revision)
	return 0
}
