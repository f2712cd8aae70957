package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/eventstore"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"

	"github.com/agentid/agentid/services/issuer/internal/credentials"
	"github.com/agentid/agentid/services/issuer/internal/keys"
	"github.com/agentid/agentid/services/issuer/internal/oauth"
	"github.com/agentid/agentid/services/issuer/internal/server"
)

type noReplay struct{}

func (noReplay) Use(context.Context, string, string, string) error { return nil }

// activeAgents answers every agent ACTIVE.
type activeAgents struct{}

func (activeAgents) Check(context.Context, string) (registryv1.AgentState, error) {
	return registryv1.AgentState_AGENT_STATE_ACTIVE, nil
}

func handler(t *testing.T, ready *atomic.Bool) http.Handler {
	t.Helper()
	sealer, err := keys.NewSealer("k", bytes.Repeat([]byte{1}, keys.KEKSize))
	if err != nil {
		t.Fatal(err)
	}
	state := credentials.NewState(nil, sealer)
	k, priv, err := keys.Generate(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := sealer.Seal(priv, keys.SealAAD("acme", k.KeyID))
	if err != nil {
		t.Fatal(err)
	}
	msg := &issuerv1.SigningKeyCreated{Key: &issuerv1.SigningKey{KeyId: k.KeyID, CreateTime: timestamppb.Now()}, SealedPrivateJwk: sealed, KekId: "k"}
	data, _ := proto.Marshal(msg)
	if err := state.Apply(context.Background(), eventstore.Event{
		ID: "e1", Type: credentials.EventSigningKeyCreated, Time: time.Now(), Metadata: eventstore.Metadata{Tenant: "acme"},
		AggregateType: "signingkey", AggregateID: "acme", DataSchema: string(msg.ProtoReflect().Descriptor().FullName()), Data: data,
	}); err != nil {
		t.Fatal(err)
	}
	srv, err := oauth.New(oauth.Config{PublicURL: "https://issuer.example", Credentials: state, Replay: noReplay{}, Agents: activeAgents{}})
	if err != nil {
		t.Fatal(err)
	}
	return server.NewHTTPHandler(server.HTTPConfig{OAuth: srv, Ready: ready.Load})
}

func TestHTTPAnswers503UntilReady(t *testing.T) {
	var ready atomic.Bool
	h := handler(t, &ready)
	tests := []struct {
		method, path string
	}{
		{http.MethodGet, "/t/acme/jwks.json"},
		{http.MethodGet, "/t/acme/.well-known/openid-configuration"},
		{http.MethodPost, "/t/acme/oauth2/token"},
		{http.MethodPost, "/t/acme/oauth2/introspect"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(tt.method, tt.path, strings.NewReader("")))
			var body map[string]string
			_ = json.Unmarshal(rec.Body.Bytes(), &body)
			if rec.Code != http.StatusServiceUnavailable || body["error"] != "temporarily_unavailable" || rec.Header().Get("Retry-After") == "" {
				t.Fatalf("%d %v %v", rec.Code, body, rec.Header())
			}
		})
	}
	ready.Store(true)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/t/acme/jwks.json", nil))
	if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != "application/jwk-set+json" {
		t.Fatalf("when ready: %d %v", rec.Code, rec.Header())
	}
}

func TestHTTPRequestID(t *testing.T) {
	var ready atomic.Bool
	ready.Store(true)
	h := handler(t, &ready)
	tests := []struct {
		name, sent string
		echoed     bool
	}{
		{"well-formed id is echoed", "req-123", true},
		{"id with spaces is replaced", "a b", false},
		{"overlong id is replaced", strings.Repeat("x", 129), false},
		{"missing id is generated", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, "/t/acme/jwks.json", nil)
			if tt.sent != "" {
				req.Header.Set(server.RequestIDHeader, tt.sent)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			got := rec.Header().Get(server.RequestIDHeader)
			if got == "" || (got == tt.sent) != tt.echoed {
				t.Fatalf("X-Request-Id = %q (sent %q)", got, tt.sent)
			}
		})
	}
}
