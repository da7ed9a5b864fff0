package server

import (
	"strings"
	"testing"
	"time"

	"github.com/phigate/phigate/authz"
)

func TestApprovalsConfigValidate(t *testing.T) {
	legacy := []authz.LegacyRoute{{Method: "GET", Pattern: "/bulkstatus/{job}", Kind: "export-status"}}
	ok := func() ApprovalsConfig {
		return ApprovalsConfig{Operations: []string{"export"}, StatusKinds: []string{"export-status"}, ApproverRole: "privacy-officer"}
	}
	c := ok()
	if err := c.Validate(legacy); err != nil {
		t.Fatal(err)
	}
	if c.TTL != time.Hour || c.PendingTTL != 24*time.Hour || c.Elevation.MaxDuration != 8*time.Hour {
		t.Fatalf("defaults %v %v %v", c.TTL, c.PendingTTL, c.Elevation.MaxDuration)
	}
	var none ApprovalsConfig
	if err := none.Validate(nil); err != nil || none.Enabled() {
		t.Fatalf("an empty section: %v enabled=%v", err, none.Enabled())
	}
	for _, tc := range []struct {
		name, want string
		mod        func(*ApprovalsConfig)
	}{
		{"no approver role", "approvals.approver_role", func(c *ApprovalsConfig) { c.ApproverRole = "" }},
		{"operation with $", "approvals.operations", func(c *ApprovalsConfig) { c.Operations = []string{"$export"} }},
		{"unknown kind", "approvals.file_kinds", func(c *ApprovalsConfig) { c.FileKinds = []string{"nope"} }},
		{"kind twice", "approvals.file_kinds", func(c *ApprovalsConfig) { c.FileKinds = []string{"export-status"} }},
		{"polls without a kick-off", "approvals.status_kinds", func(c *ApprovalsConfig) { c.Operations = nil }},
		{"ttl too long", "approvals.ttl", func(c *ApprovalsConfig) { c.TTL = 30 * 24 * time.Hour }},
		{"negative pending ttl", "approvals.pending_ttl", func(c *ApprovalsConfig) { c.PendingTTL = -time.Second }},
		{"approver role requestable", "approvals.elevation.roles", func(c *ApprovalsConfig) { c.Elevation.Roles = []string{"privacy-officer"} }},
	} {
		c := ok()
		tc.mod(&c)
		err := c.Validate(legacy)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error naming %s", tc.name, err, tc.want)
		}
	}
}
