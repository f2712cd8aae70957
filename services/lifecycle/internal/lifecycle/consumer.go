package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/agentid/agentid/pkg/eventstore"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/workflows"
)

// Agent event types the service reacts to (written by the registry).
const (
	EventAgentRegistered          = "agent.registered"
	EventAgentRetirementRequested = "agent.retirement_requested"
)

// AgentEventsConsumer is the durable consumer on stream AGENTS shared by every replica.
const AgentEventsConsumer = "lifecycle-agent-events"

// AgentEventSubjects are the subjects of the events HandleAgentEvent handles.
var AgentEventSubjects = []string{
	eventstore.SubjectRoot + ".*." + eventstore.AggregateAgent + ".*.registered",
	eventstore.SubjectRoot + ".*." + eventstore.AggregateAgent + ".*.retirement_requested",
}

// riskTierLookupTimeout bounds the registry call for a retiring agent's risk tier.
const riskTierLookupTimeout = 5 * time.Second

// HandleAgentEvent starts the workflow an agent event calls for: ProvisionWorkflow for
// agent.registered and DeprovisionWorkflow for agent.retirement_requested, under their deterministic
// ids. A run that already exists (a redelivered or repeated event) counts as started. Other event types
// are ignored. It is idempotent, as work consumers must be.
func (s *Service) HandleAgentEvent(ctx context.Context, ev eventstore.Event) error {
	switch ev.Type {
	case EventAgentRegistered:
		return s.startProvisioning(ctx, ev)
	case EventAgentRetirementRequested:
		return s.startDeprovisioning(ctx, ev)
	default:
		return nil
	}
}

func (s *Service) startProvisioning(ctx context.Context, ev eventstore.Event) error {
	msg, err := eventstore.DecodeAs[*registryv1.AgentRegistered](ev)
	if err != nil {
		return err
	}
	agent := msg.GetAgent()
	tenant, agentID, err := agentOf(ev, agent.GetName())
	if err != nil {
		return err
	}
	tier := workflows.RiskTierName(agent.GetRiskTier())
	in := workflows.ProvisionInput{Tenant: tenant, Agent: agent.GetName(), AgentID: agentID, RiskTier: tier, EventID: ev.ID}
	return s.start(ctx, ev, workflows.ProvisionWorkflowID(tenant, agentID), workflows.ProvisionWorkflowName,
		tenant, agentID, tier, workflows.StagePolicy, in)
}

func (s *Service) startDeprovisioning(ctx context.Context, ev eventstore.Event) error {
	msg, err := eventstore.DecodeAs[*registryv1.AgentRetirementRequested](ev)
	if err != nil {
		return err
	}
	tenant, agentID, err := agentOf(ev, msg.GetName())
	if err != nil {
		return err
	}
	reason := msg.GetReason()
	if t := msg.GetTicket(); t != "" {
		reason = strings.TrimSpace(reason + " (ticket " + t + ")")
	}
	tier := s.riskTier(ctx, msg.GetName())
	in := workflows.DeprovisionInput{Tenant: tenant, Agent: msg.GetName(), AgentID: agentID, RiskTier: tier, Reason: reason, EventID: ev.ID}
	return s.start(ctx, ev, workflows.DeprovisionWorkflowID(tenant, agentID), workflows.DeprovisionWorkflowName,
		tenant, agentID, tier, workflows.StageRevoke, in)
}

// start starts one run; an existing run with the id is success.
func (s *Service) start(ctx context.Context, ev eventstore.Event, id, name, tenant, agentID, tier, stage string, in any) error {
	attrs := []temporal.SearchAttributeUpdate{
		workflows.AgentIDKey.ValueSet(agentID), workflows.TenantKey.ValueSet(tenant), workflows.StageKey.ValueSet(stage),
	}
	if tier != "" {
		attrs = append(attrs, workflows.RiskTierKey.ValueSet(tier))
	}
	memo := map[string]any{"event_id": ev.ID, "event_type": ev.Type}
	for k, v := range map[string]string{
		"correlation_id": ev.Metadata.CorrelationID, "traceparent": ev.Metadata.Traceparent, "actor": ev.Metadata.Actor.ID,
	} {
		if v != "" {
			memo[k] = v
		}
	}
	run, err := s.temporal.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID:                                       id,
		TaskQueue:                                s.taskQueue,
		WorkflowIDReusePolicy:                    enumspb.WORKFLOW_ID_REUSE_POLICY_REJECT_DUPLICATE,
		WorkflowExecutionErrorWhenAlreadyStarted: true,
		TypedSearchAttributes:                    temporal.NewSearchAttributes(attrs...),
		Memo:                                     memo,
	}, name, in)
	var started *serviceerror.WorkflowExecutionAlreadyStarted
	switch {
	case errors.As(err, &started):
		s.log.DebugContext(ctx, "workflow already started", "workflow_id", id, "event_id", ev.ID)
		return nil
	case err != nil:
		return fmt.Errorf("start %s %s: %w", name, id, err)
	}
	s.log.InfoContext(ctx, "workflow started", "workflow_id", id, "run_id", run.GetRunID(), "event_id", ev.ID, "event_type", ev.Type)
	return nil
}

// agentOf checks an agent event's resource name against its envelope and splits it.
func agentOf(ev eventstore.Event, name string) (tenant, agentID string, err error) {
	tenant, agentID, ok := workflows.ParseAgentName(name)
	switch {
	case !ok:
		return "", "", fmt.Errorf("event %s (%s): agent %q is not tenants/{tenant}/agents/{agent}", ev.ID, ev.Type, name)
	case ev.Metadata.Tenant != "" && ev.Metadata.Tenant != tenant:
		return "", "", fmt.Errorf("event %s (%s): agent %s is not in the event's tenant %s", ev.ID, ev.Type, name, ev.Metadata.Tenant)
	case ev.AggregateID != "" && ev.AggregateID != agentID:
		return "", "", fmt.Errorf("event %s (%s): agent %s is not the event's aggregate %s", ev.ID, ev.Type, name, ev.AggregateID)
	}
	return tenant, agentID, nil
}

// riskTier asks the registry for the agent's risk tier; "" when it cannot tell.
func (s *Service) riskTier(ctx context.Context, name string) string {
	if s.registry == nil {
		return ""
	}
	ctx, cancel := context.WithTimeout(ctx, riskTierLookupTimeout)
	defer cancel()
	resp, err := s.registry.GetAgent(ctx, &registryv1.GetAgentRequest{Name: name})
	if err != nil {
		s.log.WarnContext(ctx, "risk tier of retiring agent unknown", "agent", name, "error", err)
		return ""
	}
	return workflows.RiskTierName(resp.GetAgent().GetRiskTier())
}
