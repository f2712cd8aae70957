package workflows_test

import (
	"testing"
	"time"

	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/workflows"
	"github.com/agentid/agentid/workflows/workflowstest"
)

func TestTTLWorkflow(t *testing.T) {
	tests := []struct {
		name        string
		state       registryv1.AgentState
		retireFirst bool // the task reported completion before expiry
		want        string
		wantRetires int
	}{
		{"active agent expires", registryv1.AgentState_AGENT_STATE_ACTIVE, false, workflows.ResultExpired, 1},
		{"suspended agent expires", registryv1.AgentState_AGENT_STATE_SUSPENDED, false, workflows.ResultExpired, 1},
		{"retired on completion before expiry", registryv1.AgentState_AGENT_STATE_ACTIVE, true, workflows.ResultGoneBefore, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, workflows.TTLWorkflowID(tenant, "e1"))
			a := workflowstest.NewAgent(tenant, "e1", registryv1.RiskTier_RISK_TIER_LOW)
			a.State = tt.state
			f.fakes.Registry.Put(a)
			start := f.env.Now()
			expire := start.Add(2 * time.Hour)
			if tt.retireFirst {
				f.env.RegisterDelayedCallback(func() {
					b := workflowstest.NewAgent(tenant, "e1", registryv1.RiskTier_RISK_TIER_LOW)
					b.State = registryv1.AgentState_AGENT_STATE_RETIRING
					f.fakes.Registry.Put(b)
				}, time.Hour)
			}
			f.env.ExecuteWorkflow(workflows.TTLWorkflow, workflows.TTLInput{
				Tenant: tenant, Agent: workflows.AgentName(tenant, "e1"), AgentID: "e1", ExpireTime: expire,
			})
			var res workflows.TTLResult
			if err := f.env.GetWorkflowResult(&res); err != nil {
				t.Fatal(err)
			}
			if res.Result != tt.want {
				t.Fatalf("result = %+v, want %s", res, tt.want)
			}
			if got := f.env.Now(); got.Before(expire) {
				t.Errorf("the run ended at %s, before the expiry %s", got, expire)
			}
			retires := workflowstest.RequestsOf[*registryv1.RetireAgentRequest](f.fakes, "RetireAgent")
			if len(retires) != tt.wantRetires {
				t.Fatalf("RetireAgent = %v", retires)
			}
			if tt.wantRetires == 1 && (retires[0].GetTrigger() != "ttl" || retires[0].GetRequestId() != "ttl/acme/e1/retire") {
				t.Errorf("RetireAgent = %v, want trigger ttl and the run's request id", retires[0])
			}
		})
	}
}
