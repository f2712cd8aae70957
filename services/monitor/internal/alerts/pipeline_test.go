package alerts_test

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/testkit"
	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
	"github.com/agentid/agentid/services/monitor/internal/alerts"
	"github.com/agentid/agentid/services/monitor/internal/store"
)

var quiet = slog.New(slog.DiscardHandler)

// startStore returns an event store on an embedded NATS with the platform's streams.
func startStore(t *testing.T) *eventstore.Store {
	t.Helper()
	js := testkit.StartNATS(t).JetStream(t)
	es := eventstore.New(js, eventstore.WithSource("agentid/monitor"), eventstore.WithLogger(quiet), eventstore.WithRegisterer(nil))
	if err := es.EnsureStreams(t.Context()); err != nil {
		t.Fatal(err)
	}
	return es
}

// runProjection follows ALERTS into a new store until the test ends.
func runProjection(t *testing.T, es *eventstore.Store) *alerts.Store {
	t.Helper()
	s := alerts.NewStore(0)
	r := es.NewRunner(alerts.NewProjection(s), eventstore.StreamAlerts, []string{alerts.FilterSubject})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("projection: %v", err)
		}
	})
	return s
}

func raised(tenant, agent, detector string) *monitorv1.Alert {
	id := uuid.NewString()
	now := time.Now().UTC()
	return &monitorv1.Alert{
		Name: "tenants/" + tenant + "/alerts/" + id, AlertId: id, Tenant: tenant, Agent: agent, Detector: detector,
		Severity: crit, Summary: "412,000 rows in one request", DetectTime: timestamppb.New(now),
		WindowStart: timestamppb.New(now.Add(-time.Second)), WindowEnd: timestamppb.New(now.Add(-time.Second)),
		Evidence: []*monitorv1.AlertEvidence{{Metric: "rows_per_request", Baseline: 120, Observed: 412000, Score: 9.1, Threshold: 40}},
		EventIds: []string{"ev-1"}, AgentKnown: true,
	}
}

func streamMsgs(t *testing.T, es *eventstore.Store) uint64 {
	t.Helper()
	s, err := es.JetStream().Stream(t.Context(), eventstore.StreamAlerts)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func TestPublishedAlertsAreStoredOnceAndQueryable(t *testing.T) {
	es := startStore(t)
	pub, err := alerts.NewPublisher(es, quiet)
	if err != nil {
		t.Fatal(err)
	}
	s := runProjection(t, es)
	a := raised("acme", "tenants/acme/agents/etl", "bulk_export")
	ev, err := pub.Publish(t.Context(), a)
	if err != nil {
		t.Fatal(err)
	}
	if ev.ID != a.GetAlertId() || ev.Type != alerts.EventType || ev.Stream != eventstore.StreamAlerts ||
		ev.Metadata.Tenant != "acme" || ev.Metadata.CausationID != "ev-1" || ev.Subject != "tenants/acme/agents/etl" {
		t.Fatalf("event = %+v", ev)
	}
	// The same alert again (a replayed telemetry event raised it once more): stored once.
	if _, err := pub.Publish(t.Context(), proto.Clone(a).(*monitorv1.Alert)); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 0, "the alert in the store", func() (bool, error) {
		_, ok := s.Get("acme", a.GetAlertId())
		return ok, nil
	})
	if n := streamMsgs(t, es); n != 1 {
		t.Fatalf("ALERTS holds %d messages, want 1", n)
	}
	got, _ := s.Get("acme", a.GetAlertId())
	if !proto.Equal(got, a) {
		t.Fatalf("stored %v, want %v", got, a)
	}
	msg, err := es.JetStream().Stream(t.Context(), eventstore.StreamAlerts)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := msg.GetLastMsgForSubject(t.Context(), "alerts.acme.bulk_export")
	if err != nil {
		t.Fatalf("no message on alerts.acme.bulk_export: %v", err)
	}
	if raw.Header.Get(eventstore.HeaderID) != a.GetAlertId() || raw.Header.Get(eventstore.HeaderType) != "alert.raised" ||
		raw.Header.Get("Nats-Msg-Id") != a.GetAlertId() || raw.Header.Get(eventstore.HeaderDataSchema) != "agentid.monitor.v1.AlertRaised" {
		t.Fatalf("headers = %v", raw.Header)
	}

	// A restarted monitor rebuilds the same store from the stream.
	again := runProjection(t, es)
	testkit.Eventually(t, 0, "the alert in a rebuilt store", func() (bool, error) {
		_, ok := again.Get("acme", a.GetAlertId())
		return ok, nil
	})
}

func TestPublishRefusesAlertsThatCanNeverBeStored(t *testing.T) {
	es := startStore(t)
	pub, err := alerts.NewPublisher(es, quiet)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		change func(*monitorv1.Alert)
	}{
		{"id not a UUID", func(a *monitorv1.Alert) { a.AlertId = "volume_spike-1" }},
		{"no tenant", func(a *monitorv1.Alert) { a.Tenant = "" }},
		{"no detector", func(a *monitorv1.Alert) { a.Detector = "" }},
		{"tenant not a subject token", func(a *monitorv1.Alert) { a.Tenant = "a.b" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := raised("acme", "tenants/acme/agents/etl", "bulk_export")
			tt.change(a)
			ctx, cancel := context.WithTimeout(t.Context(), testkit.DefaultWait)
			defer cancel()
			if _, err := pub.Publish(ctx, a); err == nil || ctx.Err() != nil {
				t.Fatalf("Publish = %v (context %v), want an immediate error", err, ctx.Err())
			}
		})
	}
	if n := streamMsgs(t, es); n != 0 {
		t.Fatalf("ALERTS holds %d messages", n)
	}
}

// flaky fails its first failures publications, then publishes.
type flaky struct {
	failures int32
	calls    atomic.Int32
	next     alerts.EventPublisher
}

func (f *flaky) PublishWithID(ctx context.Context, id, subject, typ, ceSubject string, data proto.Message, md eventstore.Metadata) (eventstore.Event, error) {
	if f.calls.Add(1) <= f.failures {
		return eventstore.Event{}, errors.New("nats: timeout")
	}
	return f.next.PublishWithID(ctx, id, subject, typ, ceSubject, data, md)
}

func TestPublishRetriesUntilStored(t *testing.T) {
	es := startStore(t)
	f := &flaky{failures: 3, next: es}
	pub, err := alerts.NewPublisher(f, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pub.Publish(t.Context(), raised("acme", "tenants/acme/agents/etl", "bulk_export")); err != nil {
		t.Fatal(err)
	}
	if f.calls.Load() != 4 || streamMsgs(t, es) != 1 {
		t.Fatalf("%d calls, %d messages; want 4 calls and 1 message", f.calls.Load(), streamMsgs(t, es))
	}

	down := &flaky{failures: 1 << 30, next: es}
	pub, _ = alerts.NewPublisher(down, quiet)
	ctx, cancel := context.WithCancel(t.Context())
	go func() {
		testkit.Eventually(t, 0, "a retry", func() (bool, error) { return down.calls.Load() >= 2, nil })
		cancel()
	}()
	if _, err := pub.Publish(ctx, raised("acme", "tenants/acme/agents/etl", "bulk_export")); !errors.Is(err, context.Canceled) {
		t.Fatalf("Publish while the stream is down = %v, want the context's error once stopped", err)
	}
}

func TestRuntimePublishesTheAlertsOfStoredRows(t *testing.T) {
	es := startStore(t)
	pub, _ := alerts.NewPublisher(es, quiet)
	s := runProjection(t, es)
	reg := prometheus.NewRegistry()
	var observed atomic.Int32
	recomputed := make(chan string, 4)
	rt, err := alerts.NewRuntime(alerts.RuntimeConfig{
		Detect: func(rows []store.Event) []*monitorv1.Alert {
			var out []*monitorv1.Alert
			for _, r := range rows {
				if r.Rows > 100000 {
					a := raised(r.Tenant, r.Agent, "bulk_export")
					a.EventIds = []string{r.EventID}
					out = append(out, a)
				}
			}
			return out
		},
		Observe:   func(rows []store.Event) { observed.Add(int32(len(rows))) },
		Recompute: func(_ context.Context, tenant string, _ time.Time, _ uint64) error { recomputed <- tenant; return nil },
		Tenants:   func(context.Context) ([]string, error) { return []string{"acme"}, nil },
		Publisher: pub, Logger: quiet, Registerer: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	rows := []store.Event{
		{EventID: "e1", Tenant: "acme", Agent: "tenants/acme/agents/etl", Kind: store.KindAccess, Rows: 10, Time: time.Now()},
		{EventID: "e2", Tenant: "acme", Agent: "tenants/acme/agents/etl", Kind: store.KindAccess, Rows: 412000, Time: time.Now()},
	}

	// Before the baselines are computed, detection waits (here until the caller gives up).
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	rt.OnStored(ctx, rows)
	if observed.Load() != 0 || streamMsgs(t, es) != 0 {
		t.Fatal("detection ran before the baselines were computed")
	}

	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rt.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	if tenant := <-recomputed; tenant != "acme" {
		t.Fatalf("recomputed %q", tenant)
	}
	<-rt.Ready()
	rt.OnStored(t.Context(), rows) // returns once the alert is on ALERTS
	if n := streamMsgs(t, es); n != 1 {
		t.Fatalf("ALERTS holds %d messages, want 1", n)
	}
	if observed.Load() != 2 {
		t.Fatalf("baselines observed %d rows, want 2", observed.Load())
	}
	if got := raisedCount(t, reg, "bulk_export", "critical"); got != 1 {
		t.Fatalf("monitor_alerts_raised_total{bulk_export,critical} = %v", got)
	}
	testkit.Eventually(t, 0, "the alert listed", func() (bool, error) {
		list, _, err := s.List(alerts.Query{Tenant: "acme", Detector: "bulk_export"})
		return len(list) == 1 && list[0].GetEventIds()[0] == "e2", err
	})
}

// raisedCount returns monitor_alerts_raised_total{detector, severity} from reg.
func raisedCount(t *testing.T, reg *prometheus.Registry, detector, severity string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "monitor_alerts_raised_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["detector"] == detector && labels["severity"] == severity {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}
