package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"google.golang.org/protobuf/proto"

	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/failpoint"
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
	eventstore.SubjectRoot + ".*." + eventstore.AggregateAgent + ".*.activated",
	eventstore.SubjectRoot + ".*." + eventstore.AggregateAgent + ".*.key_added",
	eventstore.SubjectRoot + ".*." + eventstore.AggregateAgent + ".*.key_removed",
	orphanedSubject,
	submittedSubject,
}

// AgentEventConcurrency bounds how many agent events one replica handles at once (each is a registry
// read and one workflow start; a burst of registrations or retirements starts its runs side by side
// instead of one after another). The events of one agent still start their runs one after another,
// in stream order (AgentEventConsumeOptions).
const AgentEventConcurrency = 16

// AgentEventConsumeOptions are the options of the agent events consumer: AgentEventConcurrency events
// at once, those of one agent in stream order (eventstore.WithOrderKey by aggregate), each
// acknowledged only once its run's start is durable in Temporal.
func AgentEventConsumeOptions() []eventstore.ConsumeOption {
	return []eventstore.ConsumeOption{
		eventstore.WithConcurrency(AgentEventConcurrency), eventstore.WithOrderKey(eventstore.SubjectAggregateKey),
	}
}

// riskTierLookupTimeout bounds the registry call for a retiring agent's risk tier.
const riskTierLookupTimeout = 5 * time.Second

// HandleAgentEvent starts the workflow an agent event calls for: ProvisionWorkflow for
// agent.registered and DeprovisionWorkflow for agent.retirement_requested, under their deterministic
// ids. A run that already exists (a redelivered or repeated event) counts as started. Other event types
// are ignored. It is idempotent, as work consumers must be. An event that cannot be decoded or names
// an agent other than its envelope's is eventstore.Permanent: redelivery cannot fix it, so it goes to
// the failed-event log at once; every other error (Temporal unreachable, a payload schema this binary
// does not know yet) is retried.
func (s *Service) HandleAgentEvent(ctx context.Context, ev eventstore.Event) error {
	switch ev.Type {
	case EventAgentRegistered:
		return s.startProvisioning(ctx, ev)
	case EventAgentSubmitted:
		return s.startSubmittedProvisioning(ctx, ev)
	case EventAgentRetirementRequested:
		return s.startDeprovisioning(ctx, ev)
	case EventAgentActivated:
		return s.startTTL(ctx, ev)
	case EventAgentKeyAdded:
		return s.startRotation(ctx, ev)
	case EventAgentKeyRemoved:
		return s.startKeyRemoval(ctx, ev)
	case EventAgentOrphaned:
		return s.actOnOrphaned(ctx, ev)
	default:
		return nil
	}
}

func (s *Service) startProvisioning(ctx context.Context, ev eventstore.Event) error {
	msg, err := decode[*registryv1.AgentRegistered](ev)
	if err != nil {
		return err
	}
	agent := msg.GetAgent()
	tenant, agentID, err := agentOf(ev, agent.GetName())
	if err != nil {
		return eventstore.Permanent(err)
	}
	if proposed(agent) {
		return nil // a draft: agent.submitted starts its provisioning
	}
	if left, err := s.leftProvisioning(ctx, ev, agent.GetName()); err != nil || left {
		return err
	}
	spec := provisionSpec(tenant, agentID, workflows.RiskTierName(agent.GetRiskTier()), ev.ID, ev.Metadata.Actor.ID)
	spec.event, spec.md = ev.Type, ev.Metadata
	return s.startFromEvent(ctx, spec)
}

// provisioningLookupTimeout bounds the registry read of a registered agent's current state.
const provisioningLookupTimeout = 5 * time.Second

// leftProvisioning reports whether the agent of agent.registered ev has left provisioning: the
// registry holds it, at the event's version or later, in a state other than PENDING or PROPOSED
// (retirement requested, rejected, ...). Events of one agent may be handled out of order (a
// redelivered registration after the retirement request, on another replica), and no provisioning
// run is started for such an agent. An agent the registry does not show yet, or only at an older
// version, has not left; a registry that cannot be asked is an error (the event is retried).
func (s *Service) leftProvisioning(ctx context.Context, ev eventstore.Event, name string) (bool, error) {
	if s.registry == nil {
		return false, nil
	}
	rctx, cancel := context.WithTimeout(ctx, provisioningLookupTimeout)
	defer cancel()
	resp, err := s.registry.GetAgent(rctx, &registryv1.GetAgentRequest{Name: name})
	switch {
	case errs.Is(err, errs.KindNotFound):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("agent.registered %s: reading %s: %w", ev.ID, name, err)
	}
	a := resp.GetAgent()
	version, verr := strconv.ParseUint(a.GetEtag(), 10, 64)
	switch st := a.GetState(); {
	case verr != nil, version < ev.Sequence:
		return false, nil
	case inProvisioning(st):
		return false, nil
	default:
		s.log.InfoContext(ctx, "provisioning not started: the agent has left provisioning", "agent", name, "state", st.String(),
			"version", version, "event_id", ev.ID, "event_seq", ev.Sequence)
		return true, nil
	}
}

// inProvisioning reports whether an agent in state st has not left provisioning (PENDING, or a
// PROPOSED draft): the only states a provisioning run may start for.
func inProvisioning(st registryv1.AgentState) bool {
	return st == registryv1.AgentState_AGENT_STATE_PENDING || st == registryv1.AgentState_AGENT_STATE_PROPOSED
}

func (s *Service) startDeprovisioning(ctx context.Context, ev eventstore.Event) error {
	msg, tenant, agentID, err := decodeAgentEvent[*registryv1.AgentRetirementRequested](ev)
	if err != nil {
		return err
	}
	reason := msg.GetReason()
	if t := msg.GetTicket(); t != "" {
		reason = strings.TrimSpace(reason + " (ticket " + t + ")")
	}
	spec := deprovisionSpec(tenant, agentID, s.riskTier(ctx, msg.GetName()), reason, ev.ID)
	spec.event, spec.md = ev.Type, ev.Metadata
	if in, ok := spec.in.(workflows.DeprovisionInput); ok {
		in.Trigger, in.TriggerTime, in.ChangeRef = msg.GetTrigger(), ev.Time.UTC(), msg.GetTicket()
		spec.in = in
	}
	return s.startFromEvent(ctx, spec)
}

// decode reads an agent event's payload as T. A payload whose schema this binary does not know
// (ev.Decode fails with eventstore.ErrUnknownSchema: a newer registry wrote it, e.g. during a rolling
// upgrade) is a retryable error, so the event is redelivered until a replica that knows the schema
// handles it. A payload of another known type, or one that does not unmarshal, is
// eventstore.Permanent: redelivery cannot fix it.
func decode[T proto.Message](ev eventstore.Event) (T, error) {
	msg, err := eventstore.DecodeAs[T](ev)
	if err == nil {
		return msg, nil
	}
	if errors.Is(err, eventstore.ErrSchemaMismatch) {
		if _, derr := ev.Decode(); errors.Is(derr, eventstore.ErrUnknownSchema) {
			return msg, fmt.Errorf("event %s (%s): %w; retried until a replica that knows it handles it", ev.ID, ev.Type, derr)
		}
	}
	return msg, eventstore.Permanent(err)
}

// runSpec is one lifecycle run to start.
type runSpec struct {
	id, name, tenant, agentID, tier, stage string
	in                                     any
	eventID, event                         string // the causing event, recorded in the memo
	md                                     eventstore.Metadata
	memo                                   map[string]string // further memo fields
	eager                                  bool              // ask for the first workflow task in the start's answer (a worker of this client takes it)
}

func provisionSpec(tenant, agentID, tier, eventID, registrant string) runSpec {
	return runSpec{
		id: workflows.ProvisionWorkflowID(tenant, agentID), name: workflows.ProvisionWorkflowName,
		tenant: tenant, agentID: agentID, tier: tier, stage: workflows.StagePolicy, eventID: eventID,
		// An auto-approved run is one workflow task (local activities): taken by this process's worker
		// from the start's answer, it needs no round trip through the task queue.
		eager: true,
		in: workflows.ProvisionInput{Tenant: tenant, Agent: workflows.AgentName(tenant, agentID), AgentID: agentID, RiskTier: tier, EventID: eventID,
			Registrant: registrant},
	}
}

func deprovisionSpec(tenant, agentID, tier, reason, eventID string) runSpec {
	return runSpec{
		id: workflows.DeprovisionWorkflowID(tenant, agentID), name: workflows.DeprovisionWorkflowName,
		tenant: tenant, agentID: agentID, tier: tier, stage: workflows.StageRevoke, eventID: eventID,
		// The steps up to lifecycle.deprovisioning_verified are one workflow task (local activities):
		// taken by this process's worker from the start's answer, it needs no round trip through the
		// task queue.
		eager: true,
		in: workflows.DeprovisionInput{Tenant: tenant, Agent: workflows.AgentName(tenant, agentID), AgentID: agentID, RiskTier: tier, Reason: reason, EventID: eventID,
			StartedWithIdentity: true}, // startRun sets the identity search attributes and this stage
	}
}

// startFromEvent starts one run for an event; an existing run with the id (running or closed) is
// success, so a redelivered event starts nothing new.
func (s *Service) startFromEvent(ctx context.Context, spec runSpec) error {
	runID, err := s.startRun(ctx, spec, enumspb.WORKFLOW_ID_REUSE_POLICY_REJECT_DUPLICATE)
	switch {
	case errors.Is(err, errRunExists):
		s.log.DebugContext(ctx, "workflow already started", "workflow_id", spec.id, "event_id", spec.eventID)
		return nil
	case err != nil:
		return err
	}
	s.log.InfoContext(ctx, "workflow started", "workflow_id", spec.id, "run_id", runID, "event_id", spec.eventID, "event_type", spec.event)
	return nil
}

// errRunExists: a run with the workflow id exists that the reuse policy does not replace.
var errRunExists = errors.New("a run with this workflow id exists")

// startRun starts one run under its deterministic id with the reuse policy; errRunExists when a run
// with the id is running, or closed and not replaceable under policy.
func (s *Service) startRun(ctx context.Context, spec runSpec, policy enumspb.WorkflowIdReusePolicy) (string, error) {
	attrs := []temporal.SearchAttributeUpdate{
		workflows.AgentIDKey.ValueSet(spec.agentID), workflows.TenantKey.ValueSet(spec.tenant), workflows.StageKey.ValueSet(spec.stage),
	}
	if spec.tier != "" {
		attrs = append(attrs, workflows.RiskTierKey.ValueSet(spec.tier))
	}
	memo := map[string]any{}
	for k, v := range map[string]string{
		"event_id": spec.eventID, "event_type": spec.event, "correlation_id": spec.md.CorrelationID,
		"traceparent": spec.md.Traceparent, "actor": spec.md.Actor.ID,
	} {
		if v != "" {
			memo[k] = v
		}
	}
	for k, v := range spec.memo {
		if v != "" {
			memo[k] = v
		}
	}
	if in, ok := spec.in.(workflows.DeprovisionInput); ok {
		spec.in = s.deprov.apply(in)
	}
	if in, ok := spec.in.(workflows.ProvisionInput); ok {
		spec.in = s.approvals.apply(in)
	}
	if err := failpoint.Inject(ctx, failpoint.WorkflowBeforeStart); err != nil {
		return "", err
	}
	sctx, cancel := context.WithTimeout(ctx, s.startWait)
	defer cancel()
	run, err := s.temporal.ExecuteWorkflow(sctx, client.StartWorkflowOptions{
		ID:                                       spec.id,
		TaskQueue:                                s.taskQueue,
		WorkflowIDReusePolicy:                    policy,
		WorkflowExecutionErrorWhenAlreadyStarted: true,
		TypedSearchAttributes:                    temporal.NewSearchAttributes(attrs...),
		Memo:                                     memo,
		EnableEagerStart:                         spec.eager,
	}, spec.name, spec.in)
	var started *serviceerror.WorkflowExecutionAlreadyStarted
	switch {
	case errors.As(err, &started):
		return "", errRunExists
	case err != nil:
		return "", fmt.Errorf("start %s %s: %w", spec.name, spec.id, err)
	}
	if err := failpoint.Inject(ctx, failpoint.WorkflowAfterStart); err != nil {
		return "", err
	}
	return run.GetRunID(), nil
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

// agentEvent is a registry event of one agent, named by its resource name.
type agentEvent interface {
	proto.Message
	GetName() string
}

// decodeAgentEvent decodes an agent event (see decode) and checks its agent (see agentOf): a wrong
// agent is permanent.
func decodeAgentEvent[T agentEvent](ev eventstore.Event) (msg T, tenant, agentID string, err error) {
	msg, err = decode[T](ev)
	if err != nil {
		return msg, "", "", err
	}
	tenant, agentID, err = agentOf(ev, msg.GetName())
	if err != nil {
		return msg, "", "", eventstore.Permanent(err)
	}
	return msg, tenant, agentID, nil
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
