package server_test

import (
	"testing"
	"time"

	"github.com/phigate/phigate/authz"
	"github.com/phigate/phigate/demo/demokeys"
	"github.com/phigate/phigate/envoy"
	"github.com/phigate/phigate/internal/pgtest"
	"github.com/phigate/phigate/internal/stacktest"
	"github.com/phigate/phigate/policy"
	"github.com/phigate/phigate/store"
)

// storeServer is checkServer's decision path (no audit, the policy's
// decision cache on) reading its shared state (consents, relationships,
// grants, elevations) from st through a store.Reader that keeps answers
// for maxAge: the default second, or a nanosecond, so that every Check
// asks the store (the figure the Reader's cache would otherwise flatter).
func storeServer(b *testing.B, st store.Store, maxAge time.Duration) *envoy.AuthServer {
	b.Helper()
	keys, err := demokeys.LoadOrCreate(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	verifier, err := authz.NewJWTVerifier(b.Context(), authz.JWTConfig{Issuer: demokeys.DefaultIssuer,
		Audiences: []string{demokeys.DefaultAudience}, JWKSFile: keys.JWKSPath()}, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = verifier.Close() })
	engine, err := policy.NewEngine(b.Context(), policy.Config{}, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(engine.Close)
	parser, err := authz.NewRequestParser(authz.RequestConfig{Base: "/fhir"})
	if err != nil {
		b.Fatal(err)
	}
	r := store.NewReader(st, maxAge)
	srv, err := envoy.NewAuthServer(authz.NewAuthorizer(authz.Options{Verifier: verifier, Parser: parser, Evaluator: engine,
		Grants: r, Care: r, Consents: r, Elevations: r}), nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	tok, err := keys.Mint(stacktest.Physician(1))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = st.Close() })
	req := stacktest.CheckRequest("GET", "/fhir/Patient/pat-0001", tok)
	b.ResetTimer()
	runChecks(b, srv, req)
	return srv
}

// BenchmarkCheckStore compares the embedded store with PostgreSQL on the
// same decision path, each with the Reader's cache and without it. Run it
// beside BenchmarkCheck and BenchmarkCheckNoop for ratios in one run
// (PostgreSQL tests need it installed; see internal/pgtest).
func BenchmarkCheckStore(b *testing.B) {
	for _, maxAge := range []struct {
		name string
		d    time.Duration
	}{{"cached", 0}, {"uncached", time.Nanosecond}} {
		b.Run("memory/"+maxAge.name, func(b *testing.B) {
			storeServer(b, store.NewMemory(0), maxAge.d)
		})
		b.Run("postgres/"+maxAge.name, func(b *testing.B) {
			dsn := pgtest.Start(b)
			if _, err := store.Migrate(b.Context(), dsn); err != nil {
				b.Fatal(err)
			}
			st, err := store.OpenPostgres(b.Context(), dsn)
			if err != nil {
				b.Fatal(err)
			}
			storeServer(b, st, maxAge.d)
		})
	}
}
