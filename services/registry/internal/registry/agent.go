package registry

import (
	"fmt"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/eventstore"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// Agent is the write model of one agent: its state folded from its events, the version (stream
// sequence of its last event) and the commands it has already handled.
type Agent struct {
	// Tenant and ID identify the aggregate.
	Tenant, ID string
	// Version is the stream sequence of the last event; 0 if the agent does not exist.
	Version uint64

	view         *registryv1.Agent
	decisionID   string
	handled      map[string]bool
	removedKeys  map[string]bool     // thumbprints of keys the agent held and removed
	suspension   suspension          // the current suspension, while SUSPENDED
	changed      map[string][]string // idempotency key of an agent.updated → its changed fields
	registration registration        // who registered the agent, and what (guards.go)
}

// suspension is what made an agent's current suspension: its cause and the idempotency key of the
// command that made it.
type suspension struct {
	cause, key string
}

// NewAgent returns the empty aggregate of an agent that has no events yet.
func NewAgent(tenant, id string) *Agent {
	return &Agent{Tenant: tenant, ID: id, handled: map[string]bool{}, removedKeys: map[string]bool{}}
}

// LoadAgent folds events, in order, into the aggregate.
func LoadAgent(tenant, id string, events []eventstore.Event) (*Agent, error) {
	a := NewAgent(tenant, id)
	for _, e := range events {
		if err := a.Apply(e); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// Apply folds one event into the aggregate.
func (a *Agent) Apply(e eventstore.Event) error {
	view, err := foldAgent(a.view, e)
	if err != nil {
		return err
	}
	switch e.Type {
	case EventAgentRegistered:
		d, err := eventstore.DecodeAs[*registryv1.AgentRegistered](e)
		if err != nil {
			return err
		}
		a.registration = registration{actor: e.Metadata.Actor, agent: d.GetAgent()}
	case EventAgentActivated:
		d, err := eventstore.DecodeAs[*registryv1.AgentActivated](e)
		if err != nil {
			return err
		}
		a.decisionID = d.GetDecisionId()
	case EventAgentRejected:
		d, err := eventstore.DecodeAs[*registryv1.AgentRejected](e)
		if err != nil {
			return err
		}
		a.decisionID = d.GetDecisionId()
	case EventAgentKeyRemoved:
		d, err := eventstore.DecodeAs[*registryv1.AgentKeyRemoved](e)
		if err != nil {
			return err
		}
		a.removedKeys[d.GetThumbprint()] = true
	case EventAgentSuspended:
		d, err := eventstore.DecodeAs[*registryv1.AgentSuspended](e)
		if err != nil {
			return err
		}
		a.suspension = suspension{cause: d.GetCause(), key: e.Metadata.CausationID}
	case EventAgentUpdated:
		d, err := eventstore.DecodeAs[*registryv1.AgentUpdated](e)
		if err != nil {
			return err
		}
		if a.changed == nil {
			a.changed = map[string][]string{}
		}
		a.changed[e.Metadata.CausationID] = d.GetChangedFields()
	}
	if view.GetState() != registryv1.AgentState_AGENT_STATE_SUSPENDED {
		a.suspension = suspension{}
	}
	a.view, a.Version = view, e.Sequence
	if e.Metadata.CausationID != "" {
		a.handled[e.Metadata.CausationID] = true
	}
	return nil
}

// ChangedBy returns the fields the agent.updated of the command with idempotency key key changed
// (nil when it wrote none).
func (a *Agent) ChangedBy(key string) []string { return a.changed[key] }

// Exists reports whether the agent has been registered.
func (a *Agent) Exists() bool { return a.view != nil }

// State returns the agent's lifecycle state (UNSPECIFIED if it does not exist).
func (a *Agent) State() registryv1.AgentState { return a.view.GetState() }

// View returns a copy of the agent as the read model shows it, nil if it does not exist.
func (a *Agent) View() *registryv1.Agent {
	if a.view == nil {
		return nil
	}
	return proto.CloneOf(a.view)
}

// Handled reports whether the command with idempotency key key has already produced an event.
func (a *Agent) Handled(key string) bool { return a.handled[key] }

// SuspensionCause is the cause of the agent's current suspension (`alert:<id>`, `review:<campaign>`,
// `operator`, `policy`), empty when it is not SUSPENDED.
func (a *Agent) SuspensionCause() string { return a.suspension.cause }

// SuspendedBy reports whether the agent's current suspension was made by the command with idempotency
// key key.
func (a *Agent) SuspendedBy(key string) bool {
	return a.suspension.key != "" && a.suspension.key == key
}

// Name is the agent's resource name.
func (a *Agent) Name() string { return AgentName(a.Tenant, a.ID) }

// Etag is the agent's current etag: its version in decimal.
func (a *Agent) Etag() string { return strconv.FormatUint(a.Version, 10) }

// foldAgent applies one event to an agent's read-model view and returns the new view; cur is not
// modified. Events are facts: the fold refuses only what it cannot make sense of (an event of an
// agent that was never registered, a second registration, an unknown type).
func foldAgent(cur *registryv1.Agent, e eventstore.Event) (*registryv1.Agent, error) {
	if e.Type != EventAgentRegistered && cur == nil {
		return nil, fmt.Errorf("registry: %s event %s for an agent that was never registered", e.Type, e.ID)
	}
	var next *registryv1.Agent
	if cur != nil {
		next = proto.CloneOf(cur)
	}
	switch e.Type {
	case EventAgentRegistered:
		if cur != nil {
			return nil, fmt.Errorf("registry: second registration %s of agent %s", e.ID, cur.GetName())
		}
		d, err := eventstore.DecodeAs[*registryv1.AgentRegistered](e)
		if err != nil {
			return nil, err
		}
		next = d.GetAgent()
		if next == nil {
			return nil, fmt.Errorf("registry: registration %s without an agent", e.ID)
		}
		if next.GetState() != registryv1.AgentState_AGENT_STATE_PROPOSED {
			next.State = registryv1.AgentState_AGENT_STATE_PENDING
		}
		next.CreateTime = timestamppb.New(e.Time)
		next.Keys = agentKeysOf(next.GetPublicJwks(), e.Time)
	case EventAgentActivated:
		next.State = registryv1.AgentState_AGENT_STATE_ACTIVE
		next.StateReason = ""
		if err := foldActivationOverride(next, e); err != nil {
			return nil, err
		}
	case EventAgentRejected:
		d, err := eventstore.DecodeAs[*registryv1.AgentRejected](e)
		if err != nil {
			return nil, err
		}
		next.State = registryv1.AgentState_AGENT_STATE_REJECTED
		next.StateReason = d.GetReason()
	case EventAgentRetirementRequested:
		d, err := eventstore.DecodeAs[*registryv1.AgentRetirementRequested](e)
		if err != nil {
			return nil, err
		}
		next.State = registryv1.AgentState_AGENT_STATE_RETIRING
		next.StateReason = d.GetReason()
	case EventAgentRetired:
		next.State = registryv1.AgentState_AGENT_STATE_RETIRED
	case EventAgentSuspended:
		d, err := eventstore.DecodeAs[*registryv1.AgentSuspended](e)
		if err != nil {
			return nil, err
		}
		next.State = registryv1.AgentState_AGENT_STATE_SUSPENDED
		next.StateReason = d.GetReason()
	case EventAgentResumed:
		if _, err := eventstore.DecodeAs[*registryv1.AgentResumed](e); err != nil {
			return nil, err
		}
		next.State = registryv1.AgentState_AGENT_STATE_ACTIVE
		next.StateReason = ""
	case EventAgentScopesRemoved:
		if err := foldScopesRemoved(next, e); err != nil {
			return nil, err
		}
	case EventAgentKeyAdded, EventAgentKeyRemoved:
		if err := foldAgentKey(next, e); err != nil {
			return nil, err
		}
	case EventAgentUpdated, EventAgentSubmitted, EventAgentExpired:
		if err := foldRecord(next, e); err != nil {
			return nil, err
		}
	case EventAgentOwnershipTransferred, EventAgentOrphaned:
		if err := foldOwnership(next, e); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("registry: unknown agent event type %q (event %s)", e.Type, e.ID)
	}
	next.UpdateTime = timestamppb.New(e.Time)
	next.Etag = strconv.FormatUint(e.Sequence, 10)
	return next, nil
}

// RegisterAgent asks for a new agent in state PENDING.
type RegisterAgent struct {
	// Tenant the agent is registered in.
	Tenant string
	// Agent carries the caller-settable fields; output-only fields are ignored.
	Agent *registryv1.Agent
	// RequestID is the idempotency key; the same id always yields the same agent.
	RequestID string
	// RequireOwner, when set, is the only owner the caller may register agents for.
	RequireOwner string
	// ValidateOnly decides (validates, classifies, checks the directory) without writing.
	ValidateOnly bool
	// Proposed registers the agent as PROPOSED (a draft) instead of PENDING.
	Proposed bool
}

// ActivateAgent records an approved provisioning decision.
type ActivateAgent struct {
	// Tenant and AgentID name the agent.
	Tenant, AgentID string
	// DecisionID is the policy decision or approval that allows activation.
	DecisionID string
	// ApprovedBy is `policy:auto` or an approver's id.
	ApprovedBy string
	// Etag, if set, must equal the agent's current etag.
	Etag string
	// RequestID is the idempotency key.
	RequestID string
	// Override is the admission policy's risk tier override, recorded with the activation.
	Override RiskTierOverride
}

// RejectAgent records a rejected provisioning decision.
type RejectAgent struct {
	// Tenant and AgentID name the agent.
	Tenant, AgentID string
	// DecisionID is the policy decision or approval that rejected the request.
	DecisionID string
	// Reason tells the owner why.
	Reason string
	// RequestID is the idempotency key.
	RequestID string
}

// RetireAgent asks for an agent's retirement.
type RetireAgent struct {
	// Tenant and AgentID name the agent.
	Tenant, AgentID string
	// Reason says why the agent is retired.
	Reason string
	// Ticket is the change ticket, if any.
	Ticket string
	// Etag, if set, must equal the agent's current etag.
	Etag string
	// RequestID is the idempotency key.
	RequestID string
	// RequireOwner, when set, is the owner the agent must have for the caller to retire it.
	RequireOwner string
	// Trigger is what triggered the retirement, one of Triggers; empty means TriggerRequest.
	Trigger string
}

// SuspendAgent suspends an ACTIVE agent.
type SuspendAgent struct {
	// Tenant and AgentID name the agent.
	Tenant, AgentID string
	// Reason says why (required).
	Reason string
	// Cause is what caused it: `alert:<id>`, `review:<campaign>`, `operator` (the default) or
	// `policy`.
	Cause string
	// Ticket is the change ticket or incident reference, if any.
	Ticket string
	// Etag, if set, must equal the agent's current etag.
	Etag string
	// RequestID is the idempotency key.
	RequestID string
}

// ResumeAgent returns a SUSPENDED agent to ACTIVE.
type ResumeAgent struct {
	// Tenant and AgentID name the agent.
	Tenant, AgentID string
	// Reason says why (required).
	Reason string
	// Ticket is the change ticket or incident reference, if any.
	Ticket string
	// Etag, if set, must equal the agent's current etag.
	Etag string
	// RequestID is the idempotency key.
	RequestID string
	// ExpectedCause, when set, is the cause the agent's current suspension must have.
	ExpectedCause string
}

// CompleteRetirement records verified deprovisioning.
type CompleteRetirement struct {
	// Tenant and AgentID name the agent.
	Tenant, AgentID string
	// VerifyTime is when credentials were verified revoked.
	VerifyTime *timestamppb.Timestamp
	// RequestID is the idempotency key.
	RequestID string
}

func checkDecision(decisionID string) error {
	if err := checkText("decision_id", decisionID, true, 200); err != nil {
		return err
	}
	return nil
}

func (c ActivateAgent) validate() error {
	if err := checkDecision(c.DecisionID); err != nil {
		return err
	}
	if err := checkText("approved_by", c.ApprovedBy, true, 200); err != nil {
		return err
	}
	if err := c.Override.validate(); err != nil {
		return err
	}
	return checkRequestID(c.RequestID)
}

func (c RejectAgent) validate() error {
	if err := checkDecision(c.DecisionID); err != nil {
		return err
	}
	if err := checkText("reason", c.Reason, false, 1000); err != nil {
		return err
	}
	return checkRequestID(c.RequestID)
}

func (c RetireAgent) validate() error {
	if err := checkText("reason", c.Reason, true, 1000); err != nil {
		return err
	}
	if err := checkText("ticket", c.Ticket, false, maxTicket); err != nil {
		return err
	}
	if _, err := NormalizeTrigger(c.Trigger); err != nil {
		return err
	}
	return checkRequestID(c.RequestID)
}

func (c SuspendAgent) validate() error {
	if err := checkText("reason", c.Reason, true, maxSuspendReason); err != nil {
		return err
	}
	if _, err := NormalizeCause(c.Cause); err != nil {
		return err
	}
	if err := checkText("ticket", c.Ticket, false, maxTicket); err != nil {
		return err
	}
	return checkRequestID(c.RequestID)
}

func (c ResumeAgent) validate() error {
	if err := checkText("reason", c.Reason, true, maxSuspendReason); err != nil {
		return err
	}
	if c.ExpectedCause != "" {
		if _, err := NormalizeCause(c.ExpectedCause); err != nil {
			return invalid("expected_cause", fmt.Sprintf("%q is not a suspension cause (operator, policy, alert:<alert id> or review:<campaign>)", printable(c.ExpectedCause)))
		}
	}
	if err := checkText("ticket", c.Ticket, false, maxTicket); err != nil {
		return err
	}
	return checkRequestID(c.RequestID)
}

func (c CompleteRetirement) validate() error {
	if c.VerifyTime != nil && c.VerifyTime.CheckValid() != nil {
		return invalid("verify_time", "is not a valid timestamp")
	}
	return checkRequestID(c.RequestID)
}

func (a *Agent) notFound() error {
	return errs.NotFound("AGENT_NOT_FOUND", "agent not found").WithMetadata("name", a.Name())
}

func (a *Agent) checkEtag(etag string) error {
	if etag != "" && etag != a.Etag() {
		return errs.Conflict("ETAG_MISMATCH", "the agent has changed since it was read (etag "+etag+", current "+a.Etag()+"); re-read and retry").
			WithMetadata("etag", a.Etag())
	}
	return nil
}

func stateName(s registryv1.AgentState) string {
	return strings.TrimPrefix(s.String(), "AGENT_STATE_")
}

// Register decides the registration of a new agent from validated input: the agent is PENDING (or
// PROPOSED with c.Proposed), its classification and risk tier are derived from its fields and its
// audit_ref points at its history. An existing agent is AlreadyExists; with RequireOwner set, an
// agent of another owner is PermissionDenied NOT_OWNER.
func (a *Agent) Register(c RegisterAgent) (*Change, error) {
	if a.Exists() {
		return nil, errs.AlreadyExists("AGENT_EXISTS", "an agent with this id already exists").WithMetadata("name", a.Name())
	}
	in := c.Agent
	if c.RequireOwner != "" && in.GetOwner() != c.RequireOwner {
		return nil, errs.PermissionDenied("NOT_OWNER", "an owner may only register agents it owns (agent.owner must be the caller)")
	}
	agent := declared(in)
	agent.Name, agent.AgentId, agent.Tenant = a.Name(), a.ID, a.Tenant
	agent.PublicJwks = in.GetPublicJwks()
	agent.Classification = Classify(agent)
	agent.RiskTier = EffectiveRiskTier(agent.Classification)
	agent.AuditRef = HistoryName(a.Tenant, a.ID)
	agent.State = registryv1.AgentState_AGENT_STATE_PENDING
	if c.Proposed {
		agent.State = registryv1.AgentState_AGENT_STATE_PROPOSED
	}
	ch := AgentRegistered(agent)
	return &ch, nil
}

// Activate decides an approval: PENDING becomes ACTIVE. Activating an ACTIVE agent again with the
// same decision id changes nothing (nil change, no error).
func (a *Agent) Activate(c ActivateAgent) (*Change, error) {
	if !a.Exists() {
		return nil, a.notFound()
	}
	if a.State() == registryv1.AgentState_AGENT_STATE_ACTIVE && a.decisionID == c.DecisionID {
		return nil, nil
	}
	if err := a.checkEtag(c.Etag); err != nil {
		return nil, err
	}
	if err := a.allow(CmdActivate); err != nil {
		return nil, err
	}
	ch := withOverride(AgentActivated(a.Name(), c.DecisionID, c.ApprovedBy), c.Override)
	return &ch, nil
}

// Reject decides a rejection: PENDING becomes REJECTED. Rejecting a REJECTED agent again with the
// same decision id changes nothing.
func (a *Agent) Reject(c RejectAgent) (*Change, error) {
	if !a.Exists() {
		return nil, a.notFound()
	}
	if a.State() == registryv1.AgentState_AGENT_STATE_REJECTED && a.decisionID == c.DecisionID {
		return nil, nil
	}
	if err := a.allow(CmdReject); err != nil {
		return nil, err
	}
	ch := AgentRejected(a.Name(), c.DecisionID, c.Reason)
	return &ch, nil
}

// Retire decides a retirement request: a PENDING, ACTIVE or SUSPENDED agent becomes RETIRING,
// recording the trigger (TriggerRequest when none is given). With RequireOwner set, only an agent
// of that owner may be retired (PermissionDenied NOT_OWNER).
func (a *Agent) Retire(c RetireAgent) (*Change, error) {
	if !a.Exists() {
		return nil, a.notFound()
	}
	if c.RequireOwner != "" && a.view.GetOwner() != c.RequireOwner {
		return nil, errs.PermissionDenied("NOT_OWNER", "only the agent's owner, a tenant-admin or a platform-admin may retire it")
	}
	if err := a.checkEtag(c.Etag); err != nil {
		return nil, err
	}
	if err := a.allow(CmdRetire); err != nil {
		return nil, err
	}
	trigger, err := NormalizeTrigger(c.Trigger)
	if err != nil {
		return nil, err
	}
	ch := AgentRetirementRequested(a.Name(), c.Reason, c.Ticket, trigger)
	return &ch, nil
}

// Suspend decides a suspension: an ACTIVE agent becomes SUSPENDED, recording the cause
// (CauseOperator when none is given). Suspending a SUSPENDED agent changes nothing (nil change, no
// error, whatever the etag): the agent is as the caller wants it.
func (a *Agent) Suspend(c SuspendAgent) (*Change, error) {
	if !a.Exists() {
		return nil, a.notFound()
	}
	if a.State() == registryv1.AgentState_AGENT_STATE_SUSPENDED {
		return nil, nil
	}
	if err := a.checkEtag(c.Etag); err != nil {
		return nil, err
	}
	if err := a.allow(CmdSuspend); err != nil {
		return nil, err
	}
	cause, err := NormalizeCause(c.Cause)
	if err != nil {
		return nil, err
	}
	ch := AgentSuspended(a.Name(), c.Reason, cause, c.Ticket)
	return &ch, nil
}

// Resume decides a resumption: a SUSPENDED agent becomes ACTIVE again. Any other state is
// FailedPrecondition, ACTIVE included (a resume is a decision about a suspension), and so is a
// suspension of another cause than c.ExpectedCause, when set.
func (a *Agent) Resume(c ResumeAgent) (*Change, error) {
	if !a.Exists() {
		return nil, a.notFound()
	}
	if err := a.checkEtag(c.Etag); err != nil {
		return nil, err
	}
	if err := a.allow(CmdResume); err != nil {
		return nil, err
	}
	if c.ExpectedCause != "" && c.ExpectedCause != a.suspension.cause {
		return nil, errs.FailedPrecondition("SUSPENSION_CAUSE_MISMATCH",
			fmt.Sprintf("the agent's suspension has cause %s, not %s: it is not lifted", a.suspension.cause, c.ExpectedCause)).
			WithMetadata("cause", a.suspension.cause)
	}
	ch := AgentResumed(a.Name(), c.Reason, c.Ticket)
	return &ch, nil
}

// CompleteRetirement decides verified deprovisioning: RETIRING becomes RETIRED.
func (a *Agent) CompleteRetirement(c CompleteRetirement) (*Change, error) {
	if !a.Exists() {
		return nil, a.notFound()
	}
	if err := a.allow(CmdCompleteRetirement); err != nil {
		return nil, err
	}
	ch := AgentRetired(a.Name(), c.VerifyTime)
	return &ch, nil
}
