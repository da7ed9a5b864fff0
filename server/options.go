package server

import (
	"context"
	"errors"

	"go.uber.org/zap"

	"github.com/phigate/phigate/authz"
)

// Option configures New. What phigate.yaml can say belongs in Config;
// options are for what a program embedding the server decides itself.
type Option func(*options)

type options struct {
	build     BuildInfo
	buildSet  bool
	grants    authz.GrantStore
	grantsSet bool
}

// WithBuildInfo sets what phigate_build_info reports. Without it the
// server reports what the Go toolchain stamped into the binary, which
// lacks the version and revision a release build sets at link time.
func WithBuildInfo(b BuildInfo) Option {
	return func(o *options) { o.build, o.buildSet = b, true }
}

// WithGrants sets where break-glass grants live between requests. Without
// it they live in this process's memory, which is right for one replica
// only: a grant declared at one replica is unknown to the others.
func WithGrants(g authz.GrantStore) Option {
	return func(o *options) { o.grants, o.grantsSet = g, true }
}

// buildOptions checks what New requires and fills the defaults.
func buildOptions(ctx context.Context, cfg *Config, log *zap.Logger, opts []Option) (options, error) {
	var o options
	switch {
	case ctx == nil:
		return o, errors.New("server: nil context")
	case cfg == nil:
		return o, errors.New("server: nil configuration")
	case !cfg.validated:
		return o, errors.New("server: configuration not validated; call Config.Validate (LoadConfig does) before New")
	case log == nil:
		return o, errors.New("server: nil logger; pass zap.NewNop() to discard the operational log")
	}
	for _, f := range opts {
		if f == nil {
			return o, errors.New("server: nil option")
		}
		f(&o)
	}
	// A nil store passed on purpose is a wiring mistake, not a request
	// for the default.
	if o.grantsSet && o.grants == nil {
		return o, errors.New("server: WithGrants: nil grant store")
	}
	if !o.buildSet {
		o.build = ReadBuildInfo()
	}
	return o, nil
}
