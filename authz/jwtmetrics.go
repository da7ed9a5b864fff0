package authz

import (
	"github.com/prometheus/client_golang/prometheus"
)

// identityMetrics count what the verifier did, by result code (never a
// token, a subject or a claim), and how the key set's refreshes went.
type identityMetrics struct {
	verifications *prometheus.CounterVec
	refreshes     *prometheus.CounterVec
	keys          prometheus.Gauge
	lastRefresh   prometheus.Gauge
	// The hot path's two results, looked up once.
	ok, cached prometheus.Counter
}

func newIdentityMetrics() *identityMetrics {
	m := &identityMetrics{
		verifications: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phigate_identity_verifications_total",
			Help: "Bearer token verifications by result: ok, cached (a verified token seen again), or the refusal code.",
		}, []string{"result"}),
		refreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phigate_jwks_refreshes_total",
			Help: "Key set loads by trigger (start, interval, unknown_kid) and result (changed, unchanged, error).",
		}, []string{"trigger", "result"}),
		keys: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "phigate_jwks_keys", Help: "Keys in the current key set.",
		}),
		lastRefresh: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "phigate_jwks_last_success_timestamp_seconds", Help: "When the key set was last loaded successfully (Unix seconds).",
		}),
	}
	m.ok, m.cached = m.verifications.WithLabelValues("ok"), m.verifications.WithLabelValues("cached")
	return m
}

// Register exposes the verifier's metrics on reg.
func (v *JWTVerifier) Register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{v.metrics.verifications, v.metrics.refreshes, v.metrics.keys, v.metrics.lastRefresh} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

func (m *identityMetrics) verified(err error) {
	if err == nil {
		m.ok.Inc()
		return
	}
	code := CodeOf(err)
	if code == "" {
		code = CodeInvalidToken
	}
	m.verifications.WithLabelValues(string(code)).Inc()
}
