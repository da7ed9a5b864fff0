package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/phigate/phigate/bench"
)

func runCmd(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = dispatch(t.Context(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestVerbs(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  string // in stdout
		wantErr  string // in stderr
	}{
		{"usage names every verb", []string{"help"}, 0, "", "usage: phigate-demo <command>"},
		{"unknown verb", []string{"serve"}, 2, "", "bench"},
		{"token needs a subject", []string{"token", "--dir", dir}, 2, "", "--sub is required"},
		{"token for a physician", []string{"token", "--dir", dir, "--sub", "prac-001", "--role", "physician", "--purpose", "TREAT"}, 0, "eyJ", ""},
		{"bench flag error", []string{"bench", "--rates", "fast"}, 2, "", "--rates"},
		{"bench exclusive flags", []string{"bench", "--envoy", "--baseline"}, 2, "", "--envoy"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runCmd(t, tc.args...)
			if code != tc.wantCode {
				t.Fatalf("exit %d, want %d; stdout %q stderr %q", code, tc.wantCode, stdout, stderr)
			}
			if !strings.Contains(stdout, tc.wantOut) || !strings.Contains(stderr, tc.wantErr) {
				t.Errorf("stdout %q stderr %q, want %q and %q in them", stdout, stderr, tc.wantOut, tc.wantErr)
			}
		})
	}
	_, _, usage := runCmd(t, "help")
	for _, verb := range []string{"up", "upstream", "token", "bench", "noop"} {
		if !strings.Contains(usage, "  "+verb+" ") {
			t.Errorf("usage lacks %q:\n%s", verb, usage)
		}
	}
}

// noop serves the baseline alone, allowing every Check, until stopped.
func TestNoopServesAlone(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "noop.sock")
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan int, 1)
	go func() { done <- dispatch(ctx, []string{"noop", "--listen", "unix://" + sock}, io.Discard, io.Discard) }()
	var tgt *bench.GRPCTarget
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := os.Stat(sock); err == nil {
			var err error
			if tgt, err = bench.NewGRPCTarget("noop", "unix://"+sock, 1); err != nil {
				t.Fatal(err)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("noop never listened")
		}
		time.Sleep(20 * time.Millisecond)
	}
	defer tgt.Close()
	if err := tgt.Prepare([]bench.Call{{Kind: bench.KindRead, Method: "GET", Path: "/fhir/Patient/pat-0001", Headers: map[string]string{"host": "x"}}}); err != nil {
		t.Fatal(err)
	}
	if out := tgt.Send(t.Context(), 0); out.Err != "" || out.Decision != "ok" {
		t.Fatalf("noop answered %+v, want ok", out)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("noop exited %d", code)
	}
}
