package eventstore_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/testkit"
)

// ckptList is a checkpointable projection: per tenant/agent, the event types and values in order,
// and the sequences it applied (not part of its state).
type ckptList struct {
	name     string
	mu       sync.Mutex
	history  map[string][]string
	applied  []uint64
	restored bool
}

func newCkptList(name string) *ckptList { return &ckptList{name: name, history: map[string][]string{}} }

func (p *ckptList) Name() string { return p.name }

func (p *ckptList) Apply(_ context.Context, e eventstore.Event) error {
	v, err := eventstore.DecodeAs[*wrapperspb.StringValue](e)
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	key := e.Metadata.Tenant + "/" + e.AggregateID
	p.history[key] = append(p.history[key], e.Type+"="+v.GetValue())
	p.applied = append(p.applied, e.Sequence)
	return nil
}

func (p *ckptList) Checkpoint() func(io.Writer) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	b, err := json.Marshal(p.history) // a copy taken now, written later
	return func(w io.Writer) error {
		if err != nil {
			return err
		}
		_, err := w.Write(b)
		return err
	}
}

func (p *ckptList) Restore(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	h := map[string][]string{}
	if err := json.Unmarshal(b, &h); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.history, p.restored = h, true
	return nil
}

// state is the projection's state as bytes (JSON with sorted keys).
func (p *ckptList) state(t *testing.T) []byte {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	b, err := json.Marshal(p.history)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (p *ckptList) appliedSeqs() []uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.applied)
}

var ckptFilter = []string{eventstore.AggregateTypeSubject("agent")}

// appendAgents appends one registration and one update to each of n new agents.
func appendAgents(t *testing.T, s *eventstore.Store, prefix string, n int) uint64 {
	t.Helper()
	var last uint64
	for i := range n {
		id := prefix + string(rune('a'+i))
		ev := mustAppend(t, s, agentAppend("acme", id, "registered", 0, id+"-1"))
		last = mustAppend(t, s, agentAppend("acme", id, "updated", ev.Sequence, id+"-2")).Sequence
	}
	return last
}

// runUntilStopped runs r until stop is called, which waits for Run to return.
func runUntilStopped(t *testing.T, r *eventstore.Runner) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// fullRebuild returns the state of the projection replayed from the first event.
func fullRebuild(t *testing.T, s *eventstore.Store, name string) []byte {
	t.Helper()
	p := newCkptList(name)
	r := s.NewRunner(p, eventstore.StreamAgents, ckptFilter)
	runUntilStopped(t, r)
	if err := r.Ready(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	return p.state(t)
}

// checkpointStores are the stores the checkpoint tests run against.
func checkpointStores(t *testing.T, e *env) map[string]eventstore.CheckpointStore {
	dir, err := eventstore.NewDirCheckpoints(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	obj, err := eventstore.NewObjectCheckpoints(t.Context(), e.store.JetStream(), 1)
	if err != nil {
		t.Fatal(err)
	}
	return map[string]eventstore.CheckpointStore{"dir": dir, "object": obj}
}

// waitCheckpoint polls store until the projection's checkpoint is at position pos or later.
func waitCheckpoint(t *testing.T, store eventstore.CheckpointStore, name string, pos uint64) eventstore.CheckpointInfo {
	t.Helper()
	var info eventstore.CheckpointInfo
	testkit.Eventually(t, testkit.DefaultWait, "checkpoint of "+name, func() (bool, error) {
		rc, err := store.Get(t.Context(), name)
		if err != nil {
			return false, nil
		}
		defer rc.Close()
		cr, err := eventstore.NewCheckpointReader(rc)
		if err != nil {
			return false, nil
		}
		info = cr.Info
		return info.Position >= pos, nil
	})
	return info
}

func TestCheckpointPlusTailEqualsFullRebuild(t *testing.T) {
	e := newEnv(t)
	for name, store := range checkpointStores(t, e) {
		t.Run(name, func(t *testing.T) {
			proj := "ckpt-" + name + "-v1"
			prefix := name + "-"
			appendAgents(t, e.store, prefix, 5)

			first := newCkptList(proj)
			r1 := e.store.NewRunner(first, eventstore.StreamAgents, ckptFilter,
				eventstore.WithCheckpoints(store, eventstore.CheckpointPolicy{Every: 3, OnStop: true}))
			stop := runUntilStopped(t, r1)
			if err := r1.Ready(ctxTimeout(t, 10*time.Second)); err != nil {
				t.Fatal(err)
			}
			last := appendAgents(t, e.store, prefix+"x", 2)
			if err := r1.WaitFor(ctxTimeout(t, 10*time.Second), last); err != nil {
				t.Fatal(err)
			}
			stop() // writes the last checkpoint
			info := waitCheckpoint(t, store, proj, last)
			if info.Stream != eventstore.StreamAgents || info.Projection != proj || !slices.Equal(info.Filters, ckptFilter) {
				t.Fatalf("checkpoint header = %+v", info)
			}

			tail := appendAgents(t, e.store, prefix+"y", 3) // after the checkpoint
			second := newCkptList(proj)
			r2 := e.store.NewRunner(second, eventstore.StreamAgents, ckptFilter,
				eventstore.WithCheckpoints(store, eventstore.CheckpointPolicy{}))
			runUntilStopped(t, r2)
			if err := r2.Ready(ctxTimeout(t, 10*time.Second)); err != nil {
				t.Fatal(err)
			}
			if err := r2.WaitFor(ctxTimeout(t, 10*time.Second), tail); err != nil {
				t.Fatal(err)
			}
			if !second.restored {
				t.Fatal("the second runner did not restore the checkpoint")
			}
			for _, seq := range second.appliedSeqs() {
				if seq <= info.Position {
					t.Fatalf("the restored runner applied seq %d, at or before the checkpoint's position %d", seq, info.Position)
				}
			}
			if len(second.appliedSeqs()) != 6 {
				t.Fatalf("the restored runner applied %d events, want the 6 of the tail", len(second.appliedSeqs()))
			}
			if got, want := second.state(t), fullRebuild(t, e.store, proj); !bytes.Equal(got, want) {
				t.Fatalf("checkpoint + tail:\n%s\nfull rebuild:\n%s", got, want)
			}
		})
	}
}

func TestCheckpointRejected(t *testing.T) {
	e := newEnv(t)
	last := appendAgents(t, e.store, "r-", 4)
	st, err := e.store.JetStream().Stream(t.Context(), eventstore.StreamAgents)
	if err != nil {
		t.Fatal(err)
	}
	created := st.CachedInfo().Created
	good := eventstore.CheckpointInfo{
		Projection: "rej-v1", Stream: eventstore.StreamAgents, StreamCreated: created,
		Filters: ckptFilter, Position: last,
	}
	// The state a bad checkpoint would bring in: nothing of it may survive.
	bogus := func(w io.Writer) error {
		_, err := w.Write([]byte(`{"acme/ghost":["agent.registered=ghost"]}`))
		return err
	}
	write := func(t *testing.T, store eventstore.CheckpointStore, info eventstore.CheckpointInfo) []byte {
		var buf bytes.Buffer
		if err := eventstore.WriteCheckpoint(&buf, info, bogus); err != nil {
			t.Fatal(err)
		}
		if err := store.Put(t.Context(), "rej-v1", bytes.NewReader(buf.Bytes())); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	tests := []struct {
		name  string
		setup func(t *testing.T, store eventstore.CheckpointStore, dir string)
	}{
		{"corrupt body", func(t *testing.T, store eventstore.CheckpointStore, dir string) {
			b := write(t, store, good)
			b[len(b)-40] ^= 0xff // a byte of the body
			store.Put(t.Context(), "rej-v1", bytes.NewReader(b))
		}},
		{"corrupt checksum", func(t *testing.T, store eventstore.CheckpointStore, dir string) {
			b := write(t, store, good)
			b[len(b)-1] ^= 0x01
			store.Put(t.Context(), "rej-v1", bytes.NewReader(b))
		}},
		{"truncated", func(t *testing.T, store eventstore.CheckpointStore, dir string) {
			b := write(t, store, good)
			store.Put(t.Context(), "rej-v1", bytes.NewReader(b[:len(b)-50]))
		}},
		{"not a checkpoint", func(t *testing.T, store eventstore.CheckpointStore, dir string) {
			store.Put(t.Context(), "rej-v1", bytes.NewReader([]byte("garbage")))
		}},
		{"another stream incarnation", func(t *testing.T, store eventstore.CheckpointStore, dir string) {
			info := good
			info.StreamCreated = created.Add(-time.Hour)
			write(t, store, info)
		}},
		{"another projection version", func(t *testing.T, store eventstore.CheckpointStore, dir string) {
			info := good
			info.Projection = "rej-v0"
			write(t, store, info)
		}},
		{"other filters", func(t *testing.T, store eventstore.CheckpointStore, dir string) {
			info := good
			info.Filters = []string{">"}
			write(t, store, info)
		}},
		{"beyond the stream", func(t *testing.T, store eventstore.CheckpointStore, dir string) {
			info := good
			info.Position = last + 100
			write(t, store, info)
		}},
	}
	want := fullRebuild(t, e.store, "rej-v1")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			store, err := eventstore.NewDirCheckpoints(dir)
			if err != nil {
				t.Fatal(err)
			}
			tt.setup(t, store, dir)
			p := newCkptList("rej-v1")
			r := e.store.NewRunner(p, eventstore.StreamAgents, ckptFilter, eventstore.WithCheckpoints(store, eventstore.CheckpointPolicy{}))
			runUntilStopped(t, r)
			if err := r.Ready(ctxTimeout(t, 10*time.Second)); err != nil {
				t.Fatal(err)
			}
			if p.restored {
				t.Fatal("a rejected checkpoint was restored")
			}
			if got := p.state(t); !bytes.Equal(got, want) {
				t.Fatalf("state after a rejected checkpoint:\n%s\nfull rebuild:\n%s", got, want)
			}
			if seqs := p.appliedSeqs(); len(seqs) == 0 || seqs[0] != 1 {
				t.Fatalf("applied %v, want a replay from sequence 1", seqs)
			}
		})
	}
}

func TestCheckpointReaderRoundTrip(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789abcdef"), 200_000) // several frames
	var buf bytes.Buffer
	info := eventstore.CheckpointInfo{Projection: "p-v1", Stream: "S", Position: 42}
	if err := eventstore.WriteCheckpoint(&buf, info, func(w io.Writer) error { _, err := w.Write(body); return err }); err != nil {
		t.Fatal(err)
	}
	cr, err := eventstore.NewCheckpointReader(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(cr)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, body) || cr.Info.Position != 42 || cr.Info.Projection != "p-v1" {
		t.Fatalf("round trip: %d bytes, info %+v", len(got), cr.Info)
	}
	b := buf.Bytes()
	b[len(b)/2] ^= 0x10
	cr, err = eventstore.NewCheckpointReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(cr); !errors.Is(err, eventstore.ErrCorruptCheckpoint) {
		t.Fatalf("reading a flipped byte: %v, want ErrCorruptCheckpoint", err)
	}
}

func TestDirCheckpointsMissing(t *testing.T) {
	store, err := eventstore.NewDirCheckpoints(filepath.Join(t.TempDir(), "sub"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Get(t.Context(), "none-v1"); !errors.Is(err, eventstore.ErrNoCheckpoint) {
		t.Fatalf("Get of a missing checkpoint: %v, want ErrNoCheckpoint", err)
	}
}

// A checkpoint object is written and read under a deadline of its own, not the client's default
// request timeout (which a checkpoint of hundreds of megabytes does not meet): with a 1 ms default,
// 32 MiB still round-trip, and a second Put replaces the first.
func TestObjectCheckpointsOutlastTheDefaultTimeout(t *testing.T) {
	js, err := jetstream.New(testkit.StartNATS(t).Conn(t), jetstream.WithDefaultTimeout(time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	store := eventstore.OpenObjectCheckpoints(js, 1)
	for round := range 2 {
		body := bytes.Repeat([]byte{byte('a' + round), 1, 2, 3, 4, 5, 6, 7}, 4<<20)
		if err := store.Put(t.Context(), "big-v1", bytes.NewReader(body)); err != nil {
			t.Fatalf("put %d: %v", round, err)
		}
		rc, err := store.Get(t.Context(), "big-v1")
		if err != nil {
			t.Fatalf("get %d: %v", round, err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || !bytes.Equal(got, body) {
			t.Fatalf("round %d: read %d bytes (%v), want %d", round, len(got), err, len(body))
		}
	}
	if _, err := store.Get(t.Context(), "missing-v1"); !errors.Is(err, eventstore.ErrNoCheckpoint) {
		t.Fatalf("get of a missing checkpoint: %v, want ErrNoCheckpoint", err)
	}
}
