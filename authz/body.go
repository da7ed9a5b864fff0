package authz

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/url"
	"strconv"
	"strings"
)

const maxJSONDepth = 64

var (
	fhirTypes = []string{"application/fhir+json", "application/json", "application/json+fhir",
		"application/fhir+xml", "application/xml", "application/xml+fhir"}
	patchTypes = []string{"application/json-patch+json", "application/fhir+json", "application/json",
		"application/json+fhir", "application/xml-patch+xml", "application/fhir+xml"}
	formTypes = []string{"application/x-www-form-urlencoded"}
)

// hasBody reports whether the request carries a body, from what the proxy
// sent and the framing headers (the proxy may not forward the body itself).
func hasBody(h map[string]string, body []byte) bool {
	if len(body) > 0 {
		return true
	}
	if _, ok := h["transfer-encoding"]; ok {
		return true
	}
	cl, ok := h["content-length"]
	return ok && strings.TrimSpace(cl) != "0"
}

// contentType checks the media type of a request with a body against the
// accepted list. A body with a non-FHIR type where FHIR is expected is
// refused: the upstream might parse it differently from phigate.
func (p *RequestParser) contentType(h map[string]string, accepted []string, optional bool) error {
	ct, ok := h["content-type"]
	if !ok {
		if optional && !hasBody(h, nil) {
			return nil
		}
		return unsupported("content type missing")
	}
	mt, _, _ := strings.Cut(ct, ";")
	mt = strings.ToLower(strings.TrimSpace(mt))
	for _, a := range accepted {
		if mt == a {
			return nil
		}
	}
	return unsupported("content type not accepted here")
}

func isJSONType(h map[string]string) bool {
	mt, _, _ := strings.Cut(h["content-type"], ";")
	mt = strings.ToLower(strings.TrimSpace(mt))
	return strings.Contains(mt, "json")
}

// checkSize refuses a body over the limit, and one whose declared length
// is: a proxy that did not forward the body still says how large it is.
func (p *RequestParser) checkSize(h map[string]string, body []byte) error {
	if len(body) > p.maxBody {
		return &Error{Code: CodeTooLarge, Detail: "body over request.max_body"}
	}
	if cl, ok := h["content-length"]; ok {
		n, err := strconv.ParseInt(strings.TrimSpace(cl), 10, 64)
		if err != nil || n < 0 {
			return ambiguous("content-length is not a length")
		}
		if n > int64(p.maxBody) {
			return &Error{Code: CodeTooLarge, Detail: "declared body length over request.max_body"}
		}
	}
	return nil
}

// formBody merges a POST _search form body into q. Parameters in both the
// query and the body count as repeats, so disagreeing patient parameters
// are refused just like repeats in the query.
func (p *RequestParser) formBody(h map[string]string, body []byte, q map[string][]string) error {
	if err := p.contentType(h, formTypes, true); err != nil {
		return err
	}
	if err := p.checkSize(h, body); err != nil {
		return err
	}
	_, err := parseQuery(string(body), q)
	return err
}

// resourceBody reads the resource of a create, update or patch: its type
// must match the path, its id the path's id, and every Patient it
// references is touched. When the proxy did not forward the body (or it is
// XML, which phigate does not parse), a write to patient data reads as all
// patients: its target patient cannot be known.
func (p *RequestParser) resourceBody(h map[string]string, body []byte, rt, id string, fr *FHIRRequest, isResource bool) error {
	if !isResource {
		return p.patchBody(h, body, rt, fr)
	}
	if err := p.contentType(h, fhirTypes, false); err != nil {
		return err
	}
	if err := p.checkSize(h, body); err != nil {
		return err
	}
	if len(body) == 0 || !isJSONType(h) {
		if rt != "Patient" && isPatientData(rt) {
			fr.AllPatients = true
		}
		return nil
	}
	sc := jsonScan{base: "/" + strings.TrimPrefix(p.base, "/")}
	if err := sc.scan(body); err != nil {
		return err
	}
	if sc.topType != rt {
		return ambiguous("body resourceType differs from the path")
	}
	if id != "" && sc.topID != id {
		return ambiguous("body id differs from the path")
	}
	fr.Patients = append(fr.Patients, sc.patients...)
	if sc.unresolved {
		fr.AllPatients = true
	}
	return nil
}

// jsonPatchOps are the RFC 6902 operations.
var jsonPatchOps = map[string]bool{"add": true, "remove": true, "replace": true, "move": true, "copy": true, "test": true}

// patchBody reads a PATCH body: a JSON Patch (an array of operations) or
// a FHIRPath Patch (a Parameters resource). A patch can write a patient
// reference anywhere, as an object or as a bare string, so every string
// value in it that reads as a Patient reference counts, and one that
// cannot be resolved (a conditional reference) reads as all patients. A
// JSON body that is neither form is refused; so is one whose media type
// names the other form. XML patches are not read: as for any body phigate
// cannot read, a patch of patient data then reads as all patients.
func (p *RequestParser) patchBody(h map[string]string, body []byte, rt string, fr *FHIRRequest) error {
	if err := p.contentType(h, patchTypes, false); err != nil {
		return err
	}
	if err := p.checkSize(h, body); err != nil {
		return err
	}
	if len(body) == 0 || !isJSONType(h) {
		if rt != "Patient" && isPatientData(rt) {
			fr.AllPatients = true
		}
		return nil
	}
	sc := jsonScan{base: "/" + strings.TrimPrefix(p.base, "/"), anyString: true, allowArray: true}
	if err := sc.scan(body); err != nil {
		return err
	}
	mt, _, _ := strings.Cut(h["content-type"], ";")
	mt = strings.ToLower(strings.TrimSpace(mt))
	switch {
	case sc.topArray && mt != "application/json-patch+json" && mt != "application/json":
		return ambiguous("JSON Patch body with a FHIR media type")
	case sc.topArray:
		var ops []map[string]json.RawMessage
		if err := json.Unmarshal(body, &ops); err != nil {
			return ambiguous("JSON Patch is not an array of operations")
		}
		for _, op := range ops {
			var name, path string
			if json.Unmarshal(op["op"], &name) != nil || json.Unmarshal(op["path"], &path) != nil || !jsonPatchOps[name] {
				return ambiguous("JSON Patch operation without a known op and a path")
			}
		}
	case mt == "application/json-patch+json":
		return ambiguous("JSON Patch body is not an array")
	case sc.topType != "Parameters":
		return ambiguous("FHIRPath Patch body is not a Parameters resource")
	}
	fr.Patients = append(fr.Patients, sc.patients...)
	if sc.unresolved {
		fr.AllPatients = true
	}
	return nil
}

// jsonScan walks a JSON document once: it refuses duplicate keys (compared
// case-insensitively, since parsers disagree on which duplicate wins and
// Go's own decoder folds case), bounds depth, and collects the Patient
// references ("reference" members) it finds.
type jsonScan struct {
	base           string
	dec            *json.Decoder
	topType, topID string
	patients       []string
	unresolved     bool // a conditional Patient reference (Patient?identifier=...)
	// anyString reads every string value as a possible reference, not
	// only "reference" members (patch bodies).
	anyString bool
	// allowArray accepts a top-level array (JSON Patch); topArray says
	// the document was one.
	allowArray, topArray bool
}

func (s *jsonScan) scan(b []byte) error {
	s.dec = json.NewDecoder(bytes.NewReader(b))
	s.dec.UseNumber()
	tok, err := s.dec.Token()
	switch {
	case err == nil && tok == json.Delim('{'):
		if err := s.object(1); err != nil {
			return err
		}
	case err == nil && tok == json.Delim('[') && s.allowArray:
		s.topArray = true
		for s.dec.More() {
			if err := s.value(1, ""); err != nil {
				return err
			}
		}
		if _, err := s.dec.Token(); err != nil {
			return ambiguous("malformed JSON body")
		}
	default:
		return ambiguous("body is not a JSON object")
	}
	if _, err := s.dec.Token(); !errors.Is(err, io.EOF) {
		return ambiguous("trailing data after the JSON body")
	}
	return nil
}

func (s *jsonScan) object(depth int) error {
	if depth > maxJSONDepth {
		return ambiguous("JSON nested too deeply")
	}
	seen := make(map[string]struct{}, 8)
	for s.dec.More() {
		tok, err := s.dec.Token()
		if err != nil {
			return ambiguous("malformed JSON body")
		}
		key, _ := tok.(string)
		lk := strings.ToLower(key)
		if _, dup := seen[lk]; dup {
			return ambiguous("duplicate key in JSON body")
		}
		seen[lk] = struct{}{}
		if err := s.value(depth, key); err != nil {
			return err
		}
	}
	if _, err := s.dec.Token(); err != nil {
		return ambiguous("malformed JSON body")
	}
	return nil
}

func (s *jsonScan) value(depth int, key string) error {
	tok, err := s.dec.Token()
	if err != nil {
		return ambiguous("malformed JSON body")
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			return s.object(depth + 1)
		case '[':
			if depth+1 > maxJSONDepth {
				return ambiguous("JSON nested too deeply")
			}
			for s.dec.More() {
				if err := s.value(depth+1, ""); err != nil {
					return err
				}
			}
			if _, err := s.dec.Token(); err != nil {
				return ambiguous("malformed JSON body")
			}
		}
	case string:
		switch {
		case depth == 1 && key == "resourceType":
			s.topType = t
		case depth == 1 && key == "id":
			s.topID = t
		case key == "reference" || s.anyString:
			s.reference(t)
		}
	}
	return nil
}

func (s *jsonScan) reference(r string) {
	if strings.HasPrefix(r, "Patient?") {
		s.unresolved = true
		return
	}
	// A bare string in a body is not a reference; only a typed one
	// (relative or absolute) names a patient here.
	if id, named, _ := patientRef(r, false, s.base); named && strings.Contains(r, "/") {
		s.patients = append(s.patients, id)
	} else if strings.HasPrefix(r, "Patient/") {
		s.unresolved = true
	}
}

// bundle interprets a batch or transaction: each entry is parsed as its
// own request (method, url, resource) with the same rules, and the bundle
// touches the union of its entries' patients. The policy sees every entry,
// so one allowed entry cannot carry another patient's data along.
func (p *RequestParser) bundle(q map[string][]string, h map[string]string, body []byte) (FHIRRequest, error) {
	fr := FHIRRequest{ResourceType: "Bundle"}
	if len(q) > 0 {
		return fr, ambiguous("query on a batch or transaction")
	}
	if err := p.contentType(h, fhirTypes, false); err != nil {
		return fr, err
	}
	if !isJSONType(h) {
		return fr, unsupported("only JSON bundles are read")
	}
	if len(body) == 0 {
		return fr, unsupported("bundle body not available")
	}
	if err := p.checkSize(h, body); err != nil {
		return fr, err
	}
	// One pass refuses duplicate keys anywhere; the typed reads below
	// then see exactly what any other parser would.
	if err := (&jsonScan{base: p.base}).scan(body); err != nil {
		return fr, err
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil {
		return fr, ambiguous("malformed bundle")
	}
	var rtype, btype string
	_ = json.Unmarshal(top["resourceType"], &rtype)
	_ = json.Unmarshal(top["type"], &btype)
	if rtype != "Bundle" {
		return fr, unsupported("POST to the base needs a Bundle")
	}
	switch btype {
	case "batch":
		fr.Interaction = InteractionBatch
	case "transaction":
		fr.Interaction = InteractionTransaction
	default:
		return fr, unsupported("bundle type is not batch or transaction")
	}
	var entries []map[string]json.RawMessage
	if raw, ok := top["entry"]; ok {
		if err := json.Unmarshal(raw, &entries); err != nil {
			return fr, ambiguous("malformed bundle entries")
		}
	}
	if len(entries) > p.maxEntries {
		return fr, overLimit("more bundle entries than request.max_entries")
	}
	fr.Entries = make([]FHIRRequest, 0, len(entries))
	jsonHeaders := map[string]string{"content-type": "application/fhir+json"}
	for _, e := range entries {
		var r map[string]json.RawMessage
		if err := json.Unmarshal(e["request"], &r); err != nil || r == nil {
			return fr, ambiguous("bundle entry without request")
		}
		var method, target string
		if json.Unmarshal(r["method"], &method) != nil || json.Unmarshal(r["url"], &target) != nil {
			return fr, ambiguous("bundle entry request method or url")
		}
		eh := jsonHeaders
		if raw, ok := r["ifNoneExist"]; ok {
			var cond string
			if json.Unmarshal(raw, &cond) != nil {
				return fr, ambiguous("bundle entry ifNoneExist")
			}
			// The entry's conditional create criteria, read as the
			// If-None-Exist header of a create on its own.
			eh = map[string]string{"content-type": "application/fhir+json", headerIfNoneExist: cond}
		}
		path, err := p.entryTarget(target)
		if err != nil {
			return fr, err
		}
		cp, eq, err := p.parseURL(path)
		if err != nil {
			return fr, err
		}
		var resource []byte
		if raw, ok := e["resource"]; ok && string(raw) != "null" {
			resource = raw
		}
		sub, err := p.interpret(method, cp, eq, eh, resource, true)
		if err != nil {
			return fr, err
		}
		sub.Method = method
		fr.Patients = append(fr.Patients, sub.Patients...)
		fr.AllPatients = fr.AllPatients || sub.AllPatients
		fr.IncludedTypes = append(fr.IncludedTypes, sub.IncludedTypes...)
		fr.Entries = append(fr.Entries, sub)
	}
	return fr, nil
}

// entryTarget turns an entry's request.url (relative to the base, or
// absolute on it) into a path to parse.
func (p *RequestParser) entryTarget(target string) (string, error) {
	if target == "" || strings.HasPrefix(target, "/") {
		return "", ambiguous("bundle entry url")
	}
	if strings.Contains(target, "://") {
		u, err := url.Parse(target)
		if err != nil || u.Fragment != "" || u.Opaque != "" {
			return "", ambiguous("bundle entry url")
		}
		if !strings.HasPrefix(u.EscapedPath(), p.base+"/") {
			return "", unsupported("bundle entry url outside the FHIR base")
		}
		t := u.EscapedPath()
		if u.RawQuery != "" {
			t += "?" + u.RawQuery
		}
		return t, nil
	}
	return p.base + "/" + target, nil
}
