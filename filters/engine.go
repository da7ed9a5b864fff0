package filters

import (
	"mime"
	"slices"
	"strings"

	"github.com/phigate/phigate/plan"
)

// Result is the filtered body and what was done to it, for the audit trail.
type Result struct {
	// Body holds the bytes to send: the original slice when nothing
	// changed, nil when Forbidden.
	Body    []byte
	Changed bool
	// Removed lists the element paths removed, masked or tokenized
	// ("Patient.telecom", "Observation.text"), sorted and unique. Never
	// values.
	Removed []string
	// Withheld counts Bundle entries and nested resources withheld (other
	// patients, types not permitted, sensitivity).
	Withheld int
	// Released counts the resources the client receives: a Bundle's
	// entries carrying a resource (not the outcome that explains what was
	// withheld), or 1 for a single resource or HL7 v2 message. A usage
	// limit on what an identity reads counts it.
	Released int
	// Forbidden: the body is a single resource the caller may not see
	// (another patient, one that cannot be tied to a granted patient, a
	// type not permitted, or a sensitivity label not permitted), or an
	// HL7 v2 message about such a patient. The caller must answer 403 and
	// send none of the body.
	Forbidden bool
}

type mediaKind int

const (
	mediaJSON mediaKind = iota + 1
	mediaHL7
)

// classifyMedia accepts the Content-Type value with parameters. JSON must be
// UTF-8 (RFC 8259); any other charset could hide values from byte-level
// matching, so it is refused rather than guessed.
func classifyMedia(ct string) (mediaKind, error) {
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil {
		return 0, errorf(CodeUnsupportedMedia, "unparseable content type")
	}
	switch mt {
	case "application/fhir+json", "application/json", "application/json+fhir":
		if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") && !strings.EqualFold(cs, "utf8") {
			return 0, errorf(CodeUnsupportedMedia, "charset %q", cs)
		}
		return mediaJSON, nil
	case "application/hl7-v2", "x-application/hl7-v2+er7", "application/hl7-v2+er7":
		return mediaHL7, nil
	}
	return 0, errorf(CodeUnsupportedMedia, "media type %q", mt)
}

// rule is a compiled directive bound to this engine: its token key and
// what it does to a selected value.
type rule struct {
	plan.Rule
	key *tokenKey
	fn  func(v *node) (changed, drop bool)
}

// bind readies the plan's rules for this engine. The plan was compiled
// against the configured key ids, so a key missing here means the plan
// was compiled for other keys, or not at all: both refuse the body.
func (e *Engine) bind(rs []plan.Rule) ([]rule, error) {
	rules := make([]rule, 0, len(rs))
	for i := range rs {
		r := rule{Rule: rs[i]}
		if !r.Compiled() {
			return nil, errorf(CodeBadDirective, "directive %d: not compiled", i)
		}
		if r.Action == plan.ActionTokenize || (r.Action == plan.ActionDeidentify && r.KeyID != "") {
			k, ok := e.keys[r.KeyID]
			if !ok {
				return nil, errorf(CodeBadDirective, "directive %d: unknown key id %q", i, r.KeyID)
			}
			r.key = k
		}
		switch r.Action {
		case plan.ActionRemove:
			r.fn = func(*node) (bool, bool) { return false, true }
		case plan.ActionMask:
			r.fn = func(v *node) (bool, bool) { return maskNode(v), false }
		case plan.ActionTokenize:
			k, ff := r.key, r.FF1()
			r.fn = func(v *node) (bool, bool) { return tokenizeNode(v, k, ff), false }
		}
		rules = append(rules, r)
	}
	return rules, nil
}

// Apply filters body according to p, the plan of the decision decisionID.
// mediaType is the Content-Type value. Any error means the caller must
// fail closed: send none of body.
func (e *Engine) Apply(mediaType string, body []byte, p plan.Plan, decisionID string) (Result, error) {
	if len(body) > e.cfg.MaxBody {
		return Result{}, errorf(CodeTooLarge, "%d bytes over the %d byte limit", len(body), e.cfg.MaxBody)
	}
	mk, err := classifyMedia(mediaType)
	if err != nil {
		return Result{}, err
	}
	rules, err := e.bind(p.Redact)
	if err != nil {
		return Result{}, err
	}
	if p.Empty() {
		return Result{Body: body}, nil
	}
	r := &run{e: e, rules: rules, decisionID: decisionID, removed: map[string]struct{}{}, ruleNotes: map[ruleNote]struct{}{}}
	if p.Enforce != nil {
		r.enf = newEnforcer(p.Enforce)
	}
	if mk == mediaHL7 {
		return r.hl7(body)
	}
	return r.json(body)
}

// run is the state of one Apply.
type run struct {
	e          *Engine
	rules      []rule
	decisionID string
	enf        *enforcer
	removed    map[string]struct{}
	ruleNotes  map[ruleNote]struct{}
	withheld   int
	scope      *refScope // the innermost Bundle's entries, for references between them
	err        error
}

func (r *run) note(path string) { r.removed[path] = struct{}{} }

// noteRule records rule i's path for resource type rt once; the path
// string is only built the first time.
func (r *run) noteRule(i int, rt string) {
	k := ruleNote{i, rt}
	if _, ok := r.ruleNotes[k]; ok {
		return
	}
	r.ruleNotes[k] = struct{}{}
	rl := &r.rules[i]
	r.note(rt + strings.TrimPrefix(rl.Path, rl.Elem().Type))
}

type ruleNote struct {
	rule int
	rt   string
}

func (r *run) fail(err error) {
	if r.err == nil {
		r.err = err
	}
}

func (r *run) result(body []byte, changed bool) Result {
	res := Result{Body: body, Changed: changed, Withheld: r.withheld}
	for p := range r.removed {
		res.Removed = append(res.Removed, p)
	}
	slices.Sort(res.Removed)
	return res
}

func (r *run) json(body []byte) (Result, error) {
	root, err := parseJSON(body, r.e.cfg.MaxDepth)
	if err != nil {
		return Result{}, err
	}
	rt := root.get("resourceType")
	if root.kind != kObj || rt == nil || rt.kind != kStr {
		return Result{}, errorf(CodeMalformed, "not a FHIR resource (no resourceType)")
	}
	if !rt.strIs("Bundle") && r.enf != nil && r.enf.withhold(root, nil) {
		return Result{Forbidden: true}, nil
	}
	changed := r.resource(root)
	if r.err != nil {
		return Result{}, r.err
	}
	released := released(root)
	if !changed {
		res := r.result(body, false)
		res.Released = released
		return res, nil
	}
	settle(root)
	out := root.write(make([]byte, 0, len(body)+len(body)/16+64))
	res := r.result(out, true)
	res.Released = released
	return res, nil
}

// released counts the resources a filtered body hands over: a Bundle's
// entries with a resource, but for OperationOutcomes (the one phigate adds
// to say what was withheld among them), or 1.
func released(root *node) int {
	if !root.get("resourceType").strIs("Bundle") {
		return 1
	}
	n := 0
	for _, e := range arrayOf(root.get("entry")) {
		if e.kind != kObj {
			continue
		}
		if res := e.get("resource"); res != nil && !res.get("resourceType").strIs("OperationOutcome") {
			n++
		}
	}
	return n
}

// resource filters one resource and everything nested in it, and reports
// whether anything in it changed.
func (r *run) resource(res *node) bool {
	rt := res.get("resourceType").str()
	if rt == "Bundle" {
		inner, withheld := r.bundle(res)
		if withheld {
			r.markRedacted(res)
		}
		own := r.applyRules(res, rt)
		return inner || withheld || own
	}
	nested := r.nested(res, true)
	own := r.applyRules(res, rt)
	if nested || own {
		res.del("text")
		r.markRedacted(res)
		return true
	}
	return false
}

// nested finds resources below n (contained, Parameters.parameter.resource,
// Bundles inside resources) and filters them. At the top (the resource
// itself) n's own resourceType is not a nested resource. A nested resource
// the caller may not see is removed from where it sits (the member or array
// element holding it) and counted as withheld; contained resources were
// already judged with their container, which they belong to.
func (r *run) nested(n *node, top bool) bool {
	if !n.mayHoldResource() {
		return false
	}
	n.x()
	switch n.kind {
	case kObj:
		isRes := false
		if rt := n.get("resourceType"); rt != nil && rt.kind == kStr {
			if !top {
				return r.resource(n)
			}
			isRes = true
		}
		ch := false
		out := n.mem[:0]
		for _, m := range n.mem {
			v := m.val
			switch {
			case isRes && m.name() == "contained" && v.kind == kArr:
				for _, c := range v.x().arr {
					if c.kind == kObj || c.kind == kArr {
						ch = r.nested(c, false) || ch
					}
				}
			case r.drop(v):
				ch = true
				continue
			case v.kind == kObj || v.kind == kArr:
				ch = r.nested(v, false) || ch
			}
			out = append(out, m)
		}
		if len(out) != len(n.mem) {
			clear(n.mem[len(out):])
			n.mem = out
			n.dirty = true
		}
		return ch
	case kArr:
		ch := false
		out := n.arr[:0]
		for _, e := range n.arr {
			if r.drop(e) {
				ch = true
				continue
			}
			if e.kind == kObj || e.kind == kArr {
				ch = r.nested(e, false) || ch
			}
			out = append(out, e)
		}
		if len(out) != len(n.arr) {
			clear(n.arr[len(out):])
			n.arr = out
			n.dirty = true
		}
		return ch
	}
	return false
}

// drop reports whether v is a nested resource the enforcement withholds,
// and counts it.
func (r *run) drop(v *node) bool {
	if r.enf == nil || v.kind != kObj || !v.mayHoldResource() {
		return false
	}
	if rt := v.get("resourceType"); rt == nil || rt.kind != kStr {
		return false
	}
	if !r.enf.withhold(v, r.scope) {
		return false
	}
	r.withheld++
	return true
}

// applies reports whether a rule's resource type selects rt. "*" selects
// every resource but Bundle, which is a container rather than data.
func (rl *rule) applies(rt string) bool {
	t := rl.Elem().Type
	if t == "*" {
		return rt != "Bundle"
	}
	return t == rt
}

func (r *run) applyRules(res *node, rt string) bool {
	changed := false
	for i := range r.rules {
		rl := &r.rules[i]
		switch rl.Action {
		case plan.ActionDeidentify:
			changed = r.safeHarbor(res, rt, rl) || changed
			continue
		case plan.ActionAllow:
			if !rl.applies(rt) {
				continue
			}
			out := res.mem[:0]
			for _, m := range res.mem {
				if rl.Keeps(m.name()) {
					out = append(out, m)
				} else {
					r.note(rt + "." + m.name())
				}
			}
			if len(out) != len(res.mem) {
				clear(res.mem[len(out):])
				res.mem = out
				res.dirty = true
				changed = true
			}
			continue
		}
		if !rl.applies(rt) {
			continue
		}
		if visit(res, rl.Elem().Steps, rl.fn) {
			changed = true
			r.noteRule(i, rt)
		}
	}
	return changed
}

const redactedCoding = `{"system":"` + systemObservationValue + `","code":"REDACTED","display":"redacted"}`

const (
	systemObservationValue = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue"
	systemActCode          = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
)

// markRedacted adds the REDACTED security label once, so a consumer can
// tell a redacted record from a complete one.
func (r *run) markRedacted(res *node) {
	meta := res.get("meta")
	if meta == nil {
		after := "resourceType"
		if res.get("id") != nil {
			after = "id"
		}
		res.insertAfter(after, "meta", rawNode(`{"security":[`+redactedCoding+`]}`))
		return
	} else if meta.kind != kObj {
		r.fail(errorf(CodeMalformed, "meta is not an object"))
		return
	}
	coding := func() *node { return rawNode(redactedCoding) }
	sec := meta.get("security")
	switch {
	case sec == nil:
		meta.set("security", rawNode(`[`+redactedCoding+`]`))
	case sec.kind != kArr:
		r.fail(errorf(CodeMalformed, "meta.security is not an array"))
	default:
		sec.x()
		for _, c := range sec.arr {
			if c.get("system").strIs(systemObservationValue) && c.get("code").strIs("REDACTED") {
				return
			}
		}
		sec.arr = append(sec.arr, coding())
		sec.dirty = true
	}
}
