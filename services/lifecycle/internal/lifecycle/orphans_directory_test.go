package lifecycle_test

import (
	"log/slog"
	"testing"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	sdklog "go.temporal.io/sdk/log"

	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/testkit"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/lifecycle/internal/lifecycle"
	"github.com/agentid/agentid/workflows"
)

// TestOrphanReviewAsksOnlyActivePrincipals: the review an agent.orphaned event opens names as
// reviewers only principals the tenant's directory lists as ACTIVE: the sponsor alone (asked first)
// when the owner departed, nobody when both did, both when the tenant has no directory.
func TestOrphanReviewAsksOnlyActivePrincipals(t *testing.T) {
	srv := testkit.StartTemporal(t)
	c, err := client.Dial(client.Options{HostPort: srv.HostPort(), Namespace: workflows.Namespace, Logger: sdklog.NewStructuredLogger(slog.New(slog.DiscardHandler))})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	principal := func(id string, st registryv1.PrincipalStatus) *registryv1.Principal {
		return &registryv1.Principal{Id: id, Status: st}
	}
	const (
		active   = registryv1.PrincipalStatus_PRINCIPAL_STATUS_ACTIVE
		departed = registryv1.PrincipalStatus_PRINCIPAL_STATUS_DEPARTED
	)
	for _, tc := range []struct {
		name               string
		agentID            string
		directory          []*registryv1.Principal
		wantOwner, wantSpo string
	}{
		{"owner departed", "o1", []*registryv1.Principal{principal("bob@acme.example", departed), principal("carol@acme.example", active)}, "carol@acme.example", ""},
		{"both departed", "o1", []*registryv1.Principal{principal("bob@acme.example", departed), principal("carol@acme.example", departed)}, "", ""},
		{"sponsor departed", "o1", []*registryv1.Principal{principal("bob@acme.example", active), principal("carol@acme.example", departed)}, "bob@acme.example", ""},
		{"no directory", "o1", nil, "bob@acme.example", "carol@acme.example"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := &orphanRegistry{agents: orphanAgents(), directory: tc.directory}
			svc, err := lifecycle.New(lifecycle.Config{Temporal: c, TaskQueue: "nobody-polls", Registry: reg, Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			ev := event(t, lifecycle.EventAgentOrphaned, "acme", tc.agentID, orphanedEvent(t, tc.agentID))
			ev.ID += "-" + tc.name
			if err := svc.HandleAgentEvent(t.Context(), ev); err != nil {
				t.Fatal(err)
			}
			id := workflows.ReviewWorkflowID("acme", lifecycle.OrphanReviewCampaign(ev.ID), tc.agentID)
			in := reviewInput(t, c, id)
			if in.Owner != tc.wantOwner || in.Sponsor != tc.wantSpo {
				t.Fatalf("review asks owner %q, sponsor %q; want %q, %q", in.Owner, in.Sponsor, tc.wantOwner, tc.wantSpo)
			}
		})
	}
}

// TestOrphanReviewOfAgentWithAnOddSponsor: an agent whose sponsor's id is one the directory cannot
// hold ("o'brien@corp.example": an apostrophe) has its orphan review opened like any other, whether
// the registry answers such an id as not found or, as older registries did, refuses it as
// InvalidArgument (the directory is then paged): the sponsor is not ACTIVE in a tenant with a
// directory, and is asked when the tenant has none.
func TestOrphanReviewOfAgentWithAnOddSponsor(t *testing.T) {
	srv := testkit.StartTemporal(t)
	c, err := client.Dial(client.Options{HostPort: srv.HostPort(), Namespace: workflows.Namespace, Logger: sdklog.NewStructuredLogger(slog.New(slog.DiscardHandler))})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const (
		sponsor  = "o'brien@corp.example"
		active   = registryv1.PrincipalStatus_PRINCIPAL_STATUS_ACTIVE
		departed = registryv1.PrincipalStatus_PRINCIPAL_STATUS_DEPARTED
	)
	agents := orphanAgents()
	agents["tenants/acme/agents/o1"].Sponsor = sponsor
	directory := []*registryv1.Principal{{Id: "bob@acme.example", Status: departed}, {Id: "carol@acme.example", Status: active}}
	for _, tc := range []struct {
		name               string
		ids                int
		owner              string
		directory          []*registryv1.Principal
		wantOwner, wantSpo string
	}{
		{"owner departed", idsByName, "bob@acme.example", directory, "", ""},
		{"owner departed, older registry", idsStrict, "bob@acme.example", directory, "", ""},
		{"owner active", idsByName, "carol@acme.example", directory, "carol@acme.example", ""},
		{"owner active, older registry", idsStrict, "carol@acme.example", directory, "carol@acme.example", ""},
		{"no directory, older registry", idsStrict, "bob@acme.example", nil, "bob@acme.example", sponsor},
	} {
		t.Run(tc.name, func(t *testing.T) {
			agents["tenants/acme/agents/o1"].Owner = tc.owner
			reg := &orphanRegistry{agents: agents, directory: tc.directory, ids: tc.ids}
			svc, err := lifecycle.New(lifecycle.Config{Temporal: c, TaskQueue: "nobody-polls", Registry: reg, Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			ev := event(t, lifecycle.EventAgentOrphaned, "acme", "o1", orphanedEvent(t, "o1"))
			ev.ID += "-odd-" + tc.name
			if err := svc.HandleAgentEvent(t.Context(), ev); err != nil {
				t.Fatalf("agent.orphaned: %v", err)
			}
			id := workflows.ReviewWorkflowID("acme", lifecycle.OrphanReviewCampaign(ev.ID), "o1")
			in := reviewInput(t, c, id)
			if in.Owner != tc.wantOwner || in.Sponsor != tc.wantSpo {
				t.Fatalf("review asks owner %q, sponsor %q; want %q, %q", in.Owner, in.Sponsor, tc.wantOwner, tc.wantSpo)
			}
		})
	}
}

// TestOrphanReviewDirectoryErrors: a directory the registry cannot show for now fails agent.orphaned
// for a redelivery; one whose query the registry refuses as malformed is a permanent failure (the
// failed-event log), not an endless redelivery.
func TestOrphanReviewDirectoryErrors(t *testing.T) {
	for _, tc := range []struct {
		name          string
		err           error
		wantPermanent bool
	}{
		{"registry down", errs.Unavailable("DOWN", "registry down", nil), false},
		{"query refused", errs.InvalidArgument("parent", "malformed"), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := &orphanRegistry{agents: orphanAgents(), listErr: tc.err}
			svc, err := lifecycle.New(lifecycle.Config{Temporal: unreachable{}, Registry: reg, Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			err = svc.HandleAgentEvent(t.Context(), event(t, lifecycle.EventAgentOrphaned, "acme", "o1", orphanedEvent(t, "o1")))
			if err == nil || eventstore.IsPermanent(err) != tc.wantPermanent {
				t.Fatalf("agent.orphaned: %v (permanent %v), want an error, permanent %v", err, eventstore.IsPermanent(err), tc.wantPermanent)
			}
		})
	}
}

// reviewInput is the input the review run id was started with.
func reviewInput(t *testing.T, c client.Client, id string) workflows.ReviewInput {
	t.Helper()
	first, err := c.GetWorkflowHistory(t.Context(), id, "", false, 0).Next()
	if err != nil {
		t.Fatalf("review run %s: %v", id, err)
	}
	var in workflows.ReviewInput
	if err := converter.GetDefaultDataConverter().FromPayloads(first.GetWorkflowExecutionStartedEventAttributes().GetInput(), &in); err != nil {
		t.Fatal(err)
	}
	return in
}
