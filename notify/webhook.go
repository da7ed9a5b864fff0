package notify

import (
	"bytes"
	"context"
	"io"
	"net/http"

	"github.com/phigate/phigate/internal/service"
)

// webhook posts the payload as JSON, with the client phigate's other
// HTTP services use: no redirect is followed (the body goes to the
// configured URL or nowhere) and no proxy is taken from the environment.
type webhook struct {
	cfg    WebhookConfig
	client *http.Client
}

func newWebhook(c WebhookConfig) (*webhook, error) {
	tc, err := c.TLS.Config("notify.webhook.tls")
	if err != nil {
		return nil, err
	}
	return &webhook{cfg: c, client: service.NewClient(tc)}, nil
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
	if err := w.cfg.Credentials.Authorize(req, "credentials"); err != nil {
		return &failure{word: "token"}
	}
	resp, err := w.client.Do(req)
	if err != nil {
		return service.ScrubURL(err)
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
