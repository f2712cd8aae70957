package oauth

import (
	"context"
	"fmt"
	"time"

	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"

	"github.com/agentid/agentid/services/issuer/internal/credentials"
)

// AgentStates tells the token endpoint the lifecycle state of agents (the issuer's projection of the
// AGENTS stream, never a call to the registry).
type AgentStates interface {
	// Check returns the state of the agent named name (tenants/{tenant}/agents/{agent}). ACTIVE must
	// cost no I/O; any other state is answered only once confirmed against the stream as of the call,
	// and err says when that could not be done.
	Check(ctx context.Context, name string) (registryv1.AgentState, error)
}

// AgentExpiry is what AgentStates may also tell: an agent's expire time. The token endpoint refuses
// an expired agent's client (invalid_client, agent_expired) and caps a token's exp at the expire time.
type AgentExpiry interface {
	// ExpireTime returns the expire time of the agent named name; ok is false when it has none.
	ExpireTime(name string) (t time.Time, ok bool)
}

// agentExpiry returns the expire time of client's agent, when the projection knows one.
func (s *Server) agentExpiry(client *credentials.Client) (time.Time, bool) {
	e, ok := s.agents.(AgentExpiry)
	if !ok || client.Proto.GetAgent() == "" {
		return time.Time{}, false
	}
	return e.ExpireTime(client.Proto.GetAgent())
}

// noAgents knows no agent: every client of an agent is refused.
type noAgents struct{}

func (noAgents) Check(context.Context, string) (registryv1.AgentState, error) {
	return registryv1.AgentState_AGENT_STATE_UNSPECIFIED, nil
}

// checkAgent refuses a client whose agent is not ACTIVE, or past its expire time: invalid_client when
// the agent's state is confirmed (or it expired), temporarily_unavailable when it could not be (the projection could not catch up). A
// client without an agent (a platform or staff identity) passes.
func (s *Server) checkAgent(ctx context.Context, realm, scheme string, client *credentials.Client) *Error {
	agent := client.Proto.GetAgent()
	if agent == "" {
		return nil
	}
	state, err := s.agents.Check(ctx, agent)
	exp, expires := s.agentExpiry(client)
	switch {
	case state == registryv1.AgentState_AGENT_STATE_ACTIVE && expires && !s.now().Before(exp):
		return invalidClient(realm, scheme, "agent_expired", fmt.Errorf("agent %s expired at %s", agent, exp.Format(time.RFC3339)))
	case state == registryv1.AgentState_AGENT_STATE_ACTIVE:
		return nil
	case err != nil:
		return unavailable(fmt.Errorf("agent %s is %s in the issuer's projection, which could not catch up: %w", agent, state, err))
	}
	return invalidClient(realm, scheme, "agent_not_active", fmt.Errorf("agent %s is %s", agent, state))
}
