package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/phigate/phigate/demo/demokeys"
	"github.com/phigate/phigate/envoy/envoytest"
	"github.com/phigate/phigate/internal/stacktest"
)

// buildBinary compiles phigate once per test binary.
var buildOnce = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "phigate-bin")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "phigate")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

func binary(t *testing.T) string {
	t.Helper()
	bin, err := buildOnce()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// TestSIGTERMDrainsUnderLoad runs phigate as a process, drives Check calls
// at it from several goroutines, sends SIGTERM, and requires that no call
// the server accepted fails: only calls refused at connect time may error,
// and the process exits 0.
func TestSIGTERMDrainsUnderLoad(t *testing.T) {
	keys, err := demokeys.LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	grpcAddr, adminAddr := envoytest.FreePort(t), envoytest.FreePort(t)
	cfgPath := filepath.Join(t.TempDir(), "phigate.yaml")
	cfg := fmt.Sprintf(`listen:
  grpc: %s
  admin: %s
jwt:
  issuer: %s
  audiences: [%s]
  jwks_file: %s
audit:
  dir: %s
shutdown:
  drain_delay: 700ms
  grace: 10s
log:
  level: warn
`, grpcAddr, adminAddr, demokeys.DefaultIssuer, demokeys.DefaultAudience, keys.JWKSPath(), t.TempDir())
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startPhigateProc(t, cfgPath, adminAddr)

	tok, err := keys.Mint(stacktest.Physician(1))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := authv3.NewAuthorizationClient(conn)
	req := stacktest.CheckRequest("GET", "/fhir/Patient/pat-0001", tok)

	var (
		sigAt             atomic.Int64
		okBefore, okAfter atomic.Int64
		mu                sync.Mutex
		failures          = map[string]int{}
		wg                sync.WaitGroup
	)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				resp, err := client.Check(ctx, req)
				if err == nil && resp.GetStatus().GetCode() == int32(codes.OK) {
					if sigAt.Load() == 0 {
						okBefore.Add(1)
					} else {
						okAfter.Add(1)
					}
					continue
				}
				if sigAt.Load() == 0 {
					mu.Lock()
					failures[fmt.Sprintf("before SIGTERM: %v %v", err, resp.GetStatus())]++
					mu.Unlock()
					continue
				}
				// After the listener closed, new calls are refused; that
				// is the only failure allowed, and it ends this worker.
				mu.Lock()
				failures[classify(err)]++
				mu.Unlock()
				return
			}
		}()
	}
	time.Sleep(time.Second)
	sigAt.Store(time.Now().UnixNano())
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.exited:
		if err != nil {
			t.Fatalf("phigate exited with %v, want 0; log:\n%s", err, p.logs.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("phigate did not exit within 15s of SIGTERM")
	}
	cancel()
	wg.Wait()
	t.Logf("ok before SIGTERM %d, ok while draining %d, failures %v", okBefore.Load(), okAfter.Load(), failures)
	if okBefore.Load() == 0 || okAfter.Load() == 0 {
		t.Fatalf("load did not span the drain: %d calls before, %d during", okBefore.Load(), okAfter.Load())
	}
	for k := range failures {
		if k != "refused" {
			t.Errorf("a call failed other than by refusal: %s", k)
		}
	}
}

// classify names a post-SIGTERM error: "refused" when the call never
// reached a live server, the error text otherwise.
func classify(err error) string {
	if err == nil {
		return "denied answer"
	}
	st := status.Convert(err)
	msg := st.Message()
	if st.Code() == codes.Unavailable && (strings.Contains(msg, "connection refused") ||
		strings.Contains(msg, "server preface") || strings.Contains(msg, "GOAWAY") || strings.Contains(msg, "goaway")) {
		return "refused"
	}
	return st.Code().String() + ": " + msg
}

func waitReady(t *testing.T, url string, exited chan error) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			t.Fatalf("phigate exited before ready: %v", err)
		default:
		}
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("phigate not ready within 20s")
}
