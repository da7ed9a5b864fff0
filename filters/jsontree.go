package filters

import (
	"strconv"
	"unicode/utf8"
)

// The FHIR JSON path avoids encoding/json on purpose. Unmarshalling into
// map[string]any allocates a string for every key and value, boxes every
// number as float64 (which silently rounds FHIR decimals such as 1.10 or
// large integers) and re-marshals with sorted keys, so nothing of the
// original survives byte for byte. Instead the body is parsed once into a
// tree whose nodes remember the exact span they came from. Writing the tree
// back copies every untouched span verbatim and only re-encodes the nodes a
// directive changed: a Bundle where one element per resource is redacted is
// mostly memcpy.

type kind uint8

const (
	kNull kind = iota
	kBool
	kNum
	kStr
	kObj
	kArr
)

// node is one JSON value. raw is the value's text (for parsed nodes, a slice
// of the input; for synthesized scalars, their encoding). dirty marks a node
// whose children changed, so raw is stale for containers.
type node struct {
	kind  kind
	dirty bool
	esc   bool // string raw holds escapes, so its content must be decoded
	raw   []byte
	mem   []member // kObj
	arr   []*node  // kArr
}

// member is one object member. rawKey is the key's text with quotes; key is
// its decoded content (a sub-slice of rawKey when it holds no escapes).
type member struct {
	rawKey []byte
	key    []byte
	val    *node
}

func (m *member) name() string { return string(m.key) }

// parser turns bytes into a node tree. Nodes and slices are carved out of
// slabs so a 1 MB Bundle costs a few dozen allocations, not tens of
// thousands.
type parser struct {
	buf      []byte
	pos      int
	maxDepth int
	slab     []node
	mslab    []member
	aslab    []*node
	mstack   []member
	astack   []*node
}

func parseJSON(buf []byte, maxDepth int) (*node, error) {
	p := &parser{buf: buf, maxDepth: maxDepth}
	est := len(buf)/24 + 16
	p.slab = make([]node, 0, est)
	p.skipWS()
	n, err := p.value(0)
	if err != nil {
		return nil, err
	}
	p.skipWS()
	if p.pos != len(p.buf) {
		return nil, p.fail("trailing data")
	}
	return n, nil
}

func (p *parser) fail(what string) error {
	return errorf(CodeMalformed, "json: %s at offset %d", what, p.pos)
}

func (p *parser) newNode() *node {
	if len(p.slab) == cap(p.slab) {
		p.slab = make([]node, 0, 1024)
	}
	p.slab = p.slab[:len(p.slab)+1]
	return &p.slab[len(p.slab)-1]
}

func (p *parser) skipWS() {
	for p.pos < len(p.buf) {
		switch p.buf[p.pos] {
		case ' ', '\t', '\n', '\r':
			p.pos++
		default:
			return
		}
	}
}

func (p *parser) value(depth int) (*node, error) {
	if depth > p.maxDepth {
		return nil, p.fail("nesting too deep")
	}
	if p.pos >= len(p.buf) {
		return nil, p.fail("unexpected end")
	}
	start := p.pos
	switch c := p.buf[p.pos]; {
	case c == '{':
		return p.object(depth)
	case c == '[':
		return p.array(depth)
	case c == '"':
		esc, err := p.str()
		if err != nil {
			return nil, err
		}
		n := p.newNode()
		n.kind, n.raw, n.esc = kStr, p.buf[start:p.pos], esc
		return n, nil
	case c == '-' || (c >= '0' && c <= '9'):
		if err := p.num(); err != nil {
			return nil, err
		}
		n := p.newNode()
		n.kind, n.raw = kNum, p.buf[start:p.pos]
		return n, nil
	case c == 't':
		return p.lit("true", kBool)
	case c == 'f':
		return p.lit("false", kBool)
	case c == 'n':
		return p.lit("null", kNull)
	}
	return nil, p.fail("unexpected character")
}

func (p *parser) lit(word string, k kind) (*node, error) {
	if len(p.buf)-p.pos < len(word) || string(p.buf[p.pos:p.pos+len(word)]) != word {
		return nil, p.fail("invalid literal")
	}
	n := p.newNode()
	n.kind, n.raw = k, p.buf[p.pos:p.pos+len(word)]
	p.pos += len(word)
	return n, nil
}

// str scans a string starting at the opening quote and reports whether it
// holds escapes. It enforces the JSON grammar (no raw control characters,
// only the defined escapes) so that spans copied verbatim stay valid.
func (p *parser) str() (bool, error) {
	p.pos++
	esc := false
	for {
		// Fast path over plain bytes.
		for p.pos < len(p.buf) {
			c := p.buf[p.pos]
			if c == '"' || c == '\\' || c < 0x20 {
				break
			}
			p.pos++
		}
		if p.pos >= len(p.buf) {
			return false, p.fail("unterminated string")
		}
		switch c := p.buf[p.pos]; {
		case c == '"':
			p.pos++
			return esc, nil
		case c < 0x20:
			return false, p.fail("control character in string")
		}
		// backslash
		esc = true
		if p.pos+1 >= len(p.buf) {
			return false, p.fail("unterminated escape")
		}
		switch p.buf[p.pos+1] {
		case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			p.pos += 2
		case 'u':
			if p.pos+6 > len(p.buf) {
				return false, p.fail("short unicode escape")
			}
			for _, h := range p.buf[p.pos+2 : p.pos+6] {
				if !isHex(h) {
					return false, p.fail("bad unicode escape")
				}
			}
			p.pos += 6
		default:
			return false, p.fail("bad escape")
		}
	}
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

func (p *parser) digits() int {
	s := p.pos
	for p.pos < len(p.buf) && p.buf[p.pos] >= '0' && p.buf[p.pos] <= '9' {
		p.pos++
	}
	return p.pos - s
}

func (p *parser) num() error {
	if p.buf[p.pos] == '-' {
		p.pos++
	}
	if p.pos < len(p.buf) && p.buf[p.pos] == '0' {
		p.pos++
	} else if p.digits() == 0 {
		return p.fail("bad number")
	}
	if p.pos < len(p.buf) && p.buf[p.pos] == '.' {
		p.pos++
		if p.digits() == 0 {
			return p.fail("bad fraction")
		}
	}
	if p.pos < len(p.buf) && (p.buf[p.pos] == 'e' || p.buf[p.pos] == 'E') {
		p.pos++
		if p.pos < len(p.buf) && (p.buf[p.pos] == '+' || p.buf[p.pos] == '-') {
			p.pos++
		}
		if p.digits() == 0 {
			return p.fail("bad exponent")
		}
	}
	return nil
}

func (p *parser) object(depth int) (*node, error) {
	start := p.pos
	p.pos++ // {
	base := len(p.mstack)
	p.skipWS()
	if p.pos < len(p.buf) && p.buf[p.pos] == '}' {
		p.pos++
		n := p.newNode()
		n.kind, n.raw = kObj, p.buf[start:p.pos]
		return n, nil
	}
	for {
		p.skipWS()
		if p.pos >= len(p.buf) || p.buf[p.pos] != '"' {
			return nil, p.fail("expected key")
		}
		ks := p.pos
		esc, err := p.str()
		if err != nil {
			return nil, err
		}
		rawKey := p.buf[ks:p.pos]
		key := rawKey[1 : len(rawKey)-1]
		if esc {
			key = decodeString(rawKey)
		}
		p.skipWS()
		if p.pos >= len(p.buf) || p.buf[p.pos] != ':' {
			return nil, p.fail("expected colon")
		}
		p.pos++
		p.skipWS()
		v, err := p.value(depth + 1)
		if err != nil {
			return nil, err
		}
		p.mstack = append(p.mstack, member{rawKey: rawKey, key: key, val: v})
		p.skipWS()
		if p.pos >= len(p.buf) {
			return nil, p.fail("unterminated object")
		}
		if p.buf[p.pos] == ',' {
			p.pos++
			continue
		}
		if p.buf[p.pos] == '}' {
			p.pos++
			break
		}
		return nil, p.fail("expected comma or brace")
	}
	cnt := len(p.mstack) - base
	if len(p.mslab)+cnt > cap(p.mslab) {
		p.mslab = make([]member, 0, max(4096, cnt))
	}
	i := len(p.mslab)
	p.mslab = append(p.mslab, p.mstack[base:]...)
	p.mstack = p.mstack[:base]
	n := p.newNode()
	n.kind, n.raw, n.mem = kObj, p.buf[start:p.pos], p.mslab[i:i+cnt:i+cnt]
	return n, nil
}

func (p *parser) array(depth int) (*node, error) {
	start := p.pos
	p.pos++ // [
	base := len(p.astack)
	p.skipWS()
	if p.pos < len(p.buf) && p.buf[p.pos] == ']' {
		p.pos++
		n := p.newNode()
		n.kind, n.raw = kArr, p.buf[start:p.pos]
		return n, nil
	}
	for {
		p.skipWS()
		v, err := p.value(depth + 1)
		if err != nil {
			return nil, err
		}
		p.astack = append(p.astack, v)
		p.skipWS()
		if p.pos >= len(p.buf) {
			return nil, p.fail("unterminated array")
		}
		if p.buf[p.pos] == ',' {
			p.pos++
			continue
		}
		if p.buf[p.pos] == ']' {
			p.pos++
			break
		}
		return nil, p.fail("expected comma or bracket")
	}
	cnt := len(p.astack) - base
	if len(p.aslab)+cnt > cap(p.aslab) {
		p.aslab = make([]*node, 0, max(4096, cnt))
	}
	i := len(p.aslab)
	p.aslab = append(p.aslab, p.astack[base:]...)
	clear(p.astack[base:])
	p.astack = p.astack[:base]
	n := p.newNode()
	n.kind, n.raw, n.arr = kArr, p.buf[start:p.pos], p.aslab[i:i+cnt:i+cnt]
	return n, nil
}

// decodeString returns the content of a JSON string literal (with quotes)
// that the parser already validated. Invalid surrogates become U+FFFD, as
// encoding/json does.
func decodeString(raw []byte) []byte {
	s := raw[1 : len(raw)-1]
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' {
			out = append(out, c)
			continue
		}
		i++
		switch s[i] {
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r := rune(hexVal(s[i+1 : i+5]))
			i += 4
			if r >= 0xD800 && r < 0xDC00 && i+6 < len(s) && s[i+1] == '\\' && s[i+2] == 'u' {
				r2 := rune(hexVal(s[i+3 : i+7]))
				if r2 >= 0xDC00 && r2 < 0xE000 {
					r = 0x10000 + (r-0xD800)<<10 + (r2 - 0xDC00)
					i += 6
				} else {
					r = utf8.RuneError
				}
			} else if r >= 0xD800 && r < 0xE000 {
				r = utf8.RuneError
			}
			out = utf8.AppendRune(out, r)
		default: // '"', '\\', '/'
			out = append(out, s[i])
		}
	}
	return out
}

func hexVal(h []byte) int {
	v := 0
	for _, c := range h {
		v <<= 4
		switch {
		case c >= '0' && c <= '9':
			v |= int(c - '0')
		case c >= 'a' && c <= 'f':
			v |= int(c-'a') + 10
		default:
			v |= int(c-'A') + 10
		}
	}
	return v
}

// str returns the decoded content of a string node.
func (n *node) str() string {
	if n.kind != kStr {
		return ""
	}
	if n.esc {
		return string(decodeString(n.raw))
	}
	return string(n.raw[1 : len(n.raw)-1])
}

// strIs reports whether a string node's content equals s, without
// allocating for the common unescaped case.
func (n *node) strIs(s string) bool {
	if n == nil || n.kind != kStr {
		return false
	}
	if n.esc {
		return string(decodeString(n.raw)) == s
	}
	return string(n.raw[1:len(n.raw)-1]) == s
}

// get returns the last member named key (the one encoding/json would keep).
func (n *node) get(key string) *node {
	if n == nil || n.kind != kObj {
		return nil
	}
	var v *node
	for i := range n.mem {
		if string(n.mem[i].key) == key {
			v = n.mem[i].val
		}
	}
	return v
}

// del removes every member named key, so duplicate keys cannot smuggle a
// value past a removal. It reports whether anything was removed.
func (n *node) del(key string) bool {
	if n == nil || n.kind != kObj {
		return false
	}
	out := n.mem[:0]
	for _, m := range n.mem {
		if string(m.key) != key {
			out = append(out, m)
		}
	}
	removed := len(out) != len(n.mem)
	clear(n.mem[len(out):])
	n.mem = out
	if removed {
		n.dirty = true
	}
	return removed
}

// set appends a member or replaces every existing member of that name.
func (n *node) set(key string, v *node) {
	n.del(key)
	n.mem = append(n.mem, member{rawKey: encodeString(nil, key), key: []byte(key), val: v})
	n.dirty = true
}

// insertAfter inserts key after the member named after (or at the start when
// absent), replacing existing members of that name.
func (n *node) insertAfter(after, key string, v *node) {
	n.del(key)
	at := 0
	for i := range n.mem {
		if string(n.mem[i].key) == after {
			at = i + 1
		}
	}
	m := member{rawKey: encodeString(nil, key), key: []byte(key), val: v}
	n.mem = append(n.mem, member{})
	copy(n.mem[at+1:], n.mem[at:])
	n.mem[at] = m
	n.dirty = true
}

func strNode(s string) *node {
	return &node{kind: kStr, dirty: true, raw: encodeString(nil, s)}
}

func objNode(kv ...any) *node {
	n := &node{kind: kObj, dirty: true}
	for i := 0; i+1 < len(kv); i += 2 {
		k := kv[i].(string)
		var v *node
		switch x := kv[i+1].(type) {
		case string:
			v = strNode(x)
		case *node:
			v = x
		}
		n.mem = append(n.mem, member{rawKey: encodeString(nil, k), key: []byte(k), val: v})
	}
	return n
}

func arrNode(elems ...*node) *node {
	return &node{kind: kArr, dirty: true, arr: elems}
}

// setStr turns n into a string node with content s.
func (n *node) setStr(s string) {
	*n = node{kind: kStr, dirty: true, raw: encodeString(nil, s)}
}

func (n *node) setNum(text string) {
	*n = node{kind: kNum, dirty: true, raw: []byte(text)}
}

// settle propagates dirty marks from changed nodes up to the root, so write
// re-encodes exactly the containers on a path to a change. Mutations only
// mark the node they touch; one pass here is cheaper than bookkeeping
// parents during the walk.
func settle(n *node) bool {
	d := n.dirty || n.raw == nil
	switch n.kind {
	case kObj:
		for i := range n.mem {
			if settle(n.mem[i].val) {
				d = true
			}
		}
	case kArr:
		for _, e := range n.arr {
			if settle(e) {
				d = true
			}
		}
	}
	n.dirty = d
	return d
}

const hexDigits = "0123456789abcdef"

// encodeString appends s as a JSON string literal. Invalid UTF-8 becomes
// U+FFFD so the output is always valid.
func encodeString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				dst = append(dst, '\\', c)
			case c < 0x20:
				switch c {
				case '\n':
					dst = append(dst, '\\', 'n')
				case '\r':
					dst = append(dst, '\\', 'r')
				case '\t':
					dst = append(dst, '\\', 't')
				default:
					dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
				}
			default:
				dst = append(dst, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, `\ufffd`...)
		} else if r == '\u2028' || r == '\u2029' {
			dst = append(dst, `\u202`...)
			dst = append(dst, hexDigits[r&0xF])
		} else {
			dst = append(dst, s[i:i+size]...)
		}
		i += size
	}
	return append(dst, '"')
}

// write appends the JSON text of n: the original span when nothing beneath
// it changed, a compact re-encoding otherwise.
func (n *node) write(dst []byte) []byte {
	if !n.dirty && n.raw != nil {
		return append(dst, n.raw...)
	}
	switch n.kind {
	case kObj:
		dst = append(dst, '{')
		for i := range n.mem {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, n.mem[i].rawKey...)
			dst = append(dst, ':')
			dst = n.mem[i].val.write(dst)
		}
		return append(dst, '}')
	case kArr:
		dst = append(dst, '[')
		for i, e := range n.arr {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = e.write(dst)
		}
		return append(dst, ']')
	case kNum, kStr, kBool:
		return append(dst, n.raw...)
	}
	return append(dst, "null"...)
}

func itoa(i int) string { return strconv.Itoa(i) }
