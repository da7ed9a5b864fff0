package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/phigate/phigate/store"
)

// ApprovalClient calls the approval workflow on a phigate's admin
// listener, as `phigate approvals` and `phigate elevation` do. Token is
// the caller's bearer token: the approver's for list, approve and deny,
// the user's own for an elevation request.
type ApprovalClient struct {
	Admin string // http://host:port of listen.admin
	Token string
	HTTP  *http.Client
}

// WorkflowError is a refusal from the admin listener: its HTTP status and
// its fixed code (self_approval, not_an_approver, not_pending, ...).
type WorkflowError struct {
	Status int
	Code   string
}

func (e *WorkflowError) Error() string { return fmt.Sprintf("refused (%d): %s", e.Status, e.Code) }

func (c *ApprovalClient) do(ctx context.Context, method, path string, body any, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	base := strings.TrimSuffix(c.Admin, "/")
	if !strings.HasPrefix(base, "http://") && !strings.HasPrefix(base, "https://") {
		base = "http://" + base
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("authorization", "Bearer "+c.Token)
	if body != nil {
		req.Header.Set("content-type", "application/json")
	}
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 15 * time.Second}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		var e apiError
		_ = json.Unmarshal(raw, &e)
		if e.Error == "" {
			e.Error = http.StatusText(resp.StatusCode)
		}
		return &WorkflowError{Status: resp.StatusCode, Code: e.Error}
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return errors.New("the admin listener answered something other than JSON")
	}
	return nil
}

// List lists requests in state ("" for all).
func (c *ApprovalClient) List(ctx context.Context, state string) ([]store.Approval, error) {
	var out []store.Approval
	q := ""
	if state != "" {
		q = "?state=" + url.QueryEscape(state)
	}
	return out, c.do(ctx, "GET", "/approvals"+q, nil, &out)
}

// Decide approves or denies the request id.
func (c *ApprovalClient) Decide(ctx context.Context, id string, approve bool) (store.Approval, error) {
	verb := "deny"
	if approve {
		verb = "approve"
	}
	var out store.Approval
	return out, c.do(ctx, "POST", "/approvals/"+url.PathEscape(id)+"/"+verb, nil, &out)
}

// RequestElevation asks for role for d, with reason.
func (c *ApprovalClient) RequestElevation(ctx context.Context, role, reason string, d time.Duration) (store.Approval, error) {
	var out store.Approval
	return out, c.do(ctx, "POST", "/elevations", elevationRequest{Role: role, Reason: reason, Duration: d.String()}, &out)
}

// Reviews lists the break-glass reviews in the store.
func (c *ApprovalClient) Reviews(ctx context.Context) ([]store.Review, error) {
	var out []store.Review
	return out, c.do(ctx, "GET", "/reviews", nil, &out)
}

// MarkReviewed records that the caller reviewed the decision.
func (c *ApprovalClient) MarkReviewed(ctx context.Context, decisionID, note string) (store.Review, error) {
	var out store.Review
	return out, c.do(ctx, "POST", "/reviews", reviewRequest{DecisionID: decisionID, Note: note}, &out)
}
