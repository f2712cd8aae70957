package authn

import (
	"context"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/agentid/agentid/pkg/errs"
)

// Role is a platform role carried in the "roles" claim of an access token.
type Role string

// The platform roles (docs/architecture.md, "Tenancy, identities and roles").
const (
	// RolePlatformAdmin administers the platform; in tenant "system" it may act in every tenant.
	RolePlatformAdmin Role = "platform-admin"
	// RoleTenantAdmin administers one tenant.
	RoleTenantAdmin Role = "tenant-admin"
	// RoleOwner manages the agents it owns.
	RoleOwner Role = "owner"
	// RoleApprover decides lifecycle approvals.
	RoleApprover Role = "approver"
	// RoleSecurityApprover decides the security step of provisioning approvals.
	RoleSecurityApprover Role = "security-approver"
	// RoleComplianceApprover decides the compliance step of provisioning approvals.
	RoleComplianceApprover Role = "compliance-approver"
	// RoleAuditor reads audit records, read-only.
	RoleAuditor Role = "auditor"
	// RoleAnalyst queries telemetry and reports.
	RoleAnalyst Role = "analyst"
	// RoleResourceServer is a resource server of one tenant reporting its access decisions
	// (MonitorService.RecordAccess); it reads nothing.
	RoleResourceServer Role = "resource-server"
	// RoleSubscriber reads its tenant's event stream (EventsService.Subscribe), and nothing else.
	RoleSubscriber Role = "subscriber"
	// RoleLifecycleWorker is the lifecycle worker's narrow service role (tenant "system" only): in
	// every tenant it may activate, reject, suspend, resume and complete the retirement of agents,
	// retire them for automated triggers (ttl, inactivity, anomaly, ...), create, check and disable the
	// clients of agents, revoke an agent's tokens, and read what its activities and sweeps read
	// (agents, tenants, alerts, usage), and nothing else.
	RoleLifecycleWorker Role = "lifecycle-worker"
	// RoleRegistryService is the registry's narrow service role (tenant "system" only): in every
	// tenant it may ask the policy service to admit an agent (PolicyService.EvaluateAdmission, the
	// decision recorded under its request id), and nothing else.
	RoleRegistryService Role = "registry-service"
	// RoleIntrospector may introspect (RFC 7662) every token of its tenant at the issuer; a client
	// without it learns only about its own tokens.
	RoleIntrospector Role = "introspector"
)

// MaxRoleTokenLifetime is the longest lifetime of an access token that carries platform roles.
const MaxRoleTokenLifetime = 15 * time.Minute

// SystemOnly reports whether r exists only in tenant "system" (platform-admin, lifecycle-worker,
// registry-service): held in another tenant it grants nothing.
func (r Role) SystemOnly() bool { return r == RolePlatformAdmin || r.crossTenant() }

// crossTenant reports whether r, held in tenant "system", lets a service identity act in every
// tenant, but only where a call allows r by name (lifecycle-worker, registry-service).
func (r Role) crossTenant() bool { return r == RoleLifecycleWorker || r == RoleRegistryService }

// adminsSystem reports whether r may administer tenant "system"; only platform-admin does there, so
// the tenant-admin and owner roles grant nothing in it.
func (r Role) adminsSystem() bool { return r != RoleTenantAdmin && r != RoleOwner }

// SystemTenant is the reserved tenant of the platform's own service identities.
const SystemTenant = "system"

// APIAudience is the audience of access tokens for the platform's own gRPC API.
const APIAudience = "urn:agentid:api"

// Principal kinds, as recorded in the event envelope's actor kind.
const (
	// KindService is a platform service identity (roles in tenant "system").
	KindService = "service"
	// KindAgent is a registered AI agent (token carries the "agent" claim).
	KindAgent = "agent"
	// KindHuman is a person, typically an operator using agentctl.
	KindHuman = "human"
)

var tenantPattern = regexp.MustCompile(`^[a-z][a-z0-9-]{1,62}$`)

// ValidTenant reports whether s is a well-formed tenant id (^[a-z][a-z0-9-]{1,62}$).
func ValidTenant(s string) bool { return tenantPattern.MatchString(s) }

// Principal is the authenticated caller of a request, derived from a verified access token.
type Principal struct {
	// ID identifies the acting party: the token subject, or the actor (act.sub) of a delegated token.
	ID string
	// Kind is KindService, KindAgent or KindHuman.
	Kind string
	// Tenant is the tenant of the token's issuer; the caller acts only there (except platform admins).
	Tenant string
	// Roles are the platform roles from the "roles" claim.
	Roles []Role
	// ClientID is the OAuth client that obtained the token.
	ClientID string
	// Scopes are the granted scopes.
	Scopes []string
	// OnBehalfOf is the subject a delegated (token-exchange) token acts for; empty otherwise.
	OnBehalfOf string
	// TokenID is the token's jti, for audit records.
	TokenID string
}

type principalKey struct{}

// WithPrincipal returns a context carrying p.
func WithPrincipal(ctx context.Context, p *Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// PrincipalFrom returns the principal of the request, if it was authenticated.
func PrincipalFrom(ctx context.Context) (*Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(*Principal)
	return p, ok && p != nil
}

// HasRole reports whether the principal holds role r.
func (p *Principal) HasRole(r Role) bool {
	return p != nil && slices.Contains(p.Roles, r)
}

// IsPlatformAdmin reports whether the principal is a platform-admin of the system tenant, which may
// act in every tenant.
func (p *Principal) IsPlatformAdmin() bool {
	return p != nil && p.Tenant == SystemTenant && p.HasRole(RolePlatformAdmin)
}

// IsLifecycleWorker reports whether the principal is the lifecycle worker's service identity: the
// lifecycle-worker role of the system tenant, acting for itself.
func (p *Principal) IsLifecycleWorker() bool {
	return p != nil && p.Tenant == SystemTenant && p.OnBehalfOf == "" && p.HasRole(RoleLifecycleWorker)
}

// IsRegistryService reports whether the principal is the registry's service identity: the
// registry-service role of the system tenant, acting for itself.
func (p *Principal) IsRegistryService() bool {
	return p != nil && p.Tenant == SystemTenant && p.OnBehalfOf == "" && p.HasRole(RoleRegistryService)
}

// holds reports whether the principal's role r counts in tenant: cross-tenant service roles count
// only through Authorize's cross-tenant rule (never in the system tenant itself), other system-only
// roles only for principals of the system tenant, and in the system tenant the tenant-admin and owner
// roles count for nothing (only platform-admins administer it).
func (p *Principal) holds(r Role, tenant string) bool {
	switch {
	case !p.HasRole(r), r.crossTenant():
		return false
	case r.SystemOnly() && p.Tenant != SystemTenant:
		return false
	case tenant == SystemTenant && !r.adminsSystem():
		return false
	}
	return true
}

// Authorize decides whether the principal may act in tenant with one of the allowed roles. A nil
// principal is Unauthenticated; a platform-admin of the system tenant is allowed everywhere; a
// service identity of the system tenant holding a cross-tenant service role (lifecycle-worker) is
// allowed in every tenant but "system", and only where that role is allowed by name; another
// tenant is NotFound (TENANT_NOT_FOUND, so existence is never revealed); a principal without any of
// the allowed roles is PermissionDenied (MISSING_ROLE, naming the roles). Platform-admin counts only
// in the system tenant, and there tenant-admin and owner count for nothing. With no allowed roles
// every principal of the tenant is allowed.
func (p *Principal) Authorize(tenant string, allowed ...Role) error {
	if p == nil {
		return errs.Unauthenticated("UNAUTHENTICATED", "authentication required")
	}
	if p.IsPlatformAdmin() {
		return nil
	}
	if p.Tenant == SystemTenant && p.OnBehalfOf == "" && tenant != SystemTenant && ValidTenant(tenant) {
		for _, r := range allowed {
			if r.crossTenant() && p.HasRole(r) {
				return nil
			}
		}
	}
	if p.Tenant == "" || p.Tenant != tenant {
		return errs.NotFound("TENANT_NOT_FOUND", "tenant not found").WithMetadata("tenant", tenant)
	}
	if len(allowed) == 0 {
		return nil
	}
	for _, r := range allowed {
		if p.holds(r, tenant) {
			return nil
		}
	}
	names := make([]string, len(allowed))
	for i, r := range allowed {
		names[i] = string(r)
	}
	need := strings.Join(names, ", ")
	return errs.PermissionDenied("MISSING_ROLE", "requires one of the roles: "+need).
		WithMetadata("required_roles", strings.Join(names, ","))
}

// MayGrant reports whether the principal may give roles to a client it creates in tenant: a
// platform-admin of the system tenant may grant any role; every other caller only roles it holds and
// that count in tenant (so no one else grants platform-admin or lifecycle-worker, and in the system
// tenant no one else grants anything). It returns the first role the principal may not grant.
func (p *Principal) MayGrant(tenant string, roles []string) (Role, bool) {
	if p.IsPlatformAdmin() {
		return "", true
	}
	for _, s := range roles {
		r := Role(s)
		if p == nil || p.Tenant != tenant || tenant == SystemTenant || !p.holds(r, tenant) {
			return r, false
		}
	}
	return "", true
}

// PrincipalFromClaims builds the principal of verified claims. A token with an "act" claim holding a
// "sub" is delegated (RFC 8693): the actor is the principal and the token subject is OnBehalfOf. The
// kind is agent when the "agent" claim is set, service for tokens with roles in the system tenant, and
// human otherwise.
func PrincipalFromClaims(c *Claims) *Principal {
	if c == nil {
		return nil
	}
	p := &Principal{
		ID:       c.Subject,
		Tenant:   c.Tenant,
		ClientID: c.ClientID,
		Scopes:   strings.Fields(c.Scope),
		TokenID:  c.ID,
	}
	for _, r := range c.Roles {
		p.Roles = append(p.Roles, Role(r))
	}
	if actor, ok := c.Act["sub"].(string); ok && actor != "" {
		p.ID = actor
		p.OnBehalfOf = c.Subject
	}
	switch {
	case c.Agent != "":
		p.Kind = KindAgent
	case len(c.Roles) > 0 && c.Tenant == SystemTenant:
		p.Kind = KindService
	default:
		p.Kind = KindHuman
	}
	return p
}
