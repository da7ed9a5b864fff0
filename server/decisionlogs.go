package server

import (
	"crypto/rand"
	"encoding/hex"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/phigate/phigate/audit"
	"github.com/phigate/phigate/authz"
	"github.com/phigate/phigate/policy/decisionlog"
)

// decisionLogs returns the recorder the authorizer writes to: the audit
// trail alone, or the trail and then the decision log when decision_logs
// is configured. The log is closed (its buffer sent within
// decision_logs.shutdown_timeout) after the gRPC services stop.
func (s *Server) decisionLogs(trail *audit.Log, b BuildInfo, reg prometheus.Registerer) (authz.Recorder, error) {
	if !s.cfg.DecisionLogs.Enabled() {
		return trail, nil
	}
	// Each process is one instance in the log's labels, as each OPA is.
	var id [16]byte
	_, _ = rand.Read(id[:])
	version := b.Version
	if version == "" {
		version = "unknown"
	}
	dc := s.cfg.DecisionLogs
	if oe := s.cfg.Policy.OPAEnvoy; oe != nil {
		// The event's path is the rule that decides, as OPA's is.
		dc.Path = strings.ReplaceAll(strings.TrimPrefix(oe.Ref(), "data."), ".", "/")
	}
	dl, err := decisionlog.New(dc, hex.EncodeToString(id[:]), version, s.log.Named("decision_logs"), reg)
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, dl.Close)
	s.log.Info("decision logs on", zap.String("instance_id", hex.EncodeToString(id[:])))
	return decisionlog.Recorder{Trail: trail, Log: dl}, nil
}
