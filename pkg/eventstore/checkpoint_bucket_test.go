package eventstore_test

import (
	"errors"
	"log/slog"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/testkit"
)

// The checkpoint bucket is the administrator's: EnsureStreams of a store created
// WithCheckpointBucket creates it with its size limit and the store's replicas, and brings a bucket
// without a limit (as earlier releases created it) to one. Opening it as ObjectCheckpoints changes
// nothing, whatever limit or replicas the opener asks for.
func TestCheckpointBucketEnsuredByEnsureStreams(t *testing.T) {
	quiet := eventstore.WithLogger(slog.New(slog.DiscardHandler))
	js := testkit.StartNATS(t).JetStream(t)
	if err := eventstore.New(js, quiet, eventstore.WithCheckpointBucket(0)).EnsureStreams(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := bucketConfig(t, js).MaxBytes; got != eventstore.DefaultCheckpointBucketBytes {
		t.Fatalf("new bucket max bytes %d, want %d", got, eventstore.DefaultCheckpointBucketBytes)
	}
	if _, err := eventstore.NewObjectCheckpoints(t.Context(), js, 1, eventstore.WithCheckpointBucketBytes(64<<20)); err != nil {
		t.Fatal(err)
	}
	if got := bucketConfig(t, js).MaxBytes; got != eventstore.DefaultCheckpointBucketBytes {
		t.Fatalf("max bytes %d after an ObjectCheckpoints asking for %d opened the bucket, want it unchanged (%d)", got, 64<<20, eventstore.DefaultCheckpointBucketBytes)
	}

	old := testkit.StartNATS(t).JetStream(t)
	if _, err := old.CreateObjectStore(t.Context(), jetstream.ObjectStoreConfig{Bucket: eventstore.CheckpointBucket, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	if err := eventstore.New(old, quiet, eventstore.WithCheckpointBucket(64<<20)).EnsureStreams(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := bucketConfig(t, old).MaxBytes; got != 64<<20 {
		t.Fatalf("existing bucket without a limit: max bytes %d after EnsureStreams, want %d", got, 64<<20)
	}
	// A limit the operator set is kept.
	if err := eventstore.New(old, quiet, eventstore.WithCheckpointBucket(0)).EnsureStreams(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := bucketConfig(t, old).MaxBytes; got != 64<<20 {
		t.Fatalf("max bytes %d after EnsureStreams with the default limit, want the existing %d kept", got, 64<<20)
	}
}

// EnsureStreams of a store without WithCheckpointBucket does not touch the bucket: a service whose
// NATS identity may not see it starts.
func TestEnsureStreamsWithoutCheckpointBucket(t *testing.T) {
	js := testkit.StartNATS(t).JetStream(t)
	if err := eventstore.New(js, eventstore.WithLogger(slog.New(slog.DiscardHandler))).EnsureStreams(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Stream(t.Context(), "OBJ_"+eventstore.CheckpointBucket); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatalf("checkpoint bucket after EnsureStreams without WithCheckpointBucket: %v, want ErrStreamNotFound", err)
	}
}
