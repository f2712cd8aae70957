package workflows_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/agentid/agentid/pkg/errs"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/workflows"
	"github.com/agentid/agentid/workflows/workflowstest"
)

// TestProvisionCredentialBeforeActivation: the agent reads ACTIVE only once its client exists; while
// the client is created the agent is still PENDING.
func TestProvisionCredentialBeforeActivation(t *testing.T) {
	f := newFixture(t, workflows.ProvisionWorkflowID(tenant, "o1"))
	name := workflows.AgentName(tenant, "o1")
	f.fakes.Registry.Put(workflowstest.NewAgent(tenant, "o1", registryv1.RiskTier_RISK_TIER_LOW))
	var mu sync.Mutex
	var stateAtCreate registryv1.AgentState
	var clientAtActivate *issuerv1.Client
	f.fakes.After("CreateClient", func() {
		mu.Lock()
		defer mu.Unlock()
		stateAtCreate = f.fakes.Registry.Agent(name).GetState()
	})
	f.fakes.After("ActivateAgent", func() {
		mu.Lock()
		defer mu.Unlock()
		clientAtActivate = f.fakes.Issuer.Client(workflows.ClientName(tenant, "o1"))
	})

	f.env.ExecuteWorkflow(workflows.ProvisionWorkflow, provisionInput("o1", "low"))

	var res workflows.ProvisionResult
	if err := f.env.GetWorkflowResult(&res); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if res.Result != workflows.ResultActivated || stateAtCreate != registryv1.AgentState_AGENT_STATE_PENDING {
		t.Fatalf("result %+v; agent state while the client was created = %v, want PENDING", res, stateAtCreate)
	}
	if clientAtActivate.GetState() != issuerv1.ClientState_CLIENT_STATE_ACTIVE {
		t.Fatalf("client when the agent was activated = %v, want an ACTIVE client", clientAtActivate)
	}
}

// TestProvisionRacingDeprovision runs provisioning against each order of a concurrent retirement
// (RetireAgent in the registry plus the deprovisioning run's DisableClient at the issuer): whatever the
// order, no ACTIVE client remains for an agent that is not ACTIVE.
func TestProvisionRacingDeprovision(t *testing.T) {
	const id = "o2"
	name := workflows.AgentName(tenant, id)
	clientName := workflows.ClientName(tenant, id)
	tests := []struct {
		name string
		// setup arranges the race on the fixture before the run starts.
		setup        func(t *testing.T, f *fixture, retire func())
		wantActivate int // ActivateAgent calls
		wantErrType  string
	}{
		{
			name: "retired and deprovisioned before the client is created",
			setup: func(t *testing.T, f *fixture, retire func()) {
				f.fakes.After("EvaluateAdmission", retire)
			},
			wantErrType: workflows.ErrRetiredMeanwhile,
		},
		{
			name: "deprovisioning disabled the missing client first (tombstone), the registry's read model still shows PENDING",
			setup: func(t *testing.T, f *fixture, retire func()) {
				f.fakes.After("EvaluateAdmission", func() {
					retire()
					// The read model lags: GetAgent answers PENDING while the aggregate is RETIRING.
					a := f.fakes.Registry.Agent(name)
					f.fakes.Registry.Put(workflowstest.NewAgent(tenant, id, registryv1.RiskTier_RISK_TIER_LOW))
					f.fakes.After("GetAgent", func() { f.fakes.Registry.Put(a) })
				})
			},
			wantErrType: workflows.ErrClientTombstoned,
		},
		{
			name: "retired while the client is created",
			setup: func(t *testing.T, f *fixture, retire func()) {
				f.fakes.After("CreateClient", func() {
					a := f.fakes.Registry.Agent(name)
					a.State = registryv1.AgentState_AGENT_STATE_RETIRING
					f.fakes.Registry.Put(a)
				})
			},
			wantErrType: workflows.ErrRetiredMeanwhile,
		},
		{
			name: "retired between the client and the activation",
			setup: func(t *testing.T, f *fixture, retire func()) {
				// RetireAgent gets in right after CreateClient's last look at the agent (the third
				// GetAgent of the run).
				var mu sync.Mutex
				calls := 0
				f.fakes.After("GetAgent", func() {
					mu.Lock()
					defer mu.Unlock()
					if calls++; calls == 3 {
						retire()
					}
				})
			},
			wantActivate: 1,
			wantErrType:  "AGENT_STATE_RETIRING",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, workflows.ProvisionWorkflowID(tenant, id))
			f.fakes.Registry.Put(workflowstest.NewAgent(tenant, id, registryv1.RiskTier_RISK_TIER_LOW))
			retire := func() {
				a := f.fakes.Registry.Agent(name)
				a.State = registryv1.AgentState_AGENT_STATE_RETIRING
				f.fakes.Registry.Put(a)
				_, _ = f.fakes.Issuer.DisableClient(context.Background(), &issuerv1.DisableClientRequest{Name: clientName, RequestId: "deprovision/acme/o2/revoke"})
			}
			tt.setup(t, f, retire)

			f.env.ExecuteWorkflow(workflows.ProvisionWorkflow, provisionInput(id, "low"))

			if err := f.env.GetWorkflowError(); err == nil || !strings.Contains(err.Error(), tt.wantErrType) {
				t.Fatalf("run error = %v, want %s", err, tt.wantErrType)
			}
			if c := f.fakes.Issuer.Client(clientName); c != nil && c.GetState() != issuerv1.ClientState_CLIENT_STATE_DISABLED {
				t.Fatalf("client after the race = %v, want none or DISABLED", c)
			}
			if n := len(f.fakes.Requests("ActivateAgent")); n != tt.wantActivate {
				t.Errorf("ActivateAgent calls = %d, want %d", n, tt.wantActivate)
			}
			if st := f.fakes.Registry.Agent(name).GetState(); st == registryv1.AgentState_AGENT_STATE_ACTIVE {
				t.Errorf("agent became ACTIVE")
			}
			if evs := f.events(t, id); len(evs) != 0 {
				t.Errorf("lifecycle events = %v, want no provisioning_decided", evs)
			}
		})
	}
}

// TestProvisionCancelledDuringCreateClient: provisioning is cancelled (by an operator) while its
// CreateClient is in flight; the run waits for the call, rejects the agent, which is still PENDING and
// whose client id can never be used again, takes the client back and records the rejection: no later
// run asks the approvers again.
func TestProvisionCancelledDuringCreateClient(t *testing.T) {
	f := newFixture(t, workflows.ProvisionWorkflowID(tenant, "o3"))
	f.fakes.Registry.Put(workflowstest.NewAgent(tenant, "o3", registryv1.RiskTier_RISK_TIER_LOW))
	// The issuer has created the client when the cancellation arrives; the activity has not returned.
	f.fakes.After("CreateClient", f.env.CancelWorkflow)

	f.env.ExecuteWorkflow(workflows.ProvisionWorkflow, provisionInput("o3", "low"))

	if err := f.env.GetWorkflowError(); err == nil || !temporal.IsCanceledError(err) {
		t.Fatalf("run error = %v, want cancelled", err)
	}
	if n := len(f.fakes.Requests("CreateClient")); n != 1 {
		t.Fatalf("CreateClient calls = %d, want 1", n)
	}
	c := f.fakes.Issuer.Client(workflows.ClientName(tenant, "o3"))
	if c.GetState() != issuerv1.ClientState_CLIENT_STATE_DISABLED {
		t.Fatalf("client after cancellation = %v, want DISABLED", c)
	}
	// The test environment delivers the cancellation at once instead of waiting for the activity, so
	// CreateClient's own check may see the rejection and disable the client too.
	var undone bool
	for _, r := range workflowstest.RequestsOf[*issuerv1.DisableClientRequest](f.fakes, "DisableClient") {
		undone = undone || r.GetRequestId() == "provision/acme/o3/credentials-undo"
		if r.GetName() != workflows.ClientName(tenant, "o3") {
			t.Errorf("DisableClient of %s, want only the agent's client", r.GetName())
		}
	}
	if !undone {
		t.Errorf("DisableClient = %v, want the run's undo", f.fakes.Requests("DisableClient"))
	}
	if n := len(f.fakes.Requests("ActivateAgent")); n != 0 {
		t.Errorf("a cancelled run activated the agent (%d calls)", n)
	}
	agent := f.fakes.Registry.Agent(workflows.AgentName(tenant, "o3"))
	if agent.GetState() != registryv1.AgentState_AGENT_STATE_REJECTED || !strings.Contains(agent.GetStateReason(), "cancelled") {
		t.Errorf("agent after cancellation = %v (%q), want REJECTED because provisioning was cancelled", agent.GetState(), agent.GetStateReason())
	}
	if got := decidedEvent(t, f, "o3"); got.GetResult() != workflows.ResultRejected {
		t.Errorf("recorded outcome = %v, want rejected", got)
	}
}

// TestProvisionCancelledDuringActivation: provisioning is cancelled while ActivateAgent is in flight
// and the activation takes effect; the ACTIVE agent keeps its working client (before, the run disabled
// it: an ACTIVE agent without a credential for good). The test environment delivers the cancellation
// without waiting for the activity (a real worker waits): the run cannot know whether the activation
// landed, so it tries to reject the agent, which the registry refuses for an ACTIVE agent.
func TestProvisionCancelledDuringActivation(t *testing.T) {
	f := newFixture(t, workflows.ProvisionWorkflowID(tenant, "o5"))
	f.fakes.Registry.Put(workflowstest.NewAgent(tenant, "o5", registryv1.RiskTier_RISK_TIER_LOW))
	// The registry has activated the agent when the cancellation arrives; the activity has not returned.
	f.fakes.After("ActivateAgent", f.env.CancelWorkflow)

	f.env.ExecuteWorkflow(workflows.ProvisionWorkflow, provisionInput("o5", "low"))

	if st := f.fakes.Registry.Agent(workflows.AgentName(tenant, "o5")).GetState(); st != registryv1.AgentState_AGENT_STATE_ACTIVE {
		t.Fatalf("agent = %v, want ACTIVE", st)
	}
	if c := f.fakes.Issuer.Client(workflows.ClientName(tenant, "o5")); c.GetState() != issuerv1.ClientState_CLIENT_STATE_ACTIVE {
		t.Fatalf("client of the ACTIVE agent = %v, want ACTIVE", c)
	}
	if n := len(f.fakes.Requests("DisableClient")); n != 0 {
		t.Errorf("DisableClient calls = %d, want none", n)
	}
	if got := decidedEvent(t, f, "o5"); got.GetResult() != workflows.ResultActivated {
		t.Errorf("recorded outcome = %v, want activated", got)
	}
}

// TestProvisionSettlesUnusableClient: when the agent's client id cannot be used while the agent is
// still PENDING, the run rejects the agent with a reason that says so and records the rejection (a
// final state: no run is started again, no approver asked again), never activates it, and leaves
// another's client alone.
func TestProvisionSettlesUnusableClient(t *testing.T) {
	const id = "o4"
	clientName := workflows.ClientName(tenant, id)
	tests := []struct {
		name        string
		setup       func(f *fixture)
		wantInRsn   string
		wantClient  issuerv1.ClientState // the client afterwards; UNSPECIFIED = none
		wantDisable int                  // DisableClient calls
	}{
		{
			name: "the client exists and is disabled",
			setup: func(f *fixture) {
				c := activeClient(id)
				c.State = issuerv1.ClientState_CLIENT_STATE_DISABLED
				f.fakes.Issuer.Put(c)
			},
			wantInRsn: workflows.ErrClientDisabled, wantClient: issuerv1.ClientState_CLIENT_STATE_DISABLED,
		},
		{
			name: "a tenant-admin disabled the agent's client id before it existed (tombstone)",
			setup: func(f *fixture) {
				_, _ = f.fakes.Issuer.DisableClient(context.Background(), &issuerv1.DisableClientRequest{Name: clientName, RequestId: "admin-1"})
			},
			wantInRsn: workflows.ErrClientTombstoned,
		},
		{
			name: "a staff client holds the agent's id",
			setup: func(f *fixture) {
				c := activeClient(id)
				c.Agent = ""
				f.fakes.Issuer.Put(c)
			},
			wantInRsn: workflows.ErrClientExists, wantClient: issuerv1.ClientState_CLIENT_STATE_ACTIVE,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, workflows.ProvisionWorkflowID(tenant, id))
			f.fakes.Registry.Put(workflowstest.NewAgent(tenant, id, registryv1.RiskTier_RISK_TIER_LOW))
			tt.setup(f)
			disablesBefore := len(f.fakes.Requests("DisableClient"))

			f.env.ExecuteWorkflow(workflows.ProvisionWorkflow, provisionInput(id, "low"))

			var res workflows.ProvisionResult
			if err := f.env.GetWorkflowResult(&res); err != nil {
				t.Fatalf("run: %v, want it to end with the rejection", err)
			}
			agent := f.fakes.Registry.Agent(workflows.AgentName(tenant, id))
			if res.Result != workflows.ResultRejected || agent.GetState() != registryv1.AgentState_AGENT_STATE_REJECTED ||
				!strings.Contains(agent.GetStateReason(), "client id cannot be used") || !strings.Contains(agent.GetStateReason(), tt.wantInRsn) {
				t.Fatalf("result %+v, agent %v (%q), want rejected because of %s", res, agent.GetState(), agent.GetStateReason(), tt.wantInRsn)
			}
			if strings.Contains(agent.GetStateReason(), workflows.ErrRetiredMeanwhile) {
				t.Errorf("reason %q speaks of a retirement", agent.GetStateReason())
			}
			if n := len(f.fakes.Requests("ActivateAgent")); n != 0 {
				t.Errorf("agent activated with an unusable client (%d calls)", n)
			}
			if n := len(f.fakes.Requests("DisableClient")) - disablesBefore; n != 0 {
				t.Errorf("the run disabled a client it did not create (%d calls)", n)
			}
			if c := f.fakes.Issuer.Client(clientName); c.GetState() != tt.wantClient {
				t.Errorf("client afterwards = %v, want %v", c, tt.wantClient)
			}
			if got := decidedEvent(t, f, id); got.GetResult() != workflows.ResultRejected {
				t.Errorf("recorded outcome = %v, want rejected", got)
			}
			if got := f.stages.all(); got[len(got)-1] != workflows.StageDone {
				t.Errorf("stages = %v, want done last", got)
			}
		})
	}
}

// TestNotFoundIsLagForABoundedTime: an agent the registry does not show is retried as read-model lag
// until NotFoundRetryFor has passed since the activity was scheduled, and final after.
func TestNotFoundIsLagForABoundedTime(t *testing.T) {
	tests := []struct {
		name             string
		retryFor         time.Duration
		wantType         string
		wantNonRetryable bool
	}{
		{"within the bound", time.Hour, workflows.ErrAgentNotVisible, false},
		{"after the bound", time.Nanosecond, "AGENT_NOT_FOUND", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fakes := workflowstest.Start(t)
			acts := activitiesFor(t, fakes, nil)
			acts.ReadLag, acts.NotFoundRetryFor = time.Millisecond, tt.retryFor
			var suite testsuite.WorkflowTestSuite
			suite.SetLogger(quietLogger())
			env := suite.NewTestActivityEnvironment()
			env.RegisterActivity(acts)

			_, err := env.ExecuteActivity("EvaluateAdmission", workflows.AdmissionRequest{
				Tenant: tenant, Agent: workflows.AgentName(tenant, "ghost"), RequestID: "provision/acme/ghost/policy",
			})
			var app *temporal.ApplicationError
			if !errors.As(err, &app) || app.Type() != tt.wantType || app.NonRetryable() != tt.wantNonRetryable {
				t.Fatalf("EvaluateAdmission of an unknown agent: %v, want type %s (non-retryable %v)", err, tt.wantType, tt.wantNonRetryable)
			}
		})
	}
}

// TestCreateClientFailedPreconditionByReason: only the issuer's CLIENT_TOMBSTONED and CLIENT_DISABLED
// settle the agent (the run rejects it for good); any other FailedPrecondition from CreateClient fails
// the run without retrying and leaves the agent PENDING for a later run.
func TestCreateClientFailedPreconditionByReason(t *testing.T) {
	const id = "o6"
	tests := []struct {
		name         string
		reason       string
		wantType     string // the run's failure when not rejected
		wantRejected bool
	}{
		{name: "tombstoned", reason: workflows.ErrClientTombstoned, wantRejected: true},
		{name: "disabled", reason: workflows.ErrClientDisabled, wantRejected: true},
		{name: "another precondition", reason: "SIGNING_KEY_NOT_READY", wantType: "SIGNING_KEY_NOT_READY"},
		{name: "a precondition without a reason", reason: "", wantType: "FAILED_PRECONDITION"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, workflows.ProvisionWorkflowID(tenant, id))
			f.fakes.Registry.Put(workflowstest.NewAgent(tenant, id, registryv1.RiskTier_RISK_TIER_LOW))
			f.fakes.FailNext("CreateClient", errs.FailedPrecondition(tt.reason, "the issuer cannot create the client now"))

			f.env.ExecuteWorkflow(workflows.ProvisionWorkflow, provisionInput(id, "low"))

			agent := f.fakes.Registry.Agent(workflows.AgentName(tenant, id))
			if tt.wantRejected {
				var res workflows.ProvisionResult
				if err := f.env.GetWorkflowResult(&res); err != nil || res.Result != workflows.ResultRejected {
					t.Fatalf("run: %+v, %v; want it to end with the rejection", res, err)
				}
				if agent.GetState() != registryv1.AgentState_AGENT_STATE_REJECTED || !strings.Contains(agent.GetStateReason(), tt.reason) {
					t.Fatalf("agent %v (%q), want REJECTED because of %s", agent.GetState(), agent.GetStateReason(), tt.reason)
				}
			} else {
				err := f.env.GetWorkflowError()
				var app *temporal.ApplicationError
				if !errors.As(err, &app) || app.Type() != tt.wantType || !app.NonRetryable() || workflows.IsClientUnusable(err) {
					t.Fatalf("run error = %v, want a non-retryable failure of type %q that does not settle the agent", err, tt.wantType)
				}
				if agent.GetState() != registryv1.AgentState_AGENT_STATE_PENDING || len(f.fakes.Requests("RejectAgent")) != 0 {
					t.Fatalf("agent %v (%q), want it left PENDING", agent.GetState(), agent.GetStateReason())
				}
			}
			if n := len(f.fakes.Requests("CreateClient")); n != 1 {
				t.Errorf("CreateClient calls = %d, want 1 (a refusal is not retried)", n)
			}
			if n := len(f.fakes.Requests("ActivateAgent")); n != 0 {
				t.Errorf("agent activated without a client (%d calls)", n)
			}
		})
	}
}
