// Command phigate-demo runs what shows phigate and measures it, apart from
// the production binary: the demo stack on loopback, the legacy FHIR
// service alone, tokens for the demo population, and the load generator.
// Each verb parses its flags and calls the demo or bench package.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/phigate/phigate/bench"
	"github.com/phigate/phigate/demo"
	"github.com/phigate/phigate/internal/cli"
)

func commands() map[string]cli.Command {
	return map[string]cli.Command{
		"up":       {Summary: "start Envoy, phigate and the legacy service on loopback", Run: cmdUp},
		"upstream": {Summary: "serve the legacy FHIR service alone", Run: cmdUpstream},
		"token":    {Summary: "mint a token the demo stack trusts", Run: cmdDemoToken},
		"bench":    {Summary: "load-test the authorization path (phigate-demo bench --baseline)", Run: cmdBench},
		"noop":     {Summary: "serve the bench's no-op ext_authz baseline in a process of its own", Run: cmdNoop},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := dispatch(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return cli.Dispatch(ctx, "phigate-demo", commands(), args, stdout, stderr)
}

func flags(name string, stderr io.Writer) *flag.FlagSet {
	return cli.Flags("phigate-demo "+name, stderr)
}

func parse(fs *flag.FlagSet, args []string) (int, bool) { return cli.Parse(fs, args) }

// cmdUp starts the demo stack, prints curl lines with demo tokens, and runs
// until interrupted.
func cmdUp(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flags("up", stderr)
	var o demo.UpOptions
	fs.StringVar(&o.Dir, "dir", demo.Dir, "demo state directory (keys, configuration, bootstrap)")
	fs.BoolVar(&o.Check, "check", false, "start the stack, run the printed requests once, and exit")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if err := demo.Up(ctx, o, stdout, stderr); err != nil {
		fmt.Fprintln(stderr, "phigate-demo up:", err)
		return 1
	}
	return 0
}

// cmdNoop serves the no-op ext_authz server alone, so that the baseline
// can be pinned to the same CPUs as a phigate serve under test (taskset)
// and measured as a process of its own with --compare.
func cmdNoop(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flags("noop", stderr)
	addr := fs.String("listen", "127.0.0.1:19003", "ext_authz listener (host:port or unix:///path)")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	srv, err := bench.StartNoop(ctx, *addr)
	if err != nil {
		fmt.Fprintln(stderr, "phigate-demo noop:", err)
		return 1
	}
	fmt.Fprintln(stdout, "no-op ext_authz on", srv.Addr())
	<-ctx.Done()
	srv.Stop()
	return 0
}

func cmdUpstream(ctx context.Context, args []string, _, stderr io.Writer) int {
	fs := flags("upstream", stderr)
	addr := fs.String("listen", "127.0.0.1:8080", "FHIR listener")
	admin := fs.String("admin", "127.0.0.1:8081", "request-log listener")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	srv, err := demo.Upstream()
	if err != nil {
		fmt.Fprintln(stderr, "phigate-demo upstream:", err)
		return 1
	}
	if err := srv.Run(ctx, *addr, *admin); err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(stderr, "phigate-demo upstream:", err)
		return 1
	}
	return 0
}
