package registry

import (
	"context"
	"fmt"
	"sort"
	"sync"

	"google.golang.org/protobuf/proto"

	"github.com/agentid/agentid/pkg/eventstore"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// Projection names; the suffix is the projection's version (bump it when the fold changes).
const (
	// AgentsProjectionName names the agents read model.
	AgentsProjectionName = "registry-agents-v2"
	// TenantsProjectionName names the tenants read model.
	TenantsProjectionName = "registry-tenants-v1"
)

// agentEntry is one agent in the read model with the sequence of its registration, which orders
// the tenant's list.
type agentEntry struct {
	registered uint64
	agent      *registryv1.Agent
}

// AgentProjection is the in-memory read model of every tenant's agents, built by replaying the
// AGENTS stream. It is safe for concurrent use; Apply is called by one Runner.
type AgentProjection struct {
	mu       sync.RWMutex
	byID     map[string]*agentEntry   // tenant + "/" + agent id
	byTenant map[string][]*agentEntry // in registration order
	keys     map[string]string        // tenant + "/" + key thumbprint → agent id of every key ever held
}

var _ eventstore.Projection = (*AgentProjection)(nil)

// NewAgentProjection returns an empty agents read model.
func NewAgentProjection() *AgentProjection {
	return &AgentProjection{byID: map[string]*agentEntry{}, byTenant: map[string][]*agentEntry{}, keys: map[string]string{}}
}

// Name implements eventstore.Projection.
func (p *AgentProjection) Name() string { return AgentsProjectionName }

// Apply implements eventstore.Projection: it folds one agent event into the read model. Events of
// other aggregate types are ignored.
func (p *AgentProjection) Apply(_ context.Context, e eventstore.Event) error {
	if e.AggregateType != AggregateAgent {
		return nil
	}
	key := e.Metadata.Tenant + "/" + e.AggregateID
	p.mu.Lock()
	defer p.mu.Unlock()
	cur := p.byID[key]
	var prev *registryv1.Agent
	if cur != nil {
		prev = cur.agent
	}
	next, err := foldAgent(prev, e)
	if err != nil {
		return err
	}
	// Re-checked here, not only by the commands: an event appended around them (a leaked NATS
	// credential) must not register an agent under another tenant's name.
	if e.Type == EventAgentRegistered && next.GetName() != AgentName(e.Metadata.Tenant, e.AggregateID) {
		return eventstore.Permanent(fmt.Errorf("registry: registration %s refused: agent %q on aggregate %s/%s", e.ID, next.GetName(), e.Metadata.Tenant, e.AggregateID))
	}
	if cur == nil {
		cur = &agentEntry{registered: e.Sequence}
		p.byID[key] = cur
		p.byTenant[e.Metadata.Tenant] = append(p.byTenant[e.Metadata.Tenant], cur)
	}
	cur.agent = next
	for _, k := range next.GetKeys() {
		if _, seen := p.keys[e.Metadata.Tenant+"/"+k.GetThumbprint()]; !seen {
			p.keys[e.Metadata.Tenant+"/"+k.GetThumbprint()] = e.AggregateID
		}
	}
	return nil
}

// KeyHolder returns the id of the agent of tenant that first held the key with thumbprint
// (RFC 7638, base64url), whether or not it still does.
func (p *AgentProjection) KeyHolder(tenant, thumbprint string) (string, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	id, ok := p.keys[tenant+"/"+thumbprint]
	return id, ok
}

// Get returns a copy of one agent.
func (p *AgentProjection) Get(tenant, agentID string) (*registryv1.Agent, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	e, ok := p.byID[tenant+"/"+agentID]
	if !ok {
		return nil, false
	}
	return proto.CloneOf(e.agent), true
}

// List returns up to n of tenant's agents registered after stream sequence after, in registration
// order, and the registration sequence of the last one returned if more follow (0 otherwise).
func (p *AgentProjection) List(tenant string, after uint64, n int) ([]*registryv1.Agent, uint64) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	all := p.byTenant[tenant]
	i := sort.Search(len(all), func(i int) bool { return all[i].registered > after })
	end := min(i+n, len(all))
	out := make([]*registryv1.Agent, 0, end-i)
	for _, e := range all[i:end] {
		out = append(out, proto.CloneOf(e.agent))
	}
	if end < len(all) && end > i {
		return out, all[end-1].registered
	}
	return out, 0
}

// Snapshot returns copies of every agent of every tenant, ordered by registration.
func (p *AgentProjection) Snapshot() []*registryv1.Agent {
	p.mu.RLock()
	defer p.mu.RUnlock()
	entries := make([]*agentEntry, 0, len(p.byID))
	for _, e := range p.byID {
		entries = append(entries, e)
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].registered < entries[j].registered })
	out := make([]*registryv1.Agent, len(entries))
	for i, e := range entries {
		out[i] = proto.CloneOf(e.agent)
	}
	return out
}

// tenantEntry is one tenant in the read model with the sequence of its creation.
type tenantEntry struct {
	created uint64
	tenant  *registryv1.Tenant
}

// TenantProjection is the in-memory read model of the tenants, built by replaying the TENANTS
// stream. It is safe for concurrent use; Apply is called by one Runner.
type TenantProjection struct {
	mu    sync.RWMutex
	byID  map[string]*tenantEntry
	order []*tenantEntry // in creation order
}

var _ eventstore.Projection = (*TenantProjection)(nil)

// NewTenantProjection returns an empty tenants read model.
func NewTenantProjection() *TenantProjection {
	return &TenantProjection{byID: map[string]*tenantEntry{}}
}

// Name implements eventstore.Projection.
func (p *TenantProjection) Name() string { return TenantsProjectionName }

// Apply implements eventstore.Projection: it folds one tenant event into the read model. Events of
// other aggregate types are ignored.
func (p *TenantProjection) Apply(_ context.Context, e eventstore.Event) error {
	if e.AggregateType != AggregateTenant {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	cur := p.byID[e.AggregateID]
	var prev *registryv1.Tenant
	if cur != nil {
		prev = cur.tenant
	}
	next, err := foldTenant(prev, e)
	if err != nil {
		return err
	}
	// A tenant's events are its own: tenant, aggregate and created tenant are one id.
	if e.Type == EventTenantCreated && (e.AggregateID != e.Metadata.Tenant || next.GetTenantId() != e.AggregateID) {
		return eventstore.Permanent(fmt.Errorf("registry: tenant creation %s refused: tenant %q on aggregate %s of tenant %s", e.ID, next.GetTenantId(), e.AggregateID, e.Metadata.Tenant))
	}
	if cur == nil {
		cur = &tenantEntry{created: e.Sequence}
		p.byID[e.AggregateID] = cur
		p.order = append(p.order, cur)
	}
	cur.tenant = next
	return nil
}

// Get returns a copy of one tenant.
func (p *TenantProjection) Get(id string) (*registryv1.Tenant, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	e, ok := p.byID[id]
	if !ok {
		return nil, false
	}
	return proto.CloneOf(e.tenant), true
}

// List returns up to n tenants created after stream sequence after, in creation order, and the
// creation sequence of the last one returned if more follow (0 otherwise).
func (p *TenantProjection) List(after uint64, n int) ([]*registryv1.Tenant, uint64) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	i := sort.Search(len(p.order), func(i int) bool { return p.order[i].created > after })
	end := min(i+n, len(p.order))
	out := make([]*registryv1.Tenant, 0, end-i)
	for _, e := range p.order[i:end] {
		out = append(out, proto.CloneOf(e.tenant))
	}
	if end < len(p.order) && end > i {
		return out, p.order[end-1].created
	}
	return out, 0
}

// Snapshot returns copies of every tenant in creation order.
func (p *TenantProjection) Snapshot() []*registryv1.Tenant {
	p.mu.RLock()
	defer p.mu.RUnlock()
	out := make([]*registryv1.Tenant, len(p.order))
	for i, e := range p.order {
		out[i] = proto.CloneOf(e.tenant)
	}
	return out
}
