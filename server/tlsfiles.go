package server

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/credentials"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// tlsCheckInterval bounds how often a handshake looks at the certificate
// files: often enough that a rotated certificate is served within a
// second or two, rarely enough that a busy listener does not stat three
// files per connection.
const tlsCheckInterval = time.Second

// tlsFiles serves the gRPC listener's certificate, key and client CA from
// their files and reloads them when one changes, so a rotated certificate
// (cert-manager, a Kubernetes secret volume, a renewal cron) is served to
// new connections without a restart. A change that does not load (a key
// that does not match its certificate, a half-written file) is logged and
// the last good set keeps serving; open connections keep the certificate
// they were made with.
type tlsFiles struct {
	cfg TLSConfig
	log *zap.Logger
	// name is the configuration path errors name ("listen.tls" when
	// empty); protos the ALPN protocols offered ("h2" when nil, for gRPC).
	name   string
	protos []string
	cur    atomic.Pointer[tlsState]

	mu      sync.Mutex   // one reload at a time
	checked atomic.Int64 // when the files were last looked at, unix ns
	failed  []fileStamp  // the set that last failed to load, not retried until it changes
	lastErr string       // what that failure said, so it is logged once
}

// tlsState is one loaded set, with the stamps of the files it was read from.
type tlsState struct {
	conf   *tls.Config
	stamps []fileStamp
}

// fileStamp tells whether a file changed: a new inode (a rename or a
// symlink swap onto the path), a new modification time or a new size.
type fileStamp struct {
	info os.FileInfo
}

func (a fileStamp) same(b fileStamp) bool {
	return a.info != nil && b.info != nil && os.SameFile(a.info, b.info) &&
		a.info.ModTime().Equal(b.info.ModTime()) && a.info.Size() == b.info.Size()
}

func sameStamps(a, b []fileStamp) bool {
	if len(a) == 0 || len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].same(b[i]) {
			return false
		}
	}
	return true
}

// newTLSFiles loads the files once; failing here is a start-up error.
func newTLSFiles(c TLSConfig, log *zap.Logger) (*tlsFiles, error) {
	f := &tlsFiles{cfg: c, log: log}
	st, err := f.load()
	if err != nil {
		return nil, err
	}
	f.cur.Store(st)
	f.checked.Store(time.Now().UnixNano())
	return f, nil
}

// serverConfig is the listener's tls.Config: every handshake takes the
// current set through GetConfigForClient, which is also where a changed
// file is noticed.
func (f *tlsFiles) serverConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			f.refresh(time.Now())
			return f.cur.Load().conf, nil
		},
	}
}

func (f *tlsFiles) paths() []string {
	p := []string{f.cfg.Cert, f.cfg.Key}
	if f.cfg.ClientCA != "" {
		p = append(p, f.cfg.ClientCA)
	}
	return p
}

func (f *tlsFiles) stamp() ([]fileStamp, error) {
	var out []fileStamp
	for _, p := range f.paths() {
		info, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		out = append(out, fileStamp{info})
	}
	return out, nil
}

// refresh reloads the set when a file changed since it was read. At most
// one handshake per interval looks; the others serve the current set
// without waiting for it.
func (f *tlsFiles) refresh(now time.Time) {
	if now.UnixNano()-f.checked.Load() < int64(tlsCheckInterval) || !f.mu.TryLock() {
		return
	}
	defer f.mu.Unlock()
	f.checked.Store(now.UnixNano())
	stamps, serr := f.stamp()
	if serr == nil && (sameStamps(stamps, f.cur.Load().stamps) || sameStamps(stamps, f.failed)) {
		return
	}
	next, err := f.load()
	if err != nil {
		// Logged once per failure: a rotation caught half done is usually
		// whole by the next look, and a missing file is retried each
		// interval without a line each time.
		if msg := err.Error(); msg != f.lastErr || (stamps != nil && !sameStamps(stamps, f.failed)) {
			f.log.Warn("TLS files changed but do not load; the previous certificate keeps serving", zap.Error(err))
			f.lastErr = msg
		}
		f.failed = stamps
		return
	}
	f.failed, f.lastErr = nil, ""
	f.cur.Store(next)
	f.log.Info("TLS certificate reloaded", zap.String("serial", next.conf.Certificates[0].Leaf.SerialNumber.String()),
		zap.Time("not_after", next.conf.Certificates[0].Leaf.NotAfter))
}

// load reads the files into a server configuration. The stamps are taken
// before the files are read, so a change that lands while they are read
// is seen again at the next look.
func (f *tlsFiles) load() (*tlsState, error) {
	stamps, err := f.stamp()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.path(), err)
	}
	cert, err := tls.LoadX509KeyPair(f.cfg.Cert, f.cfg.Key)
	if err != nil {
		return nil, fmt.Errorf("%s.cert: %w", f.path(), err)
	}
	tc := &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		// gRPC needs HTTP/2 negotiated; this configuration replaces the
		// one gRPC's credentials prepared, so it says so itself.
		NextProtos: f.protos,
	}
	if f.protos == nil {
		tc.NextProtos = []string{"h2"}
	}
	if f.cfg.ClientCA != "" {
		pem, err := os.ReadFile(f.cfg.ClientCA)
		if err != nil {
			return nil, fmt.Errorf("%s.client_ca: %w", f.path(), err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s.client_ca: no certificate found", f.path())
		}
		tc.ClientCAs, tc.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return &tlsState{conf: tc, stamps: stamps}, nil
}

func (f *tlsFiles) path() string {
	if f.name == "" {
		return "listen.tls"
	}
	return f.name
}

// countedCreds counts the TLS handshakes phigate's gRPC listener refuses
// (a client without a certificate the client CA issued, an old protocol
// version, a bad certificate) in phigate_tls_handshake_failures_total.
type countedCreds struct {
	credentials.TransportCredentials
	failures prometheus.Counter
}

func (c countedCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	nc, ai, err := c.TransportCredentials.ServerHandshake(conn)
	if err != nil {
		c.failures.Inc()
	}
	return nc, ai, err
}

func (c countedCreds) Clone() credentials.TransportCredentials {
	return countedCreds{c.TransportCredentials.Clone(), c.failures}
}

// handshakeFailures is phigate_tls_handshake_failures_total.
func handshakeFailures(reg prometheus.Registerer) *prometheus.CounterVec {
	v := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "phigate_tls_handshake_failures_total",
		Help: "TLS handshakes phigate's own listeners refused (no client certificate, one the client CA did not issue, TLS below 1.2), by listener.",
	}, []string{"listener"})
	reg.MustRegister(v)
	return v
}
