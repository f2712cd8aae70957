package agents

import (
	"slices"

	"github.com/agentid/agentid/pkg/eventstore"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// EventAgentScopesRemoved records scopes taken from an agent (by an access review or an admin): the
// token endpoint grants them no more, whatever the agent's client holds.
const EventAgentScopesRemoved = "agent.scopes_removed"

// applyScopesRemoved folds agent.scopes_removed into the state: the scopes join the agent's removed
// set. Only agents with removals have an entry, so the projection's memory per agent is unchanged
// for every other agent.
func (s *State) applyScopesRemoved(e eventstore.Event) error {
	msg, err := eventstore.DecodeAs[*registryv1.AgentScopesRemoved](e)
	if err != nil {
		return err
	}
	name := msg.GetName()
	if err := CheckEventAgent(e, name); err != nil {
		return err
	}
	return s.fold(e, name, func(*agentState) {
		if s.removed == nil {
			s.removed = make(map[string][]string)
		}
		set := s.removed[name]
		for _, sc := range msg.GetScopes() {
			if !slices.Contains(set, sc) {
				set = append(set, sc)
			}
		}
		s.removed[name] = set
	})
}

// RemovedScopes returns the scopes removed from the agent named name (nil when none was).
func (s *State) RemovedScopes(name string) []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return slices.Clone(s.removed[name])
}

// RemovedScopes returns the scopes removed from the agent named name, from the projection without
// I/O (a removal the projection has not applied yet is granted until it has: milliseconds).
func (g *Gate) RemovedScopes(name string) []string { return g.state.RemovedScopes(name) }
