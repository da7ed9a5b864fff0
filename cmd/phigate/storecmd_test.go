package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/phigate/phigate/internal/pgtest"
	"github.com/phigate/phigate/store"
)

// TestMain stops the PostgreSQL server the store tests started.
func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// TestStoreCommands against a real PostgreSQL: check fails on a fresh
// database, migrate brings it to the build's version (and again is a
// no-op), check then passes; the connection string comes from a file or
// the environment, never a flag.
func TestStoreCommands(t *testing.T) {
	dsn := pgtest.Start(t)
	file := filepath.Join(t.TempDir(), "dsn")
	if err := os.WriteFile(file, []byte(dsn+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := runCmd(t, "store", "check", "--dsn-file", file); code != 1 || !strings.Contains(stderr, "store migrate") {
		t.Fatalf("check before migrate: exit %d, stderr %q", code, stderr)
	}
	code, stdout, stderr := runCmd(t, "store", "migrate", "--dsn-file", file)
	if code != 0 || !strings.Contains(stdout, "applied schema version 1") {
		t.Fatalf("migrate: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	t.Setenv("PHIGATE_TEST_STORE_DSN", dsn)
	if code, stdout, _ := runCmd(t, "store", "migrate", "--dsn-env", "PHIGATE_TEST_STORE_DSN"); code != 0 || strings.Contains(stdout, "applied") {
		t.Fatalf("second migrate: exit %d, stdout %q", code, stdout)
	}
	if code, stdout, _ := runCmd(t, "store", "check", "--dsn-env", "PHIGATE_TEST_STORE_DSN"); code != 0 ||
		!strings.Contains(stdout, "schema version") {
		t.Fatalf("check after migrate: exit %d, stdout %q", code, stdout)
	}
	for _, args := range [][]string{
		{"store", "check", "--dsn-env", "PHIGATE_TEST_UNSET_DSN"},
		{"store", "migrate", "--dsn-file", file, "--dsn-env", "X"},
		{"store", "migrate", "extra"},
	} {
		if code, _, _ := runCmd(t, args...); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
}

// TestStoreStateCommands: an operator writes a consent, an elevation and a
// relationship with phigate store, reads them back, ends the
// relationship, and bad input is refused with exit 2 or 1, changing
// nothing.
func TestStoreStateCommands(t *testing.T) {
	dsn := pgtest.Start(t)
	t.Setenv("PHIGATE_STORE_DSN", dsn)
	if code, _, stderr := runCmd(t, "store", "migrate"); code != 0 {
		t.Fatalf("migrate: %d %s", code, stderr)
	}
	ok := func(args ...string) string {
		t.Helper()
		code, stdout, stderr := runCmd(t, append([]string{"store"}, args...)...)
		if code != 0 {
			t.Fatalf("%v: exit %d, %s", args, code, stderr)
		}
		return stdout
	}
	ok("consent", "--id", "c1", "--patient", "pat-0001", "--effect", "deny", "--purpose", "HRESCH")
	if out := ok("consents", "--patient", "pat-0001"); !strings.Contains(out, `"id":"c1"`) || !strings.Contains(out, `"purpose":"HRESCH"`) {
		t.Fatalf("consents: %q", out)
	}
	ok("elevate", "--subject", "nurse-1", "--role", "physician", "--reason", "covering ward 3", "--by", "chief-1", "--for", "2h")
	if out := ok("elevations", "--subject", "nurse-1"); !strings.Contains(out, `"role":"physician"`) {
		t.Fatalf("elevations: %q", out)
	}
	ok("relate", "--practitioner", "Practitioner/prac-9", "--patient", "pat-0009", "--role", "consulting")
	if out := ok("relationships", "--practitioner", "Practitioner/prac-9"); !strings.Contains(out, `"patient":"pat-0009"`) {
		t.Fatalf("relationships: %q", out)
	}
	ok("unrelate", "--practitioner", "Practitioner/prac-9", "--patient", "pat-0009", "--role", "consulting")
	time.Sleep(10 * time.Millisecond)
	if out := ok("relationships", "--practitioner", "Practitioner/prac-9"); strings.TrimSpace(out) != "" {
		t.Fatalf("after unrelate: %q", out)
	}
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"store", "consent", "--id", "c2", "--patient", "pat-0001"}, 2},                      // no effect
		{[]string{"store", "consent", "--id", "c2", "--patient", "pat-0001", "--effect", "maybe"}, 1}, // refused by the store
		{[]string{"store", "consent", "--id", "c2", "--patient", "p", "--effect", "deny", "--from", "yesterday"}, 2},
		{[]string{"store", "elevate", "--subject", "u", "--role", "r", "--reason", "x", "--by", "b", "--for", "48h"}, 2},
		{[]string{"store", "relate", "--patient", "p", "--role", "r"}, 2},
	} {
		if code, _, _ := runCmd(t, tc.args...); code != tc.code {
			t.Errorf("%v: exit %d, want %d", tc.args, code, tc.code)
		}
	}
	st, err := store.OpenPostgres(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.RaiseAlert(t.Context(), "dr-bulk", "bulk_read.distinct_patients", time.Now()); err != nil {
		t.Fatal(err)
	}
	out := ok("alerts")
	if !strings.Contains(out, `"subject":"dr-bulk"`) || !strings.Contains(out, `"state":"open"`) {
		t.Fatalf("alerts: %q", out)
	}
	ok("resolve-alert", "--id", "1", "--state", "cleared", "--by", "officer-1", "--note", "justified: mass casualty")
	if out := ok("alerts"); strings.TrimSpace(out) != "" {
		t.Fatalf("open alerts after clearing: %q", out)
	}
	if out := ok("alerts", "--state", "cleared"); !strings.Contains(out, `"resolved_by":"officer-1"`) {
		t.Fatalf("cleared alerts: %q", out)
	}
	if code, _, _ := runCmd(t, "store", "resolve-alert", "--id", "1", "--state", "cleared", "--by", "officer-1"); code != 1 {
		t.Errorf("clearing twice: exit %d, want 1", code)
	}
	if out := ok("consents", "--patient", "pat-0001"); strings.Count(out, "\n") != 1 {
		t.Errorf("a refused consent changed the store: %q", out)
	}
}
