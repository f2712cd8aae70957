package agents

import (
	"slices"

	"github.com/agentid/agentid/pkg/eventstore"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// Event types of the registry's agent record the projection follows.
const (
	// EventAgentUpdated changes an agent's declared fields: its scopes (the token endpoint grants no
	// scope the update took away) and its expire time.
	EventAgentUpdated = "agent.updated"
	// EventAgentSubmitted makes a PROPOSED agent PENDING.
	EventAgentSubmitted = "agent.submitted"
	// EventAgentExpired makes an agent EXPIRED: it gets no token.
	EventAgentExpired = "agent.expired"
)

// applyUpdated folds agent.updated: when it changed the scopes they become the agent's allowed
// scopes (a scope removed earlier by agent.scopes_removed and given back by the update is granted
// again); when it changed the expire time, that is the agent's expire time. Other fields change
// nothing the projection keeps; the state is unchanged.
func (s *State) applyUpdated(e eventstore.Event) error {
	msg, err := eventstore.DecodeAs[*registryv1.AgentUpdated](e)
	if err != nil {
		return err
	}
	name := msg.GetName()
	if err := CheckEventAgent(e, name); err != nil {
		return err
	}
	changed := msg.GetChangedFields()
	return s.fold(e, name, func(cur *agentState) {
		if slices.Contains(changed, "expire_time") {
			cur.expire = 0
			if t := msg.GetAgent().GetExpireTime(); t.IsValid() && !t.AsTime().IsZero() {
				cur.expire = max(t.AsTime().UnixMilli(), 1)
			}
		}
		if slices.Contains(changed, "scopes") {
			scopes := slices.Clone(msg.GetAgent().GetScopes())
			if s.allowed == nil {
				s.allowed = make(map[string][]string)
			}
			s.allowed[name] = scopes
			if rm := slices.DeleteFunc(slices.Clone(s.removed[name]), func(sc string) bool { return slices.Contains(scopes, sc) }); len(rm) > 0 {
				s.removed[name] = rm
			} else {
				delete(s.removed, name)
			}
		}
	})
}

// AllowedScopes returns the scopes the agent named name may be granted as its last update of scopes
// set them; ok is false when no update changed its scopes (its client's scopes apply).
func (s *State) AllowedScopes(name string) (scopes []string, ok bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	scopes, ok = s.allowed[name]
	return slices.Clone(scopes), ok
}

// AllowedScopes returns the scopes an update allowed the agent named name, from the projection
// without I/O (see State.AllowedScopes).
func (g *Gate) AllowedScopes(name string) ([]string, bool) { return g.state.AllowedScopes(name) }
