package bench

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
)

// stallServer answers one request at a time, and freezes for stall once,
// stallAfter into its life, the way a GC pause or a lock convoy would.
type stallServer struct {
	authv3.UnimplementedAuthorizationServer
	mu         sync.Mutex
	first      time.Time
	stalled    bool
	stallAfter time.Duration
	stall      time.Duration
}

func (s *stallServer) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	if s.first.IsZero() {
		s.first = now
	}
	if !s.stalled && now.Sub(s.first) >= s.stallAfter {
		s.stalled = true
		time.Sleep(s.stall)
	}
	return &authv3.CheckResponse{Status: &rpcstatus.Status{}}, nil
}

// TestOpenLoopChargesStalls checks the coordinated-omission correction: a
// 200 ms stall must show as ~200 ms in the high percentiles even when the
// generator has so few request slots that it could not send during the
// stall (where a naive generator would report only the few requests that
// were in flight).
func TestOpenLoopChargesStalls(t *testing.T) {
	const stall = 200 * time.Millisecond
	cases := []struct {
		name        string
		maxInFlight int
		// naiveLow: with few slots the service time (from actual send) must
		// miss the stall, which is what the correction is for.
		naiveLow bool
	}{
		{"two slots", 2, true},
		{"many slots", 4096, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			lis, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			gs := grpc.NewServer()
			authv3.RegisterAuthorizationServer(gs, &stallServer{stallAfter: 500 * time.Millisecond, stall: stall})
			go func() { _ = gs.Serve(lis) }()
			defer gs.Stop()

			rep, err := Run(t.Context(), Config{
				Target: lis.Addr().String(), Mode: Open, Rates: []float64{400},
				Step: 1500 * time.Millisecond, NoWarmup: true, MaxInFlight: tc.maxInFlight,
				Connections: 1, PID: -1, Scenario: "read-mostly",
			}, nil)
			if err != nil {
				t.Fatal(err)
			}
			checkReport(t, rep)
			s := rep.Targets[0].Stages[0]
			ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
			// 200 ms of a 1500 ms run is 13% of requests, waiting between
			// 0 and 200 ms: p99 lands near 185 ms.
			if s.Latency.P99 < ms(stall)*0.6 {
				t.Errorf("p99 = %.1f ms, want ≥ %.0f ms: the stall was hidden", s.Latency.P99, ms(stall)*0.6)
			}
			if s.Latency.Max < ms(stall)*0.9 || s.Latency.Max > ms(stall)*3 {
				t.Errorf("max = %.1f ms, want about %.0f ms", s.Latency.Max, ms(stall))
			}
			if s.Latency.P50 > ms(stall)/4 {
				t.Errorf("p50 = %.1f ms: the stall should touch only the tail", s.Latency.P50)
			}
			if tc.naiveLow && s.Service.P99 > s.Latency.P99/2 {
				t.Errorf("uncorrected p99 = %.1f ms, corrected %.1f ms: expected the uncorrected figure to miss the stall",
					s.Service.P99, s.Latency.P99)
			}
			t.Logf("corrected %+v\nuncorrected %+v", s.Latency, s.Service)
		})
	}
}
