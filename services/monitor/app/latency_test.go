package app_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/testkit"
	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
	"github.com/agentid/agentid/services/monitor/app"
)

// BenchmarkDetectionLatency measures the time from publishing a telemetry event on TELEMETRY (an
// access by an agent the registry does not know: a ghost, one alert each; each in a tenant of its own,
// since the monitor raises at most one unknown-agent alert per tenant and hour) to its alert arriving on ALERTS,
// through the whole monitor (ingest, store insert, detection, publication), one event at a time
// with the default group-commit linger. It reports p50 and p99 in milliseconds; run with
//
//	go test -run '^$' -bench DetectionLatency -benchtime 200x ./services/monitor/app/
func BenchmarkDetectionLatency(b *testing.B) {
	n := testkit.StartNATS(b)
	es := eventstore.New(n.JetStream(b), eventstore.WithSource("agentid/monitor"), eventstore.WithLogger(quiet), eventstore.WithRegisterer(nil))
	if err := es.EnsureStreams(b.Context()); err != nil {
		b.Fatal(err)
	}
	a, err := app.New(app.Config{}, app.Deps{Store: es, Logger: quiet, Registerer: prometheus.NewRegistry()})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tasks := a.Tasks()
	done := make(chan error, len(tasks))
	for _, task := range tasks {
		go func() { done <- task(ctx) }()
	}
	defer func() {
		cancel()
		for range tasks {
			<-done
		}
		_ = a.Close()
	}()
	cons, err := es.JetStream().OrderedConsumer(b.Context(), eventstore.StreamAlerts, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverNewPolicy})
	if err != nil {
		b.Fatal(err)
	}
	msgs, err := cons.Messages()
	if err != nil {
		b.Fatal(err)
	}
	defer msgs.Stop()
	wait := func(client string) {
		for {
			m, err := msgs.Next(jetstream.NextMaxWait(time.Minute))
			if err != nil {
				b.Fatalf("no alert for %s within a minute: %v", client, err)
			}
			var ar monitorv1.AlertRaised
			if err := proto.Unmarshal(m.Data(), &ar); err != nil {
				b.Fatal(err)
			}
			if ar.GetAlert().GetAgent() == client {
				return
			}
		}
	}
	var lat []time.Duration
	b.ResetTimer()
	for i := range b.N {
		tenant := fmt.Sprintf("acme%d", i)
		client := fmt.Sprintf("tenants/%s/agents/ghost", tenant)
		id := uuid.NewString()
		start := time.Now()
		if _, err := es.PublishWithID(b.Context(), id, "telemetry."+tenant+".access.recorded", "access.recorded", "tenants/"+tenant,
			&monitorv1.RecordAccessRequest{Parent: "tenants/" + tenant, BatchId: id, Events: []*monitorv1.AccessEvent{{
				EventId: uuid.NewString(), Time: timestamppb.Now(), Tenant: tenant, Agent: client, ClientId: "c" + id[:8], Resource: "/reports/finance",
				Action: "GET", Outcome: monitorv1.AccessOutcome_ACCESS_OUTCOME_ALLOWED, SourceAddress: "198.51.100.7",
			}}},
			eventstore.Metadata{Tenant: tenant, Actor: eventstore.Actor{ID: "reports-api", Kind: eventstore.ActorService}}); err != nil {
			b.Fatal(err)
		}
		wait(client)
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	q := func(p float64) float64 {
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds()) / 1000
	}
	b.ReportMetric(q(0.50), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
}
