package audit

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// ReviewOptions shape an entitlement review of a trail.
type ReviewOptions struct {
	// UnusedFor is how long without an allowed request makes an identity
	// or a scope unused.
	UnusedFor time.Duration
	// AsOf is the review's "now"; unused means no allowed use in
	// [AsOf-UnusedFor, AsOf].
	AsOf time.Time
	// Roles are the policy's role permissions: role → permission key
	// (resource type, "*", "_system", "legacy:<kind>") → actions.
	Roles map[string]map[string][]string
	// Reviewed are the decision ids of break-glass accesses already
	// reviewed (from the shared store); reviews recorded in this trail
	// count too.
	Reviewed []string
	// Sample is how many allowed reads of patient data to draw for an
	// appropriateness review, with Seed: the same trail, seed and size
	// draw the same sample.
	Sample int
	Seed   uint64
}

// Review is the entitlement review of one trail.
type Review struct {
	AsOf       time.Time `json:"as_of"`
	UnusedDays float64   `json:"unused_days"`
	Records    int       `json:"records"`
	// UnusedIdentities were seen in the trail but made no allowed
	// request within the window.
	UnusedIdentities []IdentityUse `json:"unused_identities"`
	// UnusedScopes are scopes tokens carried that no allowed request
	// within the window exercised (a scope is exercised by an allowed
	// request on its resource type, or any type for "*").
	UnusedScopes []ScopeUse `json:"unused_scopes"`
	// UnexercisedRoles are roles with permissions no allowed request in
	// the trail was granted by, each with the permissions never used.
	UnexercisedRoles []RoleUse `json:"unexercised_roles"`
	// UnreviewedBreakGlass are emergency accesses nobody has marked
	// reviewed.
	UnreviewedBreakGlass []Access `json:"unreviewed_break_glass"`
	// Sample is the seeded draw of allowed reads of patient data.
	Sample     []Access `json:"sample"`
	SampleFrom int      `json:"sample_from"`
	Seed       uint64   `json:"seed"`
}

// IdentityUse is one identity and its last allowed request (zero: none).
type IdentityUse struct {
	Subject  string    `json:"subject"`
	Roles    []string  `json:"roles"`
	LastSeen time.Time `json:"last_seen"`
	LastUsed time.Time `json:"last_used,omitzero"`
}

// ScopeUse is one identity's scope and its last use.
type ScopeUse struct {
	Subject  string    `json:"subject"`
	Scope    string    `json:"scope"`
	LastUsed time.Time `json:"last_used,omitzero"`
}

// RoleUse is a role's permissions never exercised; All is true when none
// of them was.
type RoleUse struct {
	Role   string   `json:"role"`
	All    bool     `json:"never_exercised"`
	Unused []string `json:"unused_permissions"` // "key:action"
}

// Access is one recorded decision, as a reviewer needs it.
type Access struct {
	DecisionID string    `json:"decision_id"`
	Recorded   time.Time `json:"recorded"`
	Subject    string    `json:"subject"`
	Action     string    `json:"action"`
	Resource   string    `json:"resource,omitempty"`
	Patients   []string  `json:"patients"`
	Purpose    string    `json:"purpose,omitempty"`
}

// reviewInput is what the review reads of a decision's policy input.
type reviewInput struct {
	Identity struct {
		Subject string   `json:"subject"`
		Roles   []string `json:"roles"`
		Scopes  []struct {
			Raw      string `json:"raw"`
			Resource string `json:"resource"`
		} `json:"scopes"`
	} `json:"identity"`
	FHIR struct {
		Interaction  string `json:"interaction"`
		ResourceType string `json:"resource_type"`
	} `json:"fhir"`
	Purpose string `json:"purpose_of_use"`
}

// phiReads are the interactions that read patient data.
var phiReads = map[string]bool{"read": true, "vread": true, "search-type": true, "search-compartment": true,
	"search-system": true, "history-instance": true, "history-type": true, "operation": true}

// BuildReview reviews the entries of a trail (Query's output, in order).
func BuildReview(entries []Entry, o ReviewOptions) Review {
	r := Review{AsOf: o.AsOf.UTC(), UnusedDays: o.UnusedFor.Hours() / 24, Seed: o.Seed, Records: len(entries)}
	since := o.AsOf.Add(-o.UnusedFor)
	ids := map[string]*IdentityUse{}
	type scopeKey struct{ sub, raw string }
	scopes := map[scopeKey]*ScopeUse{}
	exercised := map[string]bool{} // "role:action:target"
	reviewed := map[string]bool{}
	for _, id := range o.Reviewed {
		reviewed[id] = true
	}
	var bg, reads []Access
	for i := range entries {
		e := &entries[i]
		if e.Kind == KindWorkflow {
			if slices.ContainsFunc(e.Event.Subtype, func(c Coding) bool { return c.Code == WorkflowReviewed }) {
				reviewed[e.Event.DecisionID()] = true
			}
			continue
		}
		if e.Kind != KindDecision || len(e.Input) == 0 {
			continue
		}
		var in reviewInput
		if json.Unmarshal(e.Input, &in) != nil || in.Identity.Subject == "" {
			continue
		}
		allowed := e.Event.Outcome == OutcomeSuccess
		sub := in.Identity.Subject
		u := ids[sub]
		if u == nil {
			u = &IdentityUse{Subject: sub}
			ids[sub] = u
		}
		if e.Recorded.After(u.LastSeen) {
			u.LastSeen, u.Roles = e.Recorded, slices.Clone(in.Identity.Roles)
		}
		for _, s := range in.Identity.Scopes {
			k := scopeKey{sub, s.Raw}
			su := scopes[k]
			if su == nil {
				su = &ScopeUse{Subject: sub, Scope: s.Raw}
				scopes[k] = su
			}
			if allowed && (s.Resource == "*" || s.Resource == in.FHIR.ResourceType) && e.Recorded.After(su.LastUsed) {
				su.LastUsed = e.Recorded
			}
		}
		if !allowed {
			continue
		}
		if e.Recorded.After(u.LastUsed) {
			u.LastUsed = e.Recorded
		}
		if e.Decision != nil {
			for _, rule := range e.Decision.Audit.Rules {
				if rest, ok := strings.CutPrefix(rule, "rbac.allow:"); ok {
					exercised[rest] = true
				}
			}
		}
		a := Access{DecisionID: e.Event.DecisionID(), Recorded: e.Recorded, Subject: sub, Action: in.FHIR.Interaction,
			Resource: in.FHIR.ResourceType, Patients: e.Event.Patients(), Purpose: in.Purpose}
		if a.Patients == nil {
			a.Patients = []string{}
		}
		if e.Event.BreakGlass() {
			bg = append(bg, a)
		}
		if phiReads[in.FHIR.Interaction] && len(a.Patients) > 0 {
			reads = append(reads, a)
		}
	}
	for _, u := range ids {
		if u.LastUsed.Before(since) {
			r.UnusedIdentities = append(r.UnusedIdentities, *u)
		}
	}
	slices.SortFunc(r.UnusedIdentities, func(a, b IdentityUse) int { return cmp.Compare(a.Subject, b.Subject) })
	for _, s := range scopes {
		if s.LastUsed.Before(since) {
			r.UnusedScopes = append(r.UnusedScopes, *s)
		}
	}
	slices.SortFunc(r.UnusedScopes, func(a, b ScopeUse) int {
		return cmp.Or(cmp.Compare(a.Subject, b.Subject), cmp.Compare(a.Scope, b.Scope))
	})
	r.UnexercisedRoles = unexercised(o.Roles, exercised)
	for _, a := range bg {
		if !reviewed[a.DecisionID] {
			r.UnreviewedBreakGlass = append(r.UnreviewedBreakGlass, a)
		}
	}
	r.SampleFrom = len(reads)
	r.Sample = sample(reads, o.Sample, o.Seed)
	if r.UnusedIdentities == nil {
		r.UnusedIdentities = []IdentityUse{}
	}
	if r.UnusedScopes == nil {
		r.UnusedScopes = []ScopeUse{}
	}
	if r.UnreviewedBreakGlass == nil {
		r.UnreviewedBreakGlass = []Access{}
	}
	return r
}

// unexercised lists, per role, the permissions no allowed request was
// granted by. A rule names role, action and target; a "*" grant counts as
// exercised by a target the role holds no grant of its own for.
func unexercised(roles map[string]map[string][]string, exercised map[string]bool) []RoleUse {
	out := []RoleUse{}
	for _, role := range slices.Sorted(maps.Keys(roles)) {
		perms := roles[role]
		var unused []string
		total := 0
		for key, actions := range perms {
			for _, a := range actions {
				total++
				if !permUsed(role, key, a, perms, exercised) {
					unused = append(unused, key+":"+a)
				}
			}
		}
		if len(unused) == 0 {
			continue
		}
		slices.Sort(unused)
		out = append(out, RoleUse{Role: role, All: len(unused) == total, Unused: unused})
	}
	return out
}

func permUsed(role, key, action string, perms map[string][]string, exercised map[string]bool) bool {
	if key != "*" {
		return exercised[role+":"+action+":"+key]
	}
	prefix := role + ":" + action + ":"
	for k := range exercised {
		if t, ok := strings.CutPrefix(k, prefix); ok && !slices.Contains(perms[t], action) {
			return true
		}
	}
	return false
}

// sample draws n of xs (in trail order) with a generator seeded by seed:
// a partial Fisher-Yates shuffle, the chosen returned in trail order.
func sample(xs []Access, n int, seed uint64) []Access {
	if n <= 0 || len(xs) == 0 {
		return []Access{}
	}
	idx := make([]int, len(xs))
	for i := range idx {
		idx[i] = i
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	n = min(n, len(xs))
	for i := range n {
		j := i + rng.IntN(len(idx)-i)
		idx[i], idx[j] = idx[j], idx[i]
	}
	chosen := slices.Clone(idx[:n])
	slices.Sort(chosen)
	out := make([]Access, n)
	for i, k := range chosen {
		out[i] = xs[k]
	}
	return out
}

// RolesFromData reads the role permissions from a policy data document
// (data.json: {"phigate": {"roles": {...}}}).
func RolesFromData(raw []byte) (map[string]map[string][]string, error) {
	var d struct {
		Phigate struct {
			Roles map[string]struct {
				Permissions map[string][]string `json:"permissions"`
			} `json:"roles"`
		} `json:"phigate"`
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		return nil, fmt.Errorf("policy data: %w", err)
	}
	out := make(map[string]map[string][]string, len(d.Phigate.Roles))
	for name, r := range d.Phigate.Roles {
		out[name] = r.Permissions
	}
	return out, nil
}

// WriteReview prints r as text or JSON.
func WriteReview(w io.Writer, r Review, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	when := func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return t.UTC().Format(time.RFC3339)
	}
	fmt.Fprintf(tw, "Entitlement review as of %s over %d records; unused means no allowed request in %.0f days.\n\n",
		r.AsOf.Format(time.RFC3339), r.Records, r.UnusedDays)
	fmt.Fprintf(tw, "Identities unused (%d)\nSUBJECT\tROLES\tLAST SEEN\tLAST ALLOWED\n", len(r.UnusedIdentities))
	for _, u := range r.UnusedIdentities {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", u.Subject, strings.Join(u.Roles, ","), when(u.LastSeen), when(u.LastUsed))
	}
	fmt.Fprintf(tw, "\nScopes unused (%d)\nSUBJECT\tSCOPE\tLAST USED\n", len(r.UnusedScopes))
	for _, s := range r.UnusedScopes {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", s.Subject, s.Scope, when(s.LastUsed))
	}
	fmt.Fprintf(tw, "\nRoles with permissions never exercised (%d)\nROLE\tNEVER USED AT ALL\tUNUSED PERMISSIONS\n", len(r.UnexercisedRoles))
	for _, ro := range r.UnexercisedRoles {
		fmt.Fprintf(tw, "%s\t%v\t%s\n", ro.Role, ro.All, strings.Join(ro.Unused, " "))
	}
	access := func(title string, as []Access) {
		fmt.Fprintf(tw, "\n%s\nDECISION\tRECORDED\tSUBJECT\tACTION\tRESOURCE\tPATIENTS\tPURPOSE\n", title)
		for _, a := range as {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", a.DecisionID, when(a.Recorded), a.Subject, a.Action,
				dashIfEmpty(a.Resource), strings.Join(a.Patients, ","), dashIfEmpty(a.Purpose))
		}
	}
	access(fmt.Sprintf("Break-glass accesses not reviewed (%d)", len(r.UnreviewedBreakGlass)), r.UnreviewedBreakGlass)
	access(fmt.Sprintf("Sample of allowed reads of patient data for review (%d of %d, seed %d)", len(r.Sample), r.SampleFrom, r.Seed), r.Sample)
	return tw.Flush()
}

func dashIfEmpty(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
