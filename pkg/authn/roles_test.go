package authn_test

import (
	"testing"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
)

func TestAuthorizeServiceAndSystemRoles(t *testing.T) {
	worker := &authn.Principal{ID: "lifecycle-worker", Kind: authn.KindService, Tenant: authn.SystemTenant, Roles: []authn.Role{authn.RoleLifecycleWorker}}
	delegatedWorker := &authn.Principal{ID: "ops-agent", Tenant: authn.SystemTenant, Roles: []authn.Role{authn.RoleLifecycleWorker}, OnBehalfOf: "lifecycle-worker"}
	acmeWorker := &authn.Principal{ID: "mallory", Tenant: "acme", Roles: []authn.Role{authn.RoleLifecycleWorker}}
	acmePlatformAdmin := &authn.Principal{ID: "mallory", Tenant: "acme", Roles: []authn.Role{authn.RolePlatformAdmin}}
	systemTenantAdmin := &authn.Principal{ID: "sam", Tenant: authn.SystemTenant, Roles: []authn.Role{authn.RoleTenantAdmin}}
	systemOwner := &authn.Principal{ID: "olga", Tenant: authn.SystemTenant, Roles: []authn.Role{authn.RoleOwner}}
	systemAuditor := &authn.Principal{ID: "audrey", Tenant: authn.SystemTenant, Roles: []authn.Role{authn.RoleAuditor}}
	registry := &authn.Principal{ID: "registry-service", Kind: authn.KindService, Tenant: authn.SystemTenant, Roles: []authn.Role{authn.RoleRegistryService}}
	acmeRegistry := &authn.Principal{ID: "mallory", Tenant: "acme", Roles: []authn.Role{authn.RoleRegistryService}}

	tests := []struct {
		name       string
		p          *authn.Principal
		tenant     string
		allowed    []authn.Role
		wantKind   errs.Kind
		wantReason string // "" means allowed
	}{
		{"lifecycle worker where its role is allowed", worker, "acme", []authn.Role{authn.RolePlatformAdmin, authn.RoleLifecycleWorker}, 0, ""},
		{"lifecycle worker where its role is not allowed", worker, "acme", []authn.Role{authn.RolePlatformAdmin, authn.RoleTenantAdmin}, errs.KindNotFound, "TENANT_NOT_FOUND"},
		{"lifecycle worker where any role of the tenant is allowed", worker, "acme", nil, errs.KindNotFound, "TENANT_NOT_FOUND"},
		{"lifecycle worker in the system tenant", worker, authn.SystemTenant, []authn.Role{authn.RoleLifecycleWorker}, errs.KindPermissionDenied, "MISSING_ROLE"},
		{"delegated lifecycle worker", delegatedWorker, "acme", []authn.Role{authn.RoleLifecycleWorker}, errs.KindNotFound, "TENANT_NOT_FOUND"},
		{"lifecycle-worker role outside system", acmeWorker, "acme", []authn.Role{authn.RoleLifecycleWorker}, errs.KindPermissionDenied, "MISSING_ROLE"},
		{"platform-admin role outside system", acmePlatformAdmin, "acme", []authn.Role{authn.RolePlatformAdmin}, errs.KindPermissionDenied, "MISSING_ROLE"},
		{"tenant-admin of system administers nothing there", systemTenantAdmin, authn.SystemTenant, []authn.Role{authn.RoleTenantAdmin}, errs.KindPermissionDenied, "MISSING_ROLE"},
		{"owner of system manages nothing there", systemOwner, authn.SystemTenant, []authn.Role{authn.RoleOwner}, errs.KindPermissionDenied, "MISSING_ROLE"},
		{"tenant-admin of system elsewhere", systemTenantAdmin, "acme", []authn.Role{authn.RoleTenantAdmin}, errs.KindNotFound, "TENANT_NOT_FOUND"},
		{"auditor of system reads there", systemAuditor, authn.SystemTenant, []authn.Role{authn.RoleAuditor}, 0, ""},
		{"registry service where its role is allowed", registry, "acme", []authn.Role{authn.RoleTenantAdmin, authn.RoleRegistryService}, 0, ""},
		{"registry service where only the lifecycle worker is allowed", registry, "acme", []authn.Role{authn.RolePlatformAdmin, authn.RoleLifecycleWorker}, errs.KindNotFound, "TENANT_NOT_FOUND"},
		{"registry service where any role of the tenant is allowed", registry, "acme", nil, errs.KindNotFound, "TENANT_NOT_FOUND"},
		{"registry service in the system tenant", registry, authn.SystemTenant, []authn.Role{authn.RoleRegistryService}, errs.KindPermissionDenied, "MISSING_ROLE"},
		{"registry-service role outside system", acmeRegistry, "acme", []authn.Role{authn.RoleRegistryService}, errs.KindPermissionDenied, "MISSING_ROLE"},
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
		})
	}
}

func TestIsLifecycleWorker(t *testing.T) {
	tests := []struct {
		name string
		p    *authn.Principal
		want bool
	}{
		{"worker of system", &authn.Principal{Tenant: authn.SystemTenant, Roles: []authn.Role{authn.RoleLifecycleWorker}}, true},
		{"role outside system", &authn.Principal{Tenant: "acme", Roles: []authn.Role{authn.RoleLifecycleWorker}}, false},
		{"delegated", &authn.Principal{Tenant: authn.SystemTenant, Roles: []authn.Role{authn.RoleLifecycleWorker}, OnBehalfOf: "x"}, false},
		{"platform-admin", &authn.Principal{Tenant: authn.SystemTenant, Roles: []authn.Role{authn.RolePlatformAdmin}}, false},
		{"nil", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.p.IsLifecycleWorker(); got != tt.want {
				t.Fatalf("IsLifecycleWorker = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestMayGrant(t *testing.T) {
	platformAdmin := &authn.Principal{Tenant: authn.SystemTenant, Roles: []authn.Role{authn.RolePlatformAdmin}}
	acmeAdmin := &authn.Principal{Tenant: "acme", Roles: []authn.Role{authn.RoleTenantAdmin, authn.RoleApprover}}
	systemAdmin := &authn.Principal{Tenant: authn.SystemTenant, Roles: []authn.Role{authn.RoleTenantAdmin}}
	acmePlatformAdmin := &authn.Principal{Tenant: "acme", Roles: []authn.Role{authn.RoleTenantAdmin, authn.RolePlatformAdmin}}

	tests := []struct {
		name     string
		p        *authn.Principal
		tenant   string
		roles    []string
		wantOK   bool
		wantRole authn.Role
	}{
		{"platform-admin grants anything", platformAdmin, "acme", []string{"tenant-admin", "auditor"}, true, ""},
		{"platform-admin grants platform-admin in system", platformAdmin, authn.SystemTenant, []string{"platform-admin"}, true, ""},
		{"roles the caller holds", acmeAdmin, "acme", []string{"approver", "tenant-admin"}, true, ""},
		{"a role the caller lacks", acmeAdmin, "acme", []string{"approver", "auditor"}, false, authn.RoleAuditor},
		{"another tenant", acmeAdmin, "globex", []string{"approver"}, false, authn.RoleApprover},
		{"tenant-admin of system", systemAdmin, authn.SystemTenant, []string{"platform-admin"}, false, authn.RolePlatformAdmin},
		{"tenant-admin of system grants even its own role", systemAdmin, authn.SystemTenant, []string{"tenant-admin"}, false, authn.RoleTenantAdmin},
		{"platform-admin held outside system", acmePlatformAdmin, "acme", []string{"platform-admin"}, false, authn.RolePlatformAdmin},
		{"nil principal", nil, "acme", []string{"auditor"}, false, authn.RoleAuditor},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			role, ok := tt.p.MayGrant(tt.tenant, tt.roles)
			if ok != tt.wantOK || role != tt.wantRole {
				t.Fatalf("MayGrant = %q, %v; want %q, %v", role, ok, tt.wantRole, tt.wantOK)
			}
		})
	}
}
