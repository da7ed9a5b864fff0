package policy

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"mime"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/keys"

	"github.com/phigate/phigate/internal/service"
)

// BundleServerConfig is policy.bundle_server: where phigate downloads its
// policy bundle with OPA's bundle protocol (GET <url>/<resource>, ETag and
// If-None-Match, optional long polling), and how a bundle is verified
// before it may decide anything. The names follow OPA's services and
// bundles configuration where they fit.
type BundleServerConfig struct {
	// URL is the service's base URL (OPA's services[].url).
	URL string `yaml:"url"`
	// Resource is the bundle's path below URL (OPA's bundles[].resource).
	// Default "bundles/phigate.tar.gz".
	Resource string `yaml:"resource"`
	// Polling sets the delay between downloads.
	Polling BundlePolling `yaml:"polling"`
	// Timeout bounds one download (connection, headers and body); a long
	// poll waits for LongPollingTimeout on top of it. Default 30s.
	Timeout time.Duration `yaml:"timeout"`
	// Credentials authenticate phigate to the bundle server: a bearer
	// token read from a file or the environment on every download.
	Credentials service.Credentials `yaml:"credentials"`
	// TLS names the CA that signs the server's certificate, when it is
	// not in the system pool.
	TLS service.TLS `yaml:"tls"`
	// Signing verifies .signatures.json with OPA's bundle signing. When set,
	// an unsigned bundle, or one whose signature or file hashes do not
	// verify, is refused.
	Signing *BundleSigning `yaml:"signing"`
	// PersistDir keeps the last bundle that was activated, so that a
	// restart while the server is unreachable still serves it. The kept
	// bundle is verified and compiled again on start, like a download.
	PersistDir string `yaml:"persist_dir"`
	// MaxBytes refuses a larger download or bundle (compressed and
	// uncompressed). Default 64 MiB.
	MaxBytes int64 `yaml:"max_bytes"`

	// FetchOnly makes the engine download only when Reload is called:
	// config check fetches once, without a poller. Not read from YAML.
	FetchOnly bool `yaml:"-"`

	url       string // URL joined with Resource, set by Validate
	verifyCfg *bundle.VerificationConfig
	tlsCfg    *tls.Config
}

// BundlePolling is OPA's bundles[].polling, as durations.
type BundlePolling struct {
	// MinDelay and MaxDelay bound the wait between two downloads (a random
	// point between them, so a fleet does not poll in step); after a
	// failure the wait doubles from MinDelay up to MaxDelay. Defaults 60s
	// and 120s.
	MinDelay time.Duration `yaml:"min_delay"`
	MaxDelay time.Duration `yaml:"max_delay"`
	// LongPollingTimeout asks the server to hold the request until the
	// bundle changes, up to this long (OPA's Prefer: wait=N). A server
	// that does not answer with OPA's long-polling content type is polled
	// as usual. 0 disables it.
	LongPollingTimeout time.Duration `yaml:"long_polling_timeout"`
}

// BundleSigning is OPA's bundles[].signing with the keys beside it.
type BundleSigning struct {
	// Keys are the verification keys by key id (OPA's keys section).
	Keys map[string]BundleKey `yaml:"keys"`
	// KeyID is the key to use when a signature names none (OPA's keyid).
	KeyID string `yaml:"keyid"`
	// Scope, when set, must equal the scope the signature carries.
	Scope string `yaml:"scope"`
	// ExcludeFiles are bundle files the signature need not cover.
	ExcludeFiles []string `yaml:"exclude_files"`
}

// BundleKey is one verification key: a PEM public key or certificate for
// the RS, PS and ES algorithms, the shared secret for HS ones.
type BundleKey struct {
	KeyFile   string `yaml:"key_file"`
	Algorithm string `yaml:"algorithm"` // default RS256
	Scope     string `yaml:"scope"`
}

// DefaultBundleResource is the resource downloaded when none is configured.
const DefaultBundleResource = "bundles/phigate.tar.gz"

// longPollContentType is what a server that holds requests answers with
// (OPA's bundle long-polling contract).
const longPollContentType = "application/vnd.openpolicyagent.bundles"

// Enabled reports whether a bundle server is configured.
func (c *BundleServerConfig) Enabled() bool { return c != nil && c.URL != "" }

// Validate fills defaults, reads the key and CA files and names the first
// bad field.
func (c *BundleServerConfig) Validate() error {
	const p = "policy.bundle_server"
	u, err := service.CheckURL(c.URL, p+".url")
	if err != nil {
		return err
	}
	if c.Resource == "" {
		c.Resource = DefaultBundleResource
	}
	if strings.Contains(c.Resource, "://") || strings.Contains(c.Resource, "?") {
		return fmt.Errorf("%s.resource: %q is a path below url, not a URL or query", p, c.Resource)
	}
	c.url = strings.TrimSuffix(c.URL, "/") + "/" + strings.TrimPrefix(c.Resource, "/")
	pl := &c.Polling
	if pl.MinDelay == 0 {
		pl.MinDelay = 60 * time.Second
	}
	if pl.MaxDelay == 0 {
		pl.MaxDelay = max(120*time.Second, pl.MinDelay)
	}
	switch {
	case pl.MinDelay < 50*time.Millisecond:
		return fmt.Errorf("%s.polling.min_delay: at least 50ms", p)
	case pl.MaxDelay < pl.MinDelay:
		return fmt.Errorf("%s.polling.max_delay: must not be below polling.min_delay", p)
	case pl.LongPollingTimeout < 0:
		return fmt.Errorf("%s.polling.long_polling_timeout: must not be negative", p)
	case pl.LongPollingTimeout > 0 && pl.LongPollingTimeout < time.Second:
		return fmt.Errorf("%s.polling.long_polling_timeout: at least 1s (it is sent in whole seconds)", p)
	}
	if c.Timeout == 0 {
		c.Timeout = 30 * time.Second
	}
	if c.Timeout < 0 {
		return fmt.Errorf("%s.timeout: must be positive", p)
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = 64 << 20
	}
	if c.MaxBytes < 1024 {
		return fmt.Errorf("%s.max_bytes: at least 1024", p)
	}
	if err := c.Credentials.Validate(p+".credentials", u); err != nil {
		return err
	}
	if c.tlsCfg, err = c.TLS.Config(p + ".tls"); err != nil {
		return err
	}
	if c.Signing != nil {
		vc, err := c.Signing.verification()
		if err != nil {
			return err
		}
		c.verifyCfg = vc
	}
	if c.PersistDir != "" {
		if st, err := os.Stat(c.PersistDir); err == nil && !st.IsDir() {
			return fmt.Errorf("%s.persist_dir: %s is not a directory", p, c.PersistDir)
		}
	}
	return nil
}

// preparePersist creates persist_dir and checks that it is writable; the
// engine does it once, at start.
func (c *BundleServerConfig) preparePersist() error {
	if c.PersistDir == "" {
		return nil
	}
	if err := os.MkdirAll(c.PersistDir, 0o700); err != nil {
		return fmt.Errorf("policy.bundle_server.persist_dir: %w", err)
	}
	f, err := os.CreateTemp(c.PersistDir, ".probe-*")
	if err != nil {
		return fmt.Errorf("policy.bundle_server.persist_dir: not writable: %w", err)
	}
	_ = f.Close()
	_ = os.Remove(f.Name())
	return nil
}

// verification builds OPA's verification configuration, reading each key.
func (s *BundleSigning) verification() (*bundle.VerificationConfig, error) {
	const p = "policy.bundle_server.signing"
	if len(s.Keys) == 0 {
		return nil, fmt.Errorf("%s.keys: at least one verification key", p)
	}
	kcs := map[string]*bundle.KeyConfig{}
	for id, k := range s.Keys {
		if id == "" {
			return nil, fmt.Errorf("%s.keys: empty key id", p)
		}
		alg := k.Algorithm
		if alg == "" {
			alg = "RS256"
		}
		if !keys.IsSupportedAlgorithm(alg) {
			return nil, fmt.Errorf("%s.keys[%q].algorithm: %q is not supported", p, id, alg)
		}
		if k.KeyFile == "" {
			return nil, fmt.Errorf("%s.keys[%q].key_file: required", p, id)
		}
		raw, err := os.ReadFile(k.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("%s.keys[%q].key_file: %w", p, id, err)
		}
		if !strings.HasPrefix(alg, "HS") {
			if blk, _ := pem.Decode(raw); blk == nil {
				return nil, fmt.Errorf("%s.keys[%q].key_file: %s holds no PEM key or certificate", p, id, k.KeyFile)
			} else if strings.Contains(blk.Type, "PRIVATE") {
				return nil, fmt.Errorf("%s.keys[%q].key_file: %s is a private key; give the public key", p, id, k.KeyFile)
			}
		} else if len(bytes.TrimSpace(raw)) < 32 {
			return nil, fmt.Errorf("%s.keys[%q].key_file: an HMAC secret of at least 32 bytes", p, id)
		}
		// The key's content, never its path: OPA's key config would read
		// a string that names an existing file as that file.
		kcs[id] = &bundle.KeyConfig{Key: string(raw), Algorithm: alg, Scope: k.Scope}
	}
	if s.KeyID != "" {
		if _, ok := kcs[s.KeyID]; !ok {
			return nil, fmt.Errorf("%s.keyid: %q is not one of signing.keys", p, s.KeyID)
		}
	}
	return bundle.NewVerificationConfig(kcs, s.KeyID, s.Scope, s.ExcludeFiles), nil
}

// String names the bundle for logs and status: the URL without credentials.
func (c *BundleServerConfig) String() string { return "bundle_server:" + c.url }

// Bundle failure reasons: the values of phigate_policy_bundle_failures_total's
// reason label.
const (
	bundleFailDownload  = "download"  // no answer: connection, timeout, body cut short
	bundleFailStatus    = "status"    // an answer other than 200 or 304
	bundleFailTooLarge  = "too_large" // over max_bytes
	bundleFailSignature = "signature" // unsigned, bad signature, hash mismatch
	bundleFailRead      = "read"      // not a bundle: gzip, tar, parse errors
	bundleFailPersist   = "persist"   // activated, but not written to persist_dir
)

// bundleFetch is one download's outcome.
type bundleFetch struct {
	notModified bool
	etag        string
	raw         []byte
	longPoll    bool // the server holds requests: poll again at once
}

// fetchError is a download failure with its metric reason.
type fetchError struct {
	reason string
	err    error
}

func (e *fetchError) Error() string { return e.err.Error() }
func (e *fetchError) Unwrap() error { return e.err }

// bundleClient downloads the bundle.
type bundleClient struct {
	cfg  *BundleServerConfig
	http *http.Client
}

func newBundleClient(cfg *BundleServerConfig) *bundleClient {
	return &bundleClient{cfg: cfg, http: service.NewClient(cfg.tlsCfg)}
}

// fetch downloads the bundle unless it still has etag. The error never
// carries the token; it names the URL without credentials.
func (c *bundleClient) fetch(ctx context.Context, etag string) (bundleFetch, error) {
	timeout := c.cfg.Timeout
	lp := c.cfg.Polling.LongPollingTimeout
	if lp > 0 {
		timeout += lp
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.cfg.url, nil)
	if err != nil {
		return bundleFetch{}, &fetchError{bundleFailDownload, err}
	}
	if etag != "" {
		req.Header.Set("If-None-Match", etag)
	}
	if lp > 0 {
		req.Header.Set("Prefer", fmt.Sprintf("wait=%d", int(lp/time.Second)))
	}
	if err := c.cfg.Credentials.Authorize(req, "policy.bundle_server.credentials"); err != nil {
		return bundleFetch{}, &fetchError{bundleFailDownload, err}
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return bundleFetch{}, &fetchError{bundleFailDownload, fmt.Errorf("GET %s: %w", c.cfg.url, service.ScrubURL(err))}
	}
	defer resp.Body.Close()
	out := bundleFetch{etag: resp.Header.Get("ETag")}
	if ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); lp > 0 && ct == longPollContentType {
		out.longPoll = true
	}
	switch resp.StatusCode {
	case http.StatusNotModified:
		out.notModified = true
		if out.etag == "" {
			out.etag = etag
		}
		return out, nil
	case http.StatusOK:
	default:
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return bundleFetch{}, &fetchError{bundleFailStatus, fmt.Errorf("GET %s: status %d", c.cfg.url, resp.StatusCode)}
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, c.cfg.MaxBytes+1))
	if err != nil {
		return bundleFetch{}, &fetchError{bundleFailDownload, fmt.Errorf("GET %s: reading the body: %w", c.cfg.url, err)}
	}
	if int64(len(raw)) > c.cfg.MaxBytes {
		return bundleFetch{}, &fetchError{bundleFailTooLarge, fmt.Errorf("GET %s: bundle over policy.bundle_server.max_bytes (%d)", c.cfg.url, c.cfg.MaxBytes)}
	}
	out.raw = raw
	return out, nil
}

// readBundle reads a downloaded tarball with OPA's reader, verifying its
// signature when signing is configured. A bundle with .signatures.json
// but no signing configured is refused too: phigate cannot tell a
// signature it was not asked to check from one that would fail.
func (c *BundleServerConfig) readBundle(raw []byte, etag string) (*bundle.Bundle, error) {
	r := bundle.NewReader(bytes.NewReader(raw)).
		WithRegoVersion(ast.RegoV1).
		WithProcessAnnotations(true).
		WithSizeLimitBytes(c.MaxBytes).
		WithBundleEtag(etag).
		WithBundleName("phigate")
	if c.verifyCfg != nil {
		r = r.WithBundleVerificationConfig(c.verifyCfg)
	}
	b, err := r.Read()
	if err != nil {
		reason := bundleFailRead
		if isSignatureError(err) {
			reason = bundleFailSignature
		}
		return nil, &fetchError{reason, err}
	}
	if b.Type() != bundle.SnapshotBundleType {
		return nil, &fetchError{bundleFailRead, errors.New("a delta bundle; phigate takes snapshot bundles only")}
	}
	return &b, nil
}

// isSignatureError tells signature failures from other read errors. OPA's
// reader returns them as plain errors; these are the phrases its
// verification uses.
func isSignatureError(err error) bool {
	m := err.Error()
	for _, s := range []string{"signature", "verif", "digest", "hash", "not included in", "keyid", "scope"} {
		if strings.Contains(m, s) {
			return true
		}
	}
	return false
}

// nextDelay is a random wait in [min, max] after a success, and a wait
// doubling from min up to max after consecutive failures.
func (p BundlePolling) nextDelay(failures int) time.Duration {
	if failures > 0 {
		d := p.MinDelay
		for i := 1; i < failures && d < p.MaxDelay; i++ {
			d *= 2
		}
		return min(d, p.MaxDelay)
	}
	if p.MaxDelay == p.MinDelay {
		return p.MinDelay
	}
	return p.MinDelay + rand.N(p.MaxDelay-p.MinDelay)
}

// persisted file names under persist_dir.
const (
	persistBundle = "bundle.tar.gz"
	persistETag   = "bundle.etag"
)

// persist writes the activated bundle and its ETag: the ETag is removed
// first and written last, so a crash between leaves a bundle without an
// ETag (downloaded again in full), never a bundle with another's ETag.
func (c *BundleServerConfig) persist(raw []byte, etag string) error {
	dir := c.PersistDir
	if err := os.Remove(filepath.Join(dir, persistETag)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := writeFileAtomic(filepath.Join(dir, persistBundle), raw); err != nil {
		return err
	}
	if etag == "" {
		return nil
	}
	return writeFileAtomic(filepath.Join(dir, persistETag), []byte(etag))
}

// persisted reads the kept bundle and its ETag; ok is false without one.
func (c *BundleServerConfig) persisted() (raw []byte, etag string, ok bool, err error) {
	if c.PersistDir == "" {
		return nil, "", false, nil
	}
	raw, err = os.ReadFile(filepath.Join(c.PersistDir, persistBundle))
	if errors.Is(err, os.ErrNotExist) {
		return nil, "", false, nil
	}
	if err != nil {
		return nil, "", false, err
	}
	if e, err := os.ReadFile(filepath.Join(c.PersistDir, persistETag)); err == nil {
		etag = strings.TrimSpace(string(e))
	}
	return raw, etag, true, nil
}

func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}

// Warnings are what serve accepts but an operator should hear of: bundles
// taken without a signature, or over plaintext beyond this host.
func (c *BundleServerConfig) Warnings() []string {
	if !c.Enabled() {
		return nil
	}
	var out []string
	if c.Signing == nil {
		out = append(out, "policy.bundle_server.signing: not set: any bundle the server (or whoever answers for it) serves is activated; sign bundles and configure the verification key")
	}
	if u, err := url.Parse(c.URL); err == nil && u.Scheme == "http" && !service.Loopback(u.Hostname()) {
		out = append(out, fmt.Sprintf("policy.bundle_server.url: %s is plaintext http beyond this host", u.Host))
	}
	return out
}
