package audit

import (
	"github.com/phigate/phigate/internal/credential"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/phigate/phigate/authz"
	"github.com/phigate/phigate/internal/jsonstr"
	"github.com/phigate/phigate/plan"
)

// Record payloads are encoded by hand, not with encoding/json, because one
// is encoded on the decision path of every Check and reflection was most of
// its cost. The output is byte for byte what json.Marshal produces for the
// same storedRecord (key order, omitempty, null for nil slices and maps,
// sorted map keys, HTML-safe string escaping), so records written before and
// after this encoder existed read and verify alike. The request's writers
// (encode_gen.go) are generated from authz.Request; the event and decision
// writers are written here. encode_test.go holds the encoder to
// encoding/json with varied records and with every field of every type set,
// so a field added to authz.Decision fails the tests until it is added here,
// and one added to authz.Request until the code is generated again.
//
// Members are written with a leading comma, which comma leaves out when the
// object or array was just opened: no JSON value ends in '{' or '[', so the
// previous byte says so.

// payloadPool holds record buffers between the caller that encodes a record
// and the committer that frames it.
var payloadPool = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

// maxPooledPayload keeps a rare huge record (a large batch) from pinning
// its buffer in the pool.
const maxPooledPayload = 64 << 10

func getPayloadBuf() []byte { return (*payloadPool.Get().(*[]byte))[:0] }

func putPayloadBuf(b []byte) {
	if cap(b) == 0 || cap(b) > maxPooledPayload {
		return
	}
	b = b[:0]
	payloadPool.Put(&b)
}

// encodeDecision appends the stored record of one decision.
func encodeDecision(dst []byte, ev *AuditEvent, req *authz.Request, d *authz.Decision) []byte {
	dst = append(dst, `{"v":1,"kind":"decision","event":`...)
	dst = appendEvent(dst, ev)
	dst = append(dst, `,"input":`...)
	dst = appendPolicyInput(dst, req)
	if d.ID != "" {
		dst = append(dst, `,"decision_id":`...)
		dst = appendString(dst, d.ID)
	}
	dst = append(dst, `,"decision":`...)
	dst = appendDecision(dst, d)
	return append(dst, '}')
}

// encodeCompact appends the stored record of a compact substitute: the
// event alone, without the policy input and decision document that made the
// original too large (replay skips it, as it has no input).
func encodeCompact(dst []byte, ev *AuditEvent, decisionID string) []byte {
	dst = append(dst, `{"v":1,"kind":"decision","event":`...)
	dst = appendEvent(dst, ev)
	if decisionID != "" {
		dst = append(dst, `,"decision_id":`...)
		dst = appendString(dst, decisionID)
	}
	return append(dst, `,"truncated":true}`...)
}

// encodeQuarantine appends the stored record of a quarantine.
func encodeQuarantine(dst []byte, ev *AuditEvent) []byte {
	dst = append(dst, `{"v":1,"kind":"quarantine","event":`...)
	dst = appendEvent(dst, ev)
	return append(dst, '}')
}

// encodeFiltering appends the stored record of one filtering event.
func encodeFiltering(dst []byte, ev *AuditEvent, decisionID string) []byte {
	dst = append(dst, `{"v":1,"kind":"filtering","event":`...)
	dst = appendEvent(dst, ev)
	if decisionID != "" {
		dst = append(dst, `,"decision_id":`...)
		dst = appendString(dst, decisionID)
	}
	return append(dst, '}')
}

// comma appends the comma between members unless the enclosing object or
// array was just opened.
func comma(dst []byte) []byte {
	if c := dst[len(dst)-1]; c != '{' && c != '[' {
		dst = append(dst, ',')
	}
	return dst
}

// key appends the comma if one is due, then the quoted key and colon k (for
// example `"id":`).
func key(dst []byte, k string) []byte { return append(comma(dst), k...) }

func appendBool(dst []byte, v bool) []byte {
	if v {
		return append(dst, "true"...)
	}
	return append(dst, "false"...)
}

// optString appends the field k when s is not empty (omitempty).
func optString(dst []byte, k, s string) []byte {
	if s == "" {
		return dst
	}
	return appendString(key(dst, k), s)
}

// appendStrings appends a []string as encoding/json does: null when nil.
func appendStrings(dst []byte, ss []string) []byte {
	if ss == nil {
		return append(dst, "null"...)
	}
	dst = append(dst, '[')
	for _, s := range ss {
		dst = appendString(comma(dst), s)
	}
	return append(dst, ']')
}

// optStrings appends the field k when ss is not empty (omitempty).
func optStrings(dst []byte, k string, ss []string) []byte {
	if len(ss) == 0 {
		return dst
	}
	return appendStrings(key(dst, k), ss)
}

// sortedKeys returns m's keys in encoding/json's order (bytewise), using
// scratch when it is large enough.
func sortedKeys[V any](m map[string]V, scratch []string) []string {
	keys := scratch[:0]
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// appendMap appends a map with string keys as encoding/json does: null
// when nil, keys sorted, each value written by val.
func appendMap[V any](dst []byte, m map[string]V, val func([]byte, V) []byte) []byte {
	if m == nil {
		return append(dst, "null"...)
	}
	var scratch [16]string
	dst = append(dst, '{')
	for _, k := range sortedKeys(m, scratch[:]) {
		dst = appendMember(dst, k)
		dst = val(dst, m[k])
	}
	return append(dst, '}')
}

// appendMember appends the separator (when needed) and the key of an
// object member.
func appendMember(dst []byte, k string) []byte {
	return append(appendString(comma(dst), k), ':')
}

func appendStringMap(dst []byte, m map[string]string) []byte { return appendMap(dst, m, appendString) }

// ---- AuditEvent ----

// appendEvent appends ev as json.Marshal(ev) would.
func appendEvent(dst []byte, ev *AuditEvent) []byte {
	if ev == nil {
		return append(dst, "null"...)
	}
	dst = append(dst, `{"resourceType":`...)
	dst = appendString(dst, ev.ResourceType)
	dst = optString(dst, `"id":`, ev.ID)
	if ev.Meta != nil {
		dst = append(dst, `,"meta":{`...)
		dst = optStrings(dst, `"profile":`, ev.Meta.Profile)
		dst = append(dst, '}')
	}
	dst = append(dst, `,"type":`...)
	dst = appendCoding(dst, &ev.Type)
	if len(ev.Subtype) > 0 {
		dst = appendCodings(append(dst, `,"subtype":`...), ev.Subtype)
	}
	dst = optString(dst, `"action":`, ev.Action)
	dst = append(dst, `,"recorded":`...)
	dst = appendString(dst, ev.Recorded)
	dst = optString(dst, `"outcome":`, ev.Outcome)
	dst = optString(dst, `"outcomeDesc":`, ev.OutcomeDesc)
	if len(ev.PurposeOfEvent) > 0 {
		dst = appendConcepts(append(dst, `,"purposeOfEvent":`...), ev.PurposeOfEvent)
	}
	dst = append(dst, `,"agent":`...)
	if ev.Agent == nil {
		dst = append(dst, "null"...)
	} else {
		dst = appendArray(dst, ev.Agent, appendAgent)
	}
	dst = append(dst, `,"source":{`...)
	dst = optString(dst, `"site":`, ev.Source.Site)
	dst = appendReference(key(dst, `"observer":`), &ev.Source.Observer)
	if len(ev.Source.Type) > 0 {
		dst = appendCodings(append(dst, `,"type":`...), ev.Source.Type)
	}
	dst = append(dst, '}')
	if len(ev.Entity) > 0 {
		dst = appendArray(append(dst, `,"entity":`...), ev.Entity, appendEntity)
	}
	return append(dst, '}')
}

// fixedCodings are the codings the builder copies from package variables,
// which most records repeat, encoded once.
var fixedCodings = func() map[Coding]string {
	m := map[Coding]string{}
	for _, c := range []Coding{typeRest, entityPerson, entitySystem, rolePatient, roleDomain, roleQuery, roleJob,
		entityXRequest, overrideStart, overrideStop, purposeBTG, sourceApplicationServer,
		agentRecipient, agentSource, agentDestination} {
		m[c] = string(appendCodingFields(nil, &c))
	}
	return m
}()

func appendCoding(dst []byte, c *Coding) []byte {
	if enc, ok := fixedCodings[*c]; ok {
		return append(dst, enc...)
	}
	return appendCodingFields(dst, c)
}

func appendCodingFields(dst []byte, c *Coding) []byte {
	dst = append(dst, '{')
	dst = optString(dst, `"system":`, c.System)
	dst = optString(dst, `"code":`, c.Code)
	dst = optString(dst, `"display":`, c.Display)
	return append(dst, '}')
}

// appendArray appends xs, present even when empty, each element by elem.
func appendArray[T any](dst []byte, xs []T, elem func([]byte, *T) []byte) []byte {
	dst = append(dst, '[')
	for i := range xs {
		dst = elem(comma(dst), &xs[i])
	}
	return append(dst, ']')
}

// appendCodings appends a non-nil []Coding.
func appendCodings(dst []byte, cs []Coding) []byte { return appendArray(dst, cs, appendCoding) }

func appendConcept(dst []byte, c *CodeableConcept) []byte {
	dst = append(dst, '{')
	if len(c.Coding) > 0 {
		dst = appendCodings(append(dst, `"coding":`...), c.Coding)
	}
	dst = optString(dst, `"text":`, c.Text)
	return append(dst, '}')
}

// appendConcepts appends a non-nil []CodeableConcept.
func appendConcepts(dst []byte, cs []CodeableConcept) []byte {
	return appendArray(dst, cs, appendConcept)
}

func appendReference(dst []byte, r *Reference) []byte {
	dst = append(dst, '{')
	dst = optString(dst, `"reference":`, r.Reference)
	if id := r.Identifier; id != nil {
		dst = append(key(dst, `"identifier":`), '{')
		dst = optString(dst, `"system":`, id.System)
		dst = optString(dst, `"value":`, id.Value)
		dst = append(dst, '}')
	}
	dst = optString(dst, `"display":`, r.Display)
	return append(dst, '}')
}

func appendAgent(dst []byte, a *Agent) []byte {
	dst = append(dst, '{')
	if a.Type != nil {
		dst = appendConcept(append(dst, `"type":`...), a.Type)
	}
	if len(a.Role) > 0 {
		dst = appendConcepts(key(dst, `"role":`), a.Role)
	}
	if a.Who != nil {
		dst = appendReference(key(dst, `"who":`), a.Who)
	}
	dst = optString(dst, `"altId":`, a.AltID)
	dst = appendBool(key(dst, `"requestor":`), a.Requestor)
	dst = optStrings(dst, `"policy":`, a.Policy)
	if n := a.Network; n != nil {
		dst = append(dst, `,"network":{`...)
		dst = optString(dst, `"address":`, n.Address)
		dst = optString(dst, `"type":`, n.Type)
		dst = append(dst, '}')
	}
	if len(a.PurposeOfUse) > 0 {
		dst = appendConcepts(append(dst, `,"purposeOfUse":`...), a.PurposeOfUse)
	}
	return append(dst, '}')
}

func appendEntity(dst []byte, e *Entity) []byte {
	dst = append(dst, '{')
	if e.What != nil {
		dst = appendReference(append(dst, `"what":`...), e.What)
	}
	if e.Type != nil {
		dst = appendCoding(key(dst, `"type":`), e.Type)
	}
	if e.Role != nil {
		dst = appendCoding(key(dst, `"role":`), e.Role)
	}
	if e.Lifecycle != nil {
		dst = appendCoding(key(dst, `"lifecycle":`), e.Lifecycle)
	}
	dst = optString(dst, `"description":`, e.Description)
	dst = optString(dst, `"query":`, e.Query)
	if len(e.Detail) > 0 {
		dst = append(key(dst, `"detail":`), '[')
		for i := range e.Detail {
			dst = append(comma(dst), `{"type":`...)
			dst = appendString(dst, e.Detail[i].Type)
			dst = append(dst, `,"valueString":`...)
			dst = appendString(dst, e.Detail[i].ValueString)
			dst = append(dst, '}')
		}
		dst = append(dst, ']')
	}
	return append(dst, '}')
}

// ---- policy input (authz.Request) ----

// appendPolicyInput appends the policy input document as stored: req with
// credential headers, and any header carrying a bearer token, removed and
// the remaining header names lower-cased. appendJSONRequest and the writers
// of the request's parts are generated from authz.Request (encode_gen.go).
func appendPolicyInput(dst []byte, req *authz.Request) []byte { return appendJSONRequest(dst, req) }

// storedHeader is one header kept in the policy input; key is its name as
// given, name lower case.
type storedHeader struct{ key, name, value string }

// appendStoredHeaders appends the headers that may be stored, names lower
// case, in sorted order. A nil map stays null, as it did when the filtered
// copy was marshalled. Names are lower case by contract (authz.CheckInput);
// should two differ only in case anyway, the value of the one whose name as
// given sorts last is kept, where the filtered map kept whichever one map
// iteration reached last.
func appendStoredHeaders(dst []byte, h map[string]string) []byte {
	if h == nil {
		return append(dst, "null"...)
	}
	var scratch [24]storedHeader
	kept := scratch[:0]
	for k, v := range h {
		lk := strings.ToLower(k)
		if credential.Header(lk, v) {
			continue
		}
		kept = append(kept, storedHeader{k, lk, v})
	}
	if len(kept) > 1 {
		slices.SortFunc(kept, func(a, b storedHeader) int {
			if c := strings.Compare(a.name, b.name); c != 0 {
				return c
			}
			return strings.Compare(a.key, b.key)
		})
	}
	dst = append(dst, '{')
	for i, sh := range kept {
		if i+1 < len(kept) && kept[i+1].name == sh.name {
			continue // a later duplicate wins
		}
		dst = appendString(appendMember(dst, sh.name), sh.value)
	}
	return append(dst, '}')
}

// ---- authz.Decision ----

func appendDecision(dst []byte, d *authz.Decision) []byte {
	dst = append(dst, `{"allow":`...)
	dst = appendBool(dst, d.Allow)
	dst = append(dst, `,"status":`...)
	dst = strconv.AppendInt(dst, int64(d.Status), 10)
	dst = optString(dst, `"reason":`, d.Reason)
	if len(d.Headers) > 0 {
		dst = appendStringMap(append(dst, `,"headers":`...), d.Headers)
	}
	dst = optStrings(dst, `"remove_headers":`, d.RemoveHeaders)
	if len(d.ResponseHeaders) > 0 {
		dst = appendStringMap(append(dst, `,"response_headers":`...), d.ResponseHeaders)
	}
	if len(d.Redact) > 0 {
		dst = appendArray(append(dst, `,"redact":`...), d.Redact, appendDirective)
	}
	if e := d.Enforce; e != nil {
		dst = append(dst, `,"enforce":{`...)
		dst = optStrings(dst, `"patients":`, e.Patients)
		if e.AnyPatient {
			dst = append(key(dst, `"any_patient":`), "true"...)
		}
		dst = optStrings(dst, `"permitted_labels":`, e.PermittedLabels)
		dst = optStrings(dst, `"resource_types":`, e.ResourceTypes)
		dst = append(dst, '}')
	}
	dst = append(dst, `,"break_glass":{"active":`...)
	dst = appendBool(dst, d.BreakGlass.Active)
	dst = optString(dst, `"reason":`, d.BreakGlass.Reason)
	dst = optString(dst, `"expires":`, d.BreakGlass.Expires)
	dst = append(dst, '}')
	if len(d.Obligations) > 0 {
		dst = append(dst, `,"obligations":[`...)
		for i := range d.Obligations {
			o := &d.Obligations[i]
			dst = append(comma(dst), `{"type":`...)
			dst = appendString(dst, o.Type)
			if len(o.Params) > 0 {
				dst = appendStringMap(append(dst, `,"params":`...), o.Params)
			}
			dst = append(dst, '}')
		}
		dst = append(dst, ']')
	}
	dst = append(dst, `,"audit":{`...)
	dst = optStrings(dst, `"patients":`, d.Audit.Patients)
	dst = optString(dst, `"purpose":`, d.Audit.Purpose)
	dst = optStrings(dst, `"rules":`, d.Audit.Rules)
	return append(dst, `}}`...)
}

// appendDirective writes a rule as its directive was written: the JSON of a
// plan.Rule is its embedded Directive's.
func appendDirective(dst []byte, r *plan.Rule) []byte {
	dst = append(dst, '{')
	dst = optString(dst, `"path":`, r.Path)
	dst = appendString(key(dst, `"action":`), string(r.Action))
	dst = optString(dst, `"key_id":`, r.KeyID)
	dst = optString(dst, `"format":`, r.Format)
	dst = optStrings(dst, `"keep":`, r.Keep)
	dst = optString(dst, `"profile":`, r.Profile)
	return append(dst, '}')
}

// ---- strings ----

// appendString appends s as a JSON string exactly as encoding/json does with
// HTML escaping on (its default).
func appendString(dst []byte, s string) []byte { return jsonstr.Append(dst, s, true) }
