package lifecycle

import (
	"context"
	"fmt"
	"slices"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/directory"
	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/eventstore"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// ReasonCallerNotActive is the PermissionDenied of a decision an agent's owner or sponsor submits
// while the tenant's directory does not list the caller as an ACTIVE principal (as the registry
// refuses such an owner's commands).
const ReasonCallerNotActive = "CALLER_NOT_ACTIVE"

// ReasonDirectoryUncheckable is the FailedPrecondition of a decision whose directory check the
// registry refused as a malformed query (InvalidArgument): retrying cannot make it pass, and nothing
// is decided unchecked.
const ReasonDirectoryUncheckable = "DIRECTORY_UNCHECKABLE"

// decidesOnItsOwn are the roles that decide lifecycle steps by role, not as an agent's owner or
// sponsor; a caller holding none of them decides as owner or sponsor.
var decidesOnItsOwn = []authn.Role{authn.RolePlatformAdmin, authn.RoleTenantAdmin, authn.RoleApprover,
	authn.RoleSecurityApprover, authn.RoleComplianceApprover}

// actsAsOwner reports whether p decides only as an agent's owner or sponsor.
func actsAsOwner(p *authn.Principal) bool {
	return !slices.ContainsFunc(decidesOnItsOwn, p.HasRole)
}

// checkDecider refuses a decision of p on agent (tenants/{tenant}/agents/{agent}) when p is the
// agent's owner or sponsor and the tenant has a directory that does not list p as ACTIVE
// (PermissionDenied CALLER_NOT_ACTIVE): a departed or unknown principal keeps no owner rights,
// whatever other roles it holds (an owner who is also an approver is checked too). A caller holding
// none of the roles that decide on their own can decide only as owner or sponsor and is always
// checked; one holding such a role is checked when the registry's agent names it owner or sponsor.
// A tenant without a directory (no principals at all) refuses nobody. When the registry cannot be
// asked the decision is refused as Unavailable (FailedPrecondition DIRECTORY_UNCHECKABLE when it
// refuses the query as malformed): nothing is decided unchecked. The check itself is pkg/directory's,
// which VerifyApproval applies again to every token decision, whichever way it reaches a run.
func checkDecider(ctx context.Context, reg registryv1.RegistryServiceClient, p *authn.Principal, agent string) error {
	tenant, _, err := ParseAgent("agent", agent)
	if err != nil {
		return err
	}
	if reg == nil {
		return errs.Unavailable("DIRECTORY_UNAVAILABLE", "the directory cannot be asked whether the caller is an ACTIVE principal: the decision is refused", nil)
	}
	if !actsAsOwner(p) {
		owns, err := ownsOrSponsors(ctx, reg, p, agent)
		if err != nil {
			return errs.Unavailable("DIRECTORY_UNAVAILABLE", "the registry could not be asked whether the caller is the agent's owner or sponsor: the decision is refused; retry", err)
		}
		if !owns {
			return nil
		}
	}
	err = directory.CheckActive(ctx, reg, tenant, p.ID)
	switch {
	case err == nil:
		return nil
	case directory.IsNotActive(err):
		return errs.PermissionDenied(ReasonCallerNotActive,
			fmt.Sprintf("the caller %q is not an ACTIVE principal of tenant %s's directory: a departed or unknown principal holds no owner rights", p.ID, tenant)).
			WithMetadata("principal", p.ID)
	case errs.Is(err, errs.KindInvalidArgument):
		return errs.FailedPrecondition(ReasonDirectoryUncheckable, "the registry refused to say whether the caller is an ACTIVE principal: the decision is refused").WithCause(err)
	}
	return errs.Unavailable("DIRECTORY_UNAVAILABLE", "the directory could not be asked whether the caller is an ACTIVE principal: the decision is refused; retry", err)
}

// ownsOrSponsors reports whether the registry's agent names p its owner or sponsor. An agent the
// registry does not know has neither.
func ownsOrSponsors(ctx context.Context, reg registryv1.RegistryServiceClient, p *authn.Principal, agent string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, directory.LookupTimeout)
	defer cancel()
	resp, err := reg.GetAgent(ctx, &registryv1.GetAgentRequest{Name: agent})
	if err != nil {
		if e := errs.FromStatus(err); e != nil && e.Kind == errs.KindNotFound {
			return false, nil
		}
		return false, fmt.Errorf("registry.GetAgent %s: %w", agent, err)
	}
	a := resp.GetAgent()
	return p.ID != "" && (a.GetOwner() == p.ID || a.GetSponsor() == p.ID), nil
}

// activeReviewers returns whom a review of an agent with owner and sponsor asks: those of them
// tenant's directory lists as ACTIVE, in that order (both when the tenant has no directory). The
// first takes the review's owner step (a sponsor as the owner's delegate), the second its sponsor
// step; "" for nobody. A directory that cannot be read is an error.
func (s *Service) activeReviewers(ctx context.Context, tenant, owner, sponsor string) (string, string, error) {
	var ids []string
	for _, id := range []string{owner, sponsor} {
		if id != "" {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return owner, sponsor, nil
	}
	if s.registry == nil {
		return "", "", fmt.Errorf("no registry client to read tenant %s's directory", tenant)
	}
	active, hasDirectory, err := directory.ActivePrincipals(ctx, s.registry, tenant, ids...)
	switch {
	case errs.Is(err, errs.KindInvalidArgument):
		// The registry refused the query itself: a redelivery asks the same and cannot succeed.
		return "", "", eventstore.Permanent(fmt.Errorf("tenant %s's directory: %w", tenant, err))
	case err != nil:
		return "", "", err
	case !hasDirectory:
		return owner, sponsor, nil
	}
	asked := []string{}
	for _, id := range ids {
		if active[id] {
			asked = append(asked, id)
		}
	}
	asked = append(asked, "", "")
	return asked[0], asked[1], nil
}
