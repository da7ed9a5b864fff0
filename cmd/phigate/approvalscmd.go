package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/phigate/phigate/server"
	"github.com/phigate/phigate/store"
)

// The approval commands are clients of a running phigate's admin
// listener, not of the store: the server verifies the caller's token and
// role and writes each step to its audit trail, which a command writing
// the store directly could do neither of.

type workflowFlags struct {
	admin, tokenFile, tokenEnv *string
	json                       *bool
}

func addWorkflowFlags(fs *flag.FlagSet, admin string) workflowFlags {
	return workflowFlags{
		admin:     fs.String("admin", admin, "the phigate admin listener (listen.admin), host:port or URL"),
		tokenFile: fs.String("token-file", "", "file holding your bearer token"),
		tokenEnv:  fs.String("token-env", "", "environment variable holding it (default PHIGATE_TOKEN)"),
		json:      fs.Bool("json", false, "print JSON"),
	}
}

// client reads the token from a file or the environment, never a flag:
// a flag's value shows in the process list and the shell history.
func (w workflowFlags) client() (*server.ApprovalClient, error) {
	var tok string
	switch {
	case *w.tokenFile != "" && *w.tokenEnv != "":
		return nil, errors.New("--token-file and --token-env are mutually exclusive")
	case *w.tokenFile != "":
		b, err := os.ReadFile(*w.tokenFile)
		if err != nil {
			return nil, fmt.Errorf("--token-file: %w", err)
		}
		tok = strings.TrimSpace(string(b))
	default:
		env := *w.tokenEnv
		if env == "" {
			env = "PHIGATE_TOKEN"
		}
		tok = strings.TrimSpace(os.Getenv(env))
	}
	if tok == "" {
		return nil, errors.New("no token (give --token-file, or set PHIGATE_TOKEN)")
	}
	return &server.ApprovalClient{Admin: *w.admin, Token: tok}, nil
}

func printApprovals(stdout io.Writer, asJSON bool, as []store.Approval) {
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(as)
		return
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tKIND\tSTATE\tREQUESTER\tAPPROVER\tEXPIRES\tSCOPE")
	for _, a := range as {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", a.ID, a.Kind, a.State, a.Requester, dash(a.Approver),
			a.Expires.Format(time.RFC3339), a.Scope)
	}
	_ = tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// cmdApprovalsList lists requests for an approver.
func cmdApprovalsList(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flags("approvals list", stderr)
	wf := addWorkflowFlags(fs, "127.0.0.1:9902")
	state := fs.String("state", "pending", "pending, approved, denied, lapsed, or all")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	c, err := wf.client()
	if err != nil {
		fmt.Fprintln(stderr, "phigate approvals list:", err)
		return 2
	}
	s := *state
	if s == "all" {
		s = ""
	}
	as, err := c.List(ctx, s)
	if err != nil {
		fmt.Fprintln(stderr, "phigate approvals list:", err)
		return 1
	}
	printApprovals(stdout, *wf.json, as)
	return 0
}

func decideCmd(name string, approve bool) func(context.Context, []string, io.Writer, io.Writer) int {
	return func(ctx context.Context, args []string, stdout, stderr io.Writer) int {
		fs := flags(name, stderr)
		wf := addWorkflowFlags(fs, "127.0.0.1:9902")
		if code, ok := parse(fs, args); !ok {
			return code
		}
		if fs.NArg() != 1 {
			fmt.Fprintf(stderr, "usage: phigate %s [--admin host:port] [--token-file F] ID\n", name)
			return 2
		}
		c, err := wf.client()
		if err != nil {
			fmt.Fprintf(stderr, "phigate %s: %v\n", name, err)
			return 2
		}
		a, err := c.Decide(ctx, fs.Arg(0), approve)
		if err != nil {
			fmt.Fprintf(stderr, "phigate %s: %v\n", name, err)
			return 1
		}
		printApprovals(stdout, *wf.json, []store.Approval{a})
		return 0
	}
}

// cmdElevationRequest asks, with the caller's own token, for a role.
func cmdElevationRequest(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flags("elevation request", stderr)
	wf := addWorkflowFlags(fs, "127.0.0.1:9902")
	role := fs.String("role", "", "the role asked for (one of approvals.elevation.roles)")
	reason := fs.String("reason", "", "why it is needed (kept in the store, never logged)")
	d := fs.Duration("duration", time.Hour, "for how long, once granted")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if *role == "" || *reason == "" {
		fmt.Fprintln(stderr, "usage: phigate elevation request --role R --reason TEXT [--duration 1h] [--token-file F]")
		return 2
	}
	c, err := wf.client()
	if err != nil {
		fmt.Fprintln(stderr, "phigate elevation request:", err)
		return 2
	}
	a, err := c.RequestElevation(ctx, *role, *reason, *d)
	if err != nil {
		fmt.Fprintln(stderr, "phigate elevation request:", err)
		return 1
	}
	printApprovals(stdout, *wf.json, []store.Approval{a})
	return 0
}
