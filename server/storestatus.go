package server

import (
	"errors"
	"io/fs"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/phigate/phigate/audit"
	"github.com/phigate/phigate/policy"
	"github.com/phigate/phigate/store"
)

// storeStatus is the shared store's part of /readyz. A store that is away
// does not make the replica unready: requests that need no shared state
// are still served, and those that do are refused with a reason
// (store_unavailable), which taking every replica out of rotation at once
// would only make worse.
type storeStatus struct {
	Backend   string `json:"backend"`
	Reachable bool   `json:"reachable"`
	// DownSince is when the store stopped answering (RFC 3339).
	DownSince string `json:"down_since,omitempty"`
}

func (s *Server) storeStatus() storeStatus {
	h := s.store.Health()
	st := storeStatus{Backend: s.storeKind, Reachable: h.Up()}
	if t := h.DownSince(); !t.IsZero() {
		st.DownSince = t.UTC().Format(time.RFC3339Nano)
	}
	return st
}

func registerStoreMetrics(reg prometheus.Registerer, h *store.Health) {
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "phigate_store_up",
			Help: "Whether the shared store answered the replica's last lookup, write or probe (1) or not (0).",
		}, func() float64 {
			if h.Up() {
				return 1
			}
			return 0
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "phigate_store_failures_total",
			Help: "Lookups, writes and probes of the shared store that failed.",
		}, func() float64 { return float64(h.Failures()) }),
	)
}

// policyRoles reads the role permissions of the policy's data, for the
// console's entitlement review: the directory's data.json, else the
// shipped library's. A bundle's roles, or a directory without data, are
// not read (none: the review then lists no unexercised roles).
func policyRoles(src policy.Source) (map[string]map[string][]string, error) {
	if src.BundleFile != "" {
		return nil, nil
	}
	data, err := policy.DataFile(src.Dir)
	if errors.Is(err, fs.ErrNotExist) && src.Dir != "" {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return audit.RolesFromData(data)
}
