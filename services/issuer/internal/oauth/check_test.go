package oauth_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/issuer/internal/credentials"
	"github.com/agentid/agentid/services/issuer/internal/oauth"
)

func TestCheckClient(t *testing.T) {
	const agent = "tenants/acme/agents/" + clientID
	tests := []struct {
		name       string
		tenant     string
		client     string
		agentState registryv1.AgentState
		disable    bool
		want       oauth.ClientCheck
	}{
		{name: "active client of an active agent gets a token", tenant: tenant, client: clientID,
			want: oauth.ClientCheck{TokenActive: true, Scopes: []string{"orders.read", "orders.write"}, Resources: []string{ordersAPI}}},
		{name: "retiring agent is refused", tenant: tenant, client: clientID, agentState: registryv1.AgentState_AGENT_STATE_RETIRING,
			want: oauth.ClientCheck{TokenRefused: true, TokenError: oauth.ErrInvalidClient, TokenReason: "agent_not_active", TokenActive: true}},
		{name: "disabled client is refused and its tokens are inactive", tenant: tenant, client: clientID, disable: true,
			want: oauth.ClientCheck{TokenRefused: true, TokenError: oauth.ErrInvalidClient, TokenReason: "client_disabled", TokenInactiveReason: "client_disabled"}},
		{name: "unknown client", tenant: tenant, client: "agt_nobody",
			want: oauth.ClientCheck{TokenRefused: true, TokenError: oauth.ErrInvalidClient, TokenReason: "unknown_client", TokenInactiveReason: "unknown_client"}},
		{name: "unknown tenant", tenant: "globex", client: clientID,
			want: oauth.ClientCheck{TokenRefused: true, TokenError: oauth.ErrInvalidClient, TokenReason: "unknown_tenant", TokenInactiveReason: "unknown_tenant"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newCore(t)
			if tt.agentState != 0 {
				f.agents.set(agent, tt.agentState, nil)
			}
			if tt.disable {
				if err := f.creds.Apply(context.Background(), event(t, credentials.EventClientDisabled, tenant, clientID,
					&issuerv1.ClientDisabled{Name: credentials.ClientName(tenant, clientID), RevokeTime: timestamppb.Now()})); err != nil {
					t.Fatal(err)
				}
			}
			got, err := f.srv.CheckClient(context.Background(), tt.tenant, tt.client, "jti-1", time.Time{})
			if err != nil {
				t.Fatal(err)
			}
			if got.TokenRefused != tt.want.TokenRefused || got.TokenError != tt.want.TokenError || got.TokenReason != tt.want.TokenReason ||
				got.TokenActive != tt.want.TokenActive || got.TokenInactiveReason != tt.want.TokenInactiveReason ||
				!slices.Equal(got.Scopes, tt.want.Scopes) || !slices.Equal(got.Resources, tt.want.Resources) || len(got.Roles) != 0 {
				t.Fatalf("CheckClient = %+v, want %+v", got, tt.want)
			}
		})
	}
}
