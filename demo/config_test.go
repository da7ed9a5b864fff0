package demo

import (
	"path/filepath"
	"testing"

	"github.com/phigate/phigate/demo/demokeys"
	"github.com/phigate/phigate/server"
)

// TestWrittenConfigLoads: the phigate.yaml the demo writes is one that
// config check and serve accept, and it says what the demo runs with.
func TestWrittenConfigLoads(t *testing.T) {
	dir := t.TempDir()
	keys, err := demokeys.LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := Config(dir, keys)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "phigate.yaml")
	if err := WriteConfig(path, cfg); err != nil {
		t.Fatal(err)
	}
	got, err := server.LoadConfig(path)
	if err != nil {
		t.Fatalf("the written configuration does not load: %v", err)
	}
	if got.Listen.GRPC != demoGRPC || got.JWT.JWKSFile != keys.JWKSPath() || got.Audit.Dir != filepath.Join(dir, "audit") ||
		len(got.Request.LegacyRoutes) != 1 || got.Owners.Upstream != "http://"+demoUpstream {
		t.Fatalf("loaded %+v", got)
	}
}
