package filters

import (
	"bytes"
	"strconv"
	"unicode"
	"unicode/utf8"

	"github.com/phigate/phigate/internal/jsonstr"
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
// whose children changed, so raw is stale for containers. A lazy container
// has not been split into children yet: most of a Bundle (codes, values,
// notes) is never looked at, so it is never materialised and is written
// back from raw.
type node struct {
	kind  kind
	dirty bool
	esc   bool // string raw holds escapes, so its content must be decoded
	lazy  bool
	ord   int32 // lazy container: its ordinal in idx
	idx   *docIndex
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

// parseJSON validates the whole document against the JSON grammar once, then
// returns the root as a lazy node. Expansion later trusts the grammar, which
// is why it cannot fail.
func parseJSON(buf []byte, maxDepth int) (*node, error) {
	p := &parser{buf: buf, maxDepth: maxDepth}
	p.idx.c = make([]container, 0, len(buf)/48+8)
	p.keys = p.keyBuf[:0]
	p.skipWS()
	start := p.pos
	if _, err := p.value(0); err != nil {
		return nil, err
	}
	end := p.pos
	p.skipWS()
	if p.pos != len(p.buf) {
		return nil, p.fail("trailing data")
	}
	n := &node{}
	fillNode(n, buf[start:end], &p.idx, 0)
	return n, nil
}

// docIndex records, for every container in document order, where it ends,
// the ordinal of the first container after its subtree, and whether a
// "resourceType" key occurs anywhere inside. Validation fills it in its one
// pass, so expanding a node never rescans bytes and the search for nested
// resources skips whole subtrees in O(1).
type docIndex struct {
	c []container
	// Slabs the expanded nodes are carved from: a few large allocations
	// instead of two per expanded container.
	ns []node
	ms []member
	ps []*node
}

const slabSize = 512

func (d *docIndex) nodes(n int) []node {
	if d == nil || n > slabSize {
		return make([]node, n)
	}
	if len(d.ns)+n > cap(d.ns) {
		d.ns = make([]node, 0, slabSize)
	}
	i := len(d.ns)
	d.ns = d.ns[:i+n]
	return d.ns[i : i+n : i+n]
}

func (d *docIndex) members(n int) []member {
	if d == nil || n > slabSize {
		return make([]member, n)
	}
	if len(d.ms)+n > cap(d.ms) {
		d.ms = make([]member, 0, slabSize)
	}
	i := len(d.ms)
	d.ms = d.ms[:i+n]
	return d.ms[i : i+n : i+n]
}

func (d *docIndex) ptrs(n int) []*node {
	if d == nil || n > slabSize {
		return make([]*node, n)
	}
	if len(d.ps)+n > cap(d.ps) {
		d.ps = make([]*node, 0, slabSize)
	}
	i := len(d.ps)
	d.ps = d.ps[:i+n]
	return d.ps[i : i+n : i+n]
}

type container struct {
	end      int32
	next     int32
	resource bool
}

// parser is the validating scanner. It builds nothing but the index.
type parser struct {
	buf      []byte
	pos      int
	maxDepth int
	idx      docIndex
	// keys holds the keys seen so far in every object open at pos,
	// outermost first; each object compares against its own tail and
	// truncates it when it closes, so one slice serves the whole document.
	keys   [][]byte
	keyBuf [64][]byte // keys' first backing, allocated with the parser
}

func (p *parser) fail(what string) error {
	return errorf(CodeMalformed, "json: %s at offset %d", what, p.pos)
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

// value validates one value and reports whether a "resourceType" key occurs
// in it.
func (p *parser) value(depth int) (bool, error) {
	if depth > p.maxDepth {
		return false, p.fail("nesting too deep")
	}
	if p.pos >= len(p.buf) {
		return false, p.fail("unexpected end")
	}
	switch c := p.buf[p.pos]; {
	case c == '{' || c == '[':
		if len(p.buf) > 1<<31-1 {
			return false, p.fail("document too large")
		}
		ord := len(p.idx.c)
		p.idx.c = append(p.idx.c, container{})
		var res bool
		var err error
		if c == '{' {
			res, err = p.object(depth)
		} else {
			res, err = p.array(depth)
		}
		if err != nil {
			return false, err
		}
		p.idx.c[ord] = container{end: int32(p.pos), next: int32(len(p.idx.c)), resource: res}
		return res, nil
	case c == '"':
		_, err := p.str()
		return false, err
	case c == '-' || (c >= '0' && c <= '9'):
		return false, p.num()
	case c == 't':
		return false, p.lit("true")
	case c == 'f':
		return false, p.lit("false")
	case c == 'n':
		return false, p.lit("null")
	}
	return false, p.fail("unexpected character")
}

func (p *parser) lit(word string) error {
	if len(p.buf)-p.pos < len(word) || string(p.buf[p.pos:p.pos+len(word)]) != word {
		return p.fail("invalid literal")
	}
	p.pos += len(word)
	return nil
}

// stopValue and stopKey mark the bytes at which the string scanner leaves
// its fast loop: a quote, a backslash or a control character, and in a key
// any byte outside ASCII as well, so that keys needing a closer look are
// found without a second pass over them. One table load per byte costs
// less than the comparisons it replaces.
var stopValue, stopKey = func() (v, k [256]bool) {
	for c := range 256 {
		v[c] = c == '"' || c == '\\' || c < 0x20
		k[c] = v[c] || c >= utf8.RuneSelf
	}
	return v, k
}()

// str scans a string starting at the opening quote and reports whether it
// holds escapes. It enforces the JSON grammar (no raw control characters,
// only the defined escapes) so that spans copied verbatim stay valid.
func (p *parser) str() (bool, error) {
	esc, _, err := p.scanStr(&stopValue)
	return esc, err
}

// scanStr is str with the stop table given; it also reports whether the
// string holds a byte outside ASCII, which only stopKey detects.
func (p *parser) scanStr(stop *[256]bool) (esc, high bool, err error) {
	p.pos++
	for {
		for p.pos < len(p.buf) && !stop[p.buf[p.pos]] {
			p.pos++
		}
		if p.pos >= len(p.buf) {
			return false, false, p.fail("unterminated string")
		}
		switch c := p.buf[p.pos]; {
		case c == '"':
			p.pos++
			return esc, high, nil
		case c < 0x20:
			return false, false, p.fail("control character in string")
		case c >= utf8.RuneSelf:
			high = true
			p.pos++
			continue
		}
		esc = true
		if p.pos+1 >= len(p.buf) {
			return false, false, p.fail("unterminated escape")
		}
		switch p.buf[p.pos+1] {
		case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			p.pos += 2
		case 'u':
			if p.pos+6 > len(p.buf) {
				return false, false, p.fail("short unicode escape")
			}
			for _, h := range p.buf[p.pos+2 : p.pos+6] {
				if !isHex(h) {
					return false, false, p.fail("bad unicode escape")
				}
			}
			p.pos += 6
		default:
			return false, false, p.fail("bad escape")
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

// smallObject is the member count up to which an object's keys are
// compared pairwise. FHIR objects hold a few members, where comparing
// beats hashing; past it a map keeps a hostile object of many members
// linear.
const smallObject = 16

// object validates one object and refuses a key that occurs twice in it.
// Parsers disagree on which copy of a duplicate key wins (encoding/json
// and JavaScript keep the last, others the first or reject), and every
// check here reads one copy: a second "entry", "meta", "security" or
// "subject" would carry past the filter whatever the reader behind it
// picks. Refusing here covers every consumer of the tree at once, and the
// lazily expanded subtrees no check ever looks at as well.
//
// Keys are compared without regard to case, as the request side does:
// Go's decoder matches struct fields that way, so to a client decoding
// into FHIR structs "Entry" after "entry" is the same member again. FHIR
// names never differ only in case, so no valid resource is refused.
func (p *parser) object(depth int) (bool, error) {
	p.pos++ // {
	p.skipWS()
	if p.pos < len(p.buf) && p.buf[p.pos] == '}' {
		p.pos++
		return false, nil
	}
	res := false
	base := len(p.keys)
	var seen map[string]struct{}
	var sketch uint64 // bits set by the keys so far
	for {
		p.skipWS()
		if p.pos >= len(p.buf) || p.buf[p.pos] != '"' {
			return false, p.fail("expected key")
		}
		ks := p.pos
		esc, high, err := p.scanStr(&stopKey)
		if err != nil {
			return false, err
		}
		key := p.buf[ks+1 : p.pos-1]
		cmp := key
		if esc || high {
			if key, cmp, err = p.keyContent(p.buf[ks:p.pos], esc); err != nil {
				return false, err
			}
		}
		if string(key) == "resourceType" {
			res = true
		}
		if seen == nil {
			// Each key sets one bit picked by its length and its end
			// letters, case folded. A key whose bit is still clear equals
			// no earlier key, so most keys of most objects are compared
			// with nothing.
			h := uint(len(cmp))
			if len(cmp) > 0 {
				h = h*31 + uint(foldASCII[cmp[0]])
				h = h*31 + uint(foldASCII[cmp[len(cmp)-1]])
			}
			if bit := uint64(1) << (h & 63); sketch&bit == 0 {
				sketch |= bit
			} else {
				for _, k := range p.keys[base:] {
					if sameKey(k, cmp) {
						return false, p.fail("duplicate key")
					}
				}
			}
			p.keys = append(p.keys, cmp)
			if len(p.keys)-base > smallObject {
				seen = make(map[string]struct{}, 2*smallObject)
				for _, k := range p.keys[base:] {
					seen[lowerASCII(k)] = struct{}{}
				}
			}
		} else {
			k := lowerASCII(cmp)
			if _, dup := seen[k]; dup {
				return false, p.fail("duplicate key")
			}
			seen[k] = struct{}{}
		}
		p.skipWS()
		if p.pos >= len(p.buf) || p.buf[p.pos] != ':' {
			return false, p.fail("expected colon")
		}
		p.pos++
		p.skipWS()
		r, err := p.value(depth + 1)
		if err != nil {
			return false, err
		}
		res = res || r
		p.skipWS()
		if p.pos >= len(p.buf) {
			return false, p.fail("unterminated object")
		}
		switch p.buf[p.pos] {
		case ',':
			p.pos++
			continue
		case '}':
			p.pos++
			p.keys = p.keys[:base]
			return res, nil
		}
		return false, p.fail("expected comma or brace")
	}
}

// keyContent returns what a key literal names once unescaped, the form in
// which readers compare keys: "entry" and "\u0065ntry" are one key. A
// lone surrogate decodes to U+FFFD, so it matches every other lone
// surrogate and U+FFFD itself; a reader that keeps surrogates apart sees
// fewer duplicates than this, never more. Invalid UTF-8 has no such
// coarsest reading (readers replace it per byte, per sequence, or reject
// it), so a key holding it is refused; FHIR names are ASCII.
//
// cmp is the form compared with the object's other keys: key itself when
// ASCII, since sameKey folds ASCII case, else key with every other rune
// mapped as encoding/json folds names (upper of lower), so that the
// Kelvin sign matches k and the long s matches s.
func (p *parser) keyContent(lit []byte, esc bool) (key, cmp []byte, err error) {
	key = lit[1 : len(lit)-1]
	if esc {
		key = decodeString(lit)
	}
	if !utf8.Valid(key) {
		return nil, nil, p.fail("key is not valid UTF-8")
	}
	cmp = key
	for _, c := range key {
		if c >= utf8.RuneSelf {
			cmp = make([]byte, 0, len(key))
			for _, r := range string(key) {
				cmp = utf8.AppendRune(cmp, unicode.ToUpper(unicode.ToLower(r)))
			}
			break
		}
	}
	return key, cmp, nil
}

// foldASCII maps each byte to itself, ASCII capitals to small letters.
var foldASCII = func() (t [256]byte) {
	for c := range 256 {
		t[c] = byte(c)
		if c >= 'A' && c <= 'Z' {
			t[c] = byte(c) + 'a' - 'A'
		}
	}
	return t
}()

// sameKey compares two keys in cmp form without regard to ASCII case.
func sameKey(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if foldASCII[a[i]] != foldASCII[b[i]] {
			return false
		}
	}
	return true
}

// lowerASCII is the map key under which sameKey's equal keys meet.
func lowerASCII(k []byte) string {
	b := make([]byte, len(k))
	for i, c := range k {
		b[i] = foldASCII[c]
	}
	return string(b)
}

func (p *parser) array(depth int) (bool, error) {
	p.pos++ // [
	p.skipWS()
	if p.pos < len(p.buf) && p.buf[p.pos] == ']' {
		p.pos++
		return false, nil
	}
	res := false
	for {
		p.skipWS()
		r, err := p.value(depth + 1)
		if err != nil {
			return false, err
		}
		res = res || r
		p.skipWS()
		if p.pos >= len(p.buf) {
			return false, p.fail("unterminated array")
		}
		switch p.buf[p.pos] {
		case ',':
			p.pos++
			continue
		case ']':
			p.pos++
			return res, nil
		}
		return false, p.fail("expected comma or bracket")
	}
}

// The functions below run only over validated bytes.

func wsEnd(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// strEnd returns the index after the closing quote of the string opening at
// i, and whether it holds escapes.
func strEnd(b []byte, i int) (int, bool) {
	esc := false
	i++
	for {
		switch b[i] {
		case '"':
			return i + 1, esc
		case '\\':
			esc = true
			i += 2
		default:
			i++
		}
	}
}

// containerEnd returns the index after the bracket closing the container
// opening at i, and whether any string inside holds escapes.
func containerEnd(b []byte, i int) (int, bool) {
	depth, esc := 0, false
	for {
		switch b[i] {
		case '"':
			var e bool
			i, e = strEnd(b, i)
			esc = esc || e
			continue
		case '{', '[':
			depth++
		case '}', ']':
			depth--
			if depth == 0 {
				return i + 1, esc
			}
		}
		i++
	}
}

// scalarEnd returns the end of a number or literal at i.
func scalarEnd(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
			return i
		}
		i++
	}
	return i
}

// rawNode wraps a constant, valid JSON text; containers expand by
// scanning because they have no index.
func rawNode(text string) *node {
	n := &node{}
	fillNode(n, []byte(text), nil, 0)
	return n
}

// fillNode makes n the value raw; containers stay lazy. ord is the
// container's ordinal in idx.
func fillNode(n *node, raw []byte, idx *docIndex, ord int32) {
	n.raw = raw
	switch raw[0] {
	case '{':
		n.kind, n.lazy, n.idx, n.ord = kObj, true, idx, ord
	case '[':
		n.kind, n.lazy, n.idx, n.ord = kArr, true, idx, ord
	case '"':
		n.kind = kStr
		n.esc = bytes.IndexByte(raw, '\\') >= 0
	case 't', 'f':
		n.kind = kBool
	case 'n':
		n.kind = kNull
	default:
		n.kind = kNum
	}
}

// mayHoldResource reports whether a resourceType key may occur in n's
// subtree; false is certain.
func (n *node) mayHoldResource() bool {
	if !n.lazy {
		return true
	}
	if n.idx != nil {
		return n.idx.c[n.ord].resource
	}
	return bytes.Contains(n.raw, []byte("resourceType")) || bytes.IndexByte(n.raw, '\\') >= 0
}

// x expands a lazy container one level and returns it.
func (n *node) x() *node {
	if n == nil || !n.lazy {
		return n
	}
	n.lazy = false
	b := n.raw
	i := wsEnd(b, 1)
	if b[i] == '}' || b[i] == ']' {
		return n
	}
	// Offsets in the index are absolute; raw starts at base in the document.
	var base int
	next := n.ord + 1
	if n.idx != nil {
		base = int(n.idx.c[n.ord].end) - len(b)
	}
	// Collect children first so nodes and members come from one allocation each.
	type span struct {
		ks, ke, vs, ve int
		ord            int32
	}
	var stack [32]span
	spans := stack[:0]
	for {
		var sp span
		i = wsEnd(b, i)
		if n.kind == kObj {
			sp.ks = i
			i, _ = strEnd(b, i)
			sp.ke = i
			i = wsEnd(b, i) + 1 // colon
			i = wsEnd(b, i)
		}
		sp.vs = i
		switch b[i] {
		case '{', '[':
			if n.idx != nil {
				sp.ord = next
				c := n.idx.c[next]
				i, next = int(c.end)-base, c.next
			} else {
				i, _ = containerEnd(b, i)
			}
		case '"':
			i, _ = strEnd(b, i)
		default:
			i = scalarEnd(b, i)
		}
		sp.ve = i
		spans = append(spans, sp)
		i = wsEnd(b, i)
		if b[i] == ',' {
			i++
			continue
		}
		break
	}
	nodes := n.idx.nodes(len(spans))
	if n.kind == kObj {
		n.mem = n.idx.members(len(spans))
		for j, sp := range spans {
			fillNode(&nodes[j], b[sp.vs:sp.ve], n.idx, sp.ord)
			rk := b[sp.ks:sp.ke]
			key := rk[1 : len(rk)-1]
			if bytes.IndexByte(key, '\\') >= 0 {
				key = decodeString(rk)
			}
			n.mem[j] = member{rawKey: rk, key: key, val: &nodes[j]}
		}
		return n
	}
	n.arr = n.idx.ptrs(len(spans))
	for j, sp := range spans {
		fillNode(&nodes[j], b[sp.vs:sp.ve], n.idx, sp.ord)
		n.arr[j] = &nodes[j]
	}
	return n
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
	if n == nil || n.kind != kStr {
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

// get returns the member named key. Keys are unique within an object:
// parseJSON refuses duplicates and set and insertAfter replace, so there
// is no "which copy" for a check to get wrong.
func (n *node) get(key string) *node {
	if n == nil || n.kind != kObj {
		return nil
	}
	n.x()
	for i := range n.mem {
		if string(n.mem[i].key) == key {
			return n.mem[i].val
		}
	}
	return nil
}

// del removes every member named key. Parsed objects hold each key once;
// removing them all keeps that true of any tree. It reports whether
// anything was removed.
func (n *node) del(key string) bool {
	if n == nil || n.kind != kObj {
		return false
	}
	n.x()
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
	n.mem = append(n.mem, newMember(key, v))
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
	m := newMember(key, v)
	n.mem = append(n.mem, member{})
	copy(n.mem[at+1:], n.mem[at:])
	n.mem[at] = m
	n.dirty = true
}

func newMember(key string, v *node) member {
	rk := encodeString(make([]byte, 0, len(key)+2), key)
	return member{rawKey: rk, key: []byte(key), val: v}
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
		n.mem = append(n.mem, newMember(k, v))
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
	if n.lazy {
		return false
	}
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

// encodeString appends s as a JSON string literal as encoding/json writes
// it without HTML escaping. Invalid UTF-8 becomes U+FFFD so the output is
// always valid.
func encodeString(dst []byte, s string) []byte { return jsonstr.Append(dst, s, false) }

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
