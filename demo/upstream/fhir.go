package upstream

import (
	"context"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

type ctxKey int

// inTransaction marks sub-requests of a transaction, which already hold
// writeMu.
const inTransaction ctxKey = 1

var bundleSeq atomic.Uint64

func (s *Server) lockWrites(r *http.Request) func() {
	if r.Context().Value(inTransaction) != nil {
		return func() {}
	}
	s.writeMu.Lock()
	return s.writeMu.Unlock
}

// serveFHIR dispatches a request under the base path; rest starts with "/"
// or is empty. It returns the interaction name for logging.
func (s *Server) serveFHIR(w http.ResponseWriter, r *http.Request, rest string) string {
	if _, err := url.ParseQuery(r.URL.RawQuery); err != nil {
		s.sendError(w, r, errInvalid("malformed query string"))
		return "invalid"
	}
	trimmed := strings.Trim(rest, "/")
	var seg []string
	if trimmed != "" {
		seg = strings.Split(trimmed, "/")
	}
	for _, p := range seg {
		if p == "" {
			s.sendError(w, r, errInvalid("malformed path"))
			return "invalid"
		}
	}
	m := r.Method
	switch {
	case len(seg) == 0:
		if m == http.MethodPost {
			return s.batch(w, r)
		}
		s.sendError(w, r, &fhirError{http.StatusBadRequest, CodeNotSupported, "system-level search is not supported"})
		return "search-system"
	case len(seg) == 1 && seg[0] == "metadata":
		if m != http.MethodGet {
			s.sendError(w, r, errMethod())
			return "capabilities"
		}
		s.sendResource(w, r, http.StatusOK, s.capabilities(r))
		return "capabilities"
	case len(seg) == 1 && seg[0] == "_history":
		s.history(w, r, "", "")
		return "history-system"
	}
	typ := seg[0]
	if !isKnownType(typ) {
		s.sendError(w, r, errUnknownType())
		return "unknown-type"
	}
	switch {
	case len(seg) == 1 && m == http.MethodGet:
		s.search(w, r, typ, "", r.URL.Query())
		return "search-type"
	case len(seg) == 1 && m == http.MethodPost:
		s.create(w, r, typ)
		return "create"
	case len(seg) == 2 && seg[1] == "_search" && m == http.MethodPost:
		q, ferr := s.formQuery(r)
		if ferr != nil {
			s.sendError(w, r, ferr)
		} else {
			s.search(w, r, typ, "", q)
		}
		return "search-type"
	case len(seg) == 2 && seg[1] == "_history" && m == http.MethodGet:
		s.history(w, r, typ, "")
		return "history-type"
	case len(seg) == 2 && m == http.MethodGet:
		s.read(w, r, typ, seg[1], 0)
		return "read"
	case len(seg) == 2 && m == http.MethodPut:
		s.update(w, r, typ, seg[1])
		return "update"
	case len(seg) == 2 && m == http.MethodDelete:
		s.remove(w, r, typ, seg[1])
		return "delete"
	case len(seg) == 3 && seg[2] == "_history" && m == http.MethodGet:
		s.history(w, r, typ, seg[1])
		return "history-instance"
	case len(seg) == 4 && seg[2] == "_history" && m == http.MethodGet:
		vid, err := strconv.Atoi(seg[3])
		if err != nil || vid < 1 {
			s.sendError(w, r, errNotFound())
		} else {
			s.read(w, r, typ, seg[1], vid)
		}
		return "vread"
	case len(seg) == 3 && seg[2] == "$everything" && typ == "Patient" && (m == http.MethodGet || m == http.MethodPost):
		s.everything(w, r, seg[1])
		return "operation"
	case len(seg) == 3 && typ == "Patient" && m == http.MethodGet && isKnownType(seg[2]):
		if _, ok := compartmentParams[seg[2]]; !ok || seg[2] == "Patient" {
			s.sendError(w, r, &fhirError{http.StatusBadRequest, CodeNotSupported, "resource type is not in the Patient compartment"})
			return "search-compartment"
		}
		s.search(w, r, seg[2], seg[1], r.URL.Query())
		return "search-compartment"
	case len(seg) >= 2 && (m == http.MethodGet || m == http.MethodPost || m == http.MethodPut || m == http.MethodDelete):
		s.sendError(w, r, errNotFound())
		return "invalid"
	default:
		s.sendError(w, r, errMethod())
		return "invalid"
	}
}

// formQuery merges a POST _search form body with the URL query.
func (s *Server) formQuery(r *http.Request) (url.Values, *fhirError) {
	r.Body = http.MaxBytesReader(nil, r.Body, s.cfg.MaxBodyBytes)
	if err := r.ParseForm(); err != nil {
		return nil, errInvalid("malformed form body")
	}
	return r.Form, nil
}

func (s *Server) now() time.Time { return s.cfg.Now().UTC() }

func (s *Server) strict(r *http.Request) bool {
	if s.cfg.Strict {
		return true
	}
	for _, v := range r.Header.Values("Prefer") {
		for _, p := range strings.Split(v, ",") {
			if strings.TrimSpace(p) == "handling=strict" {
				return true
			}
		}
	}
	return false
}

func setVersionHeaders(w http.ResponseWriter, v version) {
	w.Header().Set("ETag", etag(v.vid))
	w.Header().Set("Last-Modified", v.at.UTC().Format(http.TimeFormat))
}

// ---- read / vread ------------------------------------------------------

func (s *Server) read(w http.ResponseWriter, r *http.Request, typ, id string, vid int) {
	s.data.mu.RLock()
	e := s.data.get(typ, id)
	var v version
	if e != nil {
		if vid == 0 {
			v = e.current()
		} else if vid <= len(e.versions) {
			v = e.versions[vid-1]
		} else {
			e = nil
		}
	}
	s.data.mu.RUnlock()
	switch {
	case e == nil:
		s.sendError(w, r, errNotFound())
	case v.res == nil:
		setVersionHeaders(w, v)
		s.sendError(w, r, errGone())
	default:
		setVersionHeaders(w, v)
		s.sendResource(w, r, http.StatusOK, v.res)
	}
}

// ---- search ------------------------------------------------------------

func (s *Server) newBundle(kind string) Resource {
	return Resource{
		"resourceType": "Bundle",
		"id":           "b" + strconv.FormatUint(bundleSeq.Add(1), 10),
		"meta":         map[string]any{"lastUpdated": s.now().Format(time.RFC3339Nano)},
		"type":         kind,
	}
}

func entryFor(base string, res Resource, mode string) map[string]any {
	e := map[string]any{
		"fullUrl":  base + "/" + res["resourceType"].(string) + "/" + res["id"].(string),
		"resource": res,
	}
	if mode != "" {
		e["search"] = map[string]any{"mode": mode}
	}
	return e
}

// search runs a type search, or a compartment search when patientID is set.
func (s *Server) search(w http.ResponseWriter, r *http.Request, typ, patientID string, q url.Values) {
	ps, ferr := s.parseSearch(typ, q, s.strict(r))
	if ferr != nil {
		s.sendError(w, r, ferr)
		return
	}
	s.data.mu.RLock()
	var matched []Resource
	for _, e := range s.data.live(typ) {
		res := e.current().res
		if patientID != "" && !inCompartment(res, typ, patientID) {
			continue
		}
		if ps.matches(res) {
			matched = append(matched, res)
		}
	}
	page := matched[min(ps.offset, len(matched)):min(ps.offset+ps.count, len(matched))]
	included, ferr := s.includes(ps, page)
	s.data.mu.RUnlock()
	if ferr != nil {
		s.sendError(w, r, ferr)
		return
	}

	base := s.base(r)
	path := "/" + typ
	if patientID != "" {
		path = "/Patient/" + patientID + "/" + typ
	}
	link := func(offset int) string {
		v := url.Values{}
		for k, vals := range ps.used {
			v[k] = vals
		}
		v.Set("_count", strconv.Itoa(ps.count))
		if offset > 0 {
			v.Set("_offset", strconv.Itoa(offset))
		}
		return base + path + "?" + v.Encode()
	}
	b := s.newBundle("searchset")
	b["total"] = len(matched)
	links := []any{map[string]any{"relation": "self", "url": link(ps.offset)}}
	if ps.count > 0 && ps.offset+ps.count < len(matched) {
		links = append(links, map[string]any{"relation": "next", "url": link(ps.offset + ps.count)})
	}
	if ps.offset > 0 {
		links = append(links, map[string]any{"relation": "previous", "url": link(max(0, ps.offset-ps.count))})
	}
	b["link"] = links
	entries := make([]any, 0, len(page)+len(included))
	for _, res := range page {
		entries = append(entries, entryFor(base, res, "match"))
	}
	for _, res := range included {
		entries = append(entries, entryFor(base, res, "include"))
	}
	if len(ps.ignored) > 0 {
		// Tell the client what was ignored, as a searchset outcome entry.
		sort.Strings(ps.ignored)
		entries = append(entries, map[string]any{
			"resource": Resource{"resourceType": "OperationOutcome", "issue": []any{map[string]any{
				"severity": "warning", "code": "not-supported",
				"diagnostics": "ignored search parameters: " + strings.Join(ps.ignored, ", "),
			}}},
			"search": map[string]any{"mode": "outcome"},
		})
	}
	if len(entries) > 0 {
		b["entry"] = entries
	}
	s.sendResource(w, r, http.StatusOK, b)
}

// includes resolves _include and _revinclude for the matched page. Caller
// holds data.mu shared.
func (s *Server) includes(ps *parsedSearch, page []Resource) ([]Resource, *fhirError) {
	seen := map[string]bool{}
	for _, res := range page {
		seen[res["resourceType"].(string)+"/"+res["id"].(string)] = true
	}
	var out []Resource
	add := func(res Resource) {
		key := res["resourceType"].(string) + "/" + res["id"].(string)
		if !seen[key] {
			seen[key] = true
			out = append(out, res)
		}
	}
	for _, inc := range ps.include {
		src, p, target, ferr := parseInclude(inc)
		if ferr != nil {
			return nil, ferr
		}
		if src != ps.typ && src != "*" {
			continue // FHIR: an _include for another source type is ignored
		}
		for _, res := range page {
			var paths []string
			if src == "*" {
				for _, sp := range params[ps.typ] {
					if sp.kind == kindReference {
						paths = append(paths, sp.paths...)
					}
				}
			} else {
				sp, _ := lookupParam(src, p)
				paths = sp.paths
				if target == "" {
					target = sp.target
				}
			}
			for _, ref := range references(res, paths) {
				t, id, _ := strings.Cut(ref, "/")
				if target != "" && t != target {
					continue
				}
				if e := s.data.get(t, id); e != nil && e.current().res != nil {
					add(e.current().res)
				}
			}
		}
	}
	pageSet := make(map[string]bool, len(page))
	for _, res := range page {
		pageSet[res["resourceType"].(string)+"/"+res["id"].(string)] = true
	}
	for _, inc := range ps.revinclude {
		src, p, target, ferr := parseInclude(inc)
		if ferr != nil || src == "*" {
			return nil, errInvalid("invalid _revinclude")
		}
		sp, _ := lookupParam(src, p)
		if target == "" {
			target = sp.target
		}
		if target != "" && target != ps.typ {
			continue
		}
		for _, e := range s.data.live(src) {
			res := e.current().res
			for _, ref := range references(res, sp.paths) {
				if pageSet[ref] {
					add(res)
					break
				}
			}
		}
	}
	return out, nil
}

// parseInclude parses "Source:param[:Target]" (or "*").
func parseInclude(v string) (src, param, target string, ferr *fhirError) {
	if v == "*" {
		return "*", "", "", nil
	}
	parts := strings.Split(v, ":")
	if len(parts) < 2 || len(parts) > 3 || !isKnownType(parts[0]) {
		return "", "", "", errInvalid("invalid _include or _revinclude")
	}
	sp, ok := lookupParam(parts[0], parts[1])
	if !ok || sp.kind != kindReference {
		if parts[1] == "*" {
			return parts[0], "*", "", errInvalid("wildcard include parameters are not supported")
		}
		return "", "", "", errInvalid("invalid _include or _revinclude")
	}
	if len(parts) == 3 {
		if !isKnownType(parts[2]) {
			return "", "", "", errInvalid("invalid _include or _revinclude")
		}
		target = parts[2]
	}
	return parts[0], parts[1], target, nil
}

// ---- $everything -------------------------------------------------------

func (s *Server) everything(w http.ResponseWriter, r *http.Request, id string) {
	var types map[string]bool
	if t := r.URL.Query().Get("_type"); t != "" {
		types = map[string]bool{}
		for _, x := range strings.Split(t, ",") {
			types[x] = true
		}
	}
	s.data.mu.RLock()
	e := s.data.get("Patient", id)
	if e == nil || e.current().res == nil {
		s.data.mu.RUnlock()
		if e != nil {
			s.sendError(w, r, errGone())
		} else {
			s.sendError(w, r, errNotFound())
		}
		return
	}
	patient := e.current().res
	seen := map[string]bool{}
	var out []Resource
	add := func(res Resource) {
		key := res["resourceType"].(string) + "/" + res["id"].(string)
		if !seen[key] {
			seen[key] = true
			out = append(out, res)
		}
	}
	add(patient)
	var compartment []Resource
	ctypes := make([]string, 0, len(compartmentParams))
	for t := range compartmentParams {
		ctypes = append(ctypes, t)
	}
	sort.Strings(ctypes)
	for _, t := range ctypes {
		if t == "Patient" || (types != nil && !types[t]) {
			continue
		}
		for _, ce := range s.data.live(t) {
			if res := ce.current().res; inCompartment(res, t, id) {
				add(res)
				compartment = append(compartment, res)
			}
		}
	}
	// Referenced practitioners and organizations, as servers commonly add.
	for _, res := range append([]Resource{patient}, compartment...) {
		for _, ref := range allReferences(res) {
			t, rid, _ := strings.Cut(ref, "/")
			if t != "Practitioner" && t != "Organization" {
				continue
			}
			if types != nil && !types[t] {
				continue
			}
			if re := s.data.get(t, rid); re != nil && re.current().res != nil {
				add(re.current().res)
			}
		}
	}
	s.data.mu.RUnlock()
	base := s.base(r)
	b := s.newBundle("searchset")
	b["total"] = len(out)
	b["link"] = []any{map[string]any{"relation": "self", "url": base + "/Patient/" + id + "/$everything"}}
	entries := make([]any, 0, len(out))
	for _, res := range out {
		entries = append(entries, entryFor(base, res, "match"))
	}
	b["entry"] = entries
	s.sendResource(w, r, http.StatusOK, b)
}

// allReferences finds every relative "Type/id" reference anywhere in v.
func allReferences(v any) []string {
	var out []string
	var walk func(any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			if ref, ok := x["reference"].(string); ok && strings.Count(ref, "/") == 1 {
				out = append(out, ref)
			}
			for _, c := range x {
				walk(c)
			}
		case []any:
			for _, c := range x {
				walk(c)
			}
		}
	}
	walk(v)
	return out
}

// ---- history -----------------------------------------------------------

func (s *Server) history(w http.ResponseWriter, r *http.Request, typ, id string) {
	q := r.URL.Query()
	count := s.cfg.DefaultCount
	if c := q.Get("_count"); c != "" {
		n, err := strconv.Atoi(c)
		if err != nil || n < 0 {
			s.sendError(w, r, errInvalid("invalid _count"))
			return
		}
		count = min(n, s.cfg.MaxCount)
	}
	offset := 0
	if o := q.Get("_offset"); o != "" {
		n, err := strconv.Atoi(o)
		if err != nil || n < 0 {
			s.sendError(w, r, errInvalid("invalid _offset"))
			return
		}
		offset = n
	}
	var since time.Time
	if v := q.Get("_since"); v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			s.sendError(w, r, errInvalid("invalid _since"))
			return
		}
		since = t
	}
	type item struct {
		e *entry
		v version
	}
	var items []item
	s.data.mu.RLock()
	if id != "" {
		e := s.data.get(typ, id)
		if e == nil {
			s.data.mu.RUnlock()
			s.sendError(w, r, errNotFound())
			return
		}
		for i := len(e.versions) - 1; i >= 0; i-- {
			items = append(items, item{e, e.versions[i]})
		}
	} else {
		for i := len(s.data.history) - 1; i >= 0; i-- {
			h := s.data.history[i]
			if typ == "" || h.e.typ == typ {
				items = append(items, item{h.e, h.e.versions[h.idx]})
			}
		}
	}
	s.data.mu.RUnlock()
	if !since.IsZero() {
		kept := items[:0]
		for _, it := range items {
			if !it.v.at.Before(since) {
				kept = append(kept, it)
			}
		}
		items = kept
	}
	total := len(items)
	items = items[min(offset, total):min(offset+count, total)]

	base := s.base(r)
	b := s.newBundle("history")
	b["total"] = total
	path := base
	if typ != "" {
		path += "/" + typ
	}
	if id != "" {
		path += "/" + id
	}
	path += "/_history"
	links := []any{map[string]any{"relation": "self", "url": path + "?_count=" + strconv.Itoa(count) + offsetParam(offset)}}
	if count > 0 && offset+count < total {
		links = append(links, map[string]any{"relation": "next", "url": path + "?_count=" + strconv.Itoa(count) + offsetParam(offset+count)})
	}
	b["link"] = links
	entries := make([]any, 0, len(items))
	for _, it := range items {
		method := it.v.method
		status := "200 OK"
		switch {
		case method == "" || method == http.MethodPost:
			method, status = http.MethodPost, "201 Created"
		case method == http.MethodDelete:
			status = "204 No Content"
		}
		url := it.e.typ + "/" + it.e.id
		if method == http.MethodPost && it.v.vid == 1 {
			url = it.e.typ
		}
		ent := map[string]any{
			"fullUrl": base + "/" + it.e.typ + "/" + it.e.id,
			"request": map[string]any{"method": method, "url": url},
			"response": map[string]any{
				"status":       status,
				"etag":         etag(it.v.vid),
				"lastModified": it.v.at.UTC().Format(time.RFC3339Nano),
			},
		}
		if it.v.res != nil {
			ent["resource"] = it.v.res
		}
		entries = append(entries, ent)
	}
	if len(entries) > 0 {
		b["entry"] = entries
	}
	s.sendResource(w, r, http.StatusOK, b)
}

func offsetParam(o int) string {
	if o == 0 {
		return ""
	}
	return "&_offset=" + strconv.Itoa(o)
}

// ---- create / update / delete -----------------------------------------

func (s *Server) create(w http.ResponseWriter, r *http.Request, typ string) {
	res, ferr := s.readBody(r)
	if ferr == nil && res["resourceType"] != typ {
		ferr = errInvalid("resourceType does not match the URL")
	}
	if ferr != nil {
		s.sendError(w, r, ferr)
		return
	}
	unlock := s.lockWrites(r)
	s.data.mu.Lock()
	id := s.data.newID()
	if forced, ok := r.Context().Value(assignedID{}).(string); ok && forced != "" {
		id = forced
	}
	v, _ := s.data.put(typ, id, res, http.MethodPost, s.now())
	s.data.mu.Unlock()
	unlock()
	s.written(w, r, http.StatusCreated, typ, id, v)
}

func (s *Server) update(w http.ResponseWriter, r *http.Request, typ, id string) {
	res, ferr := s.readBody(r)
	if ferr == nil && res["resourceType"] != typ {
		ferr = errInvalid("resourceType does not match the URL")
	}
	if ferr == nil && res["id"] != id {
		ferr = errInvalid("resource id does not match the URL")
	}
	if ferr != nil {
		s.sendError(w, r, ferr)
		return
	}
	unlock := s.lockWrites(r)
	defer unlock()
	s.data.mu.Lock()
	if im := r.Header.Get("If-Match"); im != "" {
		e := s.data.get(typ, id)
		if e == nil || etag(e.current().vid) != im {
			s.data.mu.Unlock()
			s.sendError(w, r, &fhirError{http.StatusPreconditionFailed, CodeConflict, "version conflict"})
			return
		}
	}
	v, created := s.data.put(typ, id, res, http.MethodPut, s.now())
	s.data.mu.Unlock()
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	s.written(w, r, status, typ, id, v)
}

func (s *Server) written(w http.ResponseWriter, r *http.Request, status int, typ, id string, v version) {
	w.Header().Set("Location", s.base(r)+"/"+typ+"/"+id+"/_history/"+strconv.Itoa(v.vid))
	setVersionHeaders(w, v)
	if strings.Contains(r.Header.Get("Prefer"), "return=minimal") {
		w.WriteHeader(status)
		return
	}
	s.sendResource(w, r, status, v.res)
}

func (s *Server) remove(w http.ResponseWriter, r *http.Request, typ, id string) {
	unlock := s.lockWrites(r)
	s.data.mu.Lock()
	v, ok := s.data.remove(typ, id, s.now())
	s.data.mu.Unlock()
	unlock()
	if !ok {
		s.sendError(w, r, errNotFound())
		return
	}
	w.Header().Set("ETag", etag(v.vid))
	w.WriteHeader(http.StatusNoContent)
}

// assignedID carries a pre-assigned id for a transaction's create.
type assignedID struct{}

func withAssignedID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, assignedID{}, id)
}
