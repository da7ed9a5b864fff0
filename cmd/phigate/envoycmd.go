package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/phigate/phigate/envoy"
)

func cmdEnvoyBootstrap(_ context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flags("envoy bootstrap", stderr)
	var c envoy.BootstrapConfig
	fs.StringVar(&c.Listen, "listen", "127.0.0.1:10000", "client-facing listener (host:port)")
	fs.StringVar(&c.Admin, "admin", "127.0.0.1:9901", "Envoy admin (loopback only)")
	fs.StringVar(&c.Upstream, "upstream", "127.0.0.1:8080", "the legacy service (host:port)")
	fs.StringVar(&c.Phigate, "phigate", "127.0.0.1:9191", "phigate gRPC: host:port or unix:///path")
	fs.BoolVar(&c.Compress, "gzip", true, "gzip responses for clients after redaction")
	fs.IntVar(&c.MaxResponseBody, "max-response-body", 8<<20, "largest response body phigate will read")
	var tls envoy.UpstreamTLS
	fs.StringVar(&tls.CA, "phigate-ca", "", "CA that verifies phigate's certificate (enables TLS to phigate)")
	fs.StringVar(&tls.Cert, "phigate-client-cert", "", "Envoy's client certificate for mTLS to phigate")
	fs.StringVar(&tls.Key, "phigate-client-key", "", "its private key")
	fs.StringVar(&tls.ServerName, "phigate-server-name", "", "DNS name in phigate's certificate (SNI)")
	var down envoy.DownstreamTLS
	fs.StringVar(&down.Cert, "listen-cert", "", "certificate chain of the client-facing listener (enables TLS there)")
	fs.StringVar(&down.Key, "listen-key", "", "its private key")
	fs.StringVar(&down.ClientCA, "listen-client-ca", "", "CA that issues client certificates (mTLS: a client without one is refused)")
	fs.StringVar(&c.SecretsDir, "secrets-dir", "", "where the SDS files naming the certificates are written (default: sds/ beside -o)")
	var wall envoy.LocalRateLimit
	fs.IntVar(&wall.MaxTokens, "rate-limit", 0, "Envoy's local rate limit in front of phigate: requests per -rate-limit-interval for this Envoy as a whole (0: none)")
	fs.DurationVar(&wall.FillInterval, "rate-limit-interval", time.Second, "the local rate limit's refill interval")
	out := fs.String("o", "-", "output file (- for stdout)")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if wall.MaxTokens != 0 {
		c.LocalRateLimit = &wall
	}
	if tls != (envoy.UpstreamTLS{}) {
		c.PhigateTLS = &tls
	}
	if down != (envoy.DownstreamTLS{}) {
		c.ListenTLS = &down
	}
	if c.SecretsDir == "" && *out != "-" && (c.ListenTLS != nil || c.PhigateTLS != nil) {
		// Absolute, since Envoy resolves a relative path from its own
		// working directory, not from where the bootstrap was written.
		dir, err := filepath.Abs(filepath.Join(filepath.Dir(*out), "sds"))
		if err != nil {
			fmt.Fprintln(stderr, "phigate:", err)
			return 1
		}
		c.SecretsDir = dir
	}
	y, err := envoy.Bootstrap(c)
	if err == nil {
		err = envoy.WriteSecretFiles(c)
	}
	if err != nil {
		fmt.Fprintln(stderr, "phigate:", err)
		return 1
	}
	if *out == "-" {
		_, _ = stdout.Write(y)
		return 0
	}
	if err := os.WriteFile(*out, y, 0o644); err != nil {
		fmt.Fprintln(stderr, "phigate:", err)
		return 1
	}
	return 0
}
