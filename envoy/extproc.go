package envoy

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/phigate/phigate/filters"
	"github.com/phigate/phigate/internal/compartment"
	"github.com/phigate/phigate/plan"
)

// AuthzNamespace is the dynamic metadata namespace ext_authz writes to and
// ext_proc forwards.
const AuthzNamespace = "envoy.filters.http.ext_authz"

// BodyFilter is the response filter engine as the adapter sees it. Keys
// are the token key ids it holds: each plan is compiled against them when
// its metadata is decoded, before any body is buffered.
type BodyFilter interface {
	Apply(mediaType string, body []byte, p plan.Plan, decisionID string) (filters.Result, error)
	Keys() plan.Keys
}

// FilterEvent describes what the response side removed, for the audit trail.
type FilterEvent struct {
	RequestID  string
	DecisionID string
	Removed    []string // element paths and header names, never values
	Withheld   int
	Forbidden  bool   // the body is about a patient, type or label outside the grant
	Refused    string // why the response was refused (a Refused* code), if it was
	Status     int    // the status the client got instead, when refused
	// User and Patients are who asked and the patients the request named,
	// as the plan metadata carried them (version 2 on); empty from a
	// decision side that writes version 1.
	User     plan.User
	Patients []string
}

// eventOf is the filtering event of the plan's exchange, before what the
// response side did is filled in.
func eventOf(p *plan.Metadata) FilterEvent {
	return FilterEvent{RequestID: p.RequestID, DecisionID: p.DecisionID, User: p.User, Patients: p.Patients}
}

// Why a response was refused, as written to the audit trail and logs. They
// are fixed words, never data from the request or response. The codes of
// filters.Code (malformed_body, body_too_large, unsupported_media_type,
// bad_directive, unsupported_segment) are used as they are; bad_directive
// is also a verified plan that does not compile against this side's keys.
const (
	// RefusedOutsideGrant (403): the body is about a patient, a resource
	// type or a sensitivity label the decision did not grant.
	RefusedOutsideGrant = "outside_grant"
	// RefusedContentEncoding (502): the upstream compressed the body.
	RefusedContentEncoding = "content_encoding"
	// RefusedPartialBody (502): Envoy's buffer limit cut the body.
	RefusedPartialBody = "partial_body"
	// RefusedMarkerMissing (502): the request reached ext_proc without a
	// plan marker, as on a route without ext_authz.
	RefusedMarkerMissing = "plan_marker_missing"
	// RefusedMarkerInvalid (502): a marker is there but does not verify
	// for this plan, this request and this key, or the plan it vouches
	// for cannot be read (no version, another version, not a plan).
	RefusedMarkerInvalid = "plan_marker_invalid"
	// RefusedUsageLimit (403): the response would take its user over a
	// limit on the resources released to them; an alert is raised.
	RefusedUsageLimit = "usage_limit"
	// RefusedCountersAway (503): the usage counters could not be read.
	RefusedCountersAway = "counters_unavailable"
)

// FilterRecorder writes the audit record of a filtered response.
type FilterRecorder interface {
	RecordFiltering(ctx context.Context, ev FilterEvent) error
}

// ProcServer is the ext_proc ExternalProcessor service.
type ProcServer struct {
	extprocv3.UnimplementedExternalProcessorServer
	filter   BodyFilter
	keys     plan.Keys // the filter's, read once: plans are compiled against them
	recorder FilterRecorder
	marker   *MarkerKey
	usage    UsageWatcher
	log      *zap.Logger
	outcomes *prometheus.CounterVec
}

// NewProcServer returns the ext_proc adapter. recorder may be nil. The
// marker key must be the one the AuthServer signs with (WithMarkerKey).
func NewProcServer(f BodyFilter, rec FilterRecorder, log *zap.Logger, reg prometheus.Registerer, opts ...Option) (*ProcServer, error) {
	if log == nil {
		log = zap.NewNop()
	}
	o, err := buildOptions(opts)
	if err != nil {
		return nil, err
	}
	var keys plan.Keys
	if f != nil {
		keys = f.Keys()
	}
	s := &ProcServer{filter: f, keys: keys, recorder: rec, marker: o.marker, usage: o.usage, log: log,
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phigate_extproc_responses_total",
			Help: "Responses seen by ext_proc, by outcome (passed, unchanged, redacted, forbidden, refused, unmarked: no valid plan marker).",
		}, []string{"outcome"}),
	}
	if reg != nil {
		if err := reg.Register(s.outcomes); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// stream is the state of one HTTP exchange.
type stream struct {
	plan      *plan.Metadata
	refused   bool // no valid marker: every message is answered with the refusal
	mediaType string
	grant     map[string]bool // patients of a grant limited to patients; nil otherwise
	removed   []string        // response headers dropped for naming other patients
	vouch     []vouched       // headers only the body can vouch for
	countOnly bool            // an unfiltered body whose bytes count against a limit
}

// Process handles one HTTP exchange's stream. Only the response side is
// configured: response headers always, the buffered body only when the
// decision carried a plan that asks for something. Whatever arrives
// first must carry a plan with a valid marker, or the response is refused.
func (s *ProcServer) Process(srv extprocv3.ExternalProcessor_ProcessServer) error {
	ctx := srv.Context()
	var st stream
	for {
		req, err := srv.Recv()
		if errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled {
			return nil
		}
		if err != nil {
			return err
		}
		if st.refused {
			if err := srv.Send(immediate(http.StatusBadGateway, "")); err != nil {
				return err
			}
			continue
		}
		if st.plan == nil && envoyReply(req) {
			// Envoy wrote this response itself (a denial, a 413, an
			// upstream that could not be reached): nothing in it came from
			// the legacy service, and a denial has no plan to carry.
			st.plan = &plan.Metadata{}
		}
		if st.plan == nil {
			p, why := s.planOf(req)
			if why != "" {
				// The decision cannot be known, so neither can what it
				// asked for: the response cannot be released.
				st.refused = true
				outcome, msg := "unmarked", "response refused: no valid plan marker"
				if why == string(filters.CodeBadDirective) {
					outcome, msg = "refused", "response refused: the plan does not compile against this side's keys"
				}
				s.outcomes.WithLabelValues(outcome).Inc()
				rid, hasID := requestIDOf(req)
				s.log.Warn(msg, zap.String("why", why), zap.Bool("request_id_attribute", hasID))
				s.record(ctx, FilterEvent{RequestID: rid, Refused: why, Status: http.StatusBadGateway})
				if err := srv.Send(immediate(http.StatusBadGateway, "")); err != nil {
					return err
				}
				continue
			}
			st.plan = p
			if e := p.Enforce; e != nil && !e.AnyPatient {
				st.grant = make(map[string]bool, len(e.Patients))
				for _, id := range e.Patients {
					st.grant[id] = true
				}
			}
		}
		resp := s.handle(ctx, &st, req)
		if err := srv.Send(resp); err != nil {
			return err
		}
	}
}

func (s *ProcServer) handle(ctx context.Context, st *stream, req *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
	switch r := req.Request.(type) {
	case *extprocv3.ProcessingRequest_ResponseHeaders:
		return s.responseHeaders(ctx, st, r.ResponseHeaders)
	case *extprocv3.ProcessingRequest_ResponseBody:
		return s.responseBody(ctx, st, r.ResponseBody)
	case *extprocv3.ProcessingRequest_RequestHeaders:
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocv3.HeadersResponse{}}}
	case *extprocv3.ProcessingRequest_RequestBody:
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{RequestBody: &extprocv3.BodyResponse{}}}
	case *extprocv3.ProcessingRequest_RequestTrailers:
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestTrailers{RequestTrailers: &extprocv3.TrailersResponse{}}}
	case *extprocv3.ProcessingRequest_ResponseTrailers:
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseTrailers{ResponseTrailers: &extprocv3.TrailersResponse{}}}
	default:
		s.outcomes.WithLabelValues("refused").Inc()
		return immediate(http.StatusBadGateway, "")
	}
}

func (s *ProcServer) responseHeaders(ctx context.Context, st *stream, h *extprocv3.HttpHeaders) *extprocv3.ProcessingResponse {
	if st.plan.Empty() && s.usage != nil && len(st.plan.Limits) > 0 && !h.GetEndOfStream() {
		// Nothing to filter (an approved export file), but its volume
		// counts: from its length when it says, else from its body.
		if n, err := strconv.Atoi(headerValue(h.GetHeaders(), "content-length")); err == nil && n >= 0 {
			if refusal := s.countUnfiltered(ctx, st, n); refusal != nil {
				return refusal
			}
		} else {
			st.countOnly = true
			return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseHeaders{ResponseHeaders: &extprocv3.HeadersResponse{}}}
		}
	}
	if st.plan.Empty() {
		// The decision asked for nothing: one header round trip, and the
		// body streams past without being buffered.
		s.outcomes.WithLabelValues("passed").Inc()
		return &extprocv3.ProcessingResponse{
			Response:     &extprocv3.ProcessingResponse_ResponseHeaders{ResponseHeaders: &extprocv3.HeadersResponse{}},
			ModeOverride: &filterv3.ProcessingMode{ResponseBodyMode: filterv3.ProcessingMode_NONE},
		}
	}
	judgeLocations(st, h.GetHeaders())
	if h.GetEndOfStream() {
		// A response without a body carries nothing to redact, and nothing
		// to vouch for a header that names patient data.
		for _, v := range st.vouch {
			st.removed = append(st.removed, v.header)
		}
		st.vouch = nil
		if len(st.removed) == 0 {
			s.outcomes.WithLabelValues("unchanged").Inc()
			return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseHeaders{ResponseHeaders: &extprocv3.HeadersResponse{}}}
		}
		ev := eventOf(st.plan)
		ev.Removed = headerPaths(nil, st.removed)
		if !s.record(ctx, ev) {
			return immediate(http.StatusBadGateway, st.plan.DecisionID)
		}
		s.outcomes.WithLabelValues("redacted").Inc()
		return headersRemoved(st.removed)
	}
	enc := strings.ToLower(strings.TrimSpace(headerValue(h.GetHeaders(), "content-encoding")))
	if enc != "" && enc != "identity" {
		return s.refuse(ctx, st, http.StatusBadGateway, RefusedContentEncoding)
	}
	ct := headerValue(h.GetHeaders(), "content-type")
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil || !filterable(mt) {
		status := http.StatusBadGateway
		if mt == "application/fhir+xml" || mt == "application/xml" || mt == "text/xml" {
			// A format the client can change: it may ask for JSON.
			status = http.StatusNotAcceptable
		}
		return s.refuse(ctx, st, status, string(filters.CodeUnsupportedMedia))
	}
	st.mediaType = ct
	if len(st.removed) > 0 {
		// Dropped now; recorded with what the body phase does.
		return headersRemoved(st.removed)
	}
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseHeaders{ResponseHeaders: &extprocv3.HeadersResponse{}}}
}

func headersRemoved(names []string) *extprocv3.ProcessingResponse {
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseHeaders{ResponseHeaders: &extprocv3.HeadersResponse{
		Response: &extprocv3.CommonResponse{HeaderMutation: &extprocv3.HeaderMutation{RemoveHeaders: names}},
	}}}
}

// headerPaths appends the audit names of removed headers ("header.location").
func headerPaths(dst, names []string) []string {
	for _, n := range names {
		dst = append(dst, "header."+n)
	}
	return dst
}

// filterable lists the media types the engine can redact. Anything else is
// refused when the decision demands redaction.
func filterable(mt string) bool {
	switch mt {
	case "application/fhir+json", "application/json", "application/json+fhir",
		"application/hl7-v2", "x-application/hl7-v2+er7", "application/hl7-v2+er7":
		return true
	}
	return false
}

func (s *ProcServer) responseBody(ctx context.Context, st *stream, b *extprocv3.HttpBody) *extprocv3.ProcessingResponse {
	if st.countOnly {
		if !b.GetEndOfStream() {
			return s.refuse(ctx, st, http.StatusBadGateway, RefusedPartialBody)
		}
		if refusal := s.countUnfiltered(ctx, st, len(b.GetBody())); refusal != nil {
			return refusal
		}
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{ResponseBody: &extprocv3.BodyResponse{}}}
	}
	if st.plan.Empty() {
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{ResponseBody: &extprocv3.BodyResponse{}}}
	}
	if !b.GetEndOfStream() {
		// Buffered mode delivers the whole body at once; a partial body
		// means the buffer limit was reached.
		return s.refuse(ctx, st, http.StatusBadGateway, RefusedPartialBody)
	}
	res, err := s.filter.Apply(st.mediaType, b.GetBody(), st.plan.Plan, st.plan.DecisionID)
	if err != nil {
		return s.refuse(ctx, st, http.StatusBadGateway, string(filters.CodeOf(err)))
	}
	if res.Forbidden {
		s.outcomes.WithLabelValues("forbidden").Inc()
		ev := eventOf(st.plan)
		ev.Removed, ev.Withheld = res.Removed, res.Withheld
		ev.Forbidden, ev.Refused, ev.Status = true, RefusedOutsideGrant, http.StatusForbidden
		if !s.record(ctx, ev) {
			return immediate(http.StatusBadGateway, st.plan.DecisionID)
		}
		return immediate(http.StatusForbidden, st.plan.DecisionID)
	}
	if s.usage != nil && len(st.plan.Limits) > 0 {
		if refusal := s.count(ctx, st, map[string]int{plan.KindReleasedResources: res.Released, plan.KindReleasedBytes: len(res.Body)}); refusal != nil {
			return refusal
		}
	}
	for _, v := range st.vouch {
		if !bodyIs(st.mediaType, res.Body, v.target) {
			st.removed = append(st.removed, v.header)
		}
	}
	st.vouch = nil
	if !res.Changed && len(st.removed) == 0 {
		s.outcomes.WithLabelValues("unchanged").Inc()
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{ResponseBody: &extprocv3.BodyResponse{}}}
	}
	ev := eventOf(st.plan)
	ev.Removed, ev.Withheld = headerPaths(slices.Clip(res.Removed), st.removed), res.Withheld
	if !s.record(ctx, ev) {
		return immediate(http.StatusBadGateway, st.plan.DecisionID)
	}
	s.outcomes.WithLabelValues("redacted").Inc()
	cr := &extprocv3.CommonResponse{Status: extprocv3.CommonResponse_CONTINUE, HeaderMutation: &extprocv3.HeaderMutation{RemoveHeaders: st.removed}}
	if res.Changed {
		cr.HeaderMutation.SetHeaders = []*corev3.HeaderValueOption{rawHeader("content-length", strconv.Itoa(len(res.Body)))}
		cr.HeaderMutation.RemoveHeaders = append(cr.HeaderMutation.RemoveHeaders, "etag", "content-md5", "digest")
		cr.BodyMutation = &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_Body{Body: res.Body}}
	}
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{ResponseBody: &extprocv3.BodyResponse{Response: cr}}}
}

// count counts what a response releases (counts by limit kind) against
// its plan's limits; a refusal is returned when that takes the user over
// one, or the counters cannot say.
func (s *ProcServer) count(ctx context.Context, st *stream, counts map[string]int) *extprocv3.ProcessingResponse {
	over, err := s.usage.Released(ctx, st.plan.User.Subject, st.plan.Limits, counts, time.Now())
	switch {
	case err != nil:
		return s.refuse(ctx, st, http.StatusServiceUnavailable, RefusedCountersAway)
	case over:
		return s.refuse(ctx, st, http.StatusForbidden, RefusedUsageLimit)
	}
	return nil
}

// countUnfiltered counts the n bytes of a response released without
// filtering (an approved export file).
func (s *ProcServer) countUnfiltered(ctx context.Context, st *stream, n int) *extprocv3.ProcessingResponse {
	return s.count(ctx, st, map[string]int{plan.KindReleasedBytes: n})
}

// record writes the linked audit record; false means it could not be
// written and the response must not be released.
func (s *ProcServer) record(ctx context.Context, ev FilterEvent) bool {
	if s.recorder == nil {
		return true
	}
	if err := s.recorder.RecordFiltering(ctx, ev); err != nil {
		s.log.Error("audit of filtered response failed; refusing", zap.String("decision_id", ev.DecisionID), zap.Error(err))
		return false
	}
	return true
}

func (s *ProcServer) refuse(ctx context.Context, st *stream, code int, why string) *extprocv3.ProcessingResponse {
	s.outcomes.WithLabelValues("refused").Inc()
	s.log.Warn("response refused", zap.String("decision_id", st.plan.DecisionID), zap.String("why", why))
	ev := eventOf(st.plan)
	ev.Refused, ev.Status = why, code
	s.record(ctx, ev)
	return immediate(code, st.plan.DecisionID)
}

func immediate(code int, ref string) *extprocv3.ProcessingResponse {
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ImmediateResponse{ImmediateResponse: &extprocv3.ImmediateResponse{
		Status: &typev3.HttpStatus{Code: typev3.StatusCode(code)},
		Headers: &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{
			rawHeader("content-type", fhirJSON),
		}},
		Body:    operationOutcome(code, ref),
		Details: "phigate_response_refused",
	}}}
}

// planOf reads the plan ext_authz left in the forwarded metadata and checks
// its marker against the request the response answers. A plan that is not
// there, or whose marker does not verify, is a refusal reason: "the
// decision asked for nothing" is an empty plan with a valid marker.
func (s *ProcServer) planOf(req *extprocv3.ProcessingRequest) (*plan.Metadata, string) {
	md := req.GetMetadataContext().GetFilterMetadata()[AuthzNamespace].GetFields()
	pv, okPlan := md[MetadataKey]
	mv, okMarker := md[MarkerMetadataKey]
	if !okPlan && !okMarker {
		return nil, RefusedMarkerMissing
	}
	raw := []byte(pv.GetStringValue())
	rid, _ := requestIDOf(req)
	if !okPlan || !okMarker || s.marker.Verify(rid, raw, mv.GetStringValue()) != nil {
		return nil, RefusedMarkerInvalid
	}
	p, err := plan.DecodeMetadata(raw, s.keys)
	switch plan.CodeOf(err) {
	case "":
		return &p, ""
	case plan.CodeBadDirective:
		// A plan signed by a decision side whose keys this side does
		// not hold: readable, but not something it can apply.
		return nil, string(filters.CodeBadDirective)
	default:
		// Signed by a phigate that writes plans this one cannot read.
		return nil, RefusedMarkerInvalid
	}
}

// envoyReply reports whether Envoy says the response is its own local
// reply rather than one from the upstream (RequestDetailsAttribute other
// than "via_upstream"). Without the attribute the response is taken to
// come from the upstream.
func envoyReply(req *extprocv3.ProcessingRequest) bool {
	if req.GetResponseHeaders() == nil {
		return false
	}
	v, ok := req.GetAttributes()[procAttributesNamespace].GetFields()[ResponseDetailsAttribute]
	d := v.GetStringValue()
	return ok && d != "" && d != "via_upstream"
}

// requestIDOf returns the request id Envoy sent as an attribute
// (RequestIDAttribute) and whether it sent one.
func requestIDOf(req *extprocv3.ProcessingRequest) (string, bool) {
	v, ok := req.GetAttributes()[procAttributesNamespace].GetFields()[RequestIDAttribute]
	return v.GetStringValue(), ok
}

func headerValue(m *corev3.HeaderMap, name string) string {
	for _, h := range m.GetHeaders() {
		if strings.EqualFold(h.GetKey(), name) {
			if len(h.GetRawValue()) > 0 {
				return string(h.GetRawValue())
			}
			return h.GetValue()
		}
	}
	return ""
}

func rawHeader(k, v string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: k, RawValue: []byte(v)},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	}
}

// Location and Content-Location name a resource the client may follow or
// cache. A server writes them from its own state, so one can carry another
// patient's id even when the body carries nothing about that patient.
// Under a grant limited to patients, such a header is dropped when it names
// a patient outside the grant (a Patient/<id> segment anywhere in its path,
// or a patient search parameter in its query), and when it names a
// resource of patient data other than a Patient that the body does not
// vouch for: the body must be that very resource, and pass the filters.
// A header that cannot be parsed is dropped too.
var locationHeaders = []string{"location", "content-location"}

// vouched is a header waiting for the body to show what it names.
type vouched struct {
	header string
	target string // "Type/id"
}

// judgeLocations sorts the location headers of a response into those kept,
// those dropped (st.removed) and those the body must vouch for (st.vouch).
func judgeLocations(st *stream, hm *corev3.HeaderMap) {
	if st.grant == nil {
		return
	}
	for _, name := range locationHeaders {
		for _, h := range hm.GetHeaders() {
			if !strings.EqualFold(h.GetKey(), name) {
				continue
			}
			v := h.GetValue()
			if len(h.GetRawValue()) > 0 {
				v = string(h.GetRawValue())
			}
			drop, target := judgeLocation(v, st.grant)
			switch {
			case drop:
				st.removed = append(st.removed, name)
			case target != "":
				st.vouch = append(st.vouch, vouched{name, target})
			}
			if drop || target != "" {
				break // the header is removed whole, every value of it
			}
		}
	}
}

// judgeLocation decides one header value: drop it, or keep it once the
// body shows it is target (a resource of patient data), or keep it.
func judgeLocation(raw string, grant map[string]bool) (drop bool, target string) {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil {
		return true, ""
	}
	segs := strings.Split(strings.Trim(u.Path, "/"), "/")
	for i, seg := range segs {
		if seg == "Patient" && i+1 < len(segs) && !grant[segs[i+1]] {
			return true, ""
		}
	}
	path := segs
	if n := len(path); n >= 4 && path[n-2] == "_history" {
		path = path[:n-2]
	}
	rt, id := "", ""
	if n := len(path); n >= 2 && resourceType(path[n-2]) {
		rt, id = path[n-2], path[n-1]
	} else if n >= 1 && resourceType(path[n-1]) {
		rt = path[n-1]
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return true, ""
	}
	params, _ := compartment.Params(rt)
	for key, vals := range q {
		name, rest, chained := strings.Cut(key, ".")
		name, mod, _ := strings.Cut(name, ":")
		patientParam := name == "patient" || name == "subject" || (rt == "Patient" && name == "_id") || slices.Contains(params, name)
		if !patientParam {
			continue
		}
		if (mod != "" && mod != "Patient") || (chained && rest != "_id") {
			// An identifier, a name or another chain: what it matches
			// cannot be told from the URL.
			return true, ""
		}
		for _, v := range vals {
			for alt := range strings.SplitSeq(v, ",") {
				pid := alt
				if i := strings.LastIndex(alt, "Patient/"); i >= 0 {
					pid, _, _ = strings.Cut(alt[i+len("Patient/"):], "/")
				} else if strings.Contains(alt, "/") {
					continue // a reference to another type names no patient
				}
				if !grant[pid] {
					return true, ""
				}
			}
		}
	}
	if id != "" && rt != "Patient" && compartment.Member(rt) {
		return false, rt + "/" + id
	}
	return false, ""
}

// resourceType reports whether a path segment reads as a FHIR type name.
func resourceType(s string) bool {
	if s == "" || s[0] < 'A' || s[0] > 'Z' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// bodyIs reports whether a filtered body is the single FHIR resource target
// ("Type/id"). The filters have refused duplicate keys by now, so the
// members read here are the ones they checked.
func bodyIs(mediaType string, body []byte, target string) bool {
	mt, _, _ := mime.ParseMediaType(mediaType)
	if !strings.Contains(mt, "json") {
		return false
	}
	var r struct {
		ResourceType string `json:"resourceType"`
		ID           string `json:"id"`
	}
	if json.Unmarshal(body, &r) != nil || r.ResourceType == "" || r.ID == "" {
		return false
	}
	return r.ResourceType+"/"+r.ID == target
}
