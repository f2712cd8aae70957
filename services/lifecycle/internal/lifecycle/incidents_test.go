package lifecycle_test

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"
	"go.temporal.io/sdk/worker"
	"google.golang.org/protobuf/proto"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/testkit"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
	policyv1 "github.com/agentid/agentid/proto/gen/go/agentid/policy/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/lifecycle/internal/lifecycle"
	"github.com/agentid/agentid/workflows"
	"github.com/agentid/agentid/workflows/workflowstest"
)

// notified records the incident notifications the worker sent.
type notified struct {
	mu   sync.Mutex
	sent []workflows.Notification
}

func (n *notified) Notify(_ context.Context, m workflows.Notification) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.sent = append(n.sent, m)
	return nil
}

// to lists kind:recipient of the notifications about alertID.
func (n *notified) to(alertID string) []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []string
	for _, m := range n.sent {
		if m.AlertID == alertID {
			out = append(out, m.Kind+":"+m.RecipientRole)
		}
	}
	return out
}

// incidentEnv is the incident core on real engines: Temporal dev server with a worker running the
// workflows against fake registry, issuer and policy; embedded NATS holding ALERTS.
type incidentEnv struct {
	temporal  client.Client
	fakes     *workflowstest.Services
	approvals *workflowstest.ApprovalIssuer
	monitor   *eventstore.Store // publishes alerts as the monitor does
	metrics   *prometheus.Registry
	incidents *lifecycle.Incidents
	notified  *notified
}

func startIncidents(t *testing.T) *incidentEnv {
	t.Helper()
	srv := testkit.StartTemporal(t)
	c, err := client.Dial(client.Options{HostPort: srv.HostPort(), Namespace: workflows.Namespace, Logger: sdklog.NewStructuredLogger(slog.New(slog.DiscardHandler))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	n := testkit.StartNATS(t)
	metrics := prometheus.NewRegistry()
	store := eventstore.New(n.JetStream(t), eventstore.WithSource("agentid/monitor"), eventstore.WithRegisterer(metrics))
	if err := store.EnsureStreams(t.Context()); err != nil {
		t.Fatal(err)
	}
	e := &incidentEnv{temporal: c, fakes: workflowstest.Start(t), approvals: workflowstest.NewApprovalIssuer(t), monitor: store, metrics: metrics, notified: &notified{}}
	cc := e.fakes.Conn(t)
	w := worker.New(c, workflows.TaskQueue, worker.Options{})
	workflows.Register(w, &workflows.Activities{
		Registry: registryv1.NewRegistryServiceClient(cc), Issuer: issuerv1.NewIssuerServiceClient(cc), Policy: policyv1.NewPolicyServiceClient(cc),
		Events: store, ApprovalTokens: e.approvals.Verifier, Notifier: e.notified,
	})
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	svc, err := lifecycle.New(lifecycle.Config{Temporal: c, Registry: registryv1.NewRegistryServiceClient(cc), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if e.incidents, err = lifecycle.NewIncidents(lifecycle.IncidentsConfig{Service: svc, Temporal: c}); err != nil {
		t.Fatal(err)
	}
	return e
}

// consume runs the lifecycle's ALERTS consumer until the test ends; a failed delivery is retried
// only after an hour, so only a permanent error reaches the failed-event log within a test.
func (e *incidentEnv) consume(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- e.monitor.Consume(ctx, lifecycle.AlertsConsumer, eventstore.StreamAlerts, lifecycle.AlertSubjects,
			e.incidents.HandleAlert, eventstore.WithBackoff(time.Hour))
	}()
	t.Cleanup(func() { cancel(); <-done })
}

// activeAgent puts an ACTIVE agent of tenant into the fake registry.
func (e *incidentEnv) activeAgent(tenant, id string, tier registryv1.RiskTier) *registryv1.Agent {
	a := workflowstest.NewAgent(tenant, id, tier)
	a.State = registryv1.AgentState_AGENT_STATE_ACTIVE
	e.fakes.Registry.Put(a)
	return a
}

func alertAbout(a *registryv1.Agent, alertID string, sev monitorv1.AlertSeverity) *monitorv1.Alert {
	return &monitorv1.Alert{
		Name: workflows.AlertName(a.GetTenant(), alertID), AlertId: alertID, Tenant: a.GetTenant(), Agent: a.GetName(),
		Detector: "bulk_export", Severity: sev, Summary: "412,000 rows in one request", Owner: a.GetOwner(), Sponsor: a.GetSponsor(),
		RiskTier: workflows.RiskTierName(a.GetRiskTier()), AgentKnown: true,
	}
}

// publish stores data on ALERTS as the monitor's publisher does: event id = eventID (the alert id),
// subject alerts.<tenant>.<detector>, type alert.raised.
func (e *incidentEnv) publish(t *testing.T, eventID, tenant, detector string, data proto.Message) eventstore.Event {
	t.Helper()
	ev, err := e.monitor.PublishWithID(t.Context(), eventID, "alerts."+tenant+"."+detector, lifecycle.EventAlertRaised,
		workflows.AlertName(tenant, eventID), data, eventstore.Metadata{Tenant: tenant, Actor: eventstore.Actor{ID: "monitor", Kind: eventstore.ActorService}})
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

func (e *incidentEnv) status(ctx context.Context, tenant, alertID string) (workflows.IncidentStatus, error) {
	v, err := e.temporal.QueryWorkflow(ctx, workflows.IncidentWorkflowID(tenant, alertID), "", workflows.StatusQuery)
	if err != nil {
		return workflows.IncidentStatus{}, err
	}
	var s workflows.IncidentStatus
	return s, v.Get(&s)
}

// waitStatus waits until the incident run of alertID shows a status ok accepts.
func (e *incidentEnv) waitStatus(t *testing.T, tenant, alertID, what string, ok func(workflows.IncidentStatus) bool) workflows.IncidentStatus {
	t.Helper()
	var s workflows.IncidentStatus
	testkit.Eventually(t, 0, "incident "+alertID+" "+what, func() (bool, error) {
		var err error
		s, err = e.status(t.Context(), tenant, alertID)
		return err == nil && ok(s), err
	})
	return s
}

func waitingForOwner(s workflows.IncidentStatus) bool {
	return s.Stage == workflows.StageIncidentDecide && s.Decider == workflows.StepOwner
}

// runsOf lists every run with the workflow id (visibility).
func (e *incidentEnv) runsOf(t *testing.T, id string) []string {
	t.Helper()
	resp, err := e.temporal.ListWorkflow(t.Context(), &workflowservice.ListWorkflowExecutionsRequest{Query: "WorkflowId = '" + id + "'"})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range resp.GetExecutions() {
		out = append(out, r.GetExecution().GetRunId())
	}
	return out
}

func (e *incidentEnv) token(t *testing.T, agent, runID, sub, step, decision string, roles ...string) string {
	t.Helper()
	return e.approvals.Token(t, authn.ApprovalClaims{Subject: sub, Agent: agent, Step: step, Decision: decision, Run: runID, Roles: roles})
}

// failedTotal sums agentid_eventstore_failed_events_total of handler.
func (e *incidentEnv) failedTotal(t *testing.T, handler string) float64 {
	t.Helper()
	mfs, err := e.metrics.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != "agentid_eventstore_failed_events_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "handler" && l.GetValue() == handler {
					sum += m.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}

// TestAlertConsumer drives the ALERTS consumer with alerts published as the monitor publishes them:
// a critical alert suspends the agent through its incident run; the same alert delivered again,
// while the run waits and after it has ended, starts no second run and suspends nothing again;
// malformed alerts go to the failed-event log on their first delivery with the reason, are counted,
// and start nothing; an alert about an unknown agent opens a run that notifies security only.
func TestAlertConsumer(t *testing.T) {
	e := startIncidents(t)
	// The eventstore's metrics are process-wide: an earlier run of this test (-count) counted its
	// failures under the same handler already.
	failedBefore := e.failedTotal(t, lifecycle.AlertsConsumer)
	e.consume(t)
	ctx := t.Context()
	agent := e.activeAgent("acme", "ag1", registryv1.RiskTier_RISK_TIER_LOW)
	const alertID = "0190d1c0-0000-7000-8000-0000000000c1"
	id := workflows.IncidentWorkflowID("acme", alertID)

	first := e.publish(t, alertID, "acme", "bulk_export", &monitorv1.AlertRaised{Alert: alertAbout(agent, alertID, monitorv1.AlertSeverity_ALERT_SEVERITY_CRITICAL)})
	st := e.waitStatus(t, "acme", alertID, "waiting for the owner", waitingForOwner)
	if !slices.Equal(st.Taken, []string{"suspended", "tokens revoked", "notified owner"}) {
		t.Fatalf("taken = %q", st.Taken)
	}
	if got := e.fakes.Registry.Agent(agent.GetName()).GetState(); got != registryv1.AgentState_AGENT_STATE_SUSPENDED {
		t.Fatalf("agent is %s, want SUSPENDED", got)
	}
	d, err := e.temporal.DescribeWorkflowExecution(ctx, id, "")
	if err != nil {
		t.Fatal(err)
	}
	runID := d.GetWorkflowExecutionInfo().GetExecution().GetRunId()

	// Redelivery while the run waits: the consumer's handler again, and a copy published after the
	// stream's duplicate window (another event id, the same alert).
	if err := e.incidents.HandleAlert(ctx, first); err != nil {
		t.Fatalf("redelivered alert: %v, want success (the run exists)", err)
	}
	e.publish(t, "0190d1c0-0000-7000-8000-0000000000c2", "acme", "bulk_export", &monitorv1.AlertRaised{Alert: alertAbout(agent, alertID, monitorv1.AlertSeverity_ALERT_SEVERITY_CRITICAL)})

	// The owner restores; the run ends.
	if _, err := e.incidents.Decide(ctx, &authn.Principal{ID: agent.GetOwner(), Tenant: "acme"}, lifecycle.Decision{
		Agent: agent.GetName(), AlertID: alertID, Restore: true, Token: e.token(t, agent.GetName(), runID, agent.GetOwner(), "owner", "restore"),
	}); err != nil {
		t.Fatal(err)
	}
	if err := e.temporal.GetWorkflow(ctx, id, runID).Get(ctx, nil); err != nil {
		t.Fatal(err)
	}
	// Redelivered after the run ended: no new run, the restored agent stays ACTIVE.
	if err := e.incidents.HandleAlert(ctx, first); err != nil {
		t.Fatalf("alert redelivered after its run ended: %v, want success", err)
	}
	testkit.Eventually(t, 0, "the consumer to handle every alert", func() (bool, error) {
		cons, err := e.monitor.JetStream().Consumer(ctx, eventstore.StreamAlerts, lifecycle.AlertsConsumer)
		if err != nil {
			return false, err
		}
		info, err := cons.Info(ctx)
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0, err
	})
	testkit.Eventually(t, 0, "visibility of "+id, func() (bool, error) { return len(e.runsOf(t, id)) > 0, nil })
	if runs := e.runsOf(t, id); !slices.Equal(runs, []string{runID}) {
		t.Fatalf("runs of %s = %v, want only %s", id, runs, runID)
	}
	if n := len(e.fakes.Requests("SuspendAgent")); n != 1 {
		t.Fatalf("%d SuspendAgent requests, want 1", n)
	}
	if got := e.fakes.Registry.Agent(agent.GetName()).GetState(); got != registryv1.AgentState_AGENT_STATE_ACTIVE {
		t.Fatalf("agent is %s after restore and a redelivered alert, want ACTIVE", got)
	}

	// Malformed alerts: permanent on their first delivery, recorded with the reason and counted.
	other := e.activeAgent("acme", "ag2", registryv1.RiskTier_RISK_TIER_HIGH)
	wrongTenant := alertAbout(other, "0190d1c0-0000-7000-8000-0000000000d2", monitorv1.AlertSeverity_ALERT_SEVERITY_CRITICAL)
	wrongTenant.Tenant = "evil"
	slashID := alertAbout(other, "0190d1c0/../x", monitorv1.AlertSeverity_ALERT_SEVERITY_CRITICAL)
	foreignAgent := alertAbout(other, "0190d1c0-0000-7000-8000-0000000000d4", monitorv1.AlertSeverity_ALERT_SEVERITY_CRITICAL)
	foreignAgent.Agent = "tenants/beta/agents/ag2"
	malformed := []struct {
		eventID string
		data    proto.Message
		want    string
	}{
		{"0190d1c0-0000-7000-8000-0000000000d1", &monitorv1.Alert{AlertId: "x", Tenant: "acme"}, "data schema mismatch"},
		{"0190d1c0-0000-7000-8000-0000000000d2", &monitorv1.AlertRaised{Alert: wrongTenant}, "is not the event's tenant acme"},
		{"0190d1c0-0000-7000-8000-0000000000d3", &monitorv1.AlertRaised{Alert: slashID}, "is not usable in a workflow id"},
		{"0190d1c0-0000-7000-8000-0000000000d4", &monitorv1.AlertRaised{Alert: foreignAgent}, "is not an agent of tenant acme"},
	}
	seqs := map[uint64]string{}
	for _, m := range malformed {
		seqs[e.publish(t, m.eventID, "acme", "bulk_export", m.data).Sequence] = m.want
	}
	testkit.Eventually(t, 0, "the malformed alerts in the failed-event log", func() (bool, error) {
		failed, err := e.monitor.FailedEvents(ctx)
		if err != nil {
			return false, err
		}
		found := 0
		for _, fe := range failed {
			want, ok := seqs[fe.Sequence]
			if !ok || fe.Handler != lifecycle.AlertsConsumer {
				continue
			}
			if fe.Deliveries != 1 || !strings.Contains(fe.Error, want) {
				t.Fatalf("failed event = %+v, want it recorded on its first delivery saying %q", fe, want)
			}
			found++
		}
		return found == len(malformed), nil
	})
	if got := e.failedTotal(t, lifecycle.AlertsConsumer) - failedBefore; got != float64(len(malformed)) {
		t.Fatalf("agentid_eventstore_failed_events_total{handler=%s} grew by %v, want %d", lifecycle.AlertsConsumer, got, len(malformed))
	}
	if n := len(e.fakes.Requests("SuspendAgent")); n != 1 {
		t.Fatalf("malformed alerts suspended: %d SuspendAgent requests, want still 1", n)
	}
	if got := e.fakes.Registry.Agent(other.GetName()).GetState(); got != registryv1.AgentState_AGENT_STATE_ACTIVE {
		t.Fatalf("agent of the malformed alerts is %s, want ACTIVE", got)
	}

	// An unknown agent: a run that notifies security and suspends nothing.
	const ghostAlert = "0190d1c0-0000-7000-8000-0000000000e1"
	e.publish(t, ghostAlert, "acme", "unknown_agent", &monitorv1.AlertRaised{Alert: &monitorv1.Alert{
		AlertId: ghostAlert, Tenant: "acme", Agent: "ghost-client-7", Detector: "unknown_agent",
		Severity: monitorv1.AlertSeverity_ALERT_SEVERITY_CRITICAL, Summary: "tokens requested by an unregistered client",
	}})
	ghost := e.waitStatus(t, "acme", ghostAlert, "done", func(s workflows.IncidentStatus) bool { return s.Stage == workflows.StageDone })
	if ghost.Outcome != workflows.OutcomeNotified || !slices.Equal(ghost.Taken, []string{"notified security"}) || ghost.Agent != "ghost-client-7" {
		t.Fatalf("unknown agent's incident = %+v, want notified security only", ghost)
	}
	if got := e.notified.to(ghostAlert); !slices.Equal(got, []string{"incident.opened:security"}) {
		t.Fatalf("notifications = %v, want security's", got)
	}
	if n := len(e.fakes.Requests("SuspendAgent")); n != 1 {
		t.Fatalf("an unknown agent's alert suspended something: %d SuspendAgent requests", n)
	}
}

// TestListAndDecideIncidents: ListIncidents shows a tenant only its own incidents (open_only the
// running ones, with who decides now; closed ones with their outcome), pages, and refuses bad
// input; DecideIncident takes only a valid approval token of the caller for the run's current step,
// refuses anything else saying why, records it in the run and changes nothing; an alert of another
// agent or tenant is NotFound.
func TestListAndDecideIncidents(t *testing.T) {
	e := startIncidents(t)
	ctx := t.Context()
	start := func(a *registryv1.Agent, alertID string, sev monitorv1.AlertSeverity) {
		t.Helper()
		ev := eventstore.Event{ID: "evt-" + alertID, Type: lifecycle.EventAlertRaised, Metadata: eventstore.Metadata{Tenant: a.GetTenant()},
			Stream: eventstore.StreamAlerts, DataSchema: "agentid.monitor.v1.AlertRaised"}
		var err error
		if ev.Data, err = proto.Marshal(&monitorv1.AlertRaised{Alert: alertAbout(a, alertID, sev)}); err != nil {
			t.Fatal(err)
		}
		if err := e.incidents.HandleAlert(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	acme1 := e.activeAgent("acme", "l1", registryv1.RiskTier_RISK_TIER_HIGH)
	acme2 := e.activeAgent("acme", "l2", registryv1.RiskTier_RISK_TIER_HIGH)
	beta := e.activeAgent("beta", "l1", registryv1.RiskTier_RISK_TIER_HIGH)
	const (
		openAlert   = "0190d1c0-0000-7000-8000-0000000000f1"
		closedAlert = "0190d1c0-0000-7000-8000-0000000000f2"
		betaAlert   = "0190d1c0-0000-7000-8000-0000000000f3"
	)
	start(acme1, openAlert, monitorv1.AlertSeverity_ALERT_SEVERITY_CRITICAL)
	start(acme2, closedAlert, monitorv1.AlertSeverity_ALERT_SEVERITY_MEDIUM)
	start(beta, betaAlert, monitorv1.AlertSeverity_ALERT_SEVERITY_CRITICAL)
	e.waitStatus(t, "acme", openAlert, "waiting for the owner", waitingForOwner)
	e.waitStatus(t, "beta", betaAlert, "waiting for the owner", waitingForOwner)
	if err := e.temporal.GetWorkflow(ctx, workflows.IncidentWorkflowID("acme", closedAlert), "").Get(ctx, nil); err != nil {
		t.Fatal(err)
	}

	list := func(tenant string, open bool) []lifecycle.Incident {
		t.Helper()
		var got []lifecycle.Incident
		testkit.Eventually(t, 0, "visibility of "+tenant+"'s incidents", func() (bool, error) {
			var err error
			got, _, err = e.incidents.List(ctx, tenant, open, 0, "")
			want := 2
			if open || tenant == "beta" {
				want = 1
			}
			// Visibility of a closed run may lag its close.
			return err == nil && len(got) == want && (open || tenant == "beta" || slices.ContainsFunc(got, func(i lifecycle.Incident) bool { return i.Run.Completed })), err
		})
		return got
	}
	all := list("acme", false)
	for _, inc := range all {
		if !strings.HasPrefix(inc.Run.WorkflowID, "incident/acme/") || !strings.HasPrefix(inc.Agent, "tenants/acme/") {
			t.Fatalf("acme's list holds %+v", inc)
		}
		switch inc.Alert {
		case workflows.AlertName("acme", openAlert):
			if inc.Run.Completed || inc.Decider != workflows.StepOwner || inc.Severity != "critical" || inc.Agent != acme1.GetName() ||
				!slices.Equal(inc.Actions, []string{"suspended", "tokens revoked", "notified owner"}) {
				t.Fatalf("open incident = %+v", inc)
			}
		case workflows.AlertName("acme", closedAlert):
			if !inc.Run.Completed || inc.Outcome != workflows.OutcomeNotified || inc.Decider != "" || inc.Severity != "medium" {
				t.Fatalf("closed incident = %+v", inc)
			}
		default:
			t.Fatalf("unexpected incident %+v", inc)
		}
	}
	if open := list("acme", true); open[0].Alert != workflows.AlertName("acme", openAlert) {
		t.Fatalf("open_only = %+v, want the critical incident only", open)
	}
	if b := list("beta", false); b[0].Agent != beta.GetName() {
		t.Fatalf("beta's incidents = %+v", b)
	}
	page, next, err := e.incidents.List(ctx, "acme", false, 1, "")
	if err != nil || len(page) != 1 || next == "" {
		t.Fatalf("first page of 1: %d incidents, next %q, %v", len(page), next, err)
	}
	rest, _, err := e.incidents.List(ctx, "acme", false, 1, next)
	if err != nil || len(rest) != 1 || rest[0].Run.WorkflowID == page[0].Run.WorkflowID {
		t.Fatalf("second page: %+v, %v; want the other incident", rest, err)
	}
	for _, bad := range []struct {
		tenant, token, field string
		size                 int
	}{{"ACME!", "", "parent", 0}, {"acme", "", "page_size", -1}, {"acme", "not base64!", "page_token", 0}} {
		if _, _, err := e.incidents.List(ctx, bad.tenant, false, bad.size, bad.token); errs.FromStatus(err).Field != bad.field {
			t.Errorf("List(%q, size %d, token %q): %v, want InvalidArgument on %s", bad.tenant, bad.size, bad.token, err, bad.field)
		}
	}

	// Decisions.
	d, err := e.temporal.DescribeWorkflowExecution(ctx, workflows.IncidentWorkflowID("acme", openAlert), "")
	if err != nil {
		t.Fatal(err)
	}
	runID := d.GetWorkflowExecutionInfo().GetExecution().GetRunId()
	owner := &authn.Principal{ID: acme1.GetOwner(), Tenant: "acme", Roles: []authn.Role{authn.RoleOwner}}
	mallory := &authn.Principal{ID: "mallory@corp.example", Tenant: "acme", Roles: []authn.Role{authn.RoleOwner}}
	ownerRestores := e.token(t, acme1.GetName(), runID, acme1.GetOwner(), "owner", "restore")
	decision := func(agent, alert, token string) lifecycle.Decision {
		return lifecycle.Decision{Agent: agent, AlertID: alert, Restore: true, Token: token, Comment: "reviewed"}
	}
	refusals := []struct {
		name       string
		p          *authn.Principal
		d          lifecycle.Decision
		wantKind   errs.Kind
		wantReason string // reason code or field
		wantMsg    string
		recorded   bool
	}{
		{"no approval token", owner, decision(acme1.GetName(), openAlert, ""), errs.KindInvalidArgument, "approval_token", "", false},
		{"unknown alert", owner, decision(acme1.GetName(), "0190d1c0-0000-7000-8000-0000000000ff", ownerRestores), errs.KindNotFound, "INCIDENT_NOT_FOUND", "", false},
		{"another agent's incident", owner, decision(acme2.GetName(), openAlert, ownerRestores), errs.KindNotFound, "INCIDENT_NOT_FOUND", "", false},
		{"another tenant's incident", owner, decision("tenants/beta/agents/l1", openAlert, ownerRestores), errs.KindNotFound, "INCIDENT_NOT_FOUND", "", false},
		{"bad alert id", owner, decision(acme1.GetName(), "a/b", ownerRestores), errs.KindInvalidArgument, "alert_id", "", false},
		{"garbage token", owner, decision(acme1.GetName(), openAlert, "not-a-jws"), errs.KindFailedPrecondition, "APPROVAL_REFUSED", "", true},
		{"token of another run", owner, decision(acme1.GetName(), openAlert, e.token(t, acme1.GetName(), "another-run", acme1.GetOwner(), "owner", "restore")),
			errs.KindFailedPrecondition, "APPROVAL_REFUSED", "not this incident run", true},
		{"token for the security step", owner, decision(acme1.GetName(), openAlert, e.token(t, acme1.GetName(), runID, acme1.GetOwner(), "security", "restore")),
			errs.KindFailedPrecondition, "APPROVAL_REFUSED", "waits for a decision by owner", true},
		{"someone else's token", mallory, decision(acme1.GetName(), openAlert, e.token(t, acme1.GetName(), runID, acme1.GetOwner(), "owner", "restore")),
			errs.KindFailedPrecondition, "APPROVAL_REFUSED", "not to the caller mallory@corp.example", true},
		{"token says retire, request restore", owner, decision(acme1.GetName(), openAlert, e.token(t, acme1.GetName(), runID, acme1.GetOwner(), "owner", "retire")),
			errs.KindFailedPrecondition, "APPROVAL_REFUSED", "the request says restore", true},
	}
	recorded := 0
	for _, r := range refusals {
		t.Run(r.name, func(t *testing.T) {
			_, err := e.incidents.Decide(ctx, r.p, r.d)
			got := errs.FromStatus(err)
			if err == nil || got.Kind != r.wantKind || (got.Reason != r.wantReason && got.Field != r.wantReason) || !strings.Contains(got.Message, r.wantMsg) {
				t.Fatalf("Decide: %v (kind %v, reason %q, field %q), want %v %s saying %q", err, got.Kind, got.Reason, got.Field, r.wantKind, r.wantReason, r.wantMsg)
			}
			if r.recorded {
				recorded++
			}
			st, err := e.status(ctx, "acme", openAlert)
			if err != nil {
				t.Fatal(err)
			}
			if !waitingForOwner(st) || st.Decision != nil || st.RefusedCount != recorded {
				t.Fatalf("after the refusal: %+v, want still waiting for the owner with %d refusals recorded", st, recorded)
			}
		})
	}
	if n := len(e.fakes.Requests("ResumeAgent")) + len(e.fakes.Requests("RetireAgent")); n != 0 {
		t.Fatalf("refused decisions changed the agent: %d resume/retire requests", n)
	}
	if got := e.fakes.Registry.Agent(acme1.GetName()).GetState(); got != registryv1.AgentState_AGENT_STATE_SUSPENDED {
		t.Fatalf("agent is %s after refused decisions, want SUSPENDED", got)
	}

	inc, err := e.incidents.Decide(ctx, owner, decision(acme1.GetName(), openAlert, ownerRestores))
	if err != nil {
		t.Fatal(err)
	}
	if inc.Outcome != workflows.OutcomeRestored || inc.Run.RunID != runID || inc.Alert != workflows.AlertName("acme", openAlert) {
		t.Fatalf("decided incident = %+v", inc)
	}
	if got := e.fakes.Registry.Agent(acme1.GetName()).GetState(); got != registryv1.AgentState_AGENT_STATE_ACTIVE {
		t.Fatalf("agent is %s after restore, want ACTIVE", got)
	}
	_, err = e.incidents.Decide(ctx, owner, decision(acme1.GetName(), openAlert, e.token(t, acme1.GetName(), runID, acme1.GetOwner(), "owner", "restore")))
	if got := errs.FromStatus(err); got.Kind != errs.KindFailedPrecondition || got.Reason != "NOT_WAITING_FOR_DECISION" {
		t.Fatalf("a decision after the run ended: %v, want FailedPrecondition NOT_WAITING_FOR_DECISION", err)
	}
	if n := len(e.fakes.Requests("ResumeAgent")); n != 1 {
		t.Fatalf("%d ResumeAgent requests, want 1", n)
	}
}

// TestHandleAlertDecidesActions: the consumer decides each alert's actions with its incident policy
// (per-tenant overrides included) and the run takes them as given: the worker's own policy is the
// built-in table, so an override only the consumer knows shows that the run did not decide again.
// A policy that is not valid is refused at construction.
func TestHandleAlertDecidesActions(t *testing.T) {
	e := startIncidents(t)
	svc, err := lifecycle.New(lifecycle.Config{Temporal: e.temporal, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lifecycle.NewIncidents(lifecycle.IncidentsConfig{Service: svc, Temporal: e.temporal, Policy: &workflows.IncidentPolicy{
		Tenants: map[string]map[string][]string{"strict": {"critical": {"notify"}}},
	}}); err == nil || !strings.Contains(err.Error(), "critical alerts must suspend") {
		t.Fatalf("NewIncidents with a critical row that does not suspend: %v, want refused", err)
	}
	inc, err := lifecycle.NewIncidents(lifecycle.IncidentsConfig{Service: svc, Temporal: e.temporal, Policy: &workflows.IncidentPolicy{
		Tenants: map[string]map[string][]string{"strict": {"medium": {"suspend", "notify"}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	ghost := alertAbout(workflowstest.NewAgent("acme", "ghost", registryv1.RiskTier_RISK_TIER_UNSPECIFIED), "0190d1c0-0000-7000-8000-0000000000e3", monitorv1.AlertSeverity_ALERT_SEVERITY_CRITICAL)
	ghost.Agent, ghost.AgentKnown = "ghost-client-7", false
	tests := []struct {
		name        string
		tenant      string
		alert       *monitorv1.Alert
		wantActions []string
		wantTaken   []string
	}{
		{"medium alert, tenant override suspends", "strict",
			alertAbout(e.activeAgent("strict", "ag1", registryv1.RiskTier_RISK_TIER_LOW), "0190d1c0-0000-7000-8000-0000000000e1", monitorv1.AlertSeverity_ALERT_SEVERITY_MEDIUM),
			[]string{"suspend", "notify"}, []string{"suspended", "tokens revoked", "notified owner"}},
		{"medium alert, built-in table notifies", "acme",
			alertAbout(e.activeAgent("acme", "ag1", registryv1.RiskTier_RISK_TIER_LOW), "0190d1c0-0000-7000-8000-0000000000e2", monitorv1.AlertSeverity_ALERT_SEVERITY_MEDIUM),
			[]string{"notify"}, []string{"notified owner"}},
		{"unknown agent: security notified, nothing suspended", "acme", ghost, []string{"notify"}, []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := e.publish(t, tt.alert.GetAlertId(), tt.tenant, tt.alert.GetDetector(), &monitorv1.AlertRaised{Alert: tt.alert})
			if err := inc.HandleAlert(t.Context(), ev); err != nil {
				t.Fatal(err)
			}
			st := e.waitStatus(t, tt.tenant, tt.alert.GetAlertId(), "past its first actions", func(s workflows.IncidentStatus) bool {
				return s.Stage == workflows.StageIncidentDecide || s.Stage == workflows.StageDone
			})
			if !slices.Equal(st.Actions, tt.wantActions) || !slices.Equal(st.Taken[:min(len(st.Taken), len(tt.wantTaken))], tt.wantTaken) {
				t.Fatalf("status = actions %q, taken %q; want actions %q, taken starting with %q", st.Actions, st.Taken, tt.wantActions, tt.wantTaken)
			}
		})
	}
}
