package bench

import (
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// startHTTP serves h on a real loopback listener.
func startHTTP(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	lis, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "http://" + lis.Addr().String()
}

// TestRunHTTPCompare runs the same load through two HTTP front ends, one
// that denies requests without a bearer token and one that lets all pass,
// as a caller comparing Envoy with and without phigate would.
func TestRunHTTPCompare(t *testing.T) {
	guarded := startHTTP(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") || r.Header.Get("X-Request-Id") == "" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		time.Sleep(time.Millisecond)
		_, _ = io.WriteString(w, `{"resourceType":"Patient"}`)
	})
	open := startHTTP(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, `{"resourceType":"Patient"}`)
	})
	cases := []struct {
		name string
		cfg  Config
	}{
		{"open loop", Config{Mode: Open, Rates: []float64{200}}},
		{"closed loop", Config{Mode: Closed, Concurrency: []int{4}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			cfg.Target, cfg.TargetName = guarded, "with-phigate"
			cfg.Compare, cfg.CompareName = open, "without"
			cfg.Step, cfg.Warmup = 600*time.Millisecond, 100*time.Millisecond
			cfg.Scenario = "mixed"
			rep, err := RunHTTP(t.Context(), cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			checkReport(t, rep)
			g, o := rep.Targets[0].Stages[0], rep.Targets[1].Stages[0]
			// The mixed scenario sends some requests without a token.
			if g.Decisions["denied_401"] == 0 || g.ByKind[KindNoToken]["denied_401"] != g.Decisions["denied_401"] {
				t.Errorf("guarded decisions %v by kind %v: want exactly the no-token calls denied", g.Decisions, g.ByKind[KindNoToken])
			}
			if o.Decisions["ok"] != o.Answered {
				t.Errorf("open front end decisions %v, want all ok", o.Decisions)
			}
			if len(rep.Ratios) != 1 || !(rep.Ratios[0].P50 > 1) {
				t.Errorf("ratios %+v: the 1 ms guard must be slower than the open front end", rep.Ratios)
			}
		})
	}
	if _, err := RunHTTP(t.Context(), Config{Target: "127.0.0.1:1"}, nil); err == nil {
		t.Error("RunHTTP accepted a gRPC address")
	}
}

func TestFindPID(t *testing.T) {
	cases := []struct {
		name, network, addr string
	}{
		{"tcp", "tcp", "127.0.0.1:0"},
		{"unix", "unix", filepath.Join(t.TempDir(), "s.sock")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			lis, err := (&net.ListenConfig{}).Listen(t.Context(), tc.network, tc.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer lis.Close()
			addr := lis.Addr().String()
			if tc.network == "unix" {
				addr = "unix://" + addr
			}
			pid, err := FindPID(addr)
			if err != nil || pid != os.Getpid() {
				t.Fatalf("FindPID(%s) = %d, %v; want %d", addr, pid, err, os.Getpid())
			}
			cpu, err := procTimes(pid)
			if err != nil || !(cpu > 0) {
				t.Errorf("procTimes = %v, %v", cpu, err)
			}
		})
	}
	lis, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	if pid, err := FindPID(addr); err == nil {
		t.Errorf("FindPID of a closed port = %d, want an error", pid)
	}
}
