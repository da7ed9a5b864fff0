package envoy

import (
	"context"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/phigate/phigate/authz"
	"github.com/phigate/phigate/plan"
)

// MetadataKey is the key under the ext_authz dynamic metadata namespace
// (envoy.filters.http.ext_authz) that carries the response plan to
// ext_proc: plan.Metadata encoded, a string Envoy forwards as it is, so
// the marker beside it covers the very bytes ext_proc decodes.
const MetadataKey = "phigate"

// DecisionHeader carries the decision id to the upstream and the client.
const DecisionHeader = "x-phigate-decision-id"

// Authorizer is the decision path as the adapter sees it.
type Authorizer interface {
	Authorize(ctx context.Context, in *authz.CheckInput) (*authz.Request, authz.Decision, error)
}

// AuthServer is the ext_authz Authorization service.
type AuthServer struct {
	authv3.UnimplementedAuthorizationServer
	authz   Authorizer
	marker  *MarkerKey
	log     *zap.Logger
	metrics *checkMetrics
	strip   []string // request headers removed before the upstream
	reasons reasonLabels
	// opaEnvoy renders each request as OPA-Envoy's input too
	// (WithOPAEnvoyInput); skipBody leaves its parsed body out.
	opaEnvoy, skipBody bool
	// planVersion is the plan metadata version written (plan.Version
	// unless WithPlanMetadataVersion says otherwise).
	planVersion int
}

type checkMetrics struct {
	decisions *prometheus.CounterVec
	latency   prometheus.Histogram
}

// NewAuthServer returns the ext_authz adapter over an Authorizer. Metrics
// are registered on reg when it is not nil. The marker key must be the one
// the ProcServer verifies with (WithMarkerKey).
func NewAuthServer(a Authorizer, log *zap.Logger, reg prometheus.Registerer, opts ...Option) (*AuthServer, error) {
	if log == nil {
		log = zap.NewNop()
	}
	o, err := buildOptions(opts)
	if err != nil {
		return nil, err
	}
	m := &checkMetrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phigate_decisions_total", Help: "Authorization decisions by outcome, HTTP status and deny reason code.",
		}, []string{"outcome", "status", "reason"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "phigate_decision_duration_seconds",
			Help:    "Time to answer one ext_authz Check, audit append included.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1},
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.decisions, m.latency} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	strip := []string{"x-break-glass"}
	if !o.forwardBearerTok {
		strip = append(strip, "authorization")
	}
	return &AuthServer{authz: a, marker: o.marker, log: log, metrics: m, strip: strip,
		opaEnvoy: o.opaEnvoy, skipBody: o.opaEnvoySkipBody, planVersion: o.planVersion}, nil
}

// Check answers one ext_authz request. Every outcome, including internal
// failures, is a CheckResponse that denies with a status; Envoy is never
// left to interpret a transport error.
func (s *AuthServer) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	start := time.Now()
	if f := checkBoundary(req); f != nil {
		return s.refuseAtBoundary(req, f, start), nil
	}
	in := checkInput(req, start)
	if s.opaEnvoy {
		in.Foreign, in.ForeignErr = OPAEnvoyInput(req, s.skipBody)
	}
	r, d, err := s.authz.Authorize(ctx, in)
	resp := s.response(r, &d)
	outcome := "allow"
	if !d.Allow {
		outcome = "deny"
	}
	s.metrics.decisions.WithLabelValues(outcome, strconv.Itoa(d.Status), s.reasons.label(d)).Inc()
	s.metrics.latency.Observe(time.Since(start).Seconds())
	if err != nil && s.log.Core().Enabled(zap.InfoLevel) {
		// The code and decision id only: the detail may carry request data.
		s.log.Info("request denied by failure", zap.String("code", string(authz.CodeOf(err))),
			zap.String("decision_id", d.ID), zap.Int("status", d.Status))
	}
	return resp, nil
}

// refuseAtBoundary answers a CheckRequest that never reaches the decision
// path. The log names the rule, the field and the byte offset, never the
// bytes, which may be PHI or may be crafted to break a log reader.
func (s *AuthServer) refuseAtBoundary(req *authv3.CheckRequest, f *boundaryFault, start time.Time) *authv3.CheckResponse {
	ref := safeReference(req.GetAttributes().GetRequest().GetHttp().GetId())
	s.metrics.decisions.WithLabelValues("deny", strconv.Itoa(f.status), "boundary."+f.why).Inc()
	s.metrics.latency.Observe(time.Since(start).Seconds())
	if s.log.Core().Enabled(zap.InfoLevel) {
		fields := []zap.Field{zap.String("why", f.why), zap.String("field", f.field),
			zap.Int("status", f.status), zap.String("request_id", ref)}
		if f.offset >= 0 {
			fields = append(fields, zap.Int("offset", f.offset))
		}
		if f.header != "" {
			fields = append(fields, zap.String("header", f.header))
		}
		s.log.Info("request refused before decision", fields...)
	}
	return boundaryDenial(f.status, ref)
}

// checkInput maps the proto to the proto-free input of the decision path.
func checkInput(req *authv3.CheckRequest, now time.Time) *authz.CheckInput {
	a := req.GetAttributes()
	h := a.GetRequest().GetHttp()
	in := &authz.CheckInput{
		ID:       h.GetId(),
		Method:   h.GetMethod(),
		Path:     h.GetPath(),
		Headers:  headersOf(h),
		Received: now,
		Source: authz.Peer{
			Principal: a.GetSource().GetPrincipal(),
		},
	}
	if in.Headers == nil {
		in.Headers = map[string]string{}
	}
	in.ID = requestID(in.Headers, in.ID)
	if sa := a.GetSource().GetAddress().GetSocketAddress(); sa != nil {
		in.Source.Address = sa.GetAddress() + ":" + strconv.FormatUint(uint64(sa.GetPortValue()), 10)
	}
	if raw := h.GetRawBody(); len(raw) > 0 {
		in.Body = raw
	} else if b := h.GetBody(); b != "" {
		in.Body = []byte(b)
	}
	return in
}

// requestID is the id the request is known by in the audit trail: its
// x-request-id, which Envoy's access logs, the upstream and ext_proc see
// too, so that records join with them; Envoy's own stream id when the
// header is absent or unreasonably long.
func requestID(headers map[string]string, streamID string) string {
	if v := headers["x-request-id"]; v != "" && len(v) <= maxRequestIDLen {
		return v
	}
	return streamID
}

// maxRequestIDLen bounds a client-chosen x-request-id kept as the id.
const maxRequestIDLen = 128

// denialHeaders are the headers of a denial: the content type, the
// decision id, and on a 401 the Bearer challenge of RFC 6750, with
// error="invalid_token" when a token was presented and refused (none when
// the request carried no credentials, as section 3.1 asks).
func denialHeaders(d *authz.Decision, status int) []*corev3.HeaderValueOption {
	h := []*corev3.HeaderValueOption{header("content-type", fhirJSON), header(DecisionHeader, d.ID)}
	if status == 401 {
		challenge := `Bearer realm="phigate"`
		if !strings.Contains(d.Reason, "missing") {
			challenge += `, error="invalid_token"`
		}
		h = append(h, header("www-authenticate", challenge))
	}
	if status == 429 && d.RetryAfter > 0 {
		// Whole seconds, rounded up (RFC 9110): never tell a client to
		// come back before a token is there.
		secs := int64((d.RetryAfter + time.Second - 1) / time.Second)
		h = append(h, header("retry-after", strconv.FormatInt(secs, 10)))
	}
	return h
}

// reasonLabels turns deny reasons into metric label values: reason codes
// only, a bounded number of them. A reason is a policy's word, so one that
// does not look like a code (or any beyond the first maxReasonLabels) is
// counted as "other"; the entry index of a batch reason is dropped.
type reasonLabels struct {
	mu   sync.Mutex
	seen map[string]bool
}

const maxReasonLabels = 128

var reasonCode = regexp.MustCompile(`^[a-z][a-z0-9_]*(\.[a-z0-9_:-]+)*$`)

func (r *reasonLabels) label(d authz.Decision) string {
	if d.Allow {
		return ""
	}
	reason := d.Reason
	if strings.HasPrefix(reason, "entry[") {
		if _, rest, ok := strings.Cut(reason, "]."); ok {
			reason = rest
		}
	}
	if reason == "" {
		return "none"
	}
	if len(reason) > 64 || !reasonCode.MatchString(reason) {
		return "other"
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.seen[reason] {
		return reason
	}
	if len(r.seen) >= maxReasonLabels {
		return "other"
	}
	if r.seen == nil {
		r.seen = map[string]bool{}
	}
	r.seen[reason] = true
	return reason
}

// removeHeaders is what the policy removes plus what never reaches the
// upstream: the break-glass reason (free text a clinician typed, which
// may name a patient and would land in the upstream's logs) and, unless
// configured otherwise, the client's credentials.
func (s *AuthServer) removeHeaders(policy []string) []string {
	out := make([]string, 0, len(policy)+len(s.strip))
	out = append(out, policy...)
	for _, h := range s.strip {
		if !slices.Contains(out, h) {
			out = append(out, h)
		}
	}
	return out
}

func (s *AuthServer) response(r *authz.Request, d *authz.Decision) *authv3.CheckResponse {
	if !d.Allow {
		status := d.Status
		if status < 400 || status > 599 {
			status = 403
		}
		code := codes.PermissionDenied
		if status == 401 {
			code = codes.Unauthenticated
		}
		body, headers := operationOutcome(status, d.ID), denialHeaders(d, status)
		if d.ApprovalRef != "" && status == 403 {
			body = approvalOutcome(d.ID, d.ApprovalRef)
			headers = append(headers, header(ApprovalHeader, d.ApprovalRef))
		}
		return &authv3.CheckResponse{
			Status: &rpcstatus.Status{Code: int32(code)},
			HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
				Status:  &typev3.HttpStatus{Code: typev3.StatusCode(status)},
				Headers: headers,
				Body:    string(body),
			}},
		}
	}
	ok := &authv3.OkHttpResponse{
		Headers:         make([]*corev3.HeaderValueOption, 0, len(d.Headers)+1),
		HeadersToRemove: s.removeHeaders(d.RemoveHeaders),
	}
	ok.Headers = append(ok.Headers, header(DecisionHeader, d.ID))
	for k, v := range d.Headers {
		ok.Headers = append(ok.Headers, header(k, v))
	}
	if r != nil && !d.Plan.Empty() && r.FHIR.Interaction != authz.InteractionNonFHIR &&
		authz.MentionsXML(r.Headers["accept"]) {
		// The response must be filtered and the client accepts JSON as
		// well as XML (a request accepting XML alone was refused with 406):
		// ask the upstream for the format phigate can filter.
		ok.Headers = append(ok.Headers, header("accept", "application/fhir+json"))
	}
	for k, v := range d.ResponseHeaders {
		ok.ResponseHeadersToAdd = append(ok.ResponseHeadersToAdd, header(k, v))
	}
	// The client gets the decision id on an allowed response too, so
	// support can find the audit record of any answer.
	ok.ResponseHeadersToAdd = append(ok.ResponseHeadersToAdd, header(DecisionHeader, d.ID))
	resp := &authv3.CheckResponse{
		Status:       &rpcstatus.Status{Code: int32(codes.OK)},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: ok},
	}
	// Every allowed request carries a plan and its marker, an empty plan
	// too: the response side refuses a response whose request has none, so
	// that a lost decision is never taken for one that asked for nothing.
	// The plan travels with the ids that tie it to its decision and to
	// its request (its id in the audit trail, which links the records of
	// the decision and of the filtering), so ext_proc needs no shared state.
	p := plan.Metadata{Plan: d.Plan, DecisionID: d.ID, Version: s.planVersion}
	if r != nil {
		p.RequestID = r.ID
		if (!d.Plan.Empty() || len(d.ResponseLimits) > 0) && s.planVersion >= 2 {
			// Who asked and whose data it is, for the audit record of the
			// filtered response, which may be written by another replica.
			// Only a plan that asks for something has its response
			// recorded, so an empty one travels without them.
			p.User = plan.User{Subject: r.Identity.Subject, Issuer: r.Identity.Issuer, FHIRUser: r.Identity.FHIRUser}
			p.Patients = plan.SortedPatients(r.FHIR.Patients, d.Audit.Patients)
			p.Limits = d.ResponseLimits
		}
	}
	raw, err := p.Encode()
	if err != nil {
		// Only a plan that was never compiled fails to encode: a decision
		// that did not come through the decoder. Deny rather than release
		// a response nobody can filter.
		s.log.Error("response plan does not encode", zap.String("code", string(plan.CodeOf(err))))
		d.Allow, d.Status = false, 503
		return s.response(r, d)
	}
	resp.DynamicMetadata = &structpb.Struct{Fields: map[string]*structpb.Value{
		MetadataKey:       structpb.NewStringValue(string(raw)),
		MarkerMetadataKey: structpb.NewStringValue(s.marker.Sign(xRequestID(r), raw)),
	}}
	if err := policyMetadata(resp.DynamicMetadata, d.Metadata); err != nil {
		// A policy's metadata that would overwrite the plan or its
		// marker, or that has no protobuf form: deny, as above.
		s.log.Error("policy dynamic metadata refused", zap.String("decision_id", d.ID))
		d.Allow, d.Status, d.Metadata = false, 503, nil
		return s.response(r, d)
	}
	return resp
}

// xRequestID is the request's x-request-id, which Envoy also gives
// ext_proc (RequestIDAttribute); the CheckRequest's own id is Envoy's
// stream id, which ext_proc is not told.
func xRequestID(r *authz.Request) string {
	if r == nil {
		return ""
	}
	return r.Headers["x-request-id"]
}

func header(k, v string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: k, Value: v},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	}
}
