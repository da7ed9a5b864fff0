package bench

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// The demo's synthetic population. Practitioner prac-K is on the care team
// of patient n exactly when (n-1) % Practitioners == K-1.
const (
	Patients      = 1200
	Practitioners = 60
)

// PatientID and PractitionerID format population ids ("pat-0001", "prac-001").
func PatientID(n int) string      { return fmt.Sprintf("pat-%04d", n) }
func PractitionerID(k int) string { return fmt.Sprintf("prac-%03d", k) }

// OnCareTeam reports whether practitioner k treats patient n.
func OnCareTeam(k, n int) bool { return (n-1)%Practitioners == k-1 }

// Request kinds a scenario mixes.
const (
	KindRead         = "read"          // GET Patient/{id} on the caller's care team (patients: their own)
	KindReadOut      = "read-out"      // GET Patient/{id} outside the care team
	KindSearch       = "search"        // GET {Resource}?patient={id} on the care team
	KindSearchAll    = "search-all"    // GET {Resource} with no patient parameter
	KindCompartment  = "compartment"   // GET Patient/{id}/{Resource} on the care team
	KindBatch        = "batch"         // POST {base} with a batch Bundle of reads on the care team
	KindBreakGlass   = "break-glass"   // read outside the care team with x-break-glass
	KindForgedToken  = "forged-token"  // read with a token signed by an untrusted key
	KindExpiredToken = "expired-token" // read with an expired token
	KindNoToken      = "no-token"      // read without Authorization
)

var kinds = []string{KindRead, KindReadOut, KindSearch, KindSearchAll, KindCompartment,
	KindBatch, KindBreakGlass, KindForgedToken, KindExpiredToken, KindNoToken}

// Roles a token can carry.
var roles = []string{"physician", "nurse", "billing", "researcher", "patient"}

// Scenario is a traffic mix. Its YAML form uses the yaml tags below.
type Scenario struct {
	Name     string `yaml:"name" json:"name"`
	FHIRBase string `yaml:"fhir_base" json:"fhir_base"` // default "/fhir"
	Host     string `yaml:"host" json:"host"`           // :authority, default "fhir.example.internal"
	// Pool is how many distinct requests are pre-built; the load cycles
	// through them in order (default 4096).
	Pool int `yaml:"pool" json:"pool"`
	// TokenTTL is the lifetime of valid tokens; it must outlast the run (default 2h).
	TokenTTL string `yaml:"token_ttl" json:"token_ttl"`
	// Roles weights the caller's role when a mix entry names none
	// (default physician 40, nurse 30, billing 10, researcher 10, patient 10).
	Roles map[string]float64 `yaml:"roles" json:"roles"`
	Mix   []MixEntry         `yaml:"mix" json:"mix"`
	// Pairs, when set, draws callers and patients from this many distinct
	// (practitioner, patient) care-team pairs, TeamSize per practitioner
	// (default 50), the ones --care-teams writes into the policy's data,
	// instead of the demo's 60 practitioners and 1,200 patients. A pool
	// that is not set then holds as many requests as there are pairs, so
	// that repeats come from the traffic and not from a short pool.
	Pairs    int `yaml:"pairs,omitempty" json:"pairs,omitempty"`
	TeamSize int `yaml:"team_size,omitempty" json:"team_size,omitempty"`

	ttl         time.Duration
	defaultPool bool
}

// MaxPairs bounds Scenario.Pairs (and --care-teams).
const MaxPairs = 10_000_000

// WithPairs sets Pairs and TeamSize (0 keeps the scenario's), resizing a
// pool left at its default, and validates the result.
func (s *Scenario) WithPairs(pairs, teamSize int) error {
	if pairs > 0 {
		s.Pairs = pairs
	}
	if teamSize > 0 {
		s.TeamSize = teamSize
	}
	if s.defaultPool {
		s.Pool = 0
	}
	return s.Validate()
}

// MixEntry is one kind of request and its share of the traffic.
type MixEntry struct {
	Kind     string  `yaml:"kind" json:"kind"`
	Weight   float64 `yaml:"weight" json:"weight"`
	Role     string  `yaml:"role,omitempty" json:"role,omitempty"`         // fixed role; default drawn from Roles
	Resource string  `yaml:"resource,omitempty" json:"resource,omitempty"` // search, compartment (default Observation)
	Entries  int     `yaml:"entries,omitempty" json:"entries,omitempty"`   // batch size (default 5)
	Reason   string  `yaml:"reason,omitempty" json:"reason,omitempty"`     // break-glass reason
}

// BuiltinScenarios names the mixes available without a file.
func BuiltinScenarios() []string { return []string{"read-mostly", "mixed", "adversarial"} }

func builtin(name string) (*Scenario, bool) {
	var mix []MixEntry
	switch name {
	case "read-mostly":
		mix = []MixEntry{
			{Kind: KindRead, Weight: 60}, {Kind: KindSearch, Weight: 20},
			{Kind: KindCompartment, Weight: 10, Resource: "Condition"}, {Kind: KindReadOut, Weight: 5},
			{Kind: KindBatch, Weight: 2}, {Kind: KindBreakGlass, Weight: 1},
			{Kind: KindForgedToken, Weight: 1}, {Kind: KindExpiredToken, Weight: 1},
		}
	case "mixed":
		mix = []MixEntry{
			{Kind: KindRead, Weight: 35}, {Kind: KindSearch, Weight: 15},
			{Kind: KindSearch, Weight: 5, Resource: "MedicationRequest"},
			{Kind: KindCompartment, Weight: 10}, {Kind: KindReadOut, Weight: 10},
			{Kind: KindBatch, Weight: 8}, {Kind: KindBreakGlass, Weight: 4, Role: "physician"},
			{Kind: KindSearchAll, Weight: 3, Role: "researcher"},
			{Kind: KindForgedToken, Weight: 4}, {Kind: KindExpiredToken, Weight: 4}, {Kind: KindNoToken, Weight: 2},
		}
	case "adversarial":
		mix = []MixEntry{
			{Kind: KindRead, Weight: 10}, {Kind: KindReadOut, Weight: 25},
			{Kind: KindSearchAll, Weight: 10}, {Kind: KindBatch, Weight: 5, Entries: 20},
			{Kind: KindBreakGlass, Weight: 10, Reason: "x"},
			{Kind: KindForgedToken, Weight: 20}, {Kind: KindExpiredToken, Weight: 10}, {Kind: KindNoToken, Weight: 10},
		}
	default:
		return nil, false
	}
	return &Scenario{Name: name, Mix: mix}, true
}

// LoadScenario returns the built-in mix called nameOrPath, or parses the
// YAML file at that path.
func LoadScenario(nameOrPath string) (*Scenario, error) {
	if s, ok := builtin(nameOrPath); ok {
		if err := s.Validate(); err != nil {
			return nil, err
		}
		return s, nil
	}
	b, err := os.ReadFile(nameOrPath)
	if err != nil {
		return nil, &Error{Code: CodeScenario, Field: "Scenario",
			Detail: "not a built-in mix (" + strings.Join(BuiltinScenarios(), ", ") + ") nor a readable file", Err: err}
	}
	return ParseScenario(b)
}

// ParseScenario decodes and validates a YAML scenario. Unknown fields are
// errors, so a misspelt key cannot silently fall back to a default.
func ParseScenario(b []byte) (*Scenario, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var s Scenario
	if err := dec.Decode(&s); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fieldErr(CodeScenario, "mix", "empty scenario")
		}
		return nil, wrapErr(CodeScenario, "yaml", err)
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return &s, nil
}

// Validate fills defaults and names the first invalid field.
func (s *Scenario) Validate() error {
	if s.FHIRBase == "" {
		s.FHIRBase = "/fhir"
	}
	if !strings.HasPrefix(s.FHIRBase, "/") || strings.HasSuffix(s.FHIRBase, "/") && s.FHIRBase != "/" {
		return fieldErr(CodeScenario, "fhir_base", "must start with / and not end with /, got %q", s.FHIRBase)
	}
	if s.Host == "" {
		s.Host = "fhir.example.internal"
	}
	if s.Pairs != 0 && (s.Pairs < Patients || s.Pairs > MaxPairs) {
		return fieldErr(CodeScenario, "pairs", "must be 0 or in [%d, %d] (the demo data's pairs are kept), got %d", Patients, MaxPairs, s.Pairs)
	}
	if s.TeamSize == 0 {
		s.TeamSize = 50
	}
	if s.TeamSize < 1 || s.TeamSize > 100_000 {
		return fieldErr(CodeScenario, "team_size", "must be in [1, 100000], got %d", s.TeamSize)
	}
	if s.Pool == 0 {
		s.Pool, s.defaultPool = 4096, true
		if s.Pairs > 0 {
			s.Pool = min(max(s.Pool, s.Pairs), 1<<20)
		}
	}
	if s.Pool < 1 || s.Pool > 1<<20 {
		return fieldErr(CodeScenario, "pool", "must be in [1, 1048576], got %d", s.Pool)
	}
	if s.TokenTTL == "" {
		s.TokenTTL = "2h"
	}
	ttl, err := time.ParseDuration(s.TokenTTL)
	if err != nil || ttl < time.Minute {
		return fieldErr(CodeScenario, "token_ttl", "must be a duration of at least 1m, got %q", s.TokenTTL)
	}
	s.ttl = ttl
	if len(s.Roles) == 0 {
		s.Roles = map[string]float64{"physician": 40, "nurse": 30, "billing": 10, "researcher": 10, "patient": 10}
	}
	var total float64
	for _, r := range sortedKeys(s.Roles) {
		if !isRole(r) {
			return fieldErr(CodeScenario, "roles."+r, "unknown role (want one of %s)", strings.Join(roles, ", "))
		}
		if w := s.Roles[r]; !(w >= 0) {
			return fieldErr(CodeScenario, "roles."+r, "weight must be >= 0, got %g", w)
		}
		total += s.Roles[r]
	}
	if !(total > 0) {
		return fieldErr(CodeScenario, "roles", "weights must not all be zero")
	}
	if len(s.Mix) == 0 {
		return fieldErr(CodeScenario, "mix", "at least one entry is required")
	}
	for i := range s.Mix {
		e := &s.Mix[i]
		f := "mix[" + strconv.Itoa(i) + "]"
		if !isKind(e.Kind) {
			return fieldErr(CodeScenario, f+".kind", "unknown kind %q (want one of %s)", e.Kind, strings.Join(kinds, ", "))
		}
		if !(e.Weight > 0) {
			return fieldErr(CodeScenario, f+".weight", "must be > 0, got %g", e.Weight)
		}
		if e.Role != "" && !isRole(e.Role) {
			return fieldErr(CodeScenario, f+".role", "unknown role %q", e.Role)
		}
		if e.Resource == "" {
			e.Resource = "Observation"
		}
		if !validResourceType(e.Resource) {
			return fieldErr(CodeScenario, f+".resource", "not a FHIR resource type name: %q", e.Resource)
		}
		if e.Entries == 0 {
			e.Entries = 5
		}
		if e.Entries < 1 || e.Entries > 1000 {
			return fieldErr(CodeScenario, f+".entries", "must be in [1, 1000], got %d", e.Entries)
		}
		if e.Reason == "" {
			e.Reason = "emergency treatment"
		}
	}
	return nil
}

func isRole(r string) bool {
	for _, x := range roles {
		if x == r {
			return true
		}
	}
	return false
}

func isKind(k string) bool {
	for _, x := range kinds {
		if x == k {
			return true
		}
	}
	return false
}

func validResourceType(s string) bool {
	if s == "" || s[0] < 'A' || s[0] > 'Z' {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}

// Calls builds the scenario's request pool. The sequence depends only on
// the scenario and seed; tokens are minted here, once per caller and kind,
// so signing never runs on the hot path. now anchors token times.
func (s *Scenario) Calls(seed uint64, signer *Signer, now time.Time) ([]Call, error) {
	if s.ttl == 0 {
		if err := s.Validate(); err != nil {
			return nil, err
		}
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	var pop *pairPopulation
	if s.Pairs > 0 {
		var err error
		if pop, err = newPairPopulation(s.Pairs, s.TeamSize); err != nil {
			return nil, wrapErr(CodeScenario, "pairs", err)
		}
	}
	roleNames := sortedKeys(s.Roles)
	tokens := map[string]string{}
	calls := make([]Call, s.Pool)
	for i := range calls {
		e := &s.Mix[pickWeighted(rng, len(s.Mix), func(j int) float64 { return s.Mix[j].Weight })]
		role := e.Role
		if role == "" {
			role = roleNames[pickWeighted(rng, len(roleNames), func(j int) float64 { return s.Roles[roleNames[j]] })]
		}
		c, err := s.build(rng, pop, e, role, signer, now, tokens)
		if err != nil {
			return nil, err
		}
		calls[i] = c
	}
	return calls, nil
}

func pickWeighted(rng *rand.Rand, n int, w func(int) float64) int {
	var total float64
	for i := range n {
		total += w(i)
	}
	x := rng.Float64() * total
	for i := range n {
		if x < w(i) {
			return i
		}
		x -= w(i)
	}
	return n - 1
}

func (s *Scenario) build(rng *rand.Rand, pop *pairPopulation, e *MixEntry, role string, signer *Signer, now time.Time, tokens map[string]string) (Call, error) {
	// Caller and the patients they may and may not see.
	var sub, fhirUser string
	var inTeam func() int
	var outTeam func() int
	switch {
	case pop != nil:
		sub, fhirUser, inTeam, outTeam = pop.caller(rng, role == "patient")
	case role == "patient":
		p := rng.IntN(Patients) + 1
		sub, fhirUser = PatientID(p), "Patient/"+PatientID(p)
		inTeam = func() int { return p }
		outTeam = func() int { return (p+rng.IntN(Patients-1))%Patients + 1 }
	default:
		k := rng.IntN(Practitioners) + 1
		sub, fhirUser = PractitionerID(k), "Practitioner/"+PractitionerID(k)
		inTeam = func() int { return k + Practitioners*rng.IntN(Patients/Practitioners) }
		outTeam = func() int {
			n := rng.IntN(Patients) + 1
			if OnCareTeam(k, n) {
				n = n%Patients + 1
			}
			return n
		}
	}
	c := Call{
		Kind: e.Kind, Role: role, Method: "GET",
		Headers: map[string]string{
			"host": s.Host, "accept": "application/fhir+json", "user-agent": "phigate-bench/1",
		},
		ID:     uuidFrom(rng),
		Source: fmt.Sprintf("10.1.%d.%d:%d", rng.IntN(256), rng.IntN(254)+1, 1024+rng.IntN(60000)),
	}
	base := s.FHIRBase
	if base == "/" {
		base = ""
	}
	switch e.Kind {
	case KindRead, KindForgedToken, KindExpiredToken, KindNoToken:
		c.Path = base + "/Patient/" + PatientID(inTeam())
	case KindReadOut:
		c.Path = base + "/Patient/" + PatientID(outTeam())
	case KindBreakGlass:
		c.Path = base + "/Patient/" + PatientID(outTeam())
		c.Headers["x-break-glass"] = e.Reason
	case KindSearch:
		c.Path = base + "/" + e.Resource + "?patient=" + PatientID(inTeam())
	case KindSearchAll:
		c.Path = base + "/" + e.Resource + "?_count=50"
	case KindCompartment:
		c.Path = base + "/Patient/" + PatientID(inTeam()) + "/" + e.Resource
	case KindBatch:
		c.Method, c.Path = "POST", base
		if c.Path == "" {
			c.Path = "/"
		}
		c.Headers["content-type"] = "application/fhir+json"
		body, err := batchBody(rng, e.Entries, inTeam)
		if err != nil {
			return Call{}, wrapErr(CodeScenario, "batch body", err)
		}
		c.Body = body
		c.Headers["content-length"] = strconv.Itoa(len(body))
	}
	if e.Kind == KindNoToken {
		return c, nil
	}
	key := e.Kind + "|" + role + "|" + sub
	if e.Kind != KindForgedToken && e.Kind != KindExpiredToken {
		key = "valid|" + role + "|" + sub
	}
	tok, ok := tokens[key]
	if !ok {
		cl := claimsFor(role, sub, fhirUser)
		var err error
		switch e.Kind {
		case KindForgedToken:
			tok, err = signer.Forge(cl, now, s.ttl)
		case KindExpiredToken:
			tok, err = signer.Mint(cl, now, -10*time.Minute)
		default:
			tok, err = signer.Mint(cl, now, s.ttl)
		}
		if err != nil {
			return Call{}, err
		}
		tokens[key] = tok
	}
	c.Headers["authorization"] = "Bearer " + tok
	return c, nil
}

func claimsFor(role, sub, fhirUser string) Claims {
	c := Claims{Subject: sub, Roles: []string{role}, FHIRUser: fhirUser, AMR: []string{"pwd", "otp"}}
	switch role {
	case "physician":
		c.Scope, c.Purpose = "openid fhirUser user/*.cruds", "TREAT"
	case "nurse":
		c.Scope, c.Purpose = "openid fhirUser user/*.rs", "TREAT"
	case "billing":
		c.Scope, c.Purpose = "openid fhirUser user/Patient.rs user/Coverage.rs user/Claim.rs", "HPAYMT"
	case "researcher":
		c.Scope, c.Purpose = "openid fhirUser user/Observation.rs user/Condition.rs", "HRESCH"
	case "patient":
		c.Scope, c.Purpose = "openid fhirUser patient/*.rs", "PATRQT"
	}
	return c
}

type bundle struct {
	ResourceType string        `json:"resourceType"`
	Type         string        `json:"type"`
	Entry        []bundleEntry `json:"entry"`
}

type bundleEntry struct {
	Request struct {
		Method string `json:"method"`
		URL    string `json:"url"`
	} `json:"request"`
}

func batchBody(rng *rand.Rand, n int, patient func() int) ([]byte, error) {
	b := bundle{ResourceType: "Bundle", Type: "batch", Entry: make([]bundleEntry, n)}
	for i := range b.Entry {
		p := PatientID(patient())
		b.Entry[i].Request.Method = "GET"
		switch rng.IntN(3) {
		case 0:
			b.Entry[i].Request.URL = "Patient/" + p
		case 1:
			b.Entry[i].Request.URL = "Observation?patient=" + p
		default:
			b.Entry[i].Request.URL = "Patient/" + p + "/Condition"
		}
	}
	return json.Marshal(b)
}

func uuidFrom(rng *rand.Rand) string {
	var b [16]byte
	for i := 0; i < 16; i += 8 {
		v := rng.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
