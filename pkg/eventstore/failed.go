package eventstore

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// FailedEventsBucket is the KV bucket holding the failed-event log.
const FailedEventsBucket = "failed-events"

// Kinds of handler that record failed events.
const (
	FailedByProjection = "projection"
	FailedByConsumer   = "consumer"
)

// FailedEvent is an entry of the failed-event log: an event a projection or work consumer could
// not handle. Entries stay until cleared with ClearFailedEvent.
type FailedEvent struct {
	// Handler is the projection or consumer name.
	Handler string `json:"handler"`
	// Kind is FailedByProjection or FailedByConsumer.
	Kind string `json:"kind"`
	// Stream is the stream holding the event.
	Stream string `json:"stream"`
	// Sequence is the event's stream sequence.
	Sequence uint64 `json:"seq"`
	// Subject is the event's NATS subject.
	Subject string `json:"subject"`
	// EventID is the event's ce-id, when the envelope could be decoded.
	EventID string `json:"event_id,omitempty"`
	// EventType is the event's ce-type, when the envelope could be decoded.
	EventType string `json:"event_type,omitempty"`
	// Error is the handler's last error.
	Error string `json:"error"`
	// Deliveries is how many times the event was handed to the handler.
	Deliveries uint64 `json:"deliveries"`
	// Time is when the failure was recorded, in UTC.
	Time time.Time `json:"time"`
}

// failedKey is the KV key of a failed event: <handler>.<stream>.<seq>.
func failedKey(handler, stream string, seq uint64) string {
	return kvToken(handler) + "." + kvToken(stream) + "." + strconv.FormatUint(seq, 10)
}

// kvToken maps s onto the characters a KV key token allows.
func kvToken(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '=', r == '/':
			return r
		default:
			return '_'
		}
	}, s)
}

func (s *Store) failedBucketConfig() jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      FailedEventsBucket,
		Description: "Events that a projection or work consumer could not handle",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    s.replicas,
	}
}

func (s *Store) failedBucket(ctx context.Context) (jetstream.KeyValue, error) {
	s.failedMu.Lock()
	defer s.failedMu.Unlock()
	if s.failedKV != nil {
		return s.failedKV, nil
	}
	kv, err := s.js.KeyValue(ctx, FailedEventsBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = s.js.CreateOrUpdateKeyValue(ctx, s.failedBucketConfig())
	}
	if err != nil {
		return nil, fmt.Errorf("eventstore: failed-event bucket: %w", err)
	}
	s.failedKV = kv
	return kv, nil
}

// recordFailure writes fe to the failed-event log, even when ctx is already cancelled.
func (s *Store) recordFailure(ctx context.Context, fe FailedEvent) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	fe.Time = s.clock().UTC()
	b, err := json.Marshal(fe)
	if err != nil {
		return err
	}
	kv, err := s.failedBucket(ctx)
	if err != nil {
		return err
	}
	if _, err := kv.Put(ctx, failedKey(fe.Handler, fe.Stream, fe.Sequence), b); err != nil {
		return fmt.Errorf("eventstore: record failed event %s/%d for %s: %w", fe.Stream, fe.Sequence, fe.Handler, err)
	}
	return nil
}

// FailedEvents returns the failed-event log, ordered by handler, stream and sequence.
func (s *Store) FailedEvents(ctx context.Context) ([]FailedEvent, error) {
	kv, err := s.failedBucket(ctx)
	if err != nil {
		return nil, err
	}
	keys, err := kv.Keys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("eventstore: list failed events: %w", err)
	}
	slices.Sort(keys)
	var out []FailedEvent
	for _, key := range slices.Compact(keys) {
		e, err := kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("eventstore: read failed event %s: %w", key, err)
		}
		var fe FailedEvent
		if err := json.Unmarshal(e.Value(), &fe); err != nil {
			return nil, fmt.Errorf("eventstore: decode failed event %s: %w", key, err)
		}
		out = append(out, fe)
	}
	slices.SortFunc(out, func(a, b FailedEvent) int {
		return cmp.Or(cmp.Compare(a.Handler, b.Handler), cmp.Compare(a.Stream, b.Stream), cmp.Compare(a.Sequence, b.Sequence))
	})
	return out, nil
}

// ClearFailedEvent removes an entry from the failed-event log once it has been dealt with.
func (s *Store) ClearFailedEvent(ctx context.Context, handler, stream string, seq uint64) error {
	kv, err := s.failedBucket(ctx)
	if err != nil {
		return err
	}
	if err := kv.Purge(ctx, failedKey(handler, stream, seq)); err != nil {
		return fmt.Errorf("eventstore: clear failed event: %w", err)
	}
	return nil
}
