package main

import (
	"bytes"
	"strings"
	"testing"
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
	for _, verb := range []string{"up", "upstream", "token", "bench"} {
		if !strings.Contains(usage, "  "+verb+" ") {
			t.Errorf("usage lacks %q:\n%s", verb, usage)
		}
	}
}
