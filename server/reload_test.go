package server_test

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/phigate/phigate/demo/demokeys"
	"github.com/phigate/phigate/internal/stacktest"
	"github.com/phigate/phigate/server"
)

// TestPolicyReloadUnderLoad swaps the policy directory repeatedly, with
// broken pushes in between, while Check calls run without pause: every
// call must succeed and be decided exactly as before.
func TestPolicyReloadUnderLoad(t *testing.T) {
	keys, err := demokeys.LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	pdir := t.TempDir()
	stacktest.CopyLibrary(t, pdir)
	cfg := stacktest.ServerConfig(t, keys)
	cfg.Policy.Dir = pdir
	cfg.Policy.ReloadInterval = 100 * time.Millisecond
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	srv, err := server.New(ctx, cfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	defer func() { cancel(); <-done }()

	tok, err := keys.Mint(stacktest.Physician(1))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(srv.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := authv3.NewAuthorizationClient(conn)
	cases := []struct {
		req  *authv3.CheckRequest
		want codes.Code
	}{
		{stacktest.CheckRequest("GET", "/fhir/Patient/pat-0001", tok), codes.OK},
		{stacktest.CheckRequest("GET", "/fhir/Patient/pat-0002", tok), codes.PermissionDenied},
		{stacktest.CheckRequest("GET", "/fhir/Patient/pat-0001", "forged"), codes.Unauthenticated},
	}

	var calls, wrong atomic.Int64
	var wg sync.WaitGroup
	loadCtx, stopLoad := context.WithCancel(ctx)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; loadCtx.Err() == nil; i++ {
				c := cases[i%len(cases)]
				resp, err := client.Check(loadCtx, c.req)
				if loadCtx.Err() != nil {
					return
				}
				calls.Add(1)
				if err != nil || codes.Code(resp.GetStatus().GetCode()) != c.want {
					wrong.Add(1)
					t.Errorf("call %d: got %v / %v, want %v", i, resp.GetStatus(), err, c.want)
				}
			}
		}()
	}

	authz := filepath.Join(pdir, "authz.rego")
	good, err := os.ReadFile(authz)
	if err != nil {
		t.Fatal(err)
	}
	revisions := map[string]bool{srv.Policy().Status().Revision: true}
	rejected := 0
	for round := range 3 {
		// A broken push: the old policy keeps serving and the error shows.
		if err := os.WriteFile(authz, append(append([]byte{}, good...), []byte("\nbroken := {\n")...), 0o644); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, func() bool { return srv.Policy().Status().LastError != "" })
		rejected++
		// A good push with a new revision: swapped in atomically.
		next := append(append([]byte{}, good...), []byte("\n# revision "+string(rune('a'+round))+"\n")...)
		if err := os.WriteFile(authz, next, 0o644); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, func() bool { st := srv.Policy().Status(); return st.LastError == "" && !revisions[st.Revision] })
		revisions[srv.Policy().Status().Revision] = true
	}
	stopLoad()
	wg.Wait()
	t.Logf("%d calls during %d rejected and %d accepted reloads; %d wrong", calls.Load(), rejected, len(revisions)-1, wrong.Load())
	if calls.Load() < 100 {
		t.Fatalf("only %d calls ran during the reloads", calls.Load())
	}
	if wrong.Load() != 0 {
		t.Fatalf("%d calls failed or were decided wrongly", wrong.Load())
	}
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 20s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
