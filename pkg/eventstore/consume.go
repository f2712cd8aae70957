package eventstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// consumeFetchWait bounds one pull request of Consume.
const consumeFetchWait = 5 * time.Second

// Defaults of Consume.
const (
	DefaultAckWait    = 30 * time.Second
	DefaultMaxDeliver = 10
)

// DefaultBackoff is the redelivery delay after the 1st, 2nd, ... failed delivery; the last entry
// repeats.
var DefaultBackoff = []time.Duration{
	time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second, 30 * time.Second,
	time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute,
}

type consumeConfig struct {
	ackWait     time.Duration
	maxDeliver  int
	backoff     []time.Duration
	concurrency int
}

// ConsumeOption configures Consume.
type ConsumeOption func(*consumeConfig)

// WithAckWait sets how long the server waits for an acknowledgement before redelivering (default
// DefaultAckWait). Handlers that run longer are kept alive with progress acknowledgements.
func WithAckWait(d time.Duration) ConsumeOption { return func(c *consumeConfig) { c.ackWait = d } }

// WithMaxDeliver sets how many times an event is delivered before it goes to the failed-event log
// (default DefaultMaxDeliver).
func WithMaxDeliver(n int) ConsumeOption { return func(c *consumeConfig) { c.maxDeliver = n } }

// WithBackoff sets the redelivery delays after failed deliveries (default DefaultBackoff).
func WithBackoff(delays ...time.Duration) ConsumeOption {
	return func(c *consumeConfig) { c.backoff = delays }
}

// WithConcurrency sets how many events this process handles at once (default 1).
func WithConcurrency(n int) ConsumeOption { return func(c *consumeConfig) { c.concurrency = n } }

// Consume runs h over the events of stream matching filterSubjects through the durable consumer
// name, shared by every replica that consumes under that name, until ctx is done (then it returns
// nil once in-flight handlers have finished). Delivery is at least once: h must be idempotent, and
// an event that reaches a replica as it shuts down comes back after the ack wait.
// A handler error is retried after the backoff delay; after the last allowed delivery the event is
// logged, recorded in the failed-event log and terminated.
func (s *Store) Consume(ctx context.Context, name, stream string, filterSubjects []string, h Handler, opts ...ConsumeOption) error {
	cfg := consumeConfig{ackWait: DefaultAckWait, maxDeliver: DefaultMaxDeliver, backoff: DefaultBackoff, concurrency: 1}
	for _, o := range opts {
		o(&cfg)
	}
	if err := checkToken("name", name); err != nil {
		return err
	}
	switch {
	case cfg.ackWait <= 0:
		return invalid("ack_wait", "must be positive")
	case cfg.maxDeliver < 1:
		return invalid("max_deliver", "must be at least 1")
	case len(cfg.backoff) == 0:
		return invalid("backoff", "must not be empty")
	case cfg.concurrency < 1:
		return invalid("concurrency", "must be at least 1")
	}
	failed := func(err error) error {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("eventstore: consumer %s on %s: %w", name, stream, err)
	}
	cons, err := s.js.CreateOrUpdateConsumer(ctx, stream, jetstream.ConsumerConfig{
		Durable:        name,
		Description:    "work consumer " + name,
		FilterSubjects: filterSubjects,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        cfg.ackWait,
		MaxDeliver:     cfg.maxDeliver,
	})
	if err != nil {
		return failed(err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	// A token in slots is a handler that may run; events are pulled only for free slots, so that
	// none sits in a client buffer while its ack wait runs out.
	slots := make(chan struct{}, cfg.concurrency)
	for {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		free := 1
	more:
		for free < cfg.concurrency {
			select {
			case slots <- struct{}{}:
				free++
			default:
				break more
			}
		}
		fetchCtx, cancel := context.WithTimeout(ctx, consumeFetchWait)
		batch, err := cons.Fetch(free, jetstream.FetchContext(fetchCtx))
		if err == nil {
			for msg := range batch.Messages() {
				free--
				wg.Go(func() {
					defer func() { <-slots }()
					s.handle(ctx, name, cfg, msg, h)
				})
			}
			err = batch.Error()
		}
		cancel()
		for range free {
			<-slots
		}
		switch {
		case ctx.Err() != nil:
			return nil
		case err == nil, errors.Is(err, context.DeadlineExceeded):
		case errors.Is(err, jetstream.ErrConsumerNotFound), errors.Is(err, jetstream.ErrConsumerDeleted):
			return failed(err)
		default: // e.g. a reconnect in progress
			s.logger.WarnContext(ctx, "work consumer fetch failed; retrying", "consumer", name, "stream", stream, "error", err)
			select {
			case <-time.After(time.Second):
			case <-ctx.Done():
			}
		}
	}
}

// handle runs h on one delivery and acknowledges it accordingly.
func (s *Store) handle(ctx context.Context, name string, cfg consumeConfig, msg jetstream.Msg, h Handler) {
	md, err := msg.Metadata()
	if err != nil {
		s.logger.ErrorContext(ctx, "work consumer got a message without metadata", "consumer", name, "subject", msg.Subject(), "error", err)
		_ = msg.Term()
		return
	}
	ev, err := EventFromMsg(msg)
	if err != nil { // no redelivery can fix a malformed envelope
		s.giveUp(ctx, name, msg, md, ev, err)
		return
	}

	done := make(chan struct{})
	go func() { // keep the delivery alive while h runs longer than the ack wait
		t := time.NewTicker(max(cfg.ackWait/2, time.Millisecond))
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				_ = msg.InProgress()
			}
		}
	}()
	err = h(ctx, ev)
	close(done)

	switch {
	case err == nil:
		if aerr := msg.Ack(); aerr != nil {
			s.logger.WarnContext(ctx, "work consumer ack failed; the event will be redelivered",
				"consumer", name, "stream", md.Stream, "seq", md.Sequence.Stream, "error", aerr)
		}
	case ctx.Err() != nil: // shutting down: hand the event to another replica now
		_ = msg.Nak()
	case md.NumDelivered >= uint64(cfg.maxDeliver):
		s.giveUp(ctx, name, msg, md, ev, err)
	default:
		delay := cfg.backoff[min(int(md.NumDelivered), len(cfg.backoff))-1]
		s.logger.WarnContext(ctx, "work consumer handler failed; retrying",
			"consumer", name, "stream", md.Stream, "seq", md.Sequence.Stream, "event_id", ev.ID, "event_type", ev.Type,
			"delivery", md.NumDelivered, "max_deliver", cfg.maxDeliver, "retry_in", delay, "error", err)
		_ = msg.NakWithDelay(delay)
	}
}

// giveUp records a delivery that will not be retried and terminates it.
func (s *Store) giveUp(ctx context.Context, name string, msg jetstream.Msg, md *jetstream.MsgMetadata, ev Event, err error) {
	s.logger.ErrorContext(ctx, "work consumer gave up on event",
		"consumer", name, "stream", md.Stream, "seq", md.Sequence.Stream, "subject", msg.Subject(),
		"event_id", ev.ID, "event_type", ev.Type, "deliveries", md.NumDelivered, "error", err)
	fe := FailedEvent{
		Handler: name, Kind: FailedByConsumer,
		Stream: md.Stream, Sequence: md.Sequence.Stream, Subject: msg.Subject(),
		EventID: ev.ID, EventType: ev.Type, Error: err.Error(), Deliveries: md.NumDelivered,
	}
	if rerr := s.recordFailure(ctx, fe); rerr != nil {
		s.logger.ErrorContext(ctx, "failed-event log unavailable", "consumer", name,
			"stream", md.Stream, "seq", md.Sequence.Stream, "error", rerr)
	}
	_ = msg.TermWithReason(truncate(err.Error(), 256))
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
