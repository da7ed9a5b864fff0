package notify

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/phigate/phigate/internal/service"
)

// outcomes is the recorder at the notifier's seam: it hands each outcome
// to the test as it is recorded.
type outcomes chan Outcome

func (o outcomes) RecordOutcome(_ context.Context, out Outcome) error {
	o <- out
	return nil
}

// next waits for the next outcome, within a bound generous enough for a
// loaded machine.
func (o outcomes) next(t *testing.T) Outcome {
	t.Helper()
	select {
	case out := <-o:
		return out
	case <-time.After(10 * time.Second):
		t.Fatal("no outcome recorded within 10s")
		return Outcome{}
	}
}

func testEvent(id string) Event {
	return Event{DecisionID: id, Time: time.Date(2026, 12, 4, 3, 0, 0, 0, time.UTC), Allowed: true, BreakGlass: true,
		BreakGlassExpires: "2026-12-04T04:00:00Z", Subject: "prac-001", Issuer: "https://issuer", FHIRUser: "Practitioner/prac-001",
		Roles: []string{"physician"}, Purpose: "ETREAT", PolicyRevision: "rev-1", Rules: []string{"break_glass.used"},
		Interaction: "read", ResourceType: "Patient", Patients: []string{"pat-0005"}}
}

func start(t *testing.T, c Config) (*Notifier, outcomes, *prometheus.Registry) {
	t.Helper()
	if c.InitialBackoff == 0 {
		c.InitialBackoff, c.MaxBackoff = time.Millisecond, 4*time.Millisecond
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	rec := make(outcomes, 64)
	n, err := New(c, rec, nil, reg, WithServer("phigate-0"), WithAuditDir("/var/lib/phigate/audit"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	return n, rec, reg
}

func count(t *testing.T, n *Notifier, sink, outcome string) float64 {
	t.Helper()
	return testutil.ToFloat64(n.m.total.WithLabelValues(sink, outcome))
}

// TestWebhookDelivers: the webhook gets the notification as JSON with the
// configured headers and the bearer token from its file; the patient only
// where include_patient says so.
func TestWebhookDelivers(t *testing.T) {
	type got struct {
		header http.Header
		body   payload
		raw    string
	}
	seen := make(chan got, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var p payload
		dec := json.NewDecoder(strings.NewReader(string(b)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&p); err != nil {
			t.Errorf("body does not decode: %v: %s", err, b)
		}
		seen <- got{r.Header.Clone(), p, string(b)}
		w.WriteHeader(http.StatusAccepted)
	}))
	defer srv.Close()
	tok := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tok, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	n, rec, _ := start(t, Config{Sinks: map[string]SinkConfig{
		"privacy-office": {Webhook: &WebhookConfig{URL: srv.URL + "/hook", Credentials: service.Credentials{BearerTokenFile: tok}, Headers: map[string]string{"X-Tenant": "east"}}},
		"records":        {Webhook: &WebhookConfig{URL: srv.URL + "/records"}, IncludePatient: true},
	}})
	n.Notify(testEvent("dec-1"), "privacy-office, records")
	byPatients := map[bool]got{}
	for range 2 {
		g := <-seen
		byPatients[len(g.body.Patients) > 0] = g
	}
	for range 2 {
		if o := rec.next(t); o.Result != Delivered || o.Attempts != 1 || o.DecisionID != "dec-1" {
			t.Errorf("outcome %+v", o)
		}
	}
	po, records := byPatients[false], byPatients[true]
	if po.header.Get("Authorization") != "Bearer s3cret" || po.header.Get("X-Tenant") != "east" || po.header.Get("Content-Type") != "application/json" {
		t.Errorf("headers %v", po.header)
	}
	want := payload{V: 1, Type: "break-glass", DecisionID: "dec-1", Time: "2026-12-04T03:00:00Z", Server: "phigate-0", Allowed: true,
		Subject: "prac-001", Issuer: "https://issuer", FHIRUser: "Practitioner/prac-001", Roles: []string{"physician"},
		PurposeOfUse: "ETREAT", PolicyRevision: "rev-1", Rules: []string{"break_glass.used"}, BreakGlassExpires: "2026-12-04T04:00:00Z",
		Interaction: "read", ResourceType: "Patient", AuditQuery: "phigate audit query /var/lib/phigate/audit --decision dec-1"}
	if !jsonEqual(po.body, want) {
		t.Errorf("payload\n%s\nwant\n%+v", po.raw, want)
	}
	if strings.Contains(po.raw, "pat-0005") {
		t.Errorf("the patient reached a sink without include_patient: %s", po.raw)
	}
	if !slices.Equal(records.body.Patients, []string{"pat-0005"}) || records.header.Get("Authorization") != "" {
		t.Errorf("include_patient sink got %s, headers %v", records.raw, records.header)
	}
	if c := count(t, n, "privacy-office", Delivered); c != 1 {
		t.Errorf("delivered count %v", c)
	}
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

// TestWebhookRetriesThenFails: a webhook that keeps answering 503 is tried
// max_attempts times and the notification recorded as failed; one that
// answers 400 is not tried again.
func TestWebhookRetriesThenFails(t *testing.T) {
	var mu sync.Mutex
	hits := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hits[r.URL.Path]++
		mu.Unlock()
		code, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/"))
		w.WriteHeader(code)
	}))
	defer srv.Close()
	n, rec, _ := start(t, Config{MaxAttempts: 3, Sinks: map[string]SinkConfig{
		"down":    {Webhook: &WebhookConfig{URL: srv.URL + "/503"}},
		"refuses": {Webhook: &WebhookConfig{URL: srv.URL + "/400"}},
	}})
	n.Notify(testEvent("dec-2"), "down")
	if o := rec.next(t); o != (Outcome{DecisionID: "dec-2", Sink: "down", Result: Failed, Attempts: 3, Error: "http_503"}) {
		t.Errorf("outcome %+v", o)
	}
	n.Notify(testEvent("dec-3"), "refuses")
	if o := rec.next(t); o != (Outcome{DecisionID: "dec-3", Sink: "refuses", Result: Failed, Attempts: 1, Error: "http_400"}) {
		t.Errorf("outcome %+v", o)
	}
	mu.Lock()
	defer mu.Unlock()
	if hits["/503"] != 3 || hits["/400"] != 1 {
		t.Errorf("attempts %v, want 3 at /503 and 1 at /400", hits)
	}
	if c := count(t, n, "down", Failed); c != 1 {
		t.Errorf("failed count %v", c)
	}
}

// TestWebhookRedirectNotFollowed: the payload goes to the configured URL
// or nowhere.
func TestWebhookRedirectNotFollowed(t *testing.T) {
	other := make(chan struct{}, 1)
	elsewhere := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { other <- struct{}{} }))
	defer elsewhere.Close()
	srv := httptest.NewServer(http.RedirectHandler(elsewhere.URL, http.StatusTemporaryRedirect))
	defer srv.Close()
	n, rec, _ := start(t, Config{Sinks: map[string]SinkConfig{"po": {Webhook: &WebhookConfig{URL: srv.URL}}}})
	n.Notify(testEvent("dec-4"), "po")
	if o := rec.next(t); o.Result != Failed || o.Error != "http_307" {
		t.Errorf("outcome %+v", o)
	}
	select {
	case <-other:
		t.Error("the redirect was followed")
	default:
	}
}

// TestQueueFull: with the sink busy and its queue full, one more
// notification is dropped at once, and recorded so; the queued one is
// delivered when the sink answers again.
func TestQueueFull(t *testing.T) {
	inFlight := make(chan string, 4)
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var p payload
		_ = json.NewDecoder(r.Body).Decode(&p)
		inFlight <- p.DecisionID
		<-release
	}))
	defer srv.Close()
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	n, rec, _ := start(t, Config{QueueSize: 1, Sinks: map[string]SinkConfig{"po": {Webhook: &WebhookConfig{URL: srv.URL}}}})
	n.Notify(testEvent("dec-1"), "po")
	if id := <-inFlight; id != "dec-1" {
		t.Fatalf("in flight %s", id)
	}
	n.Notify(testEvent("dec-2"), "po") // queued
	if d := testutil.ToFloat64(n.m.depth.WithLabelValues("po")); d != 1 {
		t.Errorf("queue depth %v, want 1", d)
	}
	n.Notify(testEvent("dec-3"), "po") // no room
	if o := rec.next(t); o != (Outcome{DecisionID: "dec-3", Sink: "po", Result: Dropped, Error: "queue_full"}) {
		t.Errorf("outcome %+v", o)
	}
	if c := count(t, n, "po", Dropped); c != 1 {
		t.Errorf("dropped count %v", c)
	}
	close(release)
	for _, want := range []string{"dec-1", "dec-2"} {
		if o := rec.next(t); o.DecisionID != want || o.Result != Delivered {
			t.Errorf("outcome %+v, want %s delivered", o, want)
		}
	}
}

// TestShutdownAbandons: what is not delivered by the flush deadline is
// recorded as abandoned, the one in flight and the one queued, and Close
// returns.
func TestShutdownAbandons(t *testing.T) {
	inFlight := make(chan struct{}, 4)
	stop := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		inFlight <- struct{}{}
		select {
		case <-r.Context().Done():
		case <-stop:
		}
	}))
	defer srv.Close()
	defer close(stop)
	n, rec, _ := start(t, Config{FlushTimeout: 50 * time.Millisecond, Sinks: map[string]SinkConfig{
		"po": {Webhook: &WebhookConfig{URL: srv.URL, Timeout: time.Minute}}}})
	n.Notify(testEvent("dec-1"), "po")
	<-inFlight
	n.Notify(testEvent("dec-2"), "po")
	closed := make(chan struct{})
	go func() { n.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return within 10s")
	}
	got := map[string]Outcome{}
	for range 2 {
		o := rec.next(t)
		got[o.DecisionID] = o
	}
	for _, id := range []string{"dec-1", "dec-2"} {
		if got[id].Result != Abandoned || got[id].Error != "shutdown" {
			t.Errorf("%s: outcome %+v, want abandoned", id, got[id])
		}
	}
	if got["dec-1"].Attempts != 1 || got["dec-2"].Attempts != 0 {
		t.Errorf("attempts %d and %d, want 1 (in flight) and 0 (queued)", got["dec-1"].Attempts, got["dec-2"].Attempts)
	}
	n.Notify(testEvent("dec-3"), "po") // after Close: counted, no panic
}

// TestUnknownSink: an obligation naming a sink the configuration lacks is
// recorded as a failure of that name, counted under "unknown".
func TestUnknownSink(t *testing.T) {
	n, rec, _ := start(t, Config{})
	n.Notify(testEvent("dec-1"), "privacy-office")
	if o := rec.next(t); o != (Outcome{DecisionID: "dec-1", Sink: "privacy-office", Result: UnknownSink}) {
		t.Errorf("outcome %+v", o)
	}
	if c := count(t, n, "unknown", UnknownSink); c != 1 {
		t.Errorf("unknown_sink count %v", c)
	}
}

// TestSyslogUDP: one RFC 5424 message per datagram, at authpriv.warning,
// with phigate's structured data and the payload as MSG.
func TestSyslogUDP(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	n, rec, _ := start(t, Config{Sinks: map[string]SinkConfig{"siem": {Syslog: &SyslogConfig{Network: "udp", Address: pc.LocalAddr().String()}}}})
	ev := testEvent("dec-1")
	ev.Rules = []string{`odd"rule]\x`}
	n.Notify(ev, "siem")
	if o := rec.next(t); o.Result != Delivered {
		t.Fatalf("outcome %+v", o)
	}
	buf := make([]byte, 64<<10)
	_ = pc.SetReadDeadline(time.Now().Add(10 * time.Second))
	k, _, err := pc.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	checkSyslog(t, string(buf[:k]))
}

// checkSyslog parses one message far enough to hold it to RFC 5424.
func checkSyslog(t *testing.T, msg string) {
	t.Helper()
	// <PRI>VERSION SP TIMESTAMP SP HOSTNAME SP APP-NAME SP PROCID SP MSGID SP SD SP MSG
	f := strings.SplitN(msg, " ", 7)
	if len(f) != 7 {
		t.Fatalf("message %q", msg)
	}
	if f[0] != "<84>1" { // authpriv (10) * 8 + warning (4)
		t.Errorf("PRI and version %q, want <84>1", f[0])
	}
	if _, err := time.Parse(time.RFC3339Nano, f[1]); err != nil || !strings.HasSuffix(f[1], "Z") {
		t.Errorf("timestamp %q: %v", f[1], err)
	}
	if f[3] != "phigate" || f[4] != strconv.Itoa(os.Getpid()) || f[5] != "break-glass" {
		t.Errorf("app, procid, msgid %q %q %q", f[3], f[4], f[5])
	}
	rest := f[6]
	wantSD := `[phigate@32473 decision_id="dec-1" subject="prac-001" fhir_user="Practitioner/prac-001" role="physician" purpose="ETREAT" policy_revision="rev-1" rule="odd\"rule\]\\x" allowed="true" expires="2026-12-04T04:00:00Z"] `
	if !strings.HasPrefix(rest, wantSD) {
		t.Fatalf("structured data\n%s\nwant prefix\n%s", rest, wantSD)
	}
	var p payload
	if err := json.Unmarshal([]byte(strings.TrimPrefix(rest, wantSD)), &p); err != nil || p.DecisionID != "dec-1" || len(p.Patients) != 0 {
		t.Errorf("MSG %q: %v", strings.TrimPrefix(rest, wantSD), err)
	}
}

// TestSyslogTCP: octet-counted frames over one connection; when the
// collector closes it, the next notification dials again and arrives.
func TestSyslogTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	frames := make(chan string, 8)
	conns := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns <- c
			go func() {
				r := bufio.NewReader(c)
				for {
					l, err := r.ReadString(' ')
					if err != nil {
						return
					}
					size, err := strconv.Atoi(strings.TrimSpace(l))
					if err != nil {
						t.Errorf("frame length %q", l)
						return
					}
					b := make([]byte, size)
					if _, err := io.ReadFull(r, b); err != nil {
						return
					}
					frames <- string(b)
				}
			}()
		}
	}()
	n, rec, _ := start(t, Config{Sinks: map[string]SinkConfig{"siem": {Syslog: &SyslogConfig{Network: "tcp", Address: ln.Addr().String()}}}})
	recv := func() string {
		t.Helper()
		select {
		case f := <-frames:
			return f
		case <-time.After(10 * time.Second):
			t.Fatal("no frame within 10s")
			return ""
		}
	}
	ev := testEvent("dec-1")
	ev.Rules = []string{`odd"rule]\x`}
	n.Notify(ev, "siem")
	n.Notify(ev, "siem")
	checkSyslog(t, recv())
	checkSyslog(t, recv())
	for range 2 {
		if o := rec.next(t); o.Result != Delivered {
			t.Fatalf("outcome %+v", o)
		}
	}
	first := <-conns
	if len(conns) != 0 {
		t.Errorf("%d connections for two messages, want 1", 1+len(conns))
	}
	first.Close()
	n.Notify(ev, "siem")
	checkSyslog(t, recv())
	if o := rec.next(t); o.Result != Delivered {
		t.Fatalf("after the collector closed: outcome %+v", o)
	}
}

// TestSyslogTLS: RFC 5425, the collector's certificate verified against
// ca_file; a collector whose certificate does not verify gets nothing.
func TestSyslogTLS(t *testing.T) {
	cert, caPEM := selfSigned(t)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	frames := make(chan string, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				l, err := r.ReadString(' ')
				if err != nil {
					return
				}
				size, _ := strconv.Atoi(strings.TrimSpace(l))
				b := make([]byte, size)
				if _, err := io.ReadFull(r, b); err == nil {
					frames <- string(b)
				}
			}()
		}
	}()
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	_, otherPEM := selfSigned(t)
	other := filepath.Join(dir, "other.pem")
	if err := os.WriteFile(other, otherPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	n, rec, _ := start(t, Config{MaxAttempts: 2, Sinks: map[string]SinkConfig{
		"siem":  {Syslog: &SyslogConfig{Network: "tls", Address: ln.Addr().String(), CAFile: ca}},
		"wrong": {Syslog: &SyslogConfig{Network: "tls", Address: ln.Addr().String(), CAFile: other}},
	}})
	ev := testEvent("dec-1")
	ev.Rules = []string{`odd"rule]\x`}
	n.Notify(ev, "siem")
	select {
	case f := <-frames:
		checkSyslog(t, f)
	case <-time.After(10 * time.Second):
		t.Fatal("no frame within 10s")
	}
	if o := rec.next(t); o.Result != Delivered {
		t.Fatalf("outcome %+v", o)
	}
	n.Notify(ev, "wrong")
	if o := rec.next(t); o.Result != Failed || o.Error != "tls_verify" || o.Attempts != 2 {
		t.Errorf("outcome %+v, want failed tls_verify after 2 attempts", o)
	}
}

func selfSigned(t *testing.T) (tls.Certificate, []byte) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "siem"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, BasicConstraintsValid: true, IsCA: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func TestBackoff(t *testing.T) {
	n := &Notifier{cfg: Config{InitialBackoff: time.Second, MaxBackoff: 5 * time.Second}}
	var got []time.Duration
	for a := 1; a <= 5; a++ {
		got = append(got, n.backoff(a))
	}
	if want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, 5 * time.Second}; !slices.Equal(got, want) {
		t.Errorf("backoff %v, want %v", got, want)
	}
}

func TestConfigValidate(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		c    Config
		want string // the error names this field; "" for valid
	}{
		{"no sinks", Config{}, ""},
		{"webhook", Config{Sinks: map[string]SinkConfig{"po": {Webhook: &WebhookConfig{URL: "https://hook.example.org/x"}}}}, ""},
		{"syslog", Config{Sinks: map[string]SinkConfig{"siem": {Syslog: &SyslogConfig{Network: "tls", Address: "siem:6514", ServerName: "siem"}}}}, ""},
		{"neither", Config{Sinks: map[string]SinkConfig{"po": {}}}, "notify.sinks.po"},
		{"both", Config{Sinks: map[string]SinkConfig{"po": {Webhook: &WebhookConfig{URL: "https://h/x"}, Syslog: &SyslogConfig{Network: "udp", Address: "h:514"}}}}, "notify.sinks.po"},
		{"bad name", Config{Sinks: map[string]SinkConfig{"Privacy Office": {Webhook: &WebhookConfig{URL: "https://h/x"}}}}, "notify.sinks.Privacy Office"},
		{"no url", Config{Sinks: map[string]SinkConfig{"po": {Webhook: &WebhookConfig{}}}}, "notify.sinks.po.webhook.url"},
		{"ftp url", Config{Sinks: map[string]SinkConfig{"po": {Webhook: &WebhookConfig{URL: "ftp://h/x"}}}}, "notify.sinks.po.webhook.url"},
		{"credentials in url", Config{Sinks: map[string]SinkConfig{"po": {Webhook: &WebhookConfig{URL: "https://u:p@h/x"}}}}, "notify.sinks.po.webhook.url"},
		{"bad header", Config{Sinks: map[string]SinkConfig{"po": {Webhook: &WebhookConfig{URL: "https://h/x", Headers: map[string]string{"X Bad": "1"}}}}}, "notify.sinks.po.webhook.headers"},
		{"content-type header", Config{Sinks: map[string]SinkConfig{"po": {Webhook: &WebhookConfig{URL: "https://h/x", Headers: map[string]string{"Content-Type": "text/plain"}}}}}, "notify.sinks.po.webhook.headers"},
		{"authorization header", Config{Sinks: map[string]SinkConfig{"po": {Webhook: &WebhookConfig{URL: "https://h/x", Headers: map[string]string{"Authorization": "Bearer x"}}}}}, "notify.sinks.po.webhook.headers"},
		{"missing token file", Config{Sinks: map[string]SinkConfig{"po": {Webhook: &WebhookConfig{URL: "https://h/x", Credentials: service.Credentials{BearerTokenFile: filepath.Join(dir, "none")}}}}}, "notify.sinks.po.webhook.credentials.bearer_token_file"},
		{"empty token file", Config{Sinks: map[string]SinkConfig{"po": {Webhook: &WebhookConfig{URL: "https://h/x", Credentials: service.Credentials{BearerTokenFile: empty}}}}}, "notify.sinks.po.webhook.credentials.bearer_token_file"},
		{"token over plain http", Config{Sinks: map[string]SinkConfig{"po": {Webhook: &WebhookConfig{URL: "http://h.example/x", Credentials: service.Credentials{BearerTokenEnv: "HOME"}}}}}, "notify.sinks.po.webhook.credentials"},
		{"ca not PEM", Config{Sinks: map[string]SinkConfig{"po": {Webhook: &WebhookConfig{URL: "https://h/x", TLS: service.TLS{CACert: empty}}}}}, "notify.sinks.po.webhook.tls.ca_cert"},
		{"syslog network", Config{Sinks: map[string]SinkConfig{"s": {Syslog: &SyslogConfig{Network: "http", Address: "h:514"}}}}, "notify.sinks.s.syslog.network"},
		{"syslog address", Config{Sinks: map[string]SinkConfig{"s": {Syslog: &SyslogConfig{Network: "udp", Address: "h"}}}}, "notify.sinks.s.syslog.address"},
		{"syslog ca over udp", Config{Sinks: map[string]SinkConfig{"s": {Syslog: &SyslogConfig{Network: "udp", Address: "h:514", CAFile: empty}}}}, "notify.sinks.s.syslog.ca_file"},
		{"syslog facility", Config{Sinks: map[string]SinkConfig{"s": {Syslog: &SyslogConfig{Network: "udp", Address: "h:514", Facility: "loud"}}}}, "notify.sinks.s.syslog.facility"},
		{"queue", Config{QueueSize: -1}, "notify.queue_size"},
		{"attempts", Config{MaxAttempts: 1000}, "notify.max_attempts"},
		{"backoff order", Config{InitialBackoff: time.Minute, MaxBackoff: time.Second}, "notify.max_backoff"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("valid config refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want+":")):
				t.Fatalf("err = %v, want one naming %s", err, tc.want)
			}
		})
	}
	c := Config{Sinks: map[string]SinkConfig{"po": {Webhook: &WebhookConfig{URL: "https://h/x"}}}}
	for to, ok := range map[string]bool{"po": true, " po ": true, "po,other": false, "": false, "other": false} {
		if err := c.Targets(to); (err == nil) != ok {
			t.Errorf("Targets(%q) = %v", to, err)
		}
	}
}
