package oauth_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"

	"github.com/agentid/agentid/services/issuer/internal/oauth"
)

// agentStates is an oauth.AgentStates whose agents are ACTIVE unless set otherwise.
type agentStates struct {
	mu     sync.Mutex
	states map[string]registryv1.AgentState
	err    error // returned with a state that is set
	checks []string
}

func (a *agentStates) set(name string, st registryv1.AgentState, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.states == nil {
		a.states = map[string]registryv1.AgentState{}
	}
	a.states[name], a.err = st, err
}

func (a *agentStates) Check(_ context.Context, name string) (registryv1.AgentState, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.checks = append(a.checks, name)
	if st, ok := a.states[name]; ok {
		return st, a.err
	}
	return registryv1.AgentState_AGENT_STATE_ACTIVE, nil
}

func TestTokenOnlyForActiveAgents(t *testing.T) {
	const agent = "tenants/acme/agents/" + clientID
	tests := []struct {
		name       string
		state      registryv1.AgentState
		err        error
		wantCode   string
		wantStatus int
	}{
		{name: "active", state: registryv1.AgentState_AGENT_STATE_ACTIVE},
		{name: "pending", state: registryv1.AgentState_AGENT_STATE_PENDING, wantCode: oauth.ErrInvalidClient, wantStatus: http.StatusUnauthorized},
		{name: "rejected", state: registryv1.AgentState_AGENT_STATE_REJECTED, wantCode: oauth.ErrInvalidClient, wantStatus: http.StatusUnauthorized},
		{name: "retiring", state: registryv1.AgentState_AGENT_STATE_RETIRING, wantCode: oauth.ErrInvalidClient, wantStatus: http.StatusUnauthorized},
		{name: "retired", state: registryv1.AgentState_AGENT_STATE_RETIRED, wantCode: oauth.ErrInvalidClient, wantStatus: http.StatusUnauthorized},
		{name: "unknown to the projection", state: registryv1.AgentState_AGENT_STATE_UNSPECIFIED, wantCode: oauth.ErrInvalidClient, wantStatus: http.StatusUnauthorized},
		{name: "state not confirmed", state: registryv1.AgentState_AGENT_STATE_PENDING, err: errors.New("projection behind"),
			wantCode: oauth.ErrTemporarilyUnavailable, wantStatus: http.StatusServiceUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newCore(t)
			f.agents.set(agent, tt.state, tt.err)
			resp, oerr := f.srv.Token(context.Background(), tenant, oauth.Request{
				ContentType: oauth.FormContentType, Body: strings.NewReader(form(f.assertion(t, issuer, time.Minute))),
			})
			if tt.wantCode == "" {
				if oerr != nil || resp.AccessToken == "" {
					t.Fatalf("Token = %v, %v; want a token", resp, oerr)
				}
				return
			}
			if oerr == nil || oerr.Code != tt.wantCode || oerr.Status != tt.wantStatus || resp != nil {
				t.Fatalf("Token = %v, %v; want %s (%d)", resp, oerr, tt.wantCode, tt.wantStatus)
			}
			if tt.wantCode == oauth.ErrInvalidClient && (oerr.Description != oauth.ClientAuthFailedDescription || oerr.Reason != "agent_not_active" || oerr.Challenge == "") {
				t.Fatalf("refusal %q (reason %q, challenge %q): want the common description, reason agent_not_active and a WWW-Authenticate challenge", oerr.Description, oerr.Reason, oerr.Challenge)
			}
			if f.agents.checks[0] != agent {
				t.Fatalf("checked %v, want %s", f.agents.checks, agent)
			}
		})
	}
}

func TestWithoutAgentStatesAgentClientsAreRefused(t *testing.T) {
	f := newCore(t)
	srv, err := oauth.New(oauth.Config{PublicURL: publicURL, Credentials: f.creds, Replay: &memReplay{seen: map[string]bool{}}})
	if err != nil {
		t.Fatal(err)
	}
	resp, oerr := srv.Token(context.Background(), tenant, oauth.Request{
		ContentType: oauth.FormContentType, Body: strings.NewReader(form(f.assertion(t, issuer, time.Minute))),
	})
	if oerr == nil || oerr.Code != oauth.ErrInvalidClient || resp != nil {
		t.Fatalf("Token without agent states = %v, %v; want invalid_client", resp, oerr)
	}
}
