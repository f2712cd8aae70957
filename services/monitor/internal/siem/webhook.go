package siem

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Defaults of WebhookConfig.
const (
	DefaultTimeout        = 10 * time.Second
	DefaultMaxAttempts    = 8
	DefaultInitialBackoff = time.Second
	DefaultMaxBackoff     = time.Minute
	DefaultMaxRetryAfter  = 5 * time.Minute
	// DefaultAuthGrace is how long 401 and 403 answers are retried (a secret or credential being
	// rotated on one side first) before the event is dead-lettered.
	DefaultAuthGrace = 10 * time.Minute
	// MaxReceiverText bounds the receiver's response text kept in errors, logs and dead letters.
	MaxReceiverText = 256
)

// WebhookConfig configures the webhook sink.
type WebhookConfig struct {
	// URL receives POSTs of OCSF JSON; https, or http to a loopback address only; no user info.
	URL string
	// Secret signs every request (HMAC-SHA256); at least MinSecretLen bytes.
	Secret []byte
	// Timeout bounds one attempt (default DefaultTimeout).
	Timeout time.Duration
	// MaxAttempts is how many attempts an event gets before it is dead-lettered (default
	// DefaultMaxAttempts).
	MaxAttempts int
	// InitialBackoff is the delay after the first failed attempt; it doubles after each further
	// one up to MaxBackoff, and each delay is jittered down by up to half (defaults
	// DefaultInitialBackoff, DefaultMaxBackoff).
	InitialBackoff, MaxBackoff time.Duration
	// MaxRetryAfter caps a receiver's Retry-After (default DefaultMaxRetryAfter).
	MaxRetryAfter time.Duration
	// AuthGrace is how long after the first 401 or 403 answer to an event such answers are retried
	// (with backoff, whatever MaxAttempts) before the event is dead-lettered (default
	// DefaultAuthGrace).
	AuthGrace time.Duration
	// Now is the clock of AuthGrace (default time.Now).
	Now func() time.Time
	// Client sends the requests; default a client that follows no redirects.
	Client *http.Client
}

// Webhook posts OCSF events to a SIEM's HTTP endpoint.
type Webhook struct {
	cfg    WebhookConfig
	target string // URL for logs: no query
}

// CheckWebhookURL validates a webhook URL: absolute, https (or http to a loopback address), no user
// info (it would end up in logs).
func CheckWebhookURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("siem: webhook URL: %w", err)
	}
	switch {
	case u.Host == "" || (u.Scheme != "https" && u.Scheme != "http"):
		return nil, fmt.Errorf("siem: webhook URL %q: want an absolute https:// URL", u.Redacted())
	case u.User != nil:
		return nil, fmt.Errorf("siem: webhook URL %q: user info is not allowed (the request is signed with the secret)", u.Redacted())
	case u.Scheme == "http" && !isLoopback(u.Hostname()):
		return nil, fmt.Errorf("siem: webhook URL %q: http is allowed to loopback addresses only; use https", u.Redacted())
	}
	return u, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// NewWebhook validates cfg and returns the sink.
func NewWebhook(cfg WebhookConfig) (*Webhook, error) {
	u, err := CheckWebhookURL(cfg.URL)
	if err != nil {
		return nil, err
	}
	if len(cfg.Secret) < MinSecretLen {
		return nil, fmt.Errorf("siem: webhook secret has %d bytes, want at least %d", len(cfg.Secret), MinSecretLen)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.Timeout, DefaultTimeout)
	def(&cfg.InitialBackoff, DefaultInitialBackoff)
	def(&cfg.MaxBackoff, DefaultMaxBackoff)
	def(&cfg.MaxRetryAfter, DefaultMaxRetryAfter)
	def(&cfg.AuthGrace, DefaultAuthGrace)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = DefaultMaxAttempts
	}
	cfg.MaxBackoff = max(cfg.MaxBackoff, cfg.InitialBackoff)
	if cfg.Client == nil {
		cfg.Client = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	return &Webhook{cfg: cfg, target: u.Scheme + "://" + u.Host + u.Path}, nil
}

// Target is the webhook URL without its query, for logs.
func (w *Webhook) Target() string { return w.target }

// attempt is the result of one POST.
type attempt struct {
	status     int           // HTTP status, 0 for a network error
	err        error         // nil when delivered
	retry      bool          // whether another attempt may succeed
	retryAfter time.Duration // the receiver's Retry-After, 0 if none
	auth       bool          // a 401 or 403: retried during the auth grace only
}

// post sends body once.
func (w *Webhook) post(ctx context.Context, id string, body []byte) attempt {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return attempt{err: fmt.Errorf("build request: %w", err)}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "agentid-siem/1")
	req.Header.Set(HeaderEventID, id)
	req.Header.Set(HeaderSignature, Sign(w.cfg.Secret, body, time.Now()))
	resp, err := w.cfg.Client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) { // its message repeats the URL, whose query may hold a token
			err = ue.Err
		}
		return attempt{err: fmt.Errorf("post: %w", err), retry: true}
	}
	defer resp.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 4*MaxReceiverText))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	a := attempt{status: resp.StatusCode}
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return a
	case resp.StatusCode == http.StatusRequestTimeout, resp.StatusCode == http.StatusTooManyRequests, resp.StatusCode >= 500:
		a.retry = true
		a.retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	case resp.StatusCode == http.StatusUnauthorized, resp.StatusCode == http.StatusForbidden:
		a.auth = true
	}
	// The status line and body are the receiver's: only its code and our text for it are kept,
	// and the body as printable ASCII, bounded.
	msg := fmt.Sprintf("receiver answered %d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
	if s := Sanitize(string(snippet), MaxReceiverText); s != "" {
		msg += ": " + s
	}
	a.err = errors.New(msg)
	return a
}

// Sanitize returns s as printable ASCII for logs and headers: runs of whitespace and control
// characters become one space, other bytes '?', trimmed and cut to at most n bytes.
func Sanitize(s string, n int) string {
	b := make([]byte, 0, min(len(s), n))
	space := false
	for i := 0; i < len(s) && len(b) < n; i++ {
		c := s[i]
		switch {
		case c <= ' ' || c == 0x7f:
			space = len(b) > 0
			continue
		case c > 0x7f:
			c = '?'
		}
		if space {
			b = append(b, ' ')
			space = false
			if len(b) == n {
				break
			}
		}
		b = append(b, c)
	}
	return strings.TrimSpace(string(b))
}

// parseRetryAfter reads a Retry-After header: delay-seconds or an HTTP date; 0 when absent or
// unreadable.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseInt(v, 10, 64); err == nil {
		if s <= 0 {
			return 0
		}
		return time.Duration(min(s, int64(24*time.Hour/time.Second))) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// backoff is the delay before attempt n+1 after n failed ones: InitialBackoff doubled n-1 times,
// capped at MaxBackoff, jittered down by up to half; a Retry-After, capped at MaxRetryAfter, wins
// when longer.
func (w *Webhook) backoff(n int, retryAfter time.Duration) time.Duration {
	d := w.cfg.InitialBackoff
	for i := 1; i < n && d < w.cfg.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, w.cfg.MaxBackoff)
	d -= time.Duration(rand.Int64N(int64(d)/2 + 1))
	if ra := min(retryAfter, w.cfg.MaxRetryAfter); ra > d {
		d = ra
	}
	return d
}

// Outcome is how delivering one event to the webhook ended.
type Outcome struct {
	// Delivered is true when the receiver answered 2xx.
	Delivered bool
	// Attempts is the number of POSTs made.
	Attempts int
	// Status is the last HTTP status (0 for a network error).
	Status int
	// Refused is true when the receiver refused the event for good (no retry can help).
	Refused bool
	// Err is the last error when not delivered.
	Err error
}

// Deliver posts body until the receiver takes it, refuses it for good (a 4xx other than 408 and
// 429, or a redirect; a 401 or 403 once AuthGrace has passed since the first), or MaxAttempts
// attempts have failed (401 and 403 answers within the grace do not count towards it); retried
// calls wait with backoff and call onRetry first. It returns ctx's error, and no outcome, when ctx
// ends first.
func (w *Webhook) Deliver(ctx context.Context, id string, body []byte, onRetry func(n int, err error, wait time.Duration)) (Outcome, error) {
	var out Outcome
	var authSince time.Time // first 401/403 of this delivery
	others := 0             // failed attempts other than 401/403 within the grace
	for {
		a := w.post(ctx, id, body)
		out.Attempts++
		out.Status, out.Err = a.status, a.err
		if a.err == nil {
			out.Delivered = true
			return out, nil
		}
		if ctx.Err() != nil {
			return Outcome{}, ctx.Err()
		}
		if a.auth {
			now := w.cfg.Now()
			if authSince.IsZero() {
				authSince = now
			}
			a.retry = now.Sub(authSince) < w.cfg.AuthGrace
			if !a.retry {
				out.Err = fmt.Errorf("%w (refused for %s, longer than the %s grace for credential rotation)", a.err, now.Sub(authSince).Round(time.Second), w.cfg.AuthGrace)
			}
		} else {
			others++
		}
		if !a.retry || others >= w.cfg.MaxAttempts {
			out.Refused = !a.retry
			return out, nil
		}
		wait := w.backoff(out.Attempts, a.retryAfter)
		if onRetry != nil {
			onRetry(out.Attempts, a.err, wait)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return Outcome{}, ctx.Err()
		case <-t.C:
		}
	}
}
