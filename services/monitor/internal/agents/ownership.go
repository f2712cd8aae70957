package agents

import (
	"fmt"

	"github.com/agentid/agentid/pkg/eventstore"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// Ownership event types of the registry: a transfer changes the owner and sponsor the projection
// enriches telemetry with; an orphaning changes nothing the projection keeps (it is ignored).
const (
	EventAgentOwnershipTransferred = "agent.ownership_transferred"
	EventAgentOrphaned             = "agent.orphaned"
)

// applyTransfer folds agent.ownership_transferred: the agent's owner and sponsor become the event's;
// its state is unchanged. An event at or below the last one applied to the agent changes nothing.
func (p *Projection) applyTransfer(e eventstore.Event) error {
	m, err := eventstore.DecodeAs[*registryv1.AgentOwnershipTransferred](e)
	if err != nil {
		return eventstore.Permanent(err)
	}
	name := m.GetName()
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
	if o := m.GetToOwner(); o != "" {
		cur.info.Owner = o
	}
	if s := m.GetToSponsor(); s != "" {
		cur.info.Sponsor = s
	}
	return nil
}
