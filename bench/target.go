package bench

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Call is one pre-built request of a scenario, independent of how it is
// delivered (as an ext_authz Check or as HTTP).
type Call struct {
	Kind   string `json:"kind"` // scenario entry kind, for per-kind outcome counts
	Role   string `json:"role"`
	Method string `json:"method"`
	Path   string `json:"path"` // with query string
	// Headers are lower-case, without HTTP/2 pseudo-headers.
	Headers map[string]string `json:"headers"`
	Body    []byte            `json:"body,omitempty"`
	ID      string            `json:"id"`
	Source  string            `json:"source"` // client "ip:port" as the proxy saw it
}

// Outcome is how one request ended. Err is empty when the target answered;
// otherwise it names the failure (a gRPC code name such as
// "DeadlineExceeded", or "transport" for HTTP). Decision is "ok",
// "denied_<status>" for an ext_authz denial, or "http_<status>" for an HTTP
// answer that is neither.
type Outcome struct {
	Err      string
	Decision string
}

// Target delivers prepared calls. Prepare is called once before the load
// starts (not on the hot path); Send is then called concurrently with the
// index of a prepared call.
type Target interface {
	Name() string
	Address() string
	Prepare(calls []Call) error
	Send(ctx context.Context, i int) Outcome
	Close() error
}

// NewTarget returns the gRPC Check target or the HTTP target that addr
// designates (see Config.Target). conns is the connection count.
func NewTarget(name, addr string, conns int) (Target, error) {
	if err := validAddr(addr); err != nil {
		return nil, wrapErr(CodeTarget, "address", err)
	}
	if kindOf(addr) == kindHTTP {
		return NewHTTPTarget(name, addr, conns), nil
	}
	return NewGRPCTarget(name, addr, conns)
}

// GRPCTarget sends ext_authz Check requests built the way Envoy builds them.
type GRPCTarget struct {
	name, addr string
	conns      []*grpc.ClientConn
	clients    []authv3.AuthorizationClient
	next       atomic.Uint64
	reqs       []*authv3.CheckRequest
}

// NewGRPCTarget dials lazily; the first Send connects.
func NewGRPCTarget(name, addr string, conns int) (*GRPCTarget, error) {
	if conns < 1 {
		conns = 1
	}
	t := &GRPCTarget{name: name, addr: addr}
	for range conns {
		// Distinct connections need distinct channels: grpc-go shares one
		// HTTP/2 connection per ClientConn.
		cc, err := grpc.NewClient(addr,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.WaitForReady(false)))
		if err != nil {
			_ = t.Close()
			return nil, wrapErr(CodeTarget, "dial", err)
		}
		t.conns = append(t.conns, cc)
		t.clients = append(t.clients, authv3.NewAuthorizationClient(cc))
	}
	return t, nil
}

func (t *GRPCTarget) Name() string    { return t.name }
func (t *GRPCTarget) Address() string { return t.addr }

// Prepare builds every CheckRequest up front.
func (t *GRPCTarget) Prepare(calls []Call) error {
	t.reqs = make([]*authv3.CheckRequest, len(calls))
	for i := range calls {
		t.reqs[i] = CheckRequestOf(&calls[i], time.Now())
	}
	for _, cc := range t.conns {
		cc.Connect()
	}
	return nil
}

// Send issues one Check.
func (t *GRPCTarget) Send(ctx context.Context, i int) Outcome {
	c := t.clients[t.next.Add(1)%uint64(len(t.clients))]
	resp, err := c.Check(ctx, t.reqs[i%len(t.reqs)])
	if err != nil {
		return Outcome{Err: status.Code(err).String()}
	}
	if code := codes.Code(resp.GetStatus().GetCode()); code == codes.OK {
		return Outcome{Decision: "ok"}
	}
	if d := resp.GetDeniedResponse(); d != nil && d.GetStatus() != nil {
		return Outcome{Decision: "denied_" + strconv.Itoa(int(d.GetStatus().GetCode()))}
	}
	// Envoy answers 403 to a denial without an HTTP status.
	return Outcome{Decision: "denied_403"}
}

// Close closes every connection.
func (t *GRPCTarget) Close() error {
	var errs []error
	for _, cc := range t.conns {
		errs = append(errs, cc.Close())
	}
	return errors.Join(errs...)
}

// CheckRequestOf builds the CheckRequest Envoy's ext_authz filter sends for c:
// pseudo-headers in the header map, path with query, host, scheme, the
// request id, the peer address, and the body when there is one.
func CheckRequestOf(c *Call, now time.Time) *authv3.CheckRequest {
	host := c.Headers["host"]
	if host == "" {
		host = "fhir.example.internal"
	}
	h := make(map[string]string, len(c.Headers)+5)
	for k, v := range c.Headers {
		h[k] = v
	}
	h[":authority"] = host
	h[":path"] = c.Path
	h[":method"] = c.Method
	h[":scheme"] = "https"
	h["x-request-id"] = c.ID
	h["x-forwarded-proto"] = "https"
	delete(h, "host")
	ip, port := splitHostPort(c.Source)
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: sockAddr(ip, port)},
		Destination: &authv3.AttributeContext_Peer{
			Address: sockAddr("10.0.0.1", 10000),
		},
		Request: &authv3.AttributeContext_Request{
			Time: timestamppb.New(now),
			Http: &authv3.AttributeContext_HttpRequest{
				Id: c.ID, Method: c.Method, Headers: h, Path: c.Path,
				Host: host, Scheme: "https", Protocol: "HTTP/1.1",
				Size: int64(len(c.Body)), Body: string(c.Body),
			},
		},
	}}
}

func sockAddr(ip string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

func splitHostPort(s string) (string, uint32) {
	h, p, err := net.SplitHostPort(s)
	if err != nil {
		return "10.1.0.1", 40000
	}
	n, _ := strconv.ParseUint(p, 10, 16)
	return h, uint32(n)
}

// HTTPTarget sends the calls as HTTP requests to a base URL, typically the
// Envoy listener in front of the service, over kept-alive connections.
type HTTPTarget struct {
	name, base string
	client     *http.Client
	calls      []Call
	urls       []string
}

// NewHTTPTarget bounds the pool to conns connections per host.
func NewHTTPTarget(name, baseURL string, conns int) *HTTPTarget {
	if conns < 1 {
		conns = 1
	}
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxConnsPerHost:     conns,
		MaxIdleConnsPerHost: conns,
		MaxIdleConns:        conns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	return &HTTPTarget{name: name, base: strings.TrimRight(baseURL, "/"), client: &http.Client{Transport: tr}}
}

func (t *HTTPTarget) Name() string    { return t.name }
func (t *HTTPTarget) Address() string { return t.base }

// Prepare keeps the calls and their absolute URLs.
func (t *HTTPTarget) Prepare(calls []Call) error {
	t.calls = calls
	t.urls = make([]string, len(calls))
	for i, c := range calls {
		t.urls[i] = t.base + c.Path
	}
	return nil
}

// Send issues one HTTP request and drains the body so the connection is reused.
func (t *HTTPTarget) Send(ctx context.Context, i int) Outcome {
	i %= len(t.calls)
	c := &t.calls[i]
	var body io.Reader
	if len(c.Body) > 0 {
		body = bytes.NewReader(c.Body)
	}
	req, err := http.NewRequestWithContext(ctx, c.Method, t.urls[i], body)
	if err != nil {
		return Outcome{Err: "request"}
	}
	for k, v := range c.Headers {
		if k == "host" {
			req.Host = v
			continue
		}
		req.Header[http.CanonicalHeaderKey(k)] = []string{v}
	}
	req.Header["X-Request-Id"] = []string{c.ID}
	resp, err := t.client.Do(req)
	if err != nil {
		if ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) {
			return Outcome{Err: "timeout"}
		}
		return Outcome{Err: "transport"}
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return Outcome{Decision: "ok"}
	case resp.StatusCode == 401 || resp.StatusCode == 403:
		return Outcome{Decision: "denied_" + strconv.Itoa(resp.StatusCode)}
	default:
		return Outcome{Decision: "http_" + strconv.Itoa(resp.StatusCode)}
	}
}

// Close drops idle connections.
func (t *HTTPTarget) Close() error {
	t.client.CloseIdleConnections()
	return nil
}
