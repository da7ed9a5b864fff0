package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/phigate/phigate/demo/demokeys"
)

// demoDir holds the demo stack's keys, configuration and bootstrap.
const demoDir = ".demo"

type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error {
	for _, s := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' }) {
		*l = append(*l, s)
	}
	return nil
}

func cmdDemoToken(_ context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flags("demo token", stderr)
	var spec demokeys.TokenSpec
	var roles, scopes, amr listFlag
	dir := fs.String("dir", demoDir, "demo key directory")
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
		fmt.Fprintln(stderr, "phigate: demo token: --sub is required")
		return 2
	}
	spec.Roles, spec.Scopes, spec.AMR = roles, scopes, amr
	if spec.FHIRUser == "" {
		spec.FHIRUser = defaultFHIRUser(spec.Subject)
	}
	keys, err := demokeys.LoadOrCreate(*dir)
	if err != nil {
		fmt.Fprintln(stderr, "phigate:", err)
		return 1
	}
	tok, err := keys.Mint(spec)
	if err != nil {
		fmt.Fprintln(stderr, "phigate:", err)
		return 1
	}
	fmt.Fprintln(stdout, tok)
	return 0
}

// defaultFHIRUser maps the demo population's ids to their FHIR references.
func defaultFHIRUser(sub string) string {
	switch {
	case strings.HasPrefix(sub, "prac-"):
		return "Practitioner/" + sub
	case strings.HasPrefix(sub, "pat-"):
		return "Patient/" + sub
	case strings.HasPrefix(sub, "rp-"):
		return "RelatedPerson/" + sub
	}
	return ""
}
