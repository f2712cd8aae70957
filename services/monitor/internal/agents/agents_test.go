package agents_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/testkit"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/monitor/internal/agents"
)

const etl = "tenants/acme/agents/etl"

func event(t *testing.T, tenant, typ string, seq uint64, msg proto.Message) eventstore.Event {
	t.Helper()
	data, err := proto.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	return eventstore.Event{ID: typ + "-id", Type: typ, Metadata: eventstore.Metadata{Tenant: tenant}, Sequence: seq,
		DataSchema: string(msg.ProtoReflect().Descriptor().FullName()), Data: data}
}

func registration(name string) *registryv1.AgentRegistered {
	return &registryv1.AgentRegistered{Agent: &registryv1.Agent{Name: name, Owner: "alice@acme.example", Sponsor: "carol@acme.example",
		Environment: registryv1.Environment_ENVIRONMENT_PROD, RiskTier: registryv1.RiskTier_RISK_TIER_HIGH, Scopes: []string{"warehouse.read"}}}
}

func TestProjectionFollowsTheLifecycle(t *testing.T) {
	ctx := context.Background()
	p := agents.New()
	if _, ok := p.Lookup("acme", etl); ok {
		t.Fatal("an empty projection knows etl")
	}
	steps := []struct {
		typ  string
		msg  proto.Message
		want registryv1.AgentState
	}{
		{agents.EventAgentRegistered, registration(etl), registryv1.AgentState_AGENT_STATE_PENDING},
		{agents.EventAgentActivated, &registryv1.AgentActivated{Name: etl}, registryv1.AgentState_AGENT_STATE_ACTIVE},
		{agents.EventAgentSuspended, &registryv1.AgentSuspended{Name: etl, Cause: "alert:a1"}, registryv1.AgentState_AGENT_STATE_SUSPENDED},
		{agents.EventAgentResumed, &registryv1.AgentResumed{Name: etl}, registryv1.AgentState_AGENT_STATE_ACTIVE},
		{"agent.reviewed", &registryv1.AgentRejected{Name: etl}, registryv1.AgentState_AGENT_STATE_ACTIVE}, // ignored
		{agents.EventAgentRetirementRequested, &registryv1.AgentRetirementRequested{Name: etl}, registryv1.AgentState_AGENT_STATE_RETIRING},
		{agents.EventAgentRetired, &registryv1.AgentRetired{Name: etl}, registryv1.AgentState_AGENT_STATE_RETIRED},
	}
	for i, st := range steps {
		if err := p.Apply(ctx, event(t, "acme", st.typ, uint64(i+1), st.msg)); err != nil {
			t.Fatalf("%s: %v", st.typ, err)
		}
		info, ok := p.Lookup("acme", etl)
		if !ok || info.State != st.want {
			t.Fatalf("after %s: %+v, %v; want state %s", st.typ, info, ok, st.want)
		}
	}
	// A re-driven old event changes nothing.
	if err := p.Apply(ctx, event(t, "acme", agents.EventAgentActivated, 2, &registryv1.AgentActivated{Name: etl})); err != nil {
		t.Fatal(err)
	}
	info, _ := p.Lookup("acme", etl)
	want := agents.Info{Name: etl, Tenant: "acme", Owner: "alice@acme.example", Sponsor: "carol@acme.example", Environment: "prod",
		RiskTier: "high", State: registryv1.AgentState_AGENT_STATE_RETIRED, Scopes: []string{"warehouse.read"}, Known: true}
	if info.Name != want.Name || info.Owner != want.Owner || info.Sponsor != want.Sponsor || info.Environment != want.Environment ||
		info.RiskTier != want.RiskTier || info.State != want.State || !slices.Equal(info.Scopes, want.Scopes) || !info.Known || info.StateName() != "RETIRED" {
		t.Errorf("info = %+v, want %+v", info, want)
	}
}

func TestLookupByAgentIDAndClientID(t *testing.T) {
	ctx := context.Background()
	p := agents.New()
	for i, e := range []eventstore.Event{
		event(t, "acme", agents.EventClientCreated, 1, &issuerv1.ClientCreated{Client: &issuerv1.Client{ClientId: "etl-client", Tenant: "acme", Agent: etl}}),
		event(t, "acme", agents.EventClientCreated, 2, &issuerv1.ClientCreated{Client: &issuerv1.Client{ClientId: "gw", Tenant: "acme"}}),
		event(t, "acme", agents.EventClientCreated, 3, &issuerv1.ClientCreated{Client: &issuerv1.Client{ClientId: "orphan", Tenant: "acme", Agent: "tenants/acme/agents/never"}}),
		event(t, "acme", agents.EventAgentRegistered, 1, registration(etl)),
	} {
		if err := p.Apply(ctx, e); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
	}
	tests := []struct {
		tenant, key string
		wantOK      bool
	}{
		{"acme", etl, true},
		{"acme", "etl", true},
		{"acme", "etl-client", true},
		{"globex", "etl-client", false},              // client ids are per tenant
		{"globex", etl, false},                       // another tenant's name
		{"acme", "gw", true},                         // a client of no agent: known, with no agent
		{"acme", "orphan", false},                    // a client of an unregistered agent: a ghost
		{"acme", "tenants/acme/agents/ghost", false}, // never registered
		{"acme", "tenants/acme/agents/etl/x", false}, // not a name
		{"acme", "", false},
	}
	for _, tt := range tests {
		info, ok := p.Lookup(tt.tenant, tt.key)
		if ok != tt.wantOK || (ok && tt.key != "gw" && (info.Name != etl || info.Owner != "alice@acme.example")) || (tt.key == "gw" && info.Name != "") {
			t.Errorf("Lookup(%q, %q) = %+v, %v; want ok %v", tt.tenant, tt.key, info, ok, tt.wantOK)
		}
	}
}

func TestApplyRefusesAnAgentOfAnotherTenant(t *testing.T) {
	p := agents.New()
	for _, e := range []eventstore.Event{
		event(t, "globex", agents.EventAgentRegistered, 1, registration(etl)),
		event(t, "globex", agents.EventAgentSuspended, 2, &registryv1.AgentSuspended{Name: etl}),
		event(t, "globex", agents.EventClientCreated, 3, &issuerv1.ClientCreated{Client: &issuerv1.Client{ClientId: "x", Tenant: "globex", Agent: etl}}),
	} {
		if err := p.Apply(context.Background(), e); !eventstore.IsPermanent(err) {
			t.Errorf("%s of another tenant: err = %v, want a permanent error", e.Type, err)
		}
	}
	if p.Len() != 0 {
		t.Errorf("the projection holds %d agents", p.Len())
	}
}

// TestRunnersFollowTheStreams runs the projection over both streams of an embedded NATS server.
func TestRunnersFollowTheStreams(t *testing.T) {
	js := testkit.StartNATS(t).JetStream(t)
	es := eventstore.New(js)
	if err := es.EnsureStreams(t.Context()); err != nil {
		t.Fatal(err)
	}
	p := agents.New()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	for _, stream := range []string{eventstore.StreamAgents, eventstore.StreamCredentials} {
		r := es.NewRunner(p, stream, nil)
		go func() { _ = r.Run(ctx) }()
	}
	md := eventstore.Metadata{Actor: eventstore.Actor{ID: "registry", Kind: eventstore.ActorService}}
	for _, a := range []eventstore.Append{
		{Tenant: "acme", AggregateType: eventstore.AggregateAgent, AggregateID: "etl", IdempotencyKey: "r1", Type: agents.EventAgentRegistered, Subject: etl, Data: registration(etl), Metadata: md},
		{Tenant: "acme", AggregateType: eventstore.AggregateAgent, AggregateID: "etl", ExpectedVersion: 1, IdempotencyKey: "r2", Type: agents.EventAgentSuspended, Subject: etl, Data: &registryv1.AgentSuspended{Name: etl}, Metadata: md},
		{Tenant: "acme", AggregateType: eventstore.AggregateClient, AggregateID: "etl-client", IdempotencyKey: "c1", Type: agents.EventClientCreated,
			Subject: "tenants/acme/clients/etl-client", Data: &issuerv1.ClientCreated{Client: &issuerv1.Client{ClientId: "etl-client", Tenant: "acme", Agent: etl}}, Metadata: md},
	} {
		if _, err := es.Append(t.Context(), a); err != nil {
			t.Fatalf("append %s: %v", a.Type, err)
		}
	}
	testkit.Eventually(t, 0, "the suspended agent by its client id", func() (bool, error) {
		info, ok := p.Lookup("acme", "etl-client")
		return ok && info.State == registryv1.AgentState_AGENT_STATE_SUSPENDED, nil
	})
}

// apply applies typ for etl at time at with sequence seq.
func apply(t *testing.T, p *agents.Projection, typ string, seq uint64, at time.Time, msg proto.Message) {
	t.Helper()
	e := event(t, "acme", typ, seq, msg)
	e.Time = at
	if err := p.Apply(t.Context(), e); err != nil {
		t.Fatalf("%s: %v", typ, err)
	}
}

// TestLookupAtAnswersTheStateAtATime: the state an agent had at any time of its history, to the
// millisecond, whatever the order of lookups; Lookup answers the current state.
func TestLookupAtAnswersTheStateAtATime(t *testing.T) {
	p := agents.New()
	t0 := time.Date(2026, 3, 30, 3, 0, 0, 0, time.UTC)
	suspended := t0.Add(time.Hour + 123456789) // 123.456789 ms past the hour
	resumed := suspended.Add(time.Hour)
	retired := resumed.Add(time.Hour)
	apply(t, p, agents.EventAgentRegistered, 1, t0, registration(etl))
	apply(t, p, agents.EventAgentActivated, 2, t0.Add(time.Minute), &registryv1.AgentActivated{Name: etl})
	apply(t, p, agents.EventAgentSuspended, 3, suspended, &registryv1.AgentSuspended{Name: etl})
	apply(t, p, agents.EventAgentResumed, 4, resumed, &registryv1.AgentResumed{Name: etl})
	apply(t, p, agents.EventAgentRetirementRequested, 5, retired.Add(-time.Second), &registryv1.AgentRetirementRequested{Name: etl})
	apply(t, p, agents.EventAgentRetired, 6, retired, &registryv1.AgentRetired{Name: etl})
	ms := suspended.Truncate(time.Millisecond)
	tests := []struct {
		name      string
		at        time.Time
		want      registryv1.AgentState
		wantSince time.Time
	}{
		{"before the registration", t0.Add(-time.Hour), registryv1.AgentState_AGENT_STATE_UNSPECIFIED, time.Time{}},
		{"registered", t0.Add(30 * time.Second), registryv1.AgentState_AGENT_STATE_PENDING, t0},
		{"active", t0.Add(30 * time.Minute), registryv1.AgentState_AGENT_STATE_ACTIVE, t0.Add(time.Minute)},
		{"the millisecond before the suspension", ms.Add(-time.Microsecond), registryv1.AgentState_AGENT_STATE_ACTIVE, t0.Add(time.Minute)},
		{"the suspension's millisecond", ms, registryv1.AgentState_AGENT_STATE_SUSPENDED, ms},
		{"the suspension's millisecond, before its nanosecond", ms.Add(time.Microsecond), registryv1.AgentState_AGENT_STATE_SUSPENDED, ms},
		{"suspended", suspended.Add(30 * time.Minute), registryv1.AgentState_AGENT_STATE_SUSPENDED, ms},
		{"resumed", resumed, registryv1.AgentState_AGENT_STATE_ACTIVE, resumed.Truncate(time.Millisecond)},
		{"retiring", retired.Add(-time.Millisecond), registryv1.AgentState_AGENT_STATE_RETIRING, retired.Add(-time.Second).Truncate(time.Millisecond)},
		{"retired", retired.Add(365 * 24 * time.Hour), registryv1.AgentState_AGENT_STATE_RETIRED, retired.Truncate(time.Millisecond)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, key := range []string{etl, "etl"} {
				info, ok := p.LookupAt("acme", key, tt.at)
				if !ok || info.State != tt.want || !info.StateSince.Equal(tt.wantSince) || info.Owner != "alice@acme.example" {
					t.Errorf("LookupAt(%s, %v) = %v since %v (%+v, %v); want %v since %v", key, tt.at, info.State, info.StateSince, info, ok, tt.want, tt.wantSince)
				}
			}
		})
	}
	if info, _ := p.Lookup("acme", etl); info.State != registryv1.AgentState_AGENT_STATE_RETIRED || !info.StateSince.Equal(retired.Truncate(time.Millisecond)) {
		t.Errorf("Lookup = %v since %v, want RETIRED since %v", info.State, info.StateSince, retired)
	}
	if _, ok := p.LookupAt("acme", "tenants/acme/agents/ghost", t0); ok {
		t.Error("LookupAt knows a ghost")
	}
	if _, ok := p.LookupAt("globex", etl, t0); ok {
		t.Error("LookupAt answers for another tenant")
	}
}

// TestStateHistoryKeepsStreamOrder: an event stamped earlier than the one before it (another
// registry replica's clock) takes effect at the earlier event's time, never before it; a
// re-driven old event changes nothing.
func TestStateHistoryKeepsStreamOrder(t *testing.T) {
	p := agents.New()
	t0 := time.Date(2026, 3, 30, 3, 0, 0, 0, time.UTC)
	apply(t, p, agents.EventAgentRegistered, 1, t0, registration(etl))
	apply(t, p, agents.EventAgentActivated, 2, t0.Add(time.Hour), &registryv1.AgentActivated{Name: etl})
	apply(t, p, agents.EventAgentSuspended, 3, t0.Add(50*time.Minute), &registryv1.AgentSuspended{Name: etl})
	apply(t, p, agents.EventAgentResumed, 2, t0.Add(2*time.Hour), &registryv1.AgentResumed{Name: etl}) // re-driven: ignored
	for _, tt := range []struct {
		at   time.Time
		want registryv1.AgentState
	}{
		{t0.Add(55 * time.Minute), registryv1.AgentState_AGENT_STATE_PENDING},
		{t0.Add(time.Hour), registryv1.AgentState_AGENT_STATE_SUSPENDED},
		{t0.Add(3 * time.Hour), registryv1.AgentState_AGENT_STATE_SUSPENDED},
	} {
		if info, _ := p.LookupAt("acme", etl, tt.at); info.State != tt.want {
			t.Errorf("LookupAt(%v) = %v, want %v", tt.at, info.State, tt.want)
		}
	}
}

// TestStateHistoryIsBounded: an agent suspended and resumed many times keeps its last
// MaxStateChanges changes; before them, the state of the last change folded away.
func TestStateHistoryIsBounded(t *testing.T) {
	p := agents.New()
	t0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	apply(t, p, agents.EventAgentRegistered, 1, t0, registration(etl))
	seq := uint64(1)
	at := func(i int) time.Time { return t0.Add(time.Duration(i) * time.Hour) }
	n := 3 * agents.MaxStateChanges
	for i := 1; i <= n; i++ {
		seq++
		if i%2 == 1 {
			apply(t, p, agents.EventAgentSuspended, seq, at(i), &registryv1.AgentSuspended{Name: etl})
		} else {
			apply(t, p, agents.EventAgentResumed, seq, at(i), &registryv1.AgentResumed{Name: etl})
		}
	}
	stateOf := func(i int) registryv1.AgentState {
		if i%2 == 1 {
			return registryv1.AgentState_AGENT_STATE_SUSPENDED
		}
		return registryv1.AgentState_AGENT_STATE_ACTIVE
	}
	oldest := n - agents.MaxStateChanges + 1 // the oldest change kept
	for i := oldest; i <= n; i++ {
		if info, _ := p.LookupAt("acme", etl, at(i).Add(time.Minute)); info.State != stateOf(i) {
			t.Fatalf("change %d kept: LookupAt = %v, want %v", i, info.State, stateOf(i))
		}
	}
	// Before the oldest change kept: the state of the last one folded away, whatever the time.
	for _, i := range []int{oldest - 1, 1, -10} {
		if info, _ := p.LookupAt("acme", etl, at(i).Add(time.Minute)); info.State != stateOf(oldest-1) || !info.StateSince.Equal(at(oldest-1)) {
			t.Errorf("LookupAt(change %d, folded) = %v since %v, want %v since %v", i, info.State, info.StateSince, stateOf(oldest-1), at(oldest-1))
		}
	}
}

// TestCatchUpSeesAStateChangeStoredBeforeIt: once CatchUp returns, a suspension appended before it
// was called is in the projection, even though the runner had not applied it when CatchUp was
// called (the runner is held at the suspension until then).
func TestCatchUpSeesAStateChangeStoredBeforeIt(t *testing.T) {
	js := testkit.StartNATS(t).JetStream(t)
	es := eventstore.New(js)
	if err := es.EnsureStreams(t.Context()); err != nil {
		t.Fatal(err)
	}
	p := agents.New()
	held := &holding{Projection: p, release: make(chan struct{})}
	r := es.NewRunner(held, eventstore.StreamAgents, nil)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go func() { _ = r.Run(ctx) }()
	catchUp := agents.CatchUp(es, r)
	md := eventstore.Metadata{Actor: eventstore.Actor{ID: "registry", Kind: eventstore.ActorService}}
	reg, err := es.Append(t.Context(), eventstore.Append{Tenant: "acme", AggregateType: eventstore.AggregateAgent, AggregateID: "etl", IdempotencyKey: "r1",
		Type: agents.EventAgentRegistered, Subject: etl, Data: registration(etl), Metadata: md})
	if err != nil {
		t.Fatal(err)
	}
	if err := catchUp(ctxTimeout(t)); err != nil {
		t.Fatalf("CatchUp: %v", err)
	}
	if info, ok := p.Lookup("acme", etl); !ok || info.State != registryv1.AgentState_AGENT_STATE_PENDING {
		t.Fatalf("after CatchUp: %+v, %v; want PENDING", info, ok)
	}
	if _, err := es.Append(t.Context(), eventstore.Append{Tenant: "acme", AggregateType: eventstore.AggregateAgent, AggregateID: "etl", ExpectedVersion: reg.Sequence,
		IdempotencyKey: "r2", Type: agents.EventAgentSuspended, Subject: etl, Data: &registryv1.AgentSuspended{Name: etl}, Metadata: md}); err != nil {
		t.Fatal(err)
	}
	if info, _ := p.Lookup("acme", etl); info.State != registryv1.AgentState_AGENT_STATE_PENDING {
		t.Fatalf("the held runner applied the suspension: %v", info.State)
	}
	// Held, CatchUp cannot finish: it fails with its context.
	short, stop := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer stop()
	if err := catchUp(short); err == nil {
		t.Fatal("CatchUp returned while the runner was held before the last event")
	}
	close(held.release)
	if err := catchUp(ctxTimeout(t)); err != nil {
		t.Fatalf("CatchUp: %v", err)
	}
	if info, _ := p.Lookup("acme", etl); info.State != registryv1.AgentState_AGENT_STATE_SUSPENDED {
		t.Fatalf("after CatchUp: %v, want SUSPENDED", info.State)
	}
}

// holding holds a projection's runner at agent.suspended events until release is closed.
type holding struct {
	*agents.Projection
	release chan struct{}
}

func (h *holding) Apply(ctx context.Context, e eventstore.Event) error {
	if e.Type == agents.EventAgentSuspended {
		select {
		case <-h.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return h.Projection.Apply(ctx, e)
}

func ctxTimeout(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), testkit.DefaultWait)
	t.Cleanup(cancel)
	return ctx
}
