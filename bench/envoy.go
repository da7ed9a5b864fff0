package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"

	"github.com/phigate/phigate/demo"
	"github.com/phigate/phigate/envoy"
)

// runBenchEnvoy measures what phigate's two filters (ext_authz on the way
// in, ext_proc on the way out) add to a request through Envoy. It starts the
// legacy service, phigate in-process and two Envoys in front of the same
// service, identical except that the second has no phigate filters, and
// drives both with the same load in the same run, step by step in turn, so
// the difference is phigate's and not the machine's mood. Everything it
// starts is stopped before it returns.
func runBenchEnvoy(ctx context.Context, cfg Config, o Setup, dir string, progress io.Writer) (*Report, error) {
	if cfg.Target != "" || cfg.Compare != "" || cfg.Baseline {
		return nil, errors.New("--envoy: starts its own targets; drop --target, --compare and --baseline")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	up, err := demo.Upstream()
	if err != nil {
		return nil, err
	}
	var lc net.ListenConfig
	upLn, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("legacy service: %w", err)
	}
	upDone := make(chan error, 1)
	go func() { upDone <- up.Serve(ctx, upLn, nil) }()
	defer func() { cancel(); <-upDone }()

	ph, err := startBenchPhigate(ctx, cfg, o, dir, filepath.Join(dir, "audit"))
	if err != nil {
		return nil, err
	}
	defer ph.stop()

	with, err := startBenchEnvoy(ctx, dir, "envoy-phigate", envoy.BootstrapConfig{
		Upstream: upLn.Addr().String(), Phigate: ph.addr})
	if err != nil {
		return nil, err
	}
	defer with.stop()
	without, err := startBenchEnvoy(ctx, dir, "envoy", envoy.BootstrapConfig{
		Upstream: upLn.Addr().String(), NoAuthz: true})
	if err != nil {
		return nil, err
	}
	defer without.stop()

	// Each side samples its own Envoy, found from its listening port:
	// phigate shares the generator's process, so its CPU would not be its own.
	cfg.Target, cfg.TargetName = "http://"+with.listen, "envoy+phigate"
	cfg.Compare, cfg.CompareName = "http://"+without.listen, "envoy"
	cfg.TargetDecisions = decisionCounts(ph.engine)
	if cfg.Connections == 0 {
		// HTTP/1.1 carries one request per connection at a time; a sidecar
		// sees many clients, and four connections would queue the load in
		// the generator instead of in Envoy.
		cfg.Connections = 64
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	rep, err := RunHTTP(ctx, cfg, progress)
	if err != nil {
		return nil, err
	}
	rep.Notes = append(rep.Notes,
		"envoy+phigate and envoy are two Envoy processes (--concurrency 1) with the same bootstrap but for phigate's ext_authz and ext_proc filters, in front of the same legacy service; the added columns are what phigate's filters cost per request",
		"cpu and rss columns are each Envoy's own; phigate and the legacy service run inside the bench process")
	rep.Notes = append(rep.Notes, ph.notes...)
	rep.Notes = append(rep.Notes, "phigate "+ph.engine.CacheCounts().String())
	return rep, nil
}

// benchEnvoy is one Envoy started for a bench run.
type benchEnvoy struct {
	listen string
	proc   *envoy.Process
	log    *os.File
}

func (e *benchEnvoy) stop() {
	e.proc.Stop()
	_ = e.log.Close()
}

// startBenchEnvoy writes the bootstrap for c on free loopback ports into
// dir and starts Envoy; its log goes to dir/<name>.log.
func startBenchEnvoy(ctx context.Context, dir, name string, c envoy.BootstrapConfig) (*benchEnvoy, error) {
	var err error
	if c.Listen, err = freeLoopbackPort(); err != nil {
		return nil, err
	}
	if c.Admin, err = freeLoopbackPort(); err != nil {
		return nil, err
	}
	yaml, err := envoy.Bootstrap(c)
	if err != nil {
		return nil, fmt.Errorf("%s bootstrap: %w", name, err)
	}
	path := filepath.Join(dir, name+".yaml")
	if err := os.WriteFile(path, yaml, 0o600); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		return nil, err
	}
	proc, err := envoy.StartProcess(ctx, path, c.Admin, logf)
	if err != nil {
		_ = logf.Close()
		return nil, fmt.Errorf("%s: %w (see %s)", name, err, logf.Name())
	}
	return &benchEnvoy{listen: c.Listen, proc: proc, log: logf}, nil
}

// freeLoopbackPort returns a loopback address whose port was free a moment
// ago; Envoy binds it itself, so there is a small window for a clash, which
// shows as a start-up error, never as a wrong measurement.
func freeLoopbackPort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}
