package ingest_test

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/testkit"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
	"github.com/agentid/agentid/services/monitor/internal/ingest"
)

// Token requests of a registered agent publish one agent.active event per agent and hour (a second
// request in the hour publishes none; the event's id is derived from tenant, agent and hour); a
// ghost's publish none; the consumer stores no row of the activity events.
func TestIngestPublishesAgentActivityOncePerHour(t *testing.T) {
	h := newHarness(t)
	var seen stored
	runConsumer(t, ingest.Config{Source: h.es, Store: h.store, Logger: quiet, Directory: directory(t), OnStored: seen.add, Activity: h.es})
	md := eventstore.Metadata{Tenant: "acme", Actor: eventstore.Actor{ID: "issuer", Kind: eventstore.ActorService}}
	for _, client := range []string{"etl-client", "etl-client", "nobody"} {
		h.publish(t, "telemetry.acme.token.requested", ingest.TypeTokenRequested, "tenants/acme/clients/"+client, &issuerv1.TokenRequested{
			Tenant: "acme", ClientId: client, Outcome: issuerv1.TokenOutcome_TOKEN_OUTCOME_ISSUED, Scopes: []string{"warehouse.read"}}, md)
	}
	rows := h.rows(t, "acme", 3) // the token rows, none of the activity event

	var events []jetstream.RawStreamMsg
	testkit.Eventually(t, 0, "one agent.active event", func() (bool, error) {
		events = events[:0]
		st, err := h.js.Stream(t.Context(), eventstore.StreamTelemetry)
		if err != nil {
			return false, err
		}
		for seq := uint64(1); seq <= st.CachedInfo().State.LastSeq; seq++ {
			m, err := st.GetMsg(t.Context(), seq)
			if err != nil {
				return false, err
			}
			if m.Subject == ingest.ActivitySubject("acme") {
				events = append(events, *m)
			}
		}
		return len(events) == 1, nil
	})
	m := events[0]
	var hour monitorv1.HourlyActivity
	if err := proto.Unmarshal(m.Data, &hour); err != nil {
		t.Fatal(err)
	}
	want := rows[0].Time.UTC().Truncate(time.Hour)
	if !hour.GetHour().AsTime().Equal(want) {
		t.Fatalf("activity hour %v, want %v", hour.GetHour().AsTime(), want)
	}
	if got := m.Header.Get(eventstore.HeaderSubject); got != "tenants/acme/agents/etl" {
		t.Fatalf("activity event about %q, want the agent's name", got)
	}
	if got, wantID := m.Header.Get(eventstore.HeaderID), ingest.ActivityID("acme", "tenants/acme/agents/etl", want); got != wantID {
		t.Fatalf("activity event id %s, want %s (derived)", got, wantID)
	}
	if got := m.Header.Get(eventstore.HeaderType); got != ingest.TypeAgentActive {
		t.Fatalf("activity event type %q", got)
	}
	// The consumer saw the activity event and stored nothing of it.
	h.publish(t, "telemetry.acme.token.requested", ingest.TypeTokenRequested, "tenants/acme/clients/nobody", &issuerv1.TokenRequested{
		Tenant: "acme", ClientId: "nobody", Outcome: issuerv1.TokenOutcome_TOKEN_OUTCOME_ISSUED}, md)
	h.rows(t, "acme", 4)
}
