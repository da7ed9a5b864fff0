package policy

import (
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	regolib "github.com/phigate/phigate/rego"
)

// TestRevisionIsContentOnly: one policy loaded embedded, from a relative
// directory, from an absolute one and from a copy has one revision; a
// change to a module or to the data is another.
func TestRevisionIsContentOnly(t *testing.T) {
	copyTo := func(dir string) {
		t.Helper()
		err := fs.WalkDir(regolib.FS, ".", func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			b, err := fs.ReadFile(regolib.FS, p)
			if err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(dir, p), b, 0o644)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	rev := func(s Source) string {
		t.Helper()
		b, err := s.Load()
		if err != nil {
			t.Fatal(err)
		}
		return revision(b)
	}
	embedded := rev(Source{})
	abs := t.TempDir()
	copyTo(abs)
	other := t.TempDir()
	copyTo(other)
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel(wd, filepath.Join(wd, "..", "rego"))
	if err != nil {
		t.Fatal(err)
	}
	for name, got := range map[string]string{"absolute copy": rev(Source{Dir: abs}), "another copy": rev(Source{Dir: other}), "relative rego/": rev(Source{Dir: rel})} {
		if got != embedded {
			t.Errorf("%s: revision %s, embedded %s", name, got, embedded)
		}
	}
	if err := os.WriteFile(filepath.Join(other, "extra.rego"), []byte("package phigate.ext.x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if rev(Source{Dir: other}) == embedded {
		t.Error("an added module kept the revision")
	}
	if err := os.MkdirAll(filepath.Join(abs, "site"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(abs, "site", "data.json"), []byte(`{"ward": 7}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := rev(Source{Dir: abs}); got == embedded {
		t.Error("changed data kept the revision")
	}
}
