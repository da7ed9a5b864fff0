// Package redistest starts a real Redis server for tests: Debian's
// redis-server on a loopback port, with nothing persisted, stopped when
// the test binary ends. Counters shared by replicas are tested against
// the server phigate will run against, not a fake.
//
// PHIGATE_TEST_REDIS, when set, is the address of a server to use instead.
// Without redis-server the test is skipped, except under CI, where it
// fails: `make test` installs it when missing.
package redistest

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var (
	shared     *server
	sharedErr  error
	sharedOnce sync.Once
	seq        atomic.Int64
)

type server struct {
	addr string
	cmd  *exec.Cmd
	dir  string
}

// Start returns the address of the package's shared server and a key
// prefix of t's own, so tests sharing the server do not see each other's
// keys.
func Start(t testing.TB) (addr, prefix string) {
	t.Helper()
	prefix = fmt.Sprintf("t%d-%d:", os.Getpid(), seq.Add(1))
	if a := os.Getenv("PHIGATE_TEST_REDIS"); a != "" {
		return a, prefix
	}
	sharedOnce.Do(func() { shared, sharedErr = start() })
	if sharedErr != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("Redis: %v", sharedErr)
		}
		t.Skipf("Redis not available: %v", sharedErr)
	}
	return shared.addr, prefix
}

func start() (*server, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("no redis-server on PATH (make test installs Debian's redis-server)")
	}
	dir, err := os.MkdirTemp("", "phigate-redis-")
	if err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	s := &server{addr: "127.0.0.1:" + strconv.Itoa(port), dir: dir}
	s.cmd = exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", dir, "--daemonize", "no", "--protected-mode", "yes", "--loglevel", "warning")
	s.cmd.Stdout, s.cmd.Stderr = nil, nil
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if ping(s.addr) == nil {
			return s, nil
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, fmt.Errorf("redis-server did not answer on %s within 10s", s.addr)
		}
	}
}

// ping speaks just enough RESP to know the server is up.
func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+PONG") {
		return fmt.Errorf("unexpected reply %q", line)
	}
	return nil
}

func (s *server) stop() {
	if s.cmd.Process != nil {
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
	}
	_ = os.RemoveAll(s.dir)
}

// Stop stops the shared server, if this binary started one.
func Stop() {
	if shared != nil {
		shared.stop()
	}
}

// Wrap runs m and then stops the shared server: TestMain's body is
// os.Exit(redistest.Wrap(m).Run()), or pgtest.Main(redistest.Wrap(m)).
func Wrap(m interface{ Run() int }) interface{ Run() int } { return wrapped{m} }

type wrapped struct{ m interface{ Run() int } }

func (w wrapped) Run() int {
	code := w.m.Run()
	Stop()
	return code
}
