package filters

import (
	"bytes"
	"slices"
	"strings"

	"github.com/phigate/phigate/internal/compartment"
	"github.com/phigate/phigate/plan"
)

// SensitivityCodes is the vocabulary of v3-ActCode sensitivity labels
// (meta.security) that Enforcement.PermittedLabels governs: a resource
// carrying any of these codes is withheld unless the code is permitted.
// Codes outside this list (confidentiality R/N, REDACTED, purpose codes) do
// not withhold. The list follows the v3 ActCode _InformationSensitivityPolicy
// hierarchy and the behavioural-health codes used by 42 CFR Part 2 and
// HL7 DS4P profiles.
var SensitivityCodes = []string{
	"ETH",      // substance abuse information (any)
	"SUD",      // substance use disorder information
	"ALCUD",    // alcohol use disorder
	"OPIOIDUD", // opioid use disorder
	"COCAINEUD",
	"DRGIS",   // drug information sensitivity
	"PSY",     // psychiatry disorder information
	"PSYTHPN", // psychotherapy note
	"BH",      // behavioural health
	"MH",      // mental health
	"HIV",     // HIV/AIDS
	"STD",     // sexually transmitted disease
	"SEX",     // sexuality and reproductive health
	"SDV",     // sexual assault, abuse or domestic violence
	"GDIS",    // genetic disease
	"SCA",     // sickle cell anemia
	"SICKLE",
	"TBOO", // taboo
	"MST",  // military sexual trauma
	"PREGNANT",
	"LSRDISCL", // legally sealed records
	"REPRODUCTIVE",
}

var sensitivity = func() map[string]bool {
	m := make(map[string]bool, len(SensitivityCodes))
	for _, c := range SensitivityCodes {
		m[c] = true
	}
	return m
}()

// compartmentDefault are the elements checked on a type that is not
// patient data by the compartment table (Practitioner, Organization, a
// type this release does not know): if one of them names a patient anyway,
// that patient must be in the grant.
var compartmentDefault = [][]string{{"subject"}, {"patient"}, {"beneficiary"}, {"individual"}}

// enforcer is the compiled Enforcement.
type enforcer struct {
	any       bool
	patients  map[string]bool
	permitted map[string]bool
	types     map[string]bool // nil: every type
	names     map[string]string
}

// maxNames bounds the strings name keeps for one body.
const maxNames = 4096

// name returns a string node's content, one string per distinct value
// within the body: a Bundle repeats its types and references, and the
// check runs on every entry.
func (x *enforcer) name(n *node) string {
	if n == nil || n.kind != kStr || n.esc {
		return n.str()
	}
	b := n.raw[1 : len(n.raw)-1]
	if s, ok := x.names[string(b)]; ok {
		return s
	}
	s := string(b)
	if len(x.names) < maxNames {
		x.names[s] = s
	}
	return s
}

// granted reports whether a string node names a patient in the grant.
func (x *enforcer) granted(id *node) bool {
	if id == nil || id.kind != kStr {
		return false
	}
	if id.esc {
		return x.patients[id.str()]
	}
	return x.patients[string(id.raw[1:len(id.raw)-1])]
}

// sameResource reports, without allocating, whether a fullUrl ends in the
// resource's own type and id ("Type/id" or ".../Type/id"), the common case
// that needs no parsing.
func sameResource(fu, rt, id *node) bool {
	if fu.esc || rt == nil || rt.kind != kStr || rt.esc || id == nil || id.kind != kStr || id.esc {
		return false
	}
	u, t, i := fu.raw[1:len(fu.raw)-1], rt.raw[1:len(rt.raw)-1], id.raw[1:len(id.raw)-1]
	if len(i) == 0 || !bytes.HasSuffix(u, i) {
		return false
	}
	u = u[:len(u)-len(i)]
	if !bytes.HasSuffix(u, []byte{'/'}) {
		return false
	}
	u = u[:len(u)-1]
	if !bytes.HasSuffix(u, t) {
		return false
	}
	u = u[:len(u)-len(t)]
	return len(u) == 0 || (u[len(u)-1] == '/' && bytes.Contains(u, []byte("://")))
}

func newEnforcer(e *plan.Enforcement) *enforcer {
	x := &enforcer{any: e.AnyPatient, patients: map[string]bool{}, permitted: map[string]bool{}, names: map[string]string{}}
	for _, p := range e.Patients {
		x.patients[p] = true
	}
	for _, l := range e.PermittedLabels {
		x.permitted[l] = true
	}
	if len(e.ResourceTypes) > 0 && !slices.Contains(e.ResourceTypes, "*") {
		x.types = make(map[string]bool, len(e.ResourceTypes))
		for _, t := range e.ResourceTypes {
			x.types[t] = true
		}
	}
	return x
}

// typeAllowed reports whether the caller may receive resources of type rt.
// Bundle is the envelope of a search or history, not data of its own: its
// entries are checked one by one.
func (x *enforcer) typeAllowed(rt string) bool {
	return x.types == nil || rt == "Bundle" || x.types[rt]
}

// refScope resolves the references a Bundle's entries make to each other
// (urn:uuid: and other fullUrls) to the resource each names. The index is
// built on the first lookup: most Bundles use server references only.
type refScope struct {
	entries []*node
	built   bool
	m       map[string]resIdent
}

type resIdent struct{ rtype, id string }

func (sc *refScope) lookup(u string) (resIdent, bool) {
	if sc == nil {
		return resIdent{}, false
	}
	if !sc.built {
		sc.built = true
		for _, e := range sc.entries {
			fu, res := e.get("fullUrl"), e.get("resource")
			if fu == nil || fu.kind != kStr || res == nil || res.kind != kObj {
				continue
			}
			if sc.m == nil {
				sc.m = map[string]resIdent{}
			}
			k := fu.str()
			if _, dup := sc.m[k]; dup {
				// Two entries claim one URL: a reference to it is
				// ambiguous, so it resolves to no one the grant holds.
				sc.m[k] = resIdent{rtype: "Patient"}
				continue
			}
			sc.m[k] = resIdent{rtype: res.get("resourceType").str(), id: res.get("id").str()}
		}
	}
	t, ok := sc.m[u]
	return t, ok
}

// withhold reports whether the caller may not see res at all: its type is
// not permitted, it or a contained resource carries a sensitivity label
// not permitted, or it or a contained resource is about a patient outside
// the grant or about one that cannot be named. sc resolves references to
// other entries of the enclosing Bundle (nil outside a Bundle).
func (x *enforcer) withhold(res *node, sc *refScope) bool {
	rt := res.get("resourceType")
	if rt == nil || rt.kind != kStr || !x.typeAllowed(x.name(rt)) || x.labelled(res) {
		return true
	}
	cn := res.get("contained")
	if cn != nil && cn.kind != kArr {
		return true
	}
	contained := arrayOf(cn)
	for _, c := range contained {
		if x.containedWithheld(c, contained, sc) {
			return true
		}
	}
	if x.any {
		return false
	}
	if rt.strIs("Patient") {
		// A Patient without a server id cannot be matched to the grant.
		return !x.granted(res.get("id"))
	}
	return x.outside(res, x.name(rt), contained, sc)
}

// containedWithheld checks one contained resource. Contained resources
// have no server identity: a contained Patient cannot be matched to the
// grant, whatever its local id says, so it withholds its container.
func (x *enforcer) containedWithheld(c *node, siblings []*node, sc *refScope) bool {
	if c == nil || c.kind != kObj {
		return true
	}
	rt := c.get("resourceType")
	if rt == nil || rt.kind != kStr || rt.strIs("Bundle") || !x.typeAllowed(x.name(rt)) || x.labelled(c) {
		return true
	}
	if c.get("contained") != nil {
		return true // R4 forbids nesting; a reader could disagree on scope
	}
	if x.any {
		return false
	}
	if rt.strIs("Patient") {
		return true
	}
	return x.outside(c, x.name(rt), siblings, sc)
}

// outside reports whether an element that places res in a compartment
// refers to a patient outside the grant, or to something that cannot be
// shown not to be such a patient.
func (x *enforcer) outside(res *node, rt string, contained []*node, sc *refScope) bool {
	paths := compartmentDefault
	if compartment.Member(rt) {
		paths = compartment.Paths(rt)
	}
	out := false
	for _, p := range paths {
		eachAt(res, p, func(ref *node) {
			out = out || x.refOutside(ref, contained, sc)
		})
		if out {
			return true
		}
	}
	return false
}

// refOutside reads one Reference in a compartment element. Fail closed:
// a reference is harmless only if it names a granted patient or a target
// that is certainly not a patient.
func (x *enforcer) refOutside(ref *node, contained []*node, sc *refScope) bool {
	if ref == nil || ref.kind != kObj {
		return true
	}
	typ := ref.get("type")
	if typ != nil && typ.kind != kStr {
		return true
	}
	s := ref.get("reference")
	if s == nil {
		if ref.get("identifier") == nil && ref.get("display") == nil {
			return false // names nothing (e.g. only a data-absent extension)
		}
		// A logical reference (identifier) or a bare display names
		// someone the grant cannot be checked against, unless the type
		// says it is not a patient.
		return typ == nil || typ.strIs("Patient") || typ.str() == ""
	}
	if s.kind != kStr {
		return true
	}
	v := x.name(s)
	if strings.HasPrefix(v, "#") {
		if v == "#" {
			return false // the container itself
		}
		for _, c := range contained {
			if id := c.get("id"); id != nil && id.strIs(v[1:]) {
				return c.get("resourceType").strIs("Patient")
			}
		}
		return true
	}
	if t, ok := parseRef(v); ok {
		if t.rtype != "Patient" {
			return typ.strIs("Patient")
		}
		return t.id == "" || !x.patients[t.id]
	}
	if t, ok := sc.lookup(v); ok {
		if t.rtype != "Patient" {
			return false
		}
		return !x.patients[t.id]
	}
	return true
}

// target is what a reference or URL names: a type and, unless the URL is
// a type-level or conditional one ("Patient", "Patient?identifier=..."),
// an id.
type target struct {
	rtype, id string
}

// parseRef reads a literal reference or entry URL: "Type/id",
// "Type/id/_history/v", the same after a base URL, "Type" or
// "Type?query". Anything else (urn:uuid:, a URL whose path does not end in
// a type and id) is not understood and reports false. A URL that mentions
// a Patient segment but does not end in one is not understood either, so
// that "Patient/B/x" cannot pass as a resource of type "B".
func parseRef(v string) (target, bool) {
	if v == "" {
		return target{}, false
	}
	path, _, conditional := strings.Cut(v, "?")
	absolute := false
	if i := strings.Index(path, "://"); i >= 0 {
		rest := path[i+3:]
		j := strings.IndexByte(rest, '/')
		if j < 0 {
			return target{}, false
		}
		path, absolute = rest[j+1:], true
	}
	// Segments are read from the end, without splitting: this runs for
	// every reference in every response.
	n := strings.Count(path, "/") + 1
	before, last := lastSeg(path)
	if n >= 2 {
		if b, prev := lastSeg(before); prev == "_history" {
			path, n = b, n-2
			before, last = lastSeg(path)
		}
	}
	var prev string
	if n >= 2 {
		_, prev = lastSeg(before)
	}
	var t target
	switch {
	case conditional:
		if n == 0 || (!absolute && n != 1) {
			return target{}, false
		}
		t = target{rtype: last}
	case n >= 2 && (absolute || n == 2) && isResourceType(prev) && isResourceID(last):
		t = target{rtype: prev, id: last}
	case n == 1 && !absolute:
		t = target{rtype: last}
	default:
		return target{}, false
	}
	if !isResourceType(t.rtype) {
		return target{}, false
	}
	if t.rtype != "Patient" && (strings.HasPrefix(v, "Patient/") || strings.Contains(v, "/Patient/") || strings.Contains(v, "/Patient?")) {
		return target{}, false
	}
	return t, true
}

// lastSeg splits p at its last slash.
func lastSeg(p string) (before, last string) {
	i := strings.LastIndexByte(p, '/')
	if i < 0 {
		return "", p
	}
	return p[:i], p[i+1:]
}

func isResourceType(s string) bool {
	return s != "" && s[0] >= 'A' && s[0] <= 'Z' && plan.IsIdent(s)
}

// isResourceID follows the R4 id datatype: 1 to 64 of [A-Za-z0-9-.].
func isResourceID(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '-' || c == '.' || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
			return false
		}
	}
	return true
}

// namesOther reports whether an entry URL (fullUrl, request.url,
// response.location) names another resource than the one the entry
// carries. A URL that names no type and id (urn:uuid:, "Patient" for a
// create, a conditional URL) names nothing to compare; a fullUrl must name
// exactly one resource if it names one at all.
func (x *enforcer) namesOther(u, res *node, full bool) bool {
	if u == nil {
		return false
	}
	if u.kind != kStr {
		return true
	}
	rt, id := res.get("resourceType"), res.get("id")
	if sameResource(u, rt, id) {
		return false
	}
	t, ok := parseRef(u.str())
	if !ok || (t.id == "" && !full) {
		return false
	}
	return t.id == "" || !rt.strIs(t.rtype) || (id != nil && !id.strIs(t.id))
}

// entryWithheld decides a Bundle entry. With a resource, the resource
// decides, and a fullUrl that names another resource than the one carried
// (or a patient outside the grant) withholds it: a reader may trust either.
// Without a resource (a deleted version in a history, a batch answer), the
// URLs the entry carries must show that it is about a granted patient or
// about something that is not patient data.
func (x *enforcer) entryWithheld(e *node, sc *refScope) bool {
	if e.kind != kObj {
		return true
	}
	res := e.get("resource")
	if res != nil {
		if res.kind != kObj || x.withhold(res, sc) {
			return true
		}
		return x.namesOther(e.get("fullUrl"), res, true) || x.namesOther(e.get("request").get("url"), res, false) ||
			x.namesOther(e.get("response").get("location"), res, false)
	}
	if x.any && x.types == nil {
		return false
	}
	for _, u := range []*node{e.get("fullUrl"), e.get("request").get("url"), e.get("response").get("location")} {
		if u == nil {
			continue
		}
		if u.kind != kStr {
			return true
		}
		t, ok := parseRef(u.str())
		if !ok || !x.typeAllowed(t.rtype) {
			return true
		}
		if x.any {
			continue
		}
		if t.rtype == "Patient" {
			if t.id == "" || !x.patients[t.id] {
				return true
			}
			continue
		}
		// Patient data named only by type and id: whose it is cannot be
		// read from the entry.
		if compartment.Member(t.rtype) {
			return true
		}
	}
	return false
}

// labelled reports a sensitivity label the caller is not permitted.
func (x *enforcer) labelled(res *node) bool {
	for _, c := range arrayOf(res.get("meta").get("security")) {
		sys := c.get("system")
		if sys != nil && !sys.strIs(systemActCode) {
			continue
		}
		code := c.get("code").str()
		if sensitivity[code] && !x.permitted[code] {
			return true
		}
	}
	return false
}

func arrayOf(n *node) []*node {
	if n == nil {
		return nil
	}
	n.x()
	if n.kind == kArr {
		return n.arr
	}
	return []*node{n}
}

// eachAt calls fn for every value at the member path below n, through
// repeating elements.
func eachAt(n *node, names []string, fn func(*node)) {
	if n == nil || n.kind != kObj {
		return
	}
	n.x()
	for i := range n.mem {
		if n.mem[i].name() != names[0] {
			continue
		}
		for _, v := range arrayOf(n.mem[i].val) {
			if len(names) == 1 {
				fn(v)
			} else {
				eachAt(v, names[1:], fn)
			}
		}
	}
}

// bundle filters a Bundle's entries. It reports whether anything inside
// changed and whether entries were withheld.
func (r *run) bundle(b *node) (changed, withheld bool) {
	typ := b.get("type").str()
	responses := typ == "batch-response" || typ == "transaction-response"
	entryNode := b.get("entry")
	if entryNode != nil && entryNode.kind != kArr {
		r.fail(errorf(CodeMalformed, "Bundle.entry is not an array"))
		return false, false
	}
	var entries []*node
	if entryNode != nil {
		entries = entryNode.x().arr
	}
	outer := r.scope
	r.scope = &refScope{entries: entries}
	defer func() { r.scope = outer }()
	kept := entries[:0]
	nWithheld, nMatches := 0, 0
	for _, e := range entries {
		if r.enf != nil && r.enf.entryWithheld(e, r.scope) {
			nWithheld++
			if responses && e.kind == kObj {
				// A response Bundle answers its request entry by entry;
				// removing one would shift the answers, so the entry stays
				// and says it was refused.
				e.del("resource")
				e.del("fullUrl")
				e.del("request")
				resp := e.get("response")
				if resp == nil || resp.kind != kObj {
					resp = objNode()
					e.set("response", resp)
				}
				resp.set("status", strNode("403 Forbidden"))
				resp.del("etag")
				resp.del("location")
				resp.del("lastModified")
				resp.set("outcome", r.suppressedOutcome())
				kept = append(kept, e)
				continue
			}
			if mode := e.get("search").get("mode"); mode == nil || mode.strIs("match") {
				nMatches++
			}
			continue
		}
		if e.kind == kObj {
			changed = r.entry(e) || changed
		} else if e.kind == kArr {
			changed = r.nested(e, false) || changed
		}
		kept = append(kept, e)
	}
	for i := range b.mem {
		if b.mem[i].name() != "entry" {
			v := b.mem[i].val
			if v.kind == kObj || v.kind == kArr {
				changed = r.nested(v, false) || changed
			}
		}
	}
	if r.filterLinks(b) {
		changed = true
	}
	if nWithheld == 0 {
		return changed, false
	}
	r.withheld += nWithheld
	if !responses {
		clear(entries[len(kept):])
		entryNode.arr = kept
		entryNode.dirty = true
		oe := objNode("resource", r.suppressedOutcome())
		if typ == "searchset" {
			oe.set("search", objNode("mode", "outcome"))
		}
		entryNode.arr = append(entryNode.arr, oe)
		if typ == "searchset" && paged(b) {
			// Other pages hold matches outside the grant too, in numbers
			// this response cannot know: a total would be a guess, and
			// the unadjusted one counts patients the caller may not see.
			b.del("total")
		} else if total := b.get("total"); total != nil && total.kind == kNum && (typ == "searchset" || typ == "history") {
			removed := nMatches
			if typ == "history" {
				removed = nWithheld
			}
			if n, ok := atoiNum(total.raw); ok {
				total.setNum(itoa(max(n-removed, 0)))
			}
		}
	}
	return true, true
}

// entry filters a kept entry: its resource, already checked by
// entryWithheld, directly; anything else (response.outcome, ...) as
// nested content.
func (r *run) entry(e *node) bool {
	changed := false
	for i := range e.x().mem {
		v := e.mem[i].val
		switch {
		case e.mem[i].name() == "resource" && v.kind == kObj && v.get("resourceType") != nil:
			changed = r.resource(v) || changed
		case v.kind == kObj || v.kind == kArr:
			changed = r.nested(v, false) || changed
		}
	}
	return changed
}

// paged reports whether a Bundle is one page of several (a next or previous link).
func paged(b *node) bool {
	links := b.get("link")
	if links == nil || links.kind != kArr {
		return false
	}
	links.x()
	for _, l := range links.arr {
		if l == nil || l.kind != kObj {
			continue
		}
		if rel := l.get("relation"); rel != nil && (rel.strIs("next") || rel.strIs("previous") || rel.strIs("prev")) {
			return true
		}
	}
	return false
}

func atoiNum(raw []byte) (int, bool) {
	n := 0
	if len(raw) == 0 || len(raw) > 15 {
		return 0, false
	}
	for _, c := range raw {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

// suppressedOutcome explains withheld entries without saying whose or how
// many: a count of hidden psychotherapy notes is itself a disclosure.
func (r *run) suppressedOutcome() *node {
	msg := "Some content was withheld by access policy."
	if r.decisionID != "" && safeID(r.decisionID) {
		msg += " Decision " + r.decisionID + "."
	}
	issue := objNode("severity", "information", "code", "suppressed", "diagnostics", msg)
	return objNode("resourceType", "OperationOutcome", "issue", arrNode(issue))
}

func safeID(s string) bool {
	if len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '-' || c == '_' || c == '.' || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
			return false
		}
	}
	return true
}
