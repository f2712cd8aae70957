package app_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/grpcx"
	"github.com/agentid/agentid/pkg/testkit"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/monitor/app"
	"github.com/agentid/agentid/services/monitor/internal/store"
	"github.com/agentid/agentid/services/monitor/internal/synth"
)

// alertCallers are principals beyond the package's: the lifecycle worker reads alerts everywhere.
var alertCallers = func() map[string]*authn.Claims {
	m := map[string]*authn.Claims{
		"lifecycle-worker": {Subject: "lifecycle-worker", Tenant: authn.SystemTenant, Roles: []string{"lifecycle-worker"}},
	}
	for k, v := range principals {
		m[k] = v
	}
	return m
}()

// monitor is one run of the monitor service on a shared NATS and DuckDB file.
type monitor struct {
	client monitorv1.MonitorServiceClient
	reg    *prometheus.Registry
	stop   func()
}

func runMonitor(t *testing.T, es *eventstore.Store, cfg app.Config) *monitor {
	t.Helper()
	reg := prometheus.NewRegistry()
	a, err := app.New(cfg, app.Deps{Store: es, Logger: quiet, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tasks := a.Tasks()
	done := make(chan error, len(tasks))
	for _, task := range tasks {
		go func() { done <- task(ctx) }()
	}
	srv := grpcx.NewServer(grpcx.ServerConfig{Logger: quiet, Verifier: testkit.StaticVerifier(alertCallers)})
	a.RegisterGRPC(srv)
	conn := testkit.ServeGRPC(t, srv)
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		for range tasks {
			if err := <-done; err != nil {
				t.Errorf("task: %v", err)
			}
		}
		srv.Stop()
		if err := a.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	}
	t.Cleanup(stop)
	return &monitor{client: monitorv1.NewMonitorServiceClient(conn), reg: reg, stop: stop}
}

// register appends the registration and activation of each agent of g to AGENTS.
func register(t *testing.T, es *eventstore.Store, g *synth.Generator) {
	t.Helper()
	md := eventstore.Metadata{Actor: eventstore.Actor{ID: "registry", Kind: eventstore.ActorService}}
	for _, a := range g.Agents {
		id := filepath.Base(a.Name)
		env := registryv1.Environment_ENVIRONMENT_PROD
		if a.Environment == "staging" {
			env = registryv1.Environment_ENVIRONMENT_STAGING
		}
		for i, ap := range []eventstore.Append{
			{Type: "agent.registered", Data: &registryv1.AgentRegistered{Agent: &registryv1.Agent{Name: a.Name, Owner: a.Owner, Sponsor: "sponsor@acme.example",
				Environment: env, RiskTier: registryv1.RiskTier_RISK_TIER_HIGH, Scopes: a.Scopes}}},
			{Type: "agent.activated", ExpectedVersion: eventstore.AnyVersion, Data: &registryv1.AgentActivated{Name: a.Name}},
		} {
			ap.Tenant, ap.AggregateType, ap.AggregateID, ap.Subject, ap.Metadata = g.Tenant(), eventstore.AggregateAgent, id, a.Name, md
			ap.IdempotencyKey = fmt.Sprintf("%s-%d", id, i)
			if _, err := es.Append(t.Context(), ap); err != nil {
				t.Fatalf("append %s of %s: %v", ap.Type, a.Name, err)
			}
		}
	}
}

// accessOf is the AccessEvent a resource server would have reported for an access row.
func accessOf(r store.Event) *monitorv1.AccessEvent {
	out := monitorv1.AccessOutcome_ACCESS_OUTCOME_ALLOWED
	if r.Outcome == "denied" {
		out = monitorv1.AccessOutcome_ACCESS_OUTCOME_DENIED
	}
	return &monitorv1.AccessEvent{
		EventId: r.EventID, Time: timestamppb.New(r.Time), Tenant: r.Tenant, Agent: r.Agent, ClientId: r.ClientID,
		OnBehalfOf: r.OnBehalfOf, Environment: r.Environment, Resource: r.Resource, Action: r.Action, Scopes: r.Scopes,
		Outcome: out, ResponseBytes: r.Bytes, Rows: r.Rows, SourceAddress: r.SourceAddress, RequestId: r.RequestID,
		TokenId: r.TokenID,
	}
}

// usageEvents returns the events of agent since a day before now that GetAgentUsage counts.
func usageEvents(t *testing.T, c monitorv1.MonitorServiceClient, agent string, now time.Time) int64 {
	t.Helper()
	resp, err := c.GetAgentUsage(testkit.WithBearer(t.Context(), "platform-admin"), &monitorv1.GetAgentUsageRequest{Agent: agent, StartTime: timestamppb.New(now.Add(-24 * time.Hour))})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetEvents()
}

// publishAccess publishes the access rows as access.recorded batches of at most 1000 events under
// the given batch prefix, and returns how many rows were published per agent.
func publishAccess(t *testing.T, es *eventstore.Store, tenant, batchPrefix string, rows []store.Event) map[string]int64 {
	t.Helper()
	counts := map[string]int64{}
	var batch []*monitorv1.AccessEvent
	n := 0
	flush := func() {
		if len(batch) == 0 {
			return
		}
		n++
		id := uuid.NewSHA1(uuid.NameSpaceOID, fmt.Appendf(nil, "%s-%d", batchPrefix, n)).String()
		if _, err := es.PublishWithID(t.Context(), id, "telemetry."+tenant+".access.recorded", "access.recorded", "tenants/"+tenant,
			&monitorv1.RecordAccessRequest{Parent: "tenants/" + tenant, BatchId: id, Events: batch},
			eventstore.Metadata{Tenant: tenant, Actor: eventstore.Actor{ID: "reports-api", Kind: eventstore.ActorService}}); err != nil {
			t.Fatal(err)
		}
		batch = nil
	}
	for _, r := range rows {
		if r.Kind != store.KindAccess {
			continue
		}
		counts[r.Agent]++
		batch = append(batch, accessOf(r))
		if len(batch) == 1000 {
			flush()
		}
	}
	flush()
	return counts
}

// attackTarget is the first read-only analytics agent of g.
func attackTarget(t *testing.T, g *synth.Generator) *synth.Agent {
	t.Helper()
	for _, a := range g.Agents {
		if a.Profile == synth.Analytics && a.ReadOnly {
			return a
		}
	}
	t.Fatal("no read-only analytics agent in the population")
	return nil
}

func TestAlertPipelineEndToEnd(t *testing.T) {
	n := testkit.StartNATS(t)
	es := eventstore.New(n.JetStream(t), eventstore.WithSource("agentid/monitor"), eventstore.WithLogger(quiet), eventstore.WithRegisterer(nil))
	if err := es.EnsureStreams(t.Context()); err != nil {
		t.Fatal(err)
	}
	cfg := app.Config{DuckDBPath: filepath.Join(t.TempDir(), "telemetry.duckdb")}
	admin := func(ctx context.Context) context.Context { return testkit.WithBearer(ctx, "platform-admin") }

	// A population of registered agents and ten days of their normal access history.
	g := synth.New(synth.Config{Seed: 79, Tenant: "acme", Agents: 8, ClassSize: 4})
	register(t, es, g)
	target := attackTarget(t, g)
	now := time.Now().UTC()
	history := g.Events(now.Add(-10*24*time.Hour), now.Add(-2*time.Hour))
	counts := publishAccess(t, es, "acme", "history", history)
	if counts[target.Name] < 200 {
		t.Fatalf("target %s has %d access rows in its history; want a baseline of its own (>= 200)", target.Name, counts[target.Name])
	}

	first := runMonitor(t, es, cfg)
	testkit.Eventually(t, 0, "the history stored", func() (bool, error) {
		resp, err := first.client.GetAgentUsage(admin(t.Context()), &monitorv1.GetAgentUsageRequest{
			Agent: target.Name, StartTime: timestamppb.New(now.Add(-11 * 24 * time.Hour)),
		})
		return err == nil && resp.GetEvents() == counts[target.Name], err
	})
	// Without baselines yet, normal traffic of registered agents raises nothing.
	if resp, err := first.client.ListAlerts(admin(t.Context()), &monitorv1.ListAlertsRequest{Parent: "tenants/acme"}); err != nil || len(resp.GetAlerts()) != 0 {
		t.Fatalf("alerts on the history: %v, %v", resp.GetAlerts(), err)
	}
	// The issuer issued the target a token before the restart: the restarted monitor relearns it
	// from the store, so the attack with it below is corroborated (and may be HIGH).
	jti := uuid.NewString()
	usageBefore := usageEvents(t, first.client, target.Name, now)
	if _, err := es.Publish(t.Context(), "telemetry.acme.token.requested", "token.requested", target.Name, &issuerv1.TokenRequested{
		Tenant: "acme", Agent: target.Name, ClientId: target.ClientID, Outcome: issuerv1.TokenOutcome_TOKEN_OUTCOME_ISSUED,
		TokenId: jti, ExpireTime: timestamppb.New(time.Now().Add(10 * time.Minute)),
	}, eventstore.Metadata{Tenant: "acme", Actor: eventstore.Actor{ID: "issuer", Kind: eventstore.ActorService}}); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 0, "the token request stored", func() (bool, error) {
		return usageEvents(t, first.client, target.Name, now) > usageBefore, nil
	})
	first.stop()

	// Restarted, the monitor learns the baselines from the store at start.
	second := runMonitor(t, es, cfg)
	testkit.Eventually(t, 0, "the target's baseline", func() (bool, error) {
		resp, err := second.client.GetBaseline(admin(t.Context()), &monitorv1.GetBaselineRequest{Agent: target.Name})
		return err == nil && resp.GetBaseline().GetEvents() > 0 && !resp.GetBaseline().GetFromClass(), err
	})

	// The attack: the read-only analytics agent exports 1000 times its usual rows, now.
	attack := g.Attack(synth.Attack{Kind: synth.BulkExport, Agent: target.Index, At: time.Now().UTC()})
	for i := range attack {
		attack[i].TokenID = jti
	}
	published := time.Now()
	publishAccess(t, es, "acme", "attack", attack)
	var alert *monitorv1.Alert
	testkit.Eventually(t, 0, "the bulk export alert", func() (bool, error) {
		resp, err := second.client.ListAlerts(admin(t.Context()), &monitorv1.ListAlertsRequest{Parent: "tenants/acme", Detector: "bulk_export"})
		if err != nil || len(resp.GetAlerts()) == 0 {
			return false, err
		}
		alert = resp.GetAlerts()[0]
		return true, nil
	})
	t.Logf("publish -> alert listed: %s", time.Since(published))
	if alert.GetAgent() != target.Name || alert.GetTenant() != "acme" || alert.GetSeverity() < monitorv1.AlertSeverity_ALERT_SEVERITY_HIGH ||
		alert.GetOwner() != target.Owner || !alert.GetAgentKnown() || alert.GetName() != "tenants/acme/alerts/"+alert.GetAlertId() || len(alert.GetEventIds()) == 0 {
		t.Fatalf("alert = %v", alert)
	}
	i := slices.IndexFunc(alert.GetEvidence(), func(e *monitorv1.AlertEvidence) bool {
		return e.GetObserved() >= 100*e.GetBaseline() && e.GetBaseline() > 0
	})
	if i < 0 {
		t.Fatalf("evidence %v shows no observation far above its baseline", alert.GetEvidence())
	}
	alertsStream, err := es.JetStream().Stream(t.Context(), eventstore.StreamAlerts)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := alertsStream.GetLastMsgForSubject(t.Context(), "alerts.acme.bulk_export")
	if err != nil || raw.Header.Get(eventstore.HeaderType) != "alert.raised" || raw.Header.Get(eventstore.HeaderDataSchema) != "agentid.monitor.v1.AlertRaised" {
		t.Fatalf("ALERTS message: %v, %v", raw, err)
	}
	got, err := second.client.GetAlert(admin(t.Context()), &monitorv1.GetAlertRequest{Name: alert.GetName()})
	if err != nil || got.GetAlert().GetAlertId() != alert.GetAlertId() {
		t.Fatalf("GetAlert = %v, %v", got, err)
	}
	var all []*monitorv1.Alert
	testkit.Eventually(t, 0, "every alert on ALERTS listed", func() (bool, error) {
		all = listAll(t, second.client)
		return uint64(len(all)) == streamMsgs(t, es, eventstore.StreamAlerts), nil
	})
	if !slices.Contains(ids(all), raw.Header.Get(eventstore.HeaderID)) {
		t.Fatalf("the last bulk_export alert on ALERTS (%s) is not listed", raw.Header.Get(eventstore.HeaderID))
	}
	for _, a := range all {
		t.Logf("alert %s %s %s: %s", a.GetDetector(), a.GetSeverity(), a.GetAgent(), a.GetSummary())
	}

	// The same telemetry again (the reporter resent the batch in another message): recognised as
	// judged already (not counted twice), no second alert, on ALERTS or listed.
	before, judged := streamMsgs(t, es, eventstore.StreamAlerts), metricSum(t, second.reg, "monitor_detection_rows_total")
	resent := metricSum(t, second.reg, "monitor_detection_rows_resent_total")
	redeliver(t, es, "telemetry.acme.access.recorded")
	testkit.Eventually(t, 0, "the resent attack recognised", func() (bool, error) {
		return metricSum(t, second.reg, "monitor_detection_rows_resent_total") >= resent+float64(len(attack)), nil
	})
	if n := metricSum(t, second.reg, "monitor_detection_rows_total"); n != judged {
		t.Fatalf("monitor_detection_rows_total went from %v to %v on resent rows", judged, n)
	}
	if after := streamMsgs(t, es, eventstore.StreamAlerts); after != before {
		for _, a := range listAll(t, second.client) {
			t.Logf("alert %s %s %s: %s", a.GetDetector(), a.GetSeverity(), a.GetAgent(), a.GetSummary())
		}
		t.Fatalf("ALERTS grew from %d to %d messages on the same telemetry", before, after)
	}
	if got := listAll(t, second.client); !slices.Equal(ids(got), ids(all)) {
		t.Fatalf("alerts after the replay %v, want %v", ids(got), ids(all))
	}
	if n := metricSum(t, second.reg, "monitor_detection_latency_seconds"); n == 0 {
		t.Fatal("no detection latency observed")
	}
	second.stop()

	// Restarted, the monitor lists the same alerts (rebuilt from ALERTS).
	third := runMonitor(t, es, cfg)
	testkit.Eventually(t, 0, "the alerts listed after a restart", func() (bool, error) {
		return slices.Equal(ids(listAll(t, third.client)), ids(all)), nil
	})

	// Authorization: another tenant's admin and unknown tenants get NotFound; the lifecycle worker reads.
	tests := []struct {
		name, token string
		call        func(context.Context) error
		want        codes.Code
	}{
		{"other tenant's admin lists", "globex-admin", func(ctx context.Context) error {
			_, err := third.client.ListAlerts(ctx, &monitorv1.ListAlertsRequest{Parent: "tenants/acme"})
			return err
		}, codes.NotFound},
		{"other tenant's admin gets", "globex-admin", func(ctx context.Context) error {
			_, err := third.client.GetAlert(ctx, &monitorv1.GetAlertRequest{Name: alert.GetName()})
			return err
		}, codes.NotFound},
		{"other tenant's admin reads a baseline", "globex-admin", func(ctx context.Context) error {
			_, err := third.client.GetBaseline(ctx, &monitorv1.GetBaselineRequest{Agent: target.Name})
			return err
		}, codes.NotFound},
		{"unknown tenant", "platform-admin", func(ctx context.Context) error {
			_, err := third.client.ListAlerts(ctx, &monitorv1.ListAlertsRequest{Parent: "tenants/initech"})
			return err
		}, codes.NotFound},
		{"owner lacks the role", "acme-owner", func(ctx context.Context) error {
			_, err := third.client.ListAlerts(ctx, &monitorv1.ListAlertsRequest{Parent: "tenants/acme"})
			return err
		}, codes.PermissionDenied},
		{"lifecycle worker lists", "lifecycle-worker", func(ctx context.Context) error {
			_, err := third.client.ListAlerts(ctx, &monitorv1.ListAlertsRequest{Parent: "tenants/acme"})
			return err
		}, codes.OK},
		{"lifecycle worker reads usage", "lifecycle-worker", func(ctx context.Context) error {
			_, err := third.client.GetAgentUsage(ctx, &monitorv1.GetAgentUsageRequest{Agent: target.Name, StartTime: timestamppb.New(now.Add(-24 * time.Hour))})
			return err
		}, codes.OK},
		{"auditor gets", "acme-auditor", func(ctx context.Context) error {
			_, err := third.client.GetAlert(ctx, &monitorv1.GetAlertRequest{Name: alert.GetName()})
			return err
		}, codes.OK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(testkit.WithBearer(t.Context(), tt.token)); status.Code(err) != tt.want {
				t.Fatalf("code %s, want %s (%v)", status.Code(err), tt.want, err)
			}
		})
	}
}

func listAll(t *testing.T, c monitorv1.MonitorServiceClient) []*monitorv1.Alert {
	t.Helper()
	resp, err := c.ListAlerts(testkit.WithBearer(t.Context(), "platform-admin"), &monitorv1.ListAlertsRequest{Parent: "tenants/acme", PageSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetAlerts()
}

func ids(list []*monitorv1.Alert) []string {
	var out []string
	for _, a := range list {
		out = append(out, a.GetAlertId())
	}
	sort.Strings(out)
	return out
}

func streamMsgs(t *testing.T, es *eventstore.Store, stream string) uint64 {
	t.Helper()
	s, err := es.JetStream().Stream(t.Context(), stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// redeliver stores the last event on subject once more under the same CloudEvents id (as a
// redelivery hands it to the consumer again): the copy bypasses the stream's duplicate window.
func redeliver(t *testing.T, es *eventstore.Store, subject string) {
	t.Helper()
	s, err := es.JetStream().Stream(t.Context(), eventstore.StreamTelemetry)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := s.GetLastMsgForSubject(t.Context(), subject)
	if err != nil {
		t.Fatal(err)
	}
	h := nats.Header{}
	for k, v := range raw.Header {
		if !strings.HasPrefix(k, "Nats-") {
			h[k] = v
		}
	}
	if _, err := es.JetStream().PublishMsg(t.Context(), &nats.Msg{Subject: subject, Header: h, Data: raw.Data}); err != nil {
		t.Fatal(err)
	}
}

// metricSum sums the counters (or the histogram sample counts) of the metric name in reg.
func metricSum(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue() + float64(m.GetHistogram().GetSampleCount())
		}
	}
	return sum
}
