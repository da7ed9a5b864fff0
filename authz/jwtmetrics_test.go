package authz

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestIdentityMetrics: verifications are counted by result code, a token
// seen again as cached, and key set loads by trigger and result, with the
// key count; no label carries a token, subject or claim.
func TestIdentityMetrics(t *testing.T) {
	jwks := filepath.Join(t.TempDir(), "jwks.json")
	k := newTestKey(t, "k1", jwa.RS256)
	writeJWKS(t, jwks, k, newTestKey(t, "k2", jwa.ES256))
	v := newVerifier(t, jwks, nil)
	reg := prometheus.NewPedanticRegistry()
	if err := v.Register(reg); err != nil {
		t.Fatal(err)
	}
	tok := mint(t, k, baseClaims(time.Now()))
	for range 2 {
		if _, err := v.Verify(t.Context(), tok); err != nil {
			t.Fatal(err)
		}
	}
	expired := baseClaims(time.Now().Add(-2 * time.Hour))
	_, _ = v.Verify(t.Context(), "")
	_, _ = v.Verify(t.Context(), "not.a.token")
	_, _ = v.Verify(t.Context(), mint(t, k, expired))
	want := `
# HELP phigate_identity_verifications_total Bearer token verifications by result: ok, cached (a verified token seen again), or the refusal code.
# TYPE phigate_identity_verifications_total counter
phigate_identity_verifications_total{result="cached"} 1
phigate_identity_verifications_total{result="expired_token"} 1
phigate_identity_verifications_total{result="invalid_token"} 1
phigate_identity_verifications_total{result="missing_token"} 1
phigate_identity_verifications_total{result="ok"} 1
# HELP phigate_jwks_keys Keys in the current key set.
# TYPE phigate_jwks_keys gauge
phigate_jwks_keys 2
# HELP phigate_jwks_refreshes_total Key set loads by trigger (start, interval, unknown_kid) and result (changed, unchanged, error).
# TYPE phigate_jwks_refreshes_total counter
phigate_jwks_refreshes_total{result="changed",trigger="start"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"phigate_identity_verifications_total", "phigate_jwks_keys", "phigate_jwks_refreshes_total"); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(v.metrics.lastRefresh); n != 1 {
		t.Fatalf("last refresh gauge: %d series", n)
	}
}
