package registry_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/testkit"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/registry/internal/registry"
)

// agentsLastSeq reads the AGENTS stream's last sequence.
func agentsLastSeq(js jetstream.JetStream) func(context.Context) (uint64, error) {
	return func(ctx context.Context) (uint64, error) {
		s, err := js.Stream(ctx, eventstore.StreamAgents)
		if err != nil {
			return 0, err
		}
		info, err := s.Info(ctx)
		if err != nil {
			return 0, err
		}
		return info.State.LastSeq, nil
	}
}

// startReactor runs an orphan reactor of svc over store until ctx ends; it returns a channel
// closed when the reactor has stopped.
func startReactor(t *testing.T, ctx context.Context, store *eventstore.Store, svc *registry.Service) <-chan struct{} {
	t.Helper()
	r, err := registry.NewOrphanReactor(registry.OrphanReactorConfig{
		Consumer: store, Service: svc, AgentsLastSequence: agentsLastSeq(store.JetStream()), Concurrency: 4,
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { <-done })
	go func() {
		defer close(done)
		if err := r.Run(ctx); err != nil {
			t.Errorf("reactor: %v", err)
		}
	}()
	return done
}

// crashingStore is the event store until left agent.orphaned events have been appended; every
// later one fails, as if the process had crashed.
type crashingStore struct {
	*eventstore.Store
	left atomic.Int64
}

func (c *crashingStore) Append(ctx context.Context, a eventstore.Append) (eventstore.Event, error) {
	if a.Type == registry.EventAgentOrphaned && c.left.Add(-1) < 0 {
		return eventstore.Event{}, errors.New("injected crash")
	}
	return c.Store.Append(ctx, a)
}

// registerMany registers n agents owned by owner and sponsored by sponsor, 8 at a time.
func registerMany(t *testing.T, e *env, tenant, owner, sponsor string, n int) []string {
	t.Helper()
	out := make([]string, n)
	var wg sync.WaitGroup
	errc := make(chan error, n)
	work := make(chan int)
	for range 8 {
		wg.Go(func() {
			for i := range work {
				in := validAgent(t)
				in.Owner, in.Sponsor = owner, sponsor
				a, err := e.svc.RegisterAgent(t.Context(), registry.RegisterAgent{Tenant: tenant, Agent: in, RequestID: fmt.Sprintf("many-%s-%s-%d", owner, sponsor, i)}, admin)
				if err != nil {
					errc <- err
					continue
				}
				out[i] = a.GetAgentId()
			}
		})
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatalf("register: %v", err)
	}
	return out
}

// orphanEvents counts the agent.orphaned events of tenant's agents, by agent id.
func orphanEvents(t *testing.T, e *env, tenant string) map[string]int {
	t.Helper()
	js := e.store.JetStream()
	cons, err := js.OrderedConsumer(t.Context(), eventstore.StreamAgents, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{eventstore.EventSubject(tenant, registry.AggregateAgent, "*", "orphaned")},
	})
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(t.Context(), eventstore.StreamAgents)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(t.Context(), jetstream.WithSubjectFilter(eventstore.EventSubject(tenant, registry.AggregateAgent, "*", "orphaned")))
	if err != nil {
		t.Fatal(err)
	}
	var total uint64
	for _, n := range info.State.Subjects {
		total += n
	}
	out := map[string]int{}
	for range total {
		msg, err := cons.Next(jetstream.FetchMaxWait(testkit.DefaultWait))
		if err != nil {
			t.Fatal(err)
		}
		ev, err := eventstore.EventFromMsg(msg)
		if err != nil {
			t.Fatal(err)
		}
		out[ev.AggregateID]++
	}
	return out
}

// countOrphaned counts the orphaned agents among ids in the read model.
func countOrphaned(e *env, tenant string, ids []string) int {
	n := 0
	for _, id := range ids {
		if a, ok := e.svc.Agents().Get(tenant, id); ok && a.GetOrphaned() {
			n++
		}
	}
	return n
}

// TestOrphanReactorOrphansEveryAgentOnce: the departure of a principal owning 2,000 agents orphans
// every one of them exactly once, also when the reactor is stopped halfway and started again and
// when the event is delivered once more; agents of other owners, of other tenants and terminal
// agents are left alone, and an agent the principal only sponsors is orphaned with role sponsor.
func TestOrphanReactorOrphansEveryAgentOnce(t *testing.T) {
	const many = 2000
	e := newEnv(t)
	e.createTenant(t, "acme")
	e.createTenant(t, "globex")
	owned := registerMany(t, e, "acme", "bob@corp.example", "alice@corp.example", many)
	sponsored := registerMany(t, e, "acme", "carol@corp.example", "bob@corp.example", 3)
	others := registerMany(t, e, "acme", "carol@corp.example", "alice@corp.example", 3)
	foreign := registerMany(t, e, "globex", "bob@corp.example", "alice@corp.example", 2)
	if _, err := e.svc.RejectAgent(t.Context(), registry.RejectAgent{Tenant: "acme", AgentID: owned[0], DecisionID: "dec-1", Reason: "no"}, admin); err != nil {
		t.Fatal(err)
	}

	res, err := e.svc.SyncDirectory(t.Context(), registry.SyncDirectory{Tenant: "acme", Principals: []*registryv1.Principal{
		{Id: "alice@corp.example"}, {Id: "carol@corp.example"}, {Id: "bob@corp.example", Status: registryv1.PrincipalStatus_PRINCIPAL_STATUS_DEPARTED},
	}, RequestID: "hr-feed-1"}, admin)
	if err != nil {
		t.Fatal(err)
	}
	if res.AgentsOrphaned != many-1+3 {
		t.Fatalf("agents to orphan at decision time: %d, want %d", res.AgentsOrphaned, many-1+3)
	}

	// First run: a crash after 1,000 orphanings (every later append fails), then the reactor stops.
	crashing := &crashingStore{Store: e.store}
	crashing.left.Store(many / 2)
	ctx1, stop1 := context.WithCancel(t.Context())
	svc1, err := registry.New(registry.Config{Store: crashing})
	if err != nil {
		t.Fatal(err)
	}
	runAll(t, svc1.Runners()...)
	if err := svc1.Ready(t.Context()); err != nil {
		t.Fatal(err)
	}
	done1 := startReactor(t, ctx1, e.store, svc1)
	testkit.Eventually(t, 2*testkit.DefaultWait, "half of the agents orphaned", func() (bool, error) {
		return countOrphaned(e, "acme", owned) >= many/2, nil
	})
	stop1()
	<-done1
	if n := countOrphaned(e, "acme", owned); n != many/2 {
		t.Fatalf("the first run orphaned %d agents, want %d", n, many/2)
	}

	// Second run: resumes with the redelivered event.
	startReactor(t, t.Context(), e.store, e.svc)
	testkit.Eventually(t, 2*testkit.DefaultWait, "every agent orphaned", func() (bool, error) {
		return countOrphaned(e, "acme", owned) == many-1 && countOrphaned(e, "acme", sponsored) == 3, nil
	})

	// The event delivered once more (by hand): nothing new.
	evs, _, err := e.store.Load(t.Context(), "acme", registry.AggregateTenant, "acme")
	if err != nil {
		t.Fatal(err)
	}
	r, err := registry.NewOrphanReactor(registry.OrphanReactorConfig{Consumer: e.store, Service: e.svc, AgentsLastSequence: agentsLastSeq(e.store.JetStream())})
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs {
		if err := r.Handle(t.Context(), ev); err != nil {
			t.Fatal(err)
		}
	}

	counts := orphanEvents(t, e, "acme")
	for _, id := range append(owned[1:], sponsored...) {
		if counts[id] != 1 {
			t.Fatalf("agent %s has %d agent.orphaned events, want 1", id, counts[id])
		}
	}
	if len(counts) != many-1+3 {
		t.Fatalf("%d agents of acme have agent.orphaned events, want %d", len(counts), many-1+3)
	}
	for _, id := range append([]string{owned[0]}, others...) {
		if a, _ := e.svc.Agents().Get("acme", id); a.GetOrphaned() {
			t.Fatalf("agent %s (%s, owner %s) was orphaned", id, a.GetState(), a.GetOwner())
		}
	}
	for _, id := range foreign {
		if a, _ := e.svc.Agents().Get("globex", id); a.GetOrphaned() {
			t.Fatalf("globex agent %s was orphaned by acme's directory", id)
		}
	}
	a, _ := e.svc.Agents().Get("acme", sponsored[0])
	if a.GetOrphanReason() != "sponsor bob@corp.example departed" || a.GetOrphanTime() == nil {
		t.Fatalf("sponsored agent: reason %q time %v", a.GetOrphanReason(), a.GetOrphanTime())
	}

	// A transfer to active principals clears the mark.
	x, err := e.svc.TransferAgentOwnership(t.Context(), registry.TransferAgentOwnership{
		Tenant: "acme", AgentID: owned[1], NewOwner: "carol@corp.example", Reason: "bob left", RequestID: "x-1",
	}, admin)
	if err != nil || x.GetOrphaned() || x.GetOwner() != "carol@corp.example" {
		t.Fatalf("transfer of an orphaned agent: %v %v", x, err)
	}
}
