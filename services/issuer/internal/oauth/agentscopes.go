package oauth

import (
	"net/http"
	"slices"
	"strings"

	"github.com/agentid/agentid/services/issuer/internal/credentials"
)

// ScopeRemovals tells the token endpoint which scopes were taken from an agent after its client was
// registered (agent.scopes_removed, e.g. by an access review). AgentStates implementations that also
// implement it (agents.Gate) have those scopes withheld.
type ScopeRemovals interface {
	// RemovedScopes returns the scopes removed from the agent named name, without I/O.
	RemovedScopes(name string) []string
}

// ScopeUpdates tells the token endpoint which scopes an update of the agent record left it
// (agent.updated of scopes): the client's other scopes are withheld as removed ones are.
type ScopeUpdates interface {
	// AllowedScopes returns the agent's scopes as its last update of scopes set them; ok is false
	// when no update changed them. Without I/O.
	AllowedScopes(name string) (scopes []string, ok bool)
}

// grantAgentScopes is grantScopes without the scopes removed from the client's agent (by
// agent.scopes_removed, or by an agent.updated that no longer lists them): a removed scope asked
// for is invalid_scope, and one not asked for is left out of the default grant.
func (s *Server) grantAgentScopes(client *credentials.Client, requested string) ([]string, *Error) {
	var removed []string
	if r, ok := s.agents.(ScopeRemovals); ok && client.Proto.GetAgent() != "" {
		removed = r.RemovedScopes(client.Proto.GetAgent())
	}
	if u, ok := s.agents.(ScopeUpdates); ok && client.Proto.GetAgent() != "" {
		if allowed, updated := u.AllowedScopes(client.Proto.GetAgent()); updated {
			for _, sc := range client.Scopes() {
				if !slices.Contains(allowed, sc) && !slices.Contains(removed, sc) {
					removed = append(removed, sc)
				}
			}
		}
	}
	if len(removed) == 0 {
		return grantScopes(client, requested)
	}
	for _, sc := range strings.Split(requested, " ") {
		if sc != "" && slices.Contains(removed, sc) {
			return nil, newError(ErrInvalidScope, http.StatusBadRequest, "scope %s was removed from this agent", SafeDescription(sc))
		}
	}
	scopes, oerr := grantScopes(client, requested)
	if oerr != nil {
		return nil, oerr
	}
	return slices.DeleteFunc(scopes, func(sc string) bool { return slices.Contains(removed, sc) }), nil
}
