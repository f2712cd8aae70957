package eventstore

import (
	"strings"
	"sync"
	"time"
)

// WithOrderKey keeps the events of one key in stream order while WithConcurrency handles events of
// different keys at once: key maps an event's subject to its key (e.g. SubjectAggregateKey, one
// aggregate), and an event is handed to the handler only once every earlier event of its key that
// this process took from the consumer has been handled (acknowledged, or scheduled for redelivery
// after a failure, as with concurrency 1). Each event is still acknowledged only after its own
// handler returned.
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
	mu   sync.Mutex
	last map[string]chan struct{} // key -> closed when the newest event taken of the key is handled
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
