package demokeys

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jwt"
)

// verify checks a token the way phigate's demo configuration would, using
// only the jwks.json written to disk.
func verify(t *testing.T, dir, token string) (jwt.Token, error) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, JWKSFile))
	if err != nil {
		t.Fatalf("read jwks: %v", err)
	}
	set, err := jwk.Parse(raw)
	if err != nil {
		t.Fatalf("parse jwks: %v", err)
	}
	return jwt.Parse([]byte(token), jwt.WithKeySet(set), jwt.WithValidate(true),
		jwt.WithIssuer(DefaultIssuer), jwt.WithAudience(DefaultAudience), jwt.WithAcceptableSkew(30*time.Second))
}

func TestLoadOrCreate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	a, err := LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, PrivateKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode = %v, want 0600", st.Mode().Perm())
	}
	b, err := LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	if a.KeyID() == "" || a.KeyID() != b.KeyID() {
		t.Errorf("kid changed across loads: %q then %q", a.KeyID(), b.KeyID())
	}
	jwks, err := os.ReadFile(a.JWKSPath())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(jwks), `"d"`) {
		t.Error("jwks.json contains private key material")
	}
	if !strings.Contains(string(jwks), a.KeyID()) {
		t.Error("jwks.json lacks the kid")
	}
	// A deleted jwks.json is rewritten from the key.
	os.Remove(a.JWKSPath())
	if _, err := LoadOrCreate(dir); err != nil {
		t.Fatal(err)
	}
	if again, _ := os.ReadFile(a.JWKSPath()); string(again) != string(jwks) {
		t.Error("rewritten jwks.json differs")
	}
}

func TestLoadOrCreateErrors(t *testing.T) {
	tests := []struct {
		name  string
		setup func(dir string)
		want  string
	}{
		{"not PEM", func(dir string) { os.WriteFile(filepath.Join(dir, PrivateKeyFile), []byte("junk"), 0o600) }, "not a PEM"},
		{"wrong key type", func(dir string) {
			os.WriteFile(filepath.Join(dir, PrivateKeyFile), []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), 0o600)
		}, PrivateKeyFile},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tc.setup(dir)
			_, err := LoadOrCreate(dir)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("LoadOrCreate = %v, want error containing %q", err, tc.want)
			}
		})
	}
	if _, err := LoadOrCreate(""); err == nil {
		t.Error("empty dir accepted")
	}
}

func TestMintRoundTrip(t *testing.T) {
	dir := t.TempDir()
	k, err := LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		spec  TokenSpec
		check func(t *testing.T, tok jwt.Token)
	}{
		{"clinician", TokenSpec{Subject: "dr-1", Roles: []string{"clinician"}, Scopes: []string{"user/Patient.rs", "user/Observation.rs"},
			Purpose: "TREAT", FHIRUser: "Practitioner/prac-001", AMR: []string{"pwd", "otp"}, ClientID: "ehr"},
			func(t *testing.T, tok jwt.Token) {
				if v, _ := tok.Get(ClaimScope); v != "user/Patient.rs user/Observation.rs" {
					t.Errorf("scope = %v", v)
				}
				if v, _ := tok.Get(ClaimFHIRUser); v != "Practitioner/prac-001" {
					t.Errorf("fhirUser = %v", v)
				}
				if v, _ := tok.Get(ClaimPurpose); v != "TREAT" {
					t.Errorf("purpose_of_use = %v", v)
				}
				roles, _ := tok.Get(ClaimRoles)
				if r, ok := roles.([]any); !ok || len(r) != 1 || r[0] != "clinician" {
					t.Errorf("roles = %#v, want array [clinician]", roles)
				}
				amr, _ := tok.Get(ClaimAMR)
				if a, ok := amr.([]any); !ok || len(a) != 2 {
					t.Errorf("amr = %#v", amr)
				}
				if tok.JwtID() == "" {
					t.Error("no jti")
				}
				if got := tok.Expiration().Sub(tok.IssuedAt()); got != DefaultTTL {
					t.Errorf("ttl = %v", got)
				}
			}},
		{"patient app", TokenSpec{Subject: "p-1", Roles: []string{"patient"}, Patient: "pat-0001", Scopes: []string{"patient/*.rs"}, TTL: time.Minute},
			func(t *testing.T, tok jwt.Token) {
				if v, _ := tok.Get(ClaimPatient); v != "pat-0001" {
					t.Errorf("patient = %v", v)
				}
				if tok.Issuer() != DefaultIssuer || !slices.Equal(tok.Audience(), []string{DefaultAudience}) {
					t.Errorf("iss/aud = %q %v", tok.Issuer(), tok.Audience())
				}
			}},
		{"extra claim", TokenSpec{Subject: "svc", Extra: map[string]any{"acr": "urn:demo:loa2"}},
			func(t *testing.T, tok jwt.Token) {
				if v, _ := tok.Get("acr"); v != "urn:demo:loa2" {
					t.Errorf("acr = %v", v)
				}
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := k.Mint(tc.spec)
			if err != nil {
				t.Fatal(err)
			}
			tok, err := verify(t, dir, s)
			if err != nil {
				t.Fatalf("verify: %v", err)
			}
			if tok.Subject() != tc.spec.Subject {
				t.Errorf("sub = %q", tok.Subject())
			}
			tc.check(t, tok)
		})
	}
}

func TestMintFlawedRefused(t *testing.T) {
	dir := t.TempDir()
	k, err := LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	spec := TokenSpec{Subject: "dr-1", Roles: []string{"clinician"}}
	for _, f := range Flaws() {
		t.Run(string(f), func(t *testing.T) {
			s, err := k.MintFlawed(spec, f)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Count(s, ".") != 2 {
				t.Fatalf("not a compact JWS: %q", s)
			}
			_, err = verify(t, dir, s)
			if err == nil {
				t.Fatalf("flawed token (%s) verified", f)
			}
			t.Logf("refused: %v", err)
		})
	}
	if _, err := k.MintFlawed(spec, "nonsense"); err == nil {
		t.Error("unknown flaw accepted")
	}
}
