package notify_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"go.temporal.io/sdk/temporal"

	"github.com/agentid/agentid/services/lifecycle/internal/notify"
	"github.com/agentid/agentid/workflows"
)

var secret = []byte("0123456789abcdef-secret")

func TestWebhookSignsAndPosts(t *testing.T) {
	now := time.Unix(1_790_000_000, 0)
	var mu sync.Mutex
	var gotSig, gotID string
	var got workflows.Notification
	var body []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		body, _ = io.ReadAll(r.Body)
		gotSig, gotID = r.Header.Get(notify.HeaderSignature), r.Header.Get(notify.HeaderNotificationID)
		_ = json.Unmarshal(body, &got)
		w.WriteHeader(http.StatusAccepted)
	}))
	defer srv.Close()
	w, err := notify.NewWebhook(notify.WebhookConfig{URL: srv.URL, Secret: secret, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	n := workflows.Notification{ID: "incident/acme/a1/notify/incident.opened/owner", Kind: "incident.opened", Tenant: "acme",
		Agent: "tenants/acme/agents/bot", AlertID: "a1", Severity: "critical", RecipientRole: "owner", Recipient: "alice"}
	if err := w.Notify(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if want := notify.Sign(secret, body, now); gotSig != want || gotSig[:13] != "t=1790000000," {
		t.Fatalf("signature %q, want %q", gotSig, want)
	}
	if gotID != n.ID || got.Agent != n.Agent || got.Recipient != "alice" {
		t.Fatalf("received id %q, body %+v", gotID, got)
	}
}

func TestWebhookErrors(t *testing.T) {
	tests := []struct {
		status    int
		wantFinal bool
	}{
		{http.StatusInternalServerError, false},
		{http.StatusTooManyRequests, false},
		{http.StatusRequestTimeout, false},
		{http.StatusBadRequest, true},
		{http.StatusUnauthorized, true},
	}
	for _, tt := range tests {
		t.Run(http.StatusText(tt.status), func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(tt.status) }))
			defer srv.Close()
			w, err := notify.NewWebhook(notify.WebhookConfig{URL: srv.URL, Secret: secret})
			if err != nil {
				t.Fatal(err)
			}
			err = w.Notify(context.Background(), workflows.Notification{ID: "n"})
			var app *temporal.ApplicationError
			final := errors.As(err, &app) && app.NonRetryable()
			if err == nil || final != tt.wantFinal {
				t.Fatalf("err = %v (final %v), want an error, final %v", err, final, tt.wantFinal)
			}
		})
	}
}

func TestNewWebhookRefusesBadConfig(t *testing.T) {
	for _, cfg := range []notify.WebhookConfig{
		{URL: "", Secret: secret},
		{URL: "ftp://x", Secret: secret},
		{URL: "http://x", Secret: []byte("short")},
		{URL: "http://x", Secret: secret, Timeout: -time.Second},
	} {
		if _, err := notify.NewWebhook(cfg); err == nil {
			t.Errorf("NewWebhook(%+v) = nil error", cfg)
		}
	}
}
