package lifecycle

import (
	"context"

	"github.com/agentid/agentid/pkg/eventstore"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/workflows"
)

// Registry events of agents' keys.
const (
	// EventAgentKeyAdded starts an agent credential rotation.
	EventAgentKeyAdded = "agent.key_added"
	// EventAgentKeyRemoved starts the removal of the key from the agent's client.
	EventAgentKeyRemoved = "agent.key_removed"
)

// startRotation starts RotationWorkflow rotation/{tenant}/{agent}/{thumbprint} for agent.key_added.
// An event whose input is incomplete (no key, no thumbprint) starts nothing and goes to the
// failed-event log: redelivery cannot complete it.
func (s *Service) startRotation(ctx context.Context, ev eventstore.Event) error {
	msg, tenant, agentID, err := decodeAgentEvent[*registryv1.AgentKeyAdded](ev)
	if err != nil {
		return err
	}
	in := workflows.RotationInput{
		Tenant: tenant, Agent: workflows.AgentName(tenant, agentID), AgentID: agentID,
		NewKeyJWK: msg.GetPublicJwk(), NewKeyThumbprint: msg.GetThumbprint(), Overlap: s.overlap, EventID: ev.ID,
		AddedBy: ev.Metadata.Actor.ID, // may not approve the key of a high-tier agent
	}
	if err := in.Validate(); err != nil {
		return eventstore.Permanent(err)
	}
	spec := runSpec{
		id: workflows.RotationWorkflowID(tenant, agentID, msg.GetThumbprint()), name: workflows.RotationWorkflowName,
		tenant: tenant, agentID: agentID, stage: workflows.StageRotationAdd, eventID: ev.ID, in: in,
		event: ev.Type, md: ev.Metadata,
	}
	return s.startFromEvent(ctx, spec)
}

// startKeyRemoval starts KeyRemovalWorkflow key-removal/{tenant}/{agent}/{thumbprint} for
// agent.key_removed: the key leaves the agent's client and its tokens are revoked, whoever removed it
// (owner, admin, rotation). An event without the key's thumbprint starts nothing and goes to the
// failed-event log: redelivery cannot complete it.
func (s *Service) startKeyRemoval(ctx context.Context, ev eventstore.Event) error {
	msg, tenant, agentID, err := decodeAgentEvent[*registryv1.AgentKeyRemoved](ev)
	if err != nil {
		return err
	}
	in := workflows.KeyRemovalInput{
		Tenant: tenant, Agent: workflows.AgentName(tenant, agentID), AgentID: agentID,
		Thumbprint: msg.GetThumbprint(), Reason: msg.GetReason(), EventID: ev.ID,
	}
	if err := in.Validate(); err != nil {
		return eventstore.Permanent(err)
	}
	spec := runSpec{
		id: workflows.KeyRemovalWorkflowID(tenant, agentID, msg.GetThumbprint()), name: workflows.KeyRemovalWorkflowName,
		tenant: tenant, agentID: agentID, stage: workflows.StageKeyRemoval, eventID: ev.ID, in: in,
		event: ev.Type, md: ev.Metadata,
	}
	return s.startFromEvent(ctx, spec)
}
