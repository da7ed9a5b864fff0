package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/phigate/phigate/demo"
	"github.com/phigate/phigate/demo/demokeys"
	"github.com/phigate/phigate/internal/cli"
)

func cmdDemoToken(_ context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flags("token", stderr)
	var spec demokeys.TokenSpec
	var roles, scopes, amr cli.List
	dir := fs.String("dir", demo.Dir, "demo key directory")
	fs.StringVar(&spec.Subject, "sub", "", "subject (required)")
	fs.Var(&roles, "role", "role (repeatable or comma-separated)")
	fs.Var(&scopes, "scope", "SMART scope (repeatable or space/comma-separated)")
	fs.StringVar(&spec.Purpose, "purpose", "", "purpose of use (HL7 v3 ActReason, e.g. TREAT)")
	fs.StringVar(&spec.FHIRUser, "fhir-user", "", "fhirUser reference, e.g. Practitioner/prac-001 (default from --sub)")
	fs.StringVar(&spec.Patient, "patient", "", "SMART launch patient")
	fs.StringVar(&spec.ClientID, "client", "demo-client", "client id")
	fs.Var(&amr, "amr", "authentication methods, e.g. pwd,otp for multi-factor")
	fs.DurationVar(&spec.TTL, "ttl", time.Hour, "lifetime")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if spec.Subject == "" {
		fmt.Fprintln(stderr, "phigate-demo token: --sub is required")
		return 2
	}
	spec.Roles, spec.Scopes, spec.AMR = roles, scopes, amr
	if spec.FHIRUser == "" {
		spec.FHIRUser = demo.DefaultFHIRUser(spec.Subject)
	}
	keys, err := demokeys.LoadOrCreate(*dir)
	if err != nil {
		fmt.Fprintln(stderr, "phigate-demo token:", err)
		return 1
	}
	tok, err := keys.Mint(spec)
	if err != nil {
		fmt.Fprintln(stderr, "phigate-demo token:", err)
		return 1
	}
	fmt.Fprintln(stdout, tok)
	return 0
}
