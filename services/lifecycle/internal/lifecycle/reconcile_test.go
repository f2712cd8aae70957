package lifecycle_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	commonpb "go.temporal.io/api/common/v1"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	workflowpb "go.temporal.io/api/workflow/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"
	"go.temporal.io/sdk/temporal"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/testkit"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	lifecyclev1 "github.com/agentid/agentid/proto/gen/go/agentid/lifecycle/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/lifecycle/internal/lifecycle"
	"github.com/agentid/agentid/services/lifecycle/internal/readmodel"
	"github.com/agentid/agentid/workflows"
	"github.com/agentid/agentid/workflows/workflowstest"
)

const acme = "acme"

// world is the reconciler on real engines: embedded NATS with the read model's runners, the Temporal
// dev server (no worker: started runs stay RUNNING), and fake registry and issuer. No consumer runs,
// so agent events start nothing by themselves.
type world struct {
	store    *eventstore.Store
	model    *readmodel.Model
	runners  []*eventstore.Runner
	temporal client.Client
	fakes    *workflowstest.Services
	svc      *lifecycle.Service
	rec      *lifecycle.Reconciler
	reg      *prometheus.Registry
}

func newWorld(t *testing.T) *world {
	t.Helper()
	n := testkit.StartNATS(t)
	store := eventstore.New(n.JetStream(t), eventstore.WithSource("agentid/test"))
	if err := store.EnsureStreams(t.Context()); err != nil {
		t.Fatal(err)
	}
	srv := testkit.StartTemporal(t)
	tc, err := client.Dial(client.Options{HostPort: srv.HostPort(), Namespace: workflows.Namespace,
		Logger: sdklog.NewStructuredLogger(slog.New(slog.DiscardHandler))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tc.Close)
	w := &world{store: store, model: readmodel.New(), temporal: tc, fakes: workflowstest.Start(t), reg: prometheus.NewRegistry()}
	w.runners = []*eventstore.Runner{
		store.NewRunner(readmodel.Agents{M: w.model}, eventstore.StreamAgents, nil),
		store.NewRunner(readmodel.Credentials{M: w.model}, eventstore.StreamCredentials, nil),
		store.NewRunner(readmodel.Lifecycle{M: w.model}, eventstore.StreamLifecycle, nil),
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, r := range w.runners {
		wg.Go(func() { _ = r.Run(ctx) })
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
	cc := w.fakes.Conn(t)
	w.svc, err = lifecycle.New(lifecycle.Config{Temporal: tc, Registry: registryv1.NewRegistryServiceClient(cc), Model: w.model})
	if err != nil {
		t.Fatal(err)
	}
	w.rec, err = lifecycle.NewReconciler(lifecycle.ReconcilerConfig{
		Service: w.svc, Model: w.model, Issuer: issuerv1.NewIssuerServiceClient(cc), Registerer: w.reg, StuckAfter: time.Hour,
		RecheckRunning: time.Nanosecond, // every pass asks Temporal: the tests end runs behind its back
	})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// append records an event as its owning service would, and waits until the read model has it
// (w.runners are in the order AGENTS, CREDENTIALS, LIFECYCLE).
func (w *world) append(t *testing.T, aggType, id, typ string, data proto.Message) {
	t.Helper()
	ev, err := w.store.Append(t.Context(), eventstore.Append{
		Tenant: acme, AggregateType: aggType, AggregateID: id, ExpectedVersion: eventstore.AnyVersion,
		IdempotencyKey: typ + "-" + id, Type: typ, Subject: workflows.AgentName(acme, id), Data: data,
		Metadata: eventstore.Metadata{Actor: eventstore.Actor{ID: "olivia@corp", Kind: eventstore.ActorHuman}},
	})
	if err != nil {
		t.Fatal(err)
	}
	streams := map[string]int{eventstore.StreamAgents: 0, eventstore.StreamCredentials: 1, eventstore.StreamLifecycle: 2}
	if i, ok := streams[ev.Stream]; ok && i < len(w.runners) {
		if err := w.runners[i].WaitFor(t.Context(), ev.Sequence); err != nil {
			t.Fatal(err)
		}
	}
}

// agentIn records the events that bring an agent to state.
func (w *world) agentIn(t *testing.T, id string, state registryv1.AgentState) {
	t.Helper()
	name := workflows.AgentName(acme, id)
	w.append(t, eventstore.AggregateAgent, id, "agent.registered", &registryv1.AgentRegistered{Agent: workflowstest.NewAgent(acme, id, registryv1.RiskTier_RISK_TIER_LOW)})
	switch state {
	case registryv1.AgentState_AGENT_STATE_ACTIVE:
		w.append(t, eventstore.AggregateAgent, id, "agent.activated", &registryv1.AgentActivated{Name: name, DecisionId: "d"})
	case registryv1.AgentState_AGENT_STATE_SUSPENDED:
		w.append(t, eventstore.AggregateAgent, id, "agent.activated", &registryv1.AgentActivated{Name: name, DecisionId: "d"})
		w.append(t, eventstore.AggregateAgent, id, "agent.suspended", &registryv1.AgentSuspended{Name: name, Reason: "alert", Cause: "alert:x"})
	case registryv1.AgentState_AGENT_STATE_RETIRING, registryv1.AgentState_AGENT_STATE_RETIRED:
		w.append(t, eventstore.AggregateAgent, id, "agent.activated", &registryv1.AgentActivated{Name: name, DecisionId: "d"})
		w.append(t, eventstore.AggregateAgent, id, "agent.retirement_requested", &registryv1.AgentRetirementRequested{Name: name, Reason: "done", Ticket: "CHG-1"})
		if state == registryv1.AgentState_AGENT_STATE_RETIRED {
			w.append(t, eventstore.AggregateAgent, id, "agent.retired", &registryv1.AgentRetired{Name: name, VerifyTime: timestamppb.Now()})
		}
	}
}

// activeClient records the agent's client as the issuer would, and puts it in the fake issuer.
func (w *world) activeClient(t *testing.T, id string) {
	t.Helper()
	c := &issuerv1.Client{Name: workflows.ClientName(acme, id), ClientId: id, Tenant: acme, Agent: workflows.AgentName(acme, id), State: issuerv1.ClientState_CLIENT_STATE_ACTIVE}
	w.fakes.Issuer.Put(c)
	w.append(t, eventstore.AggregateClient, id, "client.created", &issuerv1.ClientCreated{Client: c})
}

func (w *world) pass(t *testing.T) lifecycle.PassResult {
	t.Helper()
	res, err := w.rec.Pass(t.Context())
	if err != nil {
		t.Fatalf("reconcile pass: %v", err)
	}
	return res
}

func (w *world) runStatus(t *testing.T, id string) (enumspb.WorkflowExecutionStatus, string) {
	t.Helper()
	d, err := w.temporal.DescribeWorkflowExecution(t.Context(), id, "")
	if err != nil {
		t.Fatalf("describe %s: %v", id, err)
	}
	info := d.GetWorkflowExecutionInfo()
	return info.GetStatus(), info.GetExecution().GetRunId()
}

func TestReconcilerRepairs(t *testing.T) {
	w := newWorld(t)
	// r1 was registered but its run never started (no consumer); r2 is retiring without a run; r3 is
	// RETIRED and its client is still ACTIVE; r4 is ACTIVE with its client (nothing to do); r5 is
	// PENDING with the client its running provisioning run has just created (nothing to do); r6 is
	// SUSPENDED with its client, which it needs again when resumed (nothing to do).
	w.agentIn(t, "r1", registryv1.AgentState_AGENT_STATE_PENDING)
	w.agentIn(t, "r2", registryv1.AgentState_AGENT_STATE_RETIRING)
	w.agentIn(t, "r3", registryv1.AgentState_AGENT_STATE_RETIRED)
	w.activeClient(t, "r3")
	w.agentIn(t, "r4", registryv1.AgentState_AGENT_STATE_ACTIVE)
	w.activeClient(t, "r4")
	w.agentIn(t, "r5", registryv1.AgentState_AGENT_STATE_PENDING)
	w.activeClient(t, "r5")
	w.agentIn(t, "r6", registryv1.AgentState_AGENT_STATE_SUSPENDED)
	w.activeClient(t, "r6")

	res := w.pass(t)

	want := map[string]int{lifecycle.ActionStartProvisioning: 2, lifecycle.ActionStartDeprovisioning: 1, lifecycle.ActionDisableClient: 1}
	for action, n := range want {
		if res.Actions[action] != n {
			t.Errorf("actions = %v, want %v", res.Actions, want)
			break
		}
	}
	for _, id := range []string{"provision/acme/r1", "deprovision/acme/r2", "provision/acme/r5"} {
		if st, _ := w.runStatus(t, id); st != enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING {
			t.Errorf("%s: %v, want RUNNING", id, st)
		}
	}
	if _, err := w.temporal.DescribeWorkflowExecution(t.Context(), "provision/acme/r2", ""); err == nil {
		t.Error("a RETIRING agent got a provisioning run")
	}
	disables := workflowstest.RequestsOf[*issuerv1.DisableClientRequest](w.fakes, "DisableClient")
	if len(disables) != 1 || disables[0].GetName() != "tenants/acme/clients/r3" || disables[0].GetRequestId() != "reconcile/disable/acme/r3" {
		t.Fatalf("DisableClient = %v, want the RETIRED agent's client only", disables)
	}
	if c := w.fakes.Issuer.Client("tenants/acme/clients/r3"); c.GetState() != issuerv1.ClientState_CLIENT_STATE_DISABLED {
		t.Errorf("r3's client = %v", c)
	}
	_, runR1 := w.runStatus(t, "provision/acme/r1")

	// A repeated pass does nothing new, whether or not the issuer's disable has reached the model.
	if res := w.pass(t); len(res.Actions) != 0 {
		t.Fatalf("second pass took actions %v", res.Actions)
	}
	w.append(t, eventstore.AggregateClient, "r3", "client.disabled", &issuerv1.ClientDisabled{Name: "tenants/acme/clients/r3", RevokeTime: timestamppb.Now()})
	if res := w.pass(t); len(res.Actions) != 0 {
		t.Fatalf("third pass took actions %v", res.Actions)
	}
	if n := len(w.fakes.Requests("DisableClient")); n != 1 {
		t.Errorf("DisableClient calls = %d after repeated passes, want 1", n)
	}
	if _, run := w.runStatus(t, "provision/acme/r1"); run != runR1 {
		t.Errorf("a repeated pass replaced the running run %s with %s", runR1, run)
	}
	if got := metric(t, w.reg, "lifecycle_reconciler_actions_total", map[string]string{"action": "disable_client", "outcome": "ok"}); got != 1 {
		t.Errorf("lifecycle_reconciler_actions_total{disable_client,ok} = %v, want 1", got)
	}
}

func TestReconcilerRedrivesFailedRuns(t *testing.T) {
	w := newWorld(t)
	w.agentIn(t, "f1", registryv1.AgentState_AGENT_STATE_PENDING)
	w.pass(t)
	_, first := w.runStatus(t, "provision/acme/f1")
	if err := w.temporal.TerminateWorkflow(t.Context(), "provision/acme/f1", "", "test: the run failed"); err != nil {
		t.Fatal(err)
	}

	res := w.pass(t)

	if res.Actions[lifecycle.ActionRedriveProvisioning] != 1 {
		t.Fatalf("actions = %v, want a re-driven provisioning run", res.Actions)
	}
	st, second := w.runStatus(t, "provision/acme/f1")
	if st != enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING || second == first {
		t.Fatalf("run after the re-drive: %v %s (first %s), want a new RUNNING run", st, second, first)
	}
	if res := w.pass(t); len(res.Actions) != 0 {
		t.Fatalf("pass after the re-drive took actions %v", res.Actions)
	}
	// Once the outcome is recorded the agent's run is done, even while the registry's activation
	// has not reached the model.
	if err := w.temporal.TerminateWorkflow(t.Context(), "provision/acme/f1", "", "test"); err != nil {
		t.Fatal(err)
	}
	w.append(t, eventstore.AggregateLifecycle, "f1", workflows.EventProvisioningDecided,
		&lifecyclev1.ProvisioningDecided{Agent: "tenants/acme/agents/f1", WorkflowId: "provision/acme/f1", Result: "activated"})
	if res := w.pass(t); len(res.Actions) != 0 {
		t.Fatalf("pass after the recorded outcome took actions %v", res.Actions)
	}
}

func TestQueuedAndRecordedRuns(t *testing.T) {
	w := newWorld(t)
	ctx := t.Context()
	w.agentIn(t, "q1", registryv1.AgentState_AGENT_STATE_PENDING)

	// Registered, run not started yet: a queued run, never NotFound.
	runs, err := w.svc.AgentRuns(ctx, "tenants/acme/agents/q1")
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) != 1 || runs[0].Stage != lifecycle.StageQueued || runs[0].WaitingFor != "the provisioning run to start" ||
		runs[0].WorkflowID != "provision/acme/q1" || runs[0].Completed {
		t.Fatalf("runs = %+v, want one queued provisioning run", runs)
	}
	approver := &authn.Principal{ID: "alice@corp", Tenant: acme, Roles: []authn.Role{authn.RoleApprover}}
	_, err = w.svc.SubmitApproval(ctx, approver, lifecycle.Approval{Agent: "tenants/acme/agents/q1", Approve: true})
	if e := errs.FromStatus(err); status.Code(errs.ToStatus(err).Err()) != codes.Unavailable || e.Reason != "PROVISIONING_NOT_STARTED" || e.Metadata["retry_after"] == "" {
		t.Fatalf("SubmitApproval before the run started: %v, want Unavailable with a retry hint", err)
	}

	// Known only to the registry (the model lags): still queued.
	w.fakes.Registry.Put(workflowstest.NewAgent(acme, "q2", registryv1.RiskTier_RISK_TIER_LOW))
	if runs, err := w.svc.AgentRuns(ctx, "tenants/acme/agents/q2"); err != nil || len(runs) != 1 || runs[0].Stage != lifecycle.StageQueued {
		t.Fatalf("runs of an agent only the registry shows = %+v, %v", runs, err)
	}

	// Unknown agent: NotFound.
	if _, err := w.svc.AgentRuns(ctx, "tenants/acme/agents/nobody"); !errs.Is(err, errs.KindNotFound) {
		t.Fatalf("runs of an unknown agent: %v, want NotFound", err)
	}
	if _, err := w.svc.SubmitApproval(ctx, approver, lifecycle.Approval{Agent: "tenants/acme/agents/nobody", Approve: true}); !errs.Is(err, errs.KindNotFound) {
		t.Fatalf("approval for an unknown agent: %v, want NotFound", err)
	}

	// Retired long ago: Temporal no longer knows the runs, the recorded outcomes show them.
	w.agentIn(t, "q3", registryv1.AgentState_AGENT_STATE_RETIRED)
	w.append(t, eventstore.AggregateLifecycle, "q3", workflows.EventProvisioningDecided,
		&lifecyclev1.ProvisioningDecided{Agent: "tenants/acme/agents/q3", WorkflowId: "provision/acme/q3", Result: "activated", ApprovedBy: []string{"policy:auto"}})
	w.append(t, eventstore.AggregateLifecycle, "q3", workflows.EventDeprovisioningVerified,
		&lifecyclev1.DeprovisioningVerified{Agent: "tenants/acme/agents/q3", WorkflowId: "deprovision/acme/q3", VerifyTime: timestamppb.Now()})
	runs, err = w.svc.AgentRuns(ctx, "tenants/acme/agents/q3")
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) != 2 || runs[0].Kind != lifecycle.KindProvision || runs[0].Result != "activated" || !runs[0].Completed || runs[0].Stage != "done" ||
		runs[1].Kind != lifecycle.KindDeprovision || runs[1].Result != "retired" || !runs[1].Completed || runs[1].CloseTime.IsZero() {
		t.Fatalf("runs from recorded outcomes = %+v", runs)
	}
	if _, err := w.svc.SubmitApproval(ctx, approver, lifecycle.Approval{Agent: "tenants/acme/agents/q3", Approve: true}); !errs.Is(err, errs.KindFailedPrecondition) {
		t.Fatalf("approval for a finished run: %v, want FailedPrecondition", err)
	}
}

// metric returns the value of the counter or gauge name with labels, 0 when absent.
func metric(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue next
				}
			}
			return m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return 0
}

// completedRuns is a Temporal that shows every run completed (and starts none).
type completedRuns struct{ lifecycle.Temporal }

func (completedRuns) DescribeWorkflowExecution(context.Context, string, string) (*workflowservice.DescribeWorkflowExecutionResponse, error) {
	return &workflowservice.DescribeWorkflowExecutionResponse{WorkflowExecutionInfo: &workflowpb.WorkflowExecutionInfo{
		Status: enumspb.WORKFLOW_EXECUTION_STATUS_COMPLETED,
	}}, nil
}

// TestStuckAgents: a PENDING or RETIRING agent without a running run for longer than StuckAfter counts
// in lifecycle_stuck_agents{state}.
func TestStuckAgents(t *testing.T) {
	n := testkit.StartNATS(t)
	store := eventstore.New(n.JetStream(t), eventstore.WithSource("agentid/test"))
	if err := store.EnsureStreams(t.Context()); err != nil {
		t.Fatal(err)
	}
	w := &world{store: store, model: readmodel.New(), reg: prometheus.NewRegistry(), fakes: workflowstest.Start(t)}
	w.runners = []*eventstore.Runner{store.NewRunner(readmodel.Agents{M: w.model}, eventstore.StreamAgents, nil)}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = w.runners[0].Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	svc, err := lifecycle.New(lifecycle.Config{Temporal: completedRuns{}, Model: w.model})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := lifecycle.NewReconciler(lifecycle.ReconcilerConfig{
		Service: svc, Model: w.model, Issuer: issuerv1.NewIssuerServiceClient(w.fakes.Conn(t)), Registerer: w.reg, StuckAfter: time.Nanosecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	w.agentIn(t, "s1", registryv1.AgentState_AGENT_STATE_PENDING)
	w.agentIn(t, "s2", registryv1.AgentState_AGENT_STATE_PENDING)
	w.agentIn(t, "s3", registryv1.AgentState_AGENT_STATE_RETIRING)
	w.agentIn(t, "s4", registryv1.AgentState_AGENT_STATE_ACTIVE)

	res, err := rec.Pass(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if res.Stuck["pending"] != 2 || res.Stuck["retiring"] != 1 || len(res.Actions) != 0 {
		t.Fatalf("pass = %+v, want 2 pending and 1 retiring stuck, no action", res)
	}
	for state, want := range map[string]float64{"pending": 2, "retiring": 1} {
		if got := metric(t, w.reg, "lifecycle_stuck_agents", map[string]string{"state": state}); got != want {
			t.Errorf("lifecycle_stuck_agents{state=%q} = %v, want %v", state, got, want)
		}
	}
}

// newFakeWorld is the reconciler on embedded NATS and the fake issuer, with tc for Temporal.
func newFakeWorld(t *testing.T, tc lifecycle.Temporal, cfg lifecycle.ReconcilerConfig) *world {
	t.Helper()
	n := testkit.StartNATS(t)
	store := eventstore.New(n.JetStream(t), eventstore.WithSource("agentid/test"))
	if err := store.EnsureStreams(t.Context()); err != nil {
		t.Fatal(err)
	}
	w := &world{store: store, model: readmodel.New(), reg: prometheus.NewRegistry(), fakes: workflowstest.Start(t)}
	w.runners = []*eventstore.Runner{
		store.NewRunner(readmodel.Agents{M: w.model}, eventstore.StreamAgents, nil),
		store.NewRunner(readmodel.Credentials{M: w.model}, eventstore.StreamCredentials, nil),
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, r := range w.runners {
		wg.Go(func() { _ = r.Run(ctx) })
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
	var err error
	w.svc, err = lifecycle.New(lifecycle.Config{Temporal: tc, Model: w.model, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Service, cfg.Model, cfg.Registerer = w.svc, w.model, w.reg
	if cfg.Issuer == nil {
		cfg.Issuer = issuerv1.NewIssuerServiceClient(w.fakes.Conn(t))
	}
	cfg.Logger = slog.New(slog.DiscardHandler)
	if w.rec, err = lifecycle.NewReconciler(cfg); err != nil {
		t.Fatal(err)
	}
	return w
}

// unreachableTemporal answers every call as a Temporal frontend that cannot be reached does, and
// records, at the first call, whether the client named watch was disabled already.
type unreachableTemporal struct {
	lifecycle.Temporal
	issuer *workflowstest.Issuer
	watch  string

	mu              sync.Mutex
	calls           int
	disabledAtFirst bool
}

func (u *unreachableTemporal) called() {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.calls == 0 {
		u.disabledAtFirst = u.issuer.Client(u.watch).GetState() == issuerv1.ClientState_CLIENT_STATE_DISABLED
	}
	u.calls++
}

func (u *unreachableTemporal) DescribeWorkflowExecution(context.Context, string, string) (*workflowservice.DescribeWorkflowExecutionResponse, error) {
	u.called()
	return nil, serviceerror.NewUnavailable("connection refused")
}

func (u *unreachableTemporal) ExecuteWorkflow(context.Context, client.StartWorkflowOptions, any, ...any) (client.WorkflowRun, error) {
	u.called()
	return nil, serviceerror.NewUnavailable("connection refused")
}

// TestReconcilerDisablesClientsWhileTemporalIsDown: the client of a RETIRED agent is disabled although
// Temporal cannot be reached and many agents await their runs; the run checks stop at the first
// unanswered question.
func TestReconcilerDisablesClientsWhileTemporalIsDown(t *testing.T) {
	tc := &unreachableTemporal{watch: "tenants/acme/clients/d9"}
	w := newFakeWorld(t, tc, lifecycle.ReconcilerConfig{StuckAfter: time.Nanosecond})
	tc.issuer = w.fakes.Issuer
	for _, id := range []string{"d1", "d2", "d3", "d4"} {
		w.agentIn(t, id, registryv1.AgentState_AGENT_STATE_PENDING)
	}
	w.agentIn(t, "d5", registryv1.AgentState_AGENT_STATE_RETIRING)
	w.agentIn(t, "d9", registryv1.AgentState_AGENT_STATE_RETIRED)
	w.activeClient(t, "d9")

	res, err := w.rec.Pass(t.Context())

	if err == nil || !strings.Contains(err.Error(), "Temporal is unreachable") {
		t.Errorf("pass error = %v, want one saying Temporal is unreachable", err)
	}
	if c := w.fakes.Issuer.Client("tenants/acme/clients/d9"); c.GetState() != issuerv1.ClientState_CLIENT_STATE_DISABLED {
		t.Fatalf("client of the RETIRED agent = %v, want DISABLED", c)
	}
	if res.Actions[lifecycle.ActionDisableClient] != 1 {
		t.Errorf("actions = %v, want the client disabled", res.Actions)
	}
	tc.mu.Lock()
	calls, first := tc.calls, tc.disabledAtFirst
	tc.mu.Unlock()
	if !first {
		t.Error("Temporal was asked before the client was disabled")
	}
	if calls != 1 {
		t.Errorf("Temporal calls = %d, want 1 (the run checks stop at the first unanswered one)", calls)
	}
	// Not known to be running: every PENDING and RETIRING agent counts as stuck.
	if res.Stuck["pending"] != 4 || res.Stuck["retiring"] != 1 {
		t.Errorf("stuck = %v, want 4 pending and 1 retiring", res.Stuck)
	}
}

// failingRuns is a Temporal whose runs all fail with failure: each start makes a new run that has failed.
type failingRuns struct {
	lifecycle.Temporal
	failure error

	mu     sync.Mutex
	starts int
}

func (f *failingRuns) runID() string { return fmt.Sprintf("run-%d", f.starts) }

func (f *failingRuns) DescribeWorkflowExecution(context.Context, string, string) (*workflowservice.DescribeWorkflowExecutionResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return &workflowservice.DescribeWorkflowExecutionResponse{WorkflowExecutionInfo: &workflowpb.WorkflowExecutionInfo{
		Execution: &commonpb.WorkflowExecution{RunId: f.runID()},
		Status:    enumspb.WORKFLOW_EXECUTION_STATUS_FAILED,
		CloseTime: timestamppb.New(time.Now().Add(-time.Hour)),
	}}, nil
}

func (f *failingRuns) ExecuteWorkflow(_ context.Context, o client.StartWorkflowOptions, _ any, _ ...any) (client.WorkflowRun, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.starts++
	return failedRun{id: o.ID, runID: f.runID(), err: f.failure}, nil
}

func (f *failingRuns) GetWorkflow(_ context.Context, id, runID string) client.WorkflowRun {
	return failedRun{id: id, runID: runID, err: f.failure}
}

func (f *failingRuns) started() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.starts
}

type failedRun struct {
	id, runID string
	err       error
}

func (r failedRun) GetID() string                  { return r.id }
func (r failedRun) GetRunID() string               { return r.runID }
func (r failedRun) GetFirstExecutionRunID() string { return r.runID }
func (r failedRun) Get(context.Context, any) error { return r.err }
func (r failedRun) GetWithOptions(ctx context.Context, v any, _ client.WorkflowRunGetOptions) error {
	return r.Get(ctx, v)
}

// TestReconcilerStopsRedriving: a run that failed because the agent's client id cannot be used is not
// started again; one that keeps failing is started again MaxRedrives times. Either way the agent then
// counts as stuck, pass after pass.
func TestReconcilerStopsRedriving(t *testing.T) {
	appErr := func(typ string) error {
		return temporal.NewNonRetryableApplicationError("refused", typ, nil)
	}
	tests := []struct {
		name        string
		failure     error
		wantRedrive int
	}{
		{"client tombstoned", appErr(workflows.ErrClientTombstoned), 0},
		{"client disabled", appErr(workflows.ErrClientDisabled), 0},
		{"client of someone else", appErr(workflows.ErrClientExists), 0},
		{"failing for a reason a new run may not hit", appErr("UNAVAILABLE"), 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tc := &failingRuns{failure: tt.failure}
			w := newFakeWorld(t, tc, lifecycle.ReconcilerConfig{StuckAfter: time.Nanosecond, MaxRedrives: 2, Interval: time.Nanosecond})
			w.agentIn(t, "g1", registryv1.AgentState_AGENT_STATE_PENDING)

			for pass := 1; pass <= 5; pass++ {
				res := w.pass(t)
				if res.Stuck["pending"] != 1 {
					t.Fatalf("pass %d: stuck = %v, want the agent counted, re-driven or not", pass, res.Stuck)
				}
			}
			if n := tc.started(); n != tt.wantRedrive {
				t.Fatalf("runs started again = %d, want %d", n, tt.wantRedrive)
			}
			if got := metric(t, w.reg, "lifecycle_stuck_agents", map[string]string{"state": "pending"}); got != 1 {
				t.Errorf("lifecycle_stuck_agents{pending} = %v, want 1", got)
			}
		})
	}
}

// TestReconcilerDisableNotFound: only the issuer's NotFound for the client itself counts as nothing to
// disable; a NotFound for the tenant (a wrongly scoped identity) is a failure, tried again next pass.
func TestReconcilerDisableNotFound(t *testing.T) {
	tests := []struct {
		name    string
		answer  error
		wantErr bool
	}{
		{"client not found", errs.NotFound("CLIENT_NOT_FOUND", "client not found"), false},
		{"tenant not found", errs.NotFound("TENANT_NOT_FOUND", "tenant not found"), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newFakeWorld(t, completedRuns{}, lifecycle.ReconcilerConfig{})
			w.agentIn(t, "n1", registryv1.AgentState_AGENT_STATE_RETIRED)
			w.activeClient(t, "n1")
			w.fakes.FailNext("DisableClient", tt.answer)

			res, err := w.rec.Pass(t.Context())

			if (err != nil) != tt.wantErr {
				t.Fatalf("pass error = %v, want error %v", err, tt.wantErr)
			}
			if tt.wantErr {
				if res.Actions[lifecycle.ActionDisableClient] != 0 {
					t.Errorf("actions = %v: a failed disable counted as done", res.Actions)
				}
				// The next pass tries again (and the issuer now disables it).
				if res := w.pass(t); res.Actions[lifecycle.ActionDisableClient] != 1 {
					t.Errorf("next pass actions = %v, want the client disabled", res.Actions)
				}
				if c := w.fakes.Issuer.Client("tenants/acme/clients/n1"); c.GetState() != issuerv1.ClientState_CLIENT_STATE_DISABLED {
					t.Errorf("client = %v, want DISABLED", c)
				}
			}
		})
	}
}

// runningRuns is a Temporal where every run is running; it counts the questions.
type runningRuns struct {
	lifecycle.Temporal
	mu        sync.Mutex
	describes int
}

func (r *runningRuns) DescribeWorkflowExecution(context.Context, string, string) (*workflowservice.DescribeWorkflowExecutionResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.describes++
	return &workflowservice.DescribeWorkflowExecutionResponse{WorkflowExecutionInfo: &workflowpb.WorkflowExecutionInfo{
		Execution: &commonpb.WorkflowExecution{RunId: "run-1"}, Status: enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING,
	}}, nil
}

// TestReconcilerTrustsRunningRuns: runs found running (agents awaiting approval) are not described
// again at every pass, only after RecheckRunning.
func TestReconcilerTrustsRunningRuns(t *testing.T) {
	tc := &runningRuns{}
	w := newFakeWorld(t, tc, lifecycle.ReconcilerConfig{RecheckRunning: time.Hour, StuckAfter: time.Nanosecond})
	for _, id := range []string{"w1", "w2", "w3"} {
		w.agentIn(t, id, registryv1.AgentState_AGENT_STATE_PENDING)
	}
	for pass := 1; pass <= 3; pass++ {
		if res := w.pass(t); len(res.Actions) != 0 || res.Stuck["pending"] != 0 {
			t.Fatalf("pass %d = %+v, want nothing to do and nothing stuck", pass, res)
		}
	}
	tc.mu.Lock()
	defer tc.mu.Unlock()
	if tc.describes != 3 {
		t.Errorf("runs described = %d over three passes, want 3 (each once)", tc.describes)
	}
}

// hangingIssuer is an issuer that never answers DisableClient: each call returns only when its
// context ends, as a gRPC call to a partitioned issuer does.
type hangingIssuer struct {
	mu    sync.Mutex
	calls []string        // clients asked for, in order
	limit []time.Duration // each call's time left when it was made; -1 without a deadline
}

func (h *hangingIssuer) DisableClient(ctx context.Context, in *issuerv1.DisableClientRequest, _ ...grpc.CallOption) (*issuerv1.DisableClientResponse, error) {
	left := time.Duration(-1)
	if dl, ok := ctx.Deadline(); ok {
		left = time.Until(dl)
	}
	h.mu.Lock()
	h.calls, h.limit = append(h.calls, in.GetName()), append(h.limit, left)
	h.mu.Unlock()
	<-ctx.Done()
	return nil, status.FromContextError(ctx.Err()).Err()
}

// TestReconcilerBoundsAHungIssuer: a DisableClient that never answers holds up neither the pass nor
// its run checks: each call ends after DisableTimeout, and once ClientStepBudget is spent the
// clients left wait for the next pass.
func TestReconcilerBoundsAHungIssuer(t *testing.T) {
	tests := []struct {
		name      string
		cfg       lifecycle.ReconcilerConfig
		wantCalls int    // DisableClient calls made
		wantErr   string // in the pass's error
	}{
		{
			name:      "each call times out",
			cfg:       lifecycle.ReconcilerConfig{DisableTimeout: 50 * time.Millisecond, ClientStepBudget: time.Hour},
			wantCalls: 3, wantErr: "DeadlineExceeded",
		},
		{
			name:      "the step's budget runs out",
			cfg:       lifecycle.ReconcilerConfig{DisableTimeout: time.Hour, ClientStepBudget: 100 * time.Millisecond},
			wantCalls: 1, wantErr: "2 clients left for the next pass",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			issuer, tc := &hangingIssuer{}, &runningRuns{}
			cfg := tt.cfg
			cfg.Issuer = issuer
			w := newFakeWorld(t, tc, cfg)
			for _, id := range []string{"h1", "h2", "h3"} {
				w.agentIn(t, id, registryv1.AgentState_AGENT_STATE_RETIRED)
				w.activeClient(t, id)
			}
			w.agentIn(t, "h4", registryv1.AgentState_AGENT_STATE_PENDING)

			type passed struct {
				res lifecycle.PassResult
				err error
			}
			done := make(chan passed, 1)
			go func() {
				res, err := w.rec.Pass(t.Context())
				done <- passed{res, err}
			}()
			var got passed
			select {
			case got = <-done:
			case <-time.After(time.Minute):
				t.Fatal("the pass is still blocked on the hung issuer after a minute")
			}

			if got.err == nil || !strings.Contains(got.err.Error(), tt.wantErr) {
				t.Errorf("pass error = %v, want one containing %q", got.err, tt.wantErr)
			}
			if got.res.Actions[lifecycle.ActionDisableClient] != 0 {
				t.Errorf("actions = %v: a disable that never answered counted as done", got.res.Actions)
			}
			issuer.mu.Lock()
			calls, limits := len(issuer.calls), slices.Clone(issuer.limit)
			issuer.mu.Unlock()
			if calls != tt.wantCalls {
				t.Errorf("DisableClient calls = %d, want %d", calls, tt.wantCalls)
			}
			for i, left := range limits {
				if left < 0 || left > cfg.DisableTimeout || left > cfg.ClientStepBudget {
					t.Errorf("call %d had %v left, want a deadline within DisableTimeout %v and the budget %v", i, left, cfg.DisableTimeout, cfg.ClientStepBudget)
				}
			}
			tc.mu.Lock()
			describes := tc.describes
			tc.mu.Unlock()
			if describes != 1 {
				t.Errorf("runs described = %d, want 1: the run checks must still happen", describes)
			}
		})
	}
}

// TestReconcilerTimeoutDefaults: without settings, a DisableClient call is bounded by
// DefaultDisableTimeout.
func TestReconcilerTimeoutDefaults(t *testing.T) {
	issuer, tc := &hangingIssuer{}, &runningRuns{}
	w := newFakeWorld(t, tc, lifecycle.ReconcilerConfig{Issuer: issuer})
	w.agentIn(t, "t1", registryv1.AgentState_AGENT_STATE_RETIRED)
	w.activeClient(t, "t1")
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = w.rec.Pass(ctx)
	}()
	deadline := time.Now().Add(testkit.DefaultWait)
	for {
		issuer.mu.Lock()
		limits := slices.Clone(issuer.limit)
		issuer.mu.Unlock()
		if len(limits) > 0 {
			if limits[0] < 0 || limits[0] > lifecycle.DefaultDisableTimeout {
				t.Errorf("the call had %v left, want a deadline within %v", limits[0], lifecycle.DefaultDisableTimeout)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the pass never called DisableClient")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
}
