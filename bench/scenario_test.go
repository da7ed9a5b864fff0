package bench

import (
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jwt"
)

func TestParseScenarioErrors(t *testing.T) {
	cases := []struct {
		name, yaml, field, detail string
	}{
		{"empty", "", "mix", "empty"},
		{"no mix", "name: x\n", "mix", "at least one"},
		{"unknown kind", "mix:\n  - kind: reed\n    weight: 1\n", "mix[0].kind", "reed"},
		{"zero weight", "mix:\n  - kind: read\n    weight: 1\n  - kind: search\n", "mix[1].weight", "> 0"},
		{"bad role in entry", "mix:\n  - kind: read\n    weight: 1\n    role: janitor\n", "mix[0].role", "janitor"},
		{"bad role weight", "roles: {nurse: -1}\nmix:\n  - kind: read\n    weight: 1\n", "roles.nurse", ">= 0"},
		{"unknown role", "roles: {surgeon: 1}\nmix:\n  - kind: read\n    weight: 1\n", "roles.surgeon", "unknown role"},
		{"bad resource", "mix:\n  - kind: search\n    weight: 1\n    resource: obs/1\n", "mix[0].resource", "resource type"},
		{"bad batch size", "mix:\n  - kind: batch\n    weight: 1\n    entries: 5000\n", "mix[0].entries", "1000"},
		{"bad ttl", "token_ttl: soon\nmix:\n  - kind: read\n    weight: 1\n", "token_ttl", "duration"},
		{"bad base", "fhir_base: fhir/\nmix:\n  - kind: read\n    weight: 1\n", "fhir_base", "start with /"},
		{"bad pool", "pool: -3\nmix:\n  - kind: read\n    weight: 1\n", "pool", "-3"},
		{"misspelt key", "mixx:\n  - kind: read\n", "", "mixx"},
		{"too few pairs", "pairs: 500\nmix:\n  - kind: read\n    weight: 1\n", "pairs", "1200"},
		{"bad team size", "pairs: 5000\nteam_size: -1\nmix:\n  - kind: read\n    weight: 1\n", "team_size", "-1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseScenario([]byte(tc.yaml))
			if err == nil {
				t.Fatal("no error")
			}
			var be *Error
			if !errors.As(err, &be) || !errors.Is(err, &Error{Code: CodeScenario}) {
				t.Fatalf("error %v is not a scenario *Error", err)
			}
			if be.Field != tc.field {
				t.Errorf("field = %q, want %q (%v)", be.Field, tc.field, err)
			}
			if !strings.Contains(err.Error(), tc.detail) {
				t.Errorf("error %q does not mention %q", err, tc.detail)
			}
		})
	}
}

func TestParseScenarioValid(t *testing.T) {
	sc, err := ParseScenario([]byte(`
name: custom
pool: 100
roles: {nurse: 1}
mix:
  - kind: compartment
    weight: 3
    resource: Condition
  - kind: batch
    weight: 1
    entries: 2
`))
	if err != nil {
		t.Fatal(err)
	}
	calls, err := sc.Calls(3, mustSigner(t), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, c := range calls {
		seen[c.Kind]++
		if c.Role != "nurse" {
			t.Fatalf("role %q, want nurse only", c.Role)
		}
		if c.Kind == KindCompartment && !strings.HasSuffix(c.Path, "/Condition") {
			t.Errorf("compartment path %q", c.Path)
		}
	}
	if len(calls) != 100 || seen[KindCompartment] < 55 || seen[KindBatch] < 10 {
		t.Errorf("pool %d, kinds %v: weights 3:1 not respected", len(calls), seen)
	}
}

func mustSigner(t *testing.T) *Signer {
	t.Helper()
	s, err := NewSigner("", "https://bench.test", "phigate")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// withoutTokens drops the signatures, which ECDSA randomizes; everything
// else must be identical for the same seed.
func withoutTokens(calls []Call) []Call {
	out := make([]Call, len(calls))
	for i, c := range calls {
		h := map[string]string{}
		for k, v := range c.Headers {
			if k != "authorization" {
				h[k] = v
			}
		}
		c.Headers = h
		out[i] = c
	}
	return out
}

func TestCallsDeterministic(t *testing.T) {
	now := time.Now()
	for _, name := range BuiltinScenarios() {
		t.Run(name, func(t *testing.T) {
			sc, err := LoadScenario(name)
			if err != nil {
				t.Fatal(err)
			}
			a, err := sc.Calls(42, mustSigner(t), now)
			if err != nil {
				t.Fatal(err)
			}
			b, err := sc.Calls(42, mustSigner(t), now)
			if err != nil {
				t.Fatal(err)
			}
			c, err := sc.Calls(43, mustSigner(t), now)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(withoutTokens(a), withoutTokens(b)) {
				t.Error("same seed gave different request sequences")
			}
			if reflect.DeepEqual(withoutTokens(a), withoutTokens(c)) {
				t.Error("different seeds gave the same request sequence")
			}
			for i := range a {
				if (a[i].Headers["authorization"] == "") != (b[i].Headers["authorization"] == "") {
					t.Fatalf("call %d: token presence differs", i)
				}
			}
		})
	}
}

// TestCallsFollowPopulation checks each kind against the demo population's
// care-team rule and the token each kind must carry.
func TestCallsFollowPopulation(t *testing.T) {
	signer := mustSigner(t)
	jwks, err := signer.JWKS()
	if err != nil {
		t.Fatal(err)
	}
	set, err := jwk.Parse(jwks)
	if err != nil {
		t.Fatal(err)
	}
	sc, _ := LoadScenario("mixed")
	now := time.Now()
	calls, err := sc.Calls(9, signer, now)
	if err != nil {
		t.Fatal(err)
	}
	num := func(id string) int {
		var n int
		for _, c := range id[strings.LastIndexByte(id, '-')+1:] {
			n = n*10 + int(c-'0')
		}
		return n
	}
	seen := map[string]bool{}
	for i, c := range calls {
		seen[c.Kind] = true
		auth := c.Headers["authorization"]
		tokStr, _ := strings.CutPrefix(auth, "Bearer ")
		if c.Kind == KindNoToken {
			if auth != "" {
				t.Fatalf("call %d: no-token call carries a token", i)
			}
			continue
		}
		tok, verr := jwt.Parse([]byte(tokStr), jwt.WithKeySet(set), jwt.WithValidate(true), jwt.WithClock(jwt.ClockFunc(func() time.Time { return now })))
		switch c.Kind {
		case KindForgedToken:
			if verr == nil {
				t.Fatalf("call %d: forged token verifies", i)
			}
			continue
		case KindExpiredToken:
			if verr == nil || !strings.Contains(verr.Error(), "exp") {
				t.Fatalf("call %d: expired token error = %v", i, verr)
			}
			continue
		}
		if verr != nil {
			t.Fatalf("call %d (%s): valid token rejected: %v", i, c.Kind, verr)
		}
		roles, _ := tok.Get("roles")
		fhirUser, _ := tok.Get("fhirUser")
		if b, _ := json.Marshal(roles); string(b) != `["`+c.Role+`"]` {
			t.Fatalf("call %d: roles %s, want %s", i, b, c.Role)
		}
		if c.Role == "patient" || c.Kind == KindBatch || c.Kind == KindSearchAll {
			continue
		}
		k := num(tok.Subject())
		if fhirUser != "Practitioner/"+PractitionerID(k) {
			t.Fatalf("call %d: fhirUser %v for %s", i, fhirUser, tok.Subject())
		}
		pat := c.Path[strings.Index(c.Path, "pat-"):][:8]
		on := OnCareTeam(k, num(pat))
		switch c.Kind {
		case KindRead, KindSearch, KindCompartment:
			if !on {
				t.Fatalf("call %d %s %s: %s not on care team of prac %d", i, c.Kind, c.Path, pat, k)
			}
		case KindReadOut, KindBreakGlass:
			if on {
				t.Fatalf("call %d %s: %s is on care team of prac %d", i, c.Kind, pat, k)
			}
			if c.Kind == KindBreakGlass && c.Headers["x-break-glass"] == "" {
				t.Fatalf("call %d: break-glass without header", i)
			}
		}
	}
	for _, e := range sc.Mix {
		if !seen[e.Kind] {
			t.Errorf("kind %s never drawn in %d calls", e.Kind, len(calls))
		}
	}
}

func TestConfigValidateNamesField(t *testing.T) {
	cases := []struct {
		name  string
		cfg   Config
		field string
	}{
		{"no target", Config{}, "Target"},
		{"bad target", Config{Target: "grpc://x:1"}, "Target"},
		{"relative unix", Config{Target: "unix://tmp/s"}, "Target"},
		{"bad mode", Config{Target: "127.0.0.1:1", Mode: "half"}, "Mode"},
		{"bad rate", Config{Target: "127.0.0.1:1", Rates: []float64{100, 0}}, "Rates[1]"},
		{"bad concurrency", Config{Target: "127.0.0.1:1", Mode: Closed, Concurrency: []int{-2}}, "Concurrency[0]"},
		{"baseline over http", Config{Target: "http://127.0.0.1:1", Baseline: true}, "Baseline"},
		{"compare kind", Config{Target: "127.0.0.1:1", Compare: "http://127.0.0.1:2"}, "Compare"},
		{"compare and baseline", Config{Target: "127.0.0.1:1", Compare: "127.0.0.1:2", Baseline: true}, "Compare"},
		{"short step", Config{Target: "127.0.0.1:1", Step: time.Millisecond}, "Step"},
		{"connections", Config{Target: "127.0.0.1:1", Connections: -1}, "Connections"},
		{"pid", Config{Target: "127.0.0.1:1", PID: -7}, "PID"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			var be *Error
			if !errors.As(err, &be) || be.Code != CodeConfig || be.Field != tc.field {
				t.Fatalf("Validate() = %v, want a config error on %s", err, tc.field)
			}
		})
	}
	ok := Config{Target: "unix:///run/phigate.sock", Baseline: true}
	if err := ok.Validate(); err != nil || ok.Step != 10*time.Second || len(ok.Rates) != 1 || ok.MaxDuration <= ok.Step {
		t.Fatalf("defaults not filled: %v %+v", err, ok)
	}
}

// With pairs, practitioners read patients on their generated care teams
// (those --care-teams writes), reads off the team are off it, and the
// requests cover many distinct pairs rather than a few repeated ones.
func TestCallsFollowPairs(t *testing.T) {
	sc, _ := LoadScenario("read-mostly")
	if err := sc.WithPairs(20000, 40); err != nil {
		t.Fatal(err)
	}
	if sc.Pool != 20000 {
		t.Fatalf("pool %d with 20,000 pairs, want 20000", sc.Pool)
	}
	teams, err := generatedCareTeams(20000, 40)
	if err != nil {
		t.Fatal(err)
	}
	calls, err := sc.Calls(3, mustSigner(t), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	distinct := map[string]bool{}
	for i, c := range calls {
		if c.Role == "patient" || c.Kind == KindBatch || c.Kind == KindSearchAll || c.Kind == KindNoToken ||
			c.Kind == KindForgedToken || c.Kind == KindExpiredToken {
			continue
		}
		at := strings.Index(c.Path, "pat-")
		end := at + 4
		for end < len(c.Path) && c.Path[end] >= '0' && c.Path[end] <= '9' {
			end++
		}
		pat := c.Path[at:end]
		who := tokenSubject(t, c)
		on := slices.Contains(teams["Practitioner/"+who], pat)
		switch c.Kind {
		case KindRead, KindSearch, KindCompartment:
			if !on {
				t.Fatalf("call %d %s %s: %s not on the care team of %s", i, c.Kind, c.Path, pat, who)
			}
			distinct[who+"|"+pat] = true
		case KindReadOut, KindBreakGlass:
			if on {
				t.Fatalf("call %d %s: %s is on the care team of %s", i, c.Kind, pat, who)
			}
		}
	}
	// About 70% of the pool are such reads; drawn from 20,000 pairs, most
	// are distinct.
	if len(distinct) < 8000 {
		t.Fatalf("%d distinct (practitioner, patient) pairs in %d calls, want at least 8000", len(distinct), len(calls))
	}
}

// tokenSubject reads the sub claim of a call's bearer token, unverified.
func tokenSubject(t *testing.T, c Call) string {
	t.Helper()
	tokStr, _ := strings.CutPrefix(c.Headers["authorization"], "Bearer ")
	tok, err := jwt.Parse([]byte(tokStr), jwt.WithVerify(false), jwt.WithValidate(false))
	if err != nil {
		t.Fatal(err)
	}
	return tok.Subject()
}
