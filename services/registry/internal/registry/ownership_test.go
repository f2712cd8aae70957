package registry_test

import (
	"strings"
	"testing"

	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/testkit"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/registry/internal/registry"
)

// TestOwnershipFold: given registration, orphaning and transfer events, the agent shows the
// orphaned mark with the first orphaning's time and every reason, and a transfer sets the new
// owner and sponsor and clears the mark.
func TestOwnershipFold(t *testing.T) {
	const id = "agt_01hqzx3v7k4m5n6p7q8r9s0t1v"
	name := registry.AgentName("acme", id)
	in := validAgent(t)
	in.Name, in.AgentId, in.Tenant = name, id, "acme"
	evs := history(t, "acme", registry.AggregateAgent, id,
		registry.AgentRegistered(in),
		registry.AgentOrphaned(name, "team:support", registry.OrphanRoleOwner, "owner team:support departed"),
		registry.AgentOrphaned(name, "alice@corp.example", registry.OrphanRoleSponsor, "sponsor alice@corp.example departed"),
	)
	a, err := registry.LoadAgent("acme", id, evs)
	if err != nil {
		t.Fatal(err)
	}
	v := a.View()
	if !v.GetOrphaned() || !v.GetOrphanTime().AsTime().Equal(evs[1].Time) ||
		v.GetOrphanReason() != "owner team:support departed; sponsor alice@corp.example departed" {
		t.Fatalf("orphaned view: orphaned=%v time=%v reason=%q", v.GetOrphaned(), v.GetOrphanTime().AsTime(), v.GetOrphanReason())
	}

	evs = history(t, "acme", registry.AggregateAgent, id,
		registry.AgentRegistered(in),
		registry.AgentOrphaned(name, "team:support", registry.OrphanRoleOwner, "owner team:support departed"),
		registry.AgentOwnershipTransferred(name, "team:support", "team:payments", "alice@corp.example", "bob@corp.example", "reorg"),
	)
	a, err = registry.LoadAgent("acme", id, evs)
	if err != nil {
		t.Fatal(err)
	}
	v = a.View()
	if v.GetOrphaned() || v.GetOrphanReason() != "" || v.GetOrphanTime() != nil || v.GetOwner() != "team:payments" || v.GetSponsor() != "bob@corp.example" {
		t.Fatalf("after transfer: %v", v)
	}
}

// TestTransferAgentOwnershipRefusesBadInputWithoutWriting: every refusal names the field and the
// rule and writes nothing.
func TestTransferAgentOwnershipRefusesBadInputWithoutWriting(t *testing.T) {
	e := newEnv(t)
	e.createTenant(t, "acme")
	a := e.register(t, "acme", "xfer-bad-1")
	rejected := e.register(t, "acme", "xfer-bad-2")
	if _, err := e.svc.RejectAgent(t.Context(), registry.RejectAgent{Tenant: "acme", AgentID: rejected.GetAgentId(), DecisionID: "dec-1", Reason: "no"}, admin); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.SyncDirectory(t.Context(), registry.SyncDirectory{Tenant: "acme", Principals: []*registryv1.Principal{
		{Id: "team:support"}, {Id: "alice@corp.example"}, {Id: "carol@corp.example"},
		{Id: "dave@corp.example", Status: registryv1.PrincipalStatus_PRINCIPAL_STATUS_DEPARTED},
	}}, admin); err != nil {
		t.Fatal(err)
	}
	before := testkit.StreamMessages(t, e.store.JetStream(), eventstore.StreamAgents)

	for _, tc := range []struct {
		name    string
		cmd     registry.TransferAgentOwnership
		kind    errs.Kind
		field   string
		message string
	}{
		{"no reason", registry.TransferAgentOwnership{AgentID: a.GetAgentId(), NewOwner: "carol@corp.example"}, errs.KindInvalidArgument, "reason", "is required"},
		{"nobody new", registry.TransferAgentOwnership{AgentID: a.GetAgentId(), Reason: "r"}, errs.KindInvalidArgument, "new_owner", "new_owner or new_sponsor is required"},
		{"control characters", registry.TransferAgentOwnership{AgentID: a.GetAgentId(), NewOwner: "bob\n", Reason: "r"}, errs.KindInvalidArgument, "new_owner", "control characters"},
		{"unknown owner", registry.TransferAgentOwnership{AgentID: a.GetAgentId(), NewOwner: "bob@x", Reason: "r"}, errs.KindInvalidArgument, "new_owner",
			`"bob@x" is not an active principal of tenant acme's directory`},
		{"departed sponsor", registry.TransferAgentOwnership{AgentID: a.GetAgentId(), NewSponsor: "dave@corp.example", Reason: "r"}, errs.KindInvalidArgument, "new_sponsor",
			`"dave@corp.example" is not an active principal`},
		{"stale etag", registry.TransferAgentOwnership{AgentID: a.GetAgentId(), NewOwner: "carol@corp.example", Reason: "r", Etag: "999"}, errs.KindConflict, "", "etag"},
		{"rejected agent", registry.TransferAgentOwnership{AgentID: rejected.GetAgentId(), NewOwner: "carol@corp.example", Reason: "r"}, errs.KindFailedPrecondition, "", "state REJECTED"},
		{"unknown agent", registry.TransferAgentOwnership{AgentID: "agt_01hqzx3v7k4m5n6p7q8r9s0t1v", NewOwner: "carol@corp.example", Reason: "r"}, errs.KindNotFound, "", "not found"},
		{"not the owner", registry.TransferAgentOwnership{AgentID: a.GetAgentId(), NewOwner: "carol@corp.example", Reason: "r", RequireOwner: "team:payments"}, errs.KindPermissionDenied, "", "owner"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cmd.Tenant = "acme"
			_, err := e.svc.TransferAgentOwnership(t.Context(), tc.cmd, admin)
			wantError(t, err, tc.kind, "", tc.field)
			if !strings.Contains(err.Error(), tc.message) {
				t.Fatalf("error %q does not say %q", err, tc.message)
			}
		})
	}
	if after := testkit.StreamMessages(t, e.store.JetStream(), eventstore.StreamAgents); after != before {
		t.Fatalf("refused transfers wrote %d events", after-before)
	}
}

// TestTransferAgentOwnership: a transfer records agent.ownership_transferred once per request id,
// keeps what it does not name, clears the orphaned mark, and a transfer that changes nothing writes
// nothing.
func TestTransferAgentOwnership(t *testing.T) {
	e := newEnv(t)
	e.createTenant(t, "acme")
	a := e.register(t, "acme", "xfer-1")
	ctx := t.Context()

	orphaned, err := e.svc.OrphanAgent(ctx, registry.OrphanAgent{Tenant: "acme", AgentID: a.GetAgentId(), Principal: "team:support", RequestID: "orph-1"}, admin)
	if err != nil || !orphaned {
		t.Fatalf("orphan: %v %v", orphaned, err)
	}
	got, err := e.svc.GetAgent(ctx, "acme", a.GetAgentId(), 0)
	if err != nil || !got.GetOrphaned() || got.GetOrphanReason() != "owner team:support departed" {
		t.Fatalf("orphaned agent: %v %v", got, err)
	}

	cmd := registry.TransferAgentOwnership{Tenant: "acme", AgentID: a.GetAgentId(), NewOwner: "team:payments", Reason: "support team dissolved", Etag: got.GetEtag(), RequestID: "xfer-req-1"}
	res, err := e.svc.TransferAgentOwnership(ctx, cmd, admin)
	if err != nil {
		t.Fatal(err)
	}
	if res.GetOwner() != "team:payments" || res.GetSponsor() != "alice@corp.example" || res.GetOrphaned() {
		t.Fatalf("transferred: owner %q sponsor %q orphaned %v", res.GetOwner(), res.GetSponsor(), res.GetOrphaned())
	}
	again, err := e.svc.TransferAgentOwnership(ctx, cmd, admin) // the etag is stale now: the repeat is recognised first
	if err != nil || again.GetEtag() != res.GetEtag() {
		t.Fatalf("repeat: %v %v", again, err)
	}
	noop, err := e.svc.TransferAgentOwnership(ctx, registry.TransferAgentOwnership{Tenant: "acme", AgentID: a.GetAgentId(), NewOwner: "team:payments", Reason: "again"}, admin)
	if err != nil || noop.GetEtag() != res.GetEtag() {
		t.Fatalf("no-op transfer: %v %v", noop, err)
	}
	want := []string{registry.EventAgentRegistered, registry.EventAgentOrphaned, registry.EventAgentOwnershipTransferred}
	if got := e.eventTypes(t, "acme", a.GetAgentId()); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("events %v, want %v", got, want)
	}

	// The principal that departed no longer holds a role: orphaning by it again changes nothing.
	orphaned, err = e.svc.OrphanAgent(ctx, registry.OrphanAgent{Tenant: "acme", AgentID: a.GetAgentId(), Principal: "team:support", RequestID: "orph-2"}, admin)
	if err != nil || orphaned {
		t.Fatalf("orphan by a former owner: %v %v", orphaned, err)
	}
}
