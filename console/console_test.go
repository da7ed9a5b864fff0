package console

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/phigate/phigate/audit"
	"github.com/phigate/phigate/authz"
	"github.com/phigate/phigate/store"
)

// tokens maps a token to the identity it stands for, at the Verifier seam.
type tokens map[string]authz.Identity

func (t tokens) Verify(_ context.Context, tok string) (authz.Identity, error) {
	if id, ok := t[tok]; ok {
		return id, nil
	}
	return authz.Identity{Error: "invalid_token"}, authz.Errorf(authz.CodeInvalidToken, "unknown")
}

type recorded struct{ got []audit.ConsoleEvent }

func (r *recorded) RecordConsole(_ context.Context, ce audit.ConsoleEvent) error {
	r.got = append(r.got, ce)
	return nil
}

func newTestConsole(t *testing.T) (*Console, *recorded, *store.Memory) {
	t.Helper()
	cfg := Config{Enabled: true}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	rec, st := &recorded{}, store.NewMemory(0)
	t.Cleanup(func() { _ = st.Close() })
	c, err := New(cfg, Deps{AuditDir: t.TempDir(), Recorder: rec, Alerts: st, Verifier: tokens{
		"officer":   {Authenticated: true, Subject: "o1", Roles: []string{"privacy-officer"}, MFA: true, Expires: time.Now().Add(time.Hour).Unix()},
		"clinician": {Authenticated: true, Subject: "d1", Roles: []string{"physician"}, MFA: true},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return c, rec, st
}

func post(c http.Handler, path string, form url.Values, cookie *http.Cookie) *httptest.ResponseRecorder {
	r := httptest.NewRequest("POST", path, strings.NewReader(form.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if cookie != nil {
		r.AddCookie(cookie)
	}
	w := httptest.NewRecorder()
	c.ServeHTTP(w, r)
	return w
}

func get(c http.Handler, path string, cookie *http.Cookie) *httptest.ResponseRecorder {
	r := httptest.NewRequest("GET", path, nil)
	if cookie != nil {
		r.AddCookie(cookie)
	}
	w := httptest.NewRecorder()
	c.ServeHTTP(w, r)
	return w
}

func TestSignInAndForms(t *testing.T) {
	c, rec, st := newTestConsole(t)
	if w := get(c, "/console/alerts", nil); w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/console/login" {
		t.Fatalf("signed out: %d %s", w.Code, w.Header().Get("Location"))
	}
	if w := post(c, "/console/login", url.Values{"token": {"clinician"}}, nil); w.Code != http.StatusUnauthorized {
		t.Fatalf("a clinician signed in: %d", w.Code)
	}
	w := post(c, "/console/login", url.Values{"token": {"Bearer officer"}}, nil)
	if w.Code != http.StatusSeeOther {
		t.Fatalf("officer: %d", w.Code)
	}
	ck := w.Result().Cookies()[0]
	if !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode {
		t.Errorf("cookie %+v", ck)
	}
	if w := get(c, "/console/alerts", ck); w.Code != 200 || w.Header().Get("Cache-Control") != "no-store" ||
		!strings.Contains(w.Header().Get("Content-Security-Policy"), "default-src 'none'") {
		t.Fatalf("alerts page: %d %v", w.Code, w.Header())
	}
	// A tampered cookie is a stranger's.
	bad := *ck
	bad.Value = strings.Replace(bad.Value, ".", "x.", 1)
	if w := get(c, "/console/alerts", &bad); w.Code != http.StatusSeeOther {
		t.Fatalf("tampered cookie: %d", w.Code)
	}
	if err := st.RaiseAlert(t.Context(), "d1", "bulk_read.distinct_patients", time.Now()); err != nil {
		t.Fatal(err)
	}
	// A form without the session's token changes nothing.
	if w := post(c, "/console/alerts/1", url.Values{"state": {"cleared"}, "note": {"ok"}}, ck); w.Code != http.StatusForbidden {
		t.Fatalf("no form token: %d", w.Code)
	}
	if open, _ := st.ListAlerts(t.Context(), "", "", 0); len(open) != 1 {
		t.Fatalf("the alert changed without a form token")
	}
	s, _ := c.sealer.open(ck.Value, time.Now())
	if w := post(c, "/console/alerts/1", url.Values{"state": {"cleared"}, "note": {"seen"}, "csrf": {s.CSRF}}, ck); w.Code != http.StatusSeeOther {
		t.Fatalf("clear: %d", w.Code)
	}
	if open, _ := st.ListAlerts(t.Context(), "", "", 0); len(open) != 0 {
		t.Fatalf("still open: %+v", open)
	}
	var actions []string
	for _, e := range rec.got {
		a := e.Officer + ":" + e.Action
		if e.Refused {
			a += ":refused"
		}
		actions = append(actions, a)
	}
	want := "d1:login:refused|o1:login|o1:alerts|o1:alert_cleared"
	if strings.Join(actions, "|") != want {
		t.Errorf("recorded %v, want %s", actions, want)
	}
}
