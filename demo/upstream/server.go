package upstream

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/phigate/phigate/demo/fhirdata"
)

// Content types the server speaks. Like common FHIR servers it adds a
// charset parameter, which a response filter must tolerate.
const (
	ContentTypeJSON = "application/fhir+json;charset=utf-8"
	ContentTypeXML  = "application/fhir+xml;charset=utf-8"
	ContentTypeHL7  = "x-application/hl7-v2+er7"
)

// Config configures a Server. Validate fills the defaults.
type Config struct {
	// BasePath is where the FHIR API lives, default "/fhir".
	BasePath string
	// PublicBase, when set, is the absolute base used in fullUrl and
	// links (e.g. "http://fhir.internal/fhir"); otherwise it is derived
	// from the request's Host.
	PublicBase string
	// DefaultCount and MaxCount bound search page sizes (50 and 1000).
	DefaultCount int
	MaxCount     int
	// MaxBodyBytes bounds request bodies (default 10 MiB).
	MaxBodyBytes int64
	// LogCapacity is how many requests the request log keeps (default
	// 10000); older ones are dropped and counted.
	LogCapacity int
	// Strict makes unknown search parameters an error for every request,
	// as if each sent "Prefer: handling=strict". Default is lenient, as in
	// FHIR: unknown parameters are ignored, and the result is broader.
	Strict bool
	// Logger receives debug lines per request (method, interaction,
	// status, never paths or ids) and errors. Nil means no logging.
	Logger *zap.Logger
	// Now is the clock for writes and Bundle timestamps (default time.Now).
	Now func() time.Time
}

// Validate fills defaults and checks the fields, naming the bad one.
func (c *Config) Validate() error {
	if c.BasePath == "" {
		c.BasePath = "/fhir"
	}
	if !strings.HasPrefix(c.BasePath, "/") || strings.HasSuffix(c.BasePath, "/") || c.BasePath == "/" {
		return fmt.Errorf("upstream: Config.BasePath must start with / and not end with /, got %q", c.BasePath)
	}
	for _, reserved := range []string{"/legacy", "/hl7"} {
		if c.BasePath == reserved {
			return fmt.Errorf("upstream: Config.BasePath %q collides with a non-FHIR route", c.BasePath)
		}
	}
	if c.PublicBase != "" {
		u, err := url.Parse(c.PublicBase)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("upstream: Config.PublicBase must be an absolute http(s) URL, got %q", c.PublicBase)
		}
		c.PublicBase = strings.TrimRight(c.PublicBase, "/")
	}
	if c.DefaultCount == 0 {
		c.DefaultCount = 50
	}
	if c.MaxCount == 0 {
		c.MaxCount = 1000
	}
	if c.DefaultCount < 0 || c.MaxCount < 1 || c.DefaultCount > c.MaxCount {
		return fmt.Errorf("upstream: Config.DefaultCount (%d) must be within 0..Config.MaxCount (%d)", c.DefaultCount, c.MaxCount)
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = 10 << 20
	}
	if c.MaxBodyBytes < 0 {
		return fmt.Errorf("upstream: Config.MaxBodyBytes must be positive, got %d", c.MaxBodyBytes)
	}
	if c.LogCapacity == 0 {
		c.LogCapacity = 10000
	}
	if c.LogCapacity < 0 {
		return fmt.Errorf("upstream: Config.LogCapacity must be positive, got %d", c.LogCapacity)
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

// Server is the legacy FHIR service: an http.Handler over an in-memory,
// versioned copy of a fhirdata.Dataset, plus the request log.
type Server struct {
	cfg  Config
	ds   *fhirdata.Dataset
	log  *zap.Logger
	data *store
	// writeMu serializes writes (single writes and whole transactions) so
	// a transaction can be undone without affecting anyone else's write.
	writeMu sync.Mutex
	reqs    *requestLog
}

// New builds a Server over ds.
func New(ds *fhirdata.Dataset, cfg Config) (*Server, error) {
	if ds == nil {
		return nil, errors.New("upstream: nil data set")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Server{
		cfg:  cfg,
		ds:   ds,
		log:  cfg.Logger.Named("upstream"),
		data: newStore(ds),
		reqs: newRequestLog(cfg.LogCapacity),
	}, nil
}

// BasePath is the FHIR base path the server answers under.
func (s *Server) BasePath() string { return s.cfg.BasePath }

// ResetData drops every write and restores the generated data set.
func (s *Server) ResetData() {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	fresh := newStore(s.ds)
	s.data.mu.Lock()
	s.data.tables, s.data.seq, s.data.history = fresh.tables, 0, fresh.history
	s.data.mu.Unlock()
}

// ServeHTTP routes FHIR, legacy and HL7 requests and records each in the
// request log.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := s.cfg.Now()
	rec := &statusRecorder{ResponseWriter: w}
	interaction := s.route(rec, r)
	s.reqs.add(logEntry(r, rec.status(), start))
	if ce := s.log.Check(zap.DebugLevel, "request"); ce != nil {
		ce.Write(zap.String("method", r.Method), zap.String("interaction", interaction),
			zap.Int("status", rec.status()), zap.Duration("elapsed", s.cfg.Now().Sub(start)))
	}
}

func (s *Server) route(w http.ResponseWriter, r *http.Request) string {
	p := r.URL.Path
	switch {
	case p == s.cfg.BasePath || strings.HasPrefix(p, s.cfg.BasePath+"/"):
		return s.serveFHIR(w, r, strings.TrimPrefix(p, s.cfg.BasePath))
	case strings.HasPrefix(p, "/legacy/"):
		s.serveLegacy(w, r)
		return "legacy"
	case strings.HasPrefix(p, "/hl7/"):
		s.serveHL7(w, r)
		return "hl7"
	default:
		s.sendError(w, r, errNotFound())
		return "unknown"
	}
}

// ---- responses ---------------------------------------------------------

type format int

const (
	formatJSON format = iota
	formatXML
)

// negotiate picks the response format from _format, then Accept.
func negotiate(r *http.Request) (format, *fhirError) {
	if f := r.URL.Query().Get("_format"); f != "" {
		switch strings.TrimSpace(strings.SplitN(f, ";", 2)[0]) {
		case "json", "application/json", "application/fhir+json":
			return formatJSON, nil
		case "xml", "text/xml", "application/xml", "application/fhir+xml":
			return formatXML, nil
		default:
			return formatJSON, &fhirError{http.StatusNotAcceptable, CodeNotSupported, "unsupported _format"}
		}
	}
	// The first media type naming json or xml wins; anything else (*/*,
	// text/html) gets JSON, as most FHIR servers do.
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		mt, _, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue
		}
		switch {
		case strings.HasSuffix(mt, "json"):
			return formatJSON, nil
		case strings.HasSuffix(mt, "xml"):
			return formatXML, nil
		}
	}
	return formatJSON, nil
}

// acceptsGzip reports whether Accept-Encoding allows gzip (q > 0).
func acceptsGzip(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept-Encoding"), ",") {
		name, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if !strings.EqualFold(strings.TrimSpace(name), "gzip") {
			continue
		}
		if q, ok := strings.CutPrefix(strings.TrimSpace(params), "q="); ok {
			v, err := strconv.ParseFloat(q, 64)
			return err == nil && v > 0
		}
		return true
	}
	return false
}

// sendResource writes res in the negotiated format with status.
func (s *Server) sendResource(w http.ResponseWriter, r *http.Request, status int, res Resource) {
	f, ferr := negotiate(r)
	if ferr != nil {
		f = formatJSON
		status, res = ferr.status, operationOutcome(ferr)
	}
	var body []byte
	var ct string
	if f == formatXML {
		body, ct = renderXML(res), ContentTypeXML
	} else {
		var err error
		body, err = encodeJSON(res)
		if err == nil && r.URL.Query().Get("_pretty") == "true" {
			var ind bytes.Buffer
			if err = json.Indent(&ind, body, "", "  "); err == nil {
				body = ind.Bytes()
			}
		}
		if err != nil {
			s.log.Error("encode response", zap.Error(err))
			status, body = http.StatusInternalServerError, []byte(`{"resourceType":"OperationOutcome","issue":[{"severity":"fatal","code":"exception"}]}`)
		}
		ct = ContentTypeJSON
	}
	s.sendBytes(w, r, status, ct, body)
}

func (s *Server) sendError(w http.ResponseWriter, r *http.Request, e *fhirError) {
	if e.status == http.StatusMethodNotAllowed {
		w.Header().Set("Allow", "GET, POST, PUT, DELETE")
	}
	s.sendResource(w, r, e.status, operationOutcome(e))
}

// sendBytes writes body, gzip-compressed when the client accepts it.
func (s *Server) sendBytes(w http.ResponseWriter, r *http.Request, status int, contentType string, body []byte) {
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Add("Vary", "Accept, Accept-Encoding")
	if len(body) > 0 && acceptsGzip(r) {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		_, _ = zw.Write(body)
		_ = zw.Close()
		body = buf.Bytes()
		h.Set("Content-Encoding", "gzip")
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}

// base is the absolute FHIR base for fullUrl and links.
func (s *Server) base(r *http.Request) string {
	if s.cfg.PublicBase != "" {
		return s.cfg.PublicBase
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	if p := r.Header.Get("X-Forwarded-Proto"); p == "http" || p == "https" {
		scheme = p
	}
	host := r.Host
	if host == "" {
		host = "localhost"
	}
	return scheme + "://" + host + s.cfg.BasePath
}

// readBody reads a JSON request body within the size limit.
func (s *Server) readBody(r *http.Request) (Resource, *fhirError) {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || !strings.HasSuffix(mt, "json") {
			return nil, &fhirError{http.StatusUnsupportedMediaType, CodeNotSupported, "request bodies must be FHIR JSON"}
		}
	}
	raw, err := io.ReadAll(io.LimitReader(r.Body, s.cfg.MaxBodyBytes+1))
	if err != nil {
		return nil, errInvalid("unreadable request body")
	}
	if int64(len(raw)) > s.cfg.MaxBodyBytes {
		return nil, &fhirError{http.StatusRequestEntityTooLarge, CodeTooLarge, "request body too large"}
	}
	var res Resource
	if err := json.Unmarshal(raw, &res); err != nil || res == nil {
		return nil, errInvalid("request body is not a JSON object")
	}
	if _, ok := res["resourceType"].(string); !ok {
		return nil, errInvalid("request body has no resourceType")
	}
	return res, nil
}

// ---- running -----------------------------------------------------------

// Serve answers FHIR requests on ln and, when adminLn is not nil, the admin
// API (AdminHandler) on adminLn, until ctx is done; then it shuts both down
// gracefully and returns nil.
func (s *Server) Serve(ctx context.Context, ln, adminLn net.Listener) error {
	servers := []*http.Server{{Handler: s, ReadHeaderTimeout: 10 * time.Second}}
	listeners := []net.Listener{ln}
	if adminLn != nil {
		servers = append(servers, &http.Server{Handler: s.AdminHandler(), ReadHeaderTimeout: 10 * time.Second})
		listeners = append(listeners, adminLn)
	}
	errc := make(chan error, len(servers))
	for i, srv := range servers {
		go func() { errc <- srv.Serve(listeners[i]) }()
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	shutCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	for _, srv := range servers {
		_ = srv.Shutdown(shutCtx)
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// Run listens on addr (and adminAddr unless empty) and calls Serve.
func (s *Server) Run(ctx context.Context, addr, adminAddr string) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("upstream: listen: %w", err)
	}
	var adminLn net.Listener
	if adminAddr != "" {
		adminLn, err = lc.Listen(ctx, "tcp", adminAddr)
		if err != nil {
			ln.Close()
			return fmt.Errorf("upstream: listen admin: %w", err)
		}
	}
	return s.Serve(ctx, ln, adminLn)
}

type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (w *statusRecorder) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusRecorder) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusRecorder) status() int {
	if w.code == 0 {
		return http.StatusOK
	}
	return w.code
}
