// Package agents is the monitor's projection of the registry's agents and the issuer's OAuth
// clients, for enrichment: per agent (by resource name or id) and per client id, the owner,
// sponsor, environment, risk tier, lifecycle state and scopes the ingest consumer writes into
// each telemetry row and the detectors read. An agent or client id the projection does not know
// is a ghost: its rows are kept and flagged, never dropped.
//
// It follows two streams (AGENTS and CREDENTIALS) with one eventstore Runner each; Apply is safe
// for concurrent use.
package agents

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/agentid/agentid/pkg/eventstore"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// ProjectionName names the projection (bump the version when Apply changes).
const ProjectionName = "monitor-agents-v1"

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
	// State is the agent's lifecycle state.
	State registryv1.AgentState
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

var (
	_ eventstore.Projection = (*Projection)(nil)
	_ Directory             = (*Projection)(nil)
)

// Projection is the read model. Memory: one entry per agent (a few hundred bytes plus its
// scopes) and one per client id.
type Projection struct {
	mu      sync.RWMutex
	agents  map[string]*entry // by resource name
	clients map[string]string // tenant + "\x00" + client id -> agent resource name
}

type entry struct {
	info Info
	seq  uint64 // AGENTS sequence of the last event applied
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
		name, state = reg.GetName(), registryv1.AgentState_AGENT_STATE_PENDING
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
	default:
		return nil
	}
	if err != nil {
		return eventstore.Permanent(err)
	}
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
	if reg != nil {
		cur.info.Owner, cur.info.Sponsor = reg.GetOwner(), reg.GetSponsor()
		cur.info.Environment = enumTag(reg.GetEnvironment().String(), "ENVIRONMENT_")
		cur.info.RiskTier = enumTag(reg.GetRiskTier().String(), "RISK_TIER_")
		cur.info.Scopes = slices.Clone(reg.GetScopes())
		cur.info.Known = true
	}
	cur.info.State = state
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
	if tenant == "" || agentOrClientID == "" {
		return Info{}, false
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	name := agentOrClientID
	if !strings.HasPrefix(name, "tenants/") {
		if agent, ok := p.clients[tenant+"\x00"+agentOrClientID]; ok {
			if agent == "" {
				return Info{Tenant: tenant, Known: true}, true
			}
			name = agent
		} else {
			name = "tenants/" + tenant + "/agents/" + agentOrClientID
		}
	}
	if t, _, ok := parseName(name); !ok || t != tenant {
		return Info{}, false
	}
	e := p.agents[name]
	if e == nil || !e.info.Known {
		return Info{}, false
	}
	info := e.info
	info.Scopes = slices.Clone(info.Scopes)
	return info, true
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
