package bench

import (
	"context"
	"net"
	"os"
	"strings"
	"sync"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
)

// NoopServer is an ext_authz server that allows every request at once. It
// is the floor a real authorizer is compared against: the cost of gRPC,
// the transport and the generator itself.
//
// It runs inside the bench process, on its own listener and its own gRPC
// server goroutines, so it shares CPUs with the generator. That is the same
// position a target on the same machine is in, but it means its CPU and RSS
// cannot be measured apart from the generator's, and ratios are best read
// as "cost over the floor" rather than as exact multiples.
type NoopServer struct {
	srv  *grpc.Server
	addr string
	once sync.Once
	stop chan struct{}
}

// StartNoop listens on addr ("127.0.0.1:0", or "unix:///path") and serves
// until Stop or until ctx ends.
func StartNoop(ctx context.Context, addr string) (*NoopServer, error) {
	network, laddr := "tcp", addr
	if p, ok := strings.CutPrefix(addr, "unix://"); ok {
		network, laddr = "unix", p
		_ = os.Remove(p)
	}
	lis, err := (&net.ListenConfig{}).Listen(ctx, network, laddr)
	if err != nil {
		return nil, wrapErr(CodeTarget, "no-op server listen", err)
	}
	s := &NoopServer{srv: grpc.NewServer(), stop: make(chan struct{})}
	if network == "unix" {
		s.addr = "unix://" + laddr
	} else {
		s.addr = lis.Addr().String()
	}
	authv3.RegisterAuthorizationServer(s.srv, noopAuth{})
	go func() { _ = s.srv.Serve(lis) }()
	go func() {
		select {
		case <-ctx.Done():
		case <-s.stop:
		}
		s.srv.Stop()
	}()
	return s, nil
}

// Addr is the address to give a GRPCTarget.
func (s *NoopServer) Addr() string { return s.addr }

// Stop ends the server and closes open connections.
func (s *NoopServer) Stop() {
	s.once.Do(func() { close(s.stop) })
	s.srv.Stop()
}

type noopAuth struct {
	authv3.UnimplementedAuthorizationServer
}

var okResponse = &authv3.CheckResponse{
	Status:       &rpcstatus.Status{Code: 0},
	HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{}},
}

func (noopAuth) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return okResponse, nil
}
