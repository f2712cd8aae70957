package agents

import (
	"slices"

	"github.com/agentid/agentid/pkg/eventstore"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// Event types of the registry's agent record: an update changes what the projection enriches
// telemetry with (owner, sponsor, environment, risk tier, scopes); a submission makes a PROPOSED
// agent PENDING; an expiry makes it EXPIRED.
const (
	EventAgentUpdated   = "agent.updated"
	EventAgentSubmitted = "agent.submitted"
	EventAgentExpired   = "agent.expired"
)

// applyUpdated folds agent.updated: the changed fields the projection keeps take the event's values
// and the risk tier follows a reclassification; the state is unchanged. An event at or below the last
// one applied to the agent changes nothing.
func (p *Projection) applyUpdated(e eventstore.Event) error {
	m, err := eventstore.DecodeAs[*registryv1.AgentUpdated](e)
	if err != nil {
		return eventstore.Permanent(err)
	}
	return p.fold(e, m.GetName(), func(cur *entry) {
		a := m.GetAgent()
		for _, f := range m.GetChangedFields() {
			switch f {
			case "owner":
				cur.info.Owner = a.GetOwner()
			case "sponsor":
				cur.info.Sponsor = a.GetSponsor()
			case "environment":
				cur.info.Environment = enumTag(a.GetEnvironment().String(), "ENVIRONMENT_")
			case "scopes":
				cur.info.Scopes = slices.Clone(a.GetScopes())
			}
		}
		if c := m.GetClassification(); c != nil {
			tier := c.GetOverrideRiskTier()
			if tier == registryv1.RiskTier_RISK_TIER_UNSPECIFIED {
				tier = c.GetDerivedRiskTier()
			}
			cur.info.RiskTier = enumTag(tier.String(), "RISK_TIER_")
		}
	})
}

// registeredState is the state agent.registered puts an agent in: PROPOSED when its payload says
// so, PENDING otherwise.
func registeredState(reg *registryv1.Agent) registryv1.AgentState {
	if reg.GetState() == registryv1.AgentState_AGENT_STATE_PROPOSED {
		return registryv1.AgentState_AGENT_STATE_PROPOSED
	}
	return registryv1.AgentState_AGENT_STATE_PENDING
}
