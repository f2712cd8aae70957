package eventstore_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/eventstore"
)

// agentList is a small projection: per tenant/agent, the event types and values in order.
type agentList struct {
	name    string
	failOn  string // value whose event Apply rejects
	mu      sync.Mutex
	history map[string][]string
	applied []uint64
}

func newAgentList(name string) *agentList {
	return &agentList{name: name, history: map[string][]string{}}
}

func (p *agentList) Name() string { return p.name }

func (p *agentList) Apply(_ context.Context, e eventstore.Event) error {
	v, err := eventstore.DecodeAs[*wrapperspb.StringValue](e)
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.failOn != "" && v.GetValue() == p.failOn {
		return fmt.Errorf("cannot apply %q", v.GetValue())
	}
	key := e.Metadata.Tenant + "/" + e.AggregateID
	p.history[key] = append(p.history[key], e.Type+"="+v.GetValue())
	p.applied = append(p.applied, e.Sequence)
	return nil
}

func (p *agentList) snapshot() (map[string][]string, []uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	h := make(map[string][]string, len(p.history))
	for k, v := range p.history {
		h[k] = slices.Clone(v)
	}
	return h, slices.Clone(p.applied)
}

// run starts r in the background and stops it when the test ends.
func run(t *testing.T, r *eventstore.Runner) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

func TestRunnerRebuildEqualsLive(t *testing.T) {
	e := newEnv(t)
	filter := []string{eventstore.AggregateTypeSubject("agent")}
	live := newAgentList("agents-v1")
	liveRunner := e.store.NewRunner(live, eventstore.StreamAgents, filter)
	run(t, liveRunner)
	if err := liveRunner.Ready(ctxTimeout(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}

	// A mix: several tenants and agents, conditional and unconditional appends, a conflict, a repeat.
	versions := map[string]uint64{}
	var last eventstore.Event
	for i := range 60 {
		tenant := []string{"acme", "globex"}[i%2]
		agent := fmt.Sprintf("bot-%d", i%5)
		key := tenant + "/" + agent
		event := "updated"
		if versions[key] == 0 {
			event = "registered"
		}
		last = mustAppend(t, e.store, agentAppend(tenant, agent, event, versions[key], fmt.Sprint(i)))
		versions[key] = last.Sequence
		if i%7 == 0 {
			if _, err := e.store.Append(t.Context(), agentAppend(tenant, agent, "updated", 0, "lost")); !errors.Is(err, eventstore.ErrConflict) {
				t.Fatalf("conflicting append: %v", err)
			}
		}
		if i%11 == 0 {
			last = mustAppend(t, e.store, agentAppend(tenant, agent, "labelled", eventstore.AnyVersion, fmt.Sprint("label", i)))
			versions[key] = last.Sequence
		}
	}
	if err := liveRunner.WaitFor(ctxTimeout(t, 5*time.Second), last.Sequence); err != nil {
		t.Fatal(err)
	}

	rebuilt := newAgentList("agents-v1-rebuild")
	rebuiltRunner := e.store.NewRunner(rebuilt, eventstore.StreamAgents, filter)
	run(t, rebuiltRunner)
	if err := rebuiltRunner.Ready(ctxTimeout(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}

	liveState, liveSeqs := live.snapshot()
	rebuiltState, rebuiltSeqs := rebuilt.snapshot()
	if !reflect.DeepEqual(liveState, rebuiltState) || !slices.Equal(liveSeqs, rebuiltSeqs) {
		t.Fatalf("rebuilt projection differs from live one\nlive    %v\nrebuilt %v", liveState, rebuiltState)
	}
	if len(liveSeqs) != int(streamMsgs(t, e, eventstore.StreamAgents)) || !slices.IsSorted(liveSeqs) {
		t.Errorf("applied %d events (sorted: %v), stream holds %d", len(liveSeqs), slices.IsSorted(liveSeqs), streamMsgs(t, e, eventstore.StreamAgents))
	}
	for _, k := range slices.Sorted(maps.Keys(liveState)) {
		events, _, err := e.store.Load(t.Context(), k[:len(k)-len("/bot-0")], "agent", k[len(k)-len("bot-0"):])
		if err != nil {
			t.Fatal(err)
		}
		if len(events) != len(liveState[k]) {
			t.Errorf("%s: projection has %d events, Load %d", k, len(liveState[k]), len(events))
		}
	}
	if liveRunner.Position() != last.Sequence || rebuiltRunner.Position() != last.Sequence {
		t.Errorf("positions live %d rebuilt %d, want %d", liveRunner.Position(), rebuiltRunner.Position(), last.Sequence)
	}
}

func TestRunnerStartAfter(t *testing.T) {
	e := newEnv(t)
	var seqs []uint64
	for i := range 6 {
		seqs = append(seqs, mustAppend(t, e.store, agentAppend("acme", fmt.Sprint("a", i), "registered", 0, fmt.Sprint(i))).Sequence)
	}
	p := newAgentList("persistent-v1")
	r := e.store.NewRunner(p, eventstore.StreamAgents, nil, eventstore.StartAfter(seqs[3]))
	if r.Position() != seqs[3] {
		t.Fatalf("Position before Run = %d, want %d", r.Position(), seqs[3])
	}
	run(t, r)
	if err := r.Ready(ctxTimeout(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	_, applied := p.snapshot()
	if !slices.Equal(applied, seqs[4:]) {
		t.Errorf("applied %v, want %v", applied, seqs[4:])
	}
}

func TestRunnerWaitFor(t *testing.T) {
	e := newEnv(t)
	// Only registrations: most events on the stream do not match.
	p := newAgentList("registrations-v1")
	r := e.store.NewRunner(p, eventstore.StreamAgents, []string{"agentid.*.agent.*.registered"})

	reg := mustAppend(t, e.store, agentAppend("acme", "bot", "registered", 0, "r"))
	// WaitFor before Run blocks until Run applies the event.
	waited := make(chan error, 1)
	go func() { waited <- r.WaitFor(ctxTimeout(t, 5*time.Second), reg.Sequence) }()
	select {
	case err := <-waited:
		t.Fatalf("WaitFor returned before Run: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	run(t, r)
	if err := <-waited; err != nil {
		t.Fatal(err)
	}
	if got, _ := p.snapshot(); len(got["acme/bot"]) != 1 {
		t.Fatalf("after WaitFor: %v", got)
	}

	// Read-your-writes in a loop.
	version := reg.Sequence
	for i := range 20 {
		ev := mustAppend(t, e.store, agentAppend("acme", fmt.Sprint("b", i), "registered", 0, "r"))
		if err := r.WaitFor(ctxTimeout(t, 5*time.Second), ev.Sequence); err != nil {
			t.Fatal(err)
		}
		if got, _ := p.snapshot(); len(got[fmt.Sprint("acme/b", i)]) != 1 {
			t.Fatalf("event %d not visible after WaitFor", i)
		}
	}

	// A sequence outside the runner's filter is reached as well.
	upd := mustAppend(t, e.store, agentAppend("acme", "bot", "updated", version, "u"))
	if err := r.WaitFor(ctxTimeout(t, 5*time.Second), upd.Sequence); err != nil {
		t.Fatalf("WaitFor(non-matching %d): %v (position %d)", upd.Sequence, err, r.Position())
	}

	// A sequence the stream has not reached is refused at once, not waited for.
	ctx := ctxTimeout(t, 30*time.Second)
	if err := r.WaitFor(ctx, upd.Sequence+100); !errors.Is(err, eventstore.ErrBeyondLastSequence) || ctx.Err() != nil {
		t.Errorf("WaitFor(future) = %v (ctx %v), want ErrBeyondLastSequence before the deadline", err, ctx.Err())
	}
}

// TestRunnerWaitForSyncsOnceForAllWaiters: however many calls wait, one position sync runs at a
// time for all of them.
func TestRunnerWaitForSyncsOnceForAllWaiters(t *testing.T) {
	e := newEnv(t)
	for i := range 3 {
		mustAppend(t, e.store, agentAppend("acme", fmt.Sprint("w", i), "registered", 0, "r"))
	}
	// Not running: the waiters wait for events the runner has not applied.
	r := e.store.NewRunner(newAgentList("waiters-v1"), eventstore.StreamAgents, nil)
	var (
		mu               sync.Mutex
		started, running int
		maxRunning       int
	)
	release := make(chan struct{})
	eventstore.SetSyncHook(r, func() {
		mu.Lock()
		started++
		running++
		maxRunning = max(maxRunning, running)
		mu.Unlock()
		<-release // a sync in flight while the other waiters wait
		mu.Lock()
		running--
		mu.Unlock()
	})
	const waiters = 50
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	for range waiters {
		wg.Go(func() { _ = r.WaitFor(ctx, 3) })
	}
	waitUntil(t, 10*time.Second, "every waiter to wait", func() bool { return eventstore.Waiters(r) == waiters })
	syncs := func() int {
		mu.Lock()
		defer mu.Unlock()
		return started
	}
	const rounds = 5
	for i := 1; i <= rounds; i++ {
		waitUntil(t, 10*time.Second, fmt.Sprintf("sync %d to start", i), func() bool { return syncs() >= i })
		release <- struct{}{}
	}
	cancel()
	wg.Wait()
	close(release)
	mu.Lock()
	defer mu.Unlock()
	if maxRunning != 1 {
		t.Errorf("%d syncs ran at once, want 1", maxRunning)
	}
	if started > rounds+1 {
		t.Errorf("%d syncs started for %d rounds, want at most %d: the waiters do not share one sync", started, rounds, rounds+1)
	}
	if r.Position() != 0 {
		t.Errorf("Position = %d, want 0 (nothing applied)", r.Position())
	}
}

func TestRunnerReadyOnEmptyStream(t *testing.T) {
	e := newEnv(t)
	r := e.store.NewRunner(newAgentList("empty-v1"), eventstore.StreamPolicy, nil)
	run(t, r)
	if err := r.Ready(ctxTimeout(t, 2*time.Second)); err != nil {
		t.Fatal(err)
	}
	if r.Position() != 0 {
		t.Errorf("Position = %d, want 0", r.Position())
	}
}

func TestRunnerRecordsFailedEvents(t *testing.T) {
	e := newEnv(t)
	p := newAgentList("picky-v1")
	p.failOn = "poison"
	good1 := mustAppend(t, e.store, agentAppend("acme", "a", "registered", 0, "ok"))
	bad := mustAppend(t, e.store, agentAppend("acme", "b", "registered", 0, "poison"))
	good2 := mustAppend(t, e.store, agentAppend("acme", "c", "registered", 0, "ok"))

	r := e.store.NewRunner(p, eventstore.StreamAgents, nil)
	run(t, r)
	if err := r.WaitFor(ctxTimeout(t, 5*time.Second), good2.Sequence); err != nil {
		t.Fatal(err)
	}
	if _, applied := p.snapshot(); !slices.Equal(applied, []uint64{good1.Sequence, good2.Sequence}) {
		t.Errorf("applied %v, want %v", applied, []uint64{good1.Sequence, good2.Sequence})
	}
	failed, err := e.store.FailedEvents(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(failed) != 1 {
		t.Fatalf("failed events = %+v, want 1", failed)
	}
	f := failed[0]
	if f.Handler != "picky-v1" || f.Kind != eventstore.FailedByProjection || f.Stream != eventstore.StreamAgents ||
		f.Sequence != bad.Sequence || f.EventID != bad.ID || f.EventType != "agent.registered" ||
		f.Subject != "agentid.acme.agent.b.registered" || f.Error != `cannot apply "poison"` || f.Time.IsZero() {
		t.Errorf("failed event = %+v", f)
	}
	if err := e.store.ClearFailedEvent(t.Context(), f.Handler, f.Stream, f.Sequence); err != nil {
		t.Fatal(err)
	}
	if failed, err := e.store.FailedEvents(t.Context()); err != nil || len(failed) != 0 {
		t.Errorf("after clear: %+v, %v", failed, err)
	}
}

func TestRunnerMissingStream(t *testing.T) {
	e := newEnv(t)
	r := e.store.NewRunner(newAgentList("nowhere-v1"), "NO_SUCH_STREAM", nil)
	err := r.Run(ctxTimeout(t, 5*time.Second))
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatalf("Run = %v, want a stream-not-found error", err)
	}
}

// TestRunnersOfOneProjectionEachSeeEverything covers replicas: two runners of the same projection
// name (two processes of one service) must each receive every event, not split them.
func TestRunnersOfOneProjectionEachSeeEverything(t *testing.T) {
	e := newEnv(t)
	filter := []string{eventstore.AggregateTypeSubject("agent")}
	a, b := newAgentList("agents-v1"), newAgentList("agents-v1")
	ra := e.store.NewRunner(a, eventstore.StreamAgents, filter)
	rb := e.store.NewRunner(b, eventstore.StreamAgents, filter)
	run(t, ra)
	run(t, rb)
	var last eventstore.Event
	for i := range 20 {
		last = mustAppend(t, e.store, agentAppend("acme", fmt.Sprintf("bot-%d", i), "registered", 0, fmt.Sprint(i)))
	}
	for _, r := range []*eventstore.Runner{ra, rb} {
		if err := r.WaitFor(ctxTimeout(t, 5*time.Second), last.Sequence); err != nil {
			t.Fatal(err)
		}
	}
	sa, seqA := a.snapshot()
	sb, seqB := b.snapshot()
	if len(seqA) != 20 || len(seqB) != 20 || !reflect.DeepEqual(sa, sb) {
		t.Fatalf("replicas applied %d and %d of 20 events", len(seqA), len(seqB))
	}
}

// A runner's ordered consumer is removed by the server after OrderedInactiveThreshold once nobody
// reads it: no identity of the platform may delete a consumer, and with nats.go's five-minute
// default, stopped runners and closed subscriptions would fill a stream's consumer limit.
func TestRunnerConsumerHasTheInactiveThreshold(t *testing.T) {
	e := newEnv(t)
	mustAppend(t, e.store, agentAppend("acme", "bot", "registered", 0, "r"))
	r := e.store.NewRunner(newAgentList("idle-v1"), eventstore.StreamAgents, nil)
	run(t, r)
	if err := r.Ready(ctxTimeout(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	ctx := ctxTimeout(t, 5*time.Second)
	st, err := e.store.JetStream().Stream(ctx, eventstore.StreamAgents)
	if err != nil {
		t.Fatal(err)
	}
	found := 0
	for info := range st.ListConsumers(ctx).Info() {
		found++
		if got := info.Config.InactiveThreshold; got != eventstore.OrderedInactiveThreshold {
			t.Errorf("consumer %s: inactive threshold %v, want %v", info.Name, got, eventstore.OrderedInactiveThreshold)
		}
	}
	if found == 0 {
		t.Fatal("the running runner has no consumer on its stream")
	}
}

// The revocation feed of the verifier SDK, which does not import this package, keeps its consumer as
// long as the platform's readers keep theirs.
func TestOrderedInactiveThresholdIsTheVerifiers(t *testing.T) {
	if eventstore.OrderedInactiveThreshold != authn.OrderedInactiveThreshold {
		t.Fatalf("eventstore.OrderedInactiveThreshold = %v, authn.OrderedInactiveThreshold = %v: keep them equal",
			eventstore.OrderedInactiveThreshold, authn.OrderedInactiveThreshold)
	}
}
