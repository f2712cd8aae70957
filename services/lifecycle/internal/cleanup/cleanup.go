// Package cleanup holds the deprovisioning cleanups (workflows.Cleanup): what removes an agent's
// dependent resources in other systems when it is deprovisioned. Webhook posts the request to an HTTP
// endpoint, signed with HMAC-SHA256.
package cleanup

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.temporal.io/sdk/temporal"

	"github.com/agentid/agentid/workflows"
)

// SignatureHeader carries the request's signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">.
const SignatureHeader = "X-Agentid-Signature"

// DefaultTimeout bounds one delivery.
const DefaultTimeout = 10 * time.Second

// WebhookConfig configures a webhook cleanup.
type WebhookConfig struct {
	// Name identifies the cleanup in the run's steps (cleanup:<name>). Required.
	Name string
	// URL receives the POST (https, or http to a loopback host). Required.
	URL string
	// Secret keys the HMAC-SHA256 signature (at least 32 bytes). Required.
	Secret []byte
	// Client sends the request (default: a client with DefaultTimeout).
	Client *http.Client
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Webhook is a cleanup that posts the agent's CleanupRequest as JSON to a URL, with the agent's
// declared dependencies (its queues, webhooks, storage, … from the registry record) in "dependencies".
// The receiver removes the agent's resources and answers 2xx; the request id in Idempotency-Key lets it do that once. A 4xx
// other than 408 and 429 is permanent (the activity does not retry it); anything else is retried.
type Webhook struct {
	cfg WebhookConfig
}

var _ workflows.Cleanup = (*Webhook)(nil)

// NewWebhook validates cfg and returns the cleanup.
func NewWebhook(cfg WebhookConfig) (*Webhook, error) {
	if strings.TrimSpace(cfg.Name) == "" || strings.ContainsAny(cfg.Name, " /:") {
		return nil, fmt.Errorf("cleanup webhook: name %q must be non-empty without spaces, slashes or colons", cfg.Name)
	}
	u, err := url.Parse(cfg.URL)
	if err != nil || u.Host == "" || (u.Scheme != "https" && !(u.Scheme == "http" && loopback(u.Hostname()))) {
		return nil, fmt.Errorf("cleanup webhook %s: url %q must be https (or http to a loopback host)", cfg.Name, cfg.URL)
	}
	if len(cfg.Secret) < 32 {
		return nil, fmt.Errorf("cleanup webhook %s: the secret must be at least 32 bytes", cfg.Name)
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: DefaultTimeout}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Webhook{cfg: cfg}, nil
}

func loopback(host string) bool {
	return host == "localhost" || host == "127.0.0.1" || host == "::1"
}

// Name implements workflows.Cleanup.
func (w *Webhook) Name() string { return w.cfg.Name }

// Sign returns the signature header value of body at t with secret.
func Sign(secret []byte, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts + "."))
	m.Write(body)
	return "t=" + ts + ",v1=" + hex.EncodeToString(m.Sum(nil))
}

// Clean implements workflows.Cleanup: it posts req and reports the receiver's answer.
func (w *Webhook) Clean(ctx context.Context, req workflows.CleanupRequest) (string, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return "", temporal.NewNonRetryableApplicationError("cleanup request as JSON: "+err.Error(), "INTERNAL", err)
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, w.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return "", temporal.NewNonRetryableApplicationError("cleanup request: "+err.Error(), "INVALID_ARGUMENT", err)
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("Idempotency-Key", req.RequestID)
	hreq.Header.Set(SignatureHeader, Sign(w.cfg.Secret, w.cfg.Now(), body))
	resp, err := w.cfg.Client.Do(hreq)
	if err != nil {
		return "", fmt.Errorf("cleanup webhook %s: %w", w.cfg.Name, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return fmt.Sprintf("webhook %s answered %d", w.cfg.Name, resp.StatusCode), nil
	case resp.StatusCode >= 400 && resp.StatusCode < 500 && resp.StatusCode != http.StatusRequestTimeout && resp.StatusCode != http.StatusTooManyRequests:
		return "", temporal.NewNonRetryableApplicationError(fmt.Sprintf("cleanup webhook %s refused the request: %s", w.cfg.Name, resp.Status), "CLEANUP_REFUSED", errors.New(resp.Status))
	default:
		return "", fmt.Errorf("cleanup webhook %s answered %s", w.cfg.Name, resp.Status)
	}
}
