package lifecycle_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"

	"github.com/agentid/agentid/pkg/errs"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/lifecycle/internal/lifecycle"
	"google.golang.org/grpc"
)

// stateRegistry answers GetAgent with an agent in state at version etag, or with err.
type stateRegistry struct {
	registryv1.RegistryServiceClient
	state registryv1.AgentState
	etag  string
	err   error
}

func (r stateRegistry) GetAgent(_ context.Context, in *registryv1.GetAgentRequest, _ ...grpc.CallOption) (*registryv1.GetAgentResponse, error) {
	if r.err != nil {
		return nil, errs.ToStatus(r.err).Err()
	}
	return &registryv1.GetAgentResponse{Agent: &registryv1.Agent{Name: in.GetName(), State: r.state, Etag: r.etag}}, nil
}

// TestRegisteredAgentThatLeftProvisioningIsNotProvisioned: agent.registered handled after the agent
// left provisioning (a redelivery after the retirement request) starts no provisioning run; an agent
// still PENDING, one the registry shows only at an older version or not yet starts one (here: the
// start is tried, and Temporal is unreachable), and a registry that cannot answer is retried.
func TestRegisteredAgentThatLeftProvisioningIsNotProvisioned(t *testing.T) {
	const name = "tenants/acme/agents/o1"
	for _, tc := range []struct {
		name      string
		reg       stateRegistry
		wantStart bool
	}{
		{"retiring after the event", stateRegistry{state: registryv1.AgentState_AGENT_STATE_RETIRING, etag: "9"}, false},
		{"rejected after the event", stateRegistry{state: registryv1.AgentState_AGENT_STATE_REJECTED, etag: "9"}, false},
		{"still pending", stateRegistry{state: registryv1.AgentState_AGENT_STATE_PENDING, etag: "5"}, true},
		{"read model behind the event", stateRegistry{state: registryv1.AgentState_AGENT_STATE_RETIRING, etag: "4"}, true},
		{"not visible yet", stateRegistry{err: errs.NotFound("AGENT_NOT_FOUND", "agent not found")}, true},
		{"registry unavailable", stateRegistry{err: errs.Unavailable("DOWN", "registry down", nil)}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svc, err := lifecycle.New(lifecycle.Config{Temporal: unreachable{}, Registry: tc.reg, Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			ev := event(t, lifecycle.EventAgentRegistered, "acme", "o1", registered(name, "acme", "o1"))
			ev.Sequence = 5
			err = svc.HandleAgentEvent(t.Context(), ev)
			switch {
			case !tc.wantStart && err != nil:
				t.Fatalf("HandleAgentEvent = %v, want nil (no run started for an agent that left provisioning)", err)
			case tc.wantStart && err == nil:
				t.Fatal("HandleAgentEvent = nil, want the error of a start or of the registry read (retried)")
			case tc.wantStart && errors.Is(err, context.Canceled):
				t.Fatalf("HandleAgentEvent = %v", err)
			}
		})
	}
}
