package e2e_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/oauth2"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/names"
	"github.com/agentid/agentid/pkg/natsauth"
	"github.com/agentid/agentid/pkg/testkit"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	lifecyclev1 "github.com/agentid/agentid/proto/gen/go/agentid/lifecycle/v1"
	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// incidentPlatform is a running `agentid dev` with what the incident tests drive it with: the
// platform admin's registry, a security-approver's connection, the verifiers a resource server runs
// and the monitor's NATS identity to publish alerts with.
type incidentPlatform struct {
	p             *platform
	registry      registryv1.RegistryServiceClient
	security      *authn.Credential // a security-approver of tenant default
	offline       authn.Verifier    // JWKS + denylist fed from REVOCATIONS
	introspection authn.Verifier
	monitor       monitorv1.MonitorServiceClient
	alerts        *eventstore.Store // as the monitor
	monitorJS     jetstream.JetStream
	lifecycleJS   jetstream.JetStream // as the lifecycle service, to see its consumer drained
}

func startIncidentPlatform(t *testing.T, ctx context.Context) *incidentPlatform {
	t.Helper()
	agentidBin, agentctlBin := buildBinaries(t)
	dataDir, configDir, keys := t.TempDir(), t.TempDir(), t.TempDir()
	p := startPlatform(t, agentidBin, dataDir)
	if _, err := runCLI(t, agentctlBin, configDir, "login", "--dev", "--data-dir", dataDir, "--server", p.GRPCAddr); err != nil {
		t.Fatal(err)
	}
	admin := adminConnection(t, ctx, p, dataDir)
	e := &incidentPlatform{p: p, registry: registryv1.NewRegistryServiceClient(admin), monitor: monitorv1.NewMonitorServiceClient(admin)}
	identity := func(id, role string) *authn.Credential {
		file := filepath.Join(keys, id+".json")
		if _, err := runCLI(t, agentctlBin, configDir, "clients", "create", id, "--role", role, "--key-out", file); err != nil {
			t.Fatal(err)
		}
		cred, err := authn.LoadCredentialFile(file)
		if err != nil {
			t.Fatal(err)
		}
		return cred
	}
	e.security = identity("e2e-incident-security", "security-approver")
	var err error
	if e.introspection, err = authn.NewIntrospectionVerifier(authn.IntrospectionVerifierConfig{
		Credential: identity("e2e-incident-introspector", "introspector"), Audience: filesAudience,
	}); err != nil {
		t.Fatal(err)
	}

	// The revocation-following verifier, as the platform's verifier NATS identity.
	nc, err := nats.Connect(p.NATSURL, append(natsOptions(t, p.NATSURL, natsauth.Verifier), nats.Name("e2e incident verifier"))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	deny := authn.NewDenylist(authn.DenylistConfig{})
	feed, err := authn.NewRevocationFeed(authn.RevocationFeedConfig{JetStream: js, Denylist: deny})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = feed.Run(runCtx) })
	t.Cleanup(func() { stop(); wg.Wait() })
	testkit.Eventually(t, 0, "the revocation feed to catch up", func() (bool, error) { return feed.Caught(), nil })
	if e.offline, err = authn.NewJWKSVerifier(authn.JWKSVerifierConfig{
		IssuerBaseURL: p.HTTPURL, Audience: filesAudience, Tenants: []string{"default"}, Revocations: deny,
	}); err != nil {
		t.Fatal(err)
	}

	// The monitor's NATS identity publishes alerts.
	mc, err := nats.Connect(p.NATSURL, append(natsOptions(t, p.NATSURL, natsauth.Monitor), nats.Name("e2e monitor"))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(mc.Close)
	mjs, err := jetstream.New(mc)
	if err != nil {
		t.Fatal(err)
	}
	e.alerts = eventstore.New(mjs, eventstore.WithSource("agentid/monitor"), eventstore.WithRegisterer(nil))
	e.monitorJS = mjs
	lc, err := nats.Connect(p.NATSURL, append(natsOptions(t, p.NATSURL, natsauth.Lifecycle), nats.Name("e2e lifecycle"))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(lc.Close)
	if e.lifecycleJS, err = jetstream.New(lc); err != nil {
		t.Fatal(err)
	}
	return e
}

// drained waits until the durable consumer has handled every event of its stream.
func drained(t *testing.T, ctx context.Context, js jetstream.JetStream, stream, consumer string) {
	t.Helper()
	waitFor(t, ctx, consumer+" to handle every event", func() (bool, error) {
		c, err := js.Consumer(ctx, stream, consumer)
		if err != nil {
			return false, err
		}
		info, err := c.Info(ctx)
		if err != nil {
			return false, err
		}
		return info.NumPending == 0 && info.NumAckPending == 0, fmt.Errorf("%d pending, %d unacknowledged", info.NumPending, info.NumAckPending)
	})
}

// alertsAbout reads every alert about agent on stream ALERTS, as ids.
func (e *incidentPlatform) alertsAbout(t *testing.T, ctx context.Context, agent string) []string {
	t.Helper()
	cons, err := e.monitorJS.OrderedConsumer(ctx, eventstore.StreamAlerts, jetstream.OrderedConsumerConfig{FilterSubjects: []string{"alerts.default.>"}})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for {
		batch, err := cons.FetchNoWait(100)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			var ar monitorv1.AlertRaised
			if err := proto.Unmarshal(m.Data(), &ar); err != nil {
				t.Fatalf("alert %s: %v", m.Headers().Get("ce-id"), err)
			}
			if ar.GetAlert().GetAgent() == agent {
				ids = append(ids, ar.GetAlert().GetAlertId())
			}
		}
		if err := batch.Error(); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return ids
		}
	}
}

// incidentAgent is an ACTIVE agent of tenant default with its credential.
type incidentAgent struct {
	name string
	cred *authn.Credential
}

// agents registers n low-risk agents (auto-approved) and waits until each is ACTIVE.
func (e *incidentPlatform) agents(t *testing.T, ctx context.Context, prefix string, n int) []incidentAgent {
	t.Helper()
	out := make([]incidentAgent, n)
	for i := range out {
		rid := fmt.Sprintf("%s-%d", prefix, i)
		cred, err := authn.NewCredential("default", names.DeriveAgentID("default", rid), e.p.issuer("default"))
		if err != nil {
			t.Fatal(err)
		}
		jwks, err := cred.PublicJWKS()
		if err != nil {
			t.Fatal(err)
		}
		res, err := e.registry.RegisterAgent(ctx, &registryv1.RegisterAgentRequest{Parent: "tenants/default", RequestId: rid, Agent: validAgent(string(jwks))})
		if err != nil {
			t.Fatal(err)
		}
		out[i] = incidentAgent{name: res.GetAgent().GetName(), cred: cred}
	}
	for _, a := range out {
		e.waitState(t, ctx, a.name, registryv1.AgentState_AGENT_STATE_ACTIVE)
	}
	return out
}

func (e *incidentPlatform) waitState(t *testing.T, ctx context.Context, name string, want registryv1.AgentState) {
	t.Helper()
	waitFor(t, ctx, name+" "+want.String(), func() (bool, error) {
		a, err := e.registry.GetAgent(ctx, &registryv1.GetAgentRequest{Name: name})
		if err != nil {
			return false, err
		}
		return a.GetAgent().GetState() == want, fmt.Errorf("state %s", a.GetAgent().GetState())
	})
}

// token waits until the issuer gives a a token for the files resource.
func (a incidentAgent) token(t *testing.T, ctx context.Context) string {
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

// raise publishes a critical bulk_export alert about a as the monitor's publisher does (event id and
// Nats-Msg-Id = alert id, subject alerts.<tenant>.<detector>, type alert.raised) and returns its id.
func (e *incidentPlatform) raise(t *testing.T, ctx context.Context, a incidentAgent) string {
	t.Helper()
	id := uuid.NewString()
	now := time.Now().UTC()
	alert := &monitorv1.Alert{
		Name: "tenants/default/alerts/" + id, AlertId: id, Tenant: "default", Agent: a.name, Detector: "bulk_export",
		Severity: monitorv1.AlertSeverity_ALERT_SEVERITY_CRITICAL, Summary: "e2e: 412,000 rows in one request",
		Owner: "team:search", RiskTier: "low", Environment: "dev", AgentKnown: true,
		DetectTime: timestamppb.New(now), WindowStart: timestamppb.New(now.Add(-time.Minute)), WindowEnd: timestamppb.New(now),
	}
	if _, err := e.alerts.PublishWithID(ctx, id, "alerts.default.bulk_export", "alert.raised", a.name, &monitorv1.AlertRaised{Alert: alert},
		eventstore.Metadata{Tenant: "default", Actor: eventstore.Actor{ID: "monitor", Kind: eventstore.ActorService}}); err != nil {
		t.Fatalf("publish alert: %v", err)
	}
	return id
}

// refusedAt polls v with tok every 2 ms until it refuses it as revoked or inactive and returns when;
// another refusal, or none within three minutes, is an error. The way from an alert to the refusal
// runs through a Temporal incident run, on cores shared with other test packages: the deadline is
// generous, the latency is what the test logs.
func refusedAt(ctx context.Context, v authn.Verifier, tok string) (time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	for {
		if _, err := v.Verify(ctx, tok); err != nil {
			var e *errs.Error
			if !errors.As(err, &e) || (e.Reason != authn.ReasonTokenRevoked && e.Reason != authn.ReasonTokenInactive) {
				return time.Time{}, fmt.Errorf("refused with %v, want TOKEN_REVOKED or TOKEN_INACTIVE", err)
			}
			return time.Now(), nil
		}
		select {
		case <-ctx.Done():
			return time.Time{}, errors.New("the token is still accepted after three minutes")
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// TestIncidentResponseEndToEnd: a critical alert about an ACTIVE agent, published on ALERTS as the
// monitor does, suspends the agent through its incident run: its outstanding token is refused by a
// verifier following REVOCATIONS and by introspection, and the issuer refuses it a new token. A
// security-approver then restores it with an approval token from IssueApprovalToken for the run,
// its step and the decision: the agent is ACTIVE, a new token works, the old one stays refused.
func TestIncidentResponseEndToEnd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	e := startIncidentPlatform(t, ctx)
	a := e.agents(t, ctx, "e2e-incident", 1)[0]
	oldTok := a.token(t, ctx)
	for _, v := range []authn.Verifier{e.offline, e.introspection} {
		if _, err := v.Verify(ctx, oldTok); err != nil {
			t.Fatalf("the ACTIVE agent's token refused: %v", err)
		}
	}

	published := time.Now()
	alertID := e.raise(t, ctx, a)
	e.waitState(t, ctx, a.name, registryv1.AgentState_AGENT_STATE_SUSPENDED)
	for _, v := range []struct {
		name string
		v    authn.Verifier
	}{{"the revocation-following verifier", e.offline}, {"introspection", e.introspection}} {
		at, err := refusedAt(ctx, v.v, oldTok)
		if err != nil {
			t.Fatalf("%s: %v", v.name, err)
		}
		t.Logf("alert published → old token refused by %s: %s", v.name, at.Sub(published).Round(time.Millisecond))
	}
	_, err := resourceToken(ctx, a.cred, filesAudience, "docs.search")
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.ErrorCode != "invalid_client" {
		t.Fatalf("token request of the suspended agent: %v, want invalid_client", err)
	}

	// The refused token request is activity of a suspended agent: the monitor may raise
	// inactive_agent_activity, another critical incident about the agent (it would suspend the agent
	// again after the restore). Wait until the monitor has run detection on that request and the
	// lifecycle has started the runs of every alert, then decide each.
	waitFor(t, ctx, "the refused token request in the monitor", func() (bool, error) {
		res, err := e.monitor.ListTelemetryEvents(ctx, &monitorv1.ListTelemetryEventsRequest{Parent: "tenants/default", Agent: a.name, Kind: "token.requested"})
		if err != nil {
			return false, err
		}
		return slices.ContainsFunc(res.GetEvents(), func(ev *monitorv1.TelemetryEvent) bool { return ev.GetOutcome() == "invalid_client" }), nil
	})
	drained(t, ctx, e.monitorJS, eventstore.StreamTelemetry, "monitor-telemetry")
	drained(t, ctx, e.lifecycleJS, eventstore.StreamAlerts, "lifecycle-incident-alerts")
	alerts := e.alertsAbout(t, ctx, a.name)
	if !slices.Contains(alerts, alertID) {
		t.Fatalf("alerts about the agent = %v, want %s among them", alerts, alertID)
	}
	t.Logf("%d alerts about the agent: %v", len(alerts), alerts)

	// An incident that suspended waits for the owner; a security-approver may decide any step. One
	// the policy does not suspend for (e.g. a low alert: record only) ends by itself.
	secTok, err := e.security.TokenSource(ctx).Token()
	if err != nil {
		t.Fatal(err)
	}
	conn := e.p.dial(t, secTok.AccessToken)
	lc := lifecyclev1.NewLifecycleServiceClient(conn)
	issuer := issuerv1.NewIssuerServiceClient(conn)
	// settled waits until the incident of alert id waits for a decision or has ended.
	settled := func(id string) *lifecyclev1.Incident {
		t.Helper()
		var inc *lifecyclev1.Incident
		waitFor(t, ctx, "the incident of alert "+id+" waiting for a decision or ended", func() (bool, error) {
			res, err := lc.ListIncidents(ctx, &lifecyclev1.ListIncidentsRequest{Parent: "tenants/default"})
			if err != nil {
				return false, err
			}
			for _, i := range res.GetIncidents() {
				if i.GetAlert() != "tenants/default/alerts/"+id {
					continue
				}
				if i.GetWorkflow().GetCompleted() || (i.GetDecider() != "" && i.GetWorkflow().GetRunId() != "") {
					inc = i
					return true, nil
				}
			}
			return false, fmt.Errorf("incidents: %v", res.GetIncidents())
		})
		return inc
	}
	restore := func(id string, inc *lifecyclev1.Incident) *lifecyclev1.Incident {
		t.Helper()
		approval, err := issuer.IssueApprovalToken(ctx, &issuerv1.IssueApprovalTokenRequest{
			Agent: a.name, Step: inc.GetDecider(), Decision: issuerv1.ApprovalTokenDecision_APPROVAL_TOKEN_DECISION_RESTORE,
			WorkflowRunId: inc.GetWorkflow().GetRunId(),
		})
		if err != nil {
			t.Fatal(err)
		}
		res, err := lc.DecideIncident(ctx, &lifecyclev1.DecideIncidentRequest{Agent: a.name, AlertId: id,
			Decision: lifecyclev1.IncidentDecision_INCIDENT_DECISION_RESTORE, Comment: "e2e: false positive",
			ApprovalToken: approval.GetToken(), RequestId: "e2e-restore-" + id})
		if err != nil {
			t.Fatalf("restore incident %s: %v", id, err)
		}
		if res.GetIncident().GetOutcome() != "restored" {
			t.Fatalf("decided incident = %v, want restored", res.GetIncident())
		}
		return res.GetIncident()
	}
	inc := settled(alertID)
	if inc.GetWorkflow().GetCompleted() || inc.GetAgent() != a.name || inc.GetSeverity() != "critical" || inc.GetDecider() != "owner" ||
		!slices.Contains(inc.GetActions(), "suspended") || !slices.Contains(inc.GetActions(), "tokens revoked") {
		t.Fatalf("incident = %v", inc)
	}
	// A decision without an approval token changes nothing.
	if _, err := lc.DecideIncident(ctx, &lifecyclev1.DecideIncidentRequest{Agent: a.name, AlertId: alertID,
		Decision: lifecyclev1.IncidentDecision_INCIDENT_DECISION_RESTORE, RequestId: "e2e-no-token"}); err == nil {
		t.Fatal("a decision without an approval token was taken")
	}
	restore(alertID, inc)
	for _, id := range alerts {
		if id == alertID {
			continue
		}
		switch inc := settled(id); {
		case inc.GetWorkflow().GetCompleted():
			t.Logf("the incident of alert %s (%s %s) ended by itself: %s", id, inc.GetDetector(), inc.GetSeverity(), inc.GetOutcome())
		default:
			restore(id, inc)
			t.Logf("restored the incident of alert %s (%s %s) too", id, inc.GetDetector(), inc.GetSeverity())
		}
	}
	e.waitState(t, ctx, a.name, registryv1.AgentState_AGENT_STATE_ACTIVE)
	restored := time.Now()
	newTok := a.token(t, ctx)
	t.Logf("restore → first new token %s", time.Since(restored).Round(time.Millisecond))
	for _, v := range []authn.Verifier{e.offline, e.introspection} {
		if _, err := v.Verify(ctx, newTok); err != nil {
			t.Fatalf("the restored agent's new token refused: %v", err)
		}
		if _, err := v.Verify(ctx, oldTok); err == nil {
			t.Fatal("the token revoked by the incident is accepted after restore")
		}
	}
}

// TestIncidentLatency measures alert published → the agent's token refused, for N alerts on N
// agents published together (AGENTID_INCIDENT_LATENCY_AGENTS=N; skipped without it). It reports
// p50/p99/max for the revocation-following verifier and introspection, and where the time goes:
// alert published → incident run started (the lifecycle consumer) and → agent suspended (the
// registry's update time); nothing about time is asserted.
//
//	AGENTID_INCIDENT_LATENCY_AGENTS=20 go test ./e2e -run TestIncidentLatency -v -count=1
func TestIncidentLatency(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("AGENTID_INCIDENT_LATENCY_AGENTS"))
	if n <= 0 {
		t.Skip("set AGENTID_INCIDENT_LATENCY_AGENTS=N to measure alert → token refused over N agents")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	e := startIncidentPlatform(t, ctx)
	agents := e.agents(t, ctx, "e2e-incident-latency", n)
	toks := make([]string, n)
	for i, a := range agents {
		toks[i] = a.token(t, ctx)
	}
	offline, intro := make([]time.Duration, n), make([]time.Duration, n)
	published, alertIDs := make([]time.Time, n), make([]string, n)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failures []error
	for i, a := range agents {
		published[i] = time.Now()
		alertIDs[i] = e.raise(t, ctx, a)
		for _, v := range []struct {
			v   authn.Verifier
			out []time.Duration
		}{{e.offline, offline}, {e.introspection, intro}} {
			wg.Go(func() {
				at, err := refusedAt(ctx, v.v, toks[i])
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					failures = append(failures, fmt.Errorf("%s: %w", a.name, err))
					return
				}
				v.out[i] = at.Sub(published[i])
			})
		}
	}
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("tokens not refused: %v", failures)
	}
	t.Logf("alert published → token refused over %d agents: revocation-following verifier %s; introspection %s", n, percentiles(offline), percentiles(intro))

	// Where the time went: the runs' start times (Temporal visibility, through ListIncidents) and the
	// agents' update times (the suspension is their last change).
	secTok, err := e.security.TokenSource(ctx).Token()
	if err != nil {
		t.Fatal(err)
	}
	lc := lifecyclev1.NewLifecycleServiceClient(e.p.dial(t, secTok.AccessToken))
	runStarted := map[string]time.Time{}
	waitFor(t, ctx, "every incident run listed", func() (bool, error) {
		var token string
		for {
			res, err := lc.ListIncidents(ctx, &lifecyclev1.ListIncidentsRequest{Parent: "tenants/default", PageToken: token})
			if err != nil {
				return false, err
			}
			for _, inc := range res.GetIncidents() {
				runStarted[inc.GetAlert()] = inc.GetWorkflow().GetStartTime().AsTime()
			}
			if token = res.GetNextPageToken(); token == "" {
				break
			}
		}
		for _, id := range alertIDs {
			if _, ok := runStarted["tenants/default/alerts/"+id]; !ok {
				return false, fmt.Errorf("no run of alert %s listed yet", id)
			}
		}
		return true, nil
	})
	started, suspended := make([]time.Duration, n), make([]time.Duration, n)
	for i, a := range agents {
		started[i] = runStarted["tenants/default/alerts/"+alertIDs[i]].Sub(published[i])
		res, err := e.registry.GetAgent(ctx, &registryv1.GetAgentRequest{Name: a.name})
		if err != nil {
			t.Fatal(err)
		}
		if st := res.GetAgent().GetState(); st != registryv1.AgentState_AGENT_STATE_SUSPENDED {
			t.Fatalf("%s is %s after its critical alert, want SUSPENDED", a.name, st)
		}
		suspended[i] = res.GetAgent().GetUpdateTime().AsTime().Sub(published[i])
	}
	t.Logf("alert published → incident run started %s; → agent suspended %s", percentiles(started), percentiles(suspended))
}

// percentiles renders p50 / p99 / max of ds (nearest rank).
func percentiles(ds []time.Duration) string {
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := func(p float64) time.Duration {
		i := int(p*float64(len(s))+0.999999) - 1
		return s[min(max(i, 0), len(s)-1)].Round(time.Millisecond)
	}
	return fmt.Sprintf("p50 %s, p99 %s, max %s", rank(0.50), rank(0.99), s[len(s)-1].Round(time.Millisecond))
}
