package server

import (
	"context"
	"slices"

	"github.com/agentid/agentid/pkg/authn"
)

// validateOnlyRoles may ask RegisterAgent and UpdateAgent with validate_only: manageRoles and the
// auditor, a read-only role that can be handed to a pipeline's plan step (the registry decides and
// writes nothing, and its policy admission is a dry run that records nothing).
var validateOnlyRoles = append(manageRoles[:len(manageRoles):len(manageRoles)], authn.RoleAuditor)

// authorizeManage returns the caller if it may register or update agents in tenant: one of
// manageRoles, or with validateOnly one of validateOnlyRoles.
func authorizeManage(ctx context.Context, tenant string, validateOnly bool) (*authn.Principal, error) {
	if validateOnly {
		return authorize(ctx, tenant, validateOnlyRoles...)
	}
	return authorize(ctx, tenant, manageRoles...)
}

// manageOwnerConstraint is ownerConstraint for RegisterAgent and UpdateAgent: a caller that holds
// none of the manage roles (an auditor asking with validate_only) previews as an admin would be
// answered, since nothing is written and it may read every agent of the tenant anyway.
func manageOwnerConstraint(p *authn.Principal) string {
	if !slices.ContainsFunc(manageRoles, p.HasRole) && !p.IsPlatformAdmin() {
		return ""
	}
	return ownerConstraint(p)
}
