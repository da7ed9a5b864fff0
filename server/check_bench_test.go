package server_test

import (
	"context"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"

	"github.com/phigate/phigate/audit"
	"github.com/phigate/phigate/authz"
	"github.com/phigate/phigate/demo/demokeys"
	"github.com/phigate/phigate/envoy"
	"github.com/phigate/phigate/internal/stacktest"
	"github.com/phigate/phigate/policy"
)

type allowAll struct{}

func (allowAll) Authorize(_ context.Context, in *authz.CheckInput) (*authz.Request, authz.Decision, error) {
	return &authz.Request{ID: in.ID}, authz.Decision{Allow: true, Status: 200, ID: "noop"}, nil
}

// checkServer wires the real decision path the way serve does: JWT
// verification with its cache, the request model, the embedded policy and,
// when withAudit, the durable audit trail.
func checkServer(b *testing.B, withAudit, cached bool) (*envoy.AuthServer, *authv3.CheckRequest) {
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
	engine, err := policy.NewEngine(b.Context(), policy.Config{DecisionCache: policy.DecisionCacheConfig{Disabled: !cached}}, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(engine.Close)
	parser, err := authz.NewRequestParser(authz.RequestConfig{Base: "/fhir"})
	if err != nil {
		b.Fatal(err)
	}
	opts := authz.Options{Verifier: verifier, Parser: parser, Evaluator: engine}
	if withAudit {
		trail, err := audit.Open(audit.Config{Dir: b.TempDir()})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = trail.Close() })
		opts.Recorder = trail
	}
	srv, err := envoy.NewAuthServer(authz.NewAuthorizer(opts), nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	tok, err := keys.Mint(stacktest.Physician(1))
	if err != nil {
		b.Fatal(err)
	}
	return srv, stacktest.CheckRequest("GET", "/fhir/Patient/pat-0001", tok)
}

func runChecks(b *testing.B, srv *envoy.AuthServer, req *authv3.CheckRequest) {
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := srv.Check(context.Background(), req)
			if err != nil || codes.Code(resp.GetStatus().GetCode()) != codes.OK {
				b.Fatalf("check: %v %v", resp.GetStatus(), err)
			}
		}
	})
}

// BenchmarkCheckNoop is the adapter alone answering OK: the floor the
// other Check benchmarks are compared with, in the same run.
func BenchmarkCheckNoop(b *testing.B) {
	srv, err := envoy.NewAuthServer(allowAll{}, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	runChecks(b, srv, stacktest.CheckRequest("GET", "/fhir/Patient/pat-0001", "t"))
}

// BenchmarkCheck is the full decision path without the audit trail; the
// request repeats, so after the first the decision comes from the cache.
func BenchmarkCheck(b *testing.B) {
	srv, req := checkServer(b, false, true)
	runChecks(b, srv, req)
}

// BenchmarkCheckUncached evaluates the policy for every Check.
func BenchmarkCheckUncached(b *testing.B) {
	srv, req := checkServer(b, false, false)
	runChecks(b, srv, req)
}

// BenchmarkCheckAudited adds the durable audit append (fsync, group commit).
func BenchmarkCheckAudited(b *testing.B) {
	srv, req := checkServer(b, true, true)
	runChecks(b, srv, req)
}

// BenchmarkCheckAuditedUncached is the audited path evaluating every Check.
func BenchmarkCheckAuditedUncached(b *testing.B) {
	srv, req := checkServer(b, true, false)
	runChecks(b, srv, req)
}
