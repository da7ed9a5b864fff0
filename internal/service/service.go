// Package service is the client side of the HTTP services phigate calls
// the way OPA calls its services: a bundle server, a decision log
// receiver. It holds what they share: the bearer token read from a file
// or the environment on every request (so a rotated token is used without
// a restart), the CA that verifies the server, and a client that follows
// no redirect (which would carry the token elsewhere) and uses no proxy
// from the environment.
package service

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
)

// Credentials hold the token sent as "Authorization: <scheme> <token>".
type Credentials struct {
	BearerTokenFile string `yaml:"bearer_token_file"`
	BearerTokenEnv  string `yaml:"bearer_token_env"`
	// Scheme is the Authorization scheme (default Bearer).
	Scheme string `yaml:"scheme"`
}

// TLS names the CA (a PEM file) that signs the server's certificate, when
// it is not in the system pool. TLS 1.2 at least.
type TLS struct {
	CACert string `yaml:"ca_cert"`
}

// CheckURL checks a service URL: http or https, a host, and no
// credentials, query or fragment. section names the field in errors.
func CheckURL(raw, field string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("%s: %q is not an http or https URL", field, raw)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("%s: must not carry credentials, a query or a fragment", field)
	}
	return u, nil
}

// Validate fills the default scheme and checks that a configured token
// can be read and is sent over https (or to loopback) only. section is
// the YAML path of the credentials, e.g. decision_logs.credentials.
func (c *Credentials) Validate(section string, u *url.URL) error {
	if c.BearerTokenFile != "" && c.BearerTokenEnv != "" {
		return fmt.Errorf("%s.bearer_token_file: set bearer_token_file or bearer_token_env, not both", section)
	}
	if c.Scheme == "" {
		c.Scheme = "Bearer"
	}
	if strings.ContainsAny(c.Scheme, " \t\r\n") {
		return fmt.Errorf("%s.scheme: %q is not one word", section, c.Scheme)
	}
	if _, err := c.Token(section); err != nil {
		return err
	}
	if (c.BearerTokenFile != "" || c.BearerTokenEnv != "") && u.Scheme != "https" && !Loopback(u.Hostname()) {
		return fmt.Errorf("%s: a token is sent over https only (or to a loopback address); the url is %s", section, u.Scheme)
	}
	return nil
}

// Token reads the token, "" when none is configured. Errors name the
// field, never the token.
func (c *Credentials) Token(section string) (string, error) {
	switch {
	case c.BearerTokenFile != "":
		b, err := os.ReadFile(c.BearerTokenFile)
		if err != nil {
			return "", fmt.Errorf("%s.bearer_token_file: %w", section, err)
		}
		t := strings.TrimSpace(string(b))
		if t == "" {
			return "", fmt.Errorf("%s.bearer_token_file: %s is empty", section, c.BearerTokenFile)
		}
		return t, nil
	case c.BearerTokenEnv != "":
		t := strings.TrimSpace(os.Getenv(c.BearerTokenEnv))
		if t == "" {
			return "", fmt.Errorf("%s.bearer_token_env: $%s is not set", section, c.BearerTokenEnv)
		}
		return t, nil
	}
	return "", nil
}

// Authorize sets the Authorization header when a token is configured.
func (c *Credentials) Authorize(req *http.Request, section string) error {
	tok, err := c.Token(section)
	if err != nil || tok == "" {
		return err
	}
	req.Header.Set("Authorization", c.Scheme+" "+tok)
	return nil
}

// Config reads the CA and returns the client TLS configuration.
func (t TLS) Config(section string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if t.CACert == "" {
		return cfg, nil
	}
	pemBytes, err := os.ReadFile(t.CACert)
	if err != nil {
		return nil, fmt.Errorf("%s.ca_cert: %w", section, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		return nil, fmt.Errorf("%s.ca_cert: %s holds no PEM certificate", section, t.CACert)
	}
	cfg.RootCAs = pool
	return cfg, nil
}

// NewClient returns an HTTP client with tc, no proxy and no redirects.
func NewClient(tc *tls.Config) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tc
	tr.Proxy = nil
	return &http.Client{Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// Loopback reports whether host (a name or an IP, without port) is this host.
func Loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// ScrubURL drops the URL from a transport error: the caller names the
// configured one, without credentials.
func ScrubURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
