package authz

import (
	"net/url"
	"strings"
)

func hasControl(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f {
			return true
		}
	}
	return false
}

// canonPath is a path split into decoded segments, with its canonical text.
type canonPath struct {
	segs      []string
	canonical string
}

// parseURL canonicalizes the raw request target (path and query).
func (p *RequestParser) parseURL(raw string) (canonPath, map[string][]string, error) {
	for i := 0; i < len(raw); i++ {
		switch c := raw[i]; {
		case c <= 0x20 || c >= 0x7f:
			return canonPath{}, nil, ambiguous("control, space or non-ASCII byte in the request target")
		case c == '#':
			return canonPath{}, nil, ambiguous("fragment in the request target")
		case c == '\\':
			return canonPath{}, nil, ambiguous("backslash in the request target")
		}
	}
	rawPath, rawQuery, _ := strings.Cut(raw, "?")
	if rawPath == p.base+"/" {
		rawPath = p.base
	}
	segs, err := splitPath(rawPath)
	if err != nil {
		return canonPath{}, nil, err
	}
	q, err := parseQuery(rawQuery, nil)
	if err != nil {
		return canonPath{}, nil, err
	}
	return canonPath{segs: segs, canonical: joinPath(rawPath, segs)}, q, nil
}

// splitPath splits an absolute path into segments, refusing every form that
// path normalizers disagree on: empty segments (// and trailing /), dot
// segments, ";" parameters, and encoded "/", ".", "\", "%" or control bytes.
func splitPath(raw string) ([]string, error) {
	if !strings.HasPrefix(raw, "/") {
		return nil, ambiguous("path is not absolute")
	}
	if raw == "/" {
		return nil, nil
	}
	n := strings.Count(raw, "/")
	if n > maxPathSegments {
		return nil, ambiguous("too many path segments")
	}
	segs := make([]string, 0, n)
	rest := raw[1:]
	for {
		seg, tail, more := strings.Cut(rest, "/")
		switch {
		case seg == "":
			return nil, ambiguous("empty path segment")
		case seg == "." || seg == "..":
			return nil, ambiguous("dot segment")
		case strings.IndexByte(seg, ';') >= 0:
			return nil, ambiguous("path parameter")
		case strings.IndexByte(seg, '%') >= 0:
			d, err := decodeSegment(seg)
			if err != nil {
				return nil, err
			}
			seg = d
		}
		segs = append(segs, seg)
		if !more {
			return segs, nil
		}
		rest = tail
	}
}

func decodeSegment(seg string) (string, error) {
	var b strings.Builder
	b.Grow(len(seg))
	for i := 0; i < len(seg); i++ {
		c := seg[i]
		if c != '%' {
			b.WriteByte(c)
			continue
		}
		if i+2 >= len(seg) || !isHex(seg[i+1]) || !isHex(seg[i+2]) {
			return "", ambiguous("bad percent-encoding in path")
		}
		d := unhex(seg[i+1])<<4 | unhex(seg[i+2])
		switch {
		case d == '/' || d == '.' || d == '\\' || d == '%' || d == ';':
			return "", ambiguous("encoded delimiter in path")
		case d < 0x20 || d == 0x7f:
			return "", ambiguous("encoded control byte in path")
		}
		b.WriteByte(d)
		i += 2
	}
	return b.String(), nil
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	default:
		return c - 'a' + 10
	}
}

// joinPath returns raw itself when no segment needed decoding (no
// allocation), else the segments re-escaped one canonical way.
func joinPath(raw string, segs []string) string {
	if strings.IndexByte(raw, '%') < 0 {
		return raw
	}
	var b strings.Builder
	for _, s := range segs {
		b.WriteByte('/')
		b.WriteString(url.PathEscape(s))
	}
	return b.String()
}

// parseQuery parses an application/x-www-form-urlencoded string into q
// (allocated when nil). Separators other than "&", access tokens and
// method overrides in the query are refused.
func parseQuery(raw string, q map[string][]string) (map[string][]string, error) {
	if q == nil {
		q = map[string][]string{}
	}
	if raw == "" {
		return q, nil
	}
	if strings.IndexByte(raw, ';') >= 0 {
		return nil, ambiguous(`";" in the query`)
	}
	n := 0
	for raw != "" {
		var kv string
		kv, raw, _ = strings.Cut(raw, "&")
		if kv == "" {
			continue
		}
		if n++; n > maxQueryParams {
			return nil, ambiguous("too many query parameters")
		}
		k, v, _ := strings.Cut(kv, "=")
		k, err1 := url.QueryUnescape(k)
		v, err2 := url.QueryUnescape(v)
		if err1 != nil || err2 != nil {
			return nil, ambiguous("bad percent-encoding in query")
		}
		if k == "" || hasControl(k) || hasControl(v) {
			return nil, ambiguous("empty or control bytes in query")
		}
		switch strings.ToLower(k) {
		case "access_token", "_method":
			return nil, ambiguous("credential or method override in query")
		}
		q[k] = append(q[k], v)
	}
	return q, nil
}
