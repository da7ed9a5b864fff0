package policy

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/phigate/phigate/authz"
)

// writeLargeData writes a data document of n relationship entries beside the
// policy: the size of data that makes a compile take seconds.
func writeLargeData(t *testing.T, dir string, n int) {
	t.Helper()
	var b strings.Builder
	b.WriteString(`{"phigate": {"care_team": {`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"dr-%06d": ["pat-%06d", "pat-%06d"]`, i, i, i+1)
	}
	b.WriteString("}}}")
	if err := os.WriteFile(filepath.Join(dir, "data.json"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

// replacePolicy swaps the policy file by rename, as a deployment does, so
// a reload reading meanwhile sees the old file or the new one.
func replacePolicy(t *testing.T, dir, body string) {
	t.Helper()
	tmp := filepath.Join(t.TempDir(), "authz.rego")
	if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "authz.rego")); err != nil {
		t.Fatal(err)
	}
}

// hangDetector bounds how long a test waits for something that, when the
// code is wrong, never happens at all. It is not a speed target: a reader
// that waits for the compile it is ordered before deadlocks.
const hangDetector = time.Minute

// TestReadersDoNotWaitForACompile: while a reload compiles a large policy,
// readiness and evaluation answer from the policy being served. The
// compile is held until both have answered, so a reader that waited for it
// would never return.
func TestReadersDoNotWaitForACompile(t *testing.T) {
	dir := t.TempDir()
	writePolicy(t, dir, strings.Replace(goodPolicy, "%s", "one", 1))
	e, err := NewEngine(t.Context(), Config{Source: Source{Dir: dir}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	rev1 := e.Status().Revision
	writePolicy(t, dir, strings.Replace(goodPolicy, "%s", "two", 1))
	writeLargeData(t, dir, 20000)

	compiling, release := make(chan struct{}), make(chan struct{})
	e.beforeCompile = func() {
		close(compiling)
		<-release
	}
	reloaded := make(chan error, 1)
	go func() { reloaded <- e.Reload(t.Context()) }()
	<-compiling

	type answer struct {
		st  Status
		d   authz.Decision
		err error
	}
	answered := make(chan answer, 1)
	go func() {
		st := e.Status()
		d, err := e.Evaluate(t.Context(), &authz.Request{Identity: authz.Identity{Authenticated: true}})
		answered <- answer{st, d, err}
	}()
	select {
	case a := <-answered:
		if !a.st.Ready || a.st.Revision != rev1 {
			t.Errorf("status during the compile = %+v, want ready at revision %s", a.st, rev1)
		}
		if a.err != nil || a.d.Headers["x-rev"] != "one" {
			t.Errorf("decision during the compile: x-rev %q, err %v; want the served policy's answer", a.d.Headers["x-rev"], a.err)
		}
	case err := <-reloaded:
		t.Fatalf("the reload finished (%v) before readers answered, though its compile was held", err)
	case <-time.After(hangDetector):
		close(release)
		t.Fatal("Status or Evaluate waited for the compile of a reload")
	}
	close(release)
	if err := <-reloaded; err != nil {
		t.Fatal(err)
	}
	d, err := e.Evaluate(t.Context(), &authz.Request{Identity: authz.Identity{Authenticated: true}})
	if err != nil || d.Headers["x-rev"] != "two" {
		t.Fatalf("after the reload x-rev = %q (err %v), want two", d.Headers["x-rev"], err)
	}
	if st := e.Status(); st.Revision == rev1 || st.LastError != "" {
		t.Fatalf("status after the reload = %+v, want a new revision and no error", st)
	}
}

// TestReloadsAreSerialized: reloads started together compile one at a
// time, and the policy served at the end is the one on disk at the end.
func TestReloadsAreSerialized(t *testing.T) {
	dir := t.TempDir()
	writePolicy(t, dir, strings.Replace(goodPolicy, "%s", "v0", 1))
	e, err := NewEngine(t.Context(), Config{Source: Source{Dir: dir}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	var inside, overlaps atomic.Int32
	e.beforeCompile = func() {
		if inside.Add(1) > 1 {
			overlaps.Add(1)
		}
		// Give another reload every chance to start compiling meanwhile.
		for range 100 {
			runtime.Gosched()
		}
		inside.Add(-1)
	}
	var wg sync.WaitGroup
	for i := range 8 {
		replacePolicy(t, dir, strings.Replace(goodPolicy, "%s", fmt.Sprintf("v%d", i+1), 1))
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := e.Reload(t.Context()); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if n := overlaps.Load(); n > 0 {
		t.Errorf("%d reloads compiled while another was compiling", n)
	}
	// The last reload to run read the files after the last edit: if an
	// earlier one could swap after it, an older policy would be served.
	d, err := e.Evaluate(t.Context(), &authz.Request{Identity: authz.Identity{Authenticated: true}})
	if err != nil || d.Headers["x-rev"] != "v8" {
		t.Fatalf("x-rev = %q (err %v), want v8, the policy on disk", d.Headers["x-rev"], err)
	}
}
