package authn_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
)

func TestPrincipalAuthorize(t *testing.T) {
	platformAdmin := &authn.Principal{ID: "bootstrap-admin", Tenant: authn.SystemTenant, Roles: []authn.Role{authn.RolePlatformAdmin}}
	acmeAdmin := &authn.Principal{ID: "alice", Tenant: "acme", Roles: []authn.Role{authn.RoleTenantAdmin}}
	acmeAuditor := &authn.Principal{ID: "bob", Tenant: "acme", Roles: []authn.Role{authn.RoleAuditor}}
	// platform-admin outside the system tenant is just a role in its own tenant.
	acmePlatformAdmin := &authn.Principal{ID: "mallory", Tenant: "acme", Roles: []authn.Role{authn.RolePlatformAdmin}}

	tests := []struct {
		name       string
		p          *authn.Principal
		tenant     string
		allowed    []authn.Role
		wantKind   errs.Kind
		wantReason string // "" means allowed
	}{
		{"platform admin of system in any tenant", platformAdmin, "acme", []authn.Role{authn.RoleTenantAdmin}, 0, ""},
		{"platform admin of system in system", platformAdmin, authn.SystemTenant, []authn.Role{authn.RolePlatformAdmin}, 0, ""},
		{"tenant admin in own tenant", acmeAdmin, "acme", []authn.Role{authn.RoleTenantAdmin, authn.RoleOwner}, 0, ""},
		{"any role in own tenant when none required", acmeAuditor, "acme", nil, 0, ""},
		{"tenant admin in other tenant", acmeAdmin, "globex", []authn.Role{authn.RoleTenantAdmin}, errs.KindNotFound, "TENANT_NOT_FOUND"},
		{"platform admin of another tenant elsewhere", acmePlatformAdmin, "globex", []authn.Role{authn.RolePlatformAdmin}, errs.KindNotFound, "TENANT_NOT_FOUND"},
		{"missing role", acmeAuditor, "acme", []authn.Role{authn.RoleTenantAdmin, authn.RoleOwner}, errs.KindPermissionDenied, "MISSING_ROLE"},
		{"nil principal", nil, "acme", []authn.Role{authn.RoleAuditor}, errs.KindUnauthenticated, "UNAUTHENTICATED"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.p.Authorize(tt.tenant, tt.allowed...)
			if tt.wantReason == "" {
				if err != nil {
					t.Fatalf("Authorize: %v", err)
				}
				return
			}
			e := errs.FromStatus(err)
			if e == nil || e.Kind != tt.wantKind || e.Reason != tt.wantReason {
				t.Fatalf("got %v, want %v/%s", err, tt.wantKind, tt.wantReason)
			}
			if tt.wantKind == errs.KindPermissionDenied {
				for _, r := range tt.allowed {
					if !strings.Contains(e.Message, string(r)) {
						t.Errorf("message %q does not name role %s", e.Message, r)
					}
				}
			}
		})
	}
}

func TestPrincipalFromClaims(t *testing.T) {
	tests := []struct {
		name       string
		claims     authn.Claims
		wantID     string
		wantKind   string
		wantOnBeh  string
		wantScopes []string
	}{
		{"service identity", authn.Claims{Subject: "svc-lifecycle", Tenant: "system", Roles: []string{"platform-admin"}, Scope: "a  b"},
			"svc-lifecycle", authn.KindService, "", []string{"a", "b"}},
		{"agent", authn.Claims{Subject: "agt-1", Tenant: "acme", Agent: "tenants/acme/agents/a1", Scope: "tools:call"},
			"agt-1", authn.KindAgent, "", []string{"tools:call"}},
		{"human operator", authn.Claims{Subject: "alice", Tenant: "acme", Roles: []string{"tenant-admin"}},
			"alice", authn.KindHuman, "", nil},
		{"delegated agent acting for a user", authn.Claims{Subject: "alice", Tenant: "acme", Agent: "tenants/acme/agents/a1", Act: map[string]any{"sub": "agt-1"}},
			"agt-1", authn.KindAgent, "alice", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := authn.PrincipalFromClaims(&tt.claims)
			if p.ID != tt.wantID || p.Kind != tt.wantKind || p.OnBehalfOf != tt.wantOnBeh || !slices.Equal(p.Scopes, tt.wantScopes) {
				t.Fatalf("got %+v", p)
			}
			if p.Tenant != tt.claims.Tenant || len(p.Roles) != len(tt.claims.Roles) {
				t.Fatalf("tenant/roles not carried: %+v", p)
			}
		})
	}
}

func TestPrincipalContext(t *testing.T) {
	if _, ok := authn.PrincipalFrom(context.Background()); ok {
		t.Fatal("empty context has a principal")
	}
	p := &authn.Principal{ID: "alice", Tenant: "acme", Roles: []authn.Role{authn.RoleOwner}}
	got, ok := authn.PrincipalFrom(authn.WithPrincipal(context.Background(), p))
	if !ok || got != p {
		t.Fatal("principal not carried by context")
	}
	if !got.HasRole(authn.RoleOwner) || got.HasRole(authn.RoleTenantAdmin) {
		t.Fatal("HasRole")
	}
	if _, ok := authn.PrincipalFrom(authn.WithPrincipal(context.Background(), nil)); ok {
		t.Fatal("nil principal reported as present")
	}
}
