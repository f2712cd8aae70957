package eventstore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/testkit"
)

// objectNames lists the live objects of the checkpoint bucket, sorted.
func objectNames(t *testing.T, js jetstream.JetStream) []string {
	t.Helper()
	obs, err := js.ObjectStore(t.Context(), eventstore.CheckpointBucket)
	if err != nil {
		t.Fatal(err)
	}
	infos, err := obs.List(t.Context())
	if errors.Is(err, jetstream.ErrNoObjectsFound) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, info := range infos {
		names = append(names, info.Name)
	}
	slices.Sort(names)
	return names
}

// bucketConfig is the configuration of the checkpoint bucket's stream.
func bucketConfig(t *testing.T, js jetstream.JetStream) jetstream.StreamConfig {
	t.Helper()
	st, err := js.Stream(t.Context(), "OBJ_"+eventstore.CheckpointBucket)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return info.Config
}

func readAll(t *testing.T, rc io.ReadCloser, err error) []byte {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Replicas writing checkpoints of one projection at the same time each write their own object,
// <projection>@<replica>, so that no object has two writers (whose replacements leak chunks and
// purge those a reader reads): after concurrent rounds the bucket holds one object per replica and
// no more bytes than they take; Get reads the newest, Checkpoints lists both newest first.
func TestObjectCheckpointsOnePerReplica(t *testing.T) {
	js := testkit.StartNATS(t).JetStream(t)
	a := eventstore.OpenObjectCheckpoints(js, 1, eventstore.WithCheckpointReplica("a"))
	b := eventstore.OpenObjectCheckpoints(js, 1, eventstore.WithCheckpointReplica("b"))
	const size = 3 << 20
	body := func(replica string, round int) []byte {
		return bytes.Repeat([]byte(fmt.Sprintf("%s%03d-", replica, round)), size/5)
	}
	for round := range 3 {
		var wg sync.WaitGroup
		for name, s := range map[string]*eventstore.ObjectCheckpoints{"a": a, "b": b} {
			wg.Go(func() {
				if err := s.Put(context.Background(), "proj-v1", bytes.NewReader(body(name, round))); err != nil {
					t.Errorf("put of %s, round %d: %v", name, round, err)
				}
			})
		}
		wg.Wait()
	}
	if got, want := objectNames(t, js), []string{"proj-v1@a", "proj-v1@b"}; !slices.Equal(got, want) {
		t.Fatalf("objects %v, want %v", got, want)
	}
	obs, err := js.ObjectStore(t.Context(), eventstore.CheckpointBucket)
	if err != nil {
		t.Fatal(err)
	}
	st, err := obs.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if max := uint64(2*size + 1<<20); st.Size() > max {
		t.Fatalf("the bucket holds %d bytes after replacements, more than the two objects' %d: chunks leaked", st.Size(), max)
	}

	if err := b.Put(t.Context(), "proj-v1", bytes.NewReader(body("b", 9))); err != nil {
		t.Fatal(err)
	}
	for _, s := range []*eventstore.ObjectCheckpoints{a, b} {
		rc, err := s.Get(t.Context(), "proj-v1")
		if got := readAll(t, rc, err); !bytes.Equal(got, body("b", 9)) {
			t.Fatalf("Get from replica %s read %.10q…, want the newest (b's round 9)", s.Replica(), got)
		}
	}
	cands, err := a.Checkpoints(t.Context(), "proj-v1")
	if err != nil || len(cands) != 2 || cands[0].Key != "proj-v1@b" || cands[1].Key != "proj-v1@a" {
		t.Fatalf("checkpoints %+v (%v), want proj-v1@b then proj-v1@a", cands, err)
	}
	if _, err := a.Get(t.Context(), "other-v1"); !errors.Is(err, eventstore.ErrNoCheckpoint) {
		t.Fatalf("Get of a projection without checkpoints: %v, want ErrNoCheckpoint", err)
	}
}

// A runner restores the newest valid checkpoint of its projection among the replicas': a newer one
// that is corrupt, or of another stream incarnation, is passed over for an older valid one, and the
// runner applies only the tail.
func TestRunnerRestoresTheNewestValidCheckpoint(t *testing.T) {
	e := newEnv(t)
	js := e.store.JetStream()
	last := appendAgents(t, e.store, "nv-", 4)
	want := fullRebuild(t, e.store, "nv-v1")

	// Replica a checkpoints the projection as it stops.
	a := eventstore.OpenObjectCheckpoints(js, 1, eventstore.WithCheckpointReplica("a"))
	first := newCkptList("nv-v1")
	r1 := e.store.NewRunner(first, eventstore.StreamAgents, ckptFilter, eventstore.WithCheckpoints(a, eventstore.CheckpointPolicy{OnStop: true}))
	stop := runUntilStopped(t, r1)
	if err := r1.Ready(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	stop()
	waitCheckpoint(t, a, "nv-v1", last)

	st, err := js.Stream(t.Context(), eventstore.StreamAgents)
	if err != nil {
		t.Fatal(err)
	}
	bogus := func(w io.Writer) error {
		_, err := w.Write([]byte(`{"acme/ghost":["agent.registered=ghost"]}`))
		return err
	}
	for _, tc := range []struct {
		name string
		make func() []byte
	}{
		{"corrupt", func() []byte {
			var buf bytes.Buffer
			info := eventstore.CheckpointInfo{Projection: "nv-v1", Stream: eventstore.StreamAgents, StreamCreated: st.CachedInfo().Created, Filters: ckptFilter, Position: last}
			if err := eventstore.WriteCheckpoint(&buf, info, bogus); err != nil {
				t.Fatal(err)
			}
			b := buf.Bytes()
			b[len(b)-40] ^= 0xff
			return b
		}},
		{"another stream incarnation", func() []byte {
			var buf bytes.Buffer
			info := eventstore.CheckpointInfo{Projection: "nv-v1", Stream: eventstore.StreamAgents, StreamCreated: st.CachedInfo().Created.Add(-time.Hour), Filters: ckptFilter, Position: last}
			if err := eventstore.WriteCheckpoint(&buf, info, bogus); err != nil {
				t.Fatal(err)
			}
			return buf.Bytes()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Replica b writes a newer checkpoint that cannot be restored.
			b := eventstore.OpenObjectCheckpoints(js, 1, eventstore.WithCheckpointReplica("b"))
			if err := b.Put(t.Context(), "nv-v1", bytes.NewReader(tc.make())); err != nil {
				t.Fatal(err)
			}
			if cands, err := b.Checkpoints(t.Context(), "nv-v1"); err != nil || len(cands) != 2 || cands[0].Key != "nv-v1@b" {
				t.Fatalf("checkpoints %+v (%v), want b's newest of two", cands, err)
			}
			c := eventstore.OpenObjectCheckpoints(js, 1, eventstore.WithCheckpointReplica("c"))
			p := newCkptList("nv-v1")
			r := e.store.NewRunner(p, eventstore.StreamAgents, ckptFilter, eventstore.WithCheckpoints(c, eventstore.CheckpointPolicy{}))
			runUntilStopped(t, r)
			if err := r.Ready(ctxTimeout(t, 10*time.Second)); err != nil {
				t.Fatal(err)
			}
			if !p.restored {
				t.Fatal("no checkpoint restored: the older valid one of replica a was not tried")
			}
			if got := p.state(t); !bytes.Equal(got, want) {
				t.Fatalf("state restored:\n%s\nfull rebuild:\n%s", got, want)
			}
			if seqs := p.appliedSeqs(); len(seqs) != 0 {
				t.Fatalf("applied %v after restoring a checkpoint at %d, the stream's last event", seqs, last)
			}
		})
	}
}

// A Put deletes the projection's objects that a newer one superseded longer ago than a transfer may
// take (a replica gone, a replica's id of an earlier start, the object of an earlier release named
// after the projection alone), never its own, and nothing superseded recently.
func TestObjectCheckpointsPruneSuperseded(t *testing.T) {
	js := testkit.StartNATS(t).JetStream(t)
	stores := map[string]*eventstore.ObjectCheckpoints{}
	for _, id := range []string{"a", "b", "c"} {
		stores[id] = eventstore.OpenObjectCheckpoints(js, 1, eventstore.WithCheckpointReplica(id))
	}
	if err := stores["a"].Put(t.Context(), "pr-v1", strings.NewReader("a")); err != nil {
		t.Fatal(err)
	}
	obs, err := js.ObjectStore(t.Context(), eventstore.CheckpointBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := obs.PutString(t.Context(), "pr-v1", "legacy"); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"b", "c"} {
		if err := stores[id].Put(t.Context(), "pr-v1", strings.NewReader(id)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := obs.PutString(t.Context(), "other-v1@z", "another projection"); err != nil {
		t.Fatal(err)
	}
	all := []string{"other-v1@z", "pr-v1", "pr-v1@a", "pr-v1@b", "pr-v1@c"}
	if got := objectNames(t, js); !slices.Equal(got, all) {
		t.Fatalf("objects %v, want %v (superseded just now: kept)", got, all)
	}
	if err := eventstore.PruneCheckpoints(t.Context(), stores["a"], "pr-v1", time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if got := objectNames(t, js); !slices.Equal(got, all) {
		t.Fatalf("objects %v, want %v (superseded a minute ago: a restore may still read them)", got, all)
	}
	if err := eventstore.PruneCheckpoints(t.Context(), stores["a"], "pr-v1", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got, want := objectNames(t, js), []string{"other-v1@z", "pr-v1@a", "pr-v1@c"}; !slices.Equal(got, want) {
		t.Fatalf("objects %v, want %v (the newest, a's own and another projection's)", got, want)
	}
}

// StoreCheckpoints replicates the bucket as the store's streams are (WithReplicas).
func TestStoreCheckpointsReplicatedAsTheStreams(t *testing.T) {
	c := testkit.StartNATSCluster(t, 3)
	s := eventstore.New(c.JetStream(t), clusterStoreOptions(t)...)
	store := eventstore.StoreCheckpoints(s, eventstore.WithCheckpointReplica("n0"))
	// The first Put creates the bucket's R3 stream; on a loaded machine its leader may take a while to
	// be elected, and a checkpoint that fails is written again later, as the runner does.
	testkit.Eventually(t, 0, "the first checkpoint to be written", func() (bool, error) {
		err := store.Put(ctxTimeout(t, 20*time.Second), "rep-v1", strings.NewReader("state"))
		return err == nil, err
	})
	if got := bucketConfig(t, c.JetStream(t)).Replicas; got != 3 {
		t.Fatalf("bucket replicas %d, want 3 (the streams')", got)
	}
}
