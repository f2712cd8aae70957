package eventstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// WithCheckpointBucket makes EnsureStreams also create the checkpoint bucket (CheckpointBucket, the
// store of ObjectCheckpoints) with the store's replicas and a size limit of maxBytes (<= 0:
// DefaultCheckpointBucketBytes), or bring an existing one to them as it does the streams: replicas
// raised (never lowered), and a size limit set where there is none (earlier releases created the
// bucket without one); another existing limit is the operator's and kept. The administrator's setup
// uses it: no other NATS identity of pkg/natsauth may create or update the bucket.
func WithCheckpointBucket(maxBytes int64) Option {
	return func(s *Store) {
		if maxBytes <= 0 {
			maxBytes = DefaultCheckpointBucketBytes
		}
		s.checkpointBytes = maxBytes
	}
}

// checkpointBucketConfig is the checkpoint bucket of replicas replicas and maxBytes at most.
func checkpointBucketConfig(replicas int, maxBytes int64) jetstream.ObjectStoreConfig {
	return jetstream.ObjectStoreConfig{
		Bucket:      CheckpointBucket,
		Description: "Projection checkpoints (state and stream position), one object per projection and replica",
		Storage:     jetstream.FileStorage,
		Replicas:    max(replicas, 1),
		MaxBytes:    maxBytes,
	}
}

// ensureCheckpointBucket creates the checkpoint bucket or brings it to the store's replicas and,
// when it has none, to the size limit.
func (s *Store) ensureCheckpointBucket(ctx context.Context) error {
	name := "OBJ_" + CheckpointBucket
	cfg := checkpointBucketConfig(s.replicas, s.checkpointBytes)
	st, err := s.js.Stream(ctx, name)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
	case err != nil:
		return fmt.Errorf("eventstore: ensure bucket %s: %w", CheckpointBucket, err)
	case st.CachedInfo().Config.MaxBytes <= 0:
		have := st.CachedInfo().Config
		have.MaxBytes = cfg.MaxBytes
		if _, err := s.js.UpdateStream(ctx, have); err != nil {
			return fmt.Errorf("eventstore: ensure bucket %s: set its size limit to %d bytes (it has none): %w", CheckpointBucket, cfg.MaxBytes, err)
		}
		s.logger.InfoContext(ctx, "size limit set on the checkpoint bucket, which had none", "bucket", CheckpointBucket, "max_bytes", cfg.MaxBytes)
	}
	want := jetstream.StreamConfig{Replicas: cfg.Replicas, MaxBytes: cfg.MaxBytes}
	return s.ensureStream(ctx, name, want, false,
		func() (*jetstream.StreamInfo, error) {
			if _, err := s.js.CreateObjectStore(ctx, cfg); err != nil {
				return nil, err
			}
			st, err := s.js.Stream(ctx, name)
			if err != nil {
				return nil, err
			}
			return st.CachedInfo(), nil
		},
		// The bucket's other settings are the object store layout: keep them as they are.
		func(have jetstream.StreamConfig) jetstream.StreamConfig { return have },
	)
}
