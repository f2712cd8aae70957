package lifecycle_test

import (
	"context"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"sync"
	"testing"

	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"
	"google.golang.org/grpc"

	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/testkit"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/lifecycle/internal/lifecycle"
	"github.com/agentid/agentid/workflows"
)

// orphanRegistry answers GetAgent with its agents and records RetireAgent requests, refusing with
// retireErr when set.
type orphanRegistry struct {
	registryv1.RegistryServiceClient
	agents    map[string]*registryv1.Agent
	retireErr error
	directory []*registryv1.Principal // tenant acme's directory, ordered by id (none: no directory)
	// ids is how a request naming ids is answered: idsIgnored (the whole directory in one page),
	// idsByName (the named principals; an id the directory cannot hold is simply not found) or
	// idsStrict (a registry before that rule: InvalidArgument for such an id).
	ids int
	// listErr fails every ListPrincipals when set.
	listErr error

	mu      sync.Mutex
	retires []*registryv1.RetireAgentRequest
}

func (r *orphanRegistry) GetAgent(_ context.Context, in *registryv1.GetAgentRequest, _ ...grpc.CallOption) (*registryv1.GetAgentResponse, error) {
	a, ok := r.agents[in.GetName()]
	if !ok {
		return nil, errs.ToStatus(errs.NotFound("AGENT_NOT_FOUND", "agent not found")).Err()
	}
	return &registryv1.GetAgentResponse{Agent: a}, nil
}

// How orphanRegistry answers a request naming ids.
const (
	idsIgnored = iota
	idsByName
	idsStrict
)

// strictPrincipalID is the principal id form registries before the not-found rule required of ids.
var strictPrincipalID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._%+@:/-]*$`)

// ListPrincipals answers acme's directory in one page, or the named principals (r.ids).
func (r *orphanRegistry) ListPrincipals(_ context.Context, in *registryv1.ListPrincipalsRequest, _ ...grpc.CallOption) (*registryv1.ListPrincipalsResponse, error) {
	if r.listErr != nil {
		return nil, errs.ToStatus(r.listErr).Err()
	}
	named := len(in.GetIds()) > 0 && r.ids != idsIgnored
	if named && r.ids == idsStrict {
		for i, id := range in.GetIds() {
			if !strictPrincipalID.MatchString(id) {
				return nil, errs.ToStatus(errs.InvalidArgument(fmt.Sprintf("ids[%d]", i), fmt.Sprintf("%q must be letters, digits and ._%%+@:/-", id))).Err()
			}
		}
	}
	resp := &registryv1.ListPrincipalsResponse{}
	for _, p := range r.directory {
		if named && !slices.Contains(in.GetIds(), p.GetId()) {
			continue
		}
		if in.GetStatus() == registryv1.PrincipalStatus_PRINCIPAL_STATUS_UNSPECIFIED || p.GetStatus() == in.GetStatus() {
			resp.Principals = append(resp.Principals, p)
		}
	}
	return resp, nil
}

func (r *orphanRegistry) RetireAgent(_ context.Context, in *registryv1.RetireAgentRequest, _ ...grpc.CallOption) (*registryv1.RetireAgentResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.retires = append(r.retires, in)
	if r.retireErr != nil {
		return nil, errs.ToStatus(r.retireErr).Err()
	}
	return &registryv1.RetireAgentResponse{}, nil
}

func orphanedEvent(t *testing.T, id string) *registryv1.AgentOrphaned {
	t.Helper()
	return &registryv1.AgentOrphaned{Name: "tenants/acme/agents/" + id, Principal: "bob@acme.example", Role: "owner", Reason: "owner bob@acme.example departed"}
}

func orphanAgents() map[string]*registryv1.Agent {
	agent := func(id string, st registryv1.AgentState) *registryv1.Agent {
		return &registryv1.Agent{Name: "tenants/acme/agents/" + id, AgentId: id, Tenant: "acme", State: st, Owner: "bob@acme.example",
			Sponsor: "carol@acme.example", RiskTier: registryv1.RiskTier_RISK_TIER_MODERATE, Scopes: []string{"orders.read"}, Orphaned: true, Etag: "7"}
	}
	fixed := agent("o4", registryv1.AgentState_AGENT_STATE_ACTIVE)
	fixed.Orphaned = false
	fixed.Owner = "dave@acme.example"
	return map[string]*registryv1.Agent{
		"tenants/acme/agents/o1": agent("o1", registryv1.AgentState_AGENT_STATE_ACTIVE),
		"tenants/acme/agents/o2": agent("o2", registryv1.AgentState_AGENT_STATE_RETIRED),
		"tenants/acme/agents/o4": fixed,
	}
}

// TestOrphanedAgentIsDeprovisioned: with the deprovision action, agent.orphaned retires the agent
// with trigger owner_departed and a request id of the event (a redelivery asks for the same
// retirement) with the etag of the agent as read; an agent no longer orphaned, no longer ACTIVE or
// SUSPENDED, or one the registry refuses to retire, is left alone without an error; a retirement
// refused for a stale etag is retried (the agent is read again).
func TestOrphanedAgentIsDeprovisioned(t *testing.T) {
	reg := &orphanRegistry{agents: orphanAgents()}
	svc, err := lifecycle.New(lifecycle.Config{Temporal: unreachable{}, Registry: reg, OrphanedAction: workflows.SweepActionDeprovision, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ev := event(t, lifecycle.EventAgentOrphaned, "acme", "o1", orphanedEvent(t, "o1"))
	for range 2 {
		if err := svc.HandleAgentEvent(t.Context(), ev); err != nil {
			t.Fatal(err)
		}
	}
	if len(reg.retires) != 2 {
		t.Fatalf("RetireAgent calls: %v", reg.retires)
	}
	for _, r := range reg.retires {
		if r.GetName() != "tenants/acme/agents/o1" || r.GetTrigger() != workflows.TriggerOwnerDeparted || r.GetRequestId() != lifecycle.OrphanedRequestPrefix+ev.ID ||
			r.GetReason() != "orphaned: owner bob@acme.example departed" || r.GetEtag() != "7" {
			t.Fatalf("RetireAgent %v", r)
		}
	}
	if err := svc.HandleAgentEvent(t.Context(), event(t, lifecycle.EventAgentOrphaned, "acme", "o2", orphanedEvent(t, "o2"))); err != nil || len(reg.retires) != 2 {
		t.Fatalf("a retired agent: %v, %d retirements", err, len(reg.retires))
	}
	if err := svc.HandleAgentEvent(t.Context(), event(t, lifecycle.EventAgentOrphaned, "acme", "o3", orphanedEvent(t, "o3"))); err != nil || len(reg.retires) != 2 {
		t.Fatalf("an unknown agent: %v, %d retirements", err, len(reg.retires))
	}
	if err := svc.HandleAgentEvent(t.Context(), event(t, lifecycle.EventAgentOrphaned, "acme", "o4", orphanedEvent(t, "o4"))); err != nil || len(reg.retires) != 2 {
		t.Fatalf("an agent no longer orphaned: %v, %d retirements", err, len(reg.retires))
	}
	reg.retireErr = errs.Conflict("ETAG_MISMATCH", "the agent has changed since it was read")
	if err := svc.HandleAgentEvent(t.Context(), ev); err == nil {
		t.Fatal("a retirement refused for a stale etag is not retried (re-read)")
	}
	reg.retireErr = errs.FailedPrecondition("AGENT_STATE_RETIRING", "cannot retire an agent in state RETIRING")
	if err := svc.HandleAgentEvent(t.Context(), ev); err != nil {
		t.Fatalf("a refused retirement: %v", err)
	}
	reg.retireErr = errs.Unavailable("EVENT_STORE_UNAVAILABLE", "retry", nil)
	if err := svc.HandleAgentEvent(t.Context(), ev); err == nil {
		t.Fatal("an unavailable registry is not retried")
	}

	if _, err := lifecycle.New(lifecycle.Config{Temporal: unreachable{}, OrphanedAction: "delete"}); err == nil {
		t.Fatal("an unknown orphaned action is accepted")
	}
}

// TestOrphanedAgentIsReviewed: with the review action (the default), agent.orphaned opens a review
// of the agent under a campaign derived from the event; a redelivery opens nothing new.
func TestOrphanedAgentIsReviewed(t *testing.T) {
	srv := testkit.StartTemporal(t)
	c, err := client.Dial(client.Options{HostPort: srv.HostPort(), Namespace: workflows.Namespace, Logger: sdklog.NewStructuredLogger(slog.New(slog.DiscardHandler))})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	reg := &orphanRegistry{agents: orphanAgents()}
	svc, err := lifecycle.New(lifecycle.Config{Temporal: c, TaskQueue: "nobody-polls", Registry: reg, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ev := event(t, lifecycle.EventAgentOrphaned, "acme", "o1", orphanedEvent(t, "o1"))
	for range 2 {
		if err := svc.HandleAgentEvent(t.Context(), ev); err != nil {
			t.Fatal(err)
		}
	}
	id := workflows.ReviewWorkflowID("acme", lifecycle.OrphanReviewCampaign(ev.ID), "o1")
	d, err := c.DescribeWorkflowExecution(t.Context(), id, "")
	if err != nil {
		t.Fatalf("review run %s: %v", id, err)
	}
	if d.GetWorkflowExecutionInfo().GetType().GetName() != workflows.ReviewWorkflowName {
		t.Fatalf("run %s is a %s", id, d.GetWorkflowExecutionInfo().GetType().GetName())
	}
	if !workflows.ValidCampaign(lifecycle.OrphanReviewCampaign(ev.ID)) {
		t.Fatalf("campaign %q is not a valid campaign id", lifecycle.OrphanReviewCampaign(ev.ID))
	}
	fixed := event(t, lifecycle.EventAgentOrphaned, "acme", "o4", orphanedEvent(t, "o4"))
	if err := svc.HandleAgentEvent(t.Context(), fixed); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DescribeWorkflowExecution(t.Context(), workflows.ReviewWorkflowID("acme", lifecycle.OrphanReviewCampaign(fixed.ID), "o4"), ""); err == nil {
		t.Fatal("an agent no longer orphaned is reviewed")
	}
	if len(reg.retires) != 0 {
		t.Fatalf("the review action retired: %v", reg.retires)
	}
}
