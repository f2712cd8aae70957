package replay_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentid/agentid/pkg/testkit"

	"github.com/agentid/agentid/services/issuer/internal/replay"
)

// runLog starts l's Run until the test ends (or until the returned stop is called) and returns stop.
func runLog(t *testing.T, l *replay.Log) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = l.Run(ctx) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}

func TestLogUseOnceAcrossReplicas(t *testing.T) {
	n := testkit.StartNATS(t)
	ctx := t.Context()
	// Two logs on two connections, as two replicas would have.
	a := replay.NewLog(n.JetStream(t), replay.LogConfig{})
	b := replay.NewLog(n.JetStream(t), replay.LogConfig{})
	runLog(t, a)
	runLog(t, b)
	if err := a.Use(ctx, "acme", "c1", "jti-1"); err != nil {
		t.Fatal(err)
	}
	if err := b.Use(ctx, "acme", "c1", "jti-1"); !errors.Is(err, replay.ErrReplayed) {
		t.Fatalf("second use at the other replica = %v, want ErrReplayed", err)
	}
	if err := a.Use(ctx, "acme", "c1", "jti-1"); !errors.Is(err, replay.ErrReplayed) {
		t.Fatalf("second use at the same replica = %v, want ErrReplayed", err)
	}
	// The id is scoped to tenant and client.
	for _, scope := range [][2]string{{"beta", "c1"}, {"acme", "c2"}} {
		if err := b.Use(ctx, scope[0], scope[1], "jti-1"); err != nil {
			t.Fatalf("use in %v = %v", scope, err)
		}
	}
	if a.TTL() < 5*time.Minute+30*time.Second {
		t.Fatalf("TTL %s is shorter than the assertion lifetime plus leeway", a.TTL())
	}
}

func TestLogConcurrentUseAcceptsExactlyOne(t *testing.T) {
	n := testkit.StartNATS(t)
	logs := []*replay.Log{replay.NewLog(n.JetStream(t), replay.LogConfig{}), replay.NewLog(n.JetStream(t), replay.LogConfig{})}
	for _, l := range logs {
		runLog(t, l)
	}
	for round := range 5 {
		jti := fmt.Sprintf("same-jti-%d", round)
		var ok, replayed atomic.Int32
		var wg sync.WaitGroup
		for i := range 40 {
			wg.Go(func() {
				switch err := logs[i%2].Use(t.Context(), "acme", "c1", jti); {
				case err == nil:
					ok.Add(1)
				case errors.Is(err, replay.ErrReplayed):
					replayed.Add(1)
				default:
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if ok.Load() != 1 || replayed.Load() != 39 {
			t.Fatalf("round %d: %d accepted, %d replayed; want exactly 1 and 39", round, ok.Load(), replayed.Load())
		}
	}
}

// Requests queued while no record is being stored go out together: one record, one fsync.
func TestLogBatchesConcurrentRequests(t *testing.T) {
	n := testkit.StartNATS(t)
	l := replay.NewLog(n.JetStream(t), replay.LogConfig{MaxBatch: 256})
	const ids = 200
	errs := make(chan error, ids+1)
	for i := range ids {
		go func() { errs <- l.Use(t.Context(), "acme", "c1", fmt.Sprintf("jti-%d", i)) }()
	}
	// The same id twice in one batch: recorded once, the second refused.
	go func() { errs <- l.Use(t.Context(), "acme", "c1", "jti-0") }()
	testkit.Eventually(t, 0, "every request queued", func() (bool, error) { return l.Stats().Queued == ids+1, nil })
	runLog(t, l)
	var ok, replayed int
	for range ids + 1 {
		switch err := <-errs; {
		case err == nil:
			ok++
		case errors.Is(err, replay.ErrReplayed):
			replayed++
		default:
			t.Fatal(err)
		}
	}
	if ok != ids || replayed != 1 {
		t.Fatalf("%d accepted, %d replayed; want %d and 1", ok, replayed, ids)
	}
	// 201 requests, at most 256 per record: one record, the repeated id in it once.
	if st := l.Stats(); st.Records != 1 || st.IDs != ids {
		t.Fatalf("stats %+v: want 1 record holding %d ids", st, ids)
	}
	// Beyond MaxBatch, the queue is split into records of MaxBatch.
	small := replay.NewLog(n.JetStream(t), replay.LogConfig{MaxBatch: 64})
	for i := range ids {
		go func() { errs <- small.Use(t.Context(), "beta", "c1", fmt.Sprintf("jti-%d", i)) }()
	}
	testkit.Eventually(t, 0, "every request queued", func() (bool, error) { return small.Stats().Queued == ids, nil })
	runLog(t, small)
	for range ids {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if st := small.Stats(); st.Records != 4 || st.IDs != ids {
		t.Fatalf("stats %+v: want 4 records (64, 64, 64, 8) holding %d ids", st, ids)
	}
}

// A replica that starts reads the records of the others: it refuses an id used before it started
// (whether or not its reader has caught up, the id's first record is earlier than its own).
func TestLogRestartRemembers(t *testing.T) {
	n := testkit.StartNATS(t)
	a := replay.NewLog(n.JetStream(t), replay.LogConfig{})
	stop := runLog(t, a)
	for i := range 50 {
		if err := a.Use(t.Context(), "acme", "c1", fmt.Sprintf("jti-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	stop()
	b := replay.NewLog(n.JetStream(t), replay.LogConfig{})
	runLog(t, b)
	if err := b.Use(t.Context(), "acme", "c1", "jti-49"); !errors.Is(err, replay.ErrReplayed) {
		t.Fatalf("use after restart = %v, want ErrReplayed", err)
	}
	if err := b.Use(t.Context(), "acme", "c1", "jti-new"); err != nil {
		t.Fatalf("a new id after restart: %v", err)
	}
	if st := b.Stats(); st.Entries != 51 {
		t.Fatalf("the restarted replica holds %d ids, want 51", st.Entries)
	}
	// And a server restart loses nothing either (file storage).
	n.Restart(t)
	c := replay.NewLog(n.JetStream(t), replay.LogConfig{})
	runLog(t, c)
	if err := c.Use(t.Context(), "acme", "c1", "jti-new"); !errors.Is(err, replay.ErrReplayed) {
		t.Fatalf("use after the NATS restart = %v, want ErrReplayed", err)
	}
}

// Without NATS nothing is accepted: Use fails (closed) within its wait, and recovers after.
func TestLogFailsClosedWithoutNATS(t *testing.T) {
	n := testkit.StartNATS(t)
	l := replay.NewLog(n.JetStream(t), replay.LogConfig{WaitTimeout: 500 * time.Millisecond})
	runLog(t, l)
	if err := l.Use(t.Context(), "acme", "c1", "before"); err != nil {
		t.Fatal(err)
	}
	n.Shutdown()
	err := l.Use(t.Context(), "acme", "c1", "during")
	if err == nil || errors.Is(err, replay.ErrReplayed) {
		t.Fatalf("use without NATS = %v, want an error that is not ErrReplayed", err)
	}
	n.Start(t)
	attempt := 0
	testkit.Eventually(t, 0, "a use after NATS restarted", func() (bool, error) {
		attempt++ // a new id each time: a failed attempt may have spent its id
		err := l.Use(t.Context(), "acme", "c1", fmt.Sprintf("after-%d", attempt))
		return err == nil, nil
	})
	if err := l.Use(t.Context(), "acme", "c1", "before"); !errors.Is(err, replay.ErrReplayed) {
		t.Fatalf("the id used before the outage = %v, want ErrReplayed", err)
	}
}

// A request cancelled while queued is not recorded: its id stays usable.
func TestLogCancelledWhileQueuedIsNotRecorded(t *testing.T) {
	n := testkit.StartNATS(t)
	l := replay.NewLog(n.JetStream(t), replay.LogConfig{})
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	if err := l.Use(ctx, "acme", "c1", "jti-1"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("use with no committer = %v, want the deadline", err)
	}
	if st := l.Stats(); st.Queued != 0 {
		t.Fatalf("%d requests left queued", st.Queued)
	}
	runLog(t, l)
	if err := l.Use(t.Context(), "acme", "c1", "jti-1"); err != nil {
		t.Fatalf("the cancelled id: %v, want it usable", err)
	}
}

// Records that are not the log's format are skipped and counted, and the log goes on.
func TestLogSkipsRecordsItDoesNotUnderstand(t *testing.T) {
	n := testkit.StartNATS(t)
	l := replay.NewLog(n.JetStream(t), replay.LogConfig{})
	if err := l.Ensure(t.Context()); err != nil {
		t.Fatal(err)
	}
	js := n.JetStream(t)
	for _, data := range [][]byte{nil, {9}, {1, 2, 3}, append([]byte{1}, make([]byte, 8+25)...)} {
		if _, err := js.Publish(t.Context(), replay.LogSubject, data); err != nil {
			t.Fatal(err)
		}
	}
	runLog(t, l)
	if err := l.Use(t.Context(), "acme", "c1", "jti-1"); err != nil {
		t.Fatal(err)
	}
	if st := l.Stats(); st.BadRecords != 4 || st.Entries != 1 {
		t.Fatalf("stats %+v: want 4 bad records and 1 entry", st)
	}
}

func TestLogForgetsExpiredIDs(t *testing.T) {
	n := testkit.StartNATS(t)
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	clock := func() time.Time { return time.Unix(0, now.Load()) }
	l := replay.NewLog(n.JetStream(t), replay.LogConfig{Config: replay.Config{SkewMargin: -1}, Now: clock})
	runLog(t, l)
	until := clock().Add(3 * time.Second)
	if err := l.UseUntil(t.Context(), "acme", "c1", "short", until); err != nil {
		t.Fatal(err)
	}
	if err := l.Use(t.Context(), "acme", "c1", "long"); err != nil {
		t.Fatal(err)
	}
	if err := l.UseUntil(t.Context(), "acme", "c1", "short", until); !errors.Is(err, replay.ErrReplayed) {
		t.Fatalf("reuse before expiry = %v, want ErrReplayed", err)
	}
	if err := l.UseUntil(t.Context(), "acme", "c1", "stale", clock().Add(-time.Second)); err == nil || errors.Is(err, replay.ErrReplayed) {
		t.Fatalf("an id already past its time = %v, want an error", err)
	}
	now.Add(int64(5 * time.Second))
	l.Prune()
	if st := l.Stats(); st.Entries != 1 {
		t.Fatalf("%d ids held after the short one expired, want 1", st.Entries)
	}
	if err := l.Use(t.Context(), "acme", "c1", "long"); !errors.Is(err, replay.ErrReplayed) {
		t.Fatalf("reuse of the unexpired id = %v, want ErrReplayed", err)
	}
}

func TestLogBoundsItsMemory(t *testing.T) {
	n := testkit.StartNATS(t)
	l := replay.NewLog(n.JetStream(t), replay.LogConfig{MaxEntries: 3})
	runLog(t, l)
	for i := range 3 {
		if err := l.Use(t.Context(), "acme", "c1", fmt.Sprintf("jti-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Use(t.Context(), "acme", "c1", "jti-3"); !errors.Is(err, replay.ErrLogFull) {
		t.Fatalf("use beyond MaxEntries = %v, want ErrLogFull", err)
	}
	if err := l.Use(t.Context(), "acme", "c1", "jti-0"); !errors.Is(err, replay.ErrReplayed) {
		t.Fatalf("a known id when full = %v, want ErrReplayed", err)
	}
}

// The chain meets replicas of earlier releases in the bucket and replicas on the log alone in the log.
func TestChainMeetsBucketAndLog(t *testing.T) {
	n := testkit.StartNATS(t)
	bucket := replay.New(n.JetStream(t), replay.Config{})
	log := replay.NewLog(n.JetStream(t), replay.LogConfig{})
	chain := replay.Chain{Bucket: replay.New(n.JetStream(t), replay.Config{}), Log: replay.NewLog(n.JetStream(t), replay.LogConfig{})}
	runLog(t, log)
	runLog(t, chain.Log)
	if err := chain.Ensure(t.Context()); err != nil {
		t.Fatal(err)
	}
	until := time.Now().Add(time.Minute)
	if err := bucket.UseUntil(t.Context(), "acme", "c1", "old", until); err != nil {
		t.Fatal(err)
	}
	if err := chain.UseUntil(t.Context(), "acme", "c1", "old", until); !errors.Is(err, replay.ErrReplayed) {
		t.Fatalf("an id used at a bucket-only replica = %v, want ErrReplayed", err)
	}
	if err := log.UseUntil(t.Context(), "acme", "c1", "new", until); err != nil {
		t.Fatal(err)
	}
	if err := chain.UseUntil(t.Context(), "acme", "c1", "new", until); !errors.Is(err, replay.ErrReplayed) {
		t.Fatalf("an id used at a log-only replica = %v, want ErrReplayed", err)
	}
	if err := chain.Use(t.Context(), "acme", "c1", "both"); err != nil {
		t.Fatal(err)
	}
	if err := bucket.Use(t.Context(), "acme", "c1", "both"); !errors.Is(err, replay.ErrReplayed) {
		t.Fatalf("a chained id at a bucket-only replica = %v, want ErrReplayed", err)
	}
	if err := log.Use(t.Context(), "acme", "c1", "both"); !errors.Is(err, replay.ErrReplayed) {
		t.Fatalf("a chained id at a log-only replica = %v, want ErrReplayed", err)
	}
}

// The stream keeps records as long as an id can be usable, and nothing may delete them.
func TestLogStreamConfiguration(t *testing.T) {
	n := testkit.StartNATS(t)
	l := replay.NewLog(n.JetStream(t), replay.LogConfig{})
	if err := l.Ensure(t.Context()); err != nil {
		t.Fatal(err)
	}
	st, err := n.JetStream(t).Stream(t.Context(), replay.LogStream)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	if cfg.MaxAge < l.TTL() || !cfg.DenyDelete || !cfg.DenyPurge || cfg.Storage != jetstream.FileStorage {
		t.Fatalf("stream config max_age %s deny_delete %v deny_purge %v storage %v", cfg.MaxAge, cfg.DenyDelete, cfg.DenyPurge, cfg.Storage)
	}
}

// A stream that lost records or was recreated under a running replica: the replica never accepts an
// id the new stream holds, and reads the log again from its start.
func TestLogReadsAgainWhenTheStreamIsRecreated(t *testing.T) {
	n := testkit.StartNATS(t)
	a := replay.NewLog(n.JetStream(t), replay.LogConfig{})
	runLog(t, a)
	for i := range 5 {
		if err := a.Use(t.Context(), "acme", "c1", fmt.Sprintf("old-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	// An operator deletes and recreates the stream; another replica records "x" and "y" in it, at
	// sequences 1 and 2, below the 5 records the first replica has read.
	if err := n.JetStream(t).DeleteStream(t.Context(), replay.LogStream); err != nil {
		t.Fatal(err)
	}
	b := replay.NewLog(n.JetStream(t), replay.LogConfig{})
	runLog(t, b)
	for _, id := range []string{"x", "y"} {
		if err := b.Use(t.Context(), "acme", "c1", id); err != nil {
			t.Fatal(err)
		}
	}
	// Whether the first replica noticed the new stream already or finds another record at its
	// append's sequence, it must not accept "x".
	if err := a.Use(t.Context(), "acme", "c1", "x"); err == nil {
		t.Fatal("the first replica accepted an id the recreated stream holds")
	}
	testkit.Eventually(t, 0, "the first replica to read the log again", func() (bool, error) { return a.Stats().Rebuilds >= 1, nil })
	testkit.Eventually(t, 0, "the first replica to refuse x as replayed", func() (bool, error) {
		return errors.Is(a.Use(t.Context(), "acme", "c1", "x"), replay.ErrReplayed), nil
	})
	attempt := 0
	testkit.Eventually(t, 0, "a new id accepted after the read", func() (bool, error) {
		attempt++
		return a.Use(t.Context(), "acme", "c1", fmt.Sprintf("fresh-%d", attempt)) == nil, nil
	})
}

// Once Run has returned, Use fails at once instead of waiting for a committer.
func TestLogRefusesAtOnceAfterStop(t *testing.T) {
	n := testkit.StartNATS(t)
	l := replay.NewLog(n.JetStream(t), replay.LogConfig{WaitTimeout: time.Minute})
	stop := runLog(t, l)
	if err := l.Use(t.Context(), "acme", "c1", "a"); err != nil {
		t.Fatal(err)
	}
	stop()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := l.Use(ctx, "acme", "c1", "b"); err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("use after stop = %v, want an immediate refusal", err)
	}
}

// Ready returns once the records written before the replica started are read.
func TestLogReadyAfterReadingTheStream(t *testing.T) {
	n := testkit.StartNATS(t)
	a := replay.NewLog(n.JetStream(t), replay.LogConfig{})
	stop := runLog(t, a)
	for i := range 20 {
		if err := a.Use(t.Context(), "acme", "c1", fmt.Sprintf("jti-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	stop()
	b := replay.NewLog(n.JetStream(t), replay.LogConfig{})
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if err := b.Ready(ctx); err == nil {
		t.Fatal("Ready before Run returned nil")
	}
	runLog(t, b)
	if err := b.Ready(t.Context()); err != nil {
		t.Fatal(err)
	}
	if st := b.Stats(); st.Entries != 20 || st.Applied < 20 {
		t.Fatalf("stats when ready %+v: want the 20 ids read", st)
	}
}
