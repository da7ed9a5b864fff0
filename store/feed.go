package store

import (
	"cmp"
	"slices"
	"sync"
)

// feed is a Changes channel that never blocks a writer: when the consumer
// falls behind and the buffer is full, the change is dropped and a
// KindReset is owed, delivered as soon as there is room, so the consumer
// learns it must drop everything it derived rather than miss a change.
type feed struct {
	mu       sync.Mutex
	ch       chan Change
	owed     bool
	isClosed bool
}

const feedBuffer = 1024

func newFeed() feed { return feed{ch: make(chan Change, feedBuffer)} }

func (f *feed) send(c Change) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.isClosed {
		return
	}
	if f.owed {
		select {
		case f.ch <- Change{Kind: KindReset}:
			f.owed = false
		default:
			return
		}
	}
	select {
	case f.ch <- c:
	default:
		f.owed = true
	}
}

func (f *feed) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.isClosed {
		f.isClosed = true
		close(f.ch)
	}
}

func sortRelationships(rs []Relationship) {
	slices.SortFunc(rs, func(a, b Relationship) int {
		return cmp.Or(cmp.Compare(a.Patient, b.Patient), cmp.Compare(a.Role, b.Role), cmp.Compare(a.Source, b.Source))
	})
}
