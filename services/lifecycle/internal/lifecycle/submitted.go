package lifecycle

import (
	"context"
	"fmt"
	"time"

	"github.com/agentid/agentid/pkg/eventstore"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/workflows"
)

// EventAgentSubmitted is the registry's event of a PROPOSED agent submitted: it is PENDING and its
// provisioning starts, as for agent.registered of an agent registered PENDING.
const EventAgentSubmitted = "agent.submitted"

// submittedSubject matches agent.submitted events.
var submittedSubject = eventstore.SubjectRoot + ".*." + eventstore.AggregateAgent + ".*.submitted"

// submittedLookupTimeout bounds the registry read of a submitted agent's risk tier.
const submittedLookupTimeout = 10 * time.Second

// proposed reports whether agent.registered registered the agent PROPOSED: a draft, whose
// provisioning waits for agent.submitted.
func proposed(a *registryv1.Agent) bool {
	return a.GetState() == registryv1.AgentState_AGENT_STATE_PROPOSED
}

// startSubmittedProvisioning starts the provisioning of a submitted agent under the same
// deterministic id as a registration's. The agent's risk tier is read from the registry at least at
// the event's version (a failed read is retried: the run never starts with an unknown tier); the
// submitter is the run's registrant (who may not approve it).
func (s *Service) startSubmittedProvisioning(ctx context.Context, ev eventstore.Event) error {
	msg, tenant, agentID, err := decodeAgentEvent[*registryv1.AgentSubmitted](ev)
	if err != nil {
		return err
	}
	if s.registry == nil {
		return fmt.Errorf("agent.submitted %s: no registry client to read the agent's risk tier", ev.ID)
	}
	rctx, cancel := context.WithTimeout(ctx, submittedLookupTimeout)
	defer cancel()
	resp, err := s.registry.GetAgent(rctx, &registryv1.GetAgentRequest{Name: msg.GetName(), MinVersion: ev.Sequence})
	if err != nil {
		return fmt.Errorf("agent.submitted %s: reading %s: %w", ev.ID, msg.GetName(), err)
	}
	// A submission redelivered after the agent left provisioning (its retirement was requested, it
	// expired) starts nothing: the registry shows it at the event's version or later.
	if st := resp.GetAgent().GetState(); !inProvisioning(st) {
		s.log.InfoContext(ctx, "agent.submitted for an agent that left provisioning: no provisioning run",
			"event_id", ev.ID, "agent", msg.GetName(), "state", st.String())
		return nil
	}
	spec := provisionSpec(tenant, agentID, workflows.RiskTierName(resp.GetAgent().GetRiskTier()), ev.ID, ev.Metadata.Actor.ID)
	spec.event, spec.md = ev.Type, ev.Metadata
	return s.startFromEvent(ctx, spec)
}
