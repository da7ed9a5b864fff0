// Package bundletest builds real OPA bundles, signed with OPA's bundle
// signing, and serves them over HTTP the way an OPA bundle server does
// (ETag, If-None-Match and 304), for tests of phigate's bundle loading.
package bundletest

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
)

// Signer holds an RSA key pair: the private key signs bundles, the public
// key's PEM file is what phigate is configured with.
type Signer struct {
	KeyID      string
	PublicFile string
	private    string
}

// NewSigner makes a key pair and writes the public key under t's temp dir.
func NewSigner(t testing.TB, keyID string) *Signer {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), keyID+".pem")
	if err := os.WriteFile(f, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o600); err != nil {
		t.Fatal(err)
	}
	priv := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})
	return &Signer{KeyID: keyID, PublicFile: f, private: string(priv)}
}

// Options shape one bundle.
type Options struct {
	// Modules maps a file name (authz.rego) to its Rego source.
	Modules map[string]string
	// Data is the bundle's data.json document.
	Data map[string]any
	// Revision is the manifest's revision; empty leaves it out.
	Revision string
	// Signer signs the bundle; nil leaves it unsigned.
	Signer *Signer
	// Tamper changes a module after signing, as a man in the middle would.
	Tamper bool
}

// Build writes a bundle tarball with OPA's bundle writer.
func Build(t testing.TB, o Options) []byte {
	t.Helper()
	names := make([]string, 0, len(o.Modules))
	for n := range o.Modules {
		names = append(names, n)
	}
	sort.Strings(names)
	b := bundle.Bundle{Data: o.Data, Manifest: bundle.Manifest{Revision: o.Revision}}
	if b.Data == nil {
		b.Data = map[string]any{}
	}
	b.Manifest.Init()
	for _, n := range names {
		src := o.Modules[n]
		m, err := ast.ParseModuleWithOpts(n, src, ast.ParserOptions{RegoVersion: ast.RegoV1})
		if err != nil {
			t.Fatalf("bundle module %s: %v", n, err)
		}
		b.Modules = append(b.Modules, bundle.ModuleFile{URL: "/" + n, Path: "/" + n, Raw: []byte(src), Parsed: m})
	}
	return write(t, b, o.Signer, o.Tamper)
}

// FromBundle writes a bundle already loaded (the embedded library, say)
// under a manifest revision, signed when signer is not nil.
func FromBundle(t testing.TB, src *bundle.Bundle, revision string, signer *Signer) []byte {
	t.Helper()
	b := bundle.Bundle{Data: src.Data, Modules: src.Modules, Manifest: bundle.Manifest{Revision: revision}}
	b.Manifest.Init()
	return write(t, b, signer, false)
}

func write(t testing.TB, b bundle.Bundle, signer *Signer, tamper bool) []byte {
	t.Helper()
	if signer != nil {
		if err := b.GenerateSignature(bundle.NewSigningConfig(signer.private, "RS256", ""), signer.KeyID, false); err != nil {
			t.Fatal(err)
		}
	}
	if tamper {
		if len(b.Modules) == 0 {
			t.Fatal("bundletest: nothing to tamper with")
		}
		b.Modules[0].Raw = append(append([]byte{}, b.Modules[0].Raw...), "\n# changed after signing\n"...)
	}
	var buf bytes.Buffer
	if err := bundle.NewWriter(&buf).Write(b); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// Server serves one bundle at a path, answering 304 to an If-None-Match
// that names the current ETag. It records what it was asked.
type Server struct {
	*httptest.Server
	Path string
	// LongPoll makes the server hold a request whose If-None-Match names
	// the current bundle, for as long as its Prefer: wait=N asks or until
	// Publish, and answer with OPA's long-polling content type. Set it
	// before the first request.
	LongPoll bool

	mu       sync.Mutex
	changed  chan struct{} // closed by Publish
	raw      []byte
	etag     string
	status   int // when nonzero, every request gets this status instead
	requests []Request
}

// Request is what the server saw of one request.
type Request struct {
	IfNoneMatch   string
	Authorization string
	Prefer        string
	Status        int
}

// NewServer starts a bundle server on loopback serving nothing (404) until
// Publish.
func NewServer(t testing.TB, path string) *Server {
	t.Helper()
	s := &Server{Path: path, changed: make(chan struct{})}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.LongPoll {
		w.Header().Set("Content-Type", "application/vnd.openpolicyagent.bundles")
		var wait int
		if _, err := fmt.Sscanf(r.Header.Get("Prefer"), "wait=%d", &wait); err == nil && wait > 0 &&
			r.Header.Get("If-None-Match") == s.etag && s.status == 0 {
			ch := s.changed
			s.mu.Unlock()
			select {
			case <-ch:
			case <-time.After(time.Duration(wait) * time.Second):
			case <-r.Context().Done():
			}
			s.mu.Lock()
		}
	}
	rec := Request{IfNoneMatch: r.Header.Get("If-None-Match"), Authorization: r.Header.Get("Authorization"), Prefer: r.Header.Get("Prefer")}
	switch {
	case r.Method != http.MethodGet || r.URL.Path != s.Path:
		rec.Status = http.StatusNotFound
	case s.status != 0:
		rec.Status = s.status
	case s.raw == nil:
		rec.Status = http.StatusNotFound
	case rec.IfNoneMatch != "" && rec.IfNoneMatch == s.etag:
		w.Header().Set("ETag", s.etag)
		rec.Status = http.StatusNotModified
	default:
		w.Header().Set("ETag", s.etag)
		if !s.LongPoll {
			w.Header().Set("Content-Type", "application/gzip")
		}
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(s.raw)
		s.requests = append(s.requests, Request{IfNoneMatch: rec.IfNoneMatch, Authorization: rec.Authorization, Prefer: rec.Prefer, Status: http.StatusOK})
		return
	}
	w.WriteHeader(rec.Status)
	s.requests = append(s.requests, rec)
}

// Publish makes raw the bundle served, with an ETag of its hash.
func (s *Server) Publish(raw []byte) string {
	sum := sha256.Sum256(raw)
	etag := `"` + hex.EncodeToString(sum[:8]) + `"`
	s.mu.Lock()
	s.raw, s.etag, s.status = raw, etag, 0
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
	return etag
}

// Fail makes every request get status (0 serves again).
func (s *Server) Fail(status int) {
	s.mu.Lock()
	s.status = status
	s.mu.Unlock()
}

// Requests returns what the server was asked, in order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}
