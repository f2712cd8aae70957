// Package agents is the monitor's projection of the registry's agents and the issuer's OAuth
// clients, for enrichment: per agent (by resource name or id) and per client id, the owner,
// sponsor, environment, risk tier, lifecycle state and scopes the ingest consumer writes into
// each telemetry row and the detectors read. An agent or client id the projection does not know
// is a ghost: its rows are kept and flagged, never dropped.
//
// It follows two streams (AGENTS and CREDENTIALS) with one eventstore Runner each; Apply is safe
// for concurrent use. Besides an agent's current state it keeps its recent state history (when it
// left ACTIVE and came back), so that a telemetry row is judged by the agent's state at the row's
// time, whatever the order in which the row and the registry's event reach the monitor.
package agents

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/agentid/agentid/pkg/eventstore"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// ProjectionName names the projection (bump the version when Apply changes).
const ProjectionName = "monitor-agents-v3"

// MaxStateChanges is how many state changes are kept per agent; older ones are folded into the
// state the agent had before the oldest kept one.
const MaxStateChanges = 64

// Event types the projection applies.
const (
	EventAgentRegistered          = "agent.registered"
	EventAgentActivated           = "agent.activated"
	EventAgentRejected            = "agent.rejected"
	EventAgentRetirementRequested = "agent.retirement_requested"
	EventAgentRetired             = "agent.retired"
	EventAgentSuspended           = "agent.suspended"
	EventAgentResumed             = "agent.resumed"
	EventClientCreated            = "client.created"
)

// Info is what the monitor knows about an agent.
type Info struct {
	// Name is the agent's resource name, tenants/{tenant}/agents/{agent}.
	Name string
	// Tenant is the agent's tenant.
	Tenant string
	// Owner and Sponsor are the accountable people.
	Owner, Sponsor string
	// Environment is the tag tokens carry: dev, test, staging, prod ("" when unspecified).
	Environment string
	// RiskTier is low, moderate, high or critical ("" when unspecified).
	RiskTier string
	// State is the agent's lifecycle state: the current one from Lookup, the one at the given time
	// from LookupAt.
	State registryv1.AgentState
	// StateSince is when the agent entered State (the registry event's time, to the millisecond);
	// zero when not known (before the oldest state change kept, or an event without a time).
	StateSince time.Time
	// Scopes are the agent's registered scopes.
	Scopes []string
	// Known is true for an agent the registry has registered.
	Known bool
}

// StateName is the short name of the state: ACTIVE, SUSPENDED, RETIRED ...
func (i Info) StateName() string {
	return strings.TrimPrefix(i.State.String(), "AGENT_STATE_")
}

// Directory answers what the monitor knows about an agent or client; the ingest consumer and the
// detectors use it.
type Directory interface {
	// Lookup finds the agent of tenant named agentOrClientID: an agent resource name, an agent id
	// or an OAuth client id. ok is false for one the registry (or, for a client id, the issuer)
	// does not know: a ghost. A registered client of no agent (a service, a resource server) is
	// known, with an empty Name.
	Lookup(tenant, agentOrClientID string) (info Info, ok bool)
}

// HistoryDirectory also answers an agent's state at a past time; the detectors use it.
type HistoryDirectory interface {
	Directory
	// LookupAt is Lookup with the agent's State (and StateSince) as they were at time at.
	LookupAt(tenant, agentOrClientID string, at time.Time) (info Info, ok bool)
}

var (
	_ eventstore.Projection = (*Projection)(nil)
	_ HistoryDirectory      = (*Projection)(nil)
)

// Projection is the read model. Memory: one entry per agent (a few hundred bytes plus its
// scopes and up to MaxStateChanges state changes of 32 bytes) and one per client id.
type Projection struct {
	mu      sync.RWMutex
	agents  map[string]*entry // by resource name
	clients map[string]string // tenant + "\x00" + client id -> agent resource name
}

type entry struct {
	info Info
	seq  uint64 // AGENTS sequence of the last event applied
	// changes are the agent's state changes in stream order, their times never decreasing; before
	// is the state before the first of them (UNSPECIFIED: not registered yet, or unknown once older
	// changes were folded in, then the folded change's state).
	changes []stateChange
	before  stateChange
}

// stateChange is the agent entering state at time at (UTC, milliseconds).
type stateChange struct {
	at    time.Time
	state registryv1.AgentState
}

// record appends a state change, keeping times non-decreasing (the stream order is the truth: a
// registry replica's clock behind the previous event's does not reorder them) and at most
// MaxStateChanges of them.
func (e *entry) record(at time.Time, state registryv1.AgentState) {
	at = at.UTC().Truncate(time.Millisecond)
	if n := len(e.changes); n > 0 && at.Before(e.changes[n-1].at) {
		at = e.changes[n-1].at
	}
	e.changes = append(e.changes, stateChange{at: at, state: state})
	if over := len(e.changes) - MaxStateChanges; over > 0 {
		e.before = e.changes[over-1]
		e.changes = slices.Delete(e.changes, 0, over)
	}
}

// stateAt returns the state the agent was in at t and since when. A change takes effect at its own
// millisecond: a row stamped in the same millisecond as a suspension counts as after it.
func (e *entry) stateAt(t time.Time) stateChange {
	t = t.UTC().Truncate(time.Millisecond)
	i, _ := slices.BinarySearchFunc(e.changes, t, func(c stateChange, t time.Time) int {
		if c.at.After(t) {
			return 1
		}
		return -1
	})
	// i is the first change after t.
	if i == 0 {
		return e.before
	}
	return e.changes[i-1]
}

// New returns an empty projection.
func New() *Projection {
	return &Projection{agents: map[string]*entry{}, clients: map[string]string{}}
}

// Name implements eventstore.Projection.
func (p *Projection) Name() string { return ProjectionName }

// Apply implements eventstore.Projection: registry events of agents and the issuer's
// client.created; other types are ignored. An agent event at or below the sequence of the last
// one applied to its agent (a re-driven failed event) changes nothing. An event whose agent is not
// of the event's tenant is refused (permanently).
func (p *Projection) Apply(_ context.Context, e eventstore.Event) error {
	if e.Type == EventClientCreated {
		return p.applyClient(e)
	}
	if e.Type == EventAgentOwnershipTransferred {
		return p.applyTransfer(e)
	}
	if e.Type == EventAgentUpdated {
		return p.applyUpdated(e)
	}
	var (
		name  string
		reg   *registryv1.Agent
		state registryv1.AgentState
		err   error
	)
	switch e.Type {
	case EventAgentRegistered:
		var m *registryv1.AgentRegistered
		m, err = eventstore.DecodeAs[*registryv1.AgentRegistered](e)
		reg = m.GetAgent()
		name, state = reg.GetName(), registeredState(reg)
	case EventAgentActivated:
		var m *registryv1.AgentActivated
		m, err = eventstore.DecodeAs[*registryv1.AgentActivated](e)
		name, state = m.GetName(), registryv1.AgentState_AGENT_STATE_ACTIVE
	case EventAgentRejected:
		var m *registryv1.AgentRejected
		m, err = eventstore.DecodeAs[*registryv1.AgentRejected](e)
		name, state = m.GetName(), registryv1.AgentState_AGENT_STATE_REJECTED
	case EventAgentRetirementRequested:
		var m *registryv1.AgentRetirementRequested
		m, err = eventstore.DecodeAs[*registryv1.AgentRetirementRequested](e)
		name, state = m.GetName(), registryv1.AgentState_AGENT_STATE_RETIRING
	case EventAgentRetired:
		var m *registryv1.AgentRetired
		m, err = eventstore.DecodeAs[*registryv1.AgentRetired](e)
		name, state = m.GetName(), registryv1.AgentState_AGENT_STATE_RETIRED
	case EventAgentSuspended:
		var m *registryv1.AgentSuspended
		m, err = eventstore.DecodeAs[*registryv1.AgentSuspended](e)
		name, state = m.GetName(), registryv1.AgentState_AGENT_STATE_SUSPENDED
	case EventAgentResumed:
		var m *registryv1.AgentResumed
		m, err = eventstore.DecodeAs[*registryv1.AgentResumed](e)
		name, state = m.GetName(), registryv1.AgentState_AGENT_STATE_ACTIVE
	case EventAgentSubmitted:
		var m *registryv1.AgentSubmitted
		m, err = eventstore.DecodeAs[*registryv1.AgentSubmitted](e)
		name, state = m.GetName(), registryv1.AgentState_AGENT_STATE_PENDING
	case EventAgentExpired:
		var m *registryv1.AgentExpired
		m, err = eventstore.DecodeAs[*registryv1.AgentExpired](e)
		name, state = m.GetName(), registryv1.AgentState_AGENT_STATE_EXPIRED
	default:
		return nil
	}
	if err != nil {
		return eventstore.Permanent(err)
	}
	return p.fold(e, name, func(cur *entry) {
		if reg != nil {
			cur.info.Owner, cur.info.Sponsor = reg.GetOwner(), reg.GetSponsor()
			cur.info.Environment = enumTag(reg.GetEnvironment().String(), "ENVIRONMENT_")
			cur.info.RiskTier = enumTag(reg.GetRiskTier().String(), "RISK_TIER_")
			cur.info.Scopes = slices.Clone(reg.GetScopes())
			cur.info.Known = true
		}
		cur.info.State = state
		cur.record(e.Time, state)
		cur.info.StateSince = cur.changes[len(cur.changes)-1].at
	})
}

// fold applies an agent event to the agent's entry (created on its first event) under the lock:
// an agent not of the event's tenant is refused permanently, and an event at or below the last one
// applied to the agent changes nothing; otherwise the entry's sequence advances and apply runs.
func (p *Projection) fold(e eventstore.Event, name string, apply func(*entry)) error {
	tenant, _, ok := parseName(name)
	if !ok || tenant != e.Metadata.Tenant {
		return eventstore.Permanent(fmt.Errorf("agents: event %s (%s): agent %q is not an agent of the event's tenant %q", e.ID, e.Type, name, e.Metadata.Tenant))
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	cur := p.agents[name]
	if cur == nil {
		cur = &entry{info: Info{Name: name, Tenant: tenant}}
		p.agents[name] = cur
	}
	if e.Sequence != 0 && e.Sequence <= cur.seq {
		return nil
	}
	cur.seq = max(cur.seq, e.Sequence)
	apply(cur)
	return nil
}

func (p *Projection) applyClient(e eventstore.Event) error {
	m, err := eventstore.DecodeAs[*issuerv1.ClientCreated](e)
	if err != nil {
		return eventstore.Permanent(err)
	}
	c := m.GetClient()
	tenant := c.GetTenant()
	if tenant == "" {
		tenant = e.Metadata.Tenant
	}
	if tenant != e.Metadata.Tenant || c.GetClientId() == "" {
		return eventstore.Permanent(fmt.Errorf("agents: event %s (%s): client %q of tenant %q in an event of tenant %q", e.ID, e.Type, c.GetClientId(), tenant, e.Metadata.Tenant))
	}
	agent := c.GetAgent()
	if at, _, ok := parseName(agent); agent != "" && (!ok || at != tenant) {
		return eventstore.Permanent(fmt.Errorf("agents: event %s (%s): client %s names agent %q outside tenant %q", e.ID, e.Type, c.GetClientId(), agent, tenant))
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clients[tenant+"\x00"+c.GetClientId()] = agent
	return nil
}

// Lookup implements Directory. An agent id or client id is resolved within tenant only.
func (p *Projection) Lookup(tenant, agentOrClientID string) (Info, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	e, client, ok := p.find(tenant, agentOrClientID)
	if !ok || client {
		return e.info, ok
	}
	info := e.info
	info.Scopes = slices.Clone(info.Scopes)
	return info, true
}

// LookupAt implements HistoryDirectory: Lookup with the state the agent had at time at (before its
// first state change kept: UNSPECIFIED, or the state of the changes folded away). The other facts
// (owner, environment, scopes ...) are the current ones.
func (p *Projection) LookupAt(tenant, agentOrClientID string, at time.Time) (Info, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	e, client, ok := p.find(tenant, agentOrClientID)
	if !ok || client {
		return e.info, ok
	}
	info := e.info
	info.Scopes = slices.Clone(info.Scopes)
	c := e.stateAt(at)
	info.State, info.StateSince = c.state, c.at
	return info, true
}

// find resolves an agent name, agent id or client id of tenant; client is true for a known client
// of no agent (the entry then holds only its Info). p.mu must be held.
func (p *Projection) find(tenant, agentOrClientID string) (e *entry, client, ok bool) {
	if tenant == "" || agentOrClientID == "" {
		return &entry{}, false, false
	}
	name := agentOrClientID
	if !strings.HasPrefix(name, "tenants/") {
		if agent, ok := p.clients[tenant+"\x00"+agentOrClientID]; ok {
			if agent == "" {
				return &entry{info: Info{Tenant: tenant, Known: true}}, true, true
			}
			name = agent
		} else {
			name = "tenants/" + tenant + "/agents/" + agentOrClientID
		}
	}
	if t, _, ok := parseName(name); !ok || t != tenant {
		return &entry{}, false, false
	}
	e = p.agents[name]
	if e == nil || !e.info.Known {
		return &entry{}, false, false
	}
	return e, false, true
}

// Len is the number of agents the projection knows.
func (p *Projection) Len() int {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return len(p.agents)
}

// parseName splits tenants/{tenant}/agents/{agent}.
func parseName(name string) (tenant, id string, ok bool) {
	parts := strings.Split(name, "/")
	if len(parts) != 4 || parts[0] != "tenants" || parts[2] != "agents" || parts[1] == "" || parts[3] == "" {
		return "", "", false
	}
	return parts[1], parts[3], true
}

// enumTag turns an enum value name into its lower-case tag without prefix; "" for UNSPECIFIED.
func enumTag(name, prefix string) string {
	tag := strings.ToLower(strings.TrimPrefix(name, prefix))
	if tag == "unspecified" {
		return ""
	}
	return tag
}

// CatchUp returns a function that waits until runner, the projection's runner on AGENTS, has applied
// the stream of es up to its last sequence as of the call: a state change stored before the call is
// then in the projection. The function returns ctx's error if that takes longer than ctx allows.
func CatchUp(es *eventstore.Store, runner *eventstore.Runner) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		st, err := es.JetStream().Stream(ctx, eventstore.StreamAgents)
		if err != nil {
			return fmt.Errorf("agents: reading the last sequence of stream %s: %w", eventstore.StreamAgents, err)
		}
		last := st.CachedInfo().State.LastSeq
		if err := runner.WaitFor(ctx, last); err != nil {
			return fmt.Errorf("agents: waiting for the projection to apply %s up to %d: %w", eventstore.StreamAgents, last, err)
		}
		return nil
	}
}
