package ingest

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
)

func TestReadFrame(t *testing.T) {
	for _, c := range []struct {
		name, in string
		want     string
		err      error
	}{
		{"one", "\x0bMSH|x\r\x1c\r", "MSH|x\r", nil},
		{"newlines between frames", "\r\n\x0bA\x1c\r", "A", nil},
		{"outside a frame", "x\x0bA\x1c\r", "", ErrFrameStart},
		{"start inside a frame", "\x0bA\x0bB\x1c\r", "", ErrFrameStart},
		{"end without CR", "\x0bA\x1cB", "", ErrFrameEnd},
		{"too long", "\x0b" + strings.Repeat("a", 11) + "\x1c\r", "", ErrFrameTooLong},
		{"cut", "\x0bAB", "", io.ErrUnexpectedEOF},
		{"closed between frames", "", "", io.EOF},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := readFrame(bufio.NewReader(strings.NewReader(c.in)), 10, nil)
			if !errors.Is(err, c.err) || string(got) != c.want {
				t.Fatalf("readFrame = %q, %v; want %q, %v", got, err, c.want, c.err)
			}
		})
	}
}

// serveMLLP runs an MLLP server over the fixture's ADT on a loopback port.
func serveMLLP(t *testing.T, f *fixture, mod func(*MLLPConfig)) (string, *MLLPServer) {
	t.Helper()
	cfg := Config{}
	if mod != nil {
		mod(&cfg.MLLP)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	s := NewMLLPServer(f.adt, cfg.MLLP, zap.NewNop(), NewMetrics(nil))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String(), s
}

// settle waits until the server holds no connection.
func settle(t *testing.T, s *MLLPServer) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s.mu.Lock()
		n := len(s.conns)
		s.mu.Unlock()
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connections still open", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func dial(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return c, bufio.NewReader(c)
}

// roundTrip sends one framed message and reads the framed ACK's MSA-1.
func roundTrip(t *testing.T, c net.Conn, r *bufio.Reader, msg string) string {
	t.Helper()
	if _, err := c.Write(appendFrame(nil, []byte(msg))); err != nil {
		t.Fatal(err)
	}
	ack, err := readFrame(r, 1<<20, nil)
	if err != nil {
		t.Fatalf("reading the ACK: %v", err)
	}
	m, err := Parse(ack)
	if err != nil {
		t.Fatal(err)
	}
	msa, _ := m.Segment("MSA")
	return msa.Field(1)
}

// TestMLLPServer: several connections at once, several messages on each,
// every one acknowledged in a frame; an oversized message gets AR and its
// connection is closed; bytes outside a frame close the connection; an
// idle connection is closed; connections beyond the maximum are refused.
func TestMLLPServer(t *testing.T) {
	f := newFixture(t, nil)
	addr, srv := serveMLLP(t, f, func(c *MLLPConfig) {
		c.MaxMessageBytes, c.IdleTimeout, c.MaxConnections = 2048, 300*time.Millisecond, 4
	})
	var wg sync.WaitGroup
	for conn := range 3 {
		wg.Go(func() {
			c, r := dial(t, addr)
			for i := range 3 {
				id := string(rune('A'+conn)) + string(rune('0'+i))
				if code := roundTrip(t, c, r, adtMsg("A01", id, 1, map[int]string{7: "prac-001"})); code != "AA" {
					t.Errorf("connection %d message %d: %s", conn, i, code)
				}
			}
		})
	}
	wg.Wait()
	if n := len(f.rec.evs); n != 9 {
		t.Fatalf("%d audit records, want 9", n)
	}

	c, r := dial(t, addr)
	if code := roundTrip(t, c, r, adtMsg("A01", "BIG", 1, map[int]string{7: strings.Repeat("x", 3000)})); code != "AR" {
		t.Fatalf("oversized: %s, want AR", code)
	}
	if _, err := r.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("after an oversized message the connection is open: %v", err)
	}

	c, r = dial(t, addr)
	_, _ = c.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
	if _, err := r.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("after bytes outside a frame: %v, want the connection closed", err)
	}

	c, r = dial(t, addr)
	start := time.Now()
	if _, err := r.ReadByte(); !errors.Is(err, io.EOF) || time.Since(start) > 5*time.Second {
		t.Fatalf("idle connection: %v after %v, want closed", err, time.Since(start))
	}

	settle(t, srv)
	var held []net.Conn
	for range 4 {
		c, r := dial(t, addr)
		if code := roundTrip(t, c, r, adtMsg("A08", "H"+time.Now().Format("150405.000000000"), 2, nil)); code != "AA" {
			t.Fatalf("held connection: %s", code)
		}
		held = append(held, c)
	}
	_, r = dial(t, addr)
	if _, err := r.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("connection over the maximum: %v, want closed", err)
	}
	_ = held
}

func TestAppendFrame(t *testing.T) {
	if got := appendFrame(nil, []byte("A")); !bytes.Equal(got, []byte{0x0b, 'A', 0x1c, 0x0d}) {
		t.Fatalf("%q", got)
	}
}
