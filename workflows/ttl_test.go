package workflows_test

import (
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/workflows"
	"github.com/agentid/agentid/workflows/workflowstest"
)

func TestTTLWorkflow(t *testing.T) {
	const hour = time.Hour
	tests := []struct {
		name  string
		state registryv1.AgentState
		// change, when set, changes the agent an hour into the run (before it expires): its task
		// reported completion, its expire_time was moved or removed.
		change func(a *registryv1.Agent, start time.Time)
		want   string
		// wantStates are the agent's states after each registry call that changed it, in order.
		wantStates []string
		// wantEnd is how long after the start the run ends.
		wantEnd time.Duration
	}{
		{name: "active agent expires, then retires", state: registryv1.AgentState_AGENT_STATE_ACTIVE,
			want: workflows.ResultExpired, wantStates: []string{"ExpireAgent:EXPIRED", "RetireAgent:RETIRING"}, wantEnd: 2 * hour},
		{name: "suspended agent expires, then retires", state: registryv1.AgentState_AGENT_STATE_SUSPENDED,
			want: workflows.ResultExpired, wantStates: []string{"ExpireAgent:EXPIRED", "RetireAgent:RETIRING"}, wantEnd: 2 * hour},
		{name: "retired on completion before expiry", state: registryv1.AgentState_AGENT_STATE_ACTIVE,
			change: func(a *registryv1.Agent, _ time.Time) { a.State = registryv1.AgentState_AGENT_STATE_RETIRING },
			want:   workflows.ResultGoneBefore, wantEnd: 2 * hour},
		{name: "expire time moved later: waits for it", state: registryv1.AgentState_AGENT_STATE_ACTIVE,
			change: func(a *registryv1.Agent, start time.Time) { a.ExpireTime = timestamppb.New(start.Add(5 * hour)) },
			want:   workflows.ResultExpired, wantStates: []string{"ExpireAgent:EXPIRED", "RetireAgent:RETIRING"}, wantEnd: 5 * hour},
		{name: "expire time removed: left alone", state: registryv1.AgentState_AGENT_STATE_ACTIVE,
			change: func(a *registryv1.Agent, _ time.Time) { a.ExpireTime = nil },
			want:   workflows.ResultNoLongerExpires, wantEnd: 2 * hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, workflows.TTLWorkflowID(tenant, "e1"))
			f.fakes.Registry.Clock = f.env.Now
			start := f.env.Now()
			expire := start.Add(2 * hour)
			a := workflowstest.NewAgent(tenant, "e1", registryv1.RiskTier_RISK_TIER_LOW)
			a.State, a.ExpireTime = tt.state, timestamppb.New(expire)
			f.fakes.Registry.Put(a)
			var mu sync.Mutex
			var states []string // the calls that changed the agent's state, with the state they left
			last := tt.state
			for _, m := range []string{"ExpireAgent", "RetireAgent"} {
				f.fakes.After(m, func() {
					mu.Lock()
					defer mu.Unlock()
					if st := f.fakes.Registry.Agent(a.GetName()).GetState(); st != last {
						states, last = append(states, m+":"+stateName(st)), st
					}
				})
			}
			if tt.change != nil {
				f.env.RegisterDelayedCallback(func() {
					b := f.fakes.Registry.Agent(a.GetName())
					tt.change(b, start)
					f.fakes.Registry.Put(b)
					mu.Lock()
					defer mu.Unlock()
					last = b.GetState()
				}, hour)
			}
			f.env.ExecuteWorkflow(workflows.TTLWorkflow, workflows.TTLInput{
				Tenant: tenant, Agent: a.GetName(), AgentID: "e1", ExpireTime: expire,
			})
			var res workflows.TTLResult
			if err := f.env.GetWorkflowResult(&res); err != nil {
				t.Fatal(err)
			}
			if res.Result != tt.want {
				t.Fatalf("result = %+v, want %s", res, tt.want)
			}
			if got := f.env.Now().Sub(start); got < tt.wantEnd || got > tt.wantEnd+time.Minute {
				t.Errorf("the run ended %s after its start, want %s (the expiry)", got, tt.wantEnd)
			}
			mu.Lock()
			defer mu.Unlock()
			if !slices.Equal(states, tt.wantStates) {
				t.Fatalf("states after the registry calls = %v, want %v", states, tt.wantStates)
			}
			retires := workflowstest.RequestsOf[*registryv1.RetireAgentRequest](f.fakes, "RetireAgent")
			expires := workflowstest.RequestsOf[*registryv1.ExpireAgentRequest](f.fakes, "ExpireAgent")
			if tt.want != workflows.ResultExpired {
				if len(retires) != 0 {
					t.Fatalf("RetireAgent = %v, want none", retires)
				}
				return
			}
			if len(retires) != 1 || retires[0].GetTrigger() != "ttl" || retires[0].GetRequestId() != "ttl/acme/e1/retire" {
				t.Errorf("RetireAgent = %v, want one with trigger ttl and the run's request id", retires)
			}
			for _, e := range expires {
				if e.GetRequestId() != "ttl/acme/e1/expire" {
					t.Errorf("ExpireAgent = %v, want the run's request id", e)
				}
			}
		})
	}
}

// TestTTLWorkflowWaitsForTheRegistryClock: a registry whose clock is behind the worker's refuses
// the expiry at first; the run retries until the registry has passed the expire time, and never
// retires an agent the registry has not expired.
func TestTTLWorkflowWaitsForTheRegistryClock(t *testing.T) {
	f := newFixture(t, workflows.TTLWorkflowID(tenant, "e2"))
	f.fakes.Registry.Clock = func() time.Time { return f.env.Now().Add(-10 * time.Second) }
	start := f.env.Now()
	a := workflowstest.NewAgent(tenant, "e2", registryv1.RiskTier_RISK_TIER_LOW)
	a.State, a.ExpireTime = registryv1.AgentState_AGENT_STATE_ACTIVE, timestamppb.New(start.Add(time.Hour))
	f.fakes.Registry.Put(a)
	f.env.ExecuteWorkflow(workflows.TTLWorkflow, workflows.TTLInput{
		Tenant: tenant, Agent: a.GetName(), AgentID: "e2", ExpireTime: a.GetExpireTime().AsTime(),
	})
	var res workflows.TTLResult
	if err := f.env.GetWorkflowResult(&res); err != nil || res.Result != workflows.ResultExpired {
		t.Fatalf("result = %+v, %v; want %s", res, err, workflows.ResultExpired)
	}
	if n := len(workflowstest.RequestsOf[*registryv1.ExpireAgentRequest](f.fakes, "ExpireAgent")); n < 2 {
		t.Errorf("ExpireAgent called %d times, want a refusal and a retry", n)
	}
	if got := f.fakes.Registry.Agent(a.GetName()).GetState(); got != registryv1.AgentState_AGENT_STATE_RETIRING {
		t.Errorf("agent is %s, want RETIRING", got)
	}
}

func stateName(s registryv1.AgentState) string { return s.String()[len("AGENT_STATE_"):] }
