package server

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/phigate/phigate/authz"
)

// ApprovalsConfig is phigate.yaml's approvals section: which requests need
// a second person's approval, who may give it, for how long it holds, and
// which roles a user may ask for just in time. See docs/approvals.md.
type ApprovalsConfig struct {
	// Operations are FHIR operation names, without "$", whose kick-off
	// needs an approval at every level (export: /$export,
	// Group/<id>/$export, Patient/$export).
	Operations []string `yaml:"operations"`
	// Kinds are request.legacy_routes kinds that need an approval as an
	// operation does.
	Kinds []string `yaml:"kinds"`
	// StatusKinds and FileKinds are the request.legacy_routes kinds of the
	// upstream's export status URL (the kick-off's Content-Location) and
	// of its output files: they run under the requester's started
	// approval, within its lifetime.
	StatusKinds []string `yaml:"status_kinds"`
	FileKinds   []string `yaml:"file_kinds"`
	// ApproverRole is the token role an approver must hold.
	ApproverRole string `yaml:"approver_role"`
	// TTL is how long an approval holds once given (default 1h).
	TTL time.Duration `yaml:"ttl"`
	// PendingTTL is how long a request waits for an approver before it
	// lapses (default 24h).
	PendingTTL time.Duration `yaml:"pending_ttl"`
	// Elevation configures just-in-time role requests.
	Elevation ElevationConfig `yaml:"elevation"`
}

// ElevationConfig says which roles a user may ask for, and for how long.
type ElevationConfig struct {
	// Roles a user may request; none means elevation requests are refused.
	Roles []string `yaml:"roles"`
	// MaxDuration bounds a requested duration (default 8h).
	MaxDuration time.Duration `yaml:"max_duration"`
}

// maxApprovalTTL mirrors the store's bound.
const maxApprovalTTL = 7 * 24 * time.Hour

// Enabled reports whether any request needs an approval or any role may
// be requested.
func (c *ApprovalsConfig) Enabled() bool {
	return len(c.Operations)+len(c.Kinds)+len(c.StatusKinds)+len(c.FileKinds)+len(c.Elevation.Roles) > 0
}

// Rules is what the authorizer is given; a nil src refuses every request
// that needs an approval (as phigate policy eval, which reads no store,
// shows).
func (c *ApprovalsConfig) Rules(src authz.ApprovalSource) authz.Approvals {
	return authz.Approvals{Operations: c.Operations, Kinds: c.Kinds, StatusKinds: c.StatusKinds, FileKinds: c.FileKinds, Source: src}
}

// Validate fills defaults and reports every bad field; legacy holds the
// kinds request.legacy_routes defines.
func (c *ApprovalsConfig) Validate(legacy []authz.LegacyRoute) error {
	var problems []error
	kinds := map[string]bool{}
	for _, r := range legacy {
		kinds[r.Kind] = true
	}
	for _, op := range c.Operations {
		if op == "" || op[0] == '$' || len(op) > 64 {
			problems = append(problems, fmt.Errorf("approvals.operations: %q: name an operation without its $", op))
		}
	}
	seen := map[string]string{}
	for _, f := range []struct {
		name string
		ks   []string
	}{{"approvals.kinds", c.Kinds}, {"approvals.status_kinds", c.StatusKinds}, {"approvals.file_kinds", c.FileKinds}} {
		for _, k := range f.ks {
			if !kinds[k] {
				problems = append(problems, fmt.Errorf("%s: %q is not a kind of request.legacy_routes", f.name, k))
			}
			if other, dup := seen[k]; dup {
				problems = append(problems, fmt.Errorf("%s: %q is in %s too", f.name, k, other))
			}
			seen[k] = f.name
		}
	}
	if (len(c.StatusKinds) > 0 || len(c.FileKinds) > 0) && len(c.Operations)+len(c.Kinds) == 0 {
		problems = append(problems, errors.New("approvals.status_kinds: polls and downloads follow an approved kick-off; name it in approvals.operations or approvals.kinds"))
	}
	if c.Enabled() && c.ApproverRole == "" {
		problems = append(problems, errors.New("approvals.approver_role: required when approvals are configured"))
	}
	if slices.Contains(c.Elevation.Roles, c.ApproverRole) && c.ApproverRole != "" {
		problems = append(problems, fmt.Errorf("approvals.elevation.roles: %q is the approver role; it cannot be requested", c.ApproverRole))
	}
	for _, d := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{{"approvals.ttl", &c.TTL, time.Hour}, {"approvals.pending_ttl", &c.PendingTTL, 24 * time.Hour},
		{"approvals.elevation.max_duration", &c.Elevation.MaxDuration, 8 * time.Hour}} {
		if *d.v == 0 {
			*d.v = d.def
		}
		if *d.v < time.Second || *d.v > maxApprovalTTL {
			problems = append(problems, fmt.Errorf("%s: %v is not between 1s and %v", d.name, *d.v, maxApprovalTTL))
		}
	}
	for _, r := range c.Elevation.Roles {
		if r == "" || len(r) > 64 {
			problems = append(problems, fmt.Errorf("approvals.elevation.roles: %q is not a role name", r))
		}
	}
	return errors.Join(problems...)
}
