package app_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	workflowpb "go.temporal.io/api/workflow/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	sdklog "go.temporal.io/sdk/log"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/grpcx"
	"github.com/agentid/agentid/pkg/temporaldev"
	"github.com/agentid/agentid/pkg/testkit"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	lifecyclev1 "github.com/agentid/agentid/proto/gen/go/agentid/lifecycle/v1"
	policyv1 "github.com/agentid/agentid/proto/gen/go/agentid/policy/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/lifecycle/app"
	"github.com/agentid/agentid/services/lifecycle/internal/lifecycle"
	"github.com/agentid/agentid/workflows"
	"github.com/agentid/agentid/workflows/workflowstest"
)

const tenant = "acme"

// workerToken is what the fake services see as the lifecycle worker's credentials.
type workerToken struct{}

func (workerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer worker-token"}, nil
}

func (workerToken) RequireTransportSecurity() bool { return false }

// env is the lifecycle service running for real: Temporal dev server, embedded NATS, fake peers, and
// its gRPC API behind the platform's gRPC server.
type env struct {
	fakes     *workflowstest.Services
	approvals *workflowstest.ApprovalIssuer // mints approval tokens the service verifies
	store     *eventstore.Store             // the registry's view, to append agent events
	lcStore   *eventstore.Store
	temporal  client.Client
	api       lifecyclev1.LifecycleServiceClient
	stream    func() (pending, ackPending uint64)
	app       *app.App
}

// principals maps test bearer tokens to callers.
var principals = map[string]*authn.Claims{
	"alice":   {Subject: "alice@corp", Tenant: tenant, Roles: []string{"approver"}},
	"carol":   {Subject: "carol@corp", Tenant: tenant, Roles: []string{"tenant-admin"}},
	"olivia":  {Subject: "olivia@corp", Tenant: tenant, Roles: []string{"owner"}},
	"sam":     {Subject: "sam@corp", Tenant: tenant, Roles: []string{"security-approver"}},
	"auditor": {Subject: "audrey@corp", Tenant: tenant, Roles: []string{"auditor"}},
	"analyst": {Subject: "ann@corp", Tenant: tenant, Roles: []string{"analyst"}},
	"other":   {Subject: "oscar@other", Tenant: "other", Roles: []string{"approver", "tenant-admin"}},
	"root":    {Subject: "bootstrap-admin", Tenant: authn.SystemTenant, Roles: []string{"platform-admin"}},
}

func start(t *testing.T) *env {
	t.Helper()
	return startWith(t, testkit.StartTemporal(t).HostPort())
}

// startWith runs the service against the Temporal frontend at hostPort; opts adjust its config.
func startWith(t *testing.T, hostPort string, opts ...func(*app.Config)) *env {
	t.Helper()
	n := testkit.StartNATS(t)
	js := n.JetStream(t)
	registryStore := eventstore.New(js, eventstore.WithSource("agentid/registry"))
	if err := registryStore.EnsureStreams(t.Context()); err != nil {
		t.Fatal(err)
	}
	lcStore := eventstore.New(js, eventstore.WithSource("agentid/lifecycle"))
	fakes := workflowstest.Start(t)
	approvals := workflowstest.NewApprovalIssuer(t)
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))

	cfg := app.Config{
		TemporalHostPort: hostPort, RegistryAddr: fakes.Addr, IssuerAddr: fakes.Addr, PolicyAddr: fakes.Addr,
		IssuerURL: approvals.URL,
		// Sign-offs are tested in workflows and through SignOffDeprovisioning; these runs end at retirement.
		Deprovision: lifecycle.DeprovisionPolicy{NoSignOffTriggers: workflows.Triggers},
	}
	for _, opt := range opts {
		opt(&cfg)
	}
	a, err := app.New(cfg, app.Deps{Store: lcStore, Logger: log, PerRPC: workerToken{}})
	if err != nil {
		t.Fatal(err)
	}
	if a.Name() != "lifecycle" {
		t.Fatalf("Name() = %q", a.Name())
	}
	t.Cleanup(func() {
		if err := a.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	gs := grpcx.NewServer(grpcx.ServerConfig{Logger: log, Verifier: testkit.StaticVerifier(principals)})
	a.RegisterGRPC(gs)
	cc := testkit.ServeGRPC(t, gs)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, task := range a.Tasks() {
		wg.Go(func() {
			if err := task(ctx); err != nil && ctx.Err() == nil {
				t.Errorf("task failed: %v", err)
			}
		})
	}
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})

	tc, err := client.NewLazyClient(client.Options{HostPort: hostPort, Namespace: workflows.Namespace,
		Logger: sdklog.NewStructuredLogger(slog.New(slog.DiscardHandler))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tc.Close)
	e := &env{fakes: fakes, approvals: approvals, store: registryStore, lcStore: lcStore, temporal: tc, api: lifecyclev1.NewLifecycleServiceClient(cc), app: a}
	e.stream = func() (uint64, uint64) {
		cons, err := js.Consumer(t.Context(), eventstore.StreamAgents, "lifecycle-agent-events")
		if err != nil {
			return 1, 1
		}
		info, err := cons.Info(t.Context())
		if err != nil {
			return 1, 1
		}
		return info.NumPending, uint64(info.NumAckPending)
	}
	return e
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// appendEvent records an agent event as the registry would.
func (e *env) appendEvent(t *testing.T, agentID, key, typ string, data proto.Message) eventstore.Event {
	t.Helper()
	ev, err := e.store.Append(t.Context(), eventstore.Append{
		Tenant: tenant, AggregateType: eventstore.AggregateAgent, AggregateID: agentID, ExpectedVersion: eventstore.AnyVersion,
		IdempotencyKey: key, Type: typ, Subject: workflows.AgentName(tenant, agentID), Data: data,
		Metadata: eventstore.Metadata{Actor: eventstore.Actor{ID: "olivia@corp", Kind: eventstore.ActorHuman}, CorrelationID: "req-" + key},
	})
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

func (e *env) register(t *testing.T, agent *registryv1.Agent, key string) eventstore.Event {
	t.Helper()
	e.fakes.Registry.Put(agent)
	return e.appendEvent(t, agent.GetAgentId(), key, "agent.registered", &registryv1.AgentRegistered{Agent: agent})
}

func (e *env) drained(t *testing.T) {
	t.Helper()
	eventually(t, "the consumer to handle every event", func() bool {
		p, a := e.stream()
		return p == 0 && a == 0
	})
}

// listRuns lists the runs with a workflow id from the visibility store, waiting until it shows one.
func (e *env) listRuns(t *testing.T, id string) []*workflowpb.WorkflowExecutionInfo {
	t.Helper()
	var runs []*workflowpb.WorkflowExecutionInfo
	eventually(t, "visibility of "+id, func() bool {
		resp, err := e.temporal.ListWorkflow(t.Context(), &workflowservice.ListWorkflowExecutionsRequest{Query: "WorkflowId = '" + id + "'"})
		runs = resp.GetExecutions()
		return err == nil && len(runs) > 0
	})
	return runs
}

func TestEventsStartWorkflows(t *testing.T) {
	e := start(t)
	agent := workflowstest.NewAgent(tenant, "ag1", registryv1.RiskTier_RISK_TIER_LOW)
	registeredAt := time.Now()
	first := e.register(t, agent, "register-ag1")
	// The same registration delivered again (a registry retry under a new key): still one run.
	again := e.register(t, agent, "register-ag1-again")

	// The client is created first, the agent activated after it.
	eventually(t, "the agent to be activated", func() bool { return len(e.fakes.Requests("ActivateAgent")) > 0 })
	t.Logf("agent.registered → agent activated with its client: %s", time.Since(registeredAt))
	e.drained(t)
	ctx := t.Context()

	acts := workflowstest.RequestsOf[*registryv1.ActivateAgentRequest](e.fakes, "ActivateAgent")
	if len(acts) != 1 || acts[0].GetName() != agent.GetName() || acts[0].GetApprovedBy() != "policy:auto" ||
		acts[0].GetRequestId() != "provision/acme/ag1/activate" || acts[0].GetDecisionId() == "" {
		t.Fatalf("ActivateAgent = %v", acts)
	}
	creates := workflowstest.RequestsOf[*issuerv1.CreateClientRequest](e.fakes, "CreateClient")
	if c := creates[0]; len(creates) != 1 || c.GetParent() != "tenants/acme" || c.GetClient().GetClientId() != "ag1" ||
		c.GetClient().GetAgent() != agent.GetName() || c.GetClient().GetEnvironment() != "dev" ||
		c.GetClient().GetPublicJwks() != agent.GetPublicJwks() || !slices.Equal(c.GetClient().GetScopes(), agent.GetScopes()) ||
		c.GetClient().GetTokenTtlSeconds() != 600 || c.GetRequestId() != "provision/acme/ag1/credentials" {
		t.Fatalf("CreateClient = %v", creates)
	}
	if n := len(e.fakes.Requests("EvaluateAdmission")); n != 1 {
		t.Errorf("EvaluateAdmission calls = %d, want 1 (one run for two deliveries)", n)
	}
	for _, h := range e.fakes.AuthHeaders() {
		if h != "Bearer worker-token" {
			t.Fatalf("a peer was called with authorization %q, want the worker's token", h)
		}
	}
	if len(e.fakes.AuthHeaders()) == 0 {
		t.Fatal("the peers saw no credentials")
	}

	// One run, started with its search attributes and the causing event in its memo.
	runs := e.listRuns(t, "provision/acme/ag1")
	if len(runs) != 1 {
		t.Fatalf("provisioning runs = %d, want 1", len(runs))
	}
	desc, err := e.temporal.DescribeWorkflowExecution(ctx, "provision/acme/ag1", "")
	if err != nil {
		t.Fatal(err)
	}
	info := desc.GetWorkflowExecutionInfo()
	var eventID, tier string
	_ = converter.GetDefaultDataConverter().FromPayload(info.GetMemo().GetFields()["event_id"], &eventID)
	_ = converter.GetDefaultDataConverter().FromPayload(info.GetSearchAttributes().GetIndexedFields()["RiskTier"], &tier)
	// The consumer (from the first delivery) or the reconciler's first pass (from the read model's
	// latest registration) may start the run: either registration is its cause.
	if (eventID != first.ID && eventID != again.ID) || tier != "low" {
		t.Errorf("memo event_id = %q (want %s or %s), RiskTier = %q", eventID, first.ID, again.ID, tier)
	}

	var evs []eventstore.Event
	eventually(t, "the provisioning decision to be recorded", func() bool {
		evs, _, err = e.lcStore.Load(ctx, tenant, eventstore.AggregateLifecycle, "ag1")
		return err == nil && len(evs) > 0
	})
	if len(evs) != 1 || evs[0].Type != "lifecycle.provisioning_decided" || evs[0].Metadata.CausationID != eventID {
		t.Fatalf("lifecycle events = %+v", evs)
	}

	var got *lifecyclev1.GetAgentWorkflowsResponse
	eventually(t, "the provisioning run to close", func() bool {
		got, err = e.api.GetAgentWorkflows(testkit.WithBearer(ctx, "auditor"), &lifecyclev1.GetAgentWorkflowsRequest{Agent: agent.GetName()})
		return err == nil && len(got.GetWorkflows()) > 0 && got.GetWorkflows()[0].GetCompleted()
	})
	if w := got.GetWorkflows(); len(w) != 1 || w[0].GetKind() != lifecyclev1.WorkflowKind_WORKFLOW_KIND_PROVISION ||
		!w[0].GetCompleted() || w[0].GetStage() != "done" || w[0].GetResult() != "activated" || w[0].GetCloseTime() == nil {
		t.Fatalf("GetAgentWorkflows = %v", got)
	}

	// Retirement: the client is disabled and the retirement completed, once.
	if _, err := e.fakes.Registry.RetireAgent(ctx, &registryv1.RetireAgentRequest{Name: agent.GetName(), RequestId: "retire-ag1"}); err != nil {
		t.Fatal(err)
	}
	retire := &registryv1.AgentRetirementRequested{Name: agent.GetName(), Reason: "project finished", Ticket: "CHG-7"}
	e.appendEvent(t, "ag1", "retire-ag1", "agent.retirement_requested", retire)
	e.appendEvent(t, "ag1", "retire-ag1-again", "agent.retirement_requested", retire)
	eventually(t, "the retirement to complete", func() bool { return len(e.fakes.Requests("CompleteRetirement")) > 0 })
	e.drained(t)

	disables := workflowstest.RequestsOf[*issuerv1.DisableClientRequest](e.fakes, "DisableClient")
	if len(disables) != 1 || disables[0].GetName() != "tenants/acme/clients/ag1" || disables[0].GetReason() != "project finished (ticket CHG-7)" {
		t.Fatalf("DisableClient = %v", disables)
	}
	done := workflowstest.RequestsOf[*registryv1.CompleteRetirementRequest](e.fakes, "CompleteRetirement")
	if len(done) != 1 || done[0].GetName() != agent.GetName() || done[0].GetVerifyTime() == nil {
		t.Fatalf("CompleteRetirement = %v", done)
	}
	if e.fakes.Issuer.Client("tenants/acme/clients/ag1").GetState() != issuerv1.ClientState_CLIENT_STATE_DISABLED {
		t.Fatal("client not disabled")
	}
	eventually(t, "the deprovisioning run to close", func() bool {
		got, err = e.api.GetAgentWorkflows(testkit.WithBearer(ctx, "root"), &lifecyclev1.GetAgentWorkflowsRequest{Agent: agent.GetName()})
		return err == nil && len(got.GetWorkflows()) == 2 && got.GetWorkflows()[1].GetCompleted()
	})
	if d := got.GetWorkflows()[1]; d.GetKind() != lifecyclev1.WorkflowKind_WORKFLOW_KIND_DEPROVISION ||
		d.GetWorkflowId() != "deprovision/acme/ag1" || d.GetResult() != "retired" || d.GetStage() != "done" {
		t.Fatalf("deprovisioning run = %v", d)
	}
	if runs := e.listRuns(t, "deprovision/acme/ag1"); len(runs) != 1 {
		t.Fatalf("deprovisioning runs = %v, want 1", runs)
	}
	if fe, err := e.lcStore.FailedEvents(ctx); err != nil || len(fe) != 0 {
		t.Fatalf("failed events = %v, %v", fe, err)
	}
}

// TestApprovalsThroughTheAPI: approvals go through SubmitApproval with the caller's approval token;
// the run takes the owner step from the agent's sponsor (the owner's delegate) and the security step
// from a security-approver, and refuses, with why, the registrant, a token relayed by someone else and
// a role that may not decide the step.
func TestApprovalsThroughTheAPI(t *testing.T) {
	e := start(t)
	ctx := t.Context()
	agent := workflowstest.NewAgent(tenant, "ag2", registryv1.RiskTier_RISK_TIER_HIGH)
	// olivia@corp owns the agent and registered it (the actor of appendEvent); alice@corp sponsors it.
	agent.Owner, agent.Sponsor = "olivia@corp", "alice@corp"
	e.fakes.Policy.Decide(agent.GetName(), &policyv1.Decision{
		DecisionId: "dec-ag2", Outcome: policyv1.Outcome_OUTCOME_REQUIRE_APPROVAL, RequiredApprovals: []string{"owner", "security"},
	})
	e.register(t, agent, "register-ag2")

	var runID string
	waitingFor := func(want string) {
		t.Helper()
		eventually(t, "waiting for "+want, func() bool {
			got, err := e.api.GetAgentWorkflows(testkit.WithBearer(ctx, "auditor"), &lifecyclev1.GetAgentWorkflowsRequest{Agent: agent.GetName()})
			if err != nil || got.GetWorkflows()[0].GetWaitingFor() != want {
				return false
			}
			runID = got.GetWorkflows()[0].GetRunId()
			return true
		})
	}
	waitingFor("approval by owner")
	if runID == "" {
		t.Fatal("GetAgentWorkflows shows no run id")
	}
	token := func(sub, step, decision string, roles ...string) string {
		return e.approvals.Token(t, authn.ApprovalClaims{Subject: sub, Agent: agent.GetName(), Step: step, Decision: decision, Run: runID, Roles: roles})
	}
	sponsorApproves := token("alice@corp", "owner", "approve", "approver")

	approve := lifecyclev1.ApprovalDecision_APPROVAL_DECISION_APPROVE
	req := func(token, comment, requestID string) *lifecyclev1.SubmitApprovalRequest {
		return &lifecyclev1.SubmitApprovalRequest{Agent: agent.GetName(), Decision: approve, ApprovalToken: token, Comment: comment, RequestId: requestID}
	}
	tests := []struct {
		name      string
		bearer    string
		req       *lifecyclev1.SubmitApprovalRequest
		wantCode  codes.Code
		wantField string
		wantMsg   string // in the refusal
		wantWait  string // waiting_for after a successful call
	}{
		{"no bearer token", "", req(sponsorApproves, "", ""), codes.Unauthenticated, "", "", ""},
		{"analyst may not approve", "analyst", req(sponsorApproves, "", ""), codes.PermissionDenied, "", "", ""},
		{"other tenant", "other", req(sponsorApproves, "", ""), codes.NotFound, "", "", ""},
		{"bad agent name", "alice", &lifecyclev1.SubmitApprovalRequest{Agent: "agents/ag2", Decision: approve, ApprovalToken: sponsorApproves}, codes.InvalidArgument, "agent", "", ""},
		{"no decision", "alice", &lifecyclev1.SubmitApprovalRequest{Agent: agent.GetName(), ApprovalToken: sponsorApproves}, codes.InvalidArgument, "decision", "", ""},
		{"bad request id", "alice", req(sponsorApproves, "", "has space"), codes.InvalidArgument, "request_id", "", ""},
		{"unknown agent", "alice", &lifecyclev1.SubmitApprovalRequest{Agent: "tenants/acme/agents/nobody", Decision: approve, ApprovalToken: sponsorApproves}, codes.NotFound, "", "", ""},
		{"no approval token: self-asserted", "alice", req("", "trust me", "approve-0"), codes.InvalidArgument, "approval_token", "", ""},
		{"the registrant may not approve", "olivia", req(token("olivia@corp", "owner", "approve", "owner"), "", "approve-olivia"),
			codes.FailedPrecondition, "", "olivia@corp registered the agent and cannot approve it", ""},
		{"a token relayed by someone else", "carol", req(token("alice@corp", "owner", "approve", "approver"), "", "approve-relayed"),
			codes.FailedPrecondition, "", "issued to alice@corp, not to the caller carol@corp", ""},
		{"the sponsor approves for the owner", "alice", req(sponsorApproves, "ok", "approve-1"), codes.OK, "", "", "approval by security"},
		{"a repeated request is taken once", "alice", req(sponsorApproves, "ok", "approve-1"), codes.OK, "", "", "approval by security"},
		{"tenant-admin may not approve the security step", "carol", req(token("carol@corp", "security", "approve", "tenant-admin"), "", "approve-carol"),
			codes.FailedPrecondition, "", "the security step is decided by [security-approver]", ""},
		{"security-approver approves the security step", "sam", req(token("sam@corp", "security", "approve", "security-approver"), "", "approve-2"), codes.OK, "", "", ""},
		{"nothing left to approve", "root", req(token("bootstrap-admin", "security", "approve", "platform-admin"), "", "approve-3"), codes.FailedPrecondition, "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := e.api.SubmitApproval(testkit.WithBearer(ctx, tt.bearer), tt.req)
			if status.Code(err) != tt.wantCode {
				t.Fatalf("SubmitApproval: %v, want %v", err, tt.wantCode)
			}
			if tt.wantField != "" && errs.FromStatus(err).Field != tt.wantField {
				t.Fatalf("field = %q, want %q", errs.FromStatus(err).Field, tt.wantField)
			}
			if tt.wantMsg != "" {
				if e := errs.FromStatus(err); e.Reason != "APPROVAL_REFUSED" || !strings.Contains(e.Message, tt.wantMsg) {
					t.Fatalf("refusal = %s %q, want APPROVAL_REFUSED saying %q", e.Reason, e.Message, tt.wantMsg)
				}
			}
			if err != nil {
				return
			}
			w := resp.GetWorkflow()
			if w.GetWorkflowId() != "provision/acme/ag2" || w.GetWaitingFor() != tt.wantWait {
				t.Fatalf("workflow after approval = %v, want waiting for %q", w, tt.wantWait)
			}
		})
	}

	eventually(t, "the agent to be activated", func() bool { return len(e.fakes.Requests("ActivateAgent")) > 0 })
	acts := workflowstest.RequestsOf[*registryv1.ActivateAgentRequest](e.fakes, "ActivateAgent")
	if len(acts) != 1 || acts[0].GetApprovedBy() != "alice@corp,sam@corp" || acts[0].GetDecisionId() != "dec-ag2" {
		t.Fatalf("ActivateAgent = %v", acts)
	}
	var st workflows.Status
	v, err := e.temporal.QueryWorkflow(ctx, "provision/acme/ag2", "", workflows.StatusQuery)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Get(&st); err != nil {
		t.Fatal(err)
	}
	if len(st.ApprovalsSoFar) != 2 || st.ApprovalsSoFar[0].Role != "owner-delegate" || st.ApprovalsSoFar[1].Role != "security-approver" ||
		st.ApprovalsSoFar[0].Comment != "ok" || st.ApprovalsSoFar[0].Token != "" {
		t.Fatalf("approvals = %+v", st.ApprovalsSoFar)
	}
	// The three refusals are evidence in the run's status, with who and why.
	if st.RefusedCount != 3 || len(st.Refused) != 3 || st.Refused[0].Approver != "olivia@corp" || st.Refused[2].Step != "security" ||
		!strings.Contains(st.Refused[2].Reason, "carol@corp holds [tenant-admin]") {
		t.Fatalf("refused = %d %+v, want the registrant, the relayed token and the tenant-admin", st.RefusedCount, st.Refused)
	}

	_, err = e.api.GetAgentWorkflows(testkit.WithBearer(ctx, "auditor"), &lifecyclev1.GetAgentWorkflowsRequest{Agent: "tenants/acme/agents/nobody"})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("GetAgentWorkflows of an agent without runs: %v, want NotFound", err)
	}
	_, err = e.api.GetAgentWorkflows(testkit.WithBearer(ctx, "other"), &lifecyclev1.GetAgentWorkflowsRequest{Agent: agent.GetName()})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("GetAgentWorkflows from another tenant: %v, want NotFound", err)
	}
}

// TestQueuedThroughTheAPI: an agent the registry shows whose provisioning run has not started is
// answered with a queued run and an approval for it with Unavailable, never NotFound.
func TestQueuedThroughTheAPI(t *testing.T) {
	e := start(t)
	ctx := t.Context()
	if err := e.app.Ready(ctx); err != nil {
		t.Fatalf("Ready: %v", err)
	}
	agent := workflowstest.NewAgent(tenant, "ag4", registryv1.RiskTier_RISK_TIER_HIGH)
	e.fakes.Registry.Put(agent) // registered; the event has not reached the lifecycle service

	got, err := e.api.GetAgentWorkflows(testkit.WithBearer(ctx, "auditor"), &lifecyclev1.GetAgentWorkflowsRequest{Agent: agent.GetName()})
	if err != nil {
		t.Fatalf("GetAgentWorkflows before the run started: %v", err)
	}
	if w := got.GetWorkflows(); len(w) != 1 || w[0].GetStage() != "queued" || w[0].GetWaitingFor() != "the provisioning run to start" ||
		w[0].GetWorkflowId() != "provision/acme/ag4" || w[0].GetCompleted() {
		t.Fatalf("GetAgentWorkflows = %v, want a queued provisioning run", got)
	}
	tok := e.approvals.Token(t, authn.ApprovalClaims{Subject: "alice@corp", Agent: agent.GetName(), Step: "owner",
		Decision: workflows.DecisionApprove, Run: "not-started", Roles: []string{"approver"}})
	_, err = e.api.SubmitApproval(testkit.WithBearer(ctx, "alice"), &lifecyclev1.SubmitApprovalRequest{
		Agent: agent.GetName(), Decision: lifecyclev1.ApprovalDecision_APPROVAL_DECISION_APPROVE, RequestId: "approve-early", ApprovalToken: tok})
	if status.Code(err) != codes.Unavailable || errs.FromStatus(err).Reason != "PROVISIONING_NOT_STARTED" {
		t.Fatalf("SubmitApproval before the run started: %v, want Unavailable PROVISIONING_NOT_STARTED", err)
	}
	res, err := e.app.Reconcile(ctx)
	if err != nil || res.Actions["start_provisioning"] != 0 {
		t.Fatalf("Reconcile = %+v, %v: an agent the model does not show yet is not the reconciler's to start", res, err)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name      string
		cfg       app.Config
		wantField string
	}{
		{"complete", app.Config{RegistryAddr: "r:1", IssuerAddr: "i:1", PolicyAddr: "p:1"}, ""},
		{"no registry", app.Config{IssuerAddr: "i:1", PolicyAddr: "p:1"}, "registry_addr"},
		{"no issuer", app.Config{RegistryAddr: "r:1", PolicyAddr: "p:1"}, "issuer_addr"},
		{"no policy", app.Config{RegistryAddr: "r:1", IssuerAddr: "i:1"}, "policy_addr"},
		{"bad namespace", app.Config{RegistryAddr: "r:1", IssuerAddr: "i:1", PolicyAddr: "p:1", Namespace: "a b"}, "namespace"},
		{"reconcile interval too short", app.Config{RegistryAddr: "r:1", IssuerAddr: "i:1", PolicyAddr: "p:1", ReconcileInterval: time.Millisecond}, "reconcile_interval"},
		{"negative stuck threshold", app.Config{RegistryAddr: "r:1", IssuerAddr: "i:1", PolicyAddr: "p:1", StuckAfter: -time.Second}, "stuck_after"},
		{"negative start timeout", app.Config{RegistryAddr: "r:1", IssuerAddr: "i:1", PolicyAddr: "p:1", WorkflowStartTimeout: -time.Second}, "workflow_start_timeout"},
		{"zero back-off delay", app.Config{RegistryAddr: "r:1", IssuerAddr: "i:1", PolicyAddr: "p:1", EventRetryBackoff: []time.Duration{time.Second, 0}}, "event_retry_backoff"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.wantField == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var e *errs.Error
			if !errors.As(err, &e) || e.Field != tt.wantField {
				t.Fatalf("Validate() = %v, want InvalidArgument on %s", err, tt.wantField)
			}
		})
	}
	if _, err := app.New(app.Config{RegistryAddr: "r:1", IssuerAddr: "i:1", PolicyAddr: "p:1"}, app.Deps{}); err == nil {
		t.Fatal("New without a store succeeded")
	}
}

func TestServiceWaitsForTemporal(t *testing.T) {
	// The service starts before Temporal does (as in a compose or Kubernetes roll-out).
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	e := startWith(t, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	agent := workflowstest.NewAgent(tenant, "ag3", registryv1.RiskTier_RISK_TIER_LOW)
	e.register(t, agent, "register-ag3")
	// The consumer has the event (delivered, not acknowledged): its attempt to start the run waits
	// for Temporal, and nothing was decided meanwhile.
	testkit.Eventually(t, 0, "the agent event delivered and unacknowledged", func() (bool, error) {
		pending, ackPending := e.stream()
		return pending == 0 && ackPending == 1, fmt.Errorf("pending %d, ack pending %d", pending, ackPending)
	})
	if n := len(e.fakes.Requests("EvaluateAdmission")); n != 0 {
		t.Fatalf("EvaluateAdmission called %d times without Temporal", n)
	}

	bin, err := temporaldev.EnsureBinary(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	srv, err := temporaldev.Start(t.Context(), temporaldev.Config{Binary: bin, Port: port, UIPort: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop() })

	eventually(t, "the agent to be provisioned once Temporal is up", func() bool { return len(e.fakes.Requests("ActivateAgent")) > 0 })
	if got := e.fakes.Registry.Agent(agent.GetName()).GetState(); got != registryv1.AgentState_AGENT_STATE_ACTIVE {
		t.Fatalf("agent state = %v", got)
	}
}
