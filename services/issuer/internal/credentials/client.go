// Package credentials is the issuer's write and read model of OAuth clients and tenant signing keys:
// commands that validate and append events to the CREDENTIALS stream, and the in-memory projection
// the token endpoint reads.
package credentials

import (
	"crypto"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
)

// Event types of the CREDENTIALS stream written by the issuer.
const (
	EventClientCreated     = "client.created"
	EventClientDisabled    = "client.disabled"
	EventClientTombstoned  = "client.tombstoned"
	EventSigningKeyCreated = "signingkey.created"
)

// Limits on client registrations.
const (
	// DefaultTokenTTL is the access token lifetime of a client that does not set one.
	DefaultTokenTTL = 600 * time.Second
	// MaxTokenTTL is the longest access token lifetime a client may ask for.
	MaxTokenTTL = authn.MaxTokenLifetime
	// MaxRoleTokenTTL is the longest access token lifetime of a client with platform roles.
	MaxRoleTokenTTL = authn.MaxRoleTokenLifetime

	maxClientIDLen = 128
	maxClientKeys  = 10
	maxScopes      = 64
	maxScopeLen    = 128
	maxReasonLen   = 1024

	// MaxResources is how many RFC 8707 resources a client may register.
	MaxResources = 32
	// MaxResourceLen is the longest resource URI a client may register or ask for.
	MaxResourceLen = 512
)

var (
	clientIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$`)
	environments    = []string{"dev", "test", "staging", "prod"}
	knownRoles      = []authn.Role{
		authn.RolePlatformAdmin, authn.RoleTenantAdmin, authn.RoleOwner,
		authn.RoleApprover, authn.RoleAuditor, authn.RoleAnalyst, authn.RoleResourceServer, authn.RoleSubscriber,
		authn.RoleLifecycleWorker,
		authn.RoleRegistryService,
		authn.RoleSecurityApprover,
		authn.RoleComplianceApprover,
		authn.RoleIntrospector,
	}
)

// Client is the projection's view of one OAuth client. Values are immutable once published: a change
// replaces the whole value.
type Client struct {
	// Proto is the client as the API returns it; never modify it.
	Proto *issuerv1.Client
	// Keys are the client's public keys for private_key_jwt, by kid.
	Keys map[string]jose.JSONWebKey
	// TokenTTL is the lifetime of the client's access tokens.
	TokenTTL time.Duration
	// RevokeTime is when the client was disabled; tokens issued at or before it are inactive.
	RevokeTime time.Time
}

// ID is the client_id.
func (c *Client) ID() string { return c.Proto.GetClientId() }

// Tenant is the client's tenant.
func (c *Client) Tenant() string { return c.Proto.GetTenant() }

// Tombstone reports whether the client is a tombstone: disabled before it was ever created.
func (c *Client) Tombstone() bool { return c.Proto.GetTombstone() }

// Active reports whether the client may authenticate.
func (c *Client) Active() bool { return c.Proto.GetState() == issuerv1.ClientState_CLIENT_STATE_ACTIVE }

// Scopes are the scopes the client may be granted.
func (c *Client) Scopes() []string { return c.Proto.GetScopes() }

// Resources are the RFC 8707 resources the client may ask tokens for.
func (c *Client) Resources() []string { return c.Proto.GetResources() }

// ValidResource reports whether r is an acceptable RFC 8707 resource indicator: an absolute URI
// without a fragment, printable ASCII, at most MaxResourceLen characters.
func ValidResource(r string) bool {
	if r == "" || len(r) > MaxResourceLen || strings.Contains(r, "#") {
		return false
	}
	for i := 0; i < len(r); i++ {
		if r[i] <= ' ' || r[i] > '~' {
			return false
		}
	}
	u, err := url.Parse(r)
	return err == nil && u.IsAbs()
}

// ClientName is the resource name of a client: tenants/{tenant}/clients/{client}.
func ClientName(tenant, clientID string) string {
	return "tenants/" + tenant + "/clients/" + clientID
}

// TenantName is the resource name of a tenant: tenants/{tenant}.
func TenantName(tenant string) string { return "tenants/" + tenant }

// ValidClientID reports whether id is an acceptable client_id: 1-128 characters of letters, digits,
// '-' and '_', starting with a letter or digit.
func ValidClientID(id string) bool { return clientIDPattern.MatchString(id) }

// ParseTenantName returns the tenant of "tenants/{tenant}".
func ParseTenantName(field, name string) (string, error) {
	tenant, ok := strings.CutPrefix(name, "tenants/")
	if !ok || !authn.ValidTenant(tenant) {
		return "", errs.InvalidArgument(field, "must be tenants/{tenant} with a valid tenant id")
	}
	return tenant, nil
}

// ParseClientName returns the tenant and client id of "tenants/{tenant}/clients/{client}".
func ParseClientName(field, name string) (tenant, clientID string, err error) {
	parts := strings.Split(name, "/")
	if len(parts) != 4 || parts[0] != "tenants" || parts[2] != "clients" || !authn.ValidTenant(parts[1]) || !ValidClientID(parts[3]) {
		return "", "", errs.InvalidArgument(field, "must be tenants/{tenant}/clients/{client} with a valid tenant and client id")
	}
	return parts[1], parts[3], nil
}

// NormalizeClient validates a client to register in tenant and returns the stored form: name and
// tenant set, output-only fields cleared, state ACTIVE, token_ttl_seconds defaulted to defaultTTL (at
// most MaxRoleTokenTTL for a client with roles, which may not ask for more), scopes and roles
// deduplicated in order. Errors are InvalidArgument naming the field ("client.scopes").
func NormalizeClient(tenant string, in *issuerv1.Client, defaultTTL time.Duration, createTime time.Time) (*issuerv1.Client, map[string]jose.JSONWebKey, error) {
	if in == nil {
		return nil, nil, errs.InvalidArgument("client", "is required")
	}
	f := func(name string) string { return "client." + name }
	if !ValidClientID(in.GetClientId()) {
		return nil, nil, errs.InvalidArgument(f("client_id"), "must be 1-128 letters, digits, '-' or '_', starting with a letter or digit")
	}
	if in.GetTenant() != "" && in.GetTenant() != tenant {
		return nil, nil, errs.InvalidArgument(f("tenant"), "must be empty or the tenant of the parent")
	}
	if in.GetName() != "" && in.GetName() != ClientName(tenant, in.GetClientId()) {
		return nil, nil, errs.InvalidArgument(f("name"), "must be empty or tenants/{tenant}/clients/{client_id}")
	}
	if a := in.GetAgent(); a != "" {
		parts := strings.Split(a, "/")
		if len(parts) != 4 || parts[0] != "tenants" || parts[1] != tenant || parts[2] != "agents" || !ValidClientID(parts[3]) {
			return nil, nil, errs.InvalidArgument(f("agent"), "must be tenants/{tenant}/agents/{agent} in the client's tenant")
		}
	}
	keys, err := ParsePublicJWKS(in.GetPublicJwks())
	if err != nil {
		return nil, nil, errs.InvalidArgument(f("public_jwks"), err.Error())
	}
	scopes, err := normalizeScopes(in.GetScopes())
	if err != nil {
		return nil, nil, errs.InvalidArgument(f("scopes"), err.Error())
	}
	resources, err := normalizeResources(in.GetResources())
	if err != nil {
		return nil, nil, errs.InvalidArgument(f("resources"), err.Error())
	}
	roles, err := normalizeRoles(tenant, in.GetRoles())
	if err != nil {
		return nil, nil, errs.InvalidArgument(f("roles"), err.Error())
	}
	if in.GetAgent() != "" && len(roles) > 0 {
		return nil, nil, errs.InvalidArgument(f("roles"), "agent clients carry no platform roles")
	}
	env := in.GetEnvironment()
	switch {
	case env != "" && !slices.Contains(environments, env):
		return nil, nil, errs.InvalidArgument(f("environment"), "must be one of dev, test, staging, prod")
	case env == "" && in.GetAgent() != "":
		return nil, nil, errs.InvalidArgument(f("environment"), "is required for agent clients (dev, test, staging, prod)")
	}
	ttl := in.GetTokenTtlSeconds()
	switch {
	case ttl < 0 || time.Duration(ttl)*time.Second > MaxTokenTTL:
		return nil, nil, errs.InvalidArgument(f("token_ttl_seconds"), fmt.Sprintf("must be between 0 (default) and %d", int(MaxTokenTTL.Seconds())))
	case len(roles) > 0 && time.Duration(ttl)*time.Second > MaxRoleTokenTTL:
		return nil, nil, errs.InvalidArgument(f("token_ttl_seconds"), fmt.Sprintf("must be between 0 (default) and %d for a client with roles: role-bearing tokens live at most %s", int(MaxRoleTokenTTL.Seconds()), MaxRoleTokenTTL))
	case ttl == 0 && defaultTTL > 0:
		ttl = int32(defaultTTL / time.Second)
	case ttl == 0:
		ttl = int32(DefaultTokenTTL / time.Second)
	}
	if len(roles) > 0 {
		ttl = min(ttl, int32(MaxRoleTokenTTL/time.Second))
	}
	out := &issuerv1.Client{
		Name:            ClientName(tenant, in.GetClientId()),
		ClientId:        in.GetClientId(),
		Tenant:          tenant,
		Agent:           in.GetAgent(),
		PublicJwks:      in.GetPublicJwks(),
		Scopes:          scopes,
		Roles:           roles,
		Environment:     env,
		TokenTtlSeconds: ttl,
		State:           issuerv1.ClientState_CLIENT_STATE_ACTIVE,
		CreateTime:      timestamppb.New(createTime),
		DpopBound:       in.GetDpopBound(),
		Resources:       resources,
	}
	return out, keys, nil
}

// ParsePublicJWKS parses a client's JWK Set (authn.ParsePublicJWKS with at most 10 keys), by kid.
func ParsePublicJWKS(s string) (map[string]jose.JSONWebKey, error) {
	list, err := authn.ParsePublicJWKS(s, maxClientKeys)
	if err != nil {
		return nil, err
	}
	keys := make(map[string]jose.JSONWebKey, len(list))
	for _, k := range list {
		keys[k.KeyID] = k
	}
	return keys, nil
}

// ValidScopeToken reports whether s is an RFC 6749 scope-token (1*( %x21 / %x23-5B / %x5D-7E )) of
// at most 128 characters.
func ValidScopeToken(s string) bool {
	if s == "" || len(s) > maxScopeLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x21 || c == 0x22 || c == 0x5c || c > 0x7e {
			return false
		}
	}
	return true
}

func normalizeScopes(in []string) ([]string, error) {
	if len(in) > maxScopes {
		return nil, fmt.Errorf("at most %d scopes", maxScopes)
	}
	out := make([]string, 0, len(in))
	for _, s := range in {
		if !ValidScopeToken(s) {
			return nil, fmt.Errorf("%q is not a valid scope (printable ASCII without spaces, quotes or backslashes, at most %d characters)", s, maxScopeLen)
		}
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out, nil
}

func normalizeResources(in []string) ([]string, error) {
	if len(in) > MaxResources {
		return nil, fmt.Errorf("at most %d resources", MaxResources)
	}
	var out []string
	for _, r := range in {
		if !ValidResource(r) {
			return nil, fmt.Errorf("%q is not an absolute URI without a fragment of at most %d printable ASCII characters", r, MaxResourceLen)
		}
		if !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	return out, nil
}

func normalizeRoles(tenant string, in []string) ([]string, error) {
	out := make([]string, 0, len(in))
	for _, r := range in {
		if !slices.Contains(knownRoles, authn.Role(r)) {
			return nil, fmt.Errorf("%q is not a platform role", r)
		}
		role := authn.Role(r)
		switch {
		case role.SystemOnly() && tenant != authn.SystemTenant:
			return nil, fmt.Errorf("%s exists only in tenant %q", r, authn.SystemTenant)
		case tenant == authn.SystemTenant && (role == authn.RoleTenantAdmin || role == authn.RoleOwner):
			return nil, fmt.Errorf("%s grants nothing in tenant %q: platform-admins administer it", r, authn.SystemTenant)
		}
		if !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	return out, nil
}

// sameRegistration reports whether two stored clients register the same thing (ignoring name, state
// and times): used to make EnsureClient idempotent.
func sameRegistration(a, b *issuerv1.Client) bool {
	ka, err1 := ParsePublicJWKS(a.GetPublicJwks())
	kb, err2 := ParsePublicJWKS(b.GetPublicJwks())
	if err1 != nil || err2 != nil || len(ka) != len(kb) {
		return false
	}
	for kid, k := range ka {
		other, ok := kb[kid]
		if !ok {
			return false
		}
		t1, e1 := k.Thumbprint(crypto.SHA256)
		t2, e2 := other.Thumbprint(crypto.SHA256)
		if e1 != nil || e2 != nil || string(t1) != string(t2) {
			return false
		}
	}
	sortedEq := func(x, y []string) bool {
		x, y = slices.Sorted(slices.Values(x)), slices.Sorted(slices.Values(y))
		return slices.Equal(x, y)
	}
	return a.GetAgent() == b.GetAgent() && a.GetEnvironment() == b.GetEnvironment() &&
		a.GetTokenTtlSeconds() == b.GetTokenTtlSeconds() &&
		sortedEq(a.GetScopes(), b.GetScopes()) && sortedEq(a.GetRoles(), b.GetRoles()) &&
		sortedEq(a.GetResources(), b.GetResources())
}

// cloneClient returns a deep copy of c.
func cloneClient(c *issuerv1.Client) *issuerv1.Client {
	return proto.Clone(c).(*issuerv1.Client)
}
