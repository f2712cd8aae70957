package registry_test

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/errs"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/registry/internal/registry"
)

const (
	tenant  = "acme"
	agentID = "agt_01hzzzzzzzzzzzzzzzzzzzzzzz"
)

var agentName = registry.AgentName(tenant, agentID)

// registered is the registration event of the agent under test, owned by team:support.
func registered(t testing.TB) registry.Change {
	a := validAgent(t)
	a.Name, a.AgentId, a.Tenant = agentName, agentID, tenant
	a.State = registryv1.AgentState_AGENT_STATE_PENDING
	a.RiskTier = registryv1.RiskTier_RISK_TIER_LOW
	return registry.AgentRegistered(a)
}

// verified is when the retirement under test was verified.
var verified = timestamppb.New(t0.Add(time.Hour))

// TestAgentCommands runs each command against a given history: given these events, when this
// command, then this event (or none, or this error).
func TestAgentCommands(t *testing.T) {
	reg := registered(t)
	activated := registry.AgentActivated(agentName, "dec-1", "policy:auto")
	rejected := registry.AgentRejected(agentName, "dec-1", "too broad")
	retiring := registry.AgentRetirementRequested(agentName, "project finished", "CHG-1", registry.TriggerRequest)
	retiringAnomaly := registry.AgentRetirementRequested(agentName, "project finished", "CHG-1", registry.TriggerAnomaly)
	retired := registry.AgentRetired(agentName, verified)
	suspended := registry.AgentSuspended(agentName, "exfiltration alert", "alert:a1b2", "INC-7")
	suspendedByOperator := registry.AgentSuspended(agentName, "exfiltration alert", registry.CauseOperator, "INC-7")
	resumed := registry.AgentResumed(agentName, "false positive", "INC-7")

	activate := func(decision, etag string) func(*registry.Agent) (*registry.Change, error) {
		return func(a *registry.Agent) (*registry.Change, error) {
			return a.Activate(registry.ActivateAgent{Tenant: tenant, AgentID: agentID, DecisionID: decision, ApprovedBy: "policy:auto", Etag: etag})
		}
	}
	reject := func(decision string) func(*registry.Agent) (*registry.Change, error) {
		return func(a *registry.Agent) (*registry.Change, error) {
			return a.Reject(registry.RejectAgent{Tenant: tenant, AgentID: agentID, DecisionID: decision, Reason: "too broad"})
		}
	}
	retire := func(owner, etag string) func(*registry.Agent) (*registry.Change, error) {
		return func(a *registry.Agent) (*registry.Change, error) {
			return a.Retire(registry.RetireAgent{Tenant: tenant, AgentID: agentID, Reason: "project finished", Ticket: "CHG-1", Etag: etag, RequireOwner: owner})
		}
	}
	retireFor := func(trigger string) func(*registry.Agent) (*registry.Change, error) {
		return func(a *registry.Agent) (*registry.Change, error) {
			return a.Retire(registry.RetireAgent{Tenant: tenant, AgentID: agentID, Reason: "project finished", Ticket: "CHG-1", Trigger: trigger})
		}
	}
	suspend := func(cause, etag string) func(*registry.Agent) (*registry.Change, error) {
		return func(a *registry.Agent) (*registry.Change, error) {
			return a.Suspend(registry.SuspendAgent{Tenant: tenant, AgentID: agentID, Reason: "exfiltration alert", Cause: cause, Ticket: "INC-7", Etag: etag})
		}
	}
	resume := func(etag string) func(*registry.Agent) (*registry.Change, error) {
		return func(a *registry.Agent) (*registry.Change, error) {
			return a.Resume(registry.ResumeAgent{Tenant: tenant, AgentID: agentID, Reason: "false positive", Ticket: "INC-7", Etag: etag})
		}
	}
	complete := func(a *registry.Agent) (*registry.Change, error) {
		return a.CompleteRetirement(registry.CompleteRetirement{Tenant: tenant, AgentID: agentID, VerifyTime: verified})
	}

	tests := []struct {
		name       string
		given      []registry.Change
		when       func(*registry.Agent) (*registry.Change, error)
		then       *registry.Change
		wantKind   errs.Kind
		wantReason string
	}{
		{name: "activate pending", given: []registry.Change{reg}, when: activate("dec-1", ""), then: &activated},
		{name: "activate pending with current etag", given: []registry.Change{reg}, when: activate("dec-1", "1"), then: &activated},
		{name: "activate pending with stale etag", given: []registry.Change{reg}, when: activate("dec-1", "7"), wantKind: errs.KindConflict, wantReason: "ETAG_MISMATCH"},
		{name: "activate active again with same decision is a no-op", given: []registry.Change{reg, activated}, when: activate("dec-1", "")},
		{name: "activate active again with same decision and old etag is a no-op", given: []registry.Change{reg, activated}, when: activate("dec-1", "1")},
		{name: "activate active with another decision", given: []registry.Change{reg, activated}, when: activate("dec-2", ""), wantKind: errs.KindFailedPrecondition, wantReason: "AGENT_STATE_ACTIVE"},
		{name: "activate rejected", given: []registry.Change{reg, rejected}, when: activate("dec-1", ""), wantKind: errs.KindFailedPrecondition, wantReason: "AGENT_STATE_REJECTED"},
		{name: "activate retiring", given: []registry.Change{reg, retiring}, when: activate("dec-1", ""), wantKind: errs.KindFailedPrecondition, wantReason: "AGENT_STATE_RETIRING"},
		{name: "activate unknown agent", when: activate("dec-1", ""), wantKind: errs.KindNotFound, wantReason: "AGENT_NOT_FOUND"},

		{name: "reject pending", given: []registry.Change{reg}, when: reject("dec-1"), then: &rejected},
		{name: "reject rejected again with same decision is a no-op", given: []registry.Change{reg, rejected}, when: reject("dec-1")},
		{name: "reject rejected with another decision", given: []registry.Change{reg, rejected}, when: reject("dec-2"), wantKind: errs.KindFailedPrecondition, wantReason: "AGENT_STATE_REJECTED"},
		{name: "reject active", given: []registry.Change{reg, activated}, when: reject("dec-2"), wantKind: errs.KindFailedPrecondition, wantReason: "AGENT_STATE_ACTIVE"},
		{name: "reject unknown agent", when: reject("dec-1"), wantKind: errs.KindNotFound, wantReason: "AGENT_NOT_FOUND"},

		{name: "retire pending", given: []registry.Change{reg}, when: retire("", ""), then: &retiring},
		{name: "retire active", given: []registry.Change{reg, activated}, when: retire("", ""), then: &retiring},
		{name: "retire active with current etag", given: []registry.Change{reg, activated}, when: retire("", "2"), then: &retiring},
		{name: "retire active with stale etag", given: []registry.Change{reg, activated}, when: retire("", "1"), wantKind: errs.KindConflict, wantReason: "ETAG_MISMATCH"},
		{name: "retire own agent as owner", given: []registry.Change{reg, activated}, when: retire("team:support", ""), then: &retiring},
		{name: "retire another owner's agent", given: []registry.Change{reg, activated}, when: retire("team:payments", ""), wantKind: errs.KindPermissionDenied, wantReason: "NOT_OWNER"},
		{name: "retire retiring", given: []registry.Change{reg, activated, retiring}, when: retire("", ""), wantKind: errs.KindFailedPrecondition, wantReason: "AGENT_STATE_RETIRING"},
		{name: "retire retired", given: []registry.Change{reg, activated, retiring, retired}, when: retire("", ""), wantKind: errs.KindFailedPrecondition, wantReason: "AGENT_STATE_RETIRED"},
		{name: "retire rejected", given: []registry.Change{reg, rejected}, when: retire("", ""), wantKind: errs.KindFailedPrecondition, wantReason: "AGENT_STATE_REJECTED"},
		{name: "retire unknown agent", when: retire("", ""), wantKind: errs.KindNotFound, wantReason: "AGENT_NOT_FOUND"},

		{name: "retire suspended", given: []registry.Change{reg, activated, suspended}, when: retire("", ""), then: &retiring},
		{name: "retire suspended as its owner", given: []registry.Change{reg, activated, suspended}, when: retire("team:support", "3"), then: &retiring},
		{name: "retire without a trigger records request", given: []registry.Change{reg, activated}, when: retireFor(""), then: &retiring},
		{name: "retire for an anomaly records the trigger", given: []registry.Change{reg, activated, suspended}, when: retireFor(registry.TriggerAnomaly), then: &retiringAnomaly},
		{name: "retire for an unknown trigger", given: []registry.Change{reg, activated}, when: retireFor("boredom"), wantKind: errs.KindInvalidArgument, wantReason: "INVALID_ARGUMENT"},
		{name: "retire resumed", given: []registry.Change{reg, activated, suspended, resumed}, when: retire("", "4"), then: &retiring},

		{name: "suspend active", given: []registry.Change{reg, activated}, when: suspend("alert:a1b2", ""), then: &suspended},
		{name: "suspend active with current etag", given: []registry.Change{reg, activated}, when: suspend("alert:a1b2", "2"), then: &suspended},
		{name: "suspend active without a cause records operator", given: []registry.Change{reg, activated}, when: suspend("", ""), then: &suspendedByOperator},
		{name: "suspend active with stale etag", given: []registry.Change{reg, activated}, when: suspend("alert:a1b2", "1"), wantKind: errs.KindConflict, wantReason: "ETAG_MISMATCH"},
		{name: "suspend suspended is a no-op", given: []registry.Change{reg, activated, suspended}, when: suspend("alert:other", "")},
		{name: "suspend suspended with an old etag is a no-op", given: []registry.Change{reg, activated, suspended}, when: suspend("operator", "2")},
		{name: "suspend resumed", given: []registry.Change{reg, activated, suspended, resumed}, when: suspend("alert:a1b2", "4"), then: &suspended},
		{name: "suspend pending", given: []registry.Change{reg}, when: suspend("operator", ""), wantKind: errs.KindFailedPrecondition, wantReason: "AGENT_STATE_PENDING"},
		{name: "suspend rejected", given: []registry.Change{reg, rejected}, when: suspend("operator", ""), wantKind: errs.KindFailedPrecondition, wantReason: "AGENT_STATE_REJECTED"},
		{name: "suspend retiring", given: []registry.Change{reg, activated, retiring}, when: suspend("operator", ""), wantKind: errs.KindFailedPrecondition, wantReason: "AGENT_STATE_RETIRING"},
		{name: "suspend retired", given: []registry.Change{reg, activated, retiring, retired}, when: suspend("operator", ""), wantKind: errs.KindFailedPrecondition, wantReason: "AGENT_STATE_RETIRED"},
		{name: "suspend unknown agent", when: suspend("operator", ""), wantKind: errs.KindNotFound, wantReason: "AGENT_NOT_FOUND"},
		{name: "suspend with a malformed cause", given: []registry.Change{reg, activated}, when: suspend("alert:", ""), wantKind: errs.KindInvalidArgument, wantReason: "INVALID_ARGUMENT"},

		{name: "resume suspended", given: []registry.Change{reg, activated, suspended}, when: resume(""), then: &resumed},
		{name: "resume suspended with current etag", given: []registry.Change{reg, activated, suspended}, when: resume("3"), then: &resumed},
		{name: "resume suspended with stale etag", given: []registry.Change{reg, activated, suspended}, when: resume("2"), wantKind: errs.KindConflict, wantReason: "ETAG_MISMATCH"},
		{name: "resume active", given: []registry.Change{reg, activated}, when: resume(""), wantKind: errs.KindFailedPrecondition, wantReason: "AGENT_STATE_ACTIVE"},
		{name: "resume resumed", given: []registry.Change{reg, activated, suspended, resumed}, when: resume(""), wantKind: errs.KindFailedPrecondition, wantReason: "AGENT_STATE_ACTIVE"},
		{name: "resume pending", given: []registry.Change{reg}, when: resume(""), wantKind: errs.KindFailedPrecondition, wantReason: "AGENT_STATE_PENDING"},
		{name: "resume retiring", given: []registry.Change{reg, activated, suspended, retiring}, when: resume(""), wantKind: errs.KindFailedPrecondition, wantReason: "AGENT_STATE_RETIRING"},
		{name: "resume unknown agent", when: resume(""), wantKind: errs.KindNotFound, wantReason: "AGENT_NOT_FOUND"},

		{name: "activate suspended", given: []registry.Change{reg, activated, suspended}, when: activate("dec-2", ""), wantKind: errs.KindFailedPrecondition, wantReason: "AGENT_STATE_SUSPENDED"},
		{name: "reject suspended", given: []registry.Change{reg, activated, suspended}, when: reject("dec-2"), wantKind: errs.KindFailedPrecondition, wantReason: "AGENT_STATE_SUSPENDED"},
		{name: "complete suspended", given: []registry.Change{reg, activated, suspended}, when: complete, wantKind: errs.KindFailedPrecondition, wantReason: "AGENT_STATE_SUSPENDED"},

		{name: "complete retiring", given: []registry.Change{reg, activated, retiring}, when: complete, then: &retired},
		{name: "complete retiring from pending", given: []registry.Change{reg, retiring}, when: complete, then: &retired},
		{name: "complete active", given: []registry.Change{reg, activated}, when: complete, wantKind: errs.KindFailedPrecondition, wantReason: "AGENT_STATE_ACTIVE"},
		{name: "complete pending", given: []registry.Change{reg}, when: complete, wantKind: errs.KindFailedPrecondition, wantReason: "AGENT_STATE_PENDING"},
		{name: "complete retired", given: []registry.Change{reg, retiring, retired}, when: complete, wantKind: errs.KindFailedPrecondition, wantReason: "AGENT_STATE_RETIRED"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := registry.LoadAgent(tenant, agentID, history(t, tenant, registry.AggregateAgent, agentID, tt.given...))
			if err != nil {
				t.Fatalf("LoadAgent: %v", err)
			}
			got, err := tt.when(a)
			if tt.wantReason != "" {
				wantError(t, err, tt.wantKind, tt.wantReason, "")
				if got != nil {
					t.Fatalf("got change %s with error", got.Type)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			switch {
			case tt.then == nil && got != nil:
				t.Fatalf("got change %s %v, want none", got.Type, got.Data)
			case tt.then != nil && got == nil:
				t.Fatalf("got no change, want %s", tt.then.Type)
			case tt.then != nil && (got.Type != tt.then.Type || !proto.Equal(got.Data, tt.then.Data)):
				t.Fatalf("got %s %v, want %s %v", got.Type, got.Data, tt.then.Type, tt.then.Data)
			}
		})
	}
}

func TestAgentRegister(t *testing.T) {
	in := validAgent(t)
	in.Environment = registryv1.Environment_ENVIRONMENT_PROD
	in.Scopes = []string{"payment.initiate.limited"}
	// Output-only fields in the input are ignored.
	in.State = registryv1.AgentState_AGENT_STATE_ACTIVE
	in.RiskTier = registryv1.RiskTier_RISK_TIER_LOW
	in.Etag = "99"
	in.Name = "tenants/other/agents/x"

	a := registry.NewAgent(tenant, agentID)
	got, err := a.Register(registry.RegisterAgent{Tenant: tenant, Agent: in})
	if err != nil {
		t.Fatal(err)
	}
	if got.Type != registry.EventAgentRegistered {
		t.Fatalf("type %s", got.Type)
	}
	out := got.Data.(*registryv1.AgentRegistered).GetAgent()
	if out.GetName() != agentName || out.GetAgentId() != agentID || out.GetTenant() != tenant {
		t.Fatalf("identity %s %s %s", out.GetName(), out.GetAgentId(), out.GetTenant())
	}
	if out.GetState() != registryv1.AgentState_AGENT_STATE_PENDING {
		t.Fatalf("state %s, want PENDING", out.GetState())
	}
	if out.GetRiskTier() != registryv1.RiskTier_RISK_TIER_HIGH {
		t.Fatalf("risk tier %s, want HIGH (production payment initiation)", out.GetRiskTier())
	}
	if out.GetEtag() != "" || out.GetCreateTime() != nil {
		t.Fatalf("output-only fields leaked into the event: etag %q create_time %v", out.GetEtag(), out.GetCreateTime())
	}
	if out.GetOwner() != in.GetOwner() || out.GetPublicJwks() != in.GetPublicJwks() || len(out.GetScopes()) != 1 {
		t.Fatalf("input fields not carried over: %v", out)
	}

	t.Run("existing agent", func(t *testing.T) {
		a, err := registry.LoadAgent(tenant, agentID, history(t, tenant, registry.AggregateAgent, agentID, registered(t)))
		if err != nil {
			t.Fatal(err)
		}
		_, err = a.Register(registry.RegisterAgent{Tenant: tenant, Agent: validAgent(t)})
		wantError(t, err, errs.KindAlreadyExists, "AGENT_EXISTS", "")
	})
	t.Run("owner registering for another owner", func(t *testing.T) {
		_, err := registry.NewAgent(tenant, agentID).Register(registry.RegisterAgent{Tenant: tenant, Agent: validAgent(t), RequireOwner: "bob@corp.example"})
		wantError(t, err, errs.KindPermissionDenied, "NOT_OWNER", "")
	})
	t.Run("owner registering for itself", func(t *testing.T) {
		if _, err := registry.NewAgent(tenant, agentID).Register(registry.RegisterAgent{Tenant: tenant, Agent: validAgent(t), RequireOwner: "team:support"}); err != nil {
			t.Fatal(err)
		}
	})
}

func TestAgentFold(t *testing.T) {
	evs := history(t, tenant, registry.AggregateAgent, agentID,
		registered(t),
		registry.AgentActivated(agentName, "dec-1", "policy:auto"),
		registry.AgentRetirementRequested(agentName, "owner left", "", registry.TriggerOwnerDeparted),
	)
	a, err := registry.LoadAgent(tenant, agentID, evs)
	if err != nil {
		t.Fatal(err)
	}
	v := a.View()
	if a.Version != 3 || v.GetEtag() != "3" || a.Etag() != "3" {
		t.Fatalf("version %d etag %q", a.Version, v.GetEtag())
	}
	if v.GetState() != registryv1.AgentState_AGENT_STATE_RETIRING || v.GetStateReason() != "owner left" {
		t.Fatalf("state %s reason %q", v.GetState(), v.GetStateReason())
	}
	if !v.GetCreateTime().AsTime().Equal(t0) || !v.GetUpdateTime().AsTime().Equal(evs[2].Time) {
		t.Fatalf("create %v update %v", v.GetCreateTime().AsTime(), v.GetUpdateTime().AsTime())
	}

	t.Run("event before registration", func(t *testing.T) {
		_, err := registry.LoadAgent(tenant, agentID, history(t, tenant, registry.AggregateAgent, agentID, registry.AgentActivated(agentName, "d", "x")))
		if err == nil {
			t.Fatal("folded an activation of an agent that was never registered")
		}
	})
}

func TestTenantCreate(t *testing.T) {
	got, err := registry.NewTenant("acme").Create(registry.CreateTenant{TenantID: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	want := registry.TenantCreated(&registryv1.Tenant{Name: "tenants/acme", TenantId: "acme", DisplayName: "acme"})
	if got.Type != want.Type || !proto.Equal(got.Data, want.Data) {
		t.Fatalf("got %s %v, want %s %v", got.Type, got.Data, want.Type, want.Data)
	}

	tn, err := registry.LoadTenant("acme", history(t, "acme", registry.AggregateTenant, "acme", *got))
	if err != nil {
		t.Fatal(err)
	}
	if !tn.Exists() || tn.Version != 1 || !tn.View().GetCreateTime().AsTime().Equal(t0) {
		t.Fatalf("tenant after creation: exists %v version %d view %v", tn.Exists(), tn.Version, tn.View())
	}
	_, err = tn.Create(registry.CreateTenant{TenantID: "acme", DisplayName: "Acme"})
	wantError(t, err, errs.KindAlreadyExists, "TENANT_EXISTS", "")
}
