package revocation_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/testkit"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"

	"github.com/agentid/agentid/services/issuer/internal/revocation"
)

// revokeCall is one call of fakeRevoker.
type revokeCall struct {
	md        eventstore.Metadata
	ev        *issuerv1.TokensRevoked
	requestID string
}

// fakeRevoker records revocations and answers err.
type fakeRevoker struct {
	mu    sync.Mutex
	calls []revokeCall
	err   error
}

func (f *fakeRevoker) Revoke(_ context.Context, md eventstore.Metadata, ev *issuerv1.TokensRevoked, requestID string) (*issuerv1.Revocation, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, revokeCall{md: md, ev: proto.CloneOf(ev), requestID: requestID})
	if f.err != nil {
		return nil, f.err
	}
	return &issuerv1.Revocation{Name: "tenants/" + ev.GetTenant() + "/revocations/r", Event: ev, Sequence: 1}, nil
}

// noConsumer is a Consumer for reactors whose handlers the tests call directly.
type noConsumer struct{}

func (noConsumer) Consume(context.Context, string, string, []string, eventstore.Handler, ...eventstore.ConsumeOption) error {
	return nil
}

var eventTime = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

const testAllowance = 3 * time.Second

func newReactor(t *testing.T, rev revocation.Revoker, now time.Time) *revocation.Reactor {
	t.Helper()
	r, err := revocation.NewReactor(revocation.ReactorConfig{Consumer: noConsumer{}, Revoker: rev, ProjectionLagAllowance: testAllowance,
		Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// sourceEvent is a stored event of an aggregate of tenant acme.
func sourceEvent(t *testing.T, id, typ, aggType, aggID string, msg proto.Message) eventstore.Event {
	t.Helper()
	data, err := proto.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	return eventstore.Event{
		ID: id, Type: typ, Time: eventTime,
		Metadata:      eventstore.Metadata{Tenant: "acme", CorrelationID: "req-7"},
		AggregateType: aggType, AggregateID: aggID, Sequence: 9,
		DataSchema: string(msg.ProtoReflect().Descriptor().FullName()), Data: data,
	}
}

func disabledEvent(t *testing.T, revokeTime time.Time) eventstore.Event {
	t.Helper()
	return sourceEvent(t, "ev-disabled", "client.disabled", eventstore.AggregateClient, "agt_1",
		&issuerv1.ClientDisabled{Name: "tenants/acme/clients/agt_1", Reason: "compromised", RevokeTime: timestamppb.New(revokeTime)})
}

func TestReactorRevokesADisabledClient(t *testing.T) {
	rev := &fakeRevoker{}
	revokeTime := eventTime.Add(-time.Second)
	if err := newReactor(t, rev, eventTime).HandleCredentialsEvent(context.Background(), disabledEvent(t, revokeTime)); err != nil {
		t.Fatal(err)
	}
	if len(rev.calls) != 1 {
		t.Fatalf("%d revocations, want 1", len(rev.calls))
	}
	c := rev.calls[0]
	want := &issuerv1.TokensRevoked{
		Target: issuerv1.RevocationTarget_REVOCATION_TARGET_CLIENT, Tenant: "acme", ClientId: "agt_1",
		NotBefore: timestamppb.New(revokeTime.Add(testAllowance)), Cause: issuerv1.RevocationCause_REVOCATION_CAUSE_CLIENT_DISABLED,
		Reason: "client disabled: compromised", SourceEventId: "ev-disabled",
	}
	if !proto.Equal(c.ev, want) {
		t.Fatalf("revocation = %v, want %v", c.ev, want)
	}
	if c.requestID != revocation.RequestIDPrefix+"ev-disabled" || c.md.CausationID != "ev-disabled" || c.md.CorrelationID != "req-7" ||
		c.md.Actor != revocation.ServiceActor {
		t.Fatalf("request id %q, metadata %+v", c.requestID, c.md)
	}
}

func TestReactorRevokesAnAgentLeavingActive(t *testing.T) {
	const name = "tenants/acme/agents/agt_1"
	tests := []struct {
		typ        string
		msg        proto.Message
		wantRevoke bool
	}{
		{"agent.registered", &registryv1.AgentRegistered{Agent: &registryv1.Agent{Name: name}}, false},
		{"agent.activated", &registryv1.AgentActivated{Name: name}, false},
		{"agent.rejected", &registryv1.AgentRejected{Name: name}, true},
		{"agent.retirement_requested", &registryv1.AgentRetirementRequested{Name: name}, true},
		{"agent.retired", &registryv1.AgentRetired{Name: name}, true},
		{"agent.suspended", &registryv1.AgentSuspended{Name: name, Reason: "bulk export", Cause: "alert:a1"}, true},
		{"agent.resumed", &registryv1.AgentResumed{Name: name, Reason: "false positive"}, false},
		{"agent.reviewed", &registryv1.AgentRetired{Name: name}, false},
	}
	for _, tt := range tests {
		t.Run(tt.typ, func(t *testing.T) {
			rev := &fakeRevoker{}
			e := sourceEvent(t, "ev-"+tt.typ, tt.typ, eventstore.AggregateAgent, "agt_1", tt.msg)
			if err := newReactor(t, rev, eventTime).HandleAgentEvent(context.Background(), e); err != nil {
				t.Fatal(err)
			}
			if !tt.wantRevoke {
				if len(rev.calls) != 0 {
					t.Fatalf("revoked %v", rev.calls[0].ev)
				}
				return
			}
			if len(rev.calls) != 1 {
				t.Fatalf("%d revocations, want 1", len(rev.calls))
			}
			got := rev.calls[0]
			if got.ev.GetTarget() != issuerv1.RevocationTarget_REVOCATION_TARGET_AGENT || got.ev.GetAgent() != name || got.ev.GetTenant() != "acme" ||
				got.ev.GetCause() != issuerv1.RevocationCause_REVOCATION_CAUSE_AGENT_STATE || got.ev.GetSourceEventId() != e.ID ||
				!got.ev.GetNotBefore().AsTime().Equal(eventTime.Add(testAllowance)) || got.requestID != revocation.RequestIDPrefix+e.ID ||
				!strings.Contains(got.ev.GetReason(), tt.typ) {
				t.Fatalf("revocation %v (request %q)", got.ev, got.requestID)
			}
			if err := revocation.Check(got.ev); err != nil {
				t.Fatalf("the reactor's revocation does not pass the writer's check: %v", err)
			}
		})
	}
}

func TestReactorErrors(t *testing.T) {
	tests := []struct {
		name          string
		err           error
		wantErr       bool
		wantPermanent bool
	}{
		{name: "stored by an earlier delivery", err: errs.Conflict("REVOCATION_CONFLICT", "exists")},
		{name: "store unavailable", err: errs.Unavailable("EVENT_STORE_UNAVAILABLE", "down", errors.New("no responders")), wantErr: true},
		{name: "refused by the writer", err: errs.InvalidArgument("agent", "bad"), wantErr: true, wantPermanent: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := newReactor(t, &fakeRevoker{err: tt.err}, eventTime).HandleCredentialsEvent(context.Background(), disabledEvent(t, eventTime))
			if (err != nil) != tt.wantErr || eventstore.IsPermanent(err) != tt.wantPermanent {
				t.Fatalf("err = %v (permanent %v), want error %v, permanent %v", err, eventstore.IsPermanent(err), tt.wantErr, tt.wantPermanent)
			}
		})
	}
}

func TestReactorRefusesInconsistentEvents(t *testing.T) {
	tests := []struct {
		name string
		e    func(t *testing.T) eventstore.Event
		h    func(r *revocation.Reactor) eventstore.Handler
	}{
		{"client name of another client", func(t *testing.T) eventstore.Event {
			return sourceEvent(t, "e1", "client.disabled", eventstore.AggregateClient, "agt_1", &issuerv1.ClientDisabled{Name: "tenants/acme/clients/agt_2"})
		}, func(r *revocation.Reactor) eventstore.Handler { return r.HandleCredentialsEvent }},
		{"client payload of another type", func(t *testing.T) eventstore.Event {
			return sourceEvent(t, "e2", "client.disabled", eventstore.AggregateClient, "agt_1", &issuerv1.ClientTombstoned{Name: "tenants/acme/clients/agt_1"})
		}, func(r *revocation.Reactor) eventstore.Handler { return r.HandleCredentialsEvent }},
		{"agent of another tenant", func(t *testing.T) eventstore.Event {
			return sourceEvent(t, "e3", "agent.retired", eventstore.AggregateAgent, "agt_1", &registryv1.AgentRetired{Name: "tenants/beta/agents/agt_1"})
		}, func(r *revocation.Reactor) eventstore.Handler { return r.HandleAgentEvent }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rev := &fakeRevoker{}
			if err := tt.h(newReactor(t, rev, eventTime))(context.Background(), tt.e(t)); !eventstore.IsPermanent(err) {
				t.Fatalf("err = %v, want a permanent error", err)
			}
			if len(rev.calls) != 0 {
				t.Fatalf("revoked %v", rev.calls[0].ev)
			}
		})
	}
}

func TestReactorSkipsEventsTooOldToCoverAToken(t *testing.T) {
	rev := &fakeRevoker{}
	e := disabledEvent(t, eventTime)
	stillValid := revocation.ExpireTime(eventTime.Add(testAllowance))
	if err := newReactor(t, rev, stillValid.Add(time.Second)).HandleCredentialsEvent(context.Background(), e); err != nil || len(rev.calls) != 0 {
		t.Fatalf("an event too old to matter: err %v, %d revocations", err, len(rev.calls))
	}
	if err := newReactor(t, rev, stillValid.Add(-time.Second)).HandleCredentialsEvent(context.Background(), e); err != nil || len(rev.calls) != 1 {
		t.Fatalf("an event that still matters: err %v, %d revocations", err, len(rev.calls))
	}
}

func TestNewReactorValidates(t *testing.T) {
	for _, cfg := range []revocation.ReactorConfig{
		{Revoker: &fakeRevoker{}},
		{Consumer: noConsumer{}},
		{Consumer: noConsumer{}, Revoker: &fakeRevoker{}, ProjectionLagAllowance: -time.Second},
		{Consumer: noConsumer{}, Revoker: &fakeRevoker{}, ProjectionLagAllowance: revocation.MaxProjectionLagAllowance + time.Second},
	} {
		if _, err := revocation.NewReactor(cfg); err == nil {
			t.Errorf("NewReactor(%+v) accepted", cfg)
		}
	}
}

// TestReactorOnTheStreams runs the reactor's consumers on real streams: a disabled client and a
// retired agent are revoked, each once, although both events are handled twice.
func TestReactorOnTheStreams(t *testing.T) {
	n := testkit.StartNATS(t)
	store := eventstore.New(n.JetStream(t), eventstore.WithSource("agentid/test"), eventstore.WithRegisterer(prometheus.NewRegistry()))
	ctx := t.Context()
	if err := store.EnsureStreams(ctx); err != nil {
		t.Fatal(err)
	}
	appendEvent := func(aggType, aggID, typ, subject string, msg proto.Message) eventstore.Event {
		t.Helper()
		e, err := store.Append(ctx, eventstore.Append{
			Tenant: "acme", AggregateType: aggType, AggregateID: aggID, ExpectedVersion: eventstore.AnyVersion,
			IdempotencyKey: typ, Type: typ, Subject: subject, Data: msg,
			Metadata: eventstore.Metadata{Actor: eventstore.Actor{ID: "test", Kind: eventstore.ActorService}},
		})
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	disabled := appendEvent(eventstore.AggregateClient, "agt_1", "client.disabled", "tenants/acme/clients/agt_1",
		&issuerv1.ClientDisabled{Name: "tenants/acme/clients/agt_1", RevokeTime: timestamppb.Now()})
	retired := appendEvent(eventstore.AggregateAgent, "agt_2", "agent.retired", "tenants/acme/agents/agt_2",
		&registryv1.AgentRetired{Name: "tenants/acme/agents/agt_2"})

	r, err := revocation.NewReactor(revocation.ReactorConfig{Consumer: store, Revoker: &revocation.Writer{Store: store}})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := r.Run(runCtx); err != nil {
			t.Error(err)
		}
	})
	defer wg.Wait()
	defer stop()

	js := n.JetStream(t)
	count := func() uint64 {
		st, err := js.Stream(ctx, eventstore.StreamRevocations)
		if err != nil {
			t.Fatal(err)
		}
		return st.CachedInfo().State.Msgs
	}
	testkit.Eventually(t, 0, "two revocations", func() (bool, error) { return count() >= 2, nil })

	// A redelivery of either event (handled again here) stores nothing more.
	if err := r.HandleCredentialsEvent(ctx, disabled); err != nil {
		t.Fatal(err)
	}
	if err := r.HandleAgentEvent(ctx, retired); err != nil {
		t.Fatal(err)
	}
	if got := count(); got != 2 {
		t.Fatalf("%d revocations, want 2", got)
	}
	for _, src := range []eventstore.Event{disabled, retired} {
		id := revocation.ID("acme", revocation.RequestIDPrefix+src.ID)
		events, _, err := store.Load(ctx, "acme", eventstore.AggregateRevocation, id)
		if err != nil || len(events) != 1 {
			t.Fatalf("revocation of %s: %d events (%v), want 1", src.Type, len(events), err)
		}
		msg, err := eventstore.DecodeAs[*issuerv1.TokensRevoked](events[0])
		if err != nil || msg.GetSourceEventId() != src.ID || events[0].Metadata.CausationID != src.ID {
			t.Fatalf("revocation of %s = %v (causation %q), %v", src.Type, msg, events[0].Metadata.CausationID, err)
		}
	}
	for _, name := range []string{revocation.ClientsConsumer, revocation.AgentsConsumer} {
		stream := eventstore.StreamCredentials
		if name == revocation.AgentsConsumer {
			stream = eventstore.StreamAgents
		}
		if _, err := js.Consumer(ctx, stream, name); errors.Is(err, jetstream.ErrConsumerNotFound) {
			t.Fatalf("durable consumer %s on %s missing", name, stream)
		}
	}
}

// flakyConsumer fails the first run of every consumer, then consumes until ctx is done.
type flakyConsumer struct {
	mu   sync.Mutex
	runs map[string]int
}

func (f *flakyConsumer) Consume(ctx context.Context, name, _ string, _ []string, _ eventstore.Handler, _ ...eventstore.ConsumeOption) error {
	f.mu.Lock()
	f.runs[name]++
	first := f.runs[name] == 1
	f.mu.Unlock()
	if first {
		return errors.New("nats: consumer deleted")
	}
	<-ctx.Done()
	return nil
}

func (f *flakyConsumer) count(name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.runs[name]
}

func TestReactorRunsAFailedConsumerAgain(t *testing.T) {
	c := &flakyConsumer{runs: map[string]int{}}
	r, err := revocation.NewReactor(revocation.ReactorConfig{Consumer: c, Revoker: &fakeRevoker{}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	testkit.Eventually(t, 0, "both consumers running again", func() (bool, error) {
		return c.count(revocation.ClientsConsumer) == 2 && c.count(revocation.AgentsConsumer) == 2, nil
	})
	stop()
	if err := <-done; err != nil {
		t.Fatalf("Run after cancel: %v", err)
	}
}

// TestReactorRevokesASuspensionOnTheStream: an agent.suspended on AGENTS becomes one AGENT revocation
// with not_before = event time + allowance and the suspension's cause in its reason; agent.resumed
// revokes nothing. The durable consumer of an older issuer, created before suspensions existed (its
// filter lacks agent.suspended), is updated in place and delivers the suspension.
func TestReactorRevokesASuspensionOnTheStream(t *testing.T) {
	n := testkit.StartNATS(t)
	store := eventstore.New(n.JetStream(t), eventstore.WithSource("agentid/test"), eventstore.WithRegisterer(prometheus.NewRegistry()))
	ctx := t.Context()
	if err := store.EnsureStreams(ctx); err != nil {
		t.Fatal(err)
	}
	js := n.JetStream(t)
	var oldFilters []string
	for _, typ := range []string{"rejected", "retirement_requested", "retired"} {
		oldFilters = append(oldFilters, eventstore.EventSubject("*", eventstore.AggregateAgent, "*", typ))
	}
	if _, err := js.CreateConsumer(ctx, eventstore.StreamAgents, jetstream.ConsumerConfig{
		Durable: revocation.AgentsConsumer, FilterSubjects: oldFilters, AckPolicy: jetstream.AckExplicitPolicy,
	}); err != nil {
		t.Fatal(err)
	}

	const name = "tenants/acme/agents/agt_9"
	appendEvent := func(typ string, msg proto.Message) eventstore.Event {
		t.Helper()
		e, err := store.Append(ctx, eventstore.Append{
			Tenant: "acme", AggregateType: eventstore.AggregateAgent, AggregateID: "agt_9", ExpectedVersion: eventstore.AnyVersion,
			IdempotencyKey: typ, Type: typ, Subject: name, Data: msg,
			Metadata: eventstore.Metadata{Actor: eventstore.Actor{ID: "test", Kind: eventstore.ActorService}},
		})
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	suspended := appendEvent("agent.suspended", &registryv1.AgentSuspended{Name: name, Reason: "bulk export at 3 a.m.", Cause: "alert:a7"})
	appendEvent("agent.resumed", &registryv1.AgentResumed{Name: name, Reason: "false positive"})

	r, err := revocation.NewReactor(revocation.ReactorConfig{Consumer: store, Revoker: &revocation.Writer{Store: store}, ProjectionLagAllowance: testAllowance})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := r.Run(runCtx); err != nil {
			t.Error(err)
		}
	})
	defer wg.Wait()
	defer stop()

	id := revocation.ID("acme", revocation.RequestIDPrefix+suspended.ID)
	var events []eventstore.Event
	testkit.Eventually(t, 0, "the suspension's revocation", func() (bool, error) {
		events, _, err = store.Load(ctx, "acme", eventstore.AggregateRevocation, id)
		return len(events) > 0, err
	})
	msg, err := eventstore.DecodeAs[*issuerv1.TokensRevoked](events[0])
	if err != nil {
		t.Fatal(err)
	}
	if msg.GetTarget() != issuerv1.RevocationTarget_REVOCATION_TARGET_AGENT || msg.GetAgent() != name ||
		msg.GetCause() != issuerv1.RevocationCause_REVOCATION_CAUSE_AGENT_STATE || msg.GetSourceEventId() != suspended.ID ||
		!msg.GetNotBefore().AsTime().Equal(suspended.Time.Add(testAllowance)) ||
		!strings.Contains(msg.GetReason(), "SUSPENDED") || !strings.Contains(msg.GetReason(), "alert:a7") {
		t.Fatalf("revocation %v", msg)
	}
	// The consumer, its filter updated, has nothing left to deliver; the resumption is not among what
	// it filters, and nothing more was stored.
	testkit.Eventually(t, 0, "the consumer to have acked the suspension", func() (bool, error) {
		c, err := js.Consumer(ctx, eventstore.StreamAgents, revocation.AgentsConsumer)
		if err != nil {
			return false, err
		}
		info, err := c.Info(ctx)
		if err != nil {
			return false, err
		}
		return slices.Contains(info.Config.FilterSubjects, eventstore.EventSubject("*", eventstore.AggregateAgent, "*", "suspended")) &&
			!slices.Contains(info.Config.FilterSubjects, eventstore.EventSubject("*", eventstore.AggregateAgent, "*", "resumed")) &&
			info.NumPending == 0 && info.NumAckPending == 0, nil
	})
	st, err := js.Stream(ctx, eventstore.StreamRevocations)
	if err != nil {
		t.Fatal(err)
	}
	if msgs := st.CachedInfo().State.Msgs; msgs != 1 {
		t.Fatalf("%d revocations, want 1", msgs)
	}
}

func TestReactorRevokesAnAgentWhoseScopesWereRemoved(t *testing.T) {
	const name = "tenants/acme/agents/agt_1"
	tests := []struct {
		name          string
		aggID         string
		msg           *registryv1.AgentScopesRemoved
		wantRevoke    bool
		wantPermanent bool
		wantReason    []string
	}{
		{name: "removed by a review", aggID: "agt_1",
			msg:        &registryv1.AgentScopesRemoved{Name: name, Scopes: []string{"docs.read", "docs.write"}, RemainingScopes: []string{"docs.search"}, Reason: "unused", Ticket: "review:q1"},
			wantRevoke: true, wantReason: []string{"agent.scopes_removed", "docs.read docs.write", "unused", "review:q1"}},
		{name: "removed without reason or ticket", aggID: "agt_1",
			msg: &registryv1.AgentScopesRemoved{Name: name, Scopes: []string{"docs.read"}}, wantRevoke: true, wantReason: []string{"docs.read"}},
		{name: "nothing removed", aggID: "agt_1", msg: &registryv1.AgentScopesRemoved{Name: name}},
		{name: "agent of another tenant", aggID: "agt_1",
			msg: &registryv1.AgentScopesRemoved{Name: "tenants/beta/agents/agt_1", Scopes: []string{"docs.read"}}, wantPermanent: true},
		{name: "agent of another aggregate", aggID: "agt_2",
			msg: &registryv1.AgentScopesRemoved{Name: name, Scopes: []string{"docs.read"}}, wantPermanent: true},
		{name: "not an agent name", aggID: "agt_1",
			msg: &registryv1.AgentScopesRemoved{Name: "agt_1", Scopes: []string{"docs.read"}}, wantPermanent: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rev := &fakeRevoker{}
			e := sourceEvent(t, "ev-scopes", "agent.scopes_removed", eventstore.AggregateAgent, tt.aggID, tt.msg)
			err := newReactor(t, rev, eventTime).HandleAgentEvent(context.Background(), e)
			if tt.wantPermanent {
				if !eventstore.IsPermanent(err) {
					t.Fatalf("err = %v, want a permanent error", err)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if !tt.wantRevoke {
				if len(rev.calls) != 0 {
					t.Fatalf("revoked %v", rev.calls[0].ev)
				}
				return
			}
			if len(rev.calls) != 1 {
				t.Fatalf("%d revocations, want 1", len(rev.calls))
			}
			got := rev.calls[0]
			if got.ev.GetTarget() != issuerv1.RevocationTarget_REVOCATION_TARGET_AGENT || got.ev.GetAgent() != name || got.ev.GetTenant() != "acme" ||
				got.ev.GetCause() != issuerv1.RevocationCause_REVOCATION_CAUSE_AGENT_STATE || got.ev.GetSourceEventId() != e.ID ||
				!got.ev.GetNotBefore().AsTime().Equal(eventTime.Add(testAllowance)) || got.requestID != revocation.RequestIDPrefix+e.ID {
				t.Fatalf("revocation %v (request %q)", got.ev, got.requestID)
			}
			for _, w := range tt.wantReason {
				if !strings.Contains(got.ev.GetReason(), w) {
					t.Errorf("reason %q lacks %q", got.ev.GetReason(), w)
				}
			}
			if err := revocation.Check(got.ev); err != nil {
				t.Fatalf("the reactor's revocation does not pass the writer's check: %v", err)
			}
		})
	}
}

// TestReactorRevokesAScopeRemovalOnTheStream: agent.scopes_removed on AGENTS becomes one AGENT
// revocation with not_before = event time + allowance, also through the durable consumer of an older
// issuer whose filter lacked scopes_removed (updated in place); a token of the agent issued before
// not_before is revoked by it, one issued after is not.
func TestReactorRevokesAScopeRemovalOnTheStream(t *testing.T) {
	n := testkit.StartNATS(t)
	store := eventstore.New(n.JetStream(t), eventstore.WithSource("agentid/test"), eventstore.WithRegisterer(prometheus.NewRegistry()))
	ctx := t.Context()
	if err := store.EnsureStreams(ctx); err != nil {
		t.Fatal(err)
	}
	js := n.JetStream(t)
	var oldFilters []string
	for _, typ := range []string{"rejected", "retirement_requested", "retired", "suspended"} {
		oldFilters = append(oldFilters, eventstore.EventSubject("*", eventstore.AggregateAgent, "*", typ))
	}
	if _, err := js.CreateConsumer(ctx, eventstore.StreamAgents, jetstream.ConsumerConfig{
		Durable: revocation.AgentsConsumer, FilterSubjects: oldFilters, AckPolicy: jetstream.AckExplicitPolicy,
	}); err != nil {
		t.Fatal(err)
	}

	const name = "tenants/acme/agents/agt_5"
	removed, err := store.Append(ctx, eventstore.Append{
		Tenant: "acme", AggregateType: eventstore.AggregateAgent, AggregateID: "agt_5", ExpectedVersion: eventstore.AnyVersion,
		IdempotencyKey: "scopes", Type: "agent.scopes_removed", Subject: name,
		Data:     &registryv1.AgentScopesRemoved{Name: name, Scopes: []string{"docs.read"}, RemainingScopes: []string{"docs.search"}, Ticket: "review:q1"},
		Metadata: eventstore.Metadata{Actor: eventstore.Actor{ID: "test", Kind: eventstore.ActorService}},
	})
	if err != nil {
		t.Fatal(err)
	}

	r, err := revocation.NewReactor(revocation.ReactorConfig{Consumer: store, Revoker: &revocation.Writer{Store: store}, ProjectionLagAllowance: testAllowance})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := r.Run(runCtx); err != nil {
			t.Error(err)
		}
	})
	defer wg.Wait()
	defer stop()

	id := revocation.ID("acme", revocation.RequestIDPrefix+removed.ID)
	var events []eventstore.Event
	testkit.Eventually(t, 0, "the scope removal's revocation", func() (bool, error) {
		events, _, err = store.Load(ctx, "acme", eventstore.AggregateRevocation, id)
		return len(events) > 0, err
	})
	msg, err := eventstore.DecodeAs[*issuerv1.TokensRevoked](events[0])
	if err != nil {
		t.Fatal(err)
	}
	notBefore := removed.Time.Add(testAllowance)
	if msg.GetTarget() != issuerv1.RevocationTarget_REVOCATION_TARGET_AGENT || msg.GetAgent() != name ||
		msg.GetSourceEventId() != removed.ID || !msg.GetNotBefore().AsTime().Equal(notBefore) ||
		!strings.Contains(msg.GetReason(), "docs.read") {
		t.Fatalf("revocation %v", msg)
	}

	deny := authn.NewDenylist(authn.DenylistConfig{})
	if err := deny.Apply(msg, events[0].Sequence); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name        string
		iat         time.Time
		wantRevoked bool
	}{
		{"issued before the removal", removed.Time.Add(-time.Minute), true},
		{"issued within the allowance", removed.Time.Add(testAllowance / 2), true},
		{"issued after the allowance", notBefore.Add(time.Second), false},
	}
	for _, tt := range tests {
		c := &authn.Claims{Tenant: "acme", Agent: name, IssuedAt: tt.iat}
		if got := deny.Check(c, "") != nil; got != tt.wantRevoked {
			t.Errorf("%s: revoked %v, want %v", tt.name, got, tt.wantRevoked)
		}
	}
}
