package ingest_test

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/failpoint"
	"github.com/agentid/agentid/pkg/testkit"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	policyv1 "github.com/agentid/agentid/proto/gen/go/agentid/policy/v1"
	"github.com/agentid/agentid/services/monitor/internal/ingest"
	"github.com/agentid/agentid/services/monitor/internal/store"
	"github.com/agentid/agentid/services/monitor/internal/store/duckdb"
)

var quiet = slog.New(slog.DiscardHandler)

type harness struct {
	js    jetstream.JetStream
	es    *eventstore.Store
	store *duckdb.Store
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	js := testkit.StartNATS(t).JetStream(t)
	es := eventstore.New(js, eventstore.WithSource("agentid/issuer"), eventstore.WithLogger(quiet))
	if err := es.EnsureStreams(t.Context()); err != nil {
		t.Fatal(err)
	}
	s, err := duckdb.Open(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return &harness{js: js, es: es, store: s}
}

// run starts a consumer over ins and returns a function that stops it and waits.
func (h *harness) run(t *testing.T, ins ingest.Inserter, opts ...eventstore.ConsumeOption) (stop func()) {
	t.Helper()
	c, err := ingest.NewConsumer(ingest.Config{Source: h.es, Store: ins, Logger: quiet, ConsumeOptions: opts})
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
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("consumer: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("consumer did not stop")
		}
	}
	t.Cleanup(stop)
	return stop
}

func (h *harness) publish(t *testing.T, subject, typ, ceSubject string, m proto.Message, md eventstore.Metadata) eventstore.Event {
	t.Helper()
	ev, err := h.es.Publish(t.Context(), subject, typ, ceSubject, m, md)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// rows polls until the tenant has want rows (or the deadline passes) and returns them.
func (h *harness) rows(t *testing.T, tenant string, want int) []store.Event {
	t.Helper()
	deadline := time.Now().Add(testkit.DefaultWait)
	for {
		got, _, err := h.store.List(t.Context(), store.Query{Tenant: tenant, PageSize: store.MaxPageSize})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) >= want || time.Now().After(deadline) {
			if len(got) != want {
				t.Fatalf("%d rows for %s, want %d", len(got), tenant, want)
			}
			return got
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitAcked waits until the durable consumer has acknowledged every message up to seq.
func (h *harness) waitAcked(t *testing.T, seq uint64) {
	t.Helper()
	deadline := time.Now().Add(testkit.DefaultWait)
	for time.Now().Before(deadline) {
		c, err := h.js.Consumer(t.Context(), eventstore.StreamTelemetry, ingest.ConsumerName)
		if err == nil {
			info, err := c.Info(t.Context())
			if err == nil && info.AckFloor.Stream >= seq {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("consumer did not acknowledge up to %d", seq)
}

func TestIngestTokenAndPolicyEvents(t *testing.T) {
	h := newHarness(t)
	stop := h.run(t, h.store)

	token := h.publish(t, "telemetry.acme.token.requested", "token.requested", "tenants/acme/clients/faq", &issuerv1.TokenRequested{
		Tenant: "acme", ClientId: "faq", Agent: "tenants/acme/agents/faq", GrantType: "client_credentials",
		Outcome: issuerv1.TokenOutcome_TOKEN_OUTCOME_ISSUED, Scopes: []string{"kb.read"}, TokenId: "tok-1", Environment: "dev", RequestId: "req-1",
	}, eventstore.Metadata{Tenant: "acme", Actor: eventstore.Actor{ID: "faq", Kind: eventstore.ActorAgent}, CorrelationID: "req-1"})
	decision := h.publish(t, "telemetry.acme.policy.decided", "policy.decided", "tenants/acme/agents/faq", &policyv1.DecisionRecorded{
		Tenant: "acme", DecisionPoint: "admission", Subject: "tenants/acme/agents/faq", RequestId: "provision/acme/faq",
		Decision: &policyv1.Decision{DecisionId: "d-1", Outcome: policyv1.Outcome_OUTCOME_ALLOW, Reasons: []string{"pre-approved"}, BundleVersion: "sha256:ab"},
	}, eventstore.Metadata{Tenant: "acme", Actor: eventstore.Actor{ID: "lifecycle-worker", Kind: eventstore.ActorService}})
	other := h.publish(t, "telemetry.globex.token.requested", "token.requested", "tenants/globex", &issuerv1.TokenRequested{
		Tenant: "globex", ClientId: "ghost", Outcome: issuerv1.TokenOutcome_TOKEN_OUTCOME_DENIED, Error: "invalid_client",
	}, eventstore.Metadata{Tenant: "globex"})

	got := h.rows(t, "acme", 2)
	byID := map[string]store.Event{got[0].EventID: got[0], got[1].EventID: got[1]}
	tr, ok := byID[token.ID]
	if !ok || tr.Kind != "token.requested" || tr.Outcome != "issued" || tr.Actor != "faq" || tr.Agent != "tenants/acme/agents/faq" ||
		tr.Environment != "dev" || tr.RequestID != "req-1" || !tr.Time.Equal(token.Time.Truncate(time.Millisecond)) || tr.StreamSeq != token.Sequence {
		t.Errorf("token row = %+v (event %s at %v seq %d)", tr, token.ID, token.Time, token.Sequence)
	}
	dr, ok := byID[decision.ID]
	if !ok || dr.Kind != "policy.decided" || dr.Outcome != "allow" || dr.Agent != "tenants/acme/agents/faq" || dr.Actor != "lifecycle-worker" ||
		dr.RequestID != "provision/acme/faq" {
		t.Errorf("decision row = %+v", dr)
	}
	if g := h.rows(t, "globex", 1); g[0].EventID != other.ID || g[0].Outcome != "invalid_client" || !g[0].AgentKnown {
		t.Errorf("globex row = %+v", g[0])
	}

	// Redelivery is a no-op: the same CloudEvent stored twice on the stream (a producer retry outside
	// the duplicate window) ...
	telemetry, err := h.js.Stream(t.Context(), eventstore.StreamTelemetry)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := telemetry.GetMsg(t.Context(), token.Sequence)
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
	h.rows(t, "acme", 2)

	// ... and the whole stream delivered again from the start, as after a lost consumer.
	stop()
	if err := h.js.DeleteConsumer(t.Context(), eventstore.StreamTelemetry, ingest.ConsumerName); err != nil {
		t.Fatal(err)
	}
	h.run(t, h.store)
	h.waitAcked(t, ack.Sequence)
	h.rows(t, "acme", 2)
	h.rows(t, "globex", 1)
}

// flaky fails the first failures inserts.
type flaky struct {
	ingest.Inserter
	failures atomic.Int32
	calls    atomic.Int32
}

func (f *flaky) Insert(ctx context.Context, events []store.Event) error {
	f.calls.Add(1)
	if f.failures.Add(-1) >= 0 {
		return errors.New("disk on fire")
	}
	return f.Inserter.Insert(ctx, events)
}

func TestIngestRetriesAFailedInsert(t *testing.T) {
	h := newHarness(t)
	f := &flaky{Inserter: h.store}
	f.failures.Store(2)
	h.run(t, f, eventstore.WithBackoff(10*time.Millisecond))
	ev := h.publish(t, "telemetry.acme.token.requested", "token.requested", "", &issuerv1.TokenRequested{Tenant: "acme", ClientId: "c"},
		eventstore.Metadata{Tenant: "acme"})
	if got := h.rows(t, "acme", 1); got[0].EventID != ev.ID {
		t.Errorf("row %s, want %s", got[0].EventID, ev.ID)
	}
	if c := f.calls.Load(); c < 3 {
		t.Errorf("%d insert calls, want at least 3 (two failures, then success)", c)
	}
}

func TestIngestGroupCommitsABurst(t *testing.T) {
	h := newHarness(t)
	counter := &countingInserter{Inserter: h.store}
	const n = 300
	var last eventstore.Event
	for i := range n {
		last = h.publish(t, "telemetry.acme.token.requested", "token.requested", "", &issuerv1.TokenRequested{Tenant: "acme", ClientId: "c", RequestId: string(rune('a' + i%26))},
			eventstore.Metadata{Tenant: "acme"})
	}
	h.run(t, counter)
	h.waitAcked(t, last.Sequence)
	h.rows(t, "acme", n)
	if c := counter.calls.Load(); c >= n {
		t.Errorf("%d inserts for %d events: no group commit", c, n)
	}
	t.Logf("%d events in %d inserts", n, counter.calls.Load())
}

type countingInserter struct {
	ingest.Inserter
	calls atomic.Int32
}

func (c *countingInserter) Insert(ctx context.Context, events []store.Event) error {
	c.calls.Add(1)
	return c.Inserter.Insert(ctx, events)
}

func TestNewConsumerNeedsItsDependencies(t *testing.T) {
	if _, err := ingest.NewConsumer(ingest.Config{}); err == nil {
		t.Error("NewConsumer accepted an empty config")
	}
}

// TestCommitFaultsLoseAndDuplicateNothing fails the telemetry commit before the insert and after it
// (rows stored, events not acknowledged): the redelivered events are stored exactly once.
func TestCommitFaultsLoseAndDuplicateNothing(t *testing.T) {
	for _, seam := range []string{failpoint.TelemetryBeforeCommit, failpoint.TelemetryAfterCommit} {
		t.Run(seam, func(t *testing.T) {
			h := newHarness(t)
			disable, err := failpoint.Enable(seam, "2*error")
			if err != nil {
				t.Fatal(err)
			}
			defer disable()
			h.run(t, h.store, eventstore.WithBackoff(10*time.Millisecond))
			var last eventstore.Event
			for i := range 5 {
				last = h.publish(t, "telemetry.acme.token.requested", "token.requested", "tenants/acme/clients/faq", &issuerv1.TokenRequested{
					Tenant: "acme", ClientId: "faq", Agent: "tenants/acme/agents/faq", GrantType: "client_credentials",
					Outcome: issuerv1.TokenOutcome_TOKEN_OUTCOME_ISSUED, TokenId: "tok-" + string(rune('a'+i)), Environment: "dev",
				}, eventstore.Metadata{Tenant: "acme", Actor: eventstore.Actor{ID: "faq", Kind: eventstore.ActorAgent}})
			}
			h.waitAcked(t, last.Sequence)
			got := h.rows(t, "acme", 5)
			seen := map[string]bool{}
			for _, r := range got {
				if seen[r.EventID] {
					t.Fatalf("event %s stored twice", r.EventID)
				}
				seen[r.EventID] = true
			}
		})
	}
}
