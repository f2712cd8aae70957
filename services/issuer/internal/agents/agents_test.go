package agents_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/testkit"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"

	"github.com/agentid/agentid/services/issuer/internal/agents"
)

const agentName = "tenants/acme/agents/agt_1"

// event is a stored agent event of agentName's aggregate at seq.
func event(t *testing.T, typ string, seq uint64, msg proto.Message) eventstore.Event {
	t.Helper()
	data, err := proto.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	return eventstore.Event{
		ID: typ + "-id", Type: typ, Metadata: eventstore.Metadata{Tenant: "acme"},
		AggregateType: eventstore.AggregateAgent, AggregateID: "agt_1", Stream: eventstore.StreamAgents, Sequence: seq,
		DataSchema: string(msg.ProtoReflect().Descriptor().FullName()), Data: data,
	}
}

func registered(name string) proto.Message {
	return &registryv1.AgentRegistered{Agent: &registryv1.Agent{Name: name}}
}

func TestStateFollowsTheLifecycle(t *testing.T) {
	steps := []struct {
		typ  string
		msg  proto.Message
		want registryv1.AgentState
	}{
		{agents.EventAgentRegistered, registered(agentName), registryv1.AgentState_AGENT_STATE_PENDING},
		{agents.EventAgentActivated, &registryv1.AgentActivated{Name: agentName}, registryv1.AgentState_AGENT_STATE_ACTIVE},
		{"agent.reviewed", &registryv1.AgentActivated{Name: agentName}, registryv1.AgentState_AGENT_STATE_ACTIVE}, // unknown type: ignored
		{agents.EventAgentSuspended, &registryv1.AgentSuspended{Name: agentName, Reason: "alert", Cause: "alert:a1"}, registryv1.AgentState_AGENT_STATE_SUSPENDED},
		{agents.EventAgentResumed, &registryv1.AgentResumed{Name: agentName, Reason: "cleared"}, registryv1.AgentState_AGENT_STATE_ACTIVE},
		{agents.EventAgentSuspended, &registryv1.AgentSuspended{Name: agentName, Reason: "again"}, registryv1.AgentState_AGENT_STATE_SUSPENDED},
		{agents.EventAgentRetirementRequested, &registryv1.AgentRetirementRequested{Name: agentName}, registryv1.AgentState_AGENT_STATE_RETIRING},
		{agents.EventAgentRetired, &registryv1.AgentRetired{Name: agentName}, registryv1.AgentState_AGENT_STATE_RETIRED},
	}
	s := agents.NewState()
	if got := s.AgentState(agentName); got != registryv1.AgentState_AGENT_STATE_UNSPECIFIED {
		t.Fatalf("unknown agent: state %s, want UNSPECIFIED", got)
	}
	for i, st := range steps {
		if err := s.Apply(context.Background(), event(t, st.typ, uint64(i+1), st.msg)); err != nil {
			t.Fatalf("%s: %v", st.typ, err)
		}
		if got := s.AgentState(agentName); got != st.want {
			t.Fatalf("after %s: state %s, want %s", st.typ, got, st.want)
		}
	}
	// A late re-apply of an earlier event (an operator's retry) does not move the state back.
	if err := s.Apply(context.Background(), event(t, agents.EventAgentResumed, 5, &registryv1.AgentResumed{Name: agentName})); err != nil {
		t.Fatal(err)
	}
	if got := s.AgentState(agentName); got != registryv1.AgentState_AGENT_STATE_RETIRED {
		t.Fatalf("after a late re-apply: state %s, want RETIRED", got)
	}
	if s.Len() != 1 {
		t.Fatalf("Len = %d, want 1", s.Len())
	}
}

func TestStateRejectsRejectedAgents(t *testing.T) {
	s := agents.NewState()
	for i, e := range []eventstore.Event{
		event(t, agents.EventAgentRegistered, 1, registered(agentName)),
		event(t, agents.EventAgentRejected, 2, &registryv1.AgentRejected{Name: agentName}),
	} {
		if err := s.Apply(context.Background(), e); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
	}
	if got := s.AgentState(agentName); got != registryv1.AgentState_AGENT_STATE_REJECTED {
		t.Fatalf("state %s, want REJECTED", got)
	}
}

func TestStateRefusesInconsistentEvents(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*eventstore.Event)
		msg    proto.Message
	}{
		{"name not an agent", nil, &registryv1.AgentActivated{Name: "tenants/acme/clients/agt_1"}},
		{"empty name", nil, &registryv1.AgentActivated{}},
		{"agent of another tenant", nil, &registryv1.AgentActivated{Name: "tenants/beta/agents/agt_1"}},
		{"agent of another aggregate", nil, &registryv1.AgentActivated{Name: "tenants/acme/agents/agt_2"}},
		{"payload of another type", func(e *eventstore.Event) { e.DataSchema = "agentid.registry.v1.AgentRetired" }, &registryv1.AgentActivated{Name: agentName}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := agents.NewState()
			e := event(t, agents.EventAgentActivated, 1, tt.msg)
			if tt.mutate != nil {
				tt.mutate(&e)
			}
			if err := s.Apply(context.Background(), e); err == nil {
				t.Fatal("Apply accepted an inconsistent event")
			}
			if s.Len() != 0 {
				t.Fatalf("an inconsistent event changed the state: %d agents", s.Len())
			}
		})
	}
}

func TestParseNameAndStateName(t *testing.T) {
	if tenant, id, ok := agents.ParseName(agentName); !ok || tenant != "acme" || id != "agt_1" {
		t.Fatalf("ParseName(%q) = %q, %q, %v", agentName, tenant, id, ok)
	}
	for _, bad := range []string{"", "tenants/acme/agents/", "tenants//agents/a", "tenants/acme/agents/a/b", "x/acme/agents/a"} {
		if _, _, ok := agents.ParseName(bad); ok {
			t.Errorf("ParseName(%q) accepted", bad)
		}
	}
	if got := agents.StateName(registryv1.AgentState_AGENT_STATE_RETIRING); got != "RETIRING" {
		t.Errorf("StateName(RETIRING) = %q", got)
	}
	if got := agents.StateName(registryv1.AgentState_AGENT_STATE_UNSPECIFIED); got != "UNKNOWN" {
		t.Errorf("StateName(UNSPECIFIED) = %q", got)
	}
}

// fakeStream is a stream position for the gate: LastSequence reports last, WaitFor applies what the
// test queued and blocks while hold is set.
type fakeStream struct {
	lastCalls atomic.Int64
	last      uint64
	lastErr   error
	started   chan struct{} // receives once per LastSequence call
	hold      chan struct{} // WaitFor blocks until it is closed (nil: no blocking)
	onWait    func()        // run by WaitFor before returning
}

func (f *fakeStream) lastSequence(ctx context.Context) (uint64, error) {
	f.lastCalls.Add(1)
	if f.started != nil {
		f.started <- struct{}{}
	}
	return f.last, f.lastErr
}

func (f *fakeStream) waitFor(ctx context.Context, seq uint64) error {
	if f.hold != nil {
		select {
		case <-f.hold:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if f.onWait != nil {
		f.onWait()
	}
	return nil
}

func newGate(t *testing.T, s *agents.State, f *fakeStream) *agents.Gate {
	t.Helper()
	g, err := agents.NewGate(agents.GateConfig{State: s, LastSequence: f.lastSequence, WaitFor: f.waitFor, Timeout: testkit.DefaultWait})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func TestGateAnswersActiveWithoutIO(t *testing.T) {
	s := agents.NewState()
	for i, e := range []eventstore.Event{
		event(t, agents.EventAgentRegistered, 1, registered(agentName)),
		event(t, agents.EventAgentActivated, 2, &registryv1.AgentActivated{Name: agentName}),
	} {
		if err := s.Apply(context.Background(), e); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
	}
	f := &fakeStream{lastErr: errors.New("no stream")}
	st, err := newGate(t, s, f).Check(context.Background(), agentName)
	if err != nil || st != registryv1.AgentState_AGENT_STATE_ACTIVE {
		t.Fatalf("Check = %s, %v; want ACTIVE", st, err)
	}
	if n := f.lastCalls.Load(); n != 0 {
		t.Fatalf("an ACTIVE agent cost %d stream lookups, want none", n)
	}
}

func TestGateConfirmsARefusalAfterCatchingUp(t *testing.T) {
	s := agents.NewState()
	if err := s.Apply(context.Background(), event(t, agents.EventAgentRegistered, 1, registered(agentName))); err != nil {
		t.Fatal(err)
	}
	// The activation is in the stream but not yet in the projection: WaitFor applies it.
	f := &fakeStream{last: 2, onWait: func() {
		if err := s.Apply(context.Background(), event(t, agents.EventAgentResumed, 5, &registryv1.AgentResumed{Name: agentName})); err != nil {
			t.Error(err)
		}
	}}
	st, err := newGate(t, s, f).Check(context.Background(), agentName)
	if err != nil || st != registryv1.AgentState_AGENT_STATE_ACTIVE {
		t.Fatalf("Check = %s, %v; want ACTIVE after catching up", st, err)
	}
}

func TestGateReportsAFailedCatchUp(t *testing.T) {
	s := agents.NewState()
	f := &fakeStream{lastErr: errors.New("stream unavailable")}
	st, err := newGate(t, s, f).Check(context.Background(), agentName)
	if err == nil || st == registryv1.AgentState_AGENT_STATE_ACTIVE {
		t.Fatalf("Check = %s, %v; want a non-active state and an error", st, err)
	}

	// A catch-up that does not end within the caller's context fails too.
	f = &fakeStream{last: 1, hold: make(chan struct{})}
	defer close(f.hold)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := newGate(t, s, f).Check(ctx, agentName); !errors.Is(err, context.Canceled) {
		t.Fatalf("Check with a cancelled context: %v, want context.Canceled", err)
	}
}

func TestGateSharesOneCatchUpAtATime(t *testing.T) {
	s := agents.NewState()
	f := &fakeStream{last: 1, started: make(chan struct{}, 16), hold: make(chan struct{})}
	g := newGate(t, s, f)

	const checks = 8
	var wg sync.WaitGroup
	check := func() {
		wg.Go(func() {
			if _, err := g.Check(context.Background(), agentName); err != nil {
				t.Error(err)
			}
		})
	}
	check()
	<-f.started // the first catch-up has read the last sequence and waits
	for range checks {
		check() // these arrive after that read: they need a catch-up of their own, one for all
	}
	// Wait until every check has joined the pending catch-up: it starts only after the first ends,
	// so no lookup can happen before hold is released.
	testkit.Eventually(t, 0, "checks joining the pending catch-up", func() (bool, error) {
		return agents.Waiting(g) == checks+1, nil
	})
	if n := f.lastCalls.Load(); n != 1 {
		t.Fatalf("%d stream lookups while the first catch-up runs, want 1", n)
	}
	close(f.hold)
	wg.Wait()
	if n := f.lastCalls.Load(); n != 2 {
		t.Fatalf("%d checks made %d stream lookups, want 2 (one running, one shared by the rest)", checks+1, n)
	}
}

func TestNewGateValidates(t *testing.T) {
	f := &fakeStream{}
	for _, cfg := range []agents.GateConfig{
		{LastSequence: f.lastSequence, WaitFor: f.waitFor},
		{State: agents.NewState(), WaitFor: f.waitFor},
		{State: agents.NewState(), LastSequence: f.lastSequence},
		{State: agents.NewState(), LastSequence: f.lastSequence, WaitFor: f.waitFor, Timeout: -1},
	} {
		if _, err := agents.NewGate(cfg); err == nil {
			t.Errorf("NewGate(%+v) accepted", cfg)
		}
	}
}

// TestGateOnTheStream runs the projection over a real AGENTS stream and shows that an activation
// appended just before the check is seen, even while the projection holds it back.
func TestGateOnTheStream(t *testing.T) {
	n := testkit.StartNATS(t)
	store := eventstore.New(n.JetStream(t), eventstore.WithSource("agentid/registry"), eventstore.WithRegisterer(prometheus.NewRegistry()))
	ctx := t.Context()
	if err := store.EnsureStreams(ctx); err != nil {
		t.Fatal(err)
	}
	s := agents.NewState()
	release := make(chan struct{})
	runner := store.NewRunner(holdActivations{s, release}, eventstore.StreamAgents, nil)
	var wg sync.WaitGroup
	runCtx, stop := context.WithCancel(ctx)
	wg.Go(func() {
		if err := runner.Run(runCtx); err != nil {
			t.Error(err)
		}
	})
	defer wg.Wait()
	defer stop()

	appendAgent := func(typ string, msg proto.Message) eventstore.Event {
		t.Helper()
		e, err := store.Append(ctx, eventstore.Append{
			Tenant: "acme", AggregateType: eventstore.AggregateAgent, AggregateID: "agt_1",
			ExpectedVersion: eventstore.AnyVersion, IdempotencyKey: typ, Type: typ, Subject: agentName, Data: msg,
			Metadata: eventstore.Metadata{Actor: eventstore.Actor{ID: "registry", Kind: eventstore.ActorService}},
		})
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	appendAgent(agents.EventAgentRegistered, registered(agentName))
	last := appendAgent(agents.EventAgentActivated, &registryv1.AgentActivated{Name: agentName})

	looked := make(chan struct{}, 1)
	g, err := agents.NewGate(agents.GateConfig{
		State: s,
		LastSequence: func(ctx context.Context) (uint64, error) {
			st, err := store.JetStream().Stream(ctx, eventstore.StreamAgents)
			if err != nil {
				return 0, err
			}
			looked <- struct{}{}
			return st.CachedInfo().State.LastSeq, nil
		},
		WaitFor: runner.WaitFor,
		Timeout: testkit.DefaultWait,
	})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		<-looked // the gate has read the stream's last sequence: let the projection apply it
		close(release)
	}()
	st, err := g.Check(ctx, agentName)
	if err != nil || st != registryv1.AgentState_AGENT_STATE_ACTIVE {
		t.Fatalf("Check right after %s (seq %d) = %s, %v; want ACTIVE", last.Type, last.Sequence, st, err)
	}
}

// holdActivations applies events to a State, holding agent.activated until release is closed.
type holdActivations struct {
	*agents.State
	release chan struct{}
}

func (h holdActivations) Apply(ctx context.Context, e eventstore.Event) error {
	if e.Type == agents.EventAgentActivated {
		select {
		case <-h.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return h.State.Apply(ctx, e)
}
