package audit

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the Log's instruments. Labels carry sink names only, never
// anything from a record.
type metrics struct {
	records          prometheus.Counter
	appendFailures   prometheus.Counter
	checkpoints      prometheus.Counter
	segments         prometheus.Gauge
	batchSize        prometheus.Histogram
	fsyncSeconds     prometheus.Histogram
	waitSeconds      prometheus.Histogram
	sinkDropped      *prometheus.CounterVec
	sinkErrors       *prometheus.CounterVec
	oversize         prometheus.Counter
	quarantined      prometheus.Counter
	preallocFailures prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		records: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "phigate", Subsystem: "audit",
			Name: "records_total", Help: "Records made durable."}),
		appendFailures: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "phigate", Subsystem: "audit",
			Name: "append_failures_total", Help: "Write, fsync or checkpoint failures (each poisons the log)."}),
		checkpoints: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "phigate", Subsystem: "audit",
			Name: "checkpoints_total", Help: "Signed checkpoints written."}),
		segments: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "phigate", Subsystem: "audit",
			Name: "segments", Help: "Segment files in the log directory."}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "phigate", Subsystem: "audit",
			Name: "batch_records", Help: "Records per group commit.", Buckets: prometheus.ExponentialBuckets(1, 2, 13)}),
		fsyncSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "phigate", Subsystem: "audit",
			Name: "append_seconds", Help: "Time of one write+fsync.", Buckets: prometheus.ExponentialBuckets(0.0001, 2, 14)}),
		waitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "phigate", Subsystem: "audit",
			Name: "record_wait_seconds", Help: "Time a caller waits for its record to be durable: queueing, the commit in flight and its own.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 14)}),
		sinkDropped: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "phigate", Subsystem: "audit",
			Name: "sink_dropped_total", Help: "Records not delivered to a sink because its queue was full."}, []string{"sink"}),
		sinkErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "phigate", Subsystem: "audit",
			Name: "sink_errors_total", Help: "Records a sink failed to deliver."}, []string{"sink"}),
		oversize: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "phigate", Subsystem: "audit",
			Name: "records_oversize_total", Help: "Decisions whose record exceeded max_record_bytes and were recorded as a compact substitute."}),
		quarantined: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "phigate", Subsystem: "audit",
			Name: "quarantined_total", Help: "Unreadable trail tails moved aside at startup (each one is also a record in the trail)."}),
		preallocFailures: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "phigate", Subsystem: "audit",
			Name: "preallocate_failures_total", Help: "Failures to fill the live segment with zeros ahead of its records (appends then extend the file, slower)."}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.records, m.appendFailures, m.checkpoints, m.segments,
		m.batchSize, m.fsyncSeconds, m.waitSeconds, m.sinkDropped, m.sinkErrors, m.oversize, m.quarantined, m.preallocFailures} {
		if err := reg.Register(c); err != nil {
			return nil, errf(CodeConfig, nil, err, "register metrics")
		}
	}
	return m, nil
}
