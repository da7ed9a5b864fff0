package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/phigate/phigate/audit"
	"github.com/phigate/phigate/ingest"
	"github.com/phigate/phigate/store"
)

// feeds are the clinical event feeds' listeners (ingest.mllp, ingest.fhir),
// when configured. A listener that stops serving marks the server not
// ready; the authorization path keeps serving.
type feeds struct {
	mllp   *ingest.MLLPServer
	mllpLn net.Listener
	fhir   *http.Server
	fhirLn net.Listener
	failed atomic.Bool

	// The message ids older than retention are pruned every pruneEvery.
	store      store.Ingester
	retention  time.Duration
	pruneEvery time.Duration
	stop       chan struct{}
}

// newFeeds binds the configured feed listeners over st, recording every
// message in trail.
func (s *Server) newFeeds(cfg ingest.Config, st store.Store, trail *audit.Log, reg prometheus.Registerer) error {
	m := ingest.NewMetrics(reg)
	s.feeds = &feeds{}
	if cfg.MLLP.Listen == "" && cfg.FHIR.Listen == "" {
		return nil
	}
	in, ok := st.(store.Ingester)
	if !ok {
		return errors.New("ingest: the store does not take clinical event feeds")
	}
	s.feeds.store, s.feeds.retention, s.feeds.stop = in, cfg.MessageRetention, make(chan struct{})
	s.feeds.pruneEvery = min(cfg.MessageRetention/10, time.Hour)
	stop := s.feeds.stop
	s.closers = append(s.closers, func() { close(stop) })
	if c := cfg.MLLP; c.Listen != "" {
		ln, err := s.feedListener(c.Listen, c.TLS, "ingest.mllp", []string{})
		if err != nil {
			return err
		}
		log := s.log.Named("ingest.mllp")
		s.feeds.mllp = ingest.NewMLLPServer(ingest.NewADT(in, trail, c, log, m), c, log, m)
		s.feeds.mllpLn = ln
		s.closers = append(s.closers, s.feeds.mllp.Close)
	}
	if c := cfg.FHIR; c.Listen != "" {
		var token []byte
		if c.TokenFile != "" {
			t, err := ingest.ReadToken(c.TokenFile)
			if err != nil {
				return fmt.Errorf("ingest.fhir.token_file: %w", err)
			}
			token = t
		}
		ln, err := s.feedListener(c.Listen, c.TLS, "ingest.fhir", []string{"http/1.1"})
		if err != nil {
			return err
		}
		h := ingest.NewFHIR(in, trail, c, token, s.log.Named("ingest.fhir"), m)
		s.feeds.fhir = &http.Server{Handler: h.Handler(), ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute}
		s.feeds.fhirLn = ln
		srv := s.feeds.fhir
		s.closers = append(s.closers, func() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_ = srv.Shutdown(ctx)
			_ = ln.Close()
		})
	}
	return nil
}

func (s *Server) feedListener(addr string, t ingest.TLSFiles, name string, protos []string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s.listen: %w", name, err)
	}
	s.closers = append(s.closers, func() { _ = ln.Close() })
	if t.Cert == "" {
		return ln, nil
	}
	tf := &tlsFiles{cfg: TLSConfig(t), log: s.log.Named("tls"), name: name + ".tls", protos: protos}
	st, err := tf.load()
	if err != nil {
		return nil, err
	}
	tf.cur.Store(st)
	tf.checked.Store(time.Now().UnixNano())
	return tls.NewListener(ln, tf.serverConfig()), nil
}

// serveFeeds starts the feed listeners.
func (s *Server) serveFeeds() {
	f := s.feeds
	fail := func(name string, err error) {
		if err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			s.log.Error("feed listener stopped; not ready", zap.String("listener", name), zap.Error(err))
			f.failed.Store(true)
		}
	}
	if f.mllp != nil {
		go func() { fail("ingest.mllp", f.mllp.Serve(f.mllpLn)) }()
	}
	if f.fhir != nil {
		go func() { fail("ingest.fhir", f.fhir.Serve(f.fhirLn)) }()
	}
	if f.store != nil {
		go s.pruneFeeds()
	}
}

// pruneFeeds forgets message ids past ingest.message_retention, so the
// table (or the embedded store's map) does not grow with the feed.
func (s *Server) pruneFeeds() {
	f := s.feeds
	t := time.NewTicker(f.pruneEvery)
	defer t.Stop()
	for {
		select {
		case <-f.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		n, err := f.store.PruneIngested(ctx, time.Now().Add(-f.retention))
		cancel()
		switch {
		case err != nil:
			s.log.Warn("pruning the feeds' message ids failed", zap.Error(err))
		case n > 0:
			s.log.Info("feed message ids pruned", zap.Int64("ids", n))
		}
	}
}

// MLLPAddr is the address the HL7 v2 MLLP listener is bound to, or "".
func (s *Server) MLLPAddr() string {
	if s.feeds == nil || s.feeds.mllpLn == nil {
		return ""
	}
	return s.feeds.mllpLn.Addr().String()
}

// FHIRIngestAddr is the address the FHIR ingest listener is bound to, or "".
func (s *Server) FHIRIngestAddr() string {
	if s.feeds == nil || s.feeds.fhirLn == nil {
		return ""
	}
	return s.feeds.fhirLn.Addr().String()
}
