package eventstore_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/testkit"
)

// clusterEnv is a 3-node JetStream cluster with the streams at R3 and a store on each server.
type clusterEnv struct {
	c *testkit.NATSCluster
	// store is connected to all servers and fails over between them.
	store *eventstore.Store
	// on[i] is connected to server i (until it goes away).
	on []*eventstore.Store
}

// testLogger logs warnings and errors to t, where they show when the test fails or runs with -v.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func newClusterEnv(t *testing.T) *clusterEnv {
	t.Helper()
	c := testkit.StartNATSCluster(t, 3)
	e := &clusterEnv{c: c, store: eventstore.New(c.JetStream(t), clusterStoreOptions(t)...)}
	for i := range c.Size() {
		e.on = append(e.on, e.storeOn(t, i))
	}
	if err := e.store.EnsureStreams(ctxTimeout(t, 20*time.Second)); err != nil {
		t.Fatal(err)
	}
	c.WaitReady(t) // every replica of every stream current
	return e
}

func clusterStoreOptions(t *testing.T) []eventstore.Option {
	return []eventstore.Option{eventstore.WithReplicas(3), eventstore.WithSource("agentid/test"), eventstore.WithLogger(testLogger(t))}
}

// storeOn returns a store on a new connection to server i. Its direct gets (Load) are answered by
// that server's replica of the stream.
func (e *clusterEnv) storeOn(t *testing.T, i int) *eventstore.Store {
	t.Helper()
	return eventstore.New(e.c.Node(i).JetStream(t), clusterStoreOptions(t)...)
}

// follower returns a server that leads neither stream nor the meta group if there is one, else one
// that does not lead stream.
func (e *clusterEnv) follower(t *testing.T, stream string) int {
	t.Helper()
	leader, meta := e.c.StreamLeader(stream), e.c.MetaLeader()
	if leader < 0 {
		t.Fatalf("stream %s has no leader", stream)
	}
	pick := -1
	for i := range e.c.Size() {
		if i == leader {
			continue
		}
		if i != meta {
			return i
		}
		pick = i
	}
	return pick
}

// waitLoad loads an aggregate until it reports at least version want, for reads through a replica
// that may be a moment behind the leader (documented for Load).
func waitLoad(t *testing.T, s *eventstore.Store, tenant, id string, want uint64) []eventstore.Event {
	t.Helper()
	deadline := time.Now().Add(testkit.DefaultWait)
	for {
		// A request lost with a failing connection must not use up the whole wait.
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		events, version, err := s.Load(ctx, tenant, "agent", id)
		cancel()
		if err == nil && version >= want {
			return events
		}
		if time.Now().After(deadline) {
			t.Fatalf("Load(%s/%s): version %d, err %v; want version %d", tenant, id, version, err, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkEvents fails unless events are exactly the events want, in order.
func checkEvents(t *testing.T, events, want []eventstore.Event) {
	t.Helper()
	got := make([]string, len(events))
	for i, ev := range events {
		got[i] = fmt.Sprintf("%d:%s", ev.Sequence, ev.ID)
	}
	exp := make([]string, len(want))
	for i, ev := range want {
		exp[i] = fmt.Sprintf("%d:%s", ev.Sequence, ev.ID)
	}
	if !slices.Equal(got, exp) {
		t.Fatalf("events (seq:id) = %v, want %v", got, exp)
	}
}

func TestClusterStore(t *testing.T) {
	e := newClusterEnv(t)

	t.Run("streams replicated", func(t *testing.T) {
		for _, cfg := range e.store.Streams() {
			st, err := e.store.JetStream().Stream(t.Context(), cfg.Name)
			if err != nil {
				t.Fatal(err)
			}
			info := st.CachedInfo()
			if info.Config.Replicas != 3 || info.Cluster == nil || info.Cluster.Leader == "" || len(info.Cluster.Replicas) != 2 {
				t.Errorf("%s: replicas %d, cluster %+v; want R3 with a leader and 2 replicas", cfg.Name, info.Config.Replicas, info.Cluster)
			}
		}
	})

	t.Run("replicas never lowered", func(t *testing.T) {
		// A process started without --stream-replicas (R1) against the R3 streams.
		r1 := eventstore.New(e.c.JetStream(t), eventstore.WithReplicas(1), eventstore.WithLogger(testLogger(t)))
		err := r1.EnsureStreams(ctxTimeout(t, 20*time.Second))
		var we *eventstore.WeakerConfigError
		if !errors.As(err, &we) || we.Setting != "replicas" || we.Existing != "3" || we.Requested != "1" || we.Flag != "--stream-replicas" {
			t.Fatalf("EnsureStreams(R1) = %v, want a refusal to lower replicas from 3 to 1", err)
		}
		for _, part := range []string{we.Stream, "replicas", "3", "1", "--stream-replicas"} {
			if !strings.Contains(err.Error(), part) {
				t.Errorf("error %q does not name %q", err, part)
			}
		}
		for _, name := range append(streamNames(e.store), "KV_"+eventstore.FailedEventsBucket) {
			st, err := e.store.JetStream().Stream(t.Context(), name)
			if err != nil {
				t.Fatal(err)
			}
			if got := st.CachedInfo().Config.Replicas; got != 3 {
				t.Errorf("%s: replicas %d after the refused EnsureStreams, want 3", name, got)
			}
		}
		if err := e.store.EnsureStreams(ctxTimeout(t, 20*time.Second)); err != nil { // R3 again: accepted
			t.Errorf("EnsureStreams(R3) = %v", err)
		}
	})

	t.Run("concurrent conflicting appends", func(t *testing.T) {
		const writers = 12
		const rounds = 8
		var (
			version uint64
			won     []eventstore.Event
		)
		for round := range rounds {
			var (
				wg        sync.WaitGroup
				mu        sync.Mutex
				winners   []eventstore.Event
				conflicts []*eventstore.ConflictError
				others    []error
			)
			start := make(chan struct{})
			for w := range writers {
				s := e.on[w%len(e.on)] // through every server, leader and followers
				a := agentAppend("acme", "contested", "updated", version, fmt.Sprint(round, "/", w))
				wg.Go(func() {
					<-start
					ev, err := s.Append(t.Context(), a)
					mu.Lock()
					defer mu.Unlock()
					var ce *eventstore.ConflictError
					switch {
					case err == nil:
						winners = append(winners, ev)
					case errors.As(err, &ce) && errors.Is(err, eventstore.ErrConflict):
						conflicts = append(conflicts, ce)
					default:
						others = append(others, err)
					}
				})
			}
			close(start)
			wg.Wait()
			if len(winners) != 1 || len(conflicts) != writers-1 || len(others) != 0 {
				t.Fatalf("round %d: %d winners, %d conflicts, other errors %v; want 1, %d, none", round, len(winners), len(conflicts), others, writers-1)
			}
			win := winners[0]
			if win.ExpectedVersion != version || win.Sequence <= version {
				t.Fatalf("round %d: winner at %d expected %d, want expected %d", round, win.Sequence, win.ExpectedVersion, version)
			}
			for _, ce := range conflicts {
				if ce.Expected != version || ce.Actual != win.Sequence || ce.Aggregate != eventstore.AggregateSubject("acme", "agent", "contested") {
					t.Errorf("round %d: conflict %+v, want expected %d actual %d (the winner)", round, *ce, version, win.Sequence)
				}
			}
			version = win.Sequence
			won = append(won, win)
		}
		for i, s := range e.on {
			t.Run(fmt.Sprint("load via server ", i), func(t *testing.T) {
				checkEvents(t, waitLoad(t, s, "acme", "contested", version), won)
			})
		}
	})

	t.Run("idempotent appends", func(t *testing.T) {
		tests := []struct {
			name string
			// moveOn appends another event to the aggregate before the repeat.
			moveOn bool
			// repeat returns the repeated append given the original and the aggregate's current version.
			repeat func(orig eventstore.Append, current uint64) eventstore.Append
		}{
			{"same expected version", false, func(o eventstore.Append, _ uint64) eventstore.Append { return o }},
			{"any version", false, func(o eventstore.Append, _ uint64) eventstore.Append {
				o.ExpectedVersion = eventstore.AnyVersion
				return o
			}},
			{"re-read version", true, func(o eventstore.Append, cur uint64) eventstore.Append {
				o.ExpectedVersion = cur
				return o
			}},
			{"stale version after another event", true, func(o eventstore.Append, _ uint64) eventstore.Append { return o }},
		}
		for i, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				agent := fmt.Sprint("idem", i)
				orig := agentAppend("acme", agent, "registered", 0, "first")
				first := mustAppend(t, e.on[i%len(e.on)], orig)
				want := []eventstore.Event{first}
				current := first.Sequence
				if tt.moveOn {
					next := mustAppend(t, e.store, agentAppend("acme", agent, "updated", current, "second"))
					current, want = next.Sequence, append(want, next)
				}
				again := tt.repeat(orig, current)
				again.Data = wrapperspb.String("retried payload")
				// The repeat goes through every server: each must resolve it to the original.
				for j, s := range e.on {
					got, err := s.Append(t.Context(), again)
					if err != nil {
						t.Fatalf("repeat via server %d: %v", j, err)
					}
					if got.ID != first.ID || got.Sequence != first.Sequence || stringValue(t, got) != "first" {
						t.Errorf("repeat via server %d returned %s/%d %q, want original %s/%d \"first\"", j, got.ID, got.Sequence, stringValue(t, got), first.ID, first.Sequence)
					}
				}
				checkEvents(t, waitLoad(t, e.store, "acme", agent, current), want)
			})
		}

		t.Run("concurrent repeats", func(t *testing.T) {
			const n = 9
			orig := agentAppend("acme", "idem-concurrent", "registered", 0, "first")
			var (
				wg   sync.WaitGroup
				mu   sync.Mutex
				got  []eventstore.Event
				errs []error
			)
			start := make(chan struct{})
			for i := range n {
				s := e.on[i%len(e.on)]
				wg.Go(func() {
					<-start
					ev, err := s.Append(t.Context(), orig)
					mu.Lock()
					defer mu.Unlock()
					if err != nil {
						errs = append(errs, err)
						return
					}
					got = append(got, ev)
				})
			}
			close(start)
			wg.Wait()
			if len(errs) != 0 {
				t.Fatalf("concurrent repeats: %d errors: %v", len(errs), errs)
			}
			for _, ev := range got[1:] {
				if ev.ID != got[0].ID || ev.Sequence != got[0].Sequence {
					t.Fatalf("concurrent repeats returned %s/%d and %s/%d, want one event", got[0].ID, got[0].Sequence, ev.ID, ev.Sequence)
				}
			}
			checkEvents(t, waitLoad(t, e.store, "acme", "idem-concurrent", got[0].Sequence), got[:1])
		})

		t.Run("key reused for another event of the aggregate", func(t *testing.T) {
			orig := agentAppend("acme", "keyholder", "registered", 0, "v")
			first := mustAppend(t, e.store, orig)
			other := agentAppend("acme", "keyholder", "suspended", eventstore.AnyVersion, "v")
			other.IdempotencyKey = orig.IdempotencyKey
			for j, s := range e.on {
				if _, err := s.Append(t.Context(), other); !errors.Is(err, eventstore.ErrIdempotencyKeyReused) {
					t.Errorf("via server %d: err = %v, want ErrIdempotencyKeyReused", j, err)
				}
			}
			checkEvents(t, waitLoad(t, e.store, "acme", "keyholder", first.Sequence), []eventstore.Event{first})
		})
		t.Run("same key on another aggregate is another command", func(t *testing.T) {
			orig := agentAppend("acme", "holder", "registered", 0, "v")
			first := mustAppend(t, e.store, orig)
			stranger := agentAppend("acme", "stranger", "registered", 0, "v")
			stranger.IdempotencyKey = orig.IdempotencyKey
			got := mustAppend(t, e.on[1%len(e.on)], stranger)
			if got.Sequence == first.Sequence || got.AggregateID != "stranger" {
				t.Fatalf("stranger got %s/%d, want an event of its own", got.AggregateID, got.Sequence)
			}
			checkEvents(t, waitLoad(t, e.store, "acme", "stranger", got.Sequence), []eventstore.Event{got})
		})
	})

	t.Run("load in order", func(t *testing.T) {
		var (
			want    []eventstore.Event
			version uint64
		)
		for i := range 30 {
			ev := mustAppend(t, e.on[i%len(e.on)], agentAppend("acme", "ordered", "updated", version, fmt.Sprint(i)))
			version, want = ev.Sequence, append(want, ev)
			// Interleave another aggregate so that the versions are not consecutive.
			mustAppend(t, e.store, agentAppend("acme", "ordered-neighbour", "updated", eventstore.AnyVersion, "n"))
		}
		for i, s := range e.on {
			t.Run(fmt.Sprint("via server ", i), func(t *testing.T) {
				events := waitLoad(t, s, "acme", "ordered", version)
				checkEvents(t, events, want)
				for j, ev := range events {
					if got := stringValue(t, ev); got != fmt.Sprint(j) {
						t.Errorf("event %d value = %q, want %q", j, got, fmt.Sprint(j))
					}
				}
			})
		}
	})

	t.Run("runner on a follower", func(t *testing.T) {
		f := e.follower(t, eventstore.StreamAgents)
		before, err := e.store.JetStream().Stream(t.Context(), eventstore.StreamAgents)
		if err != nil {
			t.Fatal(err)
		}
		p := newAgentList("cluster-registrations-v1")
		r := e.on[f].NewRunner(p, eventstore.StreamAgents, []string{"agentid.*.agent.*.registered"})
		run(t, r)
		if err := r.Ready(ctxTimeout(t, 10*time.Second)); err != nil {
			t.Fatal(err)
		}
		if pos := r.Position(); pos < before.CachedInfo().State.LastSeq {
			t.Fatalf("ready at position %d, stream was at %d", pos, before.CachedInfo().State.LastSeq)
		}
		for i := range 10 {
			// Written through the stream leader and the other servers; read on the follower.
			ev := mustAppend(t, e.on[i%len(e.on)], agentAppend("tenant2", fmt.Sprint("r", i), "registered", 0, "r"))
			if err := r.WaitFor(ctxTimeout(t, 10*time.Second), ev.Sequence); err != nil {
				t.Fatal(err)
			}
			if got, _ := p.snapshot(); len(got[fmt.Sprint("tenant2/r", i)]) != 1 {
				t.Fatalf("event %d (seq %d) not applied after WaitFor on server %d", i, ev.Sequence, f)
			}
		}
		// A sequence outside the runner's filter is reached as well.
		upd := mustAppend(t, e.store, agentAppend("tenant2", "r0", "updated", eventstore.AnyVersion, "u"))
		if err := r.WaitFor(ctxTimeout(t, 10*time.Second), upd.Sequence); err != nil {
			t.Fatalf("WaitFor(non-matching %d): %v (position %d)", upd.Sequence, err, r.Position())
		}
		// One not written yet is refused at once.
		ctx := ctxTimeout(t, 30*time.Second)
		if err := r.WaitFor(ctx, upd.Sequence+100); !errors.Is(err, eventstore.ErrBeyondLastSequence) || ctx.Err() != nil {
			t.Errorf("WaitFor(future) = %v (ctx %v), want ErrBeyondLastSequence before the deadline", err, ctx.Err())
		}
	})
}

func streamNames(s *eventstore.Store) []string {
	var names []string
	for _, cfg := range s.Streams() {
		names = append(names, cfg.Name)
	}
	return names
}

// appendUntil appends a, repeating it with the same idempotency key while the cluster cannot take
// it (no leader, a server going away), as a client retries a command; it fails the test on a
// conflict or when the cluster has not taken it by the deadline.
func appendUntil(t *testing.T, s *eventstore.Store, a eventstore.Append, deadline time.Time) eventstore.Event {
	t.Helper()
	for {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		ev, err := s.Append(ctx, a)
		cancel()
		if err == nil {
			return ev
		}
		if errors.Is(err, eventstore.ErrConflict) || errors.Is(err, eventstore.ErrInvalid) || errors.Is(err, eventstore.ErrIdempotencyKeyReused) {
			t.Fatalf("Append(%s/%s): %v", a.AggregateID, a.Type, err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("Append(%s/%s) not taken in time: %v", a.AggregateID, a.Type, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// leaderFailover bounds how long the cluster may take to elect a new stream leader and take
// appends again (nats-server's raft election timeout is 4-9 s).
const leaderFailover = 20 * time.Second

func TestClusterSurvivesNodeLoss(t *testing.T) {
	e := newClusterEnv(t)
	// The runner's client is connected to the stream leader, which goes away below: it has to
	// fail over to another server.
	p := newAgentList("cluster-failover-v1")
	r := e.on[e.c.StreamLeader(eventstore.StreamAgents)].NewRunner(p, eventstore.StreamAgents, nil)
	run(t, r)

	var (
		acked   []eventstore.Event
		version uint64
	)
	appendSome := func(t *testing.T, n int, deadline time.Time) {
		t.Helper()
		for range n {
			a := agentAppend("acme", "survivor", "updated", version, fmt.Sprint(len(acked)))
			if version == 0 {
				a.Type = "agent.registered"
			}
			ev := appendUntil(t, e.store, a, deadline)
			acked, version = append(acked, ev), ev.Sequence
		}
	}
	checkAll := func(t *testing.T, s *eventstore.Store) {
		t.Helper()
		checkEvents(t, waitLoad(t, s, "acme", "survivor", version), acked)
	}
	appendSome(t, 5, time.Now().Add(testkit.DefaultWait))

	// A follower goes away: the leader keeps its quorum.
	f := e.follower(t, eventstore.StreamAgents)
	e.c.StopNode(t, f)
	appendSome(t, 5, time.Now().Add(leaderFailover))
	checkAll(t, e.store)
	e.c.RestartNode(t, f)
	checkAll(t, e.storeOn(t, f)) // the restarted follower caught up

	// The stream leader goes away: appends wait for a new leader.
	l := e.c.StreamLeader(eventstore.StreamAgents)
	if l < 0 {
		t.Fatal("no stream leader")
	}
	e.c.StopNode(t, l)
	stopped := time.Now()
	appendSome(t, 5, stopped.Add(leaderFailover))
	t.Logf("appends resumed %s after the stream leader stopped", time.Since(stopped).Round(time.Millisecond))
	if nl := e.c.StreamLeader(eventstore.StreamAgents); nl == l || nl < 0 {
		t.Errorf("stream leader after failover = %d, want one of the others than %d", nl, l)
	}
	checkAll(t, e.store)
	e.c.RestartNode(t, l)
	appendSome(t, 2, time.Now().Add(testkit.DefaultWait))

	// Nothing acknowledged was lost, on any server, and the runner followed throughout.
	for i := range e.c.Size() {
		t.Run(fmt.Sprint("load via server ", i), func(t *testing.T) { checkAll(t, e.storeOn(t, i)) })
	}
	if err := r.WaitFor(ctxTimeout(t, leaderFailover), version); err != nil {
		t.Fatal(err)
	}
	wantSeqs := make([]uint64, len(acked))
	for i, ev := range acked {
		wantSeqs[i] = ev.Sequence
	}
	if _, applied := p.snapshot(); !slices.Equal(applied, wantSeqs) {
		t.Errorf("runner applied sequences %v, want %v", applied, wantSeqs)
	}
	st, err := e.store.JetStream().Stream(t.Context(), eventstore.StreamAgents)
	if err != nil {
		t.Fatal(err)
	}
	if msgs := st.CachedInfo().State.Msgs; msgs != uint64(len(acked)) {
		t.Errorf("stream holds %d messages, want the %d acknowledged", msgs, len(acked))
	}
	if _, err := e.store.Append(t.Context(), agentAppend("acme", "survivor", "updated", acked[0].Sequence, "stale")); !errors.Is(err, eventstore.ErrConflict) {
		t.Errorf("stale append after failover: err = %v, want ErrConflict", err)
	}
}
