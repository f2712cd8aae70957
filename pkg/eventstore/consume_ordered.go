package eventstore

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// WithOrderKey keeps the events of one key in stream order, within this process, while
// WithConcurrency handles events of different keys at once: key maps an event's subject to its key
// (e.g. SubjectAggregateKey, one aggregate), and an event is handed to the handler only once every
// earlier event of its key that this process took from the consumer has been handled. Each event is
// still acknowledged only after its own handler returned.
//
// When a handler fails and its event is left for redelivery, the key is held in this process: its
// later events are not run but left for redelivery (nak'ed after the failed event's retry delay)
// until the failed event is handled here (acknowledged, or given up and in the failed-event log), so
// that a later event never overtakes an earlier one that failed. The hold ends without that when
// the failed event has not come back to this process within its retry delay and the ack wait
// (another replica took it). A held delivery counts as a delivery for WithMaxDeliver.
//
// The order holds per process only: replicas sharing the consumer take events of one key side by
// side, and a redelivery may go to any of them. Handlers must still tolerate an event of a key
// arriving after a later one (e.g. re-read the aggregate and skip what no longer applies).
func WithOrderKey(key func(subject string) string) ConsumeOption {
	return func(c *consumeConfig) { c.orderKey = key }
}

// SubjectAggregateKey is a WithOrderKey key: the subject without its last token (the event type), so
// agentid.<tenant>.<aggregate type>.<aggregate id>.<type> orders by aggregate.
func SubjectAggregateKey(subject string) string {
	if i := strings.LastIndexByte(subject, '.'); i >= 0 {
		return subject[:i]
	}
	return subject
}

// keyChains orders the handling of events of the same key: each event waits for the one taken
// before it with its key.
type keyChains struct {
	mu     sync.Mutex
	last   map[string]chan struct{} // key -> closed when the newest event taken of the key is handled
	failed map[string]heldKey       // key -> the event of the key whose handler failed, until it is handled
}

// heldKey is a key whose event failed and was left for redelivery: later events of the key are
// left for redelivery without running until it is handled.
type heldKey struct {
	seq     uint64        // stream sequence of the failed event
	retryIn time.Duration // its redelivery delay, also the delay of the held events
	until   time.Time     // the hold ends then unless the failed event came back to this process
	back    bool          // the failed event is being handled again in this process
}

// take registers an event of key, in the order events are taken from the consumer, and returns what
// it must wait for (nil: nothing) and done, to call once it is handled.
func (k *keyChains) take(key string) (wait <-chan struct{}, done func()) {
	ch := make(chan struct{})
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.last == nil {
		k.last = map[string]chan struct{}{}
	}
	prev := k.last[key]
	k.last[key] = ch
	return prev, func() {
		close(ch)
		k.mu.Lock()
		defer k.mu.Unlock()
		if k.last[key] == ch {
			delete(k.last, key)
		}
	}
}

// awaitTurn waits until wait is closed, keeping msg's delivery alive meanwhile (as handle does while
// its handler runs), so that the server does not redeliver an event that only waits for its turn.
func awaitTurn(msg interface{ InProgress() error }, wait <-chan struct{}, ackWait time.Duration) {
	t := time.NewTicker(max(ackWait/2, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-wait:
			return
		case <-t.C:
			_ = msg.InProgress()
		}
	}
}

// held reports whether the event of key with stream sequence seq must be left for redelivery
// without running, and after which delay: an earlier event of its key failed in this process and has
// not been handled since. The failed event itself runs (and holds the key until it is handled).
func (k *keyChains) held(key string, seq uint64, now time.Time) (time.Duration, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	f, ok := k.failed[key]
	switch {
	case !ok, seq < f.seq:
		return 0, false
	case seq == f.seq:
		f.back = true
		k.failed[key] = f
		return 0, false
	case !f.back && !now.Before(f.until):
		delete(k.failed, key) // another process took the failed event
		return 0, false
	}
	return f.retryIn, true
}

// settle records how the handling of the event of key with stream sequence seq ended: retryIn is 0
// when it was handled (acknowledged or given up), otherwise the delay of its redelivery, which
// holds the key. An event taken while the key was held never reaches settle.
func (k *keyChains) settle(key string, seq uint64, retryIn, ackWait time.Duration, now time.Time) {
	k.mu.Lock()
	defer k.mu.Unlock()
	f, ok := k.failed[key]
	if retryIn <= 0 {
		if ok && f.seq == seq {
			delete(k.failed, key)
		}
		return
	}
	if ok && f.seq < seq && (f.back || now.Before(f.until)) {
		return // an earlier failed event holds the key already
	}
	if k.failed == nil {
		k.failed = map[string]heldKey{}
	}
	for other, h := range k.failed { // forget the holds other processes ended
		if !h.back && !now.Before(h.until) {
			delete(k.failed, other)
		}
	}
	k.failed[key] = heldKey{seq: seq, retryIn: retryIn, until: now.Add(retryIn + ackWait)}
}

// handleInOrder handles one delivery of a consumer with WithOrderKey once its turn has come: an
// event of a held key is left for redelivery without running, any other is handled and its outcome
// settles the key.
func (s *Store) handleInOrder(ctx context.Context, name string, cfg consumeConfig, msg jetstream.Msg, h Handler, chains *keyChains, key string) {
	md, err := msg.Metadata()
	if err != nil {
		s.handle(ctx, name, cfg, msg, h) // terminates it
		return
	}
	seq := md.Sequence.Stream
	if delay, held := chains.held(key, seq, time.Now()); held {
		s.logger.DebugContext(ctx, "work consumer holds an event behind a failed earlier one of its key",
			"consumer", name, "stream", md.Stream, "seq", seq, "key", key, "retry_in", delay)
		_ = msg.NakWithDelay(delay)
		return
	}
	retryIn := s.handle(ctx, name, cfg, msg, h)
	chains.settle(key, seq, retryIn, cfg.ackWait, time.Now())
}
