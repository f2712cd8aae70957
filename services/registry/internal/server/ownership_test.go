package server_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/agentid/agentid/pkg/testkit"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// TestOwnershipAuthorization: who may transfer agents, sync a directory and list it; another
// tenant's caller is answered NotFound, and nothing is written for a refused call.
func TestOwnershipAuthorization(t *testing.T) {
	h := newHarness(t)
	h.createTenant(t, "acme")
	h.createTenant(t, "globex")
	a := h.register(t, acmeOwner, "own-1")
	ctx := t.Context()
	transfer := func(owner string) func(context.Context) error {
		return func(ctx context.Context) error {
			_, err := h.client.TransferAgentOwnership(ctx, &registryv1.TransferAgentOwnershipRequest{Name: a.GetName(), NewOwner: owner, Reason: "reorg"})
			return err
		}
	}
	sync := func(ctx context.Context) error {
		_, err := h.client.SyncDirectory(ctx, &registryv1.SyncDirectoryRequest{Parent: "tenants/acme", Principals: []*registryv1.Principal{{Id: "team:support"}}})
		return err
	}
	list := func(ctx context.Context) error {
		_, err := h.client.ListPrincipals(ctx, &registryv1.ListPrincipalsRequest{Parent: "tenants/acme"})
		return err
	}
	for _, tc := range []struct {
		name  string
		token string
		call  func(context.Context) error
		want  codes.Code
	}{
		{"another tenant's admin transfers", globexAdmin, transfer("team:payments"), codes.NotFound},
		{"another owner transfers", acmeOwner2, transfer("team:payments"), codes.PermissionDenied},
		{"an auditor transfers", acmeAuditor, transfer("team:payments"), codes.PermissionDenied},
		{"the lifecycle worker transfers", worker, transfer("team:payments"), codes.NotFound},
		{"another tenant's admin syncs", globexAdmin, sync, codes.NotFound},
		{"an owner syncs", acmeOwner, sync, codes.PermissionDenied},
		{"an auditor syncs", acmeAuditor, sync, codes.PermissionDenied},
		{"another tenant's admin lists", globexAdmin, list, codes.NotFound},
		{"without a token", noToken, list, codes.Unauthenticated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantCode(t, tc.call(testkit.WithBearer(ctx, tc.token)), tc.want)
		})
	}
	got, err := h.client.GetAgent(testkit.WithBearer(ctx, acmeAdmin), &registryv1.GetAgentRequest{Name: a.GetName()})
	if err != nil || got.GetAgent().GetEtag() != a.GetEtag() || got.GetAgent().GetOwner() != "team:support" {
		t.Fatalf("refused transfers changed the agent: %v %v", got, err)
	}
	if resp, err := h.client.ListPrincipals(testkit.WithBearer(ctx, acmeAdmin), &registryv1.ListPrincipalsRequest{Parent: "tenants/acme"}); err != nil || len(resp.GetPrincipals()) != 0 {
		t.Fatalf("refused syncs wrote principals: %v %v", resp, err)
	}

	// The admin syncs, the owner lists and transfers its own agent to an active principal.
	res, err := h.client.SyncDirectory(testkit.WithBearer(ctx, acmeAdmin), &registryv1.SyncDirectoryRequest{Parent: "tenants/acme", RequestId: "sync-1",
		Principals: []*registryv1.Principal{{Id: "team:support"}, {Id: "team:payments"}, {Id: a.GetSponsor()},
			{Id: "bob@acme.example", Status: registryv1.PrincipalStatus_PRINCIPAL_STATUS_DEPARTED}}})
	if err != nil || res.GetAdded() != 4 || len(res.GetDeparted()) != 1 {
		t.Fatalf("sync: %v %v", res, err)
	}
	page, err := h.client.ListPrincipals(testkit.WithBearer(ctx, acmeOwner), &registryv1.ListPrincipalsRequest{Parent: "tenants/acme", Status: registryv1.PrincipalStatus_PRINCIPAL_STATUS_ACTIVE})
	if err != nil || len(page.GetPrincipals()) != 3 {
		t.Fatalf("list: %v %v", page, err)
	}
	// Named principals: those the directory holds, of the status asked for, in id order, one page.
	named, err := h.client.ListPrincipals(testkit.WithBearer(ctx, acmeOwner), &registryv1.ListPrincipalsRequest{Parent: "tenants/acme",
		Ids: []string{"team:support", "bob@acme.example", "nobody@acme.example", "team:payments", "team:support"}})
	if err != nil || named.GetNextPageToken() != "" {
		t.Fatalf("list by ids: %v %v", named, err)
	}
	var ids []string
	for _, p := range named.GetPrincipals() {
		ids = append(ids, p.GetId()+"="+p.GetStatus().String())
	}
	if want := []string{"bob@acme.example=PRINCIPAL_STATUS_DEPARTED", "team:payments=PRINCIPAL_STATUS_ACTIVE", "team:support=PRINCIPAL_STATUS_ACTIVE"}; !slices.Equal(ids, want) {
		t.Fatalf("list by ids = %v, want %v", ids, want)
	}
	activeNamed, err := h.client.ListPrincipals(testkit.WithBearer(ctx, acmeOwner), &registryv1.ListPrincipalsRequest{Parent: "tenants/acme",
		Ids: []string{"bob@acme.example", "team:payments"}, Status: registryv1.PrincipalStatus_PRINCIPAL_STATUS_ACTIVE})
	if err != nil || len(activeNamed.GetPrincipals()) != 1 || activeNamed.GetPrincipals()[0].GetId() != "team:payments" {
		t.Fatalf("list ACTIVE by ids: %v %v", activeNamed, err)
	}
	// Ids the directory cannot hold (agent owners may be any non-space UTF-8, principal ids may not;
	// an empty id) are simply not found; so many repeats of few ids are one small request.
	odd, err := h.client.ListPrincipals(testkit.WithBearer(ctx, acmeOwner), &registryv1.ListPrincipalsRequest{Parent: "tenants/acme",
		Ids: []string{"josé@corp.example", "o'brien@corp.example", "", "team:support"}, Status: registryv1.PrincipalStatus_PRINCIPAL_STATUS_ACTIVE})
	if err != nil || len(odd.GetPrincipals()) != 1 || odd.GetPrincipals()[0].GetId() != "team:support" {
		t.Fatalf("list by ids the directory cannot hold: %v %v, want team:support alone", odd, err)
	}
	repeated := slices.Repeat([]string{"team:support", "bob@acme.example"}, 500)
	if resp, err := h.client.ListPrincipals(testkit.WithBearer(ctx, acmeOwner), &registryv1.ListPrincipalsRequest{Parent: "tenants/acme", Ids: repeated}); err != nil || len(resp.GetPrincipals()) != 2 {
		t.Fatalf("list by 1,000 ids naming 2 principals: %v %v", resp, err)
	}
	tooMany := make([]string, 101)
	for i := range tooMany {
		tooMany[i] = fmt.Sprintf("user%d@acme.example", i)
	}
	for _, bad := range []struct {
		req   *registryv1.ListPrincipalsRequest
		field string
	}{
		{&registryv1.ListPrincipalsRequest{Parent: "tenants/acme", Ids: []string{"team:support"}, PageSize: 10}, "ids"},
		{&registryv1.ListPrincipalsRequest{Parent: "tenants/acme", Ids: []string{"team:support"}, PageToken: "00"}, "ids"},
		{&registryv1.ListPrincipalsRequest{Parent: "tenants/acme", Ids: tooMany}, "ids"},
		{&registryv1.ListPrincipalsRequest{Parent: "tenants/acme", Ids: append(slices.Repeat([]string{"team:support"}, 1000), strings.Repeat("x", 1000))}, "ids"},
		{&registryv1.ListPrincipalsRequest{Parent: "tenants/acme", Ids: []string{"team:support", strings.Repeat("é", 401)}}, "ids[1]"},
	} {
		_, err := h.client.ListPrincipals(testkit.WithBearer(ctx, acmeOwner), bad.req)
		wantCode(t, err, codes.InvalidArgument)
		if msg := status.Convert(err).Message(); !strings.HasPrefix(msg, bad.field+":") {
			t.Errorf("list by ids %v: message %q does not start with the field %s", bad.req.GetIds()[:1], msg, bad.field)
		}
	}
	_, err = h.client.TransferAgentOwnership(testkit.WithBearer(ctx, acmeOwner), &registryv1.TransferAgentOwnershipRequest{Name: a.GetName(), NewOwner: "bob@acme.example", Reason: "r"})
	wantCode(t, err, codes.InvalidArgument)
	if msg := status.Convert(err).Message(); !strings.Contains(msg, `new_owner: "bob@acme.example" is not an active principal of tenant acme's directory`) {
		t.Fatalf("message %q does not name the field and the rule", msg)
	}
	x, err := h.client.TransferAgentOwnership(testkit.WithBearer(ctx, acmeOwner), &registryv1.TransferAgentOwnershipRequest{
		Name: a.GetName(), NewOwner: "team:payments", Reason: "team merged", RequestId: "x-1"})
	if err != nil || x.GetAgent().GetOwner() != "team:payments" {
		t.Fatalf("transfer: %v %v", x, err)
	}
	// The former owner no longer owns it.
	_, err = h.client.TransferAgentOwnership(testkit.WithBearer(ctx, acmeOwner), &registryv1.TransferAgentOwnershipRequest{Name: a.GetName(), NewOwner: "team:support", Reason: "back"})
	wantCode(t, err, codes.PermissionDenied)
}
