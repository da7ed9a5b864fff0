package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/phigate/phigate/internal/pgtest"
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
