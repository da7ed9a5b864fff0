package abuse

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/phigate/phigate/authz"
	"github.com/phigate/phigate/plan"
)

// AlertSink keeps an alert raised on a subject until a person clears it.
// Raising one that is already open is not an error and changes nothing.
type AlertSink interface {
	RaiseAlert(ctx context.Context, subject, kind string, at time.Time) error
}

// Guard implements authz.Guard over Counters.
type Guard struct {
	counters  Counters
	buckets   []BucketConfig
	memberKey []byte
	alerts    AlertSink
	log       *zap.Logger

	throttled *prometheus.CounterVec
	raised    *prometheus.CounterVec
	failures  prometheus.Counter
}

var _ authz.Guard = (*Guard)(nil)

// opTimeout bounds one counter operation: counters that do not answer in
// time are away, and the request is refused promptly.
const opTimeout = 250 * time.Millisecond

// LimitObligation is the obligation type a policy sets a usage limit
// with: params "kind" (distinct_patients), "max" (a count) and "window"
// (a Go duration such as 1m).
const LimitObligation = "limit"

// KindDistinctPatients counts the distinct patients an identity's allowed
// requests name within the window.
const KindDistinctPatients = "distinct_patients"

// KindReleasedResources counts the resources responses release to an
// identity within the window (search results, export files), on the
// response side.
const KindReleasedResources = plan.KindReleasedResources

// KindReleasedBytes counts the bytes of the response bodies released to
// an identity (export volume), on the response side.
const KindReleasedBytes = plan.KindReleasedBytes

// NewGuard watches with counters. memberKey keys patient ids before they
// are counted (nil counts them as they are, for counters in this
// process). reg may be nil.
func NewGuard(counters Counters, buckets []BucketConfig, memberKey []byte, alerts AlertSink, log *zap.Logger, reg prometheus.Registerer) *Guard {
	if log == nil {
		log = zap.NewNop()
	}
	g := &Guard{counters: counters, buckets: buckets, memberKey: memberKey, alerts: alerts, log: log,
		throttled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phigate_throttled_total",
			Help: "Requests refused with 429 because a token bucket was empty, by bucket.",
		}, []string{"bucket"}),
		raised: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phigate_bulk_read_alerts_total",
			Help: "Requests refused because they took an identity over a usage limit, each raising (or keeping) an alert, by kind.",
		}, []string{"kind"}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "phigate_abuse_counter_failures_total",
			Help: "Throttle and usage counter operations that failed; each refused its request.",
		}),
	}
	for _, b := range buckets {
		g.throttled.WithLabelValues(b.Name)
	}
	g.raised.WithLabelValues("bulk_read." + KindDistinctPatients)
	g.raised.WithLabelValues("bulk_read." + KindReleasedResources)
	g.raised.WithLabelValues("bulk_read." + KindReleasedBytes)
	if reg != nil {
		reg.MustRegister(g.throttled, g.raised, g.failures)
	}
	return g
}

// RouteClass is the bucket class of a request.
func RouteClass(f *authz.FHIRRequest) string {
	switch f.Interaction {
	case authz.InteractionRead, authz.InteractionVRead:
		return "read"
	case authz.InteractionSearchType, authz.InteractionSearchSystem, authz.InteractionSearchCompartment,
		authz.InteractionHistoryInstance, authz.InteractionHistoryType, authz.InteractionHistorySystem:
		return "search"
	case authz.InteractionCreate, authz.InteractionUpdate, authz.InteractionPatch, authz.InteractionDelete:
		return "write"
	case authz.InteractionBatch, authz.InteractionTransaction:
		return "batch"
	case authz.InteractionOperation:
		if f.Operation == "export" {
			return "export"
		}
		return "operation"
	}
	return "other"
}

// Admit implements authz.Guard: it takes a token from every bucket the
// request falls in, and refuses it with 429 when one is empty.
func (g *Guard) Admit(ctx context.Context, req *authz.Request) (*authz.Decision, error) {
	if len(g.buckets) == 0 {
		return nil, nil
	}
	class := RouteClass(&req.FHIR)
	for _, b := range g.buckets {
		if b.Route != "any" && b.Route != class {
			continue
		}
		who := g.counted(b.Per, req)
		if who == "" {
			continue
		}
		tctx, cancel := context.WithTimeout(ctx, opTimeout)
		ok, retry, err := g.counters.Take(tctx, "throttle:"+b.Name+":"+who, b.Rate, b.Burst)
		cancel()
		if err != nil {
			g.failures.Inc()
			return nil, err
		}
		if ok {
			req.Throttle = append(req.Throttle, b.Name)
		}
		if !ok {
			g.throttled.WithLabelValues(b.Name).Inc()
			reason := "throttle." + b.Name
			return &authz.Decision{Status: 429, Reason: reason, RetryAfter: max(retry, time.Millisecond),
				Audit: authz.AuditInfo{Rules: []string{"deny:" + reason}}}, nil
		}
	}
	return nil, nil
}

// counted is the key a bucket counts the request under.
func (g *Guard) counted(per string, req *authz.Request) string {
	switch per {
	case "client":
		if req.Identity.ClientID != "" {
			return "c:" + req.Identity.ClientID
		}
		fallthrough
	case "identity":
		if req.Identity.Subject != "" {
			return "s:" + req.Identity.Subject
		}
		return ""
	case "address":
		host, _, err := net.SplitHostPort(req.Source.Address)
		if err != nil {
			host = req.Source.Address
		}
		return "a:" + host
	}
	return ""
}

// Watch implements authz.Guard: every limit obligation on an allowed
// decision is read once. A distinct-patients limit counts the request
// here, and one that takes the identity over raises an alert and refuses
// the request; the others go to d.ResponseLimits, for the response side
// to count what it releases.
func (g *Guard) Watch(ctx context.Context, req *authz.Request, d *authz.Decision, patients []string) (*authz.Decision, error) {
	for _, o := range d.Obligations {
		if o.Type != LimitObligation {
			continue
		}
		lim, err := parseLimit(o.Params)
		if err != nil {
			// The decision decoded, but its limit cannot be kept: refuse
			// rather than serve unwatched.
			g.log.Error("a limit obligation cannot be applied; refusing", zap.Error(err), zap.String("decision_id", d.ID))
			return nil, err
		}
		if req.Identity.Subject == "" {
			continue
		}
		if lim.kind != KindDistinctPatients {
			d.ResponseLimits = append(d.ResponseLimits, plan.Limit{Kind: lim.kind, Max: lim.max, WindowS: int(lim.window / time.Second)})
			continue
		}
		if len(patients) == 0 {
			continue
		}
		members := make([]string, len(patients))
		for i, p := range patients {
			members[i] = g.member(p)
		}
		tctx, cancel := context.WithTimeout(ctx, opTimeout)
		distinct, _, err := g.counters.Touch(tctx, "limit:"+lim.kind+":"+req.Identity.Subject, members, lim.window)
		cancel()
		if err != nil {
			g.failures.Inc()
			return nil, err
		}
		if distinct <= lim.max {
			continue
		}
		kind, err := g.over(ctx, req.Identity.Subject, lim.kind, req.Time)
		if err != nil {
			return nil, err
		}
		return &authz.Decision{Status: 403, Reason: kind,
			Audit: authz.AuditInfo{Rules: []string{"deny:" + kind, "alert:" + kind}}}, nil
	}
	return nil, nil
}

// over counts a crossing of a limit of kind by subject and raises (or
// keeps) its alert; it returns the alert's kind.
func (g *Guard) over(ctx context.Context, subject, limitKind string, at time.Time) (string, error) {
	kind := "bulk_read." + limitKind
	g.raised.WithLabelValues(kind).Inc()
	if g.alerts != nil {
		if err := g.alerts.RaiseAlert(ctx, subject, kind, at); err != nil {
			g.log.Error("alert not kept", zap.String("kind", kind), zap.Error(err))
			return kind, err
		}
	}
	return kind, nil
}

// Cleared starts subject's usage windows afresh: a person cleared the
// alerts they raised, so the requests that raised them no longer count.
// Without it, an identity cleared while its window still holds more than
// the limit would be refused again at once.
func (g *Guard) Cleared(ctx context.Context, subject string) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	for _, k := range []string{KindDistinctPatients, KindReleasedResources, KindReleasedBytes} {
		if err := g.counters.Forget(ctx, "limit:"+k+":"+subject); err != nil {
			g.failures.Inc()
			g.log.Warn("usage window not reset after an alert was cleared", zap.Error(err))
		}
	}
}

// Released counts what a response releases to subject (counts by kind)
// against each limit of that kind; the response that goes over one raises
// an alert and is refused (true).
func (g *Guard) Released(ctx context.Context, subject string, limits []plan.Limit, counts map[string]int, at time.Time) (bool, error) {
	for _, l := range limits {
		n, ok := counts[l.Kind]
		if !ok {
			continue
		}
		tctx, cancel := context.WithTimeout(ctx, opTimeout)
		sum, err := g.counters.Add(tctx, "limit:"+l.Kind+":"+subject, n, time.Duration(l.WindowS)*time.Second)
		cancel()
		if err != nil {
			g.failures.Inc()
			return false, err
		}
		if sum <= l.Max {
			continue
		}
		if _, err := g.over(ctx, subject, l.Kind, at); err != nil {
			return false, err
		}
		return true, nil
	}
	return false, nil
}

type limit struct {
	kind   string
	max    int
	window time.Duration
}

func parseLimit(p map[string]string) (limit, error) {
	l := limit{kind: p["kind"]}
	switch l.kind {
	case KindDistinctPatients, KindReleasedResources, KindReleasedBytes:
	default:
		return l, fmt.Errorf("limit obligation: kind %q is not %s, %s or %s", l.kind, KindDistinctPatients, KindReleasedResources, KindReleasedBytes)
	}
	n, err := strconv.Atoi(p["max"])
	if err != nil || n < 1 {
		return l, fmt.Errorf("limit obligation: max %q is not a count above 0", p["max"])
	}
	l.max = n
	w, err := time.ParseDuration(p["window"])
	if err != nil || w < time.Second || w > 24*time.Hour {
		return l, fmt.Errorf("limit obligation: window %q is not a duration between 1s and 24h", p["window"])
	}
	l.window = w
	return l, nil
}

// member is what a patient id is counted as: keyed when the counters are
// shared, so that the counters' server holds no patient id.
func (g *Guard) member(p string) string {
	if g.memberKey == nil {
		return p
	}
	m := hmac.New(sha256.New, g.memberKey)
	m.Write([]byte(p))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil)[:16])
}
