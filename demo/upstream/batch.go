package upstream

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
)

// batch processes a batch or transaction Bundle POSTed to the base. Each
// entry runs as an internal request through the same handlers, so an entry
// behaves exactly like the request it describes.
//
// A transaction is atomic: it holds the write lock throughout, runs entries
// in the FHIR order (DELETE, POST, PUT, GET), rewrites urn:uuid references
// to the ids assigned to created resources, and undoes every write when any
// entry fails, answering with that entry's error.
func (s *Server) batch(w http.ResponseWriter, r *http.Request) string {
	b, ferr := s.readBody(r)
	if ferr == nil && b["resourceType"] != "Bundle" {
		ferr = errInvalid("only a Bundle can be posted to the base")
	}
	if ferr != nil {
		s.sendError(w, r, ferr)
		return "batch"
	}
	kind, _ := b["type"].(string)
	if kind != "batch" && kind != "transaction" {
		s.sendError(w, r, errInvalid("Bundle.type must be batch or transaction"))
		return "batch"
	}
	rawEntries, _ := b["entry"].([]any)
	entries := make([]map[string]any, len(rawEntries))
	for i, e := range rawEntries {
		m, ok := e.(map[string]any)
		req, _ := m["request"].(map[string]any)
		if !ok || req == nil {
			s.sendError(w, r, errInvalid("Bundle.entry.request is required"))
			return kind
		}
		entries[i] = m
	}
	base := s.base(r)
	results := make([]any, len(entries))
	if kind == "batch" {
		for i, e := range entries {
			res, _ := s.runEntry(r, base, e, "")
			results[i] = res
		}
		out := s.newBundle("batch-response")
		out["entry"] = results
		s.sendResource(w, r, http.StatusOK, out)
		return kind
	}

	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	s.data.mu.Lock()
	snap := s.data.snapshot()
	// Pre-assign ids to created resources and resolve urn:uuid references.
	assigned := make([]string, len(entries))
	urns := map[string]string{}
	for i, e := range entries {
		req := e["request"].(map[string]any)
		if strings.ToUpper(str(req["method"])) != http.MethodPost {
			continue
		}
		assigned[i] = s.data.newID()
		if full := str(e["fullUrl"]); strings.HasPrefix(full, "urn:uuid:") {
			typ := strings.Split(strings.TrimPrefix(str(req["url"]), "/"), "?")[0]
			urns[full] = typ + "/" + assigned[i]
		}
	}
	s.data.mu.Unlock()
	if len(urns) > 0 {
		for _, e := range entries {
			if res, ok := e["resource"].(map[string]any); ok {
				rewriteRefs(res, urns)
			}
		}
	}
	order := map[string]int{http.MethodDelete: 0, http.MethodPost: 1, http.MethodPut: 2, http.MethodGet: 3}
	ctx := context.WithValue(r.Context(), inTransaction, true)
	tr := r.WithContext(ctx)
	for pass := 0; pass < 4; pass++ {
		for i, e := range entries {
			m := strings.ToUpper(str(e["request"].(map[string]any)["method"]))
			p, known := order[m]
			if !known {
				p = 0 // unknown methods fail first
			}
			if p != pass {
				continue
			}
			res, failed := s.runEntry(tr, base, e, assigned[i])
			if failed != nil {
				s.data.mu.Lock()
				s.data.restore(snap)
				s.data.mu.Unlock()
				s.sendError(w, r, failed)
				return kind
			}
			results[i] = res
		}
	}
	out := s.newBundle("transaction-response")
	out["entry"] = results
	s.sendResource(w, r, http.StatusOK, out)
	return kind
}

func str(v any) string { s, _ := v.(string); return s }

func rewriteRefs(v any, urns map[string]string) {
	switch x := v.(type) {
	case map[string]any:
		if ref, ok := x["reference"].(string); ok {
			if to, ok := urns[ref]; ok {
				x["reference"] = to
			}
		}
		for _, c := range x {
			rewriteRefs(c, urns)
		}
	case []any:
		for _, c := range x {
			rewriteRefs(c, urns)
		}
	}
}

// runEntry executes one entry as an internal request and returns the
// response entry, and for a failed entry the error a transaction reports.
func (s *Server) runEntry(parent *http.Request, base string, e map[string]any, id string) (map[string]any, *fhirError) {
	req := e["request"].(map[string]any)
	method := strings.ToUpper(str(req["method"]))
	target := str(req["url"])
	// Entry URLs are relative to the base; absolute ones must point at it.
	if strings.Contains(target, "://") {
		rel, ok := strings.CutPrefix(target, base)
		if !ok {
			return failedEntry(errInvalid("entry URL is not on this server"))
		}
		target = rel
	}
	target = s.cfg.BasePath + "/" + strings.TrimPrefix(target, "/")
	u, err := url.ParseRequestURI(target)
	if err != nil || str(req["url"]) == "" {
		return failedEntry(errInvalid("invalid entry URL"))
	}
	if strings.Trim(strings.TrimPrefix(u.Path, s.cfg.BasePath), "/") == "" {
		// A Bundle inside a Bundle: refused, it would also deadlock a transaction.
		return failedEntry(errInvalid("nested batch or transaction"))
	}
	switch method {
	case http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete:
	default:
		return failedEntry(errMethod())
	}
	var body []byte
	if res, ok := e["resource"].(map[string]any); ok {
		body, _ = json.Marshal(res)
	}
	ctx := parent.Context()
	if id != "" {
		ctx = withAssignedID(ctx, id)
	}
	sub, err := http.NewRequestWithContext(ctx, method, u.String(), bytes.NewReader(body))
	if err != nil {
		return failedEntry(errInvalid("invalid entry"))
	}
	sub.Host = parent.Host
	sub.TLS = parent.TLS
	sub.Header.Set("Accept", "application/fhir+json")
	if f := parent.Header.Get("X-Forwarded-Proto"); f != "" {
		sub.Header.Set("X-Forwarded-Proto", f)
	}
	if len(body) > 0 {
		sub.Header.Set("Content-Type", "application/fhir+json")
	}
	if im := str(req["ifMatch"]); im != "" {
		sub.Header.Set("If-Match", im)
	}
	rec := httptest.NewRecorder()
	s.serveFHIR(rec, sub, strings.TrimPrefix(u.Path, s.cfg.BasePath))

	resp := map[string]any{"status": strconv.Itoa(rec.Code) + " " + http.StatusText(rec.Code)}
	for h, k := range map[string]string{"Location": "location", "ETag": "etag", "Last-Modified": "lastModified"} {
		if v := rec.Header().Get(h); v != "" {
			resp[k] = v
		}
	}
	out := map[string]any{"response": resp}
	var parsed Resource
	if rec.Body.Len() > 0 {
		_ = json.Unmarshal(rec.Body.Bytes(), &parsed)
	}
	if rec.Code >= 400 {
		if parsed != nil {
			resp["outcome"] = parsed
		}
		diag := "entry failed"
		code := CodeInvalid
		if parsed != nil {
			if iss, ok := parsed["issue"].([]any); ok && len(iss) > 0 {
				m, _ := iss[0].(map[string]any)
				diag, code = str(m["diagnostics"]), Code(str(m["code"]))
			}
		}
		return out, &fhirError{rec.Code, code, diag}
	}
	if parsed != nil {
		out["resource"] = parsed
		if t, id := str(parsed["resourceType"]), str(parsed["id"]); t != "" && id != "" && t != "Bundle" {
			out["fullUrl"] = base + "/" + t + "/" + id
		}
	}
	return out, nil
}

func failedEntry(e *fhirError) (map[string]any, *fhirError) {
	return map[string]any{"response": map[string]any{
		"status":  strconv.Itoa(e.status) + " " + http.StatusText(e.status),
		"outcome": operationOutcome(e),
	}}, e
}
