package workflows_test

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/testkit"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/workflows"
)

// gatedVerifier verifies approval tokens with next, but each verification first waits until release
// is closed; calls counts them.
type gatedVerifier struct {
	next    workflows.ApprovalTokenVerifier
	release chan struct{}
	calls   atomic.Int32
}

func (g *gatedVerifier) VerifyApproval(ctx context.Context, raw string) (*authn.ApprovalClaims, error) {
	g.calls.Add(1)
	select {
	case <-g.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return g.next.VerifyApproval(ctx, raw)
}

// TestRotationApprovalTimeoutIsNotStretched: on a real Temporal dev server, a high-tier rotation
// waits for the owner; a decision is being verified when the approval times out and two more wait
// behind it. The one under way is judged (refused: its signer may not decide), the queued ones are
// refused without being verified (the approval timed out), and the run rejects the key: refused
// decisions cannot keep the approval open.
func TestRotationApprovalTimeoutIsNotStretched(t *testing.T) {
	srv := testkit.StartTemporal(t)
	fx := newFixture(t, "unused") // its fakes, event store and activities; its test environment is not used
	gate := &gatedVerifier{next: fx.acts.ApprovalTokens, release: make(chan struct{})}
	fx.acts.ApprovalTokens = gate
	c := startRecorder(t, srv, fx.acts)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	const id = "rot-timeout"
	in := highTierRotation(t, fx, id, registryv1.RiskTier_RISK_TIER_HIGH)
	// The first decision must reach its verification before the approval times out (on a loaded
	// machine an update and its activity take seconds to be dispatched), and the verification held
	// until the timeout must stay within VerifyApproval's 10 s start-to-close timeout, or a retry
	// verifies it a second time.
	in.ApprovalTimeout = 6 * time.Second
	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID: workflows.RotationWorkflowID(tenant, id, in.NewKeyThumbprint), TaskQueue: workflows.TaskQueue,
		WorkflowIDReusePolicy: enumspb.WORKFLOW_ID_REUSE_POLICY_REJECT_DUPLICATE,
	}, workflows.RotationWorkflowName, in)
	if err != nil {
		t.Fatal(err)
	}
	status := func() workflows.RotationStatus {
		v, err := c.QueryWorkflow(ctx, run.GetID(), run.GetRunID(), workflows.StatusQuery)
		var s workflows.RotationStatus
		if err == nil {
			err = v.Get(&s)
		}
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	testkit.Eventually(t, time.Minute, "the rotation to wait for the owner", func() (bool, error) {
		return status().WaitingFor == "approval by owner", nil
	})

	var wg sync.WaitGroup
	var reached atomic.Int32 // decisions the run has accepted or rejected
	errs := make([]error, 3)
	decide := func(i int) {
		defer wg.Done()
		h, err := c.UpdateWorkflow(ctx, client.UpdateWorkflowOptions{
			WorkflowID: run.GetID(), RunID: run.GetRunID(), UpdateName: workflows.DecideUpdate,
			Args:         []any{rotationToken(t, id, "mallory@corp.example", workflows.StepOwner, workflows.DecisionApprove, run.GetRunID())},
			WaitForStage: client.WorkflowUpdateStageAccepted,
		})
		reached.Add(1)
		if err == nil {
			err = h.Get(ctx, nil)
		}
		errs[i] = err
	}
	wg.Add(1)
	go decide(0)
	testkit.Eventually(t, time.Minute, "the first decision to be under verification", func() (bool, error) {
		return gate.calls.Load() == 1, nil
	})
	wg.Add(2)
	go decide(1)
	go decide(2)
	// The queued decisions must reach the run before the held one is released: once it is judged,
	// the run ends and a later update would find no run at all.
	testkit.Eventually(t, time.Minute, "the queued decisions to reach the run", func() (bool, error) {
		return reached.Load() == 3, nil
	})
	// The run has seen the approval time out once a workflow task completed after its timer fired.
	testkit.Eventually(t, time.Minute, "the run to see the approval time out", func() (bool, error) {
		fired := false
		it := c.GetWorkflowHistory(ctx, run.GetID(), run.GetRunID(), false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
		for it.HasNext() {
			ev, err := it.Next()
			if err != nil {
				return false, err
			}
			switch ev.GetEventType() {
			case enumspb.EVENT_TYPE_TIMER_FIRED:
				fired = true
			case enumspb.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
				if fired {
					return true, nil
				}
			}
		}
		return false, nil
	})
	close(gate.release)
	wg.Wait()

	var res workflows.RotationResult
	if err := run.Get(ctx, &res); err != nil || res.Result != workflows.ResultRejected || res.Decision != nil {
		t.Fatalf("result = %+v, %v; want rejected, nobody decided", res, err)
	}
	if !workflows.IsApprovalRefused(errs[0]) || !strings.Contains(errs[0].Error(), "mallory@corp.example holds") {
		t.Errorf("the decision under way: %v, want judged and refused", errs[0])
	}
	for _, err := range errs[1:] {
		if !workflows.IsApprovalRefused(err) || !strings.Contains(err.Error(), "timed out") {
			t.Errorf("a decision queued at the timeout: %v, want refused as timed out", err)
		}
	}
	if n := gate.calls.Load(); n != 1 {
		t.Errorf("approval tokens verified = %d, want 1 (the queued decisions are refused unverified)", n)
	}
}
