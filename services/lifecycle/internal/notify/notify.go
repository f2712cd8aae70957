// Package notify delivers the lifecycle's notifications (incident opened, escalated) to people and
// teams. Webhook POSTs each as JSON, signed like the monitor's SIEM webhook:
// `X-Agentid-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">`. Retries are the calling
// activity's (its retry policy); a refusal a retry cannot fix (4xx other than 408 and 429) is final.
package notify

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
	"time"

	"go.temporal.io/sdk/temporal"

	"github.com/agentid/agentid/workflows"
)

// Notifier delivers one notification (workflows.Activities.Notifier).
type Notifier interface {
	Notify(ctx context.Context, n workflows.Notification) error
}

// Headers of a webhook delivery.
const (
	// HeaderSignature carries t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">.
	HeaderSignature = "X-Agentid-Signature"
	// HeaderNotificationID carries the notification's id: a retried delivery repeats it.
	HeaderNotificationID = "X-Agentid-Notification-Id"
)

// DefaultTimeout bounds one delivery.
const DefaultTimeout = 10 * time.Second

// ErrRefused is the application error type of a delivery the receiver refused for good.
const ErrRefused = "NOTIFICATION_REFUSED"

// WebhookConfig configures a Webhook.
type WebhookConfig struct {
	// URL receives the POSTs (http or https). Required.
	URL string
	// Secret is the HMAC key. Required (at least 16 bytes).
	Secret []byte
	// Timeout bounds one delivery (default DefaultTimeout).
	Timeout time.Duration
	// Client sends the requests (default a client with Timeout).
	Client *http.Client
	// Now returns the signing time (default time.Now).
	Now func() time.Time
}

// Webhook POSTs notifications as signed JSON.
type Webhook struct {
	url     string
	secret  []byte
	timeout time.Duration
	client  *http.Client
	now     func() time.Time
}

var _ Notifier = (*Webhook)(nil)

// NewWebhook returns a Webhook.
func NewWebhook(cfg WebhookConfig) (*Webhook, error) {
	u, err := url.Parse(cfg.URL)
	switch {
	case cfg.URL == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		return nil, fmt.Errorf("notify: webhook URL %q is not an http(s) URL", cfg.URL)
	case len(cfg.Secret) < 16:
		return nil, errors.New("notify: webhook secret must be at least 16 bytes")
	case cfg.Timeout < 0:
		return nil, errors.New("notify: webhook timeout must not be negative")
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: cfg.Timeout}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Webhook{url: cfg.URL, secret: append([]byte(nil), cfg.Secret...), timeout: cfg.Timeout, client: cfg.Client, now: cfg.Now}, nil
}

// Sign returns the signature header value of body at t.
func Sign(secret, body []byte, t time.Time) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(ts + "."))
	mac.Write(body)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac.Sum(nil))
}

// Notify POSTs n. A 2xx answer is delivered; 408, 429, 5xx and transport errors are retryable
// errors; any other answer is a non-retryable application error of type ErrRefused.
func (w *Webhook) Notify(ctx context.Context, n workflows.Notification) error {
	body, err := json.Marshal(n)
	if err != nil {
		return temporal.NewNonRetryableApplicationError("notify: encode: "+err.Error(), ErrRefused, err)
	}
	ctx, cancel := context.WithTimeout(ctx, w.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url, bytes.NewReader(body))
	if err != nil {
		return temporal.NewNonRetryableApplicationError("notify: request: "+err.Error(), ErrRefused, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(HeaderSignature, Sign(w.secret, body, w.now()))
	req.Header.Set(HeaderNotificationID, n.ID)
	resp, err := w.client.Do(req)
	if err != nil {
		return fmt.Errorf("notify: POST %s: %w", w.redacted(), err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	switch c := resp.StatusCode; {
	case c >= 200 && c < 300:
		return nil
	case c == http.StatusRequestTimeout || c == http.StatusTooManyRequests || c >= 500:
		return fmt.Errorf("notify: POST %s: %s", w.redacted(), resp.Status)
	default:
		return temporal.NewNonRetryableApplicationError(fmt.Sprintf("notify: POST %s: refused: %s", w.redacted(), resp.Status), ErrRefused, nil)
	}
}

// redacted is the URL without query or credentials, for errors.
func (w *Webhook) redacted() string {
	u, err := url.Parse(w.url)
	if err != nil {
		return "webhook"
	}
	u.User, u.RawQuery, u.Fragment = nil, "", ""
	return u.String()
}
