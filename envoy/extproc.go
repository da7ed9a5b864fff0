package envoy

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/phigate/phigate/filters"
)

// AuthzNamespace is the dynamic metadata namespace ext_authz writes to and
// ext_proc forwards.
const AuthzNamespace = "envoy.filters.http.ext_authz"

// BodyFilter is the response filter engine as the adapter sees it.
type BodyFilter interface {
	Apply(mediaType string, body []byte, p filters.Plan) (filters.Result, error)
}

// FilterEvent describes what the response side removed, for the audit trail.
type FilterEvent struct {
	RequestID  string
	DecisionID string
	Removed    []string // element paths, never values
	Withheld   int
	Forbidden  bool
	Refused    string // why the response was refused, if it was
}

// FilterRecorder writes the audit record of a filtered response.
type FilterRecorder interface {
	RecordFiltering(ctx context.Context, ev FilterEvent) error
}

// ProcServer is the ext_proc ExternalProcessor service.
type ProcServer struct {
	extprocv3.UnimplementedExternalProcessorServer
	filter   BodyFilter
	recorder FilterRecorder
	log      *zap.Logger
	outcomes *prometheus.CounterVec
}

// NewProcServer returns the ext_proc adapter. recorder may be nil.
func NewProcServer(f BodyFilter, rec FilterRecorder, log *zap.Logger, reg prometheus.Registerer) (*ProcServer, error) {
	if log == nil {
		log = zap.NewNop()
	}
	s := &ProcServer{filter: f, recorder: rec, log: log,
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phigate_extproc_responses_total",
			Help: "Responses seen by ext_proc, by outcome (passed, unchanged, redacted, forbidden, refused).",
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
	plan      *Plan
	mediaType string
}

// Process handles one HTTP exchange's stream. Only the response side is
// configured: response headers always, the buffered body only when the
// decision carried a plan.
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
		if st.plan == nil {
			p, perr := planFrom(req)
			if perr != nil {
				// A plan we cannot read could have asked for redaction.
				s.outcomes.WithLabelValues("refused").Inc()
				s.log.Error("unreadable response plan; refusing the response", zap.Error(perr))
				if err := srv.Send(immediate(http.StatusBadGateway, "")); err != nil {
					return err
				}
				continue
			}
			st.plan = p
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
	if st.plan == nil || st.plan.Empty() {
		// Nothing to do for this response: one header round trip, and the
		// body streams past without being buffered.
		s.outcomes.WithLabelValues("passed").Inc()
		return &extprocv3.ProcessingResponse{
			Response:     &extprocv3.ProcessingResponse_ResponseHeaders{ResponseHeaders: &extprocv3.HeadersResponse{}},
			ModeOverride: &filterv3.ProcessingMode{ResponseBodyMode: filterv3.ProcessingMode_NONE},
		}
	}
	if h.GetEndOfStream() {
		// A response without a body carries nothing to redact.
		s.outcomes.WithLabelValues("unchanged").Inc()
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseHeaders{ResponseHeaders: &extprocv3.HeadersResponse{}}}
	}
	enc := strings.ToLower(strings.TrimSpace(headerValue(h.GetHeaders(), "content-encoding")))
	if enc != "" && enc != "identity" {
		return s.refuse(ctx, st, http.StatusBadGateway, "content-encoding "+enc)
	}
	ct := headerValue(h.GetHeaders(), "content-type")
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil || !filterable(mt) {
		return s.refuse(ctx, st, http.StatusBadGateway, "media type not filterable")
	}
	st.mediaType = ct
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseHeaders{ResponseHeaders: &extprocv3.HeadersResponse{}}}
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
	if st.plan == nil {
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{ResponseBody: &extprocv3.BodyResponse{}}}
	}
	if !b.GetEndOfStream() {
		// Buffered mode delivers the whole body at once; a partial body
		// means the buffer limit was reached.
		return s.refuse(ctx, st, http.StatusBadGateway, "partial body")
	}
	res, err := s.filter.Apply(st.mediaType, b.GetBody(), st.plan.Plan)
	if err != nil {
		return s.refuse(ctx, st, http.StatusBadGateway, "filter: "+string(filters.CodeOf(err)))
	}
	ev := FilterEvent{RequestID: st.plan.RequestID, DecisionID: st.plan.DecisionID, Removed: res.Removed, Withheld: res.Withheld, Forbidden: res.Forbidden}
	if res.Forbidden {
		s.outcomes.WithLabelValues("forbidden").Inc()
		if !s.record(ctx, ev) {
			return immediate(http.StatusBadGateway, st.plan.DecisionID)
		}
		return immediate(http.StatusForbidden, st.plan.DecisionID)
	}
	if !res.Changed {
		s.outcomes.WithLabelValues("unchanged").Inc()
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{ResponseBody: &extprocv3.BodyResponse{}}}
	}
	if !s.record(ctx, ev) {
		return immediate(http.StatusBadGateway, st.plan.DecisionID)
	}
	s.outcomes.WithLabelValues("redacted").Inc()
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{ResponseBody: &extprocv3.BodyResponse{
		Response: &extprocv3.CommonResponse{
			Status: extprocv3.CommonResponse_CONTINUE,
			HeaderMutation: &extprocv3.HeaderMutation{
				SetHeaders:    []*corev3.HeaderValueOption{rawHeader("content-length", strconv.Itoa(len(res.Body)))},
				RemoveHeaders: []string{"etag", "content-md5", "digest"},
			},
			BodyMutation: &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_Body{Body: res.Body}},
		},
	}}}
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
	s.record(ctx, FilterEvent{RequestID: st.plan.RequestID, DecisionID: st.plan.DecisionID, Refused: why})
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

// planFrom reads the plan ext_authz left in the forwarded metadata. No
// metadata means the decision carried no plan.
func planFrom(req *extprocv3.ProcessingRequest) (*Plan, error) {
	md := req.GetMetadataContext().GetFilterMetadata()[AuthzNamespace]
	if md == nil {
		return nil, nil
	}
	v, ok := md.GetFields()[MetadataKey]
	if !ok {
		return nil, nil
	}
	var p Plan
	if err := json.Unmarshal([]byte(v.GetStringValue()), &p); err != nil {
		return nil, err
	}
	return &p, nil
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
