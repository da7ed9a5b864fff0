package audit

import (
	"os"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// The segment being appended to is kept filled with zeros ahead of the
// records, and those zeros made durable, by a goroutine of its own. A
// commit then overwrites blocks the file system has already allocated
// and the file's size does not change, so its fsync has no metadata to
// journal: on ext4 a write + fsync of a batch costs about half the wall
// time and half the CPU of one that extends the file (BENCHMARKS.md). A
// commit that outruns the zeros extends the file as before; nothing waits
// for the extender and nothing is lost if it fails.
//
// Readers stop at the zeros (parseFrames); a rotated segment and one
// closed cleanly are cut to their records, so only the live segment, or
// the newest one after a crash, carries them.

const (
	// DefaultPreallocateBytes is how far the zeros run ahead of the
	// records at most.
	DefaultPreallocateBytes = 8 << 20
	// minPrealloc is how far ahead a new or small segment is filled: the
	// distance grows with the segment, so a quiet trail (or a test's)
	// never writes megabytes of zeros it does not need.
	minPrealloc = 256 << 10
	// fillPiece bounds one write of zeros, which holds the lock the
	// committer writes under.
	fillPiece = 64 << 10
)

var zeroPiece [fillPiece]byte

// segFile is what the extender writes: an *os.File but for a test that
// holds the committer inside a write.
type segFile interface {
	WriteAt(b []byte, off int64) (int, error)
	Sync() error
}

type extender struct {
	max   int64 // how far ahead at most; 0 turns the extender off
	limit int64 // no zeros past this offset (the segment's rotation size)
	lg    *zap.Logger
	errs  prometheus.Counter

	mu      sync.Mutex
	f       segFile
	gen     uint64 // bumped when f changes
	written int64  // end of the records written to f
	zeroed  int64  // end of the bytes f has allocated: records, then zeros
	failed  uint64 // gen the last failure was on: not retried on that file

	wake chan struct{}
	stop chan struct{}
	done chan struct{}
}

func newExtender(max, limit int64, lg *zap.Logger, errs prometheus.Counter) *extender {
	e := &extender{max: max, limit: limit, lg: lg, errs: errs,
		wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go e.run()
	return e
}

// attach makes f, holding written bytes of records and allocated up to
// size, the file filled from now on; nil detaches the current one.
func (e *extender) attach(f *os.File, written, size int64) {
	e.mu.Lock()
	e.f, e.written, e.zeroed = nil, written, max(size, written)
	if f != nil {
		e.f = f
	}
	e.gen++
	e.mu.Unlock()
	e.poke()
}

// writeAt writes the committer's bytes at off.
func (e *extender) writeAt(b []byte, off int64) error {
	e.mu.Lock()
	n, err := e.f.WriteAt(b, off)
	e.written = off + int64(n)
	e.zeroed = max(e.zeroed, e.written)
	low := e.zeroed-e.written < e.ahead()/2
	e.mu.Unlock()
	if low {
		e.poke()
	}
	return err
}

// ahead is how far past the records the zeros should reach.
func (e *extender) ahead() int64 {
	return min(e.max, max(minPrealloc, e.written))
}

func (e *extender) poke() {
	if e.max <= 0 {
		return
	}
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

func (e *extender) close() {
	close(e.stop)
	<-e.done
}

func (e *extender) run() {
	defer close(e.done)
	for {
		select {
		case <-e.stop:
			return
		case <-e.wake:
			e.fill()
		}
	}
}

// fill writes zeros from the allocated end up to ahead() past the records,
// a piece at a time, then makes them durable.
func (e *extender) fill() {
	var f segFile
	var gen uint64
	wrote := false
	for {
		select {
		case <-e.stop:
			return
		default:
		}
		e.mu.Lock()
		if f != nil && e.gen != gen { // rotated under us: start over on the next poke
			e.mu.Unlock()
			return
		}
		f, gen = e.f, e.gen
		target := min(e.written+e.ahead(), e.limit)
		if f == nil || e.failed == gen || e.zeroed >= target {
			e.mu.Unlock()
			break
		}
		off := e.zeroed
		n, err := f.WriteAt(zeroPiece[:min(fillPiece, target-off)], off)
		e.zeroed = max(e.zeroed, off+int64(n))
		if err != nil {
			e.failed = gen
		}
		e.mu.Unlock()
		if err != nil {
			e.fault(err)
			return
		}
		wrote = true
	}
	if wrote {
		if err := f.Sync(); err != nil {
			e.mu.Lock()
			current := e.gen == gen
			if current {
				e.failed = gen
			}
			e.mu.Unlock()
			if current {
				e.fault(err)
			}
		}
	}
}

// fault counts a failure to preallocate. Records are unaffected: commits
// extend the file themselves, and a disk that is really full fails them,
// which the log reports on its own.
func (e *extender) fault(err error) {
	e.errs.Inc()
	e.lg.Warn("audit segment preallocation failed; appends extend the file until the next segment", zap.Error(err))
}
