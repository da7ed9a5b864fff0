package policy

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/phigate/phigate/authz"
	"github.com/phigate/phigate/internal/bundletest"
	"github.com/phigate/phigate/internal/service"
)

const bundlePath = "/bundles/phigate.tar.gz"

// bundleEngine is an engine over a bundle server that downloads only when
// the test calls Reload, so each step is one request and nothing is timed.
func bundleEngine(t *testing.T, srv *bundletest.Server, signer *bundletest.Signer, persist string, reg prometheus.Registerer) *Engine {
	t.Helper()
	tok := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tok, []byte("s3cret-bundle-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := Config{BundleServer: BundleServerConfig{
		URL: srv.URL, Credentials: service.Credentials{BearerTokenFile: tok},
		PersistDir: persist, FetchOnly: true,
	}}
	if signer != nil {
		cfg.BundleServer.Signing = &BundleSigning{Keys: map[string]BundleKey{signer.KeyID: {KeyFile: signer.PublicFile}}}
	}
	e, err := NewEngine(t.Context(), cfg, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e
}

func revBundle(t *testing.T, rev string, s *bundletest.Signer) []byte {
	return bundletest.Build(t, bundletest.Options{
		Modules:  map[string]string{"authz.rego": strings.Replace(goodPolicy, "%s", rev, 1)},
		Revision: rev, Signer: s,
	})
}

// xrev is the x-rev header the serving policy sets for an authenticated
// caller, or the evaluation error.
func xrev(t *testing.T, e *Engine) (string, error) {
	t.Helper()
	d, err := e.Evaluate(t.Context(), &authz.Request{Identity: authz.Identity{Authenticated: true}})
	return d.Headers["x-rev"], err
}

// TestBundleServerLifecycle walks one engine through the bundle protocol
// against a real HTTP server serving bundles signed with OPA's signing:
// the first download, a 304 for an unchanged ETag, a new revision, and
// every kind of bad bundle refused with the last good one still serving.
func TestBundleServerLifecycle(t *testing.T) {
	signer := bundletest.NewSigner(t, "release")
	srv := bundletest.NewServer(t, bundlePath)
	reg := prometheus.NewRegistry()
	persist := t.TempDir()
	e := bundleEngine(t, srv, signer, persist, reg)
	failures := func(reason string) float64 {
		return testutil.ToFloat64(e.bundles.failuresVec.WithLabelValues(reason))
	}

	// Before any bundle: not ready, and evaluation fails, which denies.
	if st := e.Status(); st.Ready {
		t.Fatalf("status before the first bundle = %+v, want not ready", st)
	}
	if _, err := xrev(t, e); err == nil {
		t.Fatal("evaluation before the first bundle succeeded, want an error")
	}
	if err := e.Reload(t.Context()); err == nil || e.Status().Ready {
		t.Fatalf("reload with nothing published = %v, ready %v; want an error and not ready", err, e.Status().Ready)
	}

	etag1 := srv.Publish(revBundle(t, "one", signer))
	if err := e.Reload(t.Context()); err != nil {
		t.Fatalf("first bundle: %v", err)
	}
	if got, err := xrev(t, e); err != nil || got != "one" {
		t.Fatalf("x-rev = %q, %v; want one", got, err)
	}
	if st := e.Status(); !st.Ready || st.Revision != "one" || !strings.HasPrefix(st.Source, "bundle_server:") || st.LastError != "" {
		t.Fatalf("status = %+v, want ready at manifest revision one from the bundle server", st)
	}
	if got := testutil.ToFloat64(e.bundles.active.WithLabelValues("one")); got != 1 {
		t.Fatalf("active revision info for one = %v, want 1", got)
	}
	first := srv.Requests()[len(srv.Requests())-1]
	if first.Authorization != "Bearer s3cret-bundle-token" || first.IfNoneMatch != "" || first.Status != http.StatusOK {
		t.Fatalf("first download = %+v, want the bearer token, no If-None-Match, 200", first)
	}

	// Unchanged: the ETag goes back and 304 keeps the policy.
	before := testutil.ToFloat64(e.bundles.lastSuccess)
	time.Sleep(10 * time.Millisecond) // the gauge has nanosecond resolution; this only makes a change visible
	if err := e.Reload(t.Context()); err != nil {
		t.Fatalf("unchanged bundle: %v", err)
	}
	if r := srv.Requests()[len(srv.Requests())-1]; r.IfNoneMatch != etag1 || r.Status != http.StatusNotModified {
		t.Fatalf("second download = %+v, want If-None-Match %s and 304", r, etag1)
	}
	if after := testutil.ToFloat64(e.bundles.lastSuccess); !(after > before) {
		t.Fatalf("last success %v after a 304, want later than %v", after, before)
	}

	two := revBundle(t, "two", signer)
	srv.Publish(two)
	if err := e.Reload(t.Context()); err != nil {
		t.Fatalf("new revision: %v", err)
	}
	if got, _ := xrev(t, e); got != "two" || e.Status().Revision != "two" {
		t.Fatalf("after publishing two: x-rev %q, revision %q", got, e.Status().Revision)
	}
	if got := testutil.ToFloat64(e.bundles.active.WithLabelValues("one")); got != 0 {
		t.Fatalf("active revision info still holds one (%v)", got)
	}

	refused := []struct {
		name   string
		raw    []byte
		reason string
	}{
		{"tampered after signing", bundletest.Build(t, bundletest.Options{
			Modules: map[string]string{"authz.rego": strings.Replace(goodPolicy, "%s", "evil", 1)}, Revision: "evil", Signer: signer, Tamper: true,
		}), bundleFailSignature},
		{"unsigned", revBundle(t, "unsigned", nil), bundleFailSignature},
		{"signed by another key", revBundle(t, "other", bundletest.NewSigner(t, "release")), bundleFailSignature},
		{"not a bundle", []byte("<html>maintenance</html>"), bundleFailRead},
		{"does not compile", bundletest.Build(t, bundletest.Options{
			Modules: map[string]string{"authz.rego": "package phigate.authz\n\ndecision := {\"allow\": x}\n"}, Revision: "broken", Signer: signer,
		}), string(CodeCompile)},
		{"decision key phigate does not read", bundletest.Build(t, bundletest.Options{
			Modules: map[string]string{"authz.rego": "package phigate.authz\n\ndecision := {\"allow\": true, \"status\": 200, \"allow_all\": true}\n"}, Revision: "badkey", Signer: signer,
		}), string(CodeShape)},
	}
	for _, c := range refused {
		t.Run(c.name, func(t *testing.T) {
			n := failures(c.reason)
			srv.Publish(c.raw)
			if err := e.Reload(t.Context()); err == nil {
				t.Fatal("bundle activated, want it refused")
			}
			if got, err := xrev(t, e); err != nil || got != "two" {
				t.Fatalf("x-rev = %q, %v; want the last good policy (two) still serving", got, err)
			}
			if st := e.Status(); !st.Ready || st.Revision != "two" || st.LastError == "" {
				t.Fatalf("status = %+v, want ready at two with the failure shown", st)
			}
			if got := failures(c.reason); got != n+1 {
				t.Fatalf("failures{reason=%s} = %v, want %v", c.reason, got, n+1)
			}
		})
	}

	// The server serves the active bundle again: 304, and the failures
	// shown are over.
	srv.Publish(two)
	if err := e.Reload(t.Context()); err != nil || e.Status().LastError != "" {
		t.Fatalf("the active bundle again: %v, last error %q; want a 304 that clears it", err, e.Status().LastError)
	}
	if r := srv.Requests()[len(srv.Requests())-1]; r.Status != http.StatusNotModified {
		t.Fatalf("the active bundle again got %d, want 304", r.Status)
	}

	// The server errs, then is gone: the last good keeps serving.
	srv.Fail(http.StatusInternalServerError)
	if err := e.Reload(t.Context()); err == nil || failures(bundleFailStatus) < 1 {
		t.Fatalf("a 500 = %v, failures{status} %v; want an error counted", err, failures(bundleFailStatus))
	}
	srv.Close()
	if err := e.Reload(t.Context()); err == nil || failures(bundleFailDownload) != 1 {
		t.Fatalf("server down = %v, failures{download} %v; want an error counted once", err, failures(bundleFailDownload))
	}
	if got, _ := xrev(t, e); got != "two" || !e.Status().Ready {
		t.Fatalf("with the server down x-rev = %q, ready %v; want two, ready", got, e.Status().Ready)
	}
	if st := e.Status(); strings.Contains(st.LastError, "s3cret") {
		t.Fatalf("status error carries the token: %q", st.LastError)
	}

	// A restart without the server serves the kept bundle, verified again.
	e2 := bundleEngine(t, srv, signer, persist, nil)
	if got, err := xrev(t, e2); err != nil || got != "two" || e2.Status().Revision != "two" {
		t.Fatalf("restart without the server: x-rev %q, %v, revision %q; want the kept bundle two", got, err, e2.Status().Revision)
	}
	// A kept bundle that no longer verifies is not served.
	if err := os.WriteFile(filepath.Join(persist, persistBundle), revBundle(t, "planted", nil), 0o600); err != nil {
		t.Fatal(err)
	}
	e3 := bundleEngine(t, srv, signer, persist, nil)
	if st := e3.Status(); st.Ready {
		t.Fatalf("a planted unsigned kept bundle was served: %+v", st)
	}
}

// TestBundleServerPolls: with the poller running, a newly published
// revision is picked up without anyone asking, and Close stops it.
func TestBundleServerPolls(t *testing.T) {
	srv := bundletest.NewServer(t, bundlePath)
	srv.Publish(revBundle(t, "one", nil))
	e, err := NewEngine(t.Context(), Config{BundleServer: BundleServerConfig{
		URL: srv.URL, Polling: BundlePolling{MinDelay: 50 * time.Millisecond, MaxDelay: 100 * time.Millisecond},
	}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	waitFor(t, func() bool { got, _ := xrev(t, e); return got == "one" })
	srv.Publish(revBundle(t, "two", nil))
	waitFor(t, func() bool { got, _ := xrev(t, e); return got == "two" })
	e.Close()
	n := len(srv.Requests())
	time.Sleep(300 * time.Millisecond)
	if m := len(srv.Requests()); m != n {
		t.Fatalf("%d requests after Close, want none", m-n)
	}
}

// TestBundleServerLongPolling: against a server that holds requests, a
// new revision arrives as soon as it is published, though the polling
// delay alone would not ask again for an hour.
func TestBundleServerLongPolling(t *testing.T) {
	srv := bundletest.NewServer(t, bundlePath)
	srv.LongPoll = true
	srv.Publish(revBundle(t, "one", nil))
	e, err := NewEngine(t.Context(), Config{BundleServer: BundleServerConfig{
		URL: srv.URL, Polling: BundlePolling{MinDelay: time.Hour, MaxDelay: time.Hour, LongPollingTimeout: time.Minute},
	}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	waitFor(t, func() bool { got, _ := xrev(t, e); return got == "one" })
	// Wait for the held request before publishing, so the change reaches
	// phigate through it.
	waitFor(t, func() bool { r := srv.Requests(); return len(r) >= 1 })
	srv.Publish(revBundle(t, "two", nil))
	waitFor(t, func() bool { got, _ := xrev(t, e); return got == "two" })
	for _, r := range srv.Requests() {
		if r.Prefer != "wait=60" {
			t.Fatalf("request %+v, want Prefer: wait=60", r)
		}
	}
}

func TestBundleServerConfigErrors(t *testing.T) {
	key := bundletest.NewSigner(t, "k")
	cases := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no url", Config{BundleServer: BundleServerConfig{Resource: "x"}}, "policy.bundle_server.url"},
		{"not http", Config{BundleServer: BundleServerConfig{URL: "ftp://h/"}}, "policy.bundle_server.url"},
		{"credentials in url", Config{BundleServer: BundleServerConfig{URL: "https://u:p@h/"}}, "policy.bundle_server.url"},
		{"with a directory", Config{Source: Source{Dir: t.TempDir()}, BundleServer: BundleServerConfig{URL: "https://h/"}}, "only one"},
		{"delays", Config{BundleServer: BundleServerConfig{URL: "https://h/", Polling: BundlePolling{MinDelay: time.Minute, MaxDelay: time.Second}}}, "polling.max_delay"},
		{"token over http", Config{BundleServer: BundleServerConfig{URL: "http://bundles.example/", Credentials: service.Credentials{BearerTokenEnv: "HOME"}}}, "credentials"},
		{"token env unset", Config{BundleServer: BundleServerConfig{URL: "https://h/", Credentials: service.Credentials{BearerTokenEnv: "PHIGATE_UNSET_TOKEN_VAR"}}}, "bearer_token_env"},
		{"ca not pem", Config{BundleServer: BundleServerConfig{URL: "https://h/", TLS: service.TLS{CACert: key.PublicFile + ".missing"}}}, "tls.ca_cert"},
		{"no keys", Config{BundleServer: BundleServerConfig{URL: "https://h/", Signing: &BundleSigning{}}}, "signing.keys"},
		{"bad algorithm", Config{BundleServer: BundleServerConfig{URL: "https://h/", Signing: &BundleSigning{Keys: map[string]BundleKey{"k": {KeyFile: key.PublicFile, Algorithm: "none"}}}}}, "algorithm"},
		{"unknown keyid", Config{BundleServer: BundleServerConfig{URL: "https://h/", Signing: &BundleSigning{KeyID: "x", Keys: map[string]BundleKey{"k": {KeyFile: key.PublicFile}}}}}, "signing.keyid"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Validate = %v, want an error naming %s", err, c.want)
			}
		})
	}
}

// TestSignedBundleWithoutKeysRefused: a signature phigate has no key for
// is not taken as absent.
func TestSignedBundleWithoutKeysRefused(t *testing.T) {
	srv := bundletest.NewServer(t, bundlePath)
	e := bundleEngine(t, srv, nil, "", nil)
	srv.Publish(revBundle(t, "one", bundletest.NewSigner(t, "k")))
	if err := e.Reload(t.Context()); err == nil || e.Status().Ready {
		t.Fatalf("signed bundle without signing configured: %v, ready %v; want refused", err, e.Status().Ready)
	}
	srv.Publish(revBundle(t, "two", nil))
	if err := e.Reload(t.Context()); err != nil || e.Status().Revision != "two" {
		t.Fatalf("unsigned bundle without signing configured: %v at %q; want it taken", err, e.Status().Revision)
	}
}
