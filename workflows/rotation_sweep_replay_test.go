package workflows_test

import (
	"context"
	"path/filepath"
	"slices"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/testkit"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/workflows"
	"github.com/agentid/agentid/workflows/workflowstest"
)

// recordedRotationSweepHistories are the files under testdata/ that
// TestRecordRotationSweepHistories writes; TestReplayRecordedHistories replays them with every other
// history kept there.
var recordedRotationSweepHistories = []string{
	"sweep-rotation-reminded.json",
}

// TestRotationSweepHistoriesKept fails when a recorded rotation sweep history is missing.
func TestRotationSweepHistoriesKept(t *testing.T) {
	files := replayedHistoryFiles(t)
	for _, want := range recordedRotationSweepHistories {
		if !slices.Contains(files, filepath.Join("testdata", want)) {
			t.Errorf("testdata/%s is missing: record it with go test -run TestRecordRotationSweepHistories -record", want)
		}
	}
}

// TestRecordRotationSweepHistories runs a rotation sweep over two tenants on a real Temporal dev
// server with a real worker (one key overdue, one due, one fresh, one of a suspended agent), checks
// its result and that the fresh history replays, and with -record writes it to testdata/.
func TestRecordRotationSweepHistories(t *testing.T) {
	srv := testkit.StartTemporal(t)
	fx := newFixture(t, "unused") // its fakes, event store and activities; its test environment is not used
	notes := &recordingNotifier{}
	fx.acts.Notifier = notes
	c := startRecorder(t, srv, fx.acts)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	now := time.Now().UTC()
	put := func(tenant, id string, state registryv1.AgentState, tier registryv1.RiskTier, keyAge time.Duration) {
		a := workflowstest.NewAgent(tenant, id, tier)
		a.State = state
		a.Keys = []*registryv1.AgentKey{{Kid: "k1", Thumbprint: id + "-key", Algorithm: "ES256", AddTime: timestamppb.New(now.Add(-keyAge))}}
		fx.fakes.Registry.Put(a)
	}
	put(tenant, "r-overdue", registryv1.AgentState_AGENT_STATE_ACTIVE, registryv1.RiskTier_RISK_TIER_HIGH, 8*day)
	put(tenant, "r-fresh", registryv1.AgentState_AGENT_STATE_ACTIVE, registryv1.RiskTier_RISK_TIER_LOW, day)
	put(tenant, "r-suspended", registryv1.AgentState_AGENT_STATE_SUSPENDED, registryv1.RiskTier_RISK_TIER_HIGH, 30*day)
	put("globex", "r-due", registryv1.AgentState_AGENT_STATE_ACTIVE, registryv1.RiskTier_RISK_TIER_MODERATE, 25*day)

	const file = "sweep-rotation-reminded.json"
	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID: rotationSweepRunID, TaskQueue: workflows.TaskQueue, WorkflowIDReusePolicy: enumspb.WORKFLOW_ID_REUSE_POLICY_REJECT_DUPLICATE,
	}, workflows.RotationSweepWorkflowName, workflows.RotationSweepInput{Tenants: []string{tenant, "globex"}})
	if err != nil {
		t.Fatal(err)
	}
	var res workflows.RotationSweepResult
	if err := run.Get(ctx, &res); err != nil {
		t.Fatal(err)
	}
	want := []string{"acme/r-overdue/r-overdue-key=overdue", "globex/r-due/r-due-key=due"}
	if got := reminded(res); !slices.Equal(got, want) || res.Delivered != 2 || len(notes.all()) != 2 {
		t.Fatalf("reminders %v (delivered %d, sent %d), want %v", got, res.Delivered, len(notes.all()), want)
	}
	keepHistory(t, c, run, file)
}
