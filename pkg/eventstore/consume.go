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
	DefaultAckWait = 30 * time.Second
	// DefaultMaxDeliver is the default delivery limit: none, an event failing with a transient
	// error is redelivered until it succeeds.
	DefaultMaxDeliver = UnlimitedDeliveries
)

// UnlimitedDeliveries as WithMaxDeliver redelivers an event until it is handled.
const UnlimitedDeliveries = -1

// LongRetryDeliveries is the delivery count from which a still failing event is logged as an error
// (and counted in agentid_eventstore_consumer_long_retries_total) rather than as a warning.
const LongRetryDeliveries = 10

// DefaultBackoff is the redelivery delay after the 1st, 2nd, ... failed delivery; the last entry
// repeats.
var DefaultBackoff = []time.Duration{
	time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second, 30 * time.Second,
	time.Minute, 2 * time.Minute, 5 * time.Minute,
}

// consumerInfoRefresh is how often Consume reads its consumer's info from the server, for the
// pending count and the age of the oldest unacknowledged event.
const consumerInfoRefresh = 10 * time.Second

type consumeConfig struct {
	ackWait     time.Duration
	maxDeliver  int
	backoff     []time.Duration
	concurrency int
	orderKey    func(subject string) string // WithOrderKey
}

// ConsumeOption configures Consume.
type ConsumeOption func(*consumeConfig)

// WithAckWait sets how long the server waits for an acknowledgement before redelivering (default
// DefaultAckWait). Handlers that run longer are kept alive with progress acknowledgements.
func WithAckWait(d time.Duration) ConsumeOption { return func(c *consumeConfig) { c.ackWait = d } }

// WithMaxDeliver caps how many times an event is delivered: after the n-th failed delivery it goes
// to the failed-event log. The default, DefaultMaxDeliver (UnlimitedDeliveries), never gives up on
// transient errors. The cap is kept by Consume, not by the server (whose consumer never stops
// redelivering), so that an event whose failure cannot be recorded yet is not dropped.
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
// A handler error is retried after the backoff delay, without limit unless WithMaxDeliver caps the
// deliveries; each retry is logged (as an error from delivery LongRetryDeliveries on). An error
// marked Permanent, a panic of h (recovered, logged with its stack) and, with a cap, the last
// allowed delivery's error put the event in the failed-event log and terminate it; the consumer
// goes on with the next events. An event is terminated only once the log holds it: while the log
// cannot be written (bucket unreachable, no quorum, missing permission) the event is redelivered
// after the backoff delay and handled again. Consume also runs the retries that operators request for this
// consumer's failed events (RetryFailedEvent).
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
	case cfg.maxDeliver < 1 && cfg.maxDeliver != UnlimitedDeliveries:
		return invalid("max_deliver", "must be at least 1, or UnlimitedDeliveries")
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
		// The cap of WithMaxDeliver is applied by handle: the server must keep redelivering an
		// event whose failure the failed-event log could not record yet.
		MaxDeliver: UnlimitedDeliveries,
	})
	if err != nil {
		return failed(err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, stop := context.WithCancel(ctx)
	defer stop() // before wg.Wait: ends the redrive watch when Consume fails
	wg.Go(func() {
		s.watchRedrives(ctx, redriveTarget{
			handler: name, kind: FailedByConsumer, stream: stream, exclusive: true,
			apply: func(ctx context.Context, ev Event) error { return safeCall(ctx, h, ev) },
		})
	})
	metricConsumerPending.WithLabelValues(name, stream).Set(float64(cons.CachedInfo().NumPending))
	wg.Go(func() { s.refreshConsumerInfo(ctx, cons, name, stream, filterSubjects) })
	// A token in slots is a handler that may run; events are pulled only for free slots, so that
	// none sits in a client buffer while its ack wait runs out.
	slots := make(chan struct{}, cfg.concurrency)
	var chains keyChains
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
				var (
					wait <-chan struct{}
					key  string
				)
				done := func() {}
				if cfg.orderKey != nil { // taken here, in stream order
					key = cfg.orderKey(msg.Subject())
					wait, done = chains.take(key)
				}
				wg.Go(func() {
					defer func() { <-slots }()
					defer done()
					if cfg.orderKey == nil {
						s.handle(ctx, name, cfg, msg, h)
						return
					}
					if wait != nil { // until the handler of the event before it returns (it does when ctx ends)
						awaitTurn(msg, wait, cfg.ackWait)
					}
					s.handleInOrder(ctx, name, cfg, msg, h, &chains, key)
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

// refreshConsumerInfo reads the consumer's info every s.infoRefresh until ctx is done and sets
// the pending gauge and the age of the oldest unacknowledged event from it: the first event of
// the consumer's subjects after its ack floor, which may be waiting for a redelivery (back-off)
// rather than being handled.
func (s *Store) refreshConsumerInfo(ctx context.Context, cons jetstream.Consumer, name, stream string, filters []string) {
	defer unacked.setOldest(name, time.Time{})
	t := time.NewTicker(s.infoRefresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		ictx, cancel := context.WithTimeout(ctx, s.js.Options().DefaultTimeout)
		info, err := cons.Info(ictx)
		if err == nil {
			metricConsumerPending.WithLabelValues(name, stream).Set(float64(info.NumPending))
			var oldest time.Time
			if oldest, err = s.oldestUnacked(ictx, stream, filters, info); err == nil {
				unacked.setOldest(name, oldest)
			}
		}
		cancel()
		if err != nil && ctx.Err() == nil {
			s.logger.DebugContext(ctx, "work consumer info refresh failed", "consumer", name, "stream", stream, "error", err)
		}
	}
}

// oldestUnacked returns the stream timestamp of the consumer's oldest unacknowledged event, the
// first one of its subjects after its ack floor; zero when it has acknowledged everything.
func (s *Store) oldestUnacked(ctx context.Context, stream string, filters []string, info *jetstream.ConsumerInfo) (time.Time, error) {
	if info.NumAckPending == 0 && info.NumPending == 0 {
		return time.Time{}, nil
	}
	if len(filters) == 0 {
		filters = []string{">"}
	}
	var (
		first  uint64
		oldest time.Time
	)
	for _, f := range filters {
		_, err := s.directGet(ctx, stream, directGetRequest{Seq: info.AckFloor.Stream + 1, NextFor: f}, func(m rawMsg) error {
			if first != 0 && m.seq >= first {
				return nil
			}
			ts, err := time.Parse(time.RFC3339Nano, m.header.Get(jetstream.TimeStampHeaer))
			if err != nil {
				return fmt.Errorf("eventstore: %s/%d: bad %s header: %w", stream, m.seq, jetstream.TimeStampHeaer, err)
			}
			first, oldest = m.seq, ts
			return nil
		})
		if err != nil && !errors.Is(err, errNoMessage) {
			return time.Time{}, err
		}
	}
	return oldest, nil
}

// handle runs h on one delivery and acknowledges it accordingly. It returns the delay after which
// the event is redelivered when it was left for a retry, 0 when it was handled (acknowledged, or
// terminated) or handed back at shutdown.
func (s *Store) handle(ctx context.Context, name string, cfg consumeConfig, msg jetstream.Msg, h Handler) time.Duration {
	md, err := msg.Metadata()
	if err != nil {
		s.logger.ErrorContext(ctx, "work consumer got a message without metadata", "consumer", name, "subject", msg.Subject(), "error", err)
		_ = msg.Term()
		return 0
	}
	defer unacked.start(name, md.Timestamp)()
	metricConsumerPending.WithLabelValues(name, md.Stream).Set(float64(md.NumPending))
	if md.NumDelivered > 1 {
		metricConsumerRedeliveries.WithLabelValues(name).Inc()
	}
	ev, err := EventFromMsg(msg)
	if err != nil { // no redelivery can fix a malformed envelope
		return s.giveUp(ctx, name, cfg, msg, md, ev, err)
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
	err = safeCall(withDeliveries(ctx, md.NumDelivered), h, ev)
	close(done)

	switch {
	case err == nil:
		if aerr := msg.Ack(); aerr != nil {
			s.logger.WarnContext(ctx, "work consumer ack failed; the event will be redelivered",
				"consumer", name, "stream", md.Stream, "seq", md.Sequence.Stream, "error", aerr)
		}
	case IsPermanent(err):
		return s.giveUp(ctx, name, cfg, msg, md, ev, err)
	case ctx.Err() != nil: // shutting down: hand the event to another replica now
		_ = msg.Nak()
	case cfg.maxDeliver != UnlimitedDeliveries && md.NumDelivered >= uint64(cfg.maxDeliver):
		return s.giveUp(ctx, name, cfg, msg, md, ev, err)
	default:
		delay := cfg.delay(md.NumDelivered)
		attrs := []any{"consumer", name, "stream", md.Stream, "seq", md.Sequence.Stream, "event_id", ev.ID, "event_type", ev.Type,
			"delivery", md.NumDelivered, "max_deliver", cfg.maxDeliver, "retry_in", delay, "error", err}
		if md.NumDelivered >= LongRetryDeliveries {
			metricConsumerLongRetries.WithLabelValues(name).Inc()
			s.logger.ErrorContext(ctx, "work consumer handler keeps failing on an event; retrying", attrs...)
		} else {
			s.logger.WarnContext(ctx, "work consumer handler failed; retrying", attrs...)
		}
		_ = msg.NakWithDelay(delay)
		return delay
	}
	return 0
}

// delay returns the redelivery delay after the delivered-th failed delivery.
func (c consumeConfig) delay(delivered uint64) time.Duration {
	return c.backoff[max(min(delivered, uint64(len(c.backoff))), 1)-1]
}

// giveUp records a delivery that will not be retried and terminates it once the failed-event log
// holds it. While the log cannot record it the event is not terminated but redelivered after the
// backoff delay, so that no event leaves the consumer without an entry in the log; it returns that
// delay (0 when the event was terminated).
func (s *Store) giveUp(ctx context.Context, name string, cfg consumeConfig, msg jetstream.Msg, md *jetstream.MsgMetadata, ev Event, err error) time.Duration {
	fe := FailedEvent{
		Handler: name, Kind: FailedByConsumer,
		Stream: md.Stream, Sequence: md.Sequence.Stream, Subject: msg.Subject(),
		EventID: ev.ID, EventType: ev.Type, Error: err.Error(), Deliveries: md.NumDelivered,
	}
	attrs := append([]any{
		"consumer", name, "stream", md.Stream, "seq", md.Sequence.Stream, "subject", msg.Subject(),
		"event_id", ev.ID, "event_type", ev.Type, "deliveries", md.NumDelivered, "permanent", IsPermanent(err), "error", err},
		panicAttrs(err)...)
	if rerr := s.recordFailure(ctx, fe); rerr != nil {
		metricFailedRecordErrors.WithLabelValues(name, FailedByConsumer).Inc()
		delay := cfg.delay(md.NumDelivered)
		s.logger.ErrorContext(ctx, "work consumer cannot record a failed event in the failed-event log; keeping the event and retrying",
			append(attrs, "record_error", rerr, "retry_in", delay)...)
		_ = msg.NakWithDelay(delay)
		return delay
	}
	s.logger.ErrorContext(ctx, "work consumer gave up on event; recorded in the failed-event log", attrs...)
	if terr := msg.TermWithReason(truncate(err.Error(), 256)); terr != nil {
		// The event comes back after the ack wait and is recorded (idempotently) again.
		s.logger.WarnContext(ctx, "work consumer could not terminate a recorded event", "consumer", name,
			"stream", md.Stream, "seq", md.Sequence.Stream, "error", terr)
	}
	return 0
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
