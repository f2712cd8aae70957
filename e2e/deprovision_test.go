package e2e_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/oauth2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/names"
	"github.com/agentid/agentid/pkg/natsauth"
	"github.com/agentid/agentid/pkg/testkit"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	lifecyclev1 "github.com/agentid/agentid/proto/gen/go/agentid/lifecycle/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// deprovAgent is an agent of tenant default registered by the deprovisioning tests, with its key.
type deprovAgent struct {
	name, id string
	cred     *authn.Credential
}

// deprovEnv is the running platform and the clients the deprovisioning tests use.
type deprovEnv struct {
	p                  *platform
	agentctl, config   string
	keys               string
	registry           registryv1.RegistryServiceClient
	issuer             issuerv1.IssuerServiceClient
	evidence           *deprovEvidence
	introspectorBearer func() string
}

// startDeprovEnv starts agentid dev (with args added to its command line) and logs agentctl in as the
// bootstrap admin.
func startDeprovEnv(t *testing.T, ctx context.Context, args ...string) *deprovEnv {
	t.Helper()
	agentidBin, agentctlBin := buildBinaries(t)
	dataDir := t.TempDir()
	p := rememberDevNATS(&platform{testkit.StartDevWith(t, agentidBin, dataDir, testkit.DevOptions{Args: args})})
	e := &deprovEnv{p: p, agentctl: agentctlBin, config: t.TempDir(), keys: t.TempDir()}
	e.cli(t, "login", "--dev", "--data-dir", dataDir, "--server", e.p.GRPCAddr)
	cc := adminConnection(t, ctx, e.p, dataDir)
	e.registry, e.issuer = registryv1.NewRegistryServiceClient(cc), issuerv1.NewIssuerServiceClient(cc)
	e.evidence = followDeprovEvidence(t, ctx, e.p)
	return e
}

func (e *deprovEnv) cli(t *testing.T, args ...string) string {
	t.Helper()
	out, err := runCLI(t, e.agentctl, e.config, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// staff creates a person of tenant default with roles (agentctl clients create) and returns a token
// source of theirs for the platform API.
func (e *deprovEnv) staff(t *testing.T, ctx context.Context, id, roles string) oauth2.TokenSource {
	t.Helper()
	file := filepath.Join(e.keys, id+".json")
	e.cli(t, "clients", "create", id, "--role", roles, "--key-out", file)
	cred, err := authn.LoadCredentialFile(file)
	if err != nil {
		t.Fatal(err)
	}
	ts := cred.TokenSource(ctx)
	waitFor(t, ctx, id+"'s token", func() (bool, error) {
		_, err := ts.Token()
		return err == nil, err
	})
	return ts
}

// register registers a low-risk agent of tenant default (owner and expire time as given) and returns
// it; it is auto-approved.
func (e *deprovEnv) register(t *testing.T, ctx context.Context, rid, owner string, expire time.Time) deprovAgent {
	t.Helper()
	id := names.DeriveAgentID("default", rid)
	cred, err := authn.NewCredential("default", id, e.p.issuer("default"))
	if err != nil {
		t.Fatal(err)
	}
	jwks, err := cred.PublicJWKS()
	if err != nil {
		t.Fatal(err)
	}
	in := validAgent(string(jwks))
	if owner != "" {
		in.Owner = owner
	}
	if !expire.IsZero() {
		in.ExpireTime = timestamppb.New(expire)
	}
	res, err := e.registry.RegisterAgent(ctx, &registryv1.RegisterAgentRequest{Parent: "tenants/default", RequestId: rid, Agent: in})
	if err != nil {
		t.Fatal(err)
	}
	return deprovAgent{name: res.GetAgent().GetName(), id: res.GetAgent().GetAgentId(), cred: cred}
}

// waitAgentState waits until the registry shows the agent in state want.
func (e *deprovEnv) waitAgentState(t *testing.T, ctx context.Context, a deprovAgent, want registryv1.AgentState) {
	t.Helper()
	waitFor(t, ctx, a.name+" to be "+want.String(), func() (bool, error) {
		res, err := e.registry.GetAgent(ctx, &registryv1.GetAgentRequest{Name: a.name})
		if err != nil {
			return false, err
		}
		return res.GetAgent().GetState() == want, fmt.Errorf("state %s", res.GetAgent().GetState())
	})
}

// token waits until the agent gets a token for the files resource with its own key.
func (a deprovAgent) token(t *testing.T, ctx context.Context) string {
	t.Helper()
	var tok string
	waitFor(t, ctx, a.name+"'s token", func() (bool, error) {
		got, err := resourceToken(ctx, a.cred, filesAudience, "docs.search")
		if err != nil {
			return false, err
		}
		tok = got.AccessToken
		return true, nil
	})
	return tok
}

// checkTornDown checks that nothing of the deprovisioned agent remains usable: its client is disabled,
// a token request with its real key is refused (invalid_client), and introspection of its last token
// answers inactive.
func (e *deprovEnv) checkTornDown(t *testing.T, ctx context.Context, a deprovAgent, lastToken string) {
	t.Helper()
	c, err := e.issuer.GetClient(ctx, &issuerv1.GetClientRequest{Name: "tenants/default/clients/" + a.id})
	if err != nil {
		t.Fatal(err)
	}
	if st := c.GetClient().GetState(); st != issuerv1.ClientState_CLIENT_STATE_DISABLED {
		t.Errorf("%s's client is %s, want DISABLED", a.name, st)
	}
	_, err = resourceToken(ctx, a.cred, filesAudience, "docs.search")
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.ErrorCode != "invalid_client" {
		t.Errorf("token request with %s's real key: %v, want invalid_client", a.name, err)
	}
	if introspect(t, ctx, e.p.issuer("default"), e.introspectorBearer(), lastToken) {
		t.Errorf("introspection of %s's last token: active, want inactive", a.name)
	}
}

// TestDeprovisioningEndToEnd drives deprovisioning through the running platform on the real engines:
// an ephemeral agent (TTL) is torn down at expiry without sign-off; an agent retired on request waits
// for its owner's and then security's sign-off (approval tokens through the gRPC API; a sign-off for
// the wrong step is refused and changes nothing); an ephemeral agent whose task reports completion
// (agentctl agents retire --trigger task_completed) is torn down without sign-off. Each ends RETIRED
// with its client disabled, its real key refused, its last token inactive, and the evidence event
// lifecycle.deprovisioning_completed on stream LIFECYCLE with its trigger.
func TestDeprovisioningEndToEnd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	e := startDeprovEnv(t, ctx)
	introspector := e.staff(t, ctx, "e2e-deprov-introspector", "introspector")
	e.introspectorBearer = func() string {
		tok, err := introspector.Token()
		if err != nil {
			t.Fatal(err)
		}
		return tok.AccessToken
	}
	owner := e.staff(t, ctx, "olga", "owner")
	security := e.staff(t, ctx, "sid", "security-approver")
	lifecycleAs := func(ts oauth2.TokenSource) lifecyclev1.LifecycleServiceClient {
		tok, err := ts.Token()
		if err != nil {
			t.Fatal(err)
		}
		return lifecyclev1.NewLifecycleServiceClient(e.p.dial(t, tok.AccessToken))
	}
	issuerAs := func(ts oauth2.TokenSource) issuerv1.IssuerServiceClient {
		tok, err := ts.Token()
		if err != nil {
			t.Fatal(err)
		}
		return issuerv1.NewIssuerServiceClient(e.p.dial(t, tok.AccessToken))
	}

	// 1. An ephemeral agent with a TTL of 30 s: ACTIVE, its token works, and at expiry it is torn down.
	ttl := 30 * time.Second
	eph := e.register(t, ctx, "e2e-deprov-ttl", "", time.Now().Add(ttl))
	e.waitAgentState(t, ctx, eph, registryv1.AgentState_AGENT_STATE_ACTIVE)
	ephTok := eph.token(t, ctx)
	if !introspect(t, ctx, e.p.issuer("default"), e.introspectorBearer(), ephTok) {
		t.Fatal("the ACTIVE ephemeral agent's token is inactive")
	}
	e.waitAgentState(t, ctx, eph, registryv1.AgentState_AGENT_STATE_RETIRED)
	e.checkTornDown(t, ctx, eph, ephTok)
	// ACTIVE → EXPIRED → RETIRING → RETIRED: the TTL run recorded the expiry before the retirement.
	hist, err := e.registry.GetAgentHistory(ctx, &registryv1.GetAgentHistoryRequest{Name: eph.name, PageSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, h := range hist.GetEntries() {
		types = append(types, h.GetEventType())
	}
	if exp, ret := slices.Index(types, "agent.expired"), slices.Index(types, "agent.retirement_requested"); exp < 0 || ret < exp ||
		slices.Index(types, "agent.activated") > exp {
		t.Fatalf("history of the ephemeral agent %v: want agent.activated, agent.expired, then agent.retirement_requested", types)
	}
	ev := e.evidence.wait(t, ctx, eph.id)
	if ev.GetTrigger() != "ttl" || !deprovHasStep(ev, "verify") || slices.ContainsFunc(ev.GetSteps(), func(s *lifecyclev1.DeprovisioningStep) bool {
		return strings.HasPrefix(s.GetName(), "sign_off:")
	}) {
		t.Fatalf("evidence of the expired agent: %v, want trigger ttl, verified, no sign-off", ev)
	}

	// 2. Retired on request (agentctl, with a change ticket): sign-offs by the owner, then security.
	req := e.register(t, ctx, "e2e-deprov-request", "olga", time.Time{})
	e.waitAgentState(t, ctx, req, registryv1.AgentState_AGENT_STATE_ACTIVE)
	reqTok := req.token(t, ctx)
	e.cli(t, "agents", "retire", req.name, "--reason", "e2e: project finished", "--ticket", "CHG-42")
	runID := waitSignOffStep(t, ctx, lifecycleAs(owner), req, "owner")
	e.waitAgentState(t, ctx, req, registryv1.AgentState_AGENT_STATE_RETIRED)
	e.checkTornDown(t, ctx, req, reqTok)
	signOff := func(ts oauth2.TokenSource, step, rid string) error {
		tok, err := issuerAs(ts).IssueApprovalToken(ctx, &issuerv1.IssueApprovalTokenRequest{
			Agent: req.name, Step: step, Decision: issuerv1.ApprovalTokenDecision_APPROVAL_TOKEN_DECISION_SIGN_OFF, WorkflowRunId: runID,
		})
		if err != nil {
			t.Fatalf("approval token of the %s step: %v", step, err)
		}
		_, err = lifecycleAs(ts).SignOffDeprovisioning(ctx, &lifecyclev1.SignOffDeprovisioningRequest{
			Agent: req.name, ApprovalToken: tok.GetToken(), Comment: "e2e: checked", RequestId: rid,
		})
		return err
	}
	// Security first: refused, the run still waits for the owner.
	if err := signOff(security, "security", "e2e-signoff-early"); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("security's sign-off before the owner's: %v, want FailedPrecondition", err)
	}
	if got := waitSignOffStep(t, ctx, lifecycleAs(owner), req, "owner"); got != runID {
		t.Fatalf("run %s after the refused sign-off, want %s", got, runID)
	}
	if err := signOff(owner, "owner", "e2e-signoff-owner"); err != nil {
		t.Fatalf("the owner's sign-off: %v", err)
	}
	waitSignOffStep(t, ctx, lifecycleAs(owner), req, "security")
	// Security signs off with agentctl, logged in with its own credential.
	secConfig := t.TempDir()
	if out, err := runCLI(t, e.agentctl, secConfig, "--server", e.p.GRPCAddr, "login", "--credentials", filepath.Join(e.keys, "sid.json")); err != nil {
		t.Fatalf("agentctl login as security: %v\n%s", err, out)
	}
	out, err := runCLI(t, e.agentctl, secConfig, "approvals", "sign-off", req.name, "--comment", "e2e: checked")
	if err != nil || !strings.Contains(out, "at the security step") {
		t.Fatalf("agentctl approvals sign-off as security: %v\n%s", err, out)
	}
	ev = e.evidence.wait(t, ctx, req.id)
	if ev.GetTrigger() != "request" || ev.GetChangeRef() != "CHG-42" || !deprovHasStep(ev, "sign_off:owner") || !deprovHasStep(ev, "sign_off:security") {
		t.Fatalf("evidence of the retired agent: %v, want trigger request, CHG-42 and both sign-offs", ev)
	}

	// 3. An ephemeral agent whose task reports completion: torn down without sign-off.
	done := e.register(t, ctx, "e2e-deprov-done", "", time.Now().Add(time.Hour))
	e.waitAgentState(t, ctx, done, registryv1.AgentState_AGENT_STATE_ACTIVE)
	doneTok := done.token(t, ctx)
	e.cli(t, "agents", "retire", done.name, "--reason", "e2e: task finished", "--trigger", "task_completed")
	e.waitAgentState(t, ctx, done, registryv1.AgentState_AGENT_STATE_RETIRED)
	e.checkTornDown(t, ctx, done, doneTok)
	if ev := e.evidence.wait(t, ctx, done.id); ev.GetTrigger() != "task_completed" {
		t.Fatalf("evidence of the completed agent: %v, want trigger task_completed", ev)
	}
}

// waitSignOffStep waits until the agent's deprovisioning run waits for the sign-off of step and
// returns its run id.
func waitSignOffStep(t *testing.T, ctx context.Context, lc lifecyclev1.LifecycleServiceClient, a deprovAgent, step string) string {
	t.Helper()
	var runID string
	waitFor(t, ctx, a.name+"'s deprovisioning to wait for the "+step+" sign-off", func() (bool, error) {
		res, err := lc.GetAgentWorkflows(ctx, &lifecyclev1.GetAgentWorkflowsRequest{Agent: a.name})
		if err != nil {
			return false, err
		}
		for _, w := range res.GetWorkflows() {
			if strings.HasPrefix(w.GetWorkflowId(), "deprovision/") && w.GetWaitingFor() == "sign-off by "+step {
				runID = w.GetRunId()
				return true, nil
			}
		}
		return false, fmt.Errorf("workflows %v", res.GetWorkflows())
	})
	return runID
}

func deprovHasStep(ev *lifecyclev1.DeprovisioningCompleted, name string) bool {
	return slices.ContainsFunc(ev.GetSteps(), func(s *lifecyclev1.DeprovisioningStep) bool { return s.GetName() == name })
}

// deprovEvidence follows stream LIFECYCLE (as the platform's admin NATS identity) and keeps, per
// agent id, the deprovisioning_completed evidence and when deprovisioning_verified arrived.
type deprovEvidence struct {
	mu        sync.Mutex
	completed map[string]*lifecyclev1.DeprovisioningCompleted
	verified  map[string]time.Time
}

func followDeprovEvidence(t *testing.T, ctx context.Context, p *platform) *deprovEvidence {
	t.Helper()
	nc, err := nats.Connect(p.NATSURL, append(natsOptions(t, p.NATSURL, natsauth.Admin), nats.Name("e2e deprovisioning evidence"))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	d := &deprovEvidence{completed: map[string]*lifecyclev1.DeprovisioningCompleted{}, verified: map[string]time.Time{}}
	var cons jetstream.Consumer
	waitFor(t, ctx, "stream LIFECYCLE", func() (bool, error) {
		cons, err = js.OrderedConsumer(ctx, eventstore.StreamLifecycle, jetstream.OrderedConsumerConfig{
			FilterSubjects: []string{"agentid.default.lifecycle.*.deprovisioning_completed", "agentid.default.lifecycle.*.deprovisioning_verified"},
		})
		return err == nil, err
	})
	cc, err := cons.Consume(func(m jetstream.Msg) {
		arrived := time.Now()
		ev, err := eventstore.EventFromMsg(m)
		if err != nil {
			return
		}
		agentID := ev.Subject
		if parts := strings.Split(m.Subject(), "."); len(parts) == 5 {
			agentID = parts[3]
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		switch ev.Type {
		case "lifecycle.deprovisioning_verified":
			if _, ok := d.verified[agentID]; !ok {
				d.verified[agentID] = arrived
			}
		case "lifecycle.deprovisioning_completed":
			if c, err := eventstore.DecodeAs[*lifecyclev1.DeprovisioningCompleted](ev); err == nil {
				d.completed[agentID] = c
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cc.Stop)
	return d
}

// wait waits for the agent's deprovisioning_completed evidence.
func (d *deprovEvidence) wait(t *testing.T, ctx context.Context, agentID string) *lifecyclev1.DeprovisioningCompleted {
	t.Helper()
	var ev *lifecyclev1.DeprovisioningCompleted
	waitFor(t, ctx, "the deprovisioning evidence of "+agentID, func() (bool, error) {
		d.mu.Lock()
		defer d.mu.Unlock()
		ev = d.completed[agentID]
		return ev != nil, nil
	})
	return ev
}

// verifiedAt returns when the agent's deprovisioning_verified event arrived, if it has.
func (d *deprovEvidence) verifiedAt(agentID string) (time.Time, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	at, ok := d.verified[agentID]
	return at, ok
}

// TestDeprovisioningLatency measures deprovisioning trigger → verified on agentid dev: for N ACTIVE
// agents (AGENTID_E2E_DEPROVISION_N, e.g. 50) it calls RetireAgent (trigger task_completed, no
// sign-off) and times until lifecycle.deprovisioning_verified of that agent arrives on stream
// LIFECYCLE (the saga suspended, revoked, removed the grants, and verified by trying). First one
// agent at a time, then all N at once, with the teardown rate and the CPU per teardown of agentid and
// of the Temporal dev server during the burst (until every run's evidence is recorded). The numbers
// are reported, never asserted (targets p99 ≤ 5 s, ≥ 30 teardowns/s). It is a measurement gated by
// the environment, not a regular test: without AGENTID_E2E_DEPROVISION_N it skips.
// AGENTID_E2E_DEPROVISION_PROFILE=<dir> also writes a CPU profile of agentid during the burst to
// <dir>/agentid-burst.pprof.
//
//	AGENTID_E2E_DEPROVISION_N=200 go test -count=1 -run TestDeprovisioningLatency -v ./e2e/
func TestDeprovisioningLatency(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("AGENTID_E2E_DEPROVISION_N"))
	if n <= 0 {
		t.Skip("set AGENTID_E2E_DEPROVISION_N to the number of agents to measure deprovisioning latency with")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	var args []string
	profileDir, pprofAddr := deprovProfileDir(), ""
	if profileDir != "" {
		pprofAddr = fmt.Sprintf("127.0.0.1:%d", testkit.FreePorts(t, 1)[0])
		args = append(args, "--pprof-addr", pprofAddr)
	}
	e := startDeprovEnv(t, ctx, args...)
	register := func(prefix string) []deprovAgent {
		agents := make([]deprovAgent, n)
		for i := range agents {
			agents[i] = e.register(t, ctx, fmt.Sprintf("%s-%d", prefix, i), "", time.Time{})
		}
		for _, a := range agents {
			e.waitAgentState(t, ctx, a, registryv1.AgentState_AGENT_STATE_ACTIVE)
		}
		return agents
	}
	retire := func(a deprovAgent) time.Time {
		at := time.Now()
		if _, err := e.registry.RetireAgent(ctx, &registryv1.RetireAgentRequest{
			Name: a.name, Reason: "e2e: latency sample", Trigger: "task_completed", RequestId: "e2e-latency-" + a.id,
		}); err != nil {
			t.Error(err)
		}
		return at
	}
	verified := func(a deprovAgent, from time.Time) time.Duration {
		var at time.Time
		testkit.Eventually(t, 5*time.Minute, a.name+"'s deprovisioning to be verified", func() (bool, error) {
			var ok bool
			at, ok = e.evidence.verifiedAt(a.id)
			return ok, nil
		})
		return at.Sub(from)
	}

	alone := register("e2e-latency-alone")
	var sequential []time.Duration
	for _, a := range alone {
		sequential = append(sequential, verified(a, retire(a)))
	}
	t.Logf("deprovisioning trigger → verified, one at a time, %d agents: %s", n, deprovPercentiles(sequential))

	burst := register("e2e-latency-burst")
	var profiled <-chan error
	if profileDir != "" {
		profiled = profileDev(t, ctx, pprofAddr, profileDir, "agentid-burst.pprof", max(2, n/20))
	}
	cpuBefore := sampleDevCPU(e.p.Pid())
	started := make([]time.Time, n)
	var wg sync.WaitGroup
	for i, a := range burst {
		wg.Go(func() { started[i] = retire(a) })
	}
	wg.Wait()
	var together []time.Duration
	for i, a := range burst {
		together = append(together, verified(a, started[i]))
	}
	for _, a := range burst { // the runs go on after the verification: count their CPU to the end
		e.evidence.wait(t, ctx, a.id)
	}
	cpuAfter := sampleDevCPU(e.p.Pid())
	total := slices.Max(together)
	t.Logf("deprovisioning trigger → verified, %d at once: %s; all verified within %s (%.1f teardowns/s); %s",
		n, deprovPercentiles(together), total.Round(time.Millisecond), float64(n)/total.Seconds(), cpuBefore.perRun(cpuAfter, n))
	if profiled != nil {
		if err := <-profiled; err != nil {
			t.Errorf("CPU profile of agentid: %v", err)
		}
	}
}

// deprovPercentiles renders p50, p99 and max of ds (nearest rank).
func deprovPercentiles(ds []time.Duration) string {
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := func(p float64) time.Duration {
		i := int(p*float64(len(s))+0.999999) - 1
		return s[min(max(i, 0), len(s)-1)].Round(time.Millisecond)
	}
	return fmt.Sprintf("p50 %s, p99 %s, max %s", rank(0.50), rank(0.99), s[len(s)-1].Round(time.Millisecond))
}
