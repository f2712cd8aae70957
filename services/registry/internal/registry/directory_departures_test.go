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

// TestSyncDirectoryRefusesMassDeparture: a sync that would depart more than 10% of the ACTIVE
// principals, or more than 50, is refused with the count named and nothing written, unless
// allowed; principals a replace leaves out and principals a replace or a merge lists as DEPARTED
// count alike.
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
	// Listed as DEPARTED counts too, in a replace and in a merge: 100 of the 550 ACTIVE is 18%.
	departed := func(ids ...string) []*registryv1.Principal {
		out := people(ids...)
		for _, p := range out {
			p.Status = registryv1.PrincipalStatus_PRINCIPAL_STATUS_DEPARTED
		}
		return out
	}
	listed := append(departed(staff[:100]...), people(staff[100:550]...)...)
	for _, replace := range []bool{true, false} {
		n := tenantEvents()
		_, err := e.svc.SyncDirectory(ctx, registry.SyncDirectory{Tenant: "acme", Principals: listed, Replace: replace}, admin)
		wantError(t, err, errs.KindFailedPrecondition, registry.ReasonMassDeparture, "")
		if !strings.Contains(err.Error(), "would depart 100 of the 550 ACTIVE principals") {
			t.Fatalf("replace %v listing 100 principals as DEPARTED: error %q", replace, err)
		}
		if tenantEvents() != n || active() != 550 {
			t.Fatalf("a refused sync wrote %d events; %d ACTIVE", tenantEvents()-n, active())
		}
	}
	// A merge listing 50 of the 550 as DEPARTED (9%): allowed.
	if res, err := e.svc.SyncDirectory(ctx, registry.SyncDirectory{Tenant: "acme", Principals: departed(staff[:50]...)}, admin); err != nil || len(res.Departed) != 50 {
		t.Fatalf("merge departing 50 of 550: %+v %v", res, err)
	}
	// 51 listed as DEPARTED by a merge (more than 50, 10.2% of 500): refused, then allowed.
	_, err = e.svc.SyncDirectory(ctx, registry.SyncDirectory{Tenant: "acme", Principals: departed(staff[50:101]...)}, admin)
	wantError(t, err, errs.KindFailedPrecondition, registry.ReasonMassDeparture, "")
	if !strings.Contains(err.Error(), "would depart 51 of the 500 ACTIVE principals") {
		t.Fatalf("error %q", err)
	}
	res, err = e.svc.SyncDirectory(ctx, registry.SyncDirectory{Tenant: "acme", Principals: departed(staff[50:101]...), AllowMassDeparture: true}, admin)
	if err != nil || len(res.Departed) != 51 || active() != 449 {
		t.Fatalf("allowed mass departure: %+v %v, %d ACTIVE", res, err, active())
	}
	res, err = e.svc.SyncDirectory(ctx, registry.SyncDirectory{Tenant: "acme", Replace: true, AllowMassDeparture: true}, admin)
	if err != nil || len(res.Departed) != 449 || active() != 0 {
		t.Fatalf("allowed empty replace: %d departed, %v, %d ACTIVE", len(res.Departed), err, active())
	}
}

// TestSyncDirectoryDepartsOneLeaverOfASmallDirectory: one departure is never a mass departure, so a
// directory of three principals can depart one (by a merge listing it as DEPARTED); two of the two
// left ACTIVE, listed as DEPARTED by a merge, are refused.
func TestSyncDirectoryDepartsOneLeaverOfASmallDirectory(t *testing.T) {
	e := newEnv(t)
	e.createTenant(t, "tiny")
	ctx := t.Context()
	if _, err := e.svc.SyncDirectory(ctx, registry.SyncDirectory{Tenant: "tiny", Principals: people("a@x", "b@x", "c@x")}, admin); err != nil {
		t.Fatal(err)
	}
	gone := func(ids ...string) []*registryv1.Principal {
		out := people(ids...)
		for _, p := range out {
			p.Status = registryv1.PrincipalStatus_PRINCIPAL_STATUS_DEPARTED
		}
		return out
	}
	if res, err := e.svc.SyncDirectory(ctx, registry.SyncDirectory{Tenant: "tiny", Principals: gone("c@x")}, admin); err != nil || len(res.Departed) != 1 {
		t.Fatalf("one leaver: %+v %v", res, err)
	}
	_, err := e.svc.SyncDirectory(ctx, registry.SyncDirectory{Tenant: "tiny", Principals: gone("a@x", "b@x")}, admin)
	wantError(t, err, errs.KindFailedPrecondition, registry.ReasonMassDeparture, "")
	if !strings.Contains(err.Error(), "would depart 2 of the 2 ACTIVE principals") {
		t.Fatalf("error %q", err)
	}
}
