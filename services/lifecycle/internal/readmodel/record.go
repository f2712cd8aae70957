package readmodel

import (
	"github.com/agentid/agentid/pkg/eventstore"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/workflows"
)

// Event types of the registry's agent record the agents projection applies.
const (
	// EventAgentSubmitted makes a PROPOSED agent PENDING.
	EventAgentSubmitted = "agent.submitted"
	// EventAgentExpired makes an agent EXPIRED.
	EventAgentExpired = "agent.expired"
	// EventAgentUpdated changes an agent's declared fields; the projection keeps its risk tier.
	EventAgentUpdated = "agent.updated"
)

// recordChange decodes agent.submitted, agent.expired or agent.updated: the agent's name, the state
// the event puts it in (UNSPECIFIED: unchanged) and what it changes besides (nil: nothing).
func recordChange(e eventstore.Event) (string, registryv1.AgentState, func(*Agent), error) {
	switch e.Type {
	case EventAgentSubmitted:
		msg, err := eventstore.DecodeAs[*registryv1.AgentSubmitted](e)
		if err != nil {
			return "", 0, nil, err
		}
		return msg.GetName(), registryv1.AgentState_AGENT_STATE_PENDING, nil, nil
	case EventAgentExpired:
		msg, err := eventstore.DecodeAs[*registryv1.AgentExpired](e)
		if err != nil {
			return "", 0, nil, err
		}
		return msg.GetName(), registryv1.AgentState_AGENT_STATE_EXPIRED, nil, nil
	case EventAgentUpdated:
		msg, err := eventstore.DecodeAs[*registryv1.AgentUpdated](e)
		if err != nil {
			return "", 0, nil, err
		}
		c := msg.GetClassification()
		if c == nil {
			return msg.GetName(), registryv1.AgentState_AGENT_STATE_UNSPECIFIED, nil, nil
		}
		tier := c.GetOverrideRiskTier()
		if tier == registryv1.RiskTier_RISK_TIER_UNSPECIFIED {
			tier = c.GetDerivedRiskTier()
		}
		return msg.GetName(), registryv1.AgentState_AGENT_STATE_UNSPECIFIED, func(a *Agent) { a.RiskTier = workflows.RiskTierName(tier) }, nil
	}
	return "", 0, nil, nil
}
