package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/phigate/phigate/audit"
	"github.com/phigate/phigate/policy"
)

const usageReview = "phigate audit review <dir> [--unused-days 90] [--as-of T] [--policy DIR] [--sample 20] [--seed N] [--admin host:port --token-file F] [--json]"

// cmdAuditReview is the periodic entitlement review over a local trail:
// identities and scopes unused, role permissions never exercised,
// break-glass accesses not yet reviewed, and a seeded sample of allowed
// reads of patient data for an appropriateness review.
func cmdAuditReview(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flags("audit review", stderr)
	days := fs.Int("unused-days", 90, "an identity or scope with no allowed request in this many days is unused")
	asOf := fs.String("as-of", "", "the review's time (RFC 3339; default now)")
	policyDir := fs.String("policy", "", "policy directory whose data.json holds the roles (default: the shipped library)")
	n := fs.Int("sample", 20, "allowed reads of patient data to draw for review")
	seed := fs.Uint64("seed", 1, "seed of the draw: the same trail, seed and --sample draw the same reads")
	keys := addKeyFlags(fs)
	// Only with --admin are the store's reviews read (marked through any
	// replica); without it, the reviews recorded in this trail count.
	wf := addWorkflowFlags(fs, "")
	dir, code, ok := parseDir(fs, args, usageReview, stderr)
	if !ok {
		return code
	}
	if *days <= 0 || *n < 0 {
		fmt.Fprintln(stderr, "phigate audit review: --unused-days must be positive and --sample not negative")
		return 2
	}
	o := audit.ReviewOptions{UnusedFor: time.Duration(*days) * 24 * time.Hour, AsOf: time.Now(), Sample: *n, Seed: *seed}
	if *asOf != "" {
		t, err := time.Parse(time.RFC3339Nano, *asOf)
		if err != nil {
			fmt.Fprintln(stderr, "phigate audit review: --as-of:", err)
			return 2
		}
		o.AsOf = t
	}
	data, err := policy.DataFile(*policyDir)
	if err == nil {
		o.Roles, err = audit.RolesFromData(data)
	}
	if err != nil {
		fmt.Fprintln(stderr, "phigate audit review: --policy:", err)
		return 2
	}
	if *wf.admin != "" {
		// Reviews marked through any replica live in the shared store.
		c, err := wf.client()
		if err != nil {
			fmt.Fprintln(stderr, "phigate audit review:", err)
			return 2
		}
		rs, err := c.Reviews(ctx)
		if err != nil {
			fmt.Fprintln(stderr, "phigate audit review: reviews:", err)
			return 1
		}
		for _, r := range rs {
			o.Reviewed = append(o.Reviewed, r.DecisionID)
		}
	}
	enc, err := keys.load()
	if err != nil {
		fmt.Fprintln(stderr, "phigate audit review:", err)
		return audit.ExitCode(err)
	}
	entries, err := audit.Query(dir, audit.Filter{}, audit.QueryOptions{EncryptionKey: enc})
	if err != nil {
		// A damaged trail is not reviewed in part: the review would miss
		// what the damage hides.
		fmt.Fprintln(stderr, "phigate audit review:", err)
		return audit.ExitCode(err)
	}
	if err := audit.WriteReview(stdout, audit.BuildReview(entries, o), *wf.json); err != nil {
		fmt.Fprintln(stderr, "phigate audit review:", err)
		return 1
	}
	return 0
}

// cmdAuditMarkReviewed records, through a running phigate, that the caller
// (an approver) reviewed a break-glass access.
func cmdAuditMarkReviewed(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flags("audit mark-reviewed", stderr)
	wf := addWorkflowFlags(fs, "127.0.0.1:9902")
	note := fs.String("note", "", "the reviewer's note (kept in the store, never logged)")
	id, code, ok := parseDir(fs, args, "phigate audit mark-reviewed <decision id> [--note TEXT] [--admin host:port] [--token-file F]", stderr)
	if !ok {
		return code
	}
	c, err := wf.client()
	if err != nil {
		fmt.Fprintln(stderr, "phigate audit mark-reviewed:", err)
		return 2
	}
	r, err := c.MarkReviewed(ctx, id, *note)
	if err != nil {
		fmt.Fprintln(stderr, "phigate audit mark-reviewed:", err)
		return 1
	}
	fmt.Fprintf(stdout, "reviewed %s by %s at %s\n", r.DecisionID, r.Reviewer, r.At.Format(time.RFC3339))
	return 0
}
