package abuse

import (
	"context"
	"math"
	"sync"
	"time"
)

// Counters is where buckets and windows are kept.
type Counters interface {
	// Take takes one token from the bucket named key, which holds at most
	// burst tokens and refills at rate per second. When it is empty, ok
	// is false and retry says when a token will be there.
	Take(ctx context.Context, key string, rate float64, burst int) (ok bool, retry time.Duration, err error)
	// Touch records members (patient ids) under key for window and
	// returns how many distinct members key holds within the window, and
	// how many of them this call added.
	Touch(ctx context.Context, key string, members []string, window time.Duration) (distinct, added int, err error)
	// Forget empties the window named key.
	Forget(ctx context.Context, key string) error
	// Add adds n to the amounts recorded under key for window and returns
	// their sum within the window.
	Add(ctx context.Context, key string, n int, window time.Duration) (sum int, err error)
	Close() error
}

// Memory is Counters for one process.
type Memory struct {
	mu      sync.Mutex
	buckets map[string]*bucket
	windows map[string]map[string]time.Time
	amounts map[string][]amount
	now     func() time.Time
	swept   time.Time
}

type amount struct {
	at time.Time
	n  int
}

type bucket struct {
	tokens float64
	at     time.Time
	rate   float64
	burst  int
}

// NewMemory returns empty counters.
func NewMemory() *Memory {
	return &Memory{buckets: map[string]*bucket{}, windows: map[string]map[string]time.Time{},
		amounts: map[string][]amount{}, now: time.Now}
}

// Take implements Counters.
func (m *Memory) Take(_ context.Context, key string, rate float64, burst int) (bool, time.Duration, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	m.sweep(now)
	b := m.buckets[key]
	if b == nil {
		b = &bucket{tokens: float64(burst), at: now}
		m.buckets[key] = b
	}
	b.rate, b.burst = rate, burst
	b.tokens = math.Min(float64(burst), b.tokens+now.Sub(b.at).Seconds()*rate)
	b.at = now
	if b.tokens >= 1 {
		b.tokens--
		return true, 0, nil
	}
	return false, time.Duration((1 - b.tokens) / rate * float64(time.Second)), nil
}

// Touch implements Counters.
func (m *Memory) Touch(_ context.Context, key string, members []string, window time.Duration) (int, int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	m.sweep(now)
	w := m.windows[key]
	if w == nil {
		w = map[string]time.Time{}
		m.windows[key] = w
	}
	for k, at := range w {
		if now.Sub(at) > window {
			delete(w, k)
		}
	}
	added := 0
	for _, p := range members {
		if _, ok := w[p]; !ok {
			added++
		}
		w[p] = now
	}
	return len(w), added, nil
}

// Add implements Counters.
func (m *Memory) Add(_ context.Context, key string, n int, window time.Duration) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	m.sweep(now)
	as := m.amounts[key]
	i := 0
	for i < len(as) && now.Sub(as[i].at) > window {
		i++
	}
	as = append(as[i:], amount{now, n})
	m.amounts[key] = as
	sum := 0
	for _, a := range as {
		sum += a.n
	}
	return sum, nil
}

// Forget implements Counters.
func (m *Memory) Forget(_ context.Context, key string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.windows, key)
	delete(m.amounts, key)
	return nil
}

// sweep drops, at most once a minute, buckets that have refilled and
// windows that have emptied, so idle identities do not accumulate.
func (m *Memory) sweep(now time.Time) {
	if now.Sub(m.swept) < time.Minute {
		return
	}
	m.swept = now
	for k, b := range m.buckets {
		if b.rate > 0 && now.Sub(b.at).Seconds()*b.rate >= float64(b.burst) {
			delete(m.buckets, k)
		}
	}
	for k, as := range m.amounts {
		if len(as) == 0 || now.Sub(as[len(as)-1].at) > time.Hour {
			delete(m.amounts, k)
		}
	}
	for k, w := range m.windows {
		newest := time.Time{}
		for _, at := range w {
			if at.After(newest) {
				newest = at
			}
		}
		if now.Sub(newest) > time.Hour {
			delete(m.windows, k)
		}
	}
}

// Close implements Counters.
func (m *Memory) Close() error { return nil }
