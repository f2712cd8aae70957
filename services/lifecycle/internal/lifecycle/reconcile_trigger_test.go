package lifecycle_test

import (
	"testing"

	"go.temporal.io/sdk/converter"

	"github.com/agentid/agentid/pkg/eventstore"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/workflows"
)

// TestReconcilerKeepsTheRetirementTrigger: a deprovisioning run the reconciler starts (the consumer
// had not yet started it, e.g. behind a burst of retirements) carries the retirement's trigger, time
// and ticket as the event's run would: an ephemeral agent's teardown (task_completed) needs no
// sign-off instead of waiting for one as a plain request.
func TestReconcilerKeepsTheRetirementTrigger(t *testing.T) {
	w := newWorld(t)
	const id = "r-eph"
	name := workflows.AgentName(acme, id)
	w.agentIn(t, id, registryv1.AgentState_AGENT_STATE_ACTIVE)
	w.append(t, eventstore.AggregateAgent, id, "agent.retirement_requested",
		&registryv1.AgentRetirementRequested{Name: name, Reason: "batch done", Ticket: "TASK-9", Trigger: workflows.TriggerTaskCompleted})
	w.pass(t)

	first, err := w.temporal.GetWorkflowHistory(t.Context(), workflows.DeprovisionWorkflowID(acme, id), "", false, 0).Next()
	if err != nil {
		t.Fatal(err)
	}
	var in workflows.DeprovisionInput
	if err := converter.GetDefaultDataConverter().FromPayloads(first.GetWorkflowExecutionStartedEventAttributes().GetInput(), &in); err != nil {
		t.Fatal(err)
	}
	if in.Trigger != workflows.TriggerTaskCompleted || in.ChangeRef != "TASK-9" || in.TriggerTime.IsZero() || !in.NoSignOff || !in.StartedWithIdentity {
		t.Fatalf("reconciler's deprovisioning input = %+v, want trigger task_completed, ticket TASK-9, its time, no sign-off", in)
	}
}
