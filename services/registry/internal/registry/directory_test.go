package registry_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/testkit"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/registry/internal/registry"
)

func people(ids ...string) []*registryv1.Principal {
	out := make([]*registryv1.Principal, len(ids))
	for i, id := range ids {
		out[i] = &registryv1.Principal{Id: id, DisplayName: "Name of " + id}
	}
	return out
}

// listAll pages through a tenant's directory with pages of size.
func listAll(t *testing.T, svc *registry.Service, tenant string, status registryv1.PrincipalStatus, size int32) []*registryv1.Principal {
	t.Helper()
	var out []*registryv1.Principal
	token := ""
	for {
		page, next, err := svc.ListPrincipals(t.Context(), tenant, status, size, token)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, page...)
		if next == "" {
			return out
		}
		token = next
	}
}

func ids(ps []*registryv1.Principal) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.GetId()
	}
	return out
}

// TestSyncDirectoryRefusesHostileInputWithoutWriting: too many principals, malformed or repeated
// ids, unknown enums and bad names are refused with the field and rule named, and nothing is written.
func TestSyncDirectoryRefusesHostileInputWithoutWriting(t *testing.T) {
	e := newEnv(t)
	e.createTenant(t, "acme")
	before := testkit.StreamMessages(t, e.store.JetStream(), eventstore.StreamTenants)
	many := make([]*registryv1.Principal, registry.MaxSyncPrincipals+1)
	for i := range many {
		many[i] = &registryv1.Principal{Id: fmt.Sprintf("p%05d@corp.example", i)}
	}
	for _, tc := range []struct {
		name    string
		cmd     registry.SyncDirectory
		kind    errs.Kind
		field   string
		message string
	}{
		{"10,001 principals", registry.SyncDirectory{Principals: many}, errs.KindInvalidArgument, "principals", "at most 10000 principals"},
		{"none", registry.SyncDirectory{}, errs.KindInvalidArgument, "principals", "at least one"},
		{"empty id", registry.SyncDirectory{Principals: people("a@x", "")}, errs.KindInvalidArgument, "principals[1].id", "is required"},
		{"space in id", registry.SyncDirectory{Principals: people("bob smith")}, errs.KindInvalidArgument, "principals[0].id", "letters, digits"},
		{"path in id", registry.SyncDirectory{Principals: people("../etc")}, errs.KindInvalidArgument, "principals[0].id", "starting with a letter or digit"},
		{"wildcard id", registry.SyncDirectory{Principals: people("agentid.*.>")}, errs.KindInvalidArgument, "principals[0].id", "letters, digits"},
		{"long id", registry.SyncDirectory{Principals: people(strings.Repeat("a", 201))}, errs.KindInvalidArgument, "principals[0].id", "at most 200"},
		{"repeated id", registry.SyncDirectory{Principals: people("a@x", "b@x", "a@x")}, errs.KindInvalidArgument, "principals[2].id", "listed twice"},
		{"nil principal", registry.SyncDirectory{Principals: []*registryv1.Principal{nil}}, errs.KindInvalidArgument, "principals[0]", "is required"},
		{"unknown kind", registry.SyncDirectory{Principals: []*registryv1.Principal{{Id: "a@x", Kind: 9}}}, errs.KindInvalidArgument, "principals[0].kind", "not a known value"},
		{"unknown status", registry.SyncDirectory{Principals: []*registryv1.Principal{{Id: "a@x", Status: 9}}}, errs.KindInvalidArgument, "principals[0].status", "not a known value"},
		{"control character in name", registry.SyncDirectory{Principals: []*registryv1.Principal{{Id: "a@x", DisplayName: "A\x1b[31m"}}}, errs.KindInvalidArgument, "principals[0].display_name", "control characters"},
		{"bad request id", registry.SyncDirectory{Principals: people("a@x"), RequestID: "has space"}, errs.KindInvalidArgument, "request_id", "printable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cmd.Tenant = "acme"
			_, err := e.svc.SyncDirectory(t.Context(), tc.cmd, admin)
			wantError(t, err, tc.kind, "", tc.field)
			if !strings.Contains(err.Error(), tc.message) {
				t.Fatalf("error %q does not say %q", err, tc.message)
			}
		})
	}
	_, err := e.svc.SyncDirectory(t.Context(), registry.SyncDirectory{Tenant: "globex", Principals: people("a@x")}, admin)
	wantError(t, err, errs.KindNotFound, "TENANT_NOT_FOUND", "")
	if after := testkit.StreamMessages(t, e.store.JetStream(), eventstore.StreamTenants); after != before {
		t.Fatalf("refused syncs wrote %d events", after-before)
	}
	if e.svc.Directories().HasDirectory("acme") {
		t.Fatal("acme has a directory after refused syncs")
	}
}

// TestSyncDirectoryMergeAndReplace: a merge adds and updates what it lists; a replace departs every
// active principal it does not list; a repeat of a request id returns the first result and writes
// nothing; a sync that changes nothing writes nothing; a large sync is split into several events
// and listed completely in id order.
func TestSyncDirectoryMergeAndReplace(t *testing.T) {
	e := newEnv(t)
	e.createTenant(t, "acme")
	ctx := t.Context()
	tenantEvents := func() uint64 { return testkit.StreamMessages(t, e.store.JetStream(), eventstore.StreamTenants) }

	if err := e.svc.Directories().CheckPrincipal("acme", "agent.owner", "anyone@x"); err != nil {
		t.Fatalf("without a directory every principal passes: %v", err)
	}
	res, err := e.svc.SyncDirectory(ctx, registry.SyncDirectory{Tenant: "acme", Principals: people("alice@x", "bob@x", "team:ops"), RequestID: "sync-1"}, admin)
	if err != nil {
		t.Fatal(err)
	}
	if res.Added != 3 || res.Updated != 0 || len(res.Departed) != 0 {
		t.Fatalf("first sync: %+v", res)
	}
	p, ok := e.svc.Directories().Principal("acme", "team:ops")
	if !ok || p.GetKind() != registryv1.PrincipalKind_PRINCIPAL_KIND_TEAM || p.GetStatus() != registryv1.PrincipalStatus_PRINCIPAL_STATUS_ACTIVE {
		t.Fatalf("team:ops: %v", p)
	}
	err = e.svc.Directories().CheckPrincipal("acme", "agent.owner", "bob@x2")
	wantError(t, err, errs.KindInvalidArgument, "", "agent.owner")
	if !strings.Contains(err.Error(), `"bob@x2" is not an active principal of tenant acme's directory`) {
		t.Fatalf("unknown principal: %v", err)
	}
	if err := e.svc.Directories().CheckPrincipal("globex", "agent.owner", "bob@x2"); err != nil {
		t.Fatalf("another tenant's directory counts: %v", err)
	}

	n := tenantEvents()
	again, err := e.svc.SyncDirectory(ctx, registry.SyncDirectory{Tenant: "acme", Principals: people("alice@x", "bob@x", "team:ops"), RequestID: "sync-1"}, admin)
	if err != nil || again.Added != 3 || tenantEvents() != n {
		t.Fatalf("repeat: %+v %v (events %d → %d)", again, err, n, tenantEvents())
	}
	noop, err := e.svc.SyncDirectory(ctx, registry.SyncDirectory{Tenant: "acme", Principals: people("bob@x")}, admin)
	if err != nil || noop.Added+noop.Updated != 0 || tenantEvents() != n {
		t.Fatalf("no-op sync: %+v %v (events %d → %d)", noop, err, n, tenantEvents())
	}

	bob := &registryv1.Principal{Id: "bob@x", DisplayName: "Name of bob@x", Status: registryv1.PrincipalStatus_PRINCIPAL_STATUS_DEPARTED}
	res, err = e.svc.SyncDirectory(ctx, registry.SyncDirectory{Tenant: "acme", Principals: []*registryv1.Principal{bob, {Id: "carol@x"}}}, admin)
	if err != nil || res.Added != 1 || res.Updated != 1 || !slices.Equal(res.Departed, []string{"bob@x"}) {
		t.Fatalf("merge: %+v %v", res, err)
	}
	wantError(t, e.svc.Directories().CheckPrincipal("acme", "new_owner", "bob@x"), errs.KindInvalidArgument, "", "new_owner")

	res, err = e.svc.SyncDirectory(ctx, registry.SyncDirectory{Tenant: "acme", Principals: people("alice@x"), Replace: true, AllowMassDeparture: true}, admin)
	if err != nil || !slices.Equal(res.Departed, []string{"carol@x", "team:ops"}) {
		t.Fatalf("replace: %+v %v", res, err)
	}
	if got := ids(listAll(t, e.svc, "acme", registryv1.PrincipalStatus_PRINCIPAL_STATUS_ACTIVE, 0)); !slices.Equal(got, []string{"alice@x"}) {
		t.Fatalf("active after replace: %v", got)
	}

	big := make([]string, 2500)
	for i := range big {
		big[i] = fmt.Sprintf("p%04d@corp.example", i)
	}
	n = tenantEvents()
	res, err = e.svc.SyncDirectory(ctx, registry.SyncDirectory{Tenant: "acme", Principals: people(big...)}, admin)
	if err != nil || res.Added != 2500 {
		t.Fatalf("large sync: %+v %v", res, err)
	}
	if got := tenantEvents() - n; got != 3 {
		t.Fatalf("2,500 principals were written in %d events, want 3", got)
	}
	all := ids(listAll(t, e.svc, "acme", registryv1.PrincipalStatus_PRINCIPAL_STATUS_UNSPECIFIED, 333))
	if len(all) != 2504 || !slices.IsSorted(all) {
		t.Fatalf("listed %d principals (sorted %v), want 2504 in id order", len(all), slices.IsSorted(all))
	}

	_, _, err = e.svc.ListPrincipals(ctx, "acme", 0, 10, "zz-not-hex")
	wantError(t, err, errs.KindInvalidArgument, "", "page_token")
	_, _, err = e.svc.ListPrincipals(ctx, "acme", 0, -1, "")
	wantError(t, err, errs.KindInvalidArgument, "", "page_size")
}

// TestSyncDirectoryRebuild: a fresh service replaying the TENANTS stream rebuilds the same
// directory.
func TestSyncDirectoryRebuild(t *testing.T) {
	e := newEnv(t)
	e.createTenant(t, "acme")
	if _, err := e.svc.SyncDirectory(t.Context(), registry.SyncDirectory{Tenant: "acme", Principals: people("alice@x", "bob@x")}, admin); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.SyncDirectory(t.Context(), registry.SyncDirectory{Tenant: "acme", Principals: people("alice@x"), Replace: true, AllowMassDeparture: true}, admin); err != nil {
		t.Fatal(err)
	}
	fresh := startService(t, e.store)
	want := listAll(t, e.svc, "acme", 0, 0)
	got := listAll(t, fresh, "acme", 0, 0)
	if len(got) != len(want) {
		t.Fatalf("rebuilt %d principals, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i].GetId() != want[i].GetId() || got[i].GetStatus() != want[i].GetStatus() || !got[i].GetUpdateTime().AsTime().Equal(want[i].GetUpdateTime().AsTime()) {
			t.Fatalf("rebuilt %v, want %v", got[i], want[i])
		}
	}
}
