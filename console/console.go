// Package console is the privacy officer's console: a few server-rendered
// pages on phigate's admin listener, never on the data path. An officer
// signs in with a token from the identity provider phigate trusts, with
// the officer role (and a second factor unless configured otherwise),
// and can see who looked at a patient, a chart of decisions over time,
// and the open alerts, which they clear or escalate. Every page read and
// every action is itself an audit record.
package console

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"maps"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/phigate/phigate/audit"
	"github.com/phigate/phigate/authz"
	"github.com/phigate/phigate/store"
)

// Config is phigate.yaml's console section.
type Config struct {
	// Enabled serves the console under /console/ on the admin listener.
	Enabled bool `yaml:"enabled"`
	// Role is the role an officer's token must carry (default
	// "privacy-officer").
	Role string `yaml:"role"`
	// AllowSingleFactor lets an officer sign in without a second factor
	// (amr); off by default.
	AllowSingleFactor bool `yaml:"allow_single_factor"`
	// SessionKeyFile holds the key (32 bytes or more) that signs session
	// cookies; without it a key is made at start, and sessions end with
	// the process.
	SessionKeyFile string `yaml:"session_key_file"`
	// SessionTTL bounds a session (default 8h); it never outlives the
	// token it began with.
	SessionTTL time.Duration `yaml:"session_ttl"`
}

// Validate fills defaults and checks the section.
func (c *Config) Validate() error {
	if !c.Enabled {
		return nil
	}
	if c.Role == "" {
		c.Role = "privacy-officer"
	}
	if c.SessionTTL == 0 {
		c.SessionTTL = 8 * time.Hour
	}
	if c.SessionTTL < time.Minute || c.SessionTTL > 24*time.Hour {
		return fmt.Errorf("console.session_ttl: %v is not between 1m and 24h", c.SessionTTL)
	}
	if c.SessionKeyFile != "" {
		b, err := os.ReadFile(c.SessionKeyFile)
		if err != nil {
			return fmt.Errorf("console.session_key_file: %w", err)
		}
		if len(strings.TrimSpace(string(b))) < 32 {
			return errors.New("console.session_key_file: the key is shorter than 32 bytes")
		}
	}
	return nil
}

// Recorder writes the console's own audit records.
type Recorder interface {
	RecordConsole(ctx context.Context, ce audit.ConsoleEvent) error
}

// Deps are what the console reads and writes.
type Deps struct {
	Verifier authz.Verifier
	// AuditDir is the trail the console reads; EncryptionKey opens sealed
	// records.
	AuditDir      string
	EncryptionKey []byte
	Recorder      Recorder
	Alerts        store.Alerts
	// Approvals decides two-person approvals; nil when none are configured.
	Approvals ApprovalDesk
	// Reviews keeps the marks on break-glass accesses; Roles are the
	// policy's role permissions, for the entitlement review.
	Reviews ReviewStore
	Roles   map[string]map[string][]string
	Logger  *zap.Logger
	Now     func() time.Time
	// Secure marks cookies Secure (the admin listener is behind TLS).
	Secure bool
}

// ApprovalDesk lists and decides the requests that need a second
// person's approval. Decide records the decision (or its refusal) itself;
// a refusal is a code such as self_approval, an error a failure to reach
// the store or the trail.
type ApprovalDesk interface {
	Pending(ctx context.Context) ([]store.Approval, error)
	Decide(ctx context.Context, who authz.Identity, id string, approve bool) (string, error)
}

// ReviewStore keeps reviewers' marks on audited decisions.
type ReviewStore interface {
	MarkReviewed(ctx context.Context, r store.Review) error
	Reviews(ctx context.Context) ([]store.Review, error)
}

// Console serves the pages.
type Console struct {
	cfg    Config
	d      Deps
	sealer *sealer
	mux    *http.ServeMux
}

//go:embed templates/*.html
var templateFS embed.FS

var pages = template.Must(template.New("").Funcs(template.FuncMap{
	"short": func(s string) string {
		if len(s) > 12 {
			return s[:12] + "…"
		}
		return s
	},
}).ParseFS(templateFS, "templates/*.html"))

const cookieName = "phigate_console"

// New builds the console. cfg must be validated.
func New(cfg Config, d Deps) (*Console, error) {
	if d.Verifier == nil || d.Recorder == nil || d.Alerts == nil {
		return nil, errors.New("console: a verifier, an audit recorder and the alert store are required")
	}
	if d.Logger == nil {
		d.Logger = zap.NewNop()
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	var key []byte
	if cfg.SessionKeyFile != "" {
		b, err := os.ReadFile(cfg.SessionKeyFile)
		if err != nil {
			return nil, fmt.Errorf("console.session_key_file: %w", err)
		}
		key = []byte(strings.TrimSpace(string(b)))
	}
	s, err := newSealer(key)
	if err != nil {
		return nil, err
	}
	c := &Console{cfg: cfg, d: d, sealer: s, mux: http.NewServeMux()}
	c.mux.HandleFunc("GET /console/login", c.loginPage)
	c.mux.HandleFunc("POST /console/login", c.login)
	c.mux.HandleFunc("POST /console/logout", c.signedIn(c.logout))
	c.mux.HandleFunc("GET /console/{$}", c.signedIn(c.overview))
	c.mux.HandleFunc("GET /console/patient", c.signedIn(c.patient))
	c.mux.HandleFunc("GET /console/alerts", c.signedIn(c.alerts))
	c.mux.HandleFunc("POST /console/alerts/{id}", c.signedIn(c.resolve))
	c.mux.HandleFunc("GET /console/approvals", c.signedIn(c.approvals))
	c.mux.HandleFunc("POST /console/approvals/{id}", c.signedIn(c.decide))
	c.mux.HandleFunc("GET /console/breakglass", c.signedIn(c.breakGlass))
	c.mux.HandleFunc("POST /console/breakglass/{id}", c.signedIn(c.markReviewed))
	c.mux.HandleFunc("GET /console/review", c.signedIn(c.review))
	return c, nil
}

// ServeHTTP implements http.Handler. Every answer forbids framing and
// caching: the pages name patients.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Content-Type-Options", "nosniff")
	c.mux.ServeHTTP(w, r)
}

type handler func(w http.ResponseWriter, r *http.Request, s session)

// signedIn admits a request with a valid session, and a POST only with
// the session's form token.
func (c *Console) signedIn(h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ck, err := r.Cookie(cookieName)
		var s session
		ok := err == nil
		if ok {
			s, ok = c.sealer.open(ck.Value, c.d.Now())
		}
		if !ok {
			http.Redirect(w, r, "/console/login", http.StatusSeeOther)
			return
		}
		if r.Method == http.MethodPost && r.PostFormValue("csrf") != s.CSRF {
			http.Error(w, "the form is stale: reload the page", http.StatusForbidden)
			return
		}
		h(w, r, s)
	}
}

func (c *Console) render(w http.ResponseWriter, name string, data map[string]any) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := pages.ExecuteTemplate(w, name, data); err != nil {
		c.d.Logger.Error("console page", zap.String("page", name), zap.Error(err))
	}
}

// record audits one console action; a page whose access cannot be
// recorded is not shown.
func (c *Console) record(r *http.Request, ce audit.ConsoleEvent) error {
	ce.Peer = r.RemoteAddr
	if err := c.d.Recorder.RecordConsole(r.Context(), ce); err != nil {
		c.d.Logger.Error("console action not recorded; refusing it", zap.String("action", ce.Action), zap.Error(err))
		return err
	}
	return nil
}

// viewed records that an officer read a page; false means the read could
// not be recorded, and the 503 has been written: a page whose read cannot
// be recorded is not shown.
func (c *Console) viewed(w http.ResponseWriter, r *http.Request, ce audit.ConsoleEvent) bool {
	if err := c.record(r, ce); err != nil {
		http.Error(w, "the audit trail is unavailable", http.StatusServiceUnavailable)
		return false
	}
	return true
}

// page is the data a signed-in page renders with: the officer, the form
// token, the page's name for the navigation, the outcome of the action
// that led here, and what the page adds.
func page(r *http.Request, s session, name string, extra ...map[string]any) map[string]any {
	data := map[string]any{"Officer": s.Subject, "CSRF": s.CSRF, "Page": name, "Done": r.URL.Query().Get("done")}
	for _, e := range extra {
		maps.Copy(data, e)
	}
	return data
}

func (c *Console) loginPage(w http.ResponseWriter, r *http.Request) {
	c.render(w, "login.html", map[string]any{"Role": c.cfg.Role})
}

func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	tok := strings.TrimSpace(r.PostFormValue("token"))
	tok = strings.TrimSpace(strings.TrimPrefix(tok, "Bearer "))
	id, err := c.d.Verifier.Verify(r.Context(), tok)
	reason := ""
	switch {
	case err != nil || !id.Authenticated:
		reason = "token not accepted"
	case !slices.Contains(id.Roles, c.cfg.Role):
		reason = "not an officer"
	case !id.MFA && !c.cfg.AllowSingleFactor:
		reason = "second factor required"
	}
	if reason != "" {
		_ = c.record(r, audit.ConsoleEvent{Officer: id.Subject, Action: "login", Refused: true, Reason: reason})
		w.WriteHeader(http.StatusUnauthorized)
		c.render(w, "login.html", map[string]any{"Role": c.cfg.Role, "Error": "Sign-in refused: " + reason + "."})
		return
	}
	if err := c.record(r, audit.ConsoleEvent{Officer: id.Subject, Action: "login"}); err != nil {
		http.Error(w, "the audit trail is unavailable", http.StatusServiceUnavailable)
		return
	}
	exp := c.d.Now().Add(c.cfg.SessionTTL)
	if id.Expires > 0 && time.Unix(id.Expires, 0).Before(exp) {
		exp = time.Unix(id.Expires, 0)
	}
	s := session{Subject: id.Subject, Roles: id.Roles, MFA: id.MFA, Expires: exp.Unix(), CSRF: randomToken()}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: c.sealer.seal(s), Path: "/console/", Expires: exp,
		HttpOnly: true, Secure: c.d.Secure, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/console/", http.StatusSeeOther)
}

func (c *Console) logout(w http.ResponseWriter, r *http.Request, s session) {
	_ = c.record(r, audit.ConsoleEvent{Officer: s.Subject, Action: "logout"})
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: "/console/", MaxAge: -1,
		HttpOnly: true, Secure: c.d.Secure, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/console/login", http.StatusSeeOther)
}
