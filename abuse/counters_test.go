package abuse

import (
	"os"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/phigate/phigate/internal/redistest"
)

func TestMain(m *testing.M) { os.Exit(redistest.Wrap(m).Run()) }

// backends are the counters under test: this process's, and a real Redis.
func backends(t *testing.T) map[string]func(t *testing.T) Counters {
	return map[string]func(t *testing.T) Counters{
		"memory": func(*testing.T) Counters { return NewMemory() },
		"redis": func(t *testing.T) Counters {
			addr, prefix := redistest.Start(t)
			r := NewRedis(redis.NewClient(&redis.Options{Addr: addr}), prefix)
			t.Cleanup(func() { _ = r.Close() })
			return r
		},
	}
}

func TestCountersContract(t *testing.T) {
	for name, open := range backends(t) {
		t.Run(name, func(t *testing.T) {
			t.Run("bucket", func(t *testing.T) { testBucket(t, open(t)) })
			t.Run("window", func(t *testing.T) { testWindow(t, open(t)) })
			t.Run("concurrent takes", func(t *testing.T) { testConcurrentTakes(t, open(t)) })
			t.Run("amounts", func(t *testing.T) { testAmounts(t, open(t)) })
		})
	}
}

func testBucket(t *testing.T, c Counters) {
	ctx := t.Context()
	// 3 tokens, refilled at 10 a second.
	for i := range 3 {
		if ok, _, err := c.Take(ctx, "b1", 10, 3); err != nil || !ok {
			t.Fatalf("take %d of the burst: %v %v", i, ok, err)
		}
	}
	ok, retry, err := c.Take(ctx, "b1", 10, 3)
	if err != nil || ok {
		t.Fatalf("the fourth take: ok %v, %v", ok, err)
	}
	if retry <= 0 || retry > 100*time.Millisecond {
		t.Fatalf("retry after %v, want within one refill (100ms)", retry)
	}
	if ok, _, _ := c.Take(ctx, "b2", 10, 3); !ok {
		t.Fatal("another key shares the bucket")
	}
	time.Sleep(retry + 20*time.Millisecond)
	if ok, _, err := c.Take(ctx, "b1", 10, 3); err != nil || !ok {
		t.Fatalf("after the retry time: %v %v", ok, err)
	}
}

func testWindow(t *testing.T, c Counters) {
	ctx := t.Context()
	if d, a, err := c.Touch(ctx, "w1", []string{"p1", "p2"}, time.Minute); err != nil || d != 2 || a != 2 {
		t.Fatalf("first touch: %d %d %v", d, a, err)
	}
	if d, a, _ := c.Touch(ctx, "w1", []string{"p2", "p3"}, time.Minute); d != 3 || a != 1 {
		t.Fatalf("second touch: distinct %d added %d, want 3 1", d, a)
	}
	for range 50 {
		if d, a, _ := c.Touch(ctx, "w1", []string{"p1"}, time.Minute); d != 3 || a != 0 {
			t.Fatalf("the same patient again: distinct %d added %d", d, a)
		}
	}
	if err := c.Forget(ctx, "w1"); err != nil {
		t.Fatal(err)
	}
	if d, _, _ := c.Touch(ctx, "w1", []string{"p9"}, time.Minute); d != 1 {
		t.Fatalf("after Forget: distinct %d, want 1", d)
	}
	// A short window lets members age out.
	if d, _, _ := c.Touch(ctx, "w2", []string{"a", "b"}, 200*time.Millisecond); d != 2 {
		t.Fatal(d)
	}
	time.Sleep(300 * time.Millisecond)
	if d, a, _ := c.Touch(ctx, "w2", []string{"c"}, 200*time.Millisecond); d != 1 || a != 1 {
		t.Fatalf("after the window: distinct %d added %d, want 1 1", d, a)
	}
}

// Takes from many goroutines at once never hand out more than the burst
// (a slow refill adds none during the test).
func testConcurrentTakes(t *testing.T, c Counters) {
	ctx := t.Context()
	var wg sync.WaitGroup
	var mu sync.Mutex
	granted := 0
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 25 {
				ok, _, err := c.Take(ctx, "shared", 0.001, 50)
				if err != nil {
					t.Error(err)
					return
				}
				if ok {
					mu.Lock()
					granted++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if granted != 50 {
		t.Fatalf("%d tokens granted from a burst of 50", granted)
	}
}

func testAmounts(t *testing.T, c Counters) {
	ctx := t.Context()
	for i, want := range []int{3, 3, 10, 10} {
		n := []int{3, 0, 7, 0}[i]
		if sum, err := c.Add(ctx, "a1", n, time.Minute); err != nil || sum != want {
			t.Fatalf("add %d: sum %d %v, want %d", n, sum, err, want)
		}
	}
	if sum, _ := c.Add(ctx, "a2", 1, time.Minute); sum != 1 {
		t.Fatalf("another key: %d", sum)
	}
	if err := c.Forget(ctx, "a1"); err != nil {
		t.Fatal(err)
	}
	if sum, _ := c.Add(ctx, "a1", 2, time.Minute); sum != 2 {
		t.Fatalf("after Forget: %d", sum)
	}
	if sum, _ := c.Add(ctx, "a3", 5, 200*time.Millisecond); sum != 5 {
		t.Fatal(sum)
	}
	time.Sleep(300 * time.Millisecond)
	if sum, _ := c.Add(ctx, "a3", 1, 200*time.Millisecond); sum != 1 {
		t.Fatalf("after the window: %d, want 1", sum)
	}
}
