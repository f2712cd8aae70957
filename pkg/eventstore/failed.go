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

// ErrFailedEventNotFound marks a failed-event log operation on a key the log does not hold.
var ErrFailedEventNotFound = errors.New("eventstore: no such failed event")

// FailedEvent is an entry of the failed-event log: an event a projection or work consumer could
// not handle. It is stored as JSON under the key <handler>.<stream>.<seq> of FailedEventsBucket
// and stays until the event is handled by a retry (RetryFailedEvent) or the entry is cleared
// (ClearFailedEvent).
type FailedEvent struct {
	// Key is the entry's key in the log, FailedEventKey(Handler, Stream, Sequence).
	Key string `json:"key"`
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
	// Deliveries is how many times the event was handed to the handler before it was recorded.
	Deliveries uint64 `json:"deliveries"`
	// Retries is how many operator-requested retries have run and failed again.
	Retries uint64 `json:"retries,omitempty"`
	// Time is when the failure was last recorded, in UTC.
	Time time.Time `json:"time"`
	// RetryRequestedAt is when a retry was requested (RetryFailedEvent); zero when none is pending.
	RetryRequestedAt time.Time `json:"retry_requested_at,omitzero"`
	// RetryingSince is when a work consumer took a requested retry on; zero while none has.
	RetryingSince time.Time `json:"retrying_since,omitzero"`
}

// FailedEventFilter selects entries of the failed-event log; empty fields match everything.
type FailedEventFilter struct {
	// Handler is a projection or consumer name.
	Handler string
	// Stream is a stream name.
	Stream string
}

func (f FailedEventFilter) match(fe FailedEvent) bool {
	return (f.Handler == "" || f.Handler == fe.Handler) && (f.Stream == "" || f.Stream == fe.Stream)
}

// FailedEventKey returns the failed-event log key of the event at seq on stream for handler:
// <handler>.<stream>.<seq>, with characters that KV keys do not allow replaced by '_'.
func FailedEventKey(handler, stream string, seq uint64) string {
	return failedKeyPrefix(handler, stream) + "." + strconv.FormatUint(seq, 10)
}

func failedKeyPrefix(handler, stream string) string {
	return kvToken(handler) + "." + kvToken(stream)
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

// operatorBucket opens the failed-event bucket for the operator's operations, without creating it
// (with this store's settings, which may not be the platform's).
func (s *Store) operatorBucket(ctx context.Context) (jetstream.KeyValue, error) {
	s.failedMu.Lock()
	kv := s.failedKV
	s.failedMu.Unlock()
	if kv != nil {
		return kv, nil
	}
	kv, err := s.js.KeyValue(ctx, FailedEventsBucket)
	switch {
	case errors.Is(err, jetstream.ErrBucketNotFound):
		return nil, fmt.Errorf("%w: bucket %s does not exist (nothing has failed yet, or EnsureStreams has not run)", ErrFailedEventNotFound, FailedEventsBucket)
	case err != nil:
		return nil, fmt.Errorf("eventstore: failed-event bucket: %w", err)
	}
	s.failedMu.Lock()
	defer s.failedMu.Unlock()
	s.failedKV = kv
	return kv, nil
}

// recordFailure writes fe to the failed-event log, even when ctx is already cancelled.
func (s *Store) recordFailure(ctx context.Context, fe FailedEvent) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	fe.Key = FailedEventKey(fe.Handler, fe.Stream, fe.Sequence)
	fe.Time = s.clock().UTC()
	// A long handler error or panic message must not make the entry too large to store, which would
	// hold the event forever.
	fe.Error = truncate(fe.Error, maxFailedErrorBytes)
	b, err := json.Marshal(fe)
	if err != nil {
		return err
	}
	kv, err := s.failedBucket(ctx)
	if err != nil {
		return err
	}
	if _, err := kv.Put(ctx, fe.Key, b); err != nil {
		return fmt.Errorf("eventstore: record failed event %s/%d for %s: %w", fe.Stream, fe.Sequence, fe.Handler, err)
	}
	metricFailedRecorded.WithLabelValues(fe.Handler, fe.Kind).Inc()
	return nil
}

// maxFailedErrorBytes bounds the error text kept in a failed-event log entry.
const maxFailedErrorBytes = 4 << 10

// decodeFailed decodes a failed-event log entry.
func decodeFailed(e jetstream.KeyValueEntry) (FailedEvent, error) {
	var fe FailedEvent
	if err := json.Unmarshal(e.Value(), &fe); err != nil {
		return fe, fmt.Errorf("eventstore: decode failed event %s: %w", e.Key(), err)
	}
	fe.Key = e.Key()
	return fe, nil
}

// FailedEvents returns the whole failed-event log, ordered by handler, stream and sequence.
func (s *Store) FailedEvents(ctx context.Context) ([]FailedEvent, error) {
	return s.ListFailedEvents(ctx, FailedEventFilter{})
}

// ListFailedEvents returns the entries of the failed-event log that f selects, ordered by handler,
// stream and sequence.
func (s *Store) ListFailedEvents(ctx context.Context, f FailedEventFilter) ([]FailedEvent, error) {
	kv, err := s.operatorBucket(ctx)
	if errors.Is(err, ErrFailedEventNotFound) {
		return nil, nil
	}
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
		fe, err := decodeFailed(e)
		if err != nil {
			return nil, err
		}
		if f.match(fe) {
			out = append(out, fe)
		}
	}
	slices.SortFunc(out, func(a, b FailedEvent) int {
		return cmp.Or(cmp.Compare(a.Handler, b.Handler), cmp.Compare(a.Stream, b.Stream), cmp.Compare(a.Sequence, b.Sequence))
	})
	return out, nil
}

// RetryFailedEvent asks for the failed event under key to be handled again. The request is a mark
// on the entry; the running owner of the handler acts on it:
//
//   - a work consumer (Store.Consume): one running consumer of that name takes the request on,
//     reads the event from its stream by sequence and runs the handler once. On success the entry
//     is removed; on failure it stays with the new error, Retries counts the attempt and the mark
//     is cleared (transient errors are not retried again automatically: retry again later).
//   - a projection (Runner): every running runner of that projection that skipped the event (or
//     started after it, with StartAfter) applies it again, late and out of stream order: events
//     with higher sequences have already been applied, and Position does not move. Apply must
//     therefore bring the read model to the state it would have had if the event had been applied
//     in order (e.g. by comparing the aggregate version it keeps with the event's sequence), or
//     the projection must be rebuilt under a new name instead. A runner that has applied the event
//     since (a replay after a fix) only removes the entry. On success the entry is removed; a
//     runner that fails again records the new error.
//
// If no owner is running, the request waits for the next one to start. Retrying an entry whose
// retry is already under way requests it again (handlers are idempotent). It fails with
// ErrFailedEventNotFound when the log holds no entry under key.
func (s *Store) RetryFailedEvent(ctx context.Context, key string) error {
	return s.updateFailed(ctx, key, func(fe *FailedEvent) {
		fe.RetryRequestedAt = s.clock().UTC()
		fe.RetryingSince = time.Time{}
	})
}

// RetryFailedEvents requests a retry (RetryFailedEvent) of every entry f selects and returns how
// many it marked.
func (s *Store) RetryFailedEvents(ctx context.Context, f FailedEventFilter) (int, error) {
	return s.eachFailed(ctx, f, s.RetryFailedEvent)
}

// ClearFailedEvent removes an entry from the failed-event log once it has been dealt with.
func (s *Store) ClearFailedEvent(ctx context.Context, handler, stream string, seq uint64) error {
	kv, err := s.operatorBucket(ctx)
	if err != nil {
		return err
	}
	if err := kv.Purge(ctx, FailedEventKey(handler, stream, seq)); err != nil {
		return fmt.Errorf("eventstore: clear failed event: %w", err)
	}
	return nil
}

// ClearFailedEventKey removes the entry under key from the failed-event log without handling the
// event; it fails with ErrFailedEventNotFound when there is none.
func (s *Store) ClearFailedEventKey(ctx context.Context, key string) error {
	kv, err := s.operatorBucket(ctx)
	if err != nil {
		return err
	}
	if _, err := s.getFailed(ctx, kv, key); err != nil {
		return err
	}
	if err := kv.Purge(ctx, key); err != nil {
		return fmt.Errorf("eventstore: clear failed event %s: %w", key, err)
	}
	return nil
}

// ClearFailedEvents removes every entry f selects from the failed-event log and returns how many.
func (s *Store) ClearFailedEvents(ctx context.Context, f FailedEventFilter) (int, error) {
	return s.eachFailed(ctx, f, s.ClearFailedEventKey)
}

// eachFailed calls fn with the key of every entry f selects; entries that disappear meanwhile are
// not counted.
func (s *Store) eachFailed(ctx context.Context, f FailedEventFilter, fn func(context.Context, string) error) (int, error) {
	list, err := s.ListFailedEvents(ctx, f)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, fe := range list {
		switch err := fn(ctx, fe.Key); {
		case errors.Is(err, ErrFailedEventNotFound):
		case err != nil:
			return n, err
		default:
			n++
		}
	}
	return n, nil
}

func (s *Store) getFailed(ctx context.Context, kv jetstream.KeyValue, key string) (jetstream.KeyValueEntry, error) {
	e, err := kv.Get(ctx, key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted), errors.Is(err, jetstream.ErrInvalidKey):
		return nil, fmt.Errorf("%w: %q", ErrFailedEventNotFound, key)
	case err != nil:
		return nil, fmt.Errorf("eventstore: read failed event %s: %w", key, err)
	}
	return e, nil
}

// updateFailed changes the entry under key with change, re-reading it when it changes meanwhile.
func (s *Store) updateFailed(ctx context.Context, key string, change func(*FailedEvent)) error {
	kv, err := s.operatorBucket(ctx)
	if err != nil {
		return err
	}
	for {
		e, err := s.getFailed(ctx, kv, key)
		if err != nil {
			return err
		}
		fe, err := decodeFailed(e)
		if err != nil {
			return err
		}
		change(&fe)
		b, err := json.Marshal(fe)
		if err != nil {
			return err
		}
		_, err = kv.Update(ctx, key, b, e.Revision())
		if err == nil {
			return nil
		}
		if !isRevisionMismatch(err) || ctx.Err() != nil {
			return fmt.Errorf("eventstore: update failed event %s: %w", key, err)
		}
	}
}

func isRevisionMismatch(err error) bool {
	return errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists)
}
