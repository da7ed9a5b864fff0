package server_test

import (
	"context"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/phigate/phigate/demo/demokeys"
	"github.com/phigate/phigate/internal/stacktest"
	"github.com/phigate/phigate/server"
)

// TestNewRefusesMissingSeams: New names what it was not given rather than
// failing later, or serving with a default nobody chose.
func TestNewRefusesMissingSeams(t *testing.T) {
	keys, err := demokeys.LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	valid := func() *server.Config {
		cfg := stacktest.ServerConfig(t, keys)
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	cases := []struct {
		name string
		ctx  context.Context
		cfg  *server.Config
		log  *zap.Logger
		opts []server.Option
		want string
	}{
		{"nil context", nil, valid(), zap.NewNop(), nil, "nil context"},
		{"nil configuration", t.Context(), nil, zap.NewNop(), nil, "nil configuration"},
		{"configuration not validated", t.Context(), stacktest.ServerConfig(t, keys), zap.NewNop(), nil, "Config.Validate"},
		{"nil logger", t.Context(), valid(), nil, nil, "nil logger"},
		{"nil option", t.Context(), valid(), zap.NewNop(), []server.Option{nil}, "nil option"},
		{"nil grant store", t.Context(), valid(), zap.NewNop(), []server.Option{server.WithGrants(nil)}, "WithGrants"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv, err := server.New(tc.ctx, tc.cfg, tc.log, tc.opts...)
			if err == nil {
				srv.Close()
				t.Fatalf("New succeeded, want an error containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

// TestNewThenClose: a server that is never run releases its listeners, so
// the same addresses can be bound again at once.
func TestNewThenClose(t *testing.T) {
	keys, err := demokeys.LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cfg := stacktest.ServerConfig(t, keys)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(t.Context(), cfg, zap.NewNop(), server.WithBuildInfo(server.BuildInfo{Version: "v0-test"}))
	if err != nil {
		t.Fatal(err)
	}
	grpcAddr, adminAddr := srv.GRPCAddr(), srv.AdminAddr()
	if grpcAddr == "" || strings.HasSuffix(grpcAddr, ":0") || strings.HasSuffix(adminAddr, ":0") {
		t.Fatalf("bound addresses %q, %q: want the actual ports", grpcAddr, adminAddr)
	}
	srv.Close()
	srv.Close()
	again := stacktest.ServerConfig(t, keys)
	again.Listen.GRPC, again.Listen.Admin = grpcAddr, adminAddr
	if err := again.Validate(); err != nil {
		t.Fatal(err)
	}
	srv2, err := server.New(t.Context(), again, zap.NewNop())
	if err != nil {
		t.Fatalf("rebinding the closed server's addresses: %v", err)
	}
	srv2.Close()
}
