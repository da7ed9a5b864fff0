package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/bundle"

	"github.com/phigate/phigate/authz"
	"github.com/phigate/phigate/policy"
	"github.com/phigate/phigate/server"
)

// loadBundle reads the policy named by the first argument (a directory or a
// .tar.gz bundle), or the embedded library when there is none.
func loadBundle(args []string) (policy.Source, *bundle.Bundle, error) {
	src := policy.Source{}
	if len(args) > 0 {
		src = policy.SourceFor(args[0])
	}
	if err := src.Validate(); err != nil {
		return src, nil, err
	}
	b, err := src.Load()
	return src, b, err
}

// decisionPath builds the engine and verifier a configuration names, for the
// commands that decide outside serve. The caller closes both.
func decisionPath(ctx context.Context, cfg *server.Config) (*policy.Engine, *authz.JWTVerifier, error) {
	cfg.Policy.ReloadInterval = 0
	cfg.Policy.TokenKeys = cfg.Filters.KeyIDs()
	// A bundle server is asked once, without a poller: the bundle it
	// serves now must verify and compile, or the command fails.
	cfg.Policy.BundleServer.FetchOnly = true
	engine, err := policy.NewEngine(ctx, cfg.Policy, nil, nil)
	if err != nil {
		return nil, nil, err
	}
	if cfg.Policy.BundleServer.Enabled() {
		if err := engine.Reload(ctx); err != nil {
			engine.Close()
			return nil, nil, fmt.Errorf("%s: %w", engine.Status().Source, err)
		}
	}
	verifier, err := authz.NewJWTVerifier(ctx, cfg.JWT, nil)
	if err != nil {
		engine.Close()
		return nil, nil, err
	}
	return engine, verifier, nil
}

func cmdPolicyTest(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flags("policy test", stderr)
	run := fs.String("run", "", "only tests whose name matches this regular expression")
	verbose := fs.Bool("v", false, "print every test, not only failures")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	src, b, err := loadBundle(fs.Args())
	if err != nil {
		fmt.Fprintln(stderr, "phigate:", err)
		return 1
	}
	results, err := policy.RunTests(ctx, b, *run)
	if err != nil {
		fmt.Fprintln(stderr, "phigate:", err)
		return 1
	}
	var pass, fail, skip int
	for _, r := range results {
		switch {
		case r.Fail || r.Err != nil:
			fail++
			fmt.Fprintf(stdout, "FAIL %s.%s (%s)", r.Package, r.Name, r.Duration.Round(time.Microsecond))
			if r.Err != nil {
				fmt.Fprintf(stdout, ": %v", r.Err)
			}
			fmt.Fprintln(stdout)
		case r.Skip:
			skip++
		default:
			pass++
			if *verbose {
				fmt.Fprintf(stdout, "PASS %s.%s (%s)\n", r.Package, r.Name, r.Duration.Round(time.Microsecond))
			}
		}
	}
	fmt.Fprintf(stdout, "%s: %d passed, %d failed, %d skipped\n", src, pass, fail, skip)
	if fail > 0 || pass == 0 {
		return 1
	}
	return 0
}

func cmdPolicyCheck(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flags("policy check", stderr)
	tests := fs.Bool("test", true, "also run the bundle's tests")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	src, b, err := loadBundle(fs.Args())
	if err != nil {
		fmt.Fprintln(stderr, "phigate:", err)
		return 1
	}
	s, err := policy.Build(ctx, src.String(), b, policy.BuildOptions{RunTests: *tests, DecisionCache: 1})
	if err != nil {
		fmt.Fprintln(stderr, "phigate:", err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: ok (revision %s, %d tests passed)\n", src, s.Revision, s.Tests)
	if paths := s.CacheKeyPaths(); paths != nil {
		fmt.Fprintf(stdout, "decision cache key (for decisions that set cache.until_ns): %s\n", strings.Join(paths, ", "))
	} else {
		fmt.Fprintln(stdout, "decision cache: none (the policy reads input as a whole or through a computed key)")
	}
	return 0
}

type headerFlags map[string]string

func (h headerFlags) String() string { return "" }
func (h headerFlags) Set(v string) error {
	k, val, ok := strings.Cut(v, ":")
	if !ok {
		return fmt.Errorf("header %q is not name:value", v)
	}
	h[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(val)
	return nil
}

func cmdPolicyEval(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flags("policy eval", stderr)
	request := fs.String("request", "", "the request line, e.g. 'GET /fhir/Patient/pat-0001'")
	token := fs.String("token", "", "bearer token (verified with the configuration's jwt section)")
	cfgPath := fs.String("config", "phigate.yaml", "configuration (jwt, request and policy sections)")
	dir := fs.String("policy", "", "policy directory or bundle (overrides the configuration)")
	explain := explainFlag("")
	fs.Var(&explain, "explain", "explain the decision: a summary (rules that held, comparisons that failed, with file, line and values); =full for OPA's whole trace")
	headers := headerFlags{}
	fs.Var(headers, "H", "request header name:value (repeatable)")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	method, path, ok := strings.Cut(strings.TrimSpace(*request), " ")
	if !ok {
		fmt.Fprintln(stderr, "phigate: --request must be 'METHOD /path'")
		return 2
	}
	cfg, err := server.LoadConfig(*cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, "phigate:", err)
		return 1
	}
	if *dir != "" {
		cfg.Policy.Source = policy.SourceFor(*dir)
	}
	engine, verifier, err := decisionPath(ctx, cfg)
	if err != nil {
		fmt.Fprintln(stderr, "phigate:", err)
		return 1
	}
	defer engine.Close()
	defer verifier.Close()
	if *token != "" {
		headers["authorization"] = "Bearer " + *token
	}
	var trace []string
	eval := evaluatorFunc(func(ctx context.Context, r *authz.Request) (authz.Decision, error) {
		switch explain {
		case "":
			return engine.Evaluate(ctx, r)
		case "full":
			d, lines, err := engine.Snapshot().Explain(ctx, r)
			trace = lines
			return d, err
		default:
			d, lines, err := engine.Snapshot().ExplainSummary(ctx, r)
			trace = lines
			return d, err
		}
	})
	parser, err := authz.NewRequestParser(cfg.Request)
	if err != nil {
		fmt.Fprintln(stderr, "phigate:", err)
		return 1
	}
	az := authz.NewAuthorizer(authz.Options{Verifier: verifier, Parser: parser, Evaluator: eval, Approvals: cfg.Approvals.Rules(nil)})
	req, d, err := az.Authorize(ctx, &authz.CheckInput{ID: "eval", Method: method, Path: path, Headers: headers})
	out := struct {
		Input    *authz.Request `json:"input"`
		Decision authz.Decision `json:"decision"`
		Error    string         `json:"error,omitempty"`
	}{req, d, ""}
	if err != nil {
		out.Error = err.Error()
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	_ = enc.Encode(out)
	if explain != "" {
		fmt.Fprintln(stdout, "\nrules that decided:", strings.Join(d.Audit.Rules, ", "))
		if d.CacheUntilNS > 0 {
			fmt.Fprintf(stdout, "cache.until_ns: %d (an identical request reuses this decision for %v)\n",
				d.CacheUntilNS, time.Duration(d.CacheUntilNS-req.TimeNS).Round(time.Millisecond))
		} else {
			fmt.Fprintln(stdout, "cache.until_ns: 0 (never reused)")
		}
		if explain == "full" {
			fmt.Fprintln(stdout, "trace:")
		}
		for _, l := range trace {
			fmt.Fprintln(stdout, l)
		}
	}
	return 0
}

// explainFlag is --explain (a summary) or --explain=full (the trace).
type explainFlag string

func (e *explainFlag) String() string   { return string(*e) }
func (e *explainFlag) IsBoolFlag() bool { return true }
func (e *explainFlag) Set(v string) error {
	switch v {
	case "true", "summary":
		*e = "summary"
	case "false":
		*e = ""
	case "full":
		*e = "full"
	default:
		return fmt.Errorf("%q is not summary or full", v)
	}
	return nil
}

type evaluatorFunc func(context.Context, *authz.Request) (authz.Decision, error)

func (f evaluatorFunc) Evaluate(ctx context.Context, r *authz.Request) (authz.Decision, error) {
	return f(ctx, r)
}
