package workflows_test

import (
	"context"
	"strings"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"

	"github.com/agentid/agentid/pkg/testkit"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/workflows"
)

// recordedRotationHistories are the files under testdata/ that TestRecordRotationHistories writes;
// TestReplayRecordedHistories replays them with every other history kept there.
var recordedRotationHistories = []string{
	"rotation-rotated.json",
	"rotation-stopped-suspended.json",
	"key-removal-removed.json",
	"rotation-approved.json",
	"rotation-rejected.json",
}

// TestRecordRotationHistories runs a rotation to its end, one of a suspended agent and a key removal on a real
// Temporal dev server with a real worker, checks their results and that the fresh histories replay,
// and with -record writes them to testdata/.
func TestRecordRotationHistories(t *testing.T) {
	srv := testkit.StartTemporal(t)
	fx := newFixture(t, "unused") // its fakes, event store and activities; its test environment is not used
	acts := fx.acts
	c := startRecorder(t, srv, acts)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	rotated, _ := rotationSetup(t, fx, "rot-1", registryv1.AgentState_AGENT_STATE_ACTIVE)
	rotated.Overlap = 2 * time.Second
	stopped, _ := rotationSetup(t, fx, "rot-2", registryv1.AgentState_AGENT_STATE_SUSPENDED)
	stopped.Overlap = 2 * time.Second
	cases := []struct {
		file string
		in   workflows.RotationInput
		want string
	}{
		{"rotation-rotated.json", rotated, workflows.ResultRotated},
		{"rotation-stopped-suspended.json", stopped, workflows.ResultStopped},
	}
	var files []string
	for _, tc := range cases {
		run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
			ID: workflows.RotationWorkflowID(tenant, tc.in.AgentID, tc.in.NewKeyThumbprint), TaskQueue: workflows.TaskQueue,
			WorkflowIDReusePolicy: enumspb.WORKFLOW_ID_REUSE_POLICY_REJECT_DUPLICATE,
		}, workflows.RotationWorkflowName, tc.in)
		if err != nil {
			t.Fatal(err)
		}
		var res workflows.RotationResult
		if err := run.Get(ctx, &res); err != nil || res.Result != tc.want {
			t.Fatalf("%s: %+v, %v; want %s", tc.file, res, err, tc.want)
		}
		keepHistory(t, c, run, tc.file)
		files = append(files, tc.file)
	}
	// A key removed in the registry leaves the client and its tokens are revoked.
	removal, oldTP := rotationSetup(t, fx, "rot-3", registryv1.AgentState_AGENT_STATE_ACTIVE)
	c3 := fx.fakes.Issuer.Client("tenants/" + tenant + "/clients/rot-3")
	c3.PublicJwks = strings.TrimSuffix(c3.GetPublicJwks(), "]}") + "," + newJWKOf(t, fx, removal) + "]}"
	fx.fakes.Issuer.Put(c3)
	const removalFile = "key-removal-removed.json"
	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID: workflows.KeyRemovalWorkflowID(tenant, "rot-3", oldTP), TaskQueue: workflows.TaskQueue,
		WorkflowIDReusePolicy: enumspb.WORKFLOW_ID_REUSE_POLICY_REJECT_DUPLICATE,
	}, workflows.KeyRemovalWorkflowName, workflows.KeyRemovalInput{Tenant: tenant, Agent: removal.Agent, AgentID: "rot-3", Thumbprint: oldTP, Reason: "leaked"})
	if err != nil {
		t.Fatal(err)
	}
	var rres workflows.KeyRemovalResult
	if err := run.Get(ctx, &rres); err != nil || rres.Revocation == "" {
		t.Fatalf("%s: %+v, %v; want a revocation", removalFile, rres, err)
	}
	keepHistory(t, c, run, removalFile)
	files = append(files, removalFile)

	// High-tier agents: the key the owner added is approved by the sponsor (after a refused token for
	// another step and the owner's own approval, refused: who added a key may not approve it), or the
	// owner rejects it.
	for _, tc := range []struct {
		file, id, decision, want string
		decider, role            string
	}{
		{"rotation-approved.json", "rot-4", workflows.DecisionApprove, workflows.ResultRotated, agentSponsor, "owner-delegate"},
		{"rotation-rejected.json", "rot-5", workflows.DecisionReject, workflows.ResultRejected, agentOwner, "owner"},
	} {
		in := highTierRotation(t, fx, tc.id, registryv1.RiskTier_RISK_TIER_HIGH)
		in.Overlap = 2 * time.Second
		in.AddedBy = agentOwner
		run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
			ID: workflows.RotationWorkflowID(tenant, tc.id, in.NewKeyThumbprint), TaskQueue: workflows.TaskQueue,
			WorkflowIDReusePolicy: enumspb.WORKFLOW_ID_REUSE_POLICY_REJECT_DUPLICATE,
		}, workflows.RotationWorkflowName, in)
		if err != nil {
			t.Fatal(err)
		}
		testkit.Eventually(t, time.Minute, tc.file+" to wait for the owner", func() (bool, error) {
			v, err := c.QueryWorkflow(ctx, run.GetID(), run.GetRunID(), workflows.StatusQuery)
			if err != nil {
				return false, err
			}
			var s workflows.RotationStatus
			if err := v.Get(&s); err != nil {
				return false, err
			}
			return s.WaitingFor == "approval by owner", nil
		})
		decide := func(who, step string) error {
			h, err := c.UpdateWorkflow(ctx, client.UpdateWorkflowOptions{
				WorkflowID: run.GetID(), RunID: run.GetRunID(), UpdateName: workflows.DecideUpdate,
				Args:         []any{rotationToken(t, tc.id, who, step, tc.decision, run.GetRunID())},
				WaitForStage: client.WorkflowUpdateStageCompleted,
			})
			if err != nil {
				return err
			}
			var s workflows.RotationStatus
			return h.Get(ctx, &s)
		}
		if err := decide(tc.decider, workflows.StepSecurity); !workflows.IsApprovalRefused(err) {
			t.Fatalf("%s: a token for another step: err = %v, want refused", tc.file, err)
		}
		if tc.decision == workflows.DecisionApprove {
			if err := decide(agentOwner, workflows.StepOwner); !workflows.IsApprovalRefused(err) || !strings.Contains(err.Error(), "added the new key") {
				t.Fatalf("%s: the approval of the owner who added the key: err = %v, want refused", tc.file, err)
			}
		}
		if err := decide(tc.decider, workflows.StepOwner); err != nil {
			t.Fatalf("%s: the %s by %s: %v", tc.file, tc.decision, tc.decider, err)
		}
		var res workflows.RotationResult
		if err := run.Get(ctx, &res); err != nil || res.Result != tc.want {
			t.Fatalf("%s: %+v, %v; want %s", tc.file, res, err, tc.want)
		}
		recs := keyRotated(t, fx, tc.id)
		if len(recs) != 1 || recs[0].GetDecidedBy() != tc.decider || recs[0].GetDecidedRole() != tc.role || recs[0].GetDecision() != tc.decision ||
			recs[0].GetDecisionTime() == nil {
			t.Fatalf("%s: key_rotated = %v, want decided by %s (%s)", tc.file, recs, tc.decider, tc.role)
		}
		keepHistory(t, c, run, tc.file)
		files = append(files, tc.file)
	}
	checkRecorded(t, files, recordedRotationHistories)
}
