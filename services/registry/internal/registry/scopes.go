package registry

import (
	"context"
	"fmt"
	"slices"

	"github.com/agentid/agentid/pkg/eventstore"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// EventAgentScopesRemoved records scopes taken from an agent (registryv1.AgentScopesRemoved).
const EventAgentScopesRemoved = "agent.scopes_removed"

// cmdRemoveAgentScopes names the command in idempotency keys.
const cmdRemoveAgentScopes = "RemoveAgentScopes"

// RemoveAgentScopes removes scopes from an ACTIVE or SUSPENDED agent.
type RemoveAgentScopes struct {
	// Tenant and AgentID name the agent.
	Tenant, AgentID string
	// Scopes are the scopes to remove (at least one).
	Scopes []string
	// Reason says why (required).
	Reason string
	// Ticket is the change ticket or review reference, if any.
	Ticket string
	// Etag, if set, must equal the agent's current etag.
	Etag string
	// RequestID is the idempotency key.
	RequestID string
}

func (c RemoveAgentScopes) validate() error {
	if len(c.Scopes) == 0 {
		return invalid("scopes", "at least one scope to remove is required")
	}
	if len(c.Scopes) > maxScopes {
		return invalid("scopes", fmt.Sprintf("must hold at most %d scopes", maxScopes))
	}
	for _, s := range c.Scopes {
		if !scopeRE.MatchString(s) {
			return invalid("scopes", "scope "+quoteClip(s)+" is not named resource.action[.qualifier]")
		}
	}
	if err := checkText("reason", c.Reason, true, maxSuspendReason); err != nil {
		return err
	}
	if err := checkText("ticket", c.Ticket, false, maxTicket); err != nil {
		return err
	}
	return checkRequestID(c.RequestID)
}

// quoteClip quotes s for an error message, cut to 80 bytes.
func quoteClip(s string) string {
	if len(s) > 80 {
		s = s[:80] + "..."
	}
	return "\"" + s + "\""
}

// AgentScopesRemoved is the change that removes scopes from the agent named name, leaving remaining.
func AgentScopesRemoved(name string, scopes, remaining []string, reason, ticket string) Change {
	return Change{Type: EventAgentScopesRemoved, Data: &registryv1.AgentScopesRemoved{
		Name: name, Scopes: scopes, RemainingScopes: remaining, Reason: reason, Ticket: ticket,
	}}
}

// RemoveScopes decides a scope removal: the scopes of c the agent holds are removed from an ACTIVE
// or SUSPENDED agent. When it holds none of them nothing changes (nil change, no error, whatever the
// etag): the agent is as the caller wants it.
func (a *Agent) RemoveScopes(c RemoveAgentScopes) (*Change, error) {
	if !a.Exists() {
		return nil, a.notFound()
	}
	held := a.view.GetScopes()
	var removed, remaining []string
	for _, s := range held {
		if slices.Contains(c.Scopes, s) {
			if !slices.Contains(removed, s) {
				removed = append(removed, s)
			}
			continue
		}
		remaining = append(remaining, s)
	}
	if len(removed) == 0 {
		return nil, nil
	}
	if err := a.checkEtag(c.Etag); err != nil {
		return nil, err
	}
	if err := a.allow(CmdRemoveScopes); err != nil {
		return nil, err
	}
	ch := AgentScopesRemoved(a.Name(), removed, remaining, c.Reason, c.Ticket)
	return &ch, nil
}

// foldScopesRemoved applies agent.scopes_removed to next: the scopes it names are gone.
func foldScopesRemoved(next *registryv1.Agent, e eventstore.Event) error {
	d, err := eventstore.DecodeAs[*registryv1.AgentScopesRemoved](e)
	if err != nil {
		return err
	}
	next.Scopes = slices.DeleteFunc(next.Scopes, func(s string) bool { return slices.Contains(d.GetScopes(), s) })
	return nil
}

// RemoveAgentScopes removes scopes from an ACTIVE or SUSPENDED agent; scopes it does not hold are
// ignored and, when none is left to remove, nothing is written and the agent is returned.
func (s *Service) RemoveAgentScopes(ctx context.Context, c RemoveAgentScopes, md eventstore.Metadata) (*registryv1.Agent, error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	key := commandKey(cmdRemoveAgentScopes, c.Tenant, c.AgentID, c.RequestID)
	return s.runAgent(ctx, c.Tenant, c.AgentID, key, md, func(a *Agent) (*Change, error) { return a.RemoveScopes(c) })
}
