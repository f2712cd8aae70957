package workflowstest

import (
	"context"
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/agentid/agentid/pkg/errs"
	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// RemoveAgentScopes removes the named scopes from an ACTIVE or SUSPENDED agent; scopes it does not
// hold are ignored.
func (r *Registry) RemoveAgentScopes(_ context.Context, req *registryv1.RemoveAgentScopesRequest) (*registryv1.RemoveAgentScopesResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	a, ok := r.agents[req.GetName()]
	if !ok {
		return nil, errs.NotFound("AGENT_NOT_FOUND", "agent not found")
	}
	if len(req.GetScopes()) == 0 || req.GetReason() == "" {
		return nil, errs.InvalidArgument("scopes", "scopes and reason are required")
	}
	held := slices.ContainsFunc(a.GetScopes(), func(s string) bool { return slices.Contains(req.GetScopes(), s) })
	if !held {
		return &registryv1.RemoveAgentScopesResponse{Agent: proto.Clone(a).(*registryv1.Agent)}, nil
	}
	switch a.GetState() {
	case registryv1.AgentState_AGENT_STATE_ACTIVE, registryv1.AgentState_AGENT_STATE_SUSPENDED:
	default:
		return nil, errs.FailedPrecondition(a.GetState().String(), "agent is "+a.GetState().String())
	}
	a.Scopes = slices.DeleteFunc(a.Scopes, func(s string) bool { return slices.Contains(req.GetScopes(), s) })
	return &registryv1.RemoveAgentScopesResponse{Agent: proto.Clone(a).(*registryv1.Agent)}, nil
}

// SetScopeUses sets how often the agent with resource name agent used each scope (GetAgentUsage
// answers them whatever the window).
func (m *Monitor) SetScopeUses(agent string, uses map[string]int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.scopes == nil {
		m.scopes = map[string][]*monitorv1.UsageCount{}
	}
	var out []*monitorv1.UsageCount
	for s, n := range uses {
		out = append(out, &monitorv1.UsageCount{Value: s, Count: n})
	}
	m.scopes[agent] = out
}
