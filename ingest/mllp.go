package ingest

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"go.uber.org/zap"
)

// MLLP frame bytes: a message is 0x0B, the message, 0x1C 0x0D.
const (
	frameStart = 0x0B
	frameEnd   = 0x1C
	frameCR    = 0x0D
)

// Framing errors. A connection that sends one is closed: after a broken
// frame, where the next message starts is unknown.
var (
	ErrFrameStart   = errors.New("mllp: data outside a frame")
	ErrFrameEnd     = errors.New("mllp: 0x1C not followed by 0x0D")
	ErrFrameTooLong = errors.New("mllp: message over the maximum size")
)

// readFrame reads one framed message of at most max bytes. Before the
// start byte, CR and LF between frames are skipped; anything else is
// ErrFrameStart. io.EOF means the peer closed between frames.
func readFrame(r *bufio.Reader, max int, started func()) ([]byte, error) {
	for {
		c, err := r.ReadByte()
		if err != nil {
			return nil, err
		}
		if c == frameStart {
			break
		}
		if c != '\r' && c != '\n' {
			return nil, ErrFrameStart
		}
	}
	if started != nil {
		started()
	}
	var buf []byte
	for {
		c, err := r.ReadByte()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil, io.ErrUnexpectedEOF
			}
			return nil, err
		}
		switch c {
		case frameEnd:
			c2, err := r.ReadByte()
			if err != nil {
				if errors.Is(err, io.EOF) {
					return nil, io.ErrUnexpectedEOF
				}
				return nil, err
			}
			if c2 != frameCR {
				return nil, ErrFrameEnd
			}
			return buf, nil
		case frameStart:
			return nil, ErrFrameStart
		}
		if len(buf) == max {
			return nil, ErrFrameTooLong
		}
		buf = append(buf, c)
	}
}

// appendFrame wraps msg in an MLLP frame.
func appendFrame(dst, msg []byte) []byte {
	dst = append(dst, frameStart)
	dst = append(dst, msg...)
	return append(dst, frameEnd, frameCR)
}

// Handler answers one message with the acknowledgement to send back.
// peer is the sender's network address.
type Handler interface {
	Handle(ctx context.Context, msg []byte, peer string) []byte
	// Refuse answers a frame that could not be read (too long): an AR
	// the sender can log before the connection closes.
	Refuse(ctx context.Context, reason string, peer string) []byte
}

// MLLPServer serves HL7 v2 over MLLP: one message at a time per
// connection, each answered before the next is read, since an ACK
// says the message is stored and the sender sends the next one only then.
type MLLPServer struct {
	h   Handler
	cfg MLLPConfig
	log *zap.Logger
	m   *Metrics

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	ln     net.Listener
	closed bool
	wg     sync.WaitGroup
	ctx    context.Context
	cancel context.CancelFunc
}

// NewMLLPServer serves h with cfg's limits; cfg must have been validated.
func NewMLLPServer(h Handler, cfg MLLPConfig, log *zap.Logger, m *Metrics) *MLLPServer {
	ctx, cancel := context.WithCancel(context.Background())
	return &MLLPServer{h: h, cfg: cfg, log: log, m: m, conns: map[net.Conn]struct{}{}, ctx: ctx, cancel: cancel}
}

// Serve accepts connections on ln until Close; it returns nil after
// Close, otherwise the accept error.
func (s *MLLPServer) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		_ = ln.Close()
		return nil
	}
	s.ln = ln
	s.mu.Unlock()
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.isClosed() {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		if !s.track(c) {
			s.m.refusedConns.Inc()
			_ = c.Close()
			continue
		}
		go func() {
			defer s.wg.Done()
			defer s.untrack(c)
			s.serveConn(c)
		}()
	}
}

func (s *MLLPServer) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

func (s *MLLPServer) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || len(s.conns) >= s.cfg.MaxConnections {
		return false
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1) // under the lock: Close's Wait sees every connection it did not refuse
	s.m.connections.Inc()
	return true
}

func (s *MLLPServer) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.m.connections.Dec()
	_ = c.Close()
}

func (s *MLLPServer) serveConn(c net.Conn) {
	peer := c.RemoteAddr().String()
	r := bufio.NewReaderSize(c, 16<<10)
	for {
		_ = c.SetReadDeadline(time.Now().Add(s.cfg.IdleTimeout))
		if s.isClosed() {
			return
		}
		msg, err := readFrame(r, s.cfg.MaxMessageBytes, func() {
			_ = c.SetReadDeadline(time.Now().Add(s.cfg.ReadTimeout))
		})
		if err != nil {
			if errors.Is(err, ErrFrameTooLong) {
				s.write(c, s.h.Refuse(s.ctx, "message over ingest.mllp.max_message_bytes", peer))
			}
			if !errors.Is(err, io.EOF) && !s.isClosed() {
				s.m.framingErrors.Inc()
				s.log.Info("MLLP connection closed", zap.String("peer", peer), zap.String("reason", frameReason(err)))
			}
			return
		}
		// A message is applied within the read timeout too: a store that
		// hangs gets the transaction cancelled (nothing applied) and an
		// AE, and Close is never held up longer than that.
		ctx, cancel := context.WithTimeout(s.ctx, s.cfg.ReadTimeout)
		ack := s.h.Handle(ctx, msg, peer)
		cancel()
		if !s.write(c, ack) {
			return
		}
	}
}

// frameReason names a read failure in fixed words for the log.
func frameReason(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, ErrFrameStart), errors.Is(err, ErrFrameEnd), errors.Is(err, ErrFrameTooLong):
		return err.Error()
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "closed inside a frame"
	case errors.As(err, &ne) && ne.Timeout():
		return "read or idle timeout"
	}
	return "read error"
}

func (s *MLLPServer) write(c net.Conn, ack []byte) bool {
	_ = c.SetWriteDeadline(time.Now().Add(s.cfg.ReadTimeout))
	_, err := c.Write(appendFrame(nil, ack))
	return err == nil
}

// Close stops accepting, closes every connection (a message being
// applied finishes first: the store call is not cancelled, so its ACK
// matches what was stored, though it may not reach the sender) and waits
// for the connections' goroutines.
func (s *MLLPServer) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	if s.ln != nil {
		_ = s.ln.Close()
	}
	for c := range s.conns {
		_ = c.SetReadDeadline(time.Now())
	}
	s.mu.Unlock()
	s.wg.Wait()
	s.cancel()
}
