package server_test

import (
	"context"
	"io"
	"net/http"
	"regexp"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/phigate/phigate/demo/demokeys"
	"github.com/phigate/phigate/internal/stacktest"
)

// TestHealthByServiceAndBuildInfo: the gRPC health service answers for the
// whole server and for each service by name (an unknown name is an error),
// and /metrics carries phigate_build_info.
func TestHealthByServiceAndBuildInfo(t *testing.T) {
	keys, err := demokeys.LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	srv := stacktest.Serve(t, stacktest.ServerConfig(t, keys), nil)
	conn, err := grpc.NewClient(srv.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	status := func(svc string) healthpb.HealthCheckResponse_ServingStatus {
		c, stop := context.WithTimeout(t.Context(), 5*time.Second)
		defer stop()
		r, err := hc.Check(c, &healthpb.HealthCheckRequest{Service: svc}, grpc.WaitForReady(true))
		if err != nil {
			return healthpb.HealthCheckResponse_UNKNOWN
		}
		return r.Status
	}
	for _, svc := range []string{"", "envoy.service.auth.v3.Authorization", "envoy.service.ext_proc.v3.ExternalProcessor"} {
		if st := status(svc); st != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health %q = %v, want SERVING", svc, st)
		}
	}
	if st := status("no.such.Service"); st != healthpb.HealthCheckResponse_UNKNOWN {
		t.Errorf("health of an unknown service = %v, want an error", st)
	}
	resp, err := http.Get("http://" + srv.AdminAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	m := string(body)
	if !regexp.MustCompile(`(?m)^phigate_build_info\{.*goversion="go1\.[^"]+".*\} 1$`).MatchString(m) {
		t.Errorf("/metrics has no phigate_build_info:\n%s", grepLines(m, "build_info"))
	}
}

// TestPprofOnlyWhenAsked: Go's profiles are on the admin listener only
// with listen.pprof.
func TestPprofOnlyWhenAsked(t *testing.T) {
	keys, err := demokeys.LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, on := range []bool{false, true} {
		cfg := stacktest.ServerConfig(t, keys)
		cfg.Listen.Pprof = on
		srv := stacktest.Serve(t, cfg, nil)
		want := http.StatusNotFound
		if on {
			want = http.StatusOK
		}
		if code, _ := stacktest.GetBody(t, "http://"+srv.AdminAddr()+"/debug/pprof/"); code != want {
			t.Errorf("pprof %v: /debug/pprof/ answered %d, want %d", on, code, want)
		}
	}
}
