package lifecycle

import (
	"context"
	"errors"
	"fmt"

	enumspb "go.temporal.io/api/enums/v1"

	"github.com/agentid/agentid/pkg/eventstore"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/workflows"
)

// EventAgentActivated is the registry's event of an agent that became ACTIVE.
const EventAgentActivated = "agent.activated"

// startTTL starts the TTL run (workflows.TTLWorkflow, ttl/{tenant}/{agent}) of an agent that became
// ACTIVE with an expire time; an agent without one starts nothing. A run that exists already (a
// redelivered event) counts as started. The expire time is read from the registry: an error there is
// retried (the event is redelivered), so no ephemeral agent is left without its timer.
func (s *Service) startTTL(ctx context.Context, ev eventstore.Event) error {
	msg, tenant, agentID, err := decodeAgentEvent[*registryv1.AgentActivated](ev)
	if err != nil {
		return err
	}
	if s.registry == nil {
		return nil
	}
	rctx, cancel := context.WithTimeout(ctx, riskTierLookupTimeout)
	defer cancel()
	resp, err := s.registry.GetAgent(rctx, &registryv1.GetAgentRequest{Name: msg.GetName()})
	if err != nil {
		return fmt.Errorf("expire time of activated agent %s: %w", msg.GetName(), err)
	}
	agent := resp.GetAgent()
	if !agent.GetExpireTime().IsValid() || agent.GetExpireTime().AsTime().IsZero() {
		return nil
	}
	tier := workflows.RiskTierName(agent.GetRiskTier())
	spec := runSpec{
		id: workflows.TTLWorkflowID(tenant, agentID), name: workflows.TTLWorkflowName, tenant: tenant, agentID: agentID, tier: tier,
		stage: "ttl", eventID: ev.ID, event: ev.Type, md: ev.Metadata,
		in: workflows.TTLInput{Tenant: tenant, Agent: msg.GetName(), AgentID: agentID, ExpireTime: agent.GetExpireTime().AsTime().UTC()},
	}
	runID, err := s.startRun(ctx, spec, enumspb.WORKFLOW_ID_REUSE_POLICY_REJECT_DUPLICATE)
	switch {
	case errors.Is(err, errRunExists):
		return nil
	case err != nil:
		return err
	}
	s.log.InfoContext(ctx, "ttl run started", "workflow_id", spec.id, "run_id", runID, "expire_time", agent.GetExpireTime().AsTime())
	return nil
}
