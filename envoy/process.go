package envoy

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"time"
)

// Process is a running Envoy.
type Process struct {
	Admin string
	cmd   *exec.Cmd
	done  chan struct{}
}

// StartProcess starts Envoy with a bootstrap file and returns once its
// admin endpoint reports ready. Envoy's output goes to logs.
func StartProcess(ctx context.Context, bootstrapPath, admin string, logs io.Writer) (*Process, error) {
	bin, err := FindBinary()
	if err != nil {
		return nil, err
	}
	p := &Process{Admin: admin, done: make(chan struct{})}
	p.cmd = exec.Command(bin, "-c", bootstrapPath, "--disable-hot-restart", "--log-level", "warn", "--concurrency", "1")
	p.cmd.Stdout, p.cmd.Stderr = logs, logs
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	if err := p.waitReady(ctx, 30*time.Second); err != nil {
		p.Stop()
		return nil, err
	}
	return p, nil
}

// Done is closed when Envoy exits.
func (p *Process) Done() <-chan struct{} { return p.done }

func (p *Process) waitReady(ctx context.Context, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for {
		select {
		case <-p.done:
			return errors.New("envoy exited before it was ready")
		case <-ctx.Done():
			return errors.New("envoy not ready: " + ctx.Err().Error())
		case <-time.After(50 * time.Millisecond):
		}
		resp, err := http.Get("http://" + p.Admin + "/ready")
		if err != nil {
			continue
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			return nil
		}
	}
}

// Stop terminates Envoy and waits for it to exit.
func (p *Process) Stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}
