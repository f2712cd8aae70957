package ingest_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/eventstore"
	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
	"github.com/agentid/agentid/services/monitor/internal/ingest"
	"github.com/agentid/agentid/services/monitor/internal/store"
)

// accessBatch is a batch of n allowed requests in tenant acme.
func accessBatch(n int, dropped int64) *monitorv1.RecordAccessRequest {
	req := &monitorv1.RecordAccessRequest{Parent: "tenants/acme", BatchId: uuid.NewString(), Dropped: dropped}
	for i := range n {
		req.Events = append(req.Events, &monitorv1.AccessEvent{
			EventId: uuid.NewString(), Time: timestamppb.Now(), Tenant: "acme", ClientId: "faq",
			Resource: fmt.Sprintf("/orders/%d", i), Action: "GET", Outcome: monitorv1.AccessOutcome_ACCESS_OUTCOME_ALLOWED, Status: 200,
		})
	}
	return req
}

func (h *harness) publishBatch(t *testing.T, req *monitorv1.RecordAccessRequest) eventstore.Event {
	t.Helper()
	ev, err := h.es.PublishWithID(t.Context(), uuid.NewString(), "telemetry.acme.access.recorded", ingest.TypeAccessRecorded,
		"tenants/acme/clients/orders-api", req, eventstore.Metadata{Tenant: "acme", Actor: eventstore.Actor{ID: "orders-api", Kind: eventstore.ActorService}})
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// runWith starts a consumer with cfg (Source, Logger filled in) and stops it when the test ends.
func (h *harness) runWith(t *testing.T, cfg ingest.Config) (stop func()) {
	t.Helper()
	cfg.Source, cfg.Logger = h.es, quiet
	c, err := ingest.NewConsumer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("consumer: %v", err)
		}
	}
	t.Cleanup(stop)
	return stop
}

func TestIngestAccessBatchesOnce(t *testing.T) {
	h := newHarness(t)
	reg := prometheus.NewRegistry()
	counter := &countingInserter{Inserter: h.store}
	// Batches larger than an insert: each is inserted whole, alone or with others.
	stop := h.runWith(t, ingest.Config{Store: counter, MaxBatch: 10, Registerer: reg})

	first := h.publishBatch(t, accessBatch(25, 0))
	second := h.publishBatch(t, accessBatch(3, 4)) // the reporter dropped 4 events
	h.waitAcked(t, second.Sequence)
	rows := h.rows(t, "acme", 25+3+1)
	kinds := map[string]int{}
	for _, r := range rows {
		kinds[r.Kind]++
		if r.Kind == ingest.KindAccessDropped && (r.EventID != second.ID || r.Actor != "orders-api") {
			t.Errorf("access.dropped row = %+v", r)
		}
	}
	if kinds[ingest.KindAccess] != 28 || kinds[ingest.KindAccessDropped] != 1 {
		t.Errorf("rows by kind = %v, want 28 access and 1 access.dropped", kinds)
	}
	if got := lost(t, reg, "dropped"); got != 4 {
		t.Errorf("monitor_access_events_lost_total{cause=dropped} = %v, want 4", got)
	}

	// The same batch event stored again on the stream (a publish retried after the duplicate
	// window) and the whole stream delivered again (a lost consumer) add no row.
	telemetry, err := h.js.Stream(t.Context(), eventstore.StreamTelemetry)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := telemetry.GetMsg(t.Context(), first.Sequence)
	if err != nil {
		t.Fatal(err)
	}
	again := &nats.Msg{Subject: raw.Subject, Header: raw.Header, Data: raw.Data}
	again.Header.Set(jetstream.MsgIDHeader, "another-publish")
	ack, err := h.js.PublishMsg(t.Context(), again)
	if err != nil {
		t.Fatal(err)
	}
	h.waitAcked(t, ack.Sequence)
	h.rows(t, "acme", 29)
	stop()
	if err := h.js.DeleteConsumer(t.Context(), eventstore.StreamTelemetry, ingest.ConsumerName); err != nil {
		t.Fatal(err)
	}
	h.runWith(t, ingest.Config{Store: h.store, Registerer: prometheus.NewRegistry()})
	h.waitAcked(t, ack.Sequence)
	h.rows(t, "acme", 29)
	if c := counter.calls.Load(); c < 2 {
		t.Errorf("%d inserts for batches of 25 and 3 rows with MaxBatch 10", c)
	}
}

func TestIngestSkipsAccessEventsOfAnotherTenant(t *testing.T) {
	h := newHarness(t)
	reg := prometheus.NewRegistry()
	h.runWith(t, ingest.Config{Store: h.store, Registerer: reg})
	req := accessBatch(2, 0)
	req.Events[1].Tenant = "globex" // never accepted by RecordAccess; a forged or foreign message
	ev := h.publishBatch(t, req)
	h.waitAcked(t, ev.Sequence)
	rows := h.rows(t, "acme", 2)
	for _, r := range rows {
		if r.Kind == ingest.KindAccess && r.EventID != ingest.AccessRowID(ev.ID, req.Events[0].GetEventId()) {
			t.Errorf("stored %+v, want only the acme event", r)
		}
	}
	if got, _, err := h.store.List(t.Context(), store.Query{Tenant: "globex"}); err != nil || len(got) != 0 {
		t.Errorf("globex rows = %v (err %v)", got, err)
	}
	if got := lost(t, reg, "skipped"); got != 1 {
		t.Errorf("monitor_access_events_lost_total{cause=skipped} = %v, want 1", got)
	}
}

// lost returns the value of monitor_access_events_lost_total{cause} in reg (0 when absent).
func lost(t *testing.T, reg *prometheus.Registry, cause string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "monitor_access_events_lost_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "cause" && l.GetValue() == cause {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
