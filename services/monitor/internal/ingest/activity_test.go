package ingest_test

import (
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/testkit"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
	policyv1 "github.com/agentid/agentid/proto/gen/go/agentid/policy/v1"
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

// activityEvents returns the agent.active events of tenant acme on the TELEMETRY stream.
func activityEvents(t *testing.T, h *harness) []jetstream.RawStreamMsg {
	t.Helper()
	st, err := h.js.Stream(t.Context(), eventstore.StreamTelemetry)
	if err != nil {
		t.Fatal(err)
	}
	var out []jetstream.RawStreamMsg
	for seq := uint64(1); seq <= st.CachedInfo().State.LastSeq; seq++ {
		m, err := st.GetMsg(t.Context(), seq)
		if err != nil {
			t.Fatal(err)
		}
		if m.Subject == ingest.ActivitySubject("acme") {
			out = append(out, *m)
		}
	}
	return out
}

// Rows that name a registered agent without its credential acting publish no agent.active event:
// policy decisions (a dry run and a real one), a refused token request, and accesses a resource
// server reports naming the agent (with a token id it claims to have verified). A token issued to
// the agent then does.
func TestIngestActivityIgnoresDecisionsRefusalsAndReportedAccess(t *testing.T) {
	h := newHarness(t)
	runConsumer(t, ingest.Config{Source: h.es, Store: h.store, Logger: quiet, Directory: directory(t), Activity: h.es})
	const agent = "tenants/acme/agents/etl"
	policyMD := eventstore.Metadata{Tenant: "acme", Actor: eventstore.Actor{ID: "policy", Kind: eventstore.ActorService}}
	issuerMD := eventstore.Metadata{Tenant: "acme", Actor: eventstore.Actor{ID: "issuer", Kind: eventstore.ActorService}}
	for _, dry := range []bool{true, false} {
		h.publish(t, "telemetry.acme.policy.decided", ingest.TypePolicyDecided, agent, &policyv1.DecisionRecorded{
			Tenant: "acme", DecisionPoint: "admission", Subject: agent, DryRun: dry,
			Decision: &policyv1.Decision{DecisionId: uuid.NewString(), Outcome: policyv1.Outcome_OUTCOME_ALLOW},
		}, policyMD)
	}
	h.publish(t, "telemetry.acme.token.requested", ingest.TypeTokenRequested, "tenants/acme/clients/etl-client", &issuerv1.TokenRequested{
		Tenant: "acme", ClientId: "etl-client", Outcome: issuerv1.TokenOutcome_TOKEN_OUTCOME_DENIED, Error: "invalid_client"}, issuerMD)
	last := h.publishBatch(t, &monitorv1.RecordAccessRequest{Parent: "tenants/acme", BatchId: uuid.NewString(), Events: []*monitorv1.AccessEvent{{
		EventId: uuid.NewString(), Time: timestamppb.Now(), Tenant: "acme", Agent: agent, ClientId: "etl-client", TokenId: "forged",
		Resource: "/orders", Action: "GET", Outcome: monitorv1.AccessOutcome_ACCESS_OUTCOME_ALLOWED, Status: 200,
	}}})
	h.waitAcked(t, last.Sequence) // every row above is stored and its activity (none) reported
	h.rows(t, "acme", 4)
	if got := activityEvents(t, h); len(got) != 0 {
		t.Fatalf("%d agent.active events for decisions, a refusal and a reported access; want none", len(got))
	}

	h.publish(t, "telemetry.acme.token.requested", ingest.TypeTokenRequested, "tenants/acme/clients/etl-client", &issuerv1.TokenRequested{
		Tenant: "acme", ClientId: "etl-client", Outcome: issuerv1.TokenOutcome_TOKEN_OUTCOME_ISSUED}, issuerMD)
	testkit.Eventually(t, 0, "an agent.active event for the token issued", func() (bool, error) {
		return len(activityEvents(t, h)) == 1, nil
	})
}
