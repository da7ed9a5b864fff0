package audit

import (
	"bufio"
	"bytes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// SinkRecord is what a sink receives: a durable AuditEvent (Event, JSON) or
// a signed checkpoint (Checkpoint, JSON), so a SIEM can also hold the
// checkpoints that make tail deletion detectable.
type SinkRecord struct {
	Seq        uint64
	Event      *AuditEvent
	Checkpoint *Checkpoint
	JSON       []byte
}

// Sink delivers records to a SIEM. Write is called from one goroutine per
// sink, never from the decision path.
type Sink interface {
	Name() string
	Write(r SinkRecord) error
	Close() error
}

// DefaultSinkQueue is the per-sink queue length when none is configured.
const DefaultSinkQueue = 10000

// queueSizer lets a sink choose its queue length.
type queueSizer interface{ QueueSize() int }

func sinkQueue(s Sink) int {
	if q, ok := s.(queueSizer); ok && q.QueueSize() > 0 {
		return q.QueueSize()
	}
	return DefaultSinkQueue
}

// asyncSink decouples a Sink from the committer with a bounded queue: when
// the SIEM is slow or down records are dropped and counted, and the decision
// path never waits.
type asyncSink struct {
	s       Sink
	ch      chan SinkRecord
	m       *metrics
	lg      *zap.Logger
	dropped atomic.Uint64
	done    chan struct{}
}

func newAsyncSink(s Sink, n int, m *metrics, lg *zap.Logger) *asyncSink {
	a := &asyncSink{s: s, ch: make(chan SinkRecord, n), m: m, lg: lg.With(zap.String("sink", s.Name())), done: make(chan struct{})}
	go a.run()
	return a
}

func (a *asyncSink) enqueue(r SinkRecord) {
	select {
	case a.ch <- r:
	default:
		if n := a.dropped.Add(1); n&(n-1) == 0 { // log at powers of two, not per record
			a.lg.Warn("audit sink queue full; dropping records", zap.Uint64("dropped", n))
		}
		a.m.sinkDropped.WithLabelValues(a.s.Name()).Inc()
	}
}

func (a *asyncSink) enqueueCheckpoint(cp Checkpoint) {
	b, err := json.Marshal(&cp)
	if err != nil {
		return
	}
	a.enqueue(SinkRecord{Seq: cp.Size, Checkpoint: &cp, JSON: b})
}

func (a *asyncSink) run() {
	defer close(a.done)
	var failures uint64
	for r := range a.ch {
		if err := a.s.Write(r); err != nil {
			failures++
			a.m.sinkErrors.WithLabelValues(a.s.Name()).Inc()
			if failures&(failures-1) == 0 {
				a.lg.Warn("audit sink delivery failed", zap.Uint64("failures", failures), zap.Error(err))
			}
		}
	}
}

// close drains what is queued, giving the sink a bounded time to do so.
func (a *asyncSink) close() {
	close(a.ch)
	select {
	case <-a.done:
	case <-time.After(5 * time.Second):
		a.lg.Warn("audit sink did not drain in time")
	}
	_ = a.s.Close()
}

// JSONLinesSink writes one AuditEvent JSON per line (checkpoints too, as
// {"checkpoint":{...}}) for a log shipper to tail. With a key (the trail's
// at-rest key) each AuditEvent line is sealed with AES-256-GCM instead, as
// {"seq":N,"sealed":"<base64 nonce|ciphertext>"} bound to N, so the copy
// does not carry PHI outside the encryption boundary the trail keeps.
// Checkpoint lines stay readable: they hold no PHI, and whoever keeps them
// off-host must be able to compare them with the trail.
type JSONLinesSink struct {
	name   string
	w      io.Writer
	closer io.Closer
	queue  int
	aead   cipher.AEAD
}

// jsonlAD is the additional data of a sealed jsonl line: a domain string and
// the record's sequence, so a line cannot be passed off as a trail frame or
// moved to another position.
func jsonlAD(seq uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte("phigate-audit-jsonl/v1\x00"), seq)
}

// sealedLine is the shape of an encrypted jsonl sink line.
type sealedLine struct {
	Seq    uint64 `json:"seq"`
	Sealed []byte `json:"sealed"`
}

// ReadJSONLines reads a jsonl sink's output and calls fn with each line as
// plain JSON, opening sealed lines with key. A sealed line without a key, or
// one that does not open, is an ErrDecrypt error naming the line number.
func ReadJSONLines(r io.Reader, key []byte, fn func(line []byte) error) error {
	aead, err := newAEAD(key)
	if err != nil {
		return err
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 2*MaxFramePayload)
	n := 0
	for sc.Scan() {
		n++
		line := sc.Bytes()
		if len(line) == 0 {
			continue
		}
		if bytes.HasPrefix(line, []byte(`{"seq":`)) {
			var sl sealedLine
			if err := json.Unmarshal(line, &sl); err != nil || sl.Sealed == nil {
				return errf(CodeEncode, nil, nil, "line %d is not a sealed record", n)
			}
			if aead == nil {
				return errf(CodeDecrypt, nil, nil, "line %d is encrypted and no key was given", n)
			}
			ns := aead.NonceSize()
			if len(sl.Sealed) < ns+aead.Overhead() {
				return errf(CodeDecrypt, nil, nil, "line %d is too short", n)
			}
			plain, err := aead.Open(nil, sl.Sealed[:ns], sl.Sealed[ns:], jsonlAD(sl.Seq))
			if err != nil {
				return errf(CodeDecrypt, nil, nil, "line %d does not open with the key given", n)
			}
			line = plain
		}
		if err := fn(line); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return errf(CodeIO, nil, err, "read jsonl")
	}
	return nil
}

// NewJSONLinesSink writes to w; closing the sink closes w when it is an io.Closer.
func NewJSONLinesSink(name string, w io.Writer) *JSONLinesSink {
	s := &JSONLinesSink{name: name, w: w}
	if c, ok := w.(io.Closer); ok {
		s.closer = c
	}
	return s
}

// Name implements Sink.
func (s *JSONLinesSink) Name() string { return s.name }

// QueueSize implements queueSizer.
func (s *JSONLinesSink) QueueSize() int { return s.queue }

// Write implements Sink.
func (s *JSONLinesSink) Write(r SinkRecord) error {
	line := r.JSON
	switch {
	case r.Checkpoint != nil:
		line = append(append([]byte(`{"checkpoint":`), r.JSON...), '}')
	case s.aead != nil:
		ns := s.aead.NonceSize()
		sealed := make([]byte, ns, ns+len(r.JSON)+s.aead.Overhead())
		if _, err := rand.Read(sealed); err != nil {
			return err
		}
		sealed = s.aead.Seal(sealed, sealed, r.JSON, jsonlAD(r.Seq))
		b, err := json.Marshal(sealedLine{Seq: r.Seq, Sealed: sealed})
		if err != nil {
			return err
		}
		line = b
	}
	_, err := s.w.Write(append(line, '\n'))
	return err
}

// Close implements Sink.
func (s *JSONLinesSink) Close() error {
	if s.closer != nil {
		return s.closer.Close()
	}
	return nil
}

// SyslogSink sends RFC 5424 messages over TCP with octet-counting framing
// (RFC 6587 section 3.4.1), optionally over TLS (RFC 5425).
type SyslogSink struct {
	name     string
	addr     string
	tls      *tls.Config
	hostname string
	app      string
	procID   string
	queue    int
	timeout  time.Duration

	mu   sync.Mutex
	conn net.Conn
	bw   *bufio.Writer
}

// Facility 13 is "log audit" in RFC 5424.
const syslogFacilityAudit = 13

// NewSyslogSink sends to addr (host:port); tlsConf nil means plain TCP.
func NewSyslogSink(name, addr string, tlsConf *tls.Config) *SyslogSink {
	host, _ := os.Hostname()
	if host == "" {
		host = "-"
	}
	return &SyslogSink{name: name, addr: addr, tls: tlsConf, hostname: host, app: "phigate",
		procID: fmt.Sprint(os.Getpid()), timeout: 5 * time.Second}
}

// Name implements Sink.
func (s *SyslogSink) Name() string { return s.name }

// QueueSize implements queueSizer.
func (s *SyslogSink) QueueSize() int { return s.queue }

// Write implements Sink. A broken connection is redialed once per record;
// if that fails too the record is reported as failed (and counted).
func (s *SyslogSink) Write(r SinkRecord) error {
	msg := s.format(r, time.Now())
	s.mu.Lock()
	defer s.mu.Unlock()
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		if s.conn == nil {
			if err = s.dial(); err != nil {
				continue
			}
		}
		_ = s.conn.SetWriteDeadline(time.Now().Add(s.timeout))
		if _, err = fmt.Fprintf(s.bw, "%d %s", len(msg), msg); err == nil {
			if err = s.bw.Flush(); err == nil {
				return nil
			}
		}
		s.conn.Close()
		s.conn = nil
	}
	return err
}

func (s *SyslogSink) dial() error {
	d := net.Dialer{Timeout: s.timeout}
	var c net.Conn
	var err error
	if s.tls != nil {
		c, err = tls.DialWithDialer(&d, "tcp", s.addr, s.tls)
	} else {
		c, err = d.Dial("tcp", s.addr)
	}
	if err != nil {
		return err
	}
	s.conn, s.bw = c, bufio.NewWriter(c)
	return nil
}

// format renders one RFC 5424 message. The structured data uses the IANA
// registered "meta" SD-ID; the MSG is the JSON document.
func (s *SyslogSink) format(r SinkRecord, now time.Time) []byte {
	sev, msgID := 6, "AuditEvent" // informational
	if r.Checkpoint != nil {
		msgID = "Checkpoint"
	} else if r.Event != nil {
		switch {
		case r.Event.BreakGlass():
			sev = 4 // warning: an emergency override deserves attention
		case r.Event.Outcome == OutcomeSerious:
			sev = 3
		case r.Event.Outcome == OutcomeMinor:
			sev = 5 // notice
		}
	}
	seqID := (r.Seq-1)%2147483647 + 1
	b := fmt.Appendf(nil, "<%d>1 %s %s %s %s %s [meta sequenceId=\"%d\"] ",
		syslogFacilityAudit*8+sev, now.UTC().Format("2006-01-02T15:04:05.000000Z07:00"),
		header(s.hostname, 255), header(s.app, 48), header(s.procID, 128), msgID, seqID)
	return append(b, r.JSON...)
}

// header makes a value legal as a syslog header field: printable US-ASCII,
// no spaces, bounded length, "-" when empty.
func header(v string, max int) string {
	v = strings.Map(func(r rune) rune {
		if r < 33 || r > 126 {
			return -1
		}
		return r
	}, v)
	if len(v) > max {
		v = v[:max]
	}
	if v == "" {
		return "-"
	}
	return v
}

// Close implements Sink.
func (s *SyslogSink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != nil {
		err := s.conn.Close()
		s.conn = nil
		return err
	}
	return nil
}

// SinkConfig configures one sink in Config.
type SinkConfig struct {
	// Type is "jsonl" (append to Path) or "syslog" (TCP to Address).
	Type    string `yaml:"type"`
	Name    string `yaml:"name"`
	Path    string `yaml:"path"`
	Address string `yaml:"address"`
	// TLS enables RFC 5425 syslog over TLS; CAFile verifies the receiver,
	// CertFile/KeyFile authenticate phigate to it.
	TLS        bool   `yaml:"tls"`
	CAFile     string `yaml:"ca_file"`
	CertFile   string `yaml:"cert_file"`
	KeyFile    string `yaml:"key_file"`
	ServerName string `yaml:"server_name"`
	QueueSize  int    `yaml:"queue_size"`
}

// Validate checks the sink config and names the bad field.
func (c *SinkConfig) Validate() error {
	if c.QueueSize < 0 {
		return errf(CodeConfig, nil, nil, "queue_size must not be negative")
	}
	if c.QueueSize == 0 {
		c.QueueSize = DefaultSinkQueue
	}
	switch c.Type {
	case "jsonl":
		if c.Path == "" {
			return errf(CodeConfig, nil, nil, "path is required for a jsonl sink")
		}
	case "syslog":
		host, _, err := net.SplitHostPort(c.Address)
		if err != nil {
			return errf(CodeConfig, nil, err, "address must be host:port")
		}
		// Records carry PHI: one that leaves the host travels encrypted.
		if !c.TLS && !isLoopback(host) {
			return errf(CodeConfig, nil, nil, "tls: must be true for a syslog sink whose address %s is not loopback (records carry PHI)", c.Address)
		}
		if (c.CertFile == "") != (c.KeyFile == "") {
			return errf(CodeConfig, nil, nil, "cert_file and key_file go together")
		}
		if !c.TLS && (c.CAFile != "" || c.CertFile != "") {
			return errf(CodeConfig, nil, nil, "tls must be true when ca_file or cert_file is set")
		}
	default:
		return errf(CodeConfig, nil, nil, "type %q is not jsonl or syslog", c.Type)
	}
	if c.Name == "" {
		c.Name = c.Type
	}
	return nil
}

// isLoopback says whether host names this machine only: localhost or a
// loopback address. Other names are not resolved, since what they resolve
// to can change after validation.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Build creates the sink, with no at-rest key (a jsonl sink writes plain
// lines); Open builds with the trail's key.
func (c *SinkConfig) Build() (Sink, error) { return c.build(nil) }

func (c *SinkConfig) build(aead cipher.AEAD) (Sink, error) {
	switch c.Type {
	case "jsonl":
		f, err := os.OpenFile(c.Path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return nil, errf(CodeIO, nil, err, "jsonl sink Path")
		}
		s := NewJSONLinesSink(c.Name, f)
		s.queue, s.aead = c.QueueSize, aead
		return s, nil
	case "syslog":
		var tc *tls.Config
		if c.TLS {
			tc = &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.ServerName}
			if c.CAFile != "" {
				pem, err := os.ReadFile(c.CAFile)
				if err != nil {
					return nil, errf(CodeIO, nil, err, "syslog sink CAFile")
				}
				pool := x509.NewCertPool()
				if !pool.AppendCertsFromPEM(pem) {
					return nil, errf(CodeConfig, nil, nil, "syslog sink CAFile holds no certificate")
				}
				tc.RootCAs = pool
			}
			if c.CertFile != "" {
				cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
				if err != nil {
					return nil, errf(CodeConfig, nil, err, "syslog sink CertFile/KeyFile")
				}
				tc.Certificates = []tls.Certificate{cert}
			}
		}
		s := NewSyslogSink(c.Name, c.Address, tc)
		s.queue = c.QueueSize
		return s, nil
	}
	return nil, errf(CodeConfig, nil, nil, "Type %q is not jsonl or syslog", c.Type)
}
