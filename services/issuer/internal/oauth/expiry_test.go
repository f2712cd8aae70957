package oauth_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/eventstore"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"

	"github.com/agentid/agentid/services/issuer/internal/agents"
	"github.com/agentid/agentid/services/issuer/internal/oauth"
)

// expiringAgent returns the issuer's agent gate (the projection of AGENTS, nothing else) knowing
// the fixture's agent ACTIVE with expire time exp.
func expiringAgent(t *testing.T, exp time.Time) *agents.Gate {
	t.Helper()
	const name = "tenants/" + tenant + "/agents/" + clientID
	state := agents.NewState()
	for i, m := range []struct {
		typ string
		msg proto.Message
	}{
		{agents.EventAgentRegistered, &registryv1.AgentRegistered{Agent: &registryv1.Agent{Name: name, ExpireTime: timestamppb.New(exp)}}},
		{agents.EventAgentActivated, &registryv1.AgentActivated{Name: name}},
	} {
		data, err := proto.Marshal(m.msg)
		if err != nil {
			t.Fatal(err)
		}
		if err := state.Apply(context.Background(), eventstore.Event{
			ID: m.typ, Type: m.typ, Metadata: eventstore.Metadata{Tenant: tenant}, AggregateType: eventstore.AggregateAgent,
			AggregateID: clientID, Stream: eventstore.StreamAgents, Sequence: uint64(i + 1),
			DataSchema: string(m.msg.ProtoReflect().Descriptor().FullName()), Data: data,
		}); err != nil {
			t.Fatal(err)
		}
	}
	gate, err := agents.NewGate(agents.GateConfig{State: state,
		LastSequence: func(context.Context) (uint64, error) { return 2, nil },
		WaitFor:      func(context.Context, uint64) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	return gate
}

// TestExpiryIsEnforcedAtTheIssuer: an agent past its expire time gets invalid_client (reason
// agent_expired) from the issuer alone, whatever the lifecycle (whose TTL run retires it) does; a
// token of an agent that expires sooner than the token lifetime ends when the agent does.
func TestExpiryIsEnforcedAtTheIssuer(t *testing.T) {
	tests := []struct {
		name       string
		expiresIn  time.Duration
		wantReason string
		wantMaxTTL time.Duration // the token's lifetime at most (0: the client's TTL)
	}{
		{name: "expired a minute ago", expiresIn: -time.Minute, wantReason: "agent_expired"},
		{name: "expires before the token would", expiresIn: 90 * time.Second, wantMaxTTL: 91 * time.Second},
		{name: "expires long after", expiresIn: 24 * time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			exp := time.Now().Add(tt.expiresIn)
			f := newCoreWith(t, func(c *oauth.Config) { c.Agents = expiringAgent(t, exp) })
			resp, oerr := f.srv.Token(context.Background(), tenant, oauth.Request{
				ContentType: oauth.FormContentType, Body: strings.NewReader(form(f.assertion(t, issuer, time.Minute))),
			})
			if tt.wantReason != "" {
				if oerr == nil || oerr.Code != oauth.ErrInvalidClient || oerr.Status != http.StatusUnauthorized || oerr.Reason != tt.wantReason || resp != nil {
					t.Fatalf("Token = %v, %v; want invalid_client (%s)", resp, oerr, tt.wantReason)
				}
				return
			}
			if oerr != nil {
				t.Fatalf("Token: %v", oerr)
			}
			claims := claimsOf(t, f.srv, resp.AccessToken)
			if claims.Expiry.After(exp) && tt.wantMaxTTL != 0 {
				t.Fatalf("token exp %s is after the agent's expire time %s", claims.Expiry, exp)
			}
			if tt.wantMaxTTL != 0 && (time.Duration(resp.ExpiresIn)*time.Second > tt.wantMaxTTL || resp.ExpiresIn < 60) {
				t.Fatalf("expires_in %d, want about %s", resp.ExpiresIn, tt.expiresIn)
			}
			if tt.wantMaxTTL == 0 && claims.Expiry.Sub(claims.IssuedAt) < 5*time.Minute {
				t.Fatalf("token lifetime %s was cut although the agent expires in %s", claims.Expiry.Sub(claims.IssuedAt), tt.expiresIn)
			}
		})
	}
}
