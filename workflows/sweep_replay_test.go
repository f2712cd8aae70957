package workflows_test

import (
	"context"
	"slices"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/testkit"
	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/workflows"
	"github.com/agentid/agentid/workflows/workflowstest"
)

// recordedSweepHistories are the files under testdata/ that TestRecordSweepHistories writes: TTL
// expiry (and an agent retired before it expired) and sweep runs; TestReplayRecordedHistories
// replays them with every other history kept there.
var recordedSweepHistories = []string{
	"ttl-expired.json",
	"ttl-gone-before-expiry.json",
	"sweep-expired.json",
	"sweep-inactive-review.json",
	"sweep-orphaned-held.json",
}

// TestRecordSweepHistories runs TTL and sweep runs on a real Temporal dev server with a real worker,
// checks their results and that the fresh histories replay, and with -record writes them to testdata/.
func TestRecordSweepHistories(t *testing.T) {
	srv := testkit.StartTemporal(t)
	fakes := workflowstest.Start(t)
	acts := activitiesFor(t, fakes, newStore(t))
	acts.Monitor = monitorv1.NewMonitorServiceClient(fakes.Conn(t))
	c := startRecorder(t, srv, acts)

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	start := func(id, name string, arg any) client.WorkflowRun {
		t.Helper()
		run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
			ID: id, TaskQueue: workflows.TaskQueue, WorkflowIDReusePolicy: enumspb.WORKFLOW_ID_REUSE_POLICY_REJECT_DUPLICATE,
		}, name, arg)
		if err != nil {
			t.Fatal(err)
		}
		return run
	}
	now := time.Now().UTC()
	put := func(tenant, id string, state registryv1.AgentState, mutate func(*registryv1.Agent)) *registryv1.Agent {
		a := workflowstest.NewAgent(tenant, id, registryv1.RiskTier_RISK_TIER_LOW)
		a.State = state
		if mutate != nil {
			mutate(a)
		}
		fakes.Registry.Put(a)
		return a
	}

	type recorded struct {
		file  string
		run   client.WorkflowRun
		check func(t *testing.T, run client.WorkflowRun)
	}
	var runs []recorded
	ttlResult := func(want string) func(*testing.T, client.WorkflowRun) {
		return func(t *testing.T, run client.WorkflowRun) {
			var res workflows.TTLResult
			if err := run.Get(ctx, &res); err != nil || res.Result != want {
				t.Fatalf("TTL run: %+v, %v; want %s", res, err, want)
			}
		}
	}

	// An ephemeral agent expires: EXPIRED, then retired with trigger ttl.
	expireAt := now.Add(2 * time.Second)
	expiring := put(tenant, "t-expired", registryv1.AgentState_AGENT_STATE_ACTIVE, func(a *registryv1.Agent) { a.ExpireTime = timestamppb.New(expireAt) })
	runs = append(runs, recorded{"ttl-expired.json", start(workflows.TTLWorkflowID(tenant, "t-expired"), workflows.TTLWorkflowName, workflows.TTLInput{
		Tenant: tenant, Agent: expiring.GetName(), AgentID: "t-expired", ExpireTime: expireAt,
	}), ttlResult(workflows.ResultExpired)})
	// Its task reported completion first: the agent is RETIRING at expiry, nothing is done.
	done := put(tenant, "t-done", registryv1.AgentState_AGENT_STATE_RETIRING, nil)
	runs = append(runs, recorded{"ttl-gone-before-expiry.json", start(workflows.TTLWorkflowID(tenant, "t-done"), workflows.TTLWorkflowName, workflows.TTLInput{
		Tenant: tenant, Agent: done.GetName(), AgentID: "t-done", ExpireTime: now.Add(time.Second),
	}), ttlResult(workflows.ResultGoneBefore)})

	// The expired sweep retires an agent whose TTL timer was missed, in every tenant, and leaves the
	// rest alone.
	past := timestamppb.New(now.Add(-time.Hour))
	put(tenant, "s-missed", registryv1.AgentState_AGENT_STATE_SUSPENDED, func(a *registryv1.Agent) { a.ExpireTime = past })
	put(tenant, "s-live", registryv1.AgentState_AGENT_STATE_ACTIVE, func(a *registryv1.Agent) { a.ExpireTime = timestamppb.New(now.Add(time.Hour)) })
	put("globex", "s-missed-too", registryv1.AgentState_AGENT_STATE_ACTIVE, func(a *registryv1.Agent) { a.ExpireTime = past })
	// A TTL run recorded the expiry and failed before the retirement: the sweep retires it.
	put("globex", "s-expired", registryv1.AgentState_AGENT_STATE_EXPIRED, func(a *registryv1.Agent) { a.ExpireTime = past })
	sweepResult := func(want ...string) func(*testing.T, client.WorkflowRun) {
		return func(t *testing.T, run client.WorkflowRun) {
			var res workflows.SweepResult
			if err := run.Get(ctx, &res); err != nil {
				t.Fatal(err)
			}
			if got := found(res); !slices.Equal(got, want) {
				t.Fatalf("sweep findings %v, want %v", got, want)
			}
		}
	}
	runs = append(runs, recorded{"sweep-expired.json", start(workflows.SweepScheduleID(workflows.SweepExpired)+"-2026-06-01T10:00:00Z",
		workflows.SweepWorkflowName, workflows.SweepInput{Kind: workflows.SweepExpired, Tenants: []string{tenant, "globex"}}),
		sweepResult("acme/s-missed=retired", "globex/s-missed-too=retired", "globex/s-expired=retired")})

	// The inactivity sweep of tenant initech records for review an agent idle for 100 days and one
	// never active since its creation 120 days ago; a busy one is not listed.
	created := timestamppb.New(now.Add(-200 * day))
	idle := put("initech", "i-idle", registryv1.AgentState_AGENT_STATE_ACTIVE, func(a *registryv1.Agent) { a.CreateTime = created })
	fakes.Monitor.SetLastActive(idle.GetName(), now.Add(-100*day))
	busy := put("initech", "i-busy", registryv1.AgentState_AGENT_STATE_ACTIVE, func(a *registryv1.Agent) { a.CreateTime = timestamppb.New(now.Add(-199 * day)) })
	fakes.Monitor.SetLastActive(busy.GetName(), now.Add(-time.Hour))
	put("initech", "i-never", registryv1.AgentState_AGENT_STATE_ACTIVE, func(a *registryv1.Agent) { a.CreateTime = timestamppb.New(now.Add(-120 * day)) })
	runs = append(runs, recorded{"sweep-inactive-review.json", start(workflows.SweepScheduleID(workflows.SweepInactive)+"-2026-06-01T00:00:00Z",
		workflows.SweepWorkflowName, workflows.SweepInput{Kind: workflows.SweepInactive, Tenants: []string{"initech"}}),
		sweepResult("initech/i-idle=review", "initech/i-never=review")})

	// The orphaned sweep of tenant hooli finds two agents nobody answers for, more than a breaker
	// of one allows: none is retired, both are held, and one that lacks only its sponsor is reported.
	for _, id := range []string{"o-nobody-1", "o-nobody-2"} {
		put("hooli", id, registryv1.AgentState_AGENT_STATE_ACTIVE, func(a *registryv1.Agent) { a.Owner, a.Sponsor = "", "" })
	}
	put("hooli", "o-no-sponsor", registryv1.AgentState_AGENT_STATE_ACTIVE, func(a *registryv1.Agent) { a.Sponsor = "" })
	runs = append(runs, recorded{"sweep-orphaned-held.json", start(workflows.SweepScheduleID(workflows.SweepOrphaned)+"-2026-06-01T00:00:00Z",
		workflows.SweepWorkflowName, workflows.SweepInput{Kind: workflows.SweepOrphaned, Action: workflows.SweepActionDeprovision,
			Tenants: []string{"hooli"}, MaxRetirements: 1, MaxRetirementPercent: -1}),
		sweepResult("hooli/o-no-sponsor=review", "hooli/o-nobody-1=held_by_breaker", "hooli/o-nobody-2=held_by_breaker")})

	var files []string
	for _, r := range runs {
		r.check(t, r.run)
		keepHistory(t, c, r.run, r.file)
		files = append(files, r.file)
	}
	checkRecorded(t, files, recordedSweepHistories)
	retires := workflowstest.RequestsOf[*registryv1.RetireAgentRequest](fakes, "RetireAgent")
	var triggers []string
	for _, r := range retires {
		triggers = append(triggers, r.GetTrigger()+":"+r.GetTicket())
	}
	slices.Sort(triggers)
	if want := []string{"ttl:", "ttl:sweep:sweep-expired/2026-06-01T10:00:00Z", "ttl:sweep:sweep-expired/2026-06-01T10:00:00Z",
		"ttl:sweep:sweep-expired/2026-06-01T10:00:00Z"}; !slices.Equal(triggers, want) {
		t.Fatalf("retirements (trigger:ticket) = %v, want %v", triggers, want)
	}
	// Every agent expiry retired went through EXPIRED: the TTL run's, and the sweep's of the agents
	// not EXPIRED already.
	var expired []string
	for _, r := range workflowstest.RequestsOf[*registryv1.ExpireAgentRequest](fakes, "ExpireAgent") {
		_, id, _ := workflows.ParseAgentName(r.GetName())
		expired = append(expired, id)
	}
	slices.Sort(expired)
	if want := []string{"s-missed", "s-missed-too", "t-done", "t-expired"}; !slices.Equal(expired, want) {
		t.Fatalf("ExpireAgent of %v, want %v", expired, want)
	}
}
