package server

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/phigate/phigate/audit"
	"github.com/phigate/phigate/store"
)

// startShipping ships the trail to the PostgreSQL database the store
// names, in the background (docs/central-audit.md); with the embedded
// store there is no centre and nothing is shipped. Only opening the
// centre can fail here: once started, a slow or absent PostgreSQL grows
// the shipping lag and never reaches a Check.
func (s *Server) startShipping(ctx context.Context, trail *audit.Log, log *zap.Logger, reg prometheus.Registerer) error {
	dsn, err := s.cfg.Store.dsn()
	if err != nil || dsn == "" {
		return err
	}
	centre, err := store.OpenAuditCentre(ctx, dsn)
	if err != nil {
		return err
	}
	sh, err := audit.StartShipper(trail, centre, audit.ShipLogger(log.Named("audit_ship")), audit.ShipRegisterer(reg))
	if err != nil {
		_ = centre.Close()
		return err
	}
	// Closers run last first: this one runs after those of everything
	// New wires later to write to the trail (the listeners, the feeds,
	// the decision logs) and before the trail's own. The trail is closed
	// here, once nothing can write to it, so that its final checkpoint is
	// in the shipper's last round; closing it again later does nothing.
	s.closers = append(s.closers, func() {
		_ = trail.Close()
		_ = sh.Close()
		_ = centre.Close()
	})
	return nil
}
