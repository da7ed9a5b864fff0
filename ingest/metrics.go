package ingest

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the feeds' counters. Labels are the feed, the event kind
// from a fixed list and the outcome: never a patient, a practitioner or a
// message id.
type Metrics struct {
	messages      *prometheus.CounterVec
	duration      *prometheus.HistogramVec
	connections   prometheus.Gauge
	refusedConns  prometheus.Counter
	framingErrors prometheus.Counter
}

// NewMetrics registers the feeds' metrics on reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "phigate_ingest_messages_total",
			Help: "Clinical event feed messages by feed, event and outcome (applied, duplicate, stale, rejected, error)."},
			[]string{"source", "event", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "phigate_ingest_message_duration_seconds",
			Help: "Time from a message read to its acknowledgement, store and audit included.", Buckets: prometheus.DefBuckets},
			[]string{"source"}),
		connections: prometheus.NewGauge(prometheus.GaugeOpts{Name: "phigate_ingest_mllp_connections",
			Help: "MLLP connections open."}),
		refusedConns: prometheus.NewCounter(prometheus.CounterOpts{Name: "phigate_ingest_mllp_connections_refused_total",
			Help: "MLLP connections closed on accept because ingest.mllp.max_connections were open."}),
		framingErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "phigate_ingest_mllp_connection_errors_total",
			Help: "MLLP connections closed on a framing error, an oversized message or a timeout."}),
	}
	if reg != nil {
		reg.MustRegister(m.messages, m.duration, m.connections, m.refusedConns, m.framingErrors)
	}
	return m
}
