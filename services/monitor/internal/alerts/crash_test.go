package alerts_test

import (
	"context"
	"errors"
	"sync"
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
	"github.com/agentid/agentid/services/monitor/internal/baseline"
	"github.com/agentid/agentid/services/monitor/internal/detect"
	"github.com/agentid/agentid/services/monitor/internal/ingest"
	"github.com/agentid/agentid/services/monitor/internal/store"
	"github.com/agentid/agentid/services/monitor/internal/store/duckdb"
)

// down is an ALERTS publisher that never succeeds (the monitor is killed before the alert is out).
type down struct{ calls atomic.Int32 }

func (d *down) PublishWithID(context.Context, string, string, string, string, proto.Message, eventstore.Metadata) (eventstore.Event, error) {
	d.calls.Add(1)
	return eventstore.Event{}, errors.New("nats: no responders available for request")
}

// monitorProcess is one run of the monitor's ingest and detection over a shared telemetry store.
type monitorProcess struct {
	mgr    *baseline.Manager
	rt     *alerts.Runtime
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func startMonitor(t *testing.T, es *eventstore.Store, st *duckdb.Store, events alerts.EventPublisher, lag *ingest.LagWatcher) *monitorProcess {
	t.Helper()
	p := &monitorProcess{mgr: baseline.NewManager(baseline.Config{})}
	eng := detect.NewEngine(detect.Config{}, p.mgr)
	lookup := func(tenant, id string, _ time.Time) (detect.AgentInfo, bool) {
		return detect.AgentInfo{Tenant: tenant, Name: id, State: "ACTIVE", Known: true}, true
	}
	pub, err := alerts.NewPublisher(events, quiet)
	if err != nil {
		t.Fatal(err)
	}
	p.rt, err = alerts.NewRuntime(alerts.RuntimeConfig{
		Detect:  func(rows []store.Event) []*monitorv1.Alert { return eng.Process(rows, lookup) },
		Observe: p.mgr.Observe,
		Recompute: func(ctx context.Context, tenant string, asOf time.Time, beforeSeq uint64) error {
			return p.mgr.RecomputeAcked(ctx, st, tenant, asOf, beforeSeq)
		},
		AckFloor: lag.AckFloor, Tenants: st.Tenants,
		Publisher: pub, Logger: quiet, Registerer: prometheus.NewRegistry(),
	})
	if err != nil {
		t.Fatal(err)
	}
	c, err := ingest.NewConsumer(ingest.Config{Source: es, Store: st, Logger: quiet, Registerer: prometheus.NewRegistry(),
		OnStored: p.rt.OnStored, Concurrency: 1, Linger: -1,
		ConsumeOptions: []eventstore.ConsumeOption{eventstore.WithAckWait(time.Second), eventstore.WithBackoff(50 * time.Millisecond)}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	for _, run := range []func(context.Context) error{p.rt.Run, c.Run} {
		p.wg.Go(func() {
			if err := run(ctx); err != nil {
				t.Errorf("task: %v", err)
			}
		})
	}
	t.Cleanup(p.kill)
	return p
}

// kill stops the process without publishing what it was publishing, nor acknowledging its batch.
func (p *monitorProcess) kill() {
	p.cancel()
	p.wg.Wait()
}

// TestAlertOfABatchStoredBeforeACrashIsRaisedAfterRestart: an attack batch is stored, the monitor
// is killed before its alert is published (the batch unacknowledged), the restarted monitor
// recomputes its baselines from the store (which holds the attack rows) and judges the redelivered
// batch: the alert is raised, because the recomputation left out the unacknowledged rows.
func TestAlertOfABatchStoredBeforeACrashIsRaisedAfterRestart(t *testing.T) {
	es := startStore(t)
	st, err := duckdb.Open(t.Context(), "")
	if err != nil {
		t.Fatalf("duckdb.Open: %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })
	const agent = "tenants/acme/agents/etl"
	now := time.Now().UTC()
	// 14 days of history, three accesses an hour of about 100 rows each, acknowledged long ago.
	var history []store.Event
	for h := 14 * 24; h > 1; h-- {
		for i := range 3 {
			history = append(history, store.Event{EventID: uuid.NewString(), Tenant: "acme", Agent: agent, AgentKnown: true,
				Time: now.Add(-time.Duration(h)*time.Hour + time.Duration(i)*time.Minute), Kind: store.KindAccess,
				Outcome: "allowed", Resource: "/orders", Rows: int64(95 + (h+i)%10), Bytes: 20_000})
		}
	}
	if err := st.Insert(t.Context(), history); err != nil {
		t.Fatal(err)
	}
	lag, err := ingest.NewLagWatcher(ingest.LagConfig{JetStream: es.JetStream(), Logger: quiet, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}

	// The attack: one request returning a million rows.
	attackID := uuid.NewString()
	req := &monitorv1.RecordAccessRequest{Parent: "tenants/acme", BatchId: uuid.NewString(), Events: []*monitorv1.AccessEvent{{
		EventId: attackID, Time: timestamppb.New(now.Add(-time.Minute)), Tenant: "acme", Agent: agent, ClientId: "etl-client",
		Resource: "/orders", Action: "GET", Outcome: monitorv1.AccessOutcome_ACCESS_OUTCOME_ALLOWED, Rows: 1_000_000, ResponseBytes: 20_000,
	}}}
	batch, err := es.Publish(t.Context(), "telemetry.acme.access.recorded", ingest.TypeAccessRecorded, "tenants/acme/clients/orders-api", req,
		eventstore.Metadata{Tenant: "acme", Actor: eventstore.Actor{ID: "orders-api", Kind: eventstore.ActorService}})
	if err != nil {
		t.Fatal(err)
	}

	// First run: the batch is stored and its alert raised, but ALERTS cannot be written; killed.
	stuck := &down{}
	first := startMonitor(t, es, st, stuck, lag)
	testkit.Eventually(t, 0, "the attack stored and its alert being published", func() (bool, error) {
		rows, _, err := st.List(t.Context(), store.Query{Tenant: "acme", Kind: store.KindAccess, Start: now.Add(-2 * time.Minute)})
		return len(rows) == 1 && rows[0].Rows == 1_000_000 && stuck.calls.Load() > 0, err
	})
	first.kill()
	if floor, err := lag.AckFloor(t.Context()); err != nil || floor >= batch.Sequence {
		t.Fatalf("ack floor %d (%v) after the kill, want below the batch's sequence %d", floor, err, batch.Sequence)
	}

	// Second run: recomputes from the store holding the attack, then judges the redelivered batch.
	second := startMonitor(t, es, st, es, lag)
	testkit.Eventually(t, 0, "the bulk_export alert on ALERTS", func() (bool, error) {
		return streamMsgs(t, es) == 1, nil
	})
	s, err := es.JetStream().Stream(t.Context(), eventstore.StreamAlerts)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := s.GetLastMsgForSubject(t.Context(), alerts.Subject("acme", detect.BulkExport))
	if err != nil {
		t.Fatalf("no bulk_export alert: %v", err)
	}
	ev, err := eventstore.EventFromRaw(eventstore.StreamAlerts, raw.Sequence, raw.Subject, raw.Header, raw.Data)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := eventstore.DecodeAs[*monitorv1.AlertRaised](ev)
	if err != nil {
		t.Fatal(err)
	}
	if got := msg.GetAlert(); got.GetAgent() != agent || got.GetEventIds()[0] != ingest.AccessRowID(batch.ID, attackID) {
		t.Fatalf("alert = %v, want the bulk export of %s", got, agent)
	}
	second.kill()

	// The control: a baseline that learned the unacknowledged attack would not have flagged it.
	learned := baseline.NewManager(baseline.Config{})
	if err := learned.Recompute(t.Context(), st, "acme", time.Now()); err != nil {
		t.Fatal(err)
	}
	rows, _, _ := st.List(t.Context(), store.Query{Tenant: "acme", Kind: store.KindAccess, Start: now.Add(-2 * time.Minute)})
	got := detect.NewEngine(detect.Config{}, learned).Process(rows, func(tenant, id string, _ time.Time) (detect.AgentInfo, bool) {
		return detect.AgentInfo{Tenant: tenant, Name: id, State: "ACTIVE", Known: true}, true
	})
	for _, a := range got {
		if a.GetDetector() == detect.BulkExport {
			t.Fatalf("control: a baseline learned with the attack still flags it (%v); the test shows nothing", a)
		}
	}
}
