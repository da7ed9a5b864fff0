package authz

import (
	"fmt"
	"net/url"
	"strings"
)

// ServiceAccounts maps an mTLS principal (a SPIFFE URI such as
// "spiffe://example.org/ns/billing/sa/exporter", or a certificate subject
// DN exactly as the proxy reports it) to the roles that workload holds.
type ServiceAccounts map[string][]string

// Validate names the first bad entry.
func (s ServiceAccounts) Validate() error {
	for p, roles := range s {
		if strings.TrimSpace(p) != p || p == "" {
			return fmt.Errorf("service_accounts[%q]: empty or padded principal", p)
		}
		if strings.HasPrefix(p, "spiffe://") {
			u, err := url.Parse(p)
			if err != nil || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
				return fmt.Errorf("service_accounts[%q]: not a SPIFFE ID", p)
			}
		}
		if len(roles) == 0 {
			return fmt.Errorf("service_accounts[%q]: at least one role is required", p)
		}
		for _, r := range roles {
			if r == "" {
				return fmt.Errorf("service_accounts[%q]: empty role", p)
			}
		}
	}
	return nil
}

// identity returns the Identity of a known principal.
func (s ServiceAccounts) identity(principal string) (Identity, bool) {
	if principal == "" {
		return Identity{}, false
	}
	roles, ok := s[principal]
	if !ok {
		return Identity{}, false
	}
	return Identity{Authenticated: true, Service: true, Subject: principal,
		Roles: roles, Scopes: []Scope{}}, true
}

// reconcilePurpose settles the request's purpose of use. The header (already
// validated by the parser) and the token claim must agree when both are
// present; a token claim that is not a known code is refused like an unknown
// header, since the policy would otherwise see a purpose nobody vouched for.
func reconcilePurpose(req *Request) error {
	claim := req.Identity.Purpose
	if claim == "" || !req.Identity.Authenticated {
		return nil
	}
	code, ok := CanonicalPurpose(claim)
	if !ok {
		return ambiguous("unknown purpose of use in the token")
	}
	if req.Purpose != "" && req.Purpose != code {
		return ambiguous("purpose of use header disagrees with the token")
	}
	req.Purpose = code
	return nil
}
