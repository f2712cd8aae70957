package workflows_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/agentid/agentid/pkg/eventstore"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	lifecyclev1 "github.com/agentid/agentid/proto/gen/go/agentid/lifecycle/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/workflows"
	"github.com/agentid/agentid/workflows/workflowstest"
)

func retiringAgent(id string) *registryv1.Agent {
	a := workflowstest.NewAgent(tenant, id, registryv1.RiskTier_RISK_TIER_LOW)
	a.State = registryv1.AgentState_AGENT_STATE_RETIRING
	return a
}

func activeClient(id string) *issuerv1.Client {
	return &issuerv1.Client{
		Name: workflows.ClientName(tenant, id), ClientId: id, Tenant: tenant,
		Agent: workflows.AgentName(tenant, id), State: issuerv1.ClientState_CLIENT_STATE_ACTIVE,
		Scopes: []string{"orders.read"}, Resources: []string{"https://files.example"},
	}
}

func deprovisionInput(id string) workflows.DeprovisionInput {
	return workflows.DeprovisionInput{
		Tenant: tenant, Agent: workflows.AgentName(tenant, id), AgentID: id, RiskTier: "low",
		Reason: "project finished", EventID: "evt-" + id, Trigger: workflows.TriggerTTL, ChangeRef: "CHG-1",
		TriggerTime: time.Date(2026, 11, 30, 3, 0, 0, 0, time.UTC),
	}
}

// recordingCleanup is a workflows.Cleanup that records its requests and fails while failures > 0.
type recordingCleanup struct {
	name     string
	mu       sync.Mutex
	requests []workflows.CleanupRequest
	failures int
}

func (c *recordingCleanup) Name() string { return c.name }

func (c *recordingCleanup) Clean(_ context.Context, req workflows.CleanupRequest) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.requests = append(c.requests, req)
	if c.failures != 0 {
		c.failures--
		return "", errors.New("queue service answered 503")
	}
	return "queues of " + req.AgentID + " deleted", nil
}

// recordingNotifier is a workflows.Notifier keeping what it was asked to send.
type recordingNotifier struct {
	mu   sync.Mutex
	sent []workflows.Notification
}

func (n *recordingNotifier) Notify(_ context.Context, x workflows.Notification) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.sent = append(n.sent, x)
	return nil
}

func (n *recordingNotifier) all() []workflows.Notification {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.sent)
}

func stepNames(steps []workflows.DeprovisionStep) []string {
	out := make([]string, 0, len(steps))
	for _, s := range steps {
		out = append(out, s.Name)
	}
	return out
}

func TestDeprovisionSaga(t *testing.T) {
	tests := []struct {
		name      string
		client    bool
		cleanup   bool
		wantSteps []string
		wantCheck string
	}{
		{"active client, a cleanup configured", true, true,
			[]string{"suspend", "revoke", "remove_roles", "cleanup:queues", "verify", "retire", "sign_off"}, "client disabled: tenants/acme/clients/d1"},
		{"agent never had a client, no cleanup", false, false,
			[]string{"suspend", "revoke", "remove_roles", "cleanup", "verify", "retire", "sign_off"}, "no client: tenants/acme/clients/d1 was never issued"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, workflows.DeprovisionWorkflowID(tenant, "d1"))
			f.fakes.Registry.Put(retiringAgent("d1"))
			if tt.client {
				f.fakes.Issuer.Put(activeClient("d1"))
			}
			cleanup := &recordingCleanup{name: "queues"}
			if tt.cleanup {
				f.acts.Cleanups = []workflows.Cleanup{cleanup}
			}
			var cancelled []string
			f.env.OnRequestCancelExternalWorkflow(mock.Anything, mock.Anything, mock.Anything).Run(func(args mock.Arguments) {
				cancelled = append(cancelled, args.String(1))
			}).Return(errors.New("workflow not found"))

			in := deprovisionInput("d1")
			in.NoSignOff = true
			f.env.ExecuteWorkflow(workflows.DeprovisionWorkflow, in)

			var res workflows.DeprovisionResult
			if err := f.env.GetWorkflowResult(&res); err != nil {
				t.Fatal(err)
			}
			if res.Result != "retired" || res.Trigger != "ttl" || !res.TriggerTime.Equal(in.TriggerTime) || res.VerifyTime.IsZero() {
				t.Fatalf("result = %+v", res)
			}
			if got := stepNames(res.Steps); !slices.Equal(got, tt.wantSteps) {
				t.Errorf("steps = %v, want %v", got, tt.wantSteps)
			}
			wantChecks := []string{tt.wantCheck, "token request refused: invalid_client", "introspection of a token issued up to", "no scope, resource or role can be granted: the token request is refused"}
			if len(res.Checks) != len(wantChecks) {
				t.Fatalf("checks = %q", res.Checks)
			}
			for i, w := range wantChecks {
				if !strings.HasPrefix(res.Checks[i], w) {
					t.Errorf("check %d = %q, want prefix %q", i, res.Checks[i], w)
				}
			}
			// Since deprovision-one-task the request goes through the worker's client (a local
			// activity), not as a RequestCancelExternalWorkflow command.
			if got := f.acts.Runs.(*workflowstest.Runs).Cancelled(); !slices.Equal(got, []string{"provision/acme/d1"}) || len(cancelled) != 0 {
				t.Errorf("asked to cancel %v (external cancel commands %v), want the provisioning run once, by the local activity", got, cancelled)
			}
			disables := workflowstest.RequestsOf[*issuerv1.DisableClientRequest](f.fakes, "DisableClient")
			if len(disables) != 1 || disables[0].GetName() != "tenants/acme/clients/d1" || disables[0].GetRequestId() != "deprovision/acme/d1/revoke" {
				t.Errorf("DisableClient = %v", disables)
			}
			revokes := workflowstest.RequestsOf[*issuerv1.RevokeTokensRequest](f.fakes, "RevokeTokens")
			if len(revokes) != 1 || revokes[0].GetAgent() != "tenants/acme/agents/d1" || revokes[0].GetRequestId() != "deprovision/acme/d1/revoke-tokens" {
				t.Errorf("RevokeTokens = %v", revokes)
			}
			if len(f.fakes.Requests("SuspendAgent")) != 0 {
				t.Error("a RETIRING agent was suspended")
			}
			if tt.cleanup && (len(cleanup.requests) != 1 || cleanup.requests[0].RequestID != "deprovision/acme/d1/cleanup:queues" || cleanup.requests[0].Trigger != "ttl") {
				t.Errorf("cleanup requests = %+v", cleanup.requests)
			}
			if got := f.fakes.Registry.Agent("tenants/acme/agents/d1").GetState(); got != registryv1.AgentState_AGENT_STATE_RETIRED {
				t.Errorf("agent state = %v", got)
			}
			evs := f.events(t, "d1")
			if len(evs) != 2 || evs[0].Type != workflows.EventDeprovisioningVerified || evs[1].Type != workflows.EventDeprovisioningCompleted {
				t.Fatalf("events = %+v", evs)
			}
			c, err := eventstore.DecodeAs[*lifecyclev1.DeprovisioningCompleted](evs[1])
			if err != nil {
				t.Fatal(err)
			}
			if c.GetTrigger() != "ttl" || c.GetChangeRef() != "CHG-1" || !c.GetTriggerTime().AsTime().Equal(in.TriggerTime) ||
				!slices.Equal(c.GetChecks(), res.Checks) || len(c.GetSteps()) != len(tt.wantSteps) || evs[1].Metadata.CausationID != "evt-d1" {
				t.Errorf("deprovisioning_completed = %v", c)
			}
			// The steps up to verification are local activities: the Stage search attribute shows only
			// the stages the run waits in (cleanups are regular activities).
			want := []string{"suspend", "done"}
			if tt.cleanup {
				want = []string{"suspend", "cleanup", "done"}
			}
			if got := f.stages.all(); !slices.Equal(got, want) {
				t.Errorf("stages = %v, want %v", got, want)
			}
		})
	}
}

func TestDeprovisionRejectsUnknownTrigger(t *testing.T) {
	f := newFixture(t, workflows.DeprovisionWorkflowID(tenant, "d1"))
	in := deprovisionInput("d1")
	in.Trigger = "boredom"
	f.env.ExecuteWorkflow(workflows.DeprovisionWorkflow, in)
	if err := f.env.GetWorkflowError(); err == nil || !strings.Contains(err.Error(), "boredom") {
		t.Fatalf("error = %v, want the trigger refused", err)
	}
	if len(f.fakes.Requests("DisableClient")) != 0 {
		t.Error("a run with a bad trigger acted")
	}
}

func TestDeprovisionRevokesAgainWhenClientReappears(t *testing.T) {
	f := newFixture(t, workflows.DeprovisionWorkflowID(tenant, "d2"))
	f.fakes.Registry.Put(retiringAgent("d2"))
	f.fakes.Issuer.Put(activeClient("d2"))
	f.env.OnRequestCancelExternalWorkflow(mock.Anything, mock.Anything, mock.Anything).Return(nil)
	f.acts.ReadLag = 100 * time.Millisecond
	// After the first disable, the client shows up active again (created concurrently).
	reactivated := false
	f.env.SetOnLocalActivityStartedListener(func(info *activity.Info, _ context.Context, _ []any) {
		if info.ActivityType.Name == "VerifyDeprovisioned" && !reactivated {
			reactivated = true
			f.fakes.Issuer.Put(activeClient("d2"))
		}
	})
	in := deprovisionInput("d2")
	in.NoSignOff = true
	f.env.ExecuteWorkflow(workflows.DeprovisionWorkflow, in)

	var res workflows.DeprovisionResult
	if err := f.env.GetWorkflowResult(&res); err != nil {
		t.Fatal(err)
	}
	disables := workflowstest.RequestsOf[*issuerv1.DisableClientRequest](f.fakes, "DisableClient")
	if len(disables) != 2 || disables[1].GetRequestId() != "deprovision/acme/d2/revoke-2" {
		t.Fatalf("DisableClient = %v, want a second round with a new request id", disables)
	}
	revokes := workflowstest.RequestsOf[*issuerv1.RevokeTokensRequest](f.fakes, "RevokeTokens")
	if len(revokes) != 2 || revokes[1].GetRequestId() != "deprovision/acme/d2/revoke-tokens-2" {
		t.Fatalf("RevokeTokens = %v, want a second round with a new request id", revokes)
	}
	if f.fakes.Issuer.Client("tenants/acme/clients/d2").GetState() != issuerv1.ClientState_CLIENT_STATE_DISABLED {
		t.Fatal("client still active")
	}
}

func TestDeprovisionCleanupFailureCompensates(t *testing.T) {
	f := newFixture(t, workflows.DeprovisionWorkflowID(tenant, "d3"))
	f.fakes.Registry.Put(retiringAgent("d3"))
	f.fakes.Issuer.Put(activeClient("d3"))
	f.env.OnRequestCancelExternalWorkflow(mock.Anything, mock.Anything, mock.Anything).Return(nil)
	cleanup := &recordingCleanup{name: "queues", failures: -1} // fails every time
	notifier := &recordingNotifier{}
	f.acts.Cleanups, f.acts.Notifier = []workflows.Cleanup{cleanup}, notifier

	f.env.ExecuteWorkflow(workflows.DeprovisionWorkflow, deprovisionInput("d3"))

	err := f.env.GetWorkflowError()
	var app *temporal.ApplicationError
	if !errors.As(err, &app) || app.Type() != workflows.ErrCleanupFailed {
		t.Fatalf("error = %v, want %s", err, workflows.ErrCleanupFailed)
	}
	if len(cleanup.requests) < 2 {
		t.Errorf("cleanup tried %d times, want retries", len(cleanup.requests))
	}
	if got := f.fakes.Registry.Agent("tenants/acme/agents/d3").GetState(); got != registryv1.AgentState_AGENT_STATE_RETIRING {
		t.Errorf("agent state = %v, want it kept RETIRING", got)
	}
	if f.fakes.Issuer.Client("tenants/acme/clients/d3").GetState() != issuerv1.ClientState_CLIENT_STATE_DISABLED {
		t.Error("client re-enabled")
	}
	if len(f.fakes.Requests("CreateClient"))+len(f.fakes.Requests("ResumeAgent"))+len(f.fakes.Requests("CompleteRetirement")) != 0 {
		t.Error("compensation re-enabled or retired the agent")
	}
	sent := notifier.all()
	if len(sent) != 2 || sent[0].RecipientRole != "owner" || sent[1].RecipientRole != "security" ||
		sent[0].Kind != "deprovisioning.cleanup_failed" || !strings.Contains(sent[0].Summary, "cleanup queues failed") {
		t.Errorf("notifications = %+v", sent)
	}
	if st := f.status(t); st.Stage != workflows.StageFailed || !strings.Contains(st.Reason, "stays RETIRING") {
		t.Errorf("status = %+v", st)
	}
}

// signOff is one sign-off sent to a deprovisioning run in the test environment.
type signOff struct {
	at       time.Duration
	update   bool
	approval workflows.Approval
}

func TestDeprovisionSignOffs(t *testing.T) {
	const agentID = "d4"
	tok := func(sub, step, decision string, roles ...string) workflows.Approval {
		return tokenApproval(t, agentID, sub, step, decision, "checked", roles...)
	}
	owner := tok("alice@corp.example", "owner", "sign_off")
	sends := []signOff{
		{at: time.Hour, update: true, approval: tok("sec@corp.example", "security", "sign_off", "security-approver")},       // wrong step
		{at: 2 * time.Hour, update: true, approval: workflows.Approval{Token: "not-a-token"}},                               // bad token
		{at: 3 * time.Hour, update: true, approval: tok("alice@corp.example", "owner", "approve")},                          // wrong decision
		{at: 4 * time.Hour, update: true, approval: tok("mallory@corp.example", "owner", "sign_off")},                       // not the owner
		{at: 30 * time.Hour, update: true, approval: owner},                                                                 // sponsor signs the owner step
		{at: 31 * time.Hour, update: true, approval: owner},                                                                 // duplicate token
		{at: 32 * time.Hour, update: false, approval: tok("sec@corp.example", "security", "sign_off", "security-approver")}, // security by signal
	}
	f := newFixture(t, workflows.DeprovisionWorkflowID(tenant, agentID))
	f.fakes.Registry.Put(retiringAgent(agentID))
	f.fakes.Issuer.Put(activeClient(agentID))
	f.env.OnRequestCancelExternalWorkflow(mock.Anything, mock.Anything, mock.Anything).Return(nil)
	notifier := &recordingNotifier{}
	f.acts.Notifier = notifier
	updateErrs := map[int]error{}
	var mu sync.Mutex
	for i, s := range sends {
		f.env.RegisterDelayedCallback(func() {
			if !s.update {
				f.env.SignalWorkflow(workflows.SignOffSignal, s.approval)
				return
			}
			f.env.UpdateWorkflow(workflows.SignOffUpdate, "s"+string(rune('a'+i)), &testsuite.TestUpdateCallback{
				OnAccept:   func() {},
				OnReject:   func(err error) { mu.Lock(); updateErrs[i] = err; mu.Unlock() },
				OnComplete: func(_ any, err error) { mu.Lock(); updateErrs[i] = err; mu.Unlock() },
			}, s.approval)
		}, s.at)
	}
	in := deprovisionInput(agentID)
	in.Trigger, in.RemindEvery, in.EscalateAfter = workflows.TriggerRequest, 24*time.Hour, 20*time.Hour
	f.env.ExecuteWorkflow(workflows.DeprovisionWorkflow, in)

	var res workflows.DeprovisionResult
	if err := f.env.GetWorkflowResult(&res); err != nil {
		t.Fatal(err)
	}
	wantErrs := map[int]string{
		0: "the approval token is for the security step, the run waits for the owner sign-off",
		1: "approval token",
		2: `the approval token is for "approve", a deprovisioning takes "sign_off"`,
		3: "the owner step is decided by the agent's owner",
		5: "has been used already",
	}
	for i := range sends {
		err := updateErrs[i]
		want, refused := wantErrs[i]
		switch {
		case refused && (err == nil || !strings.Contains(err.Error(), want)):
			t.Errorf("sign-off %d: error %v, want one containing %q", i, err, want)
		case !refused && err != nil:
			t.Errorf("sign-off %d: %v", i, err)
		}
	}
	if len(res.SignOffs) != 2 || res.SignOffs[0].Approver != "alice@corp.example" || res.SignOffs[0].Role != "owner-delegate" ||
		res.SignOffs[1].Approver != "sec@corp.example" || res.SignOffs[1].Role != "security-approver" {
		t.Fatalf("sign-offs = %+v", res.SignOffs)
	}
	if got, want := stepNames(res.Steps), []string{"suspend", "revoke", "remove_roles", "cleanup", "verify", "retire",
		"reminders:owner", "sign_off:owner", "sign_off:security"}; !slices.Equal(got, want) {
		t.Errorf("steps = %v, want %v", got, want)
	}
	sent := notifier.all()
	if len(sent) != 2 || sent[0].Kind != "deprovisioning.sign_off_reminder" || sent[0].RecipientRole != "owner" || sent[1].RecipientRole != "security" {
		t.Errorf("reminders = %+v, want the owner reminded and security told after EscalateAfter", sent)
	}
	evs := f.events(t, agentID)
	if len(evs) != 2 || evs[1].Type != workflows.EventDeprovisioningCompleted {
		t.Fatalf("events = %+v", evs)
	}
	c, err := eventstore.DecodeAs[*lifecyclev1.DeprovisioningCompleted](evs[1])
	if err != nil {
		t.Fatal(err)
	}
	var actors []string
	for _, s := range c.GetSteps() {
		if s.GetActor() != "" {
			actors = append(actors, s.GetName()+"="+s.GetActor())
		}
	}
	if !slices.Equal(actors, []string{"sign_off:owner=alice@corp.example", "sign_off:security=sec@corp.example"}) {
		t.Errorf("sign-offs in the evidence = %v", actors)
	}
	st := f.status(t)
	if st.RefusedCount < 4 || st.Stage != workflows.StageDone {
		t.Errorf("status = %+v, want the refusals recorded", st)
	}
}

// TestDeprovisionLocalStepsFallBack: when the local attempts at a step fail with an error a retry may
// cure, the run hands the step to a regular activity, which succeeds; the Stage search attribute then
// shows the step, and only the regular activity's request reaches the issuer. A step whose local
// attempt fails for good is not retried as an activity: the run fails.
func TestDeprovisionLocalStepsFallBack(t *testing.T) {
	tests := []struct {
		name       string
		err        error
		wantErr    bool
		wantCalls  []string
		wantStages []string
	}{
		{"unavailable is handed to an activity", temporal.NewApplicationError("issuer.DisableClient: UNAVAILABLE: connection refused", "UNAVAILABLE"), false,
			[]string{"local:DisableClient", "DisableClient"}, []string{"suspend", "revoke", "done"}},
		{"a permanent error fails the run", temporal.NewNonRetryableApplicationError("issuer.DisableClient: PERMISSION_DENIED", "PERMISSION_DENIED", nil), true,
			[]string{"local:DisableClient"}, []string{"suspend", "failed"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, workflows.DeprovisionWorkflowID(tenant, "d5"))
			f.fakes.Registry.Put(retiringAgent("d5"))
			f.fakes.Issuer.Put(activeClient("d5"))
			f.env.OnRequestCancelExternalWorkflow(mock.Anything, mock.Anything, mock.Anything).Return(nil)
			var mu sync.Mutex
			var calls []string
			f.env.OnActivity(f.acts.DisableClient, mock.Anything, mock.Anything).Return(
				func(ctx context.Context, in workflows.DisableClientRequest) (workflows.DisableResult, error) {
					mu.Lock()
					defer mu.Unlock()
					if activity.GetInfo(ctx).IsLocalActivity {
						calls = append(calls, "local:DisableClient")
						return workflows.DisableResult{}, tt.err
					}
					calls = append(calls, "DisableClient")
					return f.acts.DisableClient(ctx, in)
				})
			in := deprovisionInput("d5")
			in.NoSignOff = true
			f.env.ExecuteWorkflow(workflows.DeprovisionWorkflow, in)

			err := f.env.GetWorkflowError()
			if (err != nil) != tt.wantErr {
				t.Fatalf("run error = %v, want error %v", err, tt.wantErr)
			}
			mu.Lock()
			got := slices.Clone(calls)
			mu.Unlock()
			// Local attempts are retried (retryable errors) within about 30 seconds before the hand-over.
			locals := 0
			for _, c := range got {
				if c == "local:DisableClient" {
					locals++
				}
			}
			if compact := slices.Compact(slices.Clone(got)); !slices.Equal(compact, tt.wantCalls) || (tt.wantErr != (locals == 1)) {
				t.Errorf("DisableClient calls = %v, want %v (local attempts retried only for a retryable error)", got, tt.wantCalls)
			}
			if got := f.stages.all(); !slices.Equal(got, tt.wantStages) {
				t.Errorf("stages = %v, want %v", got, tt.wantStages)
			}
			disables := workflowstest.RequestsOf[*issuerv1.DisableClientRequest](f.fakes, "DisableClient")
			state := f.fakes.Issuer.Client("tenants/acme/clients/d5").GetState()
			if tt.wantErr {
				if len(disables) != 0 || state != issuerv1.ClientState_CLIENT_STATE_ACTIVE {
					t.Errorf("DisableClient = %v, client %v: a failed local attempt reached the issuer", disables, state)
				}
				if n := len(f.events(t, "d5")); n != 0 {
					t.Errorf("%d events recorded by a failed run", n)
				}
				return
			}
			if len(disables) != 1 || disables[0].GetRequestId() != "deprovision/acme/d5/revoke" || state != issuerv1.ClientState_CLIENT_STATE_DISABLED {
				t.Errorf("DisableClient = %v, client %v, want one request with the run's request id and the client disabled", disables, state)
			}
			if evs := f.events(t, "d5"); len(evs) != 2 || evs[0].Type != workflows.EventDeprovisioningVerified {
				t.Errorf("events = %+v, want deprovisioning_verified then _completed", evs)
			}
		})
	}
}
