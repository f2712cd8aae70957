// Package readmodel is the lifecycle service's in-memory view of the platform: agents and their states
// (stream AGENTS), agent clients and whether they are disabled (stream CREDENTIALS), and the recorded
// outcomes of lifecycle runs (stream LIFECYCLE). Three projections feed one Model; the reconciler and
// the API read it.
//
// Memory: per agent one Agent (ids, state, times, a retirement reason cut to MaxReasonLen bytes, at most
// two run outcomes with MaxApprovers approvers each) and per agent client one Client (ids and a flag):
// about 1 KiB per agent with its client, whatever the length of the events' payloads, so 100k agents
// take about 100 MiB.
package readmodel

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/agentid/agentid/pkg/eventstore"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	lifecyclev1 "github.com/agentid/agentid/proto/gen/go/agentid/lifecycle/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/workflows"
)

// Bounds of what one agent keeps in memory.
const (
	// MaxReasonLen bounds a kept retirement reason, in bytes.
	MaxReasonLen = 256
	// MaxApprovers bounds the approvers kept per provisioning outcome.
	MaxApprovers = 8
)

// Event types the projections apply (written by the registry, the issuer and the workflows).
const (
	EventAgentRegistered          = "agent.registered"
	EventAgentActivated           = "agent.activated"
	EventAgentRejected            = "agent.rejected"
	EventAgentRetirementRequested = "agent.retirement_requested"
	EventAgentRetired             = "agent.retired"
	EventAgentSuspended           = "agent.suspended"
	EventAgentResumed             = "agent.resumed"
	EventClientCreated            = "client.created"
	EventClientDisabled           = "client.disabled"
	EventClientTombstoned         = "client.tombstoned"
)

// Outcome is a lifecycle run's recorded end (lifecycle.provisioning_decided or
// lifecycle.deprovisioning_verified).
type Outcome struct {
	// WorkflowID is the run's id.
	WorkflowID string
	// Result is activated, rejected or retired.
	Result string
	// Time is when the outcome was recorded.
	Time time.Time
	// ApprovedBy lists who approved (provisioning), at most MaxApprovers.
	ApprovedBy []string
}

// Agent is what the lifecycle service knows of one agent.
type Agent struct {
	// Tenant of the agent.
	Tenant string
	// ID is the agent id.
	ID string
	// State is the agent's lifecycle state.
	State registryv1.AgentState
	// Since is when the agent entered State (the event's time).
	Since time.Time
	// RiskTier is the risk tier's search attribute value (workflows.RiskTierName).
	RiskTier string
	// RegisteredEventID is the id of the agent.registered event.
	RegisteredEventID string
	// Registrant is who registered the agent (the actor of agent.registered).
	Registrant string
	// RetireEventID is the id of the agent.retirement_requested event, once requested.
	RetireEventID string
	// RetireReason is the retirement's reason and ticket, at most MaxReasonLen bytes.
	RetireReason string
	// RetireTrigger, RetireTime and RetireTicket are the retirement's trigger, time (the event's, UTC)
	// and ticket, so that a deprovisioning run the reconciler starts is the one the event would have
	// started (e.g. a teardown without sign-offs for trigger task_completed).
	RetireTrigger string
	RetireTime    time.Time
	RetireTicket  string
	// Provisioned is the recorded provisioning outcome, if any.
	Provisioned *Outcome
	// Deprovisioned is the recorded deprovisioning outcome, if any.
	Deprovisioned *Outcome

	seq uint64 // stream sequence of the last agent event applied (stream AGENTS)
}

// Name is the agent's resource name.
func (a Agent) Name() string { return workflows.AgentName(a.Tenant, a.ID) }

// Client is an agent's OAuth client as the issuer recorded it.
type Client struct {
	// Tenant of the client.
	Tenant string
	// ClientID is the client id.
	ClientID string
	// Agent is the resource name of the agent the client belongs to.
	Agent string
	// Disabled is true once the client was disabled.
	Disabled bool
}

// Name is the client's resource name.
func (c Client) Name() string { return "tenants/" + c.Tenant + "/clients/" + c.ClientID }

type key struct{ tenant, id string }

// Model is the read model; its methods are safe for concurrent use.
type Model struct {
	mu      sync.RWMutex
	agents  map[key]*Agent
	clients map[key]*Client
}

// New returns an empty model.
func New() *Model {
	return &Model{agents: map[key]*Agent{}, clients: map[key]*Client{}}
}

// Agent returns a copy of the agent, if known.
func (m *Model) Agent(tenant, agentID string) (Agent, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	a, ok := m.agents[key{tenant, agentID}]
	if !ok {
		return Agent{}, false
	}
	return copyAgent(a), true
}

// Agents returns copies of the agents in the given states (every agent when none is given), ordered
// by tenant and id.
func (m *Model) Agents(states ...registryv1.AgentState) []Agent {
	m.mu.RLock()
	var out []Agent
	for _, a := range m.agents {
		if len(states) == 0 || contains(states, a.State) {
			out = append(out, copyAgent(a))
		}
	}
	m.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].Tenant != out[j].Tenant {
			return out[i].Tenant < out[j].Tenant
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// ActiveClients returns the clients that belong to an agent and are not disabled, ordered by name.
func (m *Model) ActiveClients() []Client {
	m.mu.RLock()
	var out []Client
	for _, c := range m.clients {
		if !c.Disabled && c.Agent != "" {
			out = append(out, *c)
		}
	}
	m.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name() < out[j].Name() })
	return out
}

// Client returns a copy of the client, if known.
func (m *Model) Client(tenant, clientID string) (Client, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	c, ok := m.clients[key{tenant, clientID}]
	if !ok {
		return Client{}, false
	}
	return *c, true
}

func contains(states []registryv1.AgentState, s registryv1.AgentState) bool {
	for _, x := range states {
		if x == s {
			return true
		}
	}
	return false
}

func copyAgent(a *Agent) Agent {
	c := *a
	if a.Provisioned != nil {
		p := *a.Provisioned
		p.ApprovedBy = append([]string(nil), p.ApprovedBy...)
		c.Provisioned = &p
	}
	if a.Deprovisioned != nil {
		d := *a.Deprovisioned
		c.Deprovisioned = &d
	}
	return c
}

// agent returns the agent's entry, creating it; the caller holds mu.
func (m *Model) agent(tenant, id string) *Agent {
	k := key{tenant, id}
	a, ok := m.agents[k]
	if !ok {
		a = &Agent{Tenant: tenant, ID: id}
		m.agents[k] = a
	}
	return a
}

// cut keeps at most n bytes of s, on a rune boundary.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// agentOf splits an agent resource name and checks it against the event's tenant.
func agentOf(e eventstore.Event, name string) (tenant, id string, err error) {
	tenant, id, ok := workflows.ParseAgentName(name)
	switch {
	case !ok:
		return "", "", fmt.Errorf("event %s (%s): agent %q is not tenants/{tenant}/agents/{agent}", e.ID, e.Type, name)
	case e.Metadata.Tenant != "" && e.Metadata.Tenant != tenant:
		return "", "", fmt.Errorf("event %s (%s): agent %s is not in the event's tenant %s", e.ID, e.Type, name, e.Metadata.Tenant)
	}
	return tenant, id, nil
}

// Agents is the projection of stream AGENTS into a Model.
type Agents struct{ M *Model }

// Name implements eventstore.Projection.
func (Agents) Name() string { return "lifecycle-agents-v2" }

// Apply implements eventstore.Projection. Each agent remembers the stream sequence of the last event
// applied to it; an event at or below it (a redelivery or a re-driven failed event) changes nothing,
// so a late agent.registered never turns a RETIRED agent PENDING again.
func (p Agents) Apply(_ context.Context, e eventstore.Event) error {
	var (
		name   string
		state  registryv1.AgentState
		update func(*Agent)
		newer  func(*Agent) // applied only by an event newer than the agent's last
	)
	switch e.Type {
	case EventAgentRegistered:
		msg, err := eventstore.DecodeAs[*registryv1.AgentRegistered](e)
		if err != nil {
			return err
		}
		ag := msg.GetAgent()
		name, state = ag.GetName(), registryv1.AgentState_AGENT_STATE_PENDING
		if ag.GetState() == registryv1.AgentState_AGENT_STATE_PROPOSED {
			state = registryv1.AgentState_AGENT_STATE_PROPOSED
		}
		update = func(a *Agent) {
			a.RiskTier, a.RegisteredEventID, a.Registrant = workflows.RiskTierName(ag.GetRiskTier()), e.ID, e.Metadata.Actor.ID
		}
	case EventAgentActivated:
		msg, err := eventstore.DecodeAs[*registryv1.AgentActivated](e)
		if err != nil {
			return err
		}
		name, state = msg.GetName(), registryv1.AgentState_AGENT_STATE_ACTIVE
	case EventAgentRejected:
		msg, err := eventstore.DecodeAs[*registryv1.AgentRejected](e)
		if err != nil {
			return err
		}
		name, state = msg.GetName(), registryv1.AgentState_AGENT_STATE_REJECTED
	case EventAgentRetirementRequested:
		msg, err := eventstore.DecodeAs[*registryv1.AgentRetirementRequested](e)
		if err != nil {
			return err
		}
		name, state = msg.GetName(), registryv1.AgentState_AGENT_STATE_RETIRING
		reason := msg.GetReason()
		if t := msg.GetTicket(); t != "" {
			reason += " (ticket " + t + ")"
		}
		update = func(a *Agent) {
			a.RetireEventID, a.RetireReason = e.ID, cut(reason, MaxReasonLen)
			a.RetireTrigger, a.RetireTime, a.RetireTicket = msg.GetTrigger(), e.Time.UTC(), cut(msg.GetTicket(), MaxReasonLen)
		}
	case EventAgentRetired:
		msg, err := eventstore.DecodeAs[*registryv1.AgentRetired](e)
		if err != nil {
			return err
		}
		name, state = msg.GetName(), registryv1.AgentState_AGENT_STATE_RETIRED
	case EventAgentSuspended:
		msg, err := eventstore.DecodeAs[*registryv1.AgentSuspended](e)
		if err != nil {
			return err
		}
		name, state = msg.GetName(), registryv1.AgentState_AGENT_STATE_SUSPENDED
	case EventAgentResumed:
		msg, err := eventstore.DecodeAs[*registryv1.AgentResumed](e)
		if err != nil {
			return err
		}
		name, state = msg.GetName(), registryv1.AgentState_AGENT_STATE_ACTIVE
	case EventAgentSubmitted, EventAgentExpired, EventAgentUpdated:
		var err error
		if name, state, newer, err = recordChange(e); err != nil {
			return err
		}
		if name == "" {
			return nil
		}
	default:
		return nil
	}
	tenant, id, err := agentOf(e, name)
	if err != nil {
		return err
	}
	p.M.mu.Lock()
	defer p.M.mu.Unlock()
	a := p.M.agent(tenant, id)
	// Each update sets only fields its own event type owns, so a late re-apply (an operator's retry
	// of an event the projection once skipped) fills them in; but it never moves the state back.
	if update != nil {
		update(a)
	}
	if e.Sequence != 0 && e.Sequence <= a.seq {
		return nil
	}
	a.seq = max(a.seq, e.Sequence)
	if newer != nil {
		newer(a)
	}
	if state != registryv1.AgentState_AGENT_STATE_UNSPECIFIED && a.State != state {
		a.State, a.Since = state, e.Time
	}
	return nil
}

// Credentials is the projection of the agent clients on stream CREDENTIALS into a Model.
type Credentials struct{ M *Model }

// Name implements eventstore.Projection.
func (Credentials) Name() string { return "lifecycle-credentials-v1" }

// Apply implements eventstore.Projection: client.created adds a client, client.disabled and
// client.tombstoned disable it; other events (signing keys) are ignored.
func (p Credentials) Apply(_ context.Context, e eventstore.Event) error {
	if e.AggregateType != eventstore.AggregateClient {
		return nil
	}
	tenant, id := e.Metadata.Tenant, e.AggregateID
	switch e.Type {
	case EventClientCreated:
		msg, err := eventstore.DecodeAs[*issuerv1.ClientCreated](e)
		if err != nil {
			return err
		}
		c := msg.GetClient()
		if c.GetTenant() != "" {
			tenant = c.GetTenant()
		}
		if tenant == "" || id == "" {
			return fmt.Errorf("event %s (%s): client without tenant or id", e.ID, e.Type)
		}
		p.M.mu.Lock()
		defer p.M.mu.Unlock()
		k := key{tenant, id}
		prev, ok := p.M.clients[k]
		p.M.clients[k] = &Client{Tenant: tenant, ClientID: id, Agent: c.GetAgent(),
			Disabled: c.GetState() == issuerv1.ClientState_CLIENT_STATE_DISABLED || (ok && prev.Disabled)}
	case EventClientDisabled, EventClientTombstoned:
		if tenant == "" || id == "" {
			return fmt.Errorf("event %s (%s): client without tenant or id", e.ID, e.Type)
		}
		p.M.mu.Lock()
		defer p.M.mu.Unlock()
		k := key{tenant, id}
		c, ok := p.M.clients[k]
		if !ok {
			c = &Client{Tenant: tenant, ClientID: id}
			p.M.clients[k] = c
		}
		c.Disabled = true
	}
	return nil
}

// Lifecycle is the projection of stream LIFECYCLE (recorded run outcomes) into a Model.
type Lifecycle struct{ M *Model }

// Name implements eventstore.Projection.
func (Lifecycle) Name() string { return "lifecycle-runs-v1" }

// Apply implements eventstore.Projection.
func (p Lifecycle) Apply(_ context.Context, e eventstore.Event) error {
	switch e.Type {
	case workflows.EventProvisioningDecided:
		msg, err := eventstore.DecodeAs[*lifecyclev1.ProvisioningDecided](e)
		if err != nil {
			return err
		}
		tenant, id, err := agentOf(e, msg.GetAgent())
		if err != nil {
			return err
		}
		approvers := msg.GetApprovedBy()
		approvers = append([]string(nil), approvers[:min(len(approvers), MaxApprovers)]...)
		p.M.mu.Lock()
		defer p.M.mu.Unlock()
		p.M.agent(tenant, id).Provisioned = &Outcome{WorkflowID: msg.GetWorkflowId(), Result: msg.GetResult(), Time: e.Time, ApprovedBy: approvers}
	case workflows.EventDeprovisioningVerified:
		msg, err := eventstore.DecodeAs[*lifecyclev1.DeprovisioningVerified](e)
		if err != nil {
			return err
		}
		tenant, id, err := agentOf(e, msg.GetAgent())
		if err != nil {
			return err
		}
		p.M.mu.Lock()
		defer p.M.mu.Unlock()
		p.M.agent(tenant, id).Deprovisioned = &Outcome{WorkflowID: msg.GetWorkflowId(), Result: workflows.ResultRetired, Time: e.Time}
	}
	return nil
}
