package oauth

import (
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/services/issuer/internal/credentials"
)

// DefaultTemporalNamespace is the Temporal namespace named in the permissions of tokens for
// authn.TemporalAudience when Config.TemporalNamespace is empty: the platform's namespace.
const DefaultTemporalNamespace = "agentid"

// Temporal roles as the default JWT claim mapper of the Temporal server reads them from
// "<namespace>:<role>" (go.temporal.io/server/common/authorization/default_jwt_claim_mapper.go).
const (
	// TemporalRoleWrite may call every non-operator API of the namespace: start, signal, update and
	// query workflows, and poll its task queues as a worker.
	TemporalRoleWrite = "write"
	// TemporalRoleAdmin may also call the operator APIs of the namespace (search attributes).
	TemporalRoleAdmin = "admin"
)

// temporalRoles maps the platform roles that may hold a token for the Temporal frontend to the
// Temporal role they get on the platform's namespace. No role maps to the cluster-wide
// "temporal-system" scope: the platform never administers the Temporal cluster itself.
var temporalRoles = []struct {
	role     authn.Role
	temporal string
}{
	{authn.RolePlatformAdmin, TemporalRoleAdmin},
	{authn.RoleLifecycleWorker, TemporalRoleWrite},
}

// ValidTemporalNamespace checks a Temporal namespace name for the permissions claim: not empty, no
// colon (the claim mapper splits "<namespace>:<role>" at the first one) and no space or control
// character.
func ValidTemporalNamespace(ns string) error {
	if ns == "" || len(ns) > 255 {
		return fmt.Errorf("temporal namespace %q must be 1 to 255 characters", ns)
	}
	if strings.ContainsAny(ns, ": /") || !printableASCII(ns) {
		return fmt.Errorf("temporal namespace %q must be printable ASCII without spaces, colons or slashes", ns)
	}
	return nil
}

// TemporalPermissions returns the "permissions" claim of a token for authn.TemporalAudience of a
// client holding roles: "<namespace>:admin" for a platform-admin, "<namespace>:write" for the
// lifecycle worker, nothing for any other role.
func TemporalPermissions(namespace string, roles []string) []string {
	for _, m := range temporalRoles {
		if slices.Contains(roles, string(m.role)) {
			return []string{namespace + ":" + m.temporal}
		}
	}
	return nil
}

// temporalGrant decides a request for authn.TemporalAudience. It returns no audience when the
// resource is not requested (the other resource rules apply), else that audience alone and the
// permissions for Temporal's claim mapper. The audience is only for platform identities of the
// system tenant (the Temporal frontend trusts that tenant's JWKS) holding lifecycle-worker or
// platform-admin, and never shares a token with another resource.
func (s *Server) temporalGrant(tenant string, client *credentials.Client, requested []string) (aud, permissions []string, oerr *Error) {
	if !slices.Contains(requested, authn.TemporalAudience) {
		return nil, nil, nil
	}
	for _, r := range requested {
		if r != authn.TemporalAudience {
			return nil, nil, newError(ErrInvalidTarget, http.StatusBadRequest,
				"the Temporal audience %s cannot share a token with another resource", authn.TemporalAudience)
		}
	}
	if tenant == authn.SystemTenant && client.Proto.GetAgent() == "" {
		permissions = TemporalPermissions(s.temporalNamespace, client.Proto.GetRoles())
	}
	if len(permissions) == 0 {
		return nil, nil, newError(ErrInvalidTarget, http.StatusBadRequest,
			"resource %s is only for the lifecycle worker and platform admins", authn.TemporalAudience)
	}
	return []string{authn.TemporalAudience}, permissions, nil
}
