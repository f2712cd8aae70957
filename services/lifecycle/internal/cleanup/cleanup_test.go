package cleanup_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"
	"time"

	"go.temporal.io/sdk/temporal"

	"github.com/agentid/agentid/pkg/assetgraph"
	"github.com/agentid/agentid/services/lifecycle/internal/cleanup"
	"github.com/agentid/agentid/workflows"
)

var secret = bytes.Repeat([]byte{7}, 32)

func TestWebhookClean(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	tests := []struct {
		name          string
		status        int
		wantErr       bool
		wantPermanent bool
	}{
		{"accepted", http.StatusNoContent, false, false},
		{"refused for good", http.StatusBadRequest, true, true},
		{"rate limited is retried", http.StatusTooManyRequests, true, false},
		{"server error is retried", http.StatusBadGateway, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got workflows.CleanupRequest
			var sig, key string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				body, _ := io.ReadAll(r.Body)
				sig, key = r.Header.Get(cleanup.SignatureHeader), r.Header.Get("Idempotency-Key")
				if sig != cleanup.Sign(secret, now, body) {
					http.Error(w, "bad signature", http.StatusUnauthorized)
					return
				}
				_ = json.Unmarshal(body, &got)
				w.WriteHeader(tt.status)
			}))
			defer srv.Close()
			w, err := cleanup.NewWebhook(cleanup.WebhookConfig{Name: "queues", URL: srv.URL, Secret: secret, Now: func() time.Time { return now }})
			if err != nil {
				t.Fatal(err)
			}
			req := workflows.CleanupRequest{Name: "queues", Tenant: "acme", Agent: "tenants/acme/agents/a1", AgentID: "a1", Trigger: "ttl", RequestID: "deprovision/acme/a1/cleanup:queues",
				Dependencies: []assetgraph.Dependency{{Kind: "queue", URI: "nats://mq.example/claims", Description: "intake"}, {Kind: "storage", URI: "s3://archive/a1/"}}}
			res, err := w.Clean(context.Background(), req)
			var app *temporal.ApplicationError
			switch {
			case tt.wantErr != (err != nil):
				t.Fatalf("Clean = %q, %v", res, err)
			case tt.wantPermanent != (errors.As(err, &app) && app.NonRetryable()):
				t.Fatalf("error %v: permanent = %v, want %v", err, !tt.wantPermanent, tt.wantPermanent)
			}
			if !reflect.DeepEqual(got, req) || key != req.RequestID {
				t.Errorf("received %+v with Idempotency-Key %q, want %+v", got, key, req)
			}
		})
	}
}

func TestNewWebhookRefusesBadConfig(t *testing.T) {
	for name, cfg := range map[string]cleanup.WebhookConfig{
		"no name":      {URL: "https://x.example/hook", Secret: secret},
		"plain http":   {Name: "q", URL: "http://x.example/hook", Secret: secret},
		"short secret": {Name: "q", URL: "https://x.example/hook", Secret: []byte("short")},
		"name with :":  {Name: "a:b", URL: "https://x.example/hook", Secret: secret},
		"not a url":    {Name: "q", URL: "::", Secret: secret},
	} {
		if _, err := cleanup.NewWebhook(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestWebhookPayloadListsTheDependencies: the receiver reads the agent's declared dependencies from
// the payload's "dependencies" array, present (empty) when the agent declared none.
func TestWebhookPayloadListsTheDependencies(t *testing.T) {
	tests := []struct {
		name string
		deps []assetgraph.Dependency
		want string
	}{
		{"none declared", []assetgraph.Dependency{}, `"dependencies":[]`},
		{"declared", []assetgraph.Dependency{{Kind: "webhook", URI: "https://hooks.example/x", Description: "notify"}},
			`"dependencies":[{"kind":"webhook","uri":"https://hooks.example/x","description":"notify"}]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var body []byte
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				body, _ = io.ReadAll(r.Body)
				w.WriteHeader(http.StatusOK)
			}))
			defer srv.Close()
			w, err := cleanup.NewWebhook(cleanup.WebhookConfig{Name: "deps", URL: srv.URL, Secret: secret})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.Clean(t.Context(), workflows.CleanupRequest{Name: "deps", Agent: "tenants/acme/agents/a1", RequestID: "r", Dependencies: tt.deps}); err != nil {
				t.Fatal(err)
			}
			if !bytes.Contains(body, []byte(tt.want)) {
				t.Fatalf("payload %s does not hold %s", body, tt.want)
			}
		})
	}
}
