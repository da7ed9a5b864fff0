package main

import (
	"context"
	"fmt"
	"io"
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

	"github.com/phigate/phigate/audit"
	"github.com/phigate/phigate/demo/demokeys"
	"github.com/phigate/phigate/envoy"
	"github.com/phigate/phigate/envoy/envoytest"
	"github.com/phigate/phigate/internal/stacktest"
)

// phigateProc is phigate running as a separate process.
type phigateProc struct {
	cmd    *exec.Cmd
	logs   *strings.Builder
	exited chan error
}

func startPhigateProc(t *testing.T, cfgPath, adminAddr string) *phigateProc {
	t.Helper()
	p := &phigateProc{cmd: exec.Command(binary(t), "serve", "--config", cfgPath), logs: &strings.Builder{}, exited: make(chan error, 1)}
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.exited <- p.cmd.Wait() }()
	t.Cleanup(func() { _ = p.cmd.Process.Kill() })
	waitReady(t, "http://"+adminAddr+"/readyz", p.exited)
	return p
}

// TestCrashKeepsEveryForwardedRequestAudited kills phigate with SIGKILL in
// the middle of sustained load through Envoy, restarts it on the same ports
// and audit directory, and requires that the trail verifies and holds the
// decision record of every request the legacy service received: a decision
// takes effect only once its record is durable, so a crash may lose an
// answer but never an audited access.
func TestCrashKeepsEveryForwardedRequestAudited(t *testing.T) {
	deadline, cancelAll := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancelAll()
	keys, err := demokeys.LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	up := stacktest.StartLegacy(t)
	grpcAddr, adminAddr := envoytest.FreePort(t), envoytest.FreePort(t)
	auditDir := filepath.Join(t.TempDir(), "audit")
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
  checkpoint_every: 200
shutdown:
  drain_delay: 0s
  grace: 5s
log:
  level: warn
`, grpcAddr, adminAddr, demokeys.DefaultIssuer, demokeys.DefaultAudience, keys.JWKSPath(), auditDir)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	first := startPhigateProc(t, cfgPath, adminAddr)
	ev := envoytest.Start(t, envoy.BootstrapConfig{Upstream: up.Addr, Phigate: grpcAddr})
	tok, err := keys.Mint(stacktest.Physician(1))
	if err != nil {
		t.Fatal(err)
	}

	// phase: 0 before the kill, 1 while phigate is down, 2 after the restart.
	var phase atomic.Int32
	var ok [3]atomic.Int64
	var other [3]atomic.Int64
	load, stopLoad := context.WithCancel(deadline)
	defer stopLoad()
	client := &http.Client{Timeout: 5 * time.Second}
	var wg sync.WaitGroup
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for load.Err() == nil {
				req, _ := http.NewRequestWithContext(load, "GET", ev.URL("/fhir/Patient/pat-0001"), nil)
				req.Header.Set("authorization", "Bearer "+tok)
				ph := phase.Load()
				resp, err := client.Do(req)
				if err != nil {
					other[ph].Add(1)
					time.Sleep(10 * time.Millisecond)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == 200 {
					ok[ph].Add(1)
				} else {
					other[ph].Add(1)
				}
			}
		}()
	}
	time.Sleep(1500 * time.Millisecond)
	if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-first.exited
	phase.Store(1)
	// A kill lands between write(2) calls far more often than inside one;
	// leave the half-written frame a kill inside one would, so the restart
	// must repair it whatever the timing was.
	tornTail(t, auditDir)
	time.Sleep(300 * time.Millisecond)
	second := startPhigateProc(t, cfgPath, adminAddr)
	phase.Store(2)
	// Envoy reconnects on its own; give the load time to prove it did.
	for end := time.Now().Add(10 * time.Second); ok[2].Load() < 200 && time.Now().Before(end); {
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	stopLoad()
	wg.Wait()
	if err := second.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-second.exited:
		if err != nil {
			t.Fatalf("restarted phigate exited with %v; log:\n%s", err, second.logs)
		}
	case <-deadline.Done():
		t.Fatal("restarted phigate did not stop in time")
	}
	t.Logf("200s: %d before the kill, %d while down, %d after the restart; other outcomes %d/%d/%d",
		ok[0].Load(), ok[1].Load(), ok[2].Load(), other[0].Load(), other[1].Load(), other[2].Load())
	if ok[0].Load() == 0 || ok[2].Load() == 0 {
		t.Fatalf("load did not span the crash: %d allowed before, %d after", ok[0].Load(), ok[2].Load())
	}
	if !strings.Contains(second.logs.String(), "audit log repaired") {
		t.Errorf("the restart did not report repairing the torn tail; log:\n%s", second.logs)
	}

	code, stdout, stderr := runCmd(t, "audit", "verify", auditDir, "--trusted-keys", audit.PublicKeyPath(audit.DefaultSigningKeyFile(auditDir)))
	if code != 0 {
		t.Fatalf("audit verify after the crash: exit %d: %s %s", code, stdout, stderr)
	}
	t.Log(strings.TrimSpace(stdout))

	entries, err := audit.Query(auditDir, audit.Filter{Kind: audit.KindDecision}, audit.QueryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	recorded := make(map[string]bool, len(entries))
	for _, e := range entries {
		recorded[e.Event.DecisionID()] = true
	}
	seen := up.Requests()
	var missing []string
	for _, r := range seen {
		id := r.Headers.Get(envoy.DecisionHeader)
		if id == "" || !recorded[id] {
			missing = append(missing, fmt.Sprintf("%q", id))
		}
	}
	t.Logf("legacy service received %d requests; trail holds %d decision records", len(seen), len(entries))
	if len(seen) == 0 {
		t.Fatal("no request reached the legacy service")
	}
	if len(missing) > 0 {
		t.Fatalf("%d of %d forwarded requests have no decision record, e.g. %s", len(missing), len(seen), missing[0])
	}
}

// tornTail appends the first bytes of a frame header to the newest segment.
func tornTail(t *testing.T, dir string) {
	t.Helper()
	segs, err := filepath.Glob(filepath.Join(dir, "seg-*.pga"))
	if err != nil || len(segs) == 0 {
		t.Fatalf("no segment to tear in %s: %v", dir, err)
	}
	f, err := os.OpenFile(segs[len(segs)-1], os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write([]byte{'P', 'G', 1, 0, 0, 0, 2, 0, 0, 0}); err != nil {
		t.Fatal(err)
	}
}
