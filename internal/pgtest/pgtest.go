// Package pgtest starts a real PostgreSQL server for tests: Debian's
// binaries, a cluster in a temporary directory, a loopback port, stopped
// when the test ends. Tests of shared state run against the server phigate
// will run against, not a fake.
//
// PHIGATE_TEST_POSTGRES, when set, is a connection string to use instead
// (a server the caller runs). Otherwise the binaries are looked for under
// /usr/lib/postgresql/*/bin; `make test` installs them when missing. When
// neither is available the test is skipped, except under CI, where it
// fails: shared state untested against its database is not tested.
package pgtest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Server is one running cluster.
type Server struct {
	dir, bin string
	port     int
	runAs    *user.User
	base     string // DSN of the maintenance database
}

var (
	shared     *Server
	sharedErr  error
	sharedOnce sync.Once
)

// Start returns a connection string to a fresh, empty database on a
// server shared by the package's tests (one cluster per test binary,
// one database per call), so tests stay isolated without an initdb each.
func Start(t testing.TB) string {
	t.Helper()
	if dsn := os.Getenv("PHIGATE_TEST_POSTGRES"); dsn != "" {
		return freshDB(t, dsn)
	}
	sharedOnce.Do(func() { shared, sharedErr = startServer() })
	if sharedErr != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("PostgreSQL: %v", sharedErr)
		}
		t.Skipf("PostgreSQL not available: %v", sharedErr)
	}
	return freshDB(t, shared.base)
}

// freshDB creates a database of its own for t on the server at base.
func freshDB(t testing.TB, base string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("connect to test server: %v", err)
	}
	defer conn.Close(ctx)
	name := fmt.Sprintf("t_%d_%d", os.Getpid(), time.Now().UnixNano())
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if c, err := pgx.Connect(ctx, base); err == nil {
			_, _ = c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
			c.Close(ctx)
		}
	})
	cfg, err := pgx.ParseConfig(base)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=disable", cfg.Host, cfg.Port, cfg.User, name)
}

// binDir finds the newest installed PostgreSQL's binaries.
func binDir() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	return "", fmt.Errorf("no initdb under /usr/lib/postgresql/*/bin (make test installs Debian's postgresql)")
}

func version(dir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
	return n
}

func startServer() (*Server, error) {
	bin, err := binDir()
	if err != nil {
		return nil, err
	}
	s := &Server{bin: bin}
	// PostgreSQL refuses to run as root; CI runs as root, so the cluster
	// belongs to Debian's postgres user there.
	if os.Geteuid() == 0 {
		if s.runAs, err = user.Lookup("postgres"); err != nil {
			return nil, fmt.Errorf("running as root and no postgres user: %w", err)
		}
	}
	if s.dir, err = os.MkdirTemp("", "phigate-pg-"); err != nil {
		return nil, err
	}
	if err := s.chown(s.dir); err != nil {
		return nil, err
	}
	data := filepath.Join(s.dir, "data")
	if out, err := s.command("initdb", "-D", data, "-U", "phigate", "--auth=trust", "-E", "UTF8", "--no-sync").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("initdb: %v: %s", err, out)
	}
	if s.port, err = freePort(); err != nil {
		return nil, err
	}
	if err := s.start(); err != nil {
		return nil, err
	}
	s.base = fmt.Sprintf("host=127.0.0.1 port=%d user=phigate dbname=postgres sslmode=disable", s.port)
	return s, nil
}

func (s *Server) start() error {
	data := filepath.Join(s.dir, "data")
	opts := fmt.Sprintf("-c listen_addresses=127.0.0.1 -c port=%d -c unix_socket_directories=%s -c fsync=off -c max_connections=200", s.port, s.dir)
	if out, err := s.command("pg_ctl", "-D", data, "-o", opts, "-l", filepath.Join(s.dir, "log"), "-w", "-t", "60", "start").CombinedOutput(); err != nil {
		log, _ := os.ReadFile(filepath.Join(s.dir, "log"))
		return fmt.Errorf("pg_ctl start: %v: %s\n%s", err, out, log)
	}
	return nil
}

func (s *Server) stop(mode string) error {
	if out, err := s.command("pg_ctl", "-D", filepath.Join(s.dir, "data"), "-m", mode, "-w", "stop").CombinedOutput(); err != nil {
		return fmt.Errorf("pg_ctl stop: %v: %s", err, out)
	}
	return nil
}

// Own is a server of one test's own, which the test may stop and start
// again (on the same port, with its data kept) to show what phigate does
// while its store is away.
type Own struct {
	t   testing.TB
	srv *Server
	// DSN names a fresh database on it.
	DSN string
}

// StartOwn starts a server for t alone, removed when t ends. Skipped or
// failed as Start is when PostgreSQL is not installed.
func StartOwn(t testing.TB) *Own {
	t.Helper()
	srv, err := startServer()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("PostgreSQL: %v", err)
		}
		t.Skipf("PostgreSQL not available: %v", err)
	}
	o := &Own{t: t, srv: srv}
	t.Cleanup(func() {
		_ = srv.stop("immediate")
		_ = os.RemoveAll(srv.dir)
	})
	o.DSN = freshDB(t, srv.base)
	return o
}

// Stop stops the server as an operator would (fast shutdown: sessions
// are cut, nothing committed is lost).
func (o *Own) Stop() {
	o.t.Helper()
	if err := o.srv.stop("fast"); err != nil {
		o.t.Fatal(err)
	}
}

// Restart starts the stopped server again with its data.
func (o *Own) Restart() {
	o.t.Helper()
	if err := o.srv.start(); err != nil {
		o.t.Fatal(err)
	}
}

func (s *Server) command(name string, args ...string) *exec.Cmd {
	path := filepath.Join(s.bin, name)
	if s.runAs == nil {
		return exec.Command(path, args...)
	}
	return exec.Command("runuser", append([]string{"-u", s.runAs.Username, "--", path}, args...)...)
}

func (s *Server) chown(dir string) error {
	if s.runAs == nil {
		return nil
	}
	uid, _ := strconv.Atoi(s.runAs.Uid)
	gid, _ := strconv.Atoi(s.runAs.Gid)
	return os.Chown(dir, uid, gid)
}

// Stop stops the shared server, if this binary started one. TestMain
// calls it after the tests: a test binary must not leave a server behind.
func Stop() {
	if shared == nil {
		return
	}
	_ = shared.stop("immediate")
	_ = os.RemoveAll(shared.dir)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Main is TestMain's body for a package that uses Start.
func Main(m interface{ Run() int }) int {
	code := m.Run()
	Stop()
	return code
}
