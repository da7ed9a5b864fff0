package notify

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"time"
)

// webhook posts the payload as JSON. Redirects are not followed: the body
// goes to the configured URL or nowhere.
type webhook struct {
	cfg    WebhookConfig
	client *http.Client
}

func newWebhook(c WebhookConfig) (*webhook, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	if c.CAFile != "" {
		pool, err := loadPool(c.CAFile)
		if err != nil {
			return nil, err
		}
		tr.TLSClientConfig.RootCAs = pool
	}
	tr.MaxIdleConnsPerHost = 2
	tr.IdleConnTimeout = 90 * time.Second
	return &webhook{cfg: c, client: &http.Client{Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}, nil
}

func (w *webhook) encode(p *payload) ([]byte, error) { return p.json() }

func (w *webhook) send(ctx context.Context, msg []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.cfg.URL, bytes.NewReader(msg))
	if err != nil {
		return &failure{word: "request", permanent: true}
	}
	for k, v := range w.cfg.Headers {
		req.Header.Set(k, v)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "phigate-notify")
	if w.cfg.BearerTokenFile != "" {
		tok, err := readToken(w.cfg.BearerTokenFile)
		if err != nil {
			return &failure{word: "token_file"}
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := w.client.Do(req)
	if err != nil {
		return err
	}
	// Read a little so the connection can be reused; what the sink says is
	// never kept.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	resp.Body.Close()
	if resp.StatusCode/100 == 2 {
		return nil
	}
	return httpFailure(resp.StatusCode)
}

func (w *webhook) close() { w.client.CloseIdleConnections() }
