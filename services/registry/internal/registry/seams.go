package registry

import (
	"context"

	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// Directory checks that a principal (a person or a team) named in an agent's owner or sponsor
// field is known in the tenant's directory. A nil Directory in Config means no directory is
// configured: every syntactically valid principal is accepted.
type Directory interface {
	// CheckPrincipal returns nil when id is a known, active principal of tenant usable in field
	// (the request field it came from: "agent.owner", "agent.sponsor", "new_owner", ...), and an
	// errs error naming field and the rule in its message otherwise
	// (InvalidArgument for an unknown or departed principal, Unavailable when the directory
	// cannot answer).
	CheckPrincipal(tenant, field, id string) error
}

// Admission decides whether an update that escalates an agent past PENDING (adds scopes or roles,
// raises the risk tier, changes the credential type) may be recorded. UpdateAgent with no
// Admission configured refuses such updates (FailedPrecondition ADMISSION_UNAVAILABLE).
type Admission interface {
	// AdmitUpdate returns the classification to record when the change from before to after is
	// admitted (nil keeps the registry's own), or an errs error saying why not (PermissionDenied
	// POLICY_DENIED, FailedPrecondition APPROVAL_REQUIRED, Unavailable when policy cannot answer).
	AdmitUpdate(ctx context.Context, tenant string, before, after *registryv1.Agent) (*registryv1.Classification, error)
}
