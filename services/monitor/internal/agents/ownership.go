package agents

import (
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
	return p.fold(e, m.GetName(), func(cur *entry) {
		if o := m.GetToOwner(); o != "" {
			cur.info.Owner = o
		}
		if s := m.GetToSponsor(); s != "" {
			cur.info.Sponsor = s
		}
	})
}
