package registry

import (
	"context"
	"fmt"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/eventstore"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// Event types of agent ownership.
const (
	// EventAgentOwnershipTransferred records a new owner and/or sponsor
	// (registryv1.AgentOwnershipTransferred); it clears the agent's orphaned mark.
	EventAgentOwnershipTransferred = "agent.ownership_transferred"
	// EventAgentOrphaned records that an agent's owner or sponsor departed (registryv1.AgentOrphaned).
	EventAgentOrphaned = "agent.orphaned"
)

// Roles a departed principal held on an orphaned agent (AgentOrphaned.role).
const (
	// OrphanRoleOwner: the principal owned the agent.
	OrphanRoleOwner = "owner"
	// OrphanRoleSponsor: the principal sponsored the agent.
	OrphanRoleSponsor = "sponsor"
	// OrphanRoleBoth: the principal owned and sponsored the agent.
	OrphanRoleBoth = "owner,sponsor"
)

const (
	cmdTransferOwnership = "TransferAgentOwnership"
	cmdOrphanAgent       = "OrphanAgent"
	maxTransferReason    = 1024
)

// AgentOwnershipTransferred is the change that gives the agent named name a new owner and sponsor.
func AgentOwnershipTransferred(name, fromOwner, toOwner, fromSponsor, toSponsor, reason string) Change {
	return Change{Type: EventAgentOwnershipTransferred, Data: &registryv1.AgentOwnershipTransferred{
		Name: name, FromOwner: fromOwner, ToOwner: toOwner, FromSponsor: fromSponsor, ToSponsor: toSponsor, Reason: reason,
	}}
}

// AgentOrphaned is the change that marks the agent named name orphaned by the departure of
// principal, who held role (OrphanRole*).
func AgentOrphaned(name, principal, role, reason string) Change {
	return Change{Type: EventAgentOrphaned, Data: &registryv1.AgentOrphaned{Name: name, Principal: principal, Role: role, Reason: reason}}
}

// foldOwnership applies agent.ownership_transferred and agent.orphaned to next (a copy the caller
// owns). A transfer sets the owner and sponsor it names and clears the orphaned mark (the command
// admits only transfers that leave both valid); an orphaning sets the mark, keeping the time of the
// first one while the agent stays orphaned.
func foldOwnership(next *registryv1.Agent, e eventstore.Event) error {
	switch e.Type {
	case EventAgentOwnershipTransferred:
		d, err := eventstore.DecodeAs[*registryv1.AgentOwnershipTransferred](e)
		if err != nil {
			return err
		}
		if d.GetToOwner() != "" {
			next.Owner = d.GetToOwner()
		}
		if d.GetToSponsor() != "" {
			next.Sponsor = d.GetToSponsor()
		}
		next.Orphaned, next.OrphanReason, next.OrphanTime = false, "", nil
	case EventAgentOrphaned:
		d, err := eventstore.DecodeAs[*registryv1.AgentOrphaned](e)
		if err != nil {
			return err
		}
		if !next.GetOrphaned() {
			next.OrphanTime = timestamppb.New(e.Time)
			next.OrphanReason = d.GetReason()
		} else if d.GetReason() != "" && d.GetReason() != next.GetOrphanReason() {
			next.OrphanReason = next.GetOrphanReason() + "; " + d.GetReason()
		}
		next.Orphaned = true
	default:
		return fmt.Errorf("registry: %s is not an ownership event (event %s)", e.Type, e.ID)
	}
	return nil
}

// TransferAgentOwnership gives an agent a new owner and/or sponsor.
type TransferAgentOwnership struct {
	// Tenant and AgentID name the agent.
	Tenant, AgentID string
	// NewOwner is the new owner; empty keeps the current one.
	NewOwner string
	// NewSponsor is the new sponsor; empty keeps the current one.
	NewSponsor string
	// Reason says why (required).
	Reason string
	// Etag, if set, must equal the agent's current etag.
	Etag string
	// RequestID is the idempotency key.
	RequestID string
	// RequireOwner, when set, is the owner the agent must have for the caller to transfer it.
	RequireOwner string
}

func (c TransferAgentOwnership) validate() error {
	if c.NewOwner == "" && c.NewSponsor == "" {
		return invalid("new_owner", "new_owner or new_sponsor is required (a transfer names at least one)")
	}
	if c.NewOwner != "" {
		if err := checkPrincipal("new_owner", c.NewOwner, maxOwner); err != nil {
			return err
		}
	}
	if c.NewSponsor != "" {
		if err := checkPrincipal("new_sponsor", c.NewSponsor, maxSponsor); err != nil {
			return err
		}
	}
	if err := checkText("reason", c.Reason, true, maxTransferReason); err != nil {
		return err
	}
	return checkRequestID(c.RequestID)
}

// TransferOwnership decides a transfer: the agent, in any state but RETIRED and REJECTED, gets the
// new owner and/or sponsor. check tells whether a principal may own or sponsor agents of the tenant
// (nil: every principal may): the agent's owner and sponsor after the transfer must both pass it,
// the kept one too, so that a transfer always leaves an agent with a valid owner and sponsor. A
// transfer that changes nothing is a no-op (nil change). With RequireOwner set, only an agent of
// that owner may be transferred (PermissionDenied NOT_OWNER).
func (a *Agent) TransferOwnership(c TransferAgentOwnership, check func(field, id string) error) (*Change, error) {
	if !a.Exists() {
		return nil, a.notFound()
	}
	if c.RequireOwner != "" && a.view.GetOwner() != c.RequireOwner {
		return nil, errs.PermissionDenied("NOT_OWNER", "only the agent's owner, a tenant-admin or a platform-admin may transfer it")
	}
	if err := a.checkEtag(c.Etag); err != nil {
		return nil, err
	}
	switch a.State() {
	case registryv1.AgentState_AGENT_STATE_RETIRED, registryv1.AgentState_AGENT_STATE_REJECTED:
		return nil, errs.FailedPrecondition("AGENT_STATE_"+stateName(a.State()),
			fmt.Sprintf("cannot transfer the ownership of an agent in state %s (allowed in every state but RETIRED and REJECTED)", stateName(a.State()))).
			WithMetadata("state", stateName(a.State()))
	}
	from := a.view
	owner, sponsor := from.GetOwner(), from.GetSponsor()
	if c.NewOwner != "" {
		owner = c.NewOwner
	}
	if c.NewSponsor != "" {
		sponsor = c.NewSponsor
	}
	if owner == from.GetOwner() && sponsor == from.GetSponsor() && !from.GetOrphaned() {
		return nil, nil
	}
	field := "new_sponsor"
	if c.NewSponsor == "" {
		field = "new_owner"
	}
	if err := checkOwnerNotSponsor(field, owner, sponsor); err != nil {
		return nil, err
	}
	if check != nil {
		for _, p := range []struct{ field, newValue, value, role string }{
			{"new_owner", c.NewOwner, owner, "owner"},
			{"new_sponsor", c.NewSponsor, sponsor, "sponsor"},
		} {
			if p.value == "" {
				continue
			}
			if err := check(p.field, p.value); err != nil {
				if p.newValue == "" {
					return nil, invalid(p.field, fmt.Sprintf("the agent's current %s %q is not an active principal of tenant %s's directory: name a new %s too",
						p.role, printable(p.value), a.Tenant, p.role))
				}
				return nil, err
			}
		}
	}
	ch := AgentOwnershipTransferred(a.Name(), from.GetOwner(), owner, from.GetSponsor(), sponsor, c.Reason)
	return &ch, nil
}

// OrphanAgent marks an agent orphaned because principal departed.
type OrphanAgent struct {
	// Tenant and AgentID name the agent.
	Tenant, AgentID string
	// Principal is the departed principal.
	Principal string
	// Reason says why, in a sentence; derived from the principal and role when empty.
	Reason string
	// RequestID is the idempotency key (the reactor derives it from the source event).
	RequestID string
}

// Orphan decides the orphaning of an agent by the departure of c.Principal: an agent in a terminal
// state (RETIRED, REJECTED) or that the principal neither owns nor sponsors (any more) changes
// nothing (nil change, no error).
func (a *Agent) Orphan(c OrphanAgent) (*Change, error) {
	if !a.Exists() {
		return nil, a.notFound()
	}
	switch a.State() {
	case registryv1.AgentState_AGENT_STATE_RETIRED, registryv1.AgentState_AGENT_STATE_REJECTED:
		return nil, nil
	}
	role := orphanRole(a.view, c.Principal)
	if role == "" {
		return nil, nil
	}
	reason := c.Reason
	if reason == "" {
		reason = fmt.Sprintf("%s %s departed", role, c.Principal)
	}
	ch := AgentOrphaned(a.Name(), c.Principal, role, reason)
	return &ch, nil
}

// orphanRole is the role principal holds on agent: OrphanRoleOwner, OrphanRoleSponsor,
// OrphanRoleBoth, or "" for none.
func orphanRole(agent *registryv1.Agent, principal string) string {
	owner, sponsor := agent.GetOwner() == principal, agent.GetSponsor() == principal
	switch {
	case owner && sponsor:
		return OrphanRoleBoth
	case owner:
		return OrphanRoleOwner
	case sponsor:
		return OrphanRoleSponsor
	}
	return ""
}

// TransferAgentOwnership gives an agent a new owner and/or sponsor. With a directory for the
// tenant, the owner and sponsor after the transfer must be ACTIVE principals of it. It clears the
// agent's orphaned mark. A transfer that changes nothing writes nothing and returns the agent.
func (s *Service) TransferAgentOwnership(ctx context.Context, c TransferAgentOwnership, md eventstore.Metadata) (*registryv1.Agent, error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	if err := s.checkCaller(c.Tenant, c.RequireOwner); err != nil {
		return nil, err
	}
	check := func(field, id string) error { return s.directory.CheckPrincipal(c.Tenant, field, id) }
	key := commandKey(cmdTransferOwnership, c.Tenant, c.AgentID, c.RequestID)
	return s.runAgent(ctx, c.Tenant, c.AgentID, key, md, func(a *Agent) (*Change, error) { return a.TransferOwnership(c, check) })
}

// OrphanAgent marks an agent orphaned by the departure of c.Principal (agent.orphaned), unless it
// is terminal or the principal no longer owns or sponsors it. Idempotent by request id. It returns
// whether this command (or an earlier attempt with its request id) recorded the orphaning.
func (s *Service) OrphanAgent(ctx context.Context, c OrphanAgent, md eventstore.Metadata) (bool, error) {
	if err := checkRequestID(c.RequestID); err != nil {
		return false, err
	}
	key := commandKey(cmdOrphanAgent, c.Tenant, c.AgentID, c.RequestID)
	a, err := s.runAgentAggregate(ctx, c.Tenant, c.AgentID, key, md, func(a *Agent) (*Change, error) { return a.Orphan(c) })
	if err != nil {
		return false, err
	}
	return a.Handled(key), nil
}
