package registry_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/testkit"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/registry/internal/registry"
)

// TestSyncDirectoryRefusesMassDeparture: a replace that would depart more than 10% of the ACTIVE
// principals, or more than 50, is refused with the count named and nothing written, unless
// allowed; principals the request itself lists as DEPARTED do not count.
func TestSyncDirectoryRefusesMassDeparture(t *testing.T) {
	e := newEnv(t)
	e.createTenant(t, "acme")
	ctx := t.Context()
	staff := make([]string, 600)
	for i := range staff {
		staff[i] = fmt.Sprintf("p%04d@corp.example", i)
	}
	if _, err := e.svc.SyncDirectory(ctx, registry.SyncDirectory{Tenant: "acme", Principals: people(staff...)}, admin); err != nil {
		t.Fatal(err)
	}
	active := func() int {
		return len(listAll(t, e.svc, "acme", registryv1.PrincipalStatus_PRINCIPAL_STATUS_ACTIVE, 0))
	}
	tenantEvents := func() uint64 { return testkit.StreamMessages(t, e.store.JetStream(), eventstore.StreamTenants) }

	for _, tc := range []struct {
		name string
		keep int
		want string
	}{
		{"empty file", 0, "would depart 600 of the 600 ACTIVE principals of tenant acme"},
		{"truncated file", 300, "would depart 300 of the 600 ACTIVE principals"},
		{"51 principals (less than 10%)", 549, "would depart 51 of the 600 ACTIVE principals"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := tenantEvents()
			_, err := e.svc.SyncDirectory(ctx, registry.SyncDirectory{Tenant: "acme", Principals: people(staff[:tc.keep]...), Replace: true}, admin)
			wantError(t, err, errs.KindFailedPrecondition, registry.ReasonMassDeparture, "")
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "allow_mass_departure") {
				t.Fatalf("error %q does not say %q and how to allow it", err, tc.want)
			}
			if tenantEvents() != n || active() != 600 {
				t.Fatalf("a refused replace wrote %d events; %d ACTIVE", tenantEvents()-n, active())
			}
		})
	}

	// 50 departures are 8.3%: allowed.
	res, err := e.svc.SyncDirectory(ctx, registry.SyncDirectory{Tenant: "acme", Principals: people(staff[:550]...), Replace: true}, admin)
	if err != nil || len(res.Departed) != 50 {
		t.Fatalf("replace departing 50 of 600: %+v %v", res, err)
	}
	// Listed as DEPARTED: meant, not counted.
	var listed []*registryv1.Principal
	for i, p := range people(staff[:550]...) {
		if i < 100 {
			p.Status = registryv1.PrincipalStatus_PRINCIPAL_STATUS_DEPARTED
		}
		listed = append(listed, p)
	}
	if res, err := e.svc.SyncDirectory(ctx, registry.SyncDirectory{Tenant: "acme", Principals: listed, Replace: true}, admin); err != nil || len(res.Departed) != 100 {
		t.Fatalf("replace listing 100 principals as DEPARTED: %+v %v", res, err)
	}
	// 11% of 450 is 50 principals: refused, then allowed.
	_, err = e.svc.SyncDirectory(ctx, registry.SyncDirectory{Tenant: "acme", Principals: listed[:500], Replace: true}, admin)
	wantError(t, err, errs.KindFailedPrecondition, registry.ReasonMassDeparture, "")
	if !strings.Contains(err.Error(), "would depart 50 of the 450 ACTIVE principals") {
		t.Fatalf("error %q", err)
	}
	res, err = e.svc.SyncDirectory(ctx, registry.SyncDirectory{Tenant: "acme", Principals: listed[:500], Replace: true, AllowMassDeparture: true}, admin)
	if err != nil || len(res.Departed) != 50 || active() != 400 {
		t.Fatalf("allowed mass departure: %+v %v, %d ACTIVE", res, err, active())
	}
	res, err = e.svc.SyncDirectory(ctx, registry.SyncDirectory{Tenant: "acme", Replace: true, AllowMassDeparture: true}, admin)
	if err != nil || len(res.Departed) != 400 || active() != 0 {
		t.Fatalf("allowed empty replace: %d departed, %v, %d ACTIVE", len(res.Departed), err, active())
	}
}
