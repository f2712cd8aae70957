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
			name: "deprovisioning disabled the missing client first (tombstone), registry still shows PENDING",
			setup: func(t *testing.T, f *fixture, retire func()) {
				f.fakes.After("EvaluateAdmission", func() { f.fakes.Issuer.Tombstone(clientName) })
			},
			wantErrType: workflows.ErrRetiredMeanwhile,
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
				// What the registry answers once RetireAgent got in first.
				f.fakes.FailNext("ActivateAgent", errs.FailedPrecondition("AGENT_STATE", "agent is AGENT_STATE_RETIRING"))
			},
			wantActivate: 1,
			wantErrType:  "AGENT_STATE",
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

// TestProvisionCancelledDuringCreateClient: the deprovisioning run cancels provisioning while its
// CreateClient is in flight; the run waits for the call and takes the client back.
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
	undo := workflowstest.RequestsOf[*issuerv1.DisableClientRequest](f.fakes, "DisableClient")
	if len(undo) != 1 || undo[0].GetRequestId() != "provision/acme/o3/credentials-undo" {
		t.Errorf("DisableClient = %v, want the run's undo", undo)
	}
	if n := len(f.fakes.Requests("ActivateAgent")); n != 0 {
		t.Errorf("a cancelled run activated the agent (%d calls)", n)
	}
}

// TestProvisionRefusesDisabledClient: a client that exists but is disabled is not taken for the
// agent's credential, and the agent is not activated with it.
func TestProvisionRefusesDisabledClient(t *testing.T) {
	f := newFixture(t, workflows.ProvisionWorkflowID(tenant, "o4"))
	f.fakes.Registry.Put(workflowstest.NewAgent(tenant, "o4", registryv1.RiskTier_RISK_TIER_LOW))
	c := activeClient("o4")
	c.State = issuerv1.ClientState_CLIENT_STATE_DISABLED
	f.fakes.Issuer.Put(c)

	f.env.ExecuteWorkflow(workflows.ProvisionWorkflow, provisionInput("o4", "low"))

	if err := f.env.GetWorkflowError(); err == nil || !strings.Contains(err.Error(), workflows.ErrClientDisabled) {
		t.Fatalf("run error = %v, want %s", err, workflows.ErrClientDisabled)
	}
	if n := len(f.fakes.Requests("ActivateAgent")); n != 0 {
		t.Errorf("agent activated with a disabled client (%d calls)", n)
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
