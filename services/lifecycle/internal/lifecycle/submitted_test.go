package lifecycle_test

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"

	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	sdklog "go.temporal.io/sdk/log"
	"google.golang.org/grpc"

	"github.com/agentid/agentid/pkg/testkit"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/lifecycle/internal/lifecycle"
	"github.com/agentid/agentid/workflows"
)

// tierRegistry answers GetAgent with a HIGH agent and records the min_version asked for.
type tierRegistry struct {
	registryv1.RegistryServiceClient
	mu    sync.Mutex
	mins  []uint64
	state registryv1.AgentState // what the registry shows; PENDING when unset
}

func (r *tierRegistry) GetAgent(_ context.Context, in *registryv1.GetAgentRequest, _ ...grpc.CallOption) (*registryv1.GetAgentResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.mins = append(r.mins, in.GetMinVersion())
	// The submission made the agent PENDING: that is what the registry shows at its version.
	st := r.state
	if st == registryv1.AgentState_AGENT_STATE_UNSPECIFIED {
		st = registryv1.AgentState_AGENT_STATE_PENDING
	}
	return &registryv1.GetAgentResponse{Agent: &registryv1.Agent{Name: in.GetName(), RiskTier: registryv1.RiskTier_RISK_TIER_HIGH, State: st}}, nil
}

// TestProposedAgentProvisionsOnSubmission: agent.registered of a PROPOSED agent starts nothing;
// agent.submitted starts its provisioning run, with the risk tier the registry shows at the event's
// version and the submission as the run's event.
func TestProposedAgentProvisionsOnSubmission(t *testing.T) {
	srv := testkit.StartTemporal(t)
	c, err := client.Dial(client.Options{HostPort: srv.HostPort(), Namespace: workflows.Namespace, Logger: sdklog.NewStructuredLogger(slog.New(slog.DiscardHandler))})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	reg := &tierRegistry{}
	svc, err := lifecycle.New(lifecycle.Config{Temporal: c, TaskQueue: "nobody-polls", Registry: reg, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	const name = "tenants/acme/agents/p1"
	draft := registered(name, "acme", "p1")
	draft.Agent.State = registryv1.AgentState_AGENT_STATE_PROPOSED
	if err := svc.HandleAgentEvent(t.Context(), event(t, "agent.registered", "acme", "p1", draft)); err != nil {
		t.Fatal(err)
	}
	var nf *serviceerror.NotFound
	if _, err := c.DescribeWorkflowExecution(t.Context(), "provision/acme/p1", ""); !errors.As(err, &nf) {
		t.Fatalf("a proposal started provisioning: %v", err)
	}
	sub := event(t, lifecycle.EventAgentSubmitted, "acme", "p1", &registryv1.AgentSubmitted{Name: name})
	sub.Sequence = 7
	if err := svc.HandleAgentEvent(t.Context(), sub); err != nil {
		t.Fatal(err)
	}
	d, err := c.DescribeWorkflowExecution(t.Context(), "provision/acme/p1", "")
	if err != nil {
		t.Fatalf("submission started no provisioning: %v", err)
	}
	var eventID, tier string
	dc := converter.GetDefaultDataConverter()
	_ = dc.FromPayload(d.GetWorkflowExecutionInfo().GetMemo().GetFields()["event_id"], &eventID)
	_ = dc.FromPayload(d.GetWorkflowExecutionInfo().GetSearchAttributes().GetIndexedFields()["RiskTier"], &tier)
	if eventID != sub.ID || tier != "high" {
		t.Fatalf("run: event_id %q tier %q, want %q high", eventID, tier, sub.ID)
	}
	reg.mu.Lock()
	defer reg.mu.Unlock()
	if len(reg.mins) != 1 || reg.mins[0] != 7 {
		t.Fatalf("registry read at min_version %v, want [7]", reg.mins)
	}
}

// TestSubmissionOfAnAgentThatLeftProvisioningStartsNothing: a submission redelivered after the agent's
// retirement was requested (the registry shows it RETIRING at the event's version) starts no run.
func TestSubmissionOfAnAgentThatLeftProvisioningStartsNothing(t *testing.T) {
	srv := testkit.StartTemporal(t)
	c, err := client.Dial(client.Options{HostPort: srv.HostPort(), Namespace: workflows.Namespace, Logger: sdklog.NewStructuredLogger(slog.New(slog.DiscardHandler))})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	reg := &tierRegistry{state: registryv1.AgentState_AGENT_STATE_RETIRING}
	svc, err := lifecycle.New(lifecycle.Config{Temporal: c, TaskQueue: "nobody-polls", Registry: reg, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	sub := event(t, lifecycle.EventAgentSubmitted, "acme", "p2", &registryv1.AgentSubmitted{Name: "tenants/acme/agents/p2"})
	sub.Sequence = 9
	if err := svc.HandleAgentEvent(t.Context(), sub); err != nil {
		t.Fatal(err)
	}
	var nf *serviceerror.NotFound
	if _, err := c.DescribeWorkflowExecution(t.Context(), "provision/acme/p2", ""); !errors.As(err, &nf) {
		t.Fatalf("a submission of a RETIRING agent started provisioning: %v", err)
	}
}
