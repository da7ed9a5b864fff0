package audit

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// syslogReceiver is a minimal RFC 6587 octet-counting receiver: it reads
// "LEN SP MSG" frames from every connection and hands back the messages.
type syslogReceiver struct {
	ln   net.Listener
	msgs chan string
}

func startReceiver(t *testing.T, tlsConf *tls.Config) *syslogReceiver {
	t.Helper()
	var ln net.Listener
	var err error
	if tlsConf != nil {
		ln, err = tls.Listen("tcp", "127.0.0.1:0", tlsConf)
	} else {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
	}
	if err != nil {
		t.Fatal(err)
	}
	r := &syslogReceiver{ln: ln, msgs: make(chan string, 1000)}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go r.serve(c)
		}
	}()
	return r
}

func (r *syslogReceiver) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	for {
		lenStr, err := br.ReadString(' ')
		if err != nil {
			return
		}
		n, err := strconv.Atoi(strings.TrimSpace(lenStr))
		if err != nil || n <= 0 {
			return
		}
		buf := make([]byte, n)
		if _, err := io.ReadFull(br, buf); err != nil {
			return
		}
		r.msgs <- string(buf)
	}
}

func (r *syslogReceiver) next(t *testing.T) string {
	t.Helper()
	select {
	case m := <-r.msgs:
		return m
	case <-time.After(5 * time.Second):
		t.Fatal("no syslog message arrived")
		return ""
	}
}

var rfc5424 = regexp.MustCompile(`^<(\d+)>1 (\S+) (\S+) phigate (\d+) (AuditEvent|Checkpoint) \[meta sequenceId="(\d+)"\] (\{.*\})$`)

func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "siem"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}, pool
}

func TestSyslogSink(t *testing.T) {
	cert, pool := selfSigned(t)
	cases := []struct {
		name   string
		server *tls.Config
		client *tls.Config
	}{
		{"plain TCP", nil, nil},
		{"TLS", &tls.Config{Certificates: []tls.Certificate{cert}}, &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rcv := startReceiver(t, tc.server)
			sink := NewSyslogSink("siem", rcv.ln.Addr().String(), tc.client)
			l, _ := openTest(t, func(c *Config) { c.CheckpointEvery = 3 }, WithSink(sink))
			fill(t, l, 1, 3) // records 1..3 (1 is a denial), then a checkpoint
			var events, checkpoints int
			for range 4 {
				m := rcv.next(t)
				g := rfc5424.FindStringSubmatch(m)
				if g == nil {
					t.Fatalf("not RFC 5424: %q", m)
				}
				pri, _ := strconv.Atoi(g[1])
				if pri/8 != syslogFacilityAudit {
					t.Fatalf("facility %d, want %d", pri/8, syslogFacilityAudit)
				}
				if _, err := time.Parse(time.RFC3339Nano, g[2]); err != nil {
					t.Fatalf("timestamp %q: %v", g[2], err)
				}
				switch g[5] {
				case "AuditEvent":
					events++
					var ev AuditEvent
					if err := json.Unmarshal([]byte(g[7]), &ev); err != nil {
						t.Fatal(err)
					}
					if want := fmt.Sprintf("dec-%s", g[6]); ev.ID != want {
						t.Fatalf("sequenceId %s carries %s", g[6], ev.ID)
					}
					if wantSev := map[string]int{"0": 6, "4": 5}[ev.Outcome]; pri%8 != wantSev {
						t.Fatalf("severity %d for outcome %s", pri%8, ev.Outcome)
					}
				case "Checkpoint":
					checkpoints++
					var cp Checkpoint
					if err := json.Unmarshal([]byte(g[7]), &cp); err != nil || cp.Size != 3 || !cp.verifySig(l.PublicKey()) {
						t.Fatalf("checkpoint %q: %v", g[7], err)
					}
				}
			}
			if events != 3 || checkpoints != 1 {
				t.Fatalf("%d events, %d checkpoints; want 3 and 1", events, checkpoints)
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestSyslogSinkReconnects(t *testing.T) {
	rcv := startReceiver(t, nil)
	sink := NewSyslogSink("siem", rcv.ln.Addr().String(), nil)
	defer sink.Close()
	if err := sink.Write(SinkRecord{Seq: 1, JSON: []byte(`{"a":1}`)}); err != nil {
		t.Fatal(err)
	}
	rcv.next(t)
	sink.conn.Close() // the SIEM dropped the connection
	if err := sink.Write(SinkRecord{Seq: 2, JSON: []byte(`{"a":2}`)}); err != nil {
		t.Fatalf("write after drop: %v", err)
	}
	if m := rcv.next(t); !strings.HasSuffix(m, `{"a":2}`) {
		t.Fatalf("got %q", m)
	}
}

// lockedBuffer is a bytes.Buffer safe for the sink goroutine and the test.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestJSONLinesSink(t *testing.T) {
	var buf lockedBuffer
	l, _ := openTest(t, func(c *Config) { c.CheckpointEvery = 1000 }, WithSink(NewJSONLinesSink("shipper", &buf)))
	fill(t, l, 1, 4)
	if err := l.Close(); err != nil { // drains the queue; adds the final checkpoint
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 5 {
		t.Fatalf("%d lines, want 4 events and 1 checkpoint:\n%s", len(lines), buf.String())
	}
	for i, line := range lines[:4] {
		var ev AuditEvent
		if err := json.Unmarshal([]byte(line), &ev); err != nil || ev.ID != fmt.Sprintf("dec-%d", i+1) {
			t.Fatalf("line %d: %v %s", i, err, line)
		}
	}
	if !strings.HasPrefix(lines[4], `{"checkpoint":{`) {
		t.Fatalf("last line %s", lines[4])
	}
}

// stuckWriter blocks until released, like a SIEM that stopped reading.
type stuckWriter struct{ release chan struct{} }

func (s stuckWriter) Write(p []byte) (int, error) { <-s.release; return len(p), nil }

func TestSinkNeverBlocksDecisions(t *testing.T) {
	reg := prometheus.NewRegistry()
	w := stuckWriter{release: make(chan struct{})}
	sink := NewJSONLinesSink("stuck", w)
	sink.queue = 2
	l, _ := openTest(t, func(c *Config) { c.CheckpointEvery = 1000 }, WithSink(sink), WithRegisterer(reg))
	done := make(chan struct{})
	go func() {
		fill(t, l, 1, 20)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Record blocked on a stuck sink")
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var dropped float64
	for _, mf := range mfs {
		if mf.GetName() == "phigate_audit_sink_dropped_total" {
			dropped = mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	// One record is in the writer, two are queued; the rest were dropped.
	if dropped < 15 {
		t.Fatalf("dropped = %v, want at least 15", dropped)
	}
	close(w.release)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}
