package seed

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentid/agentid/pkg/eventstore"
)

// LifecycleConsumer is the lifecycle service's durable work consumer on stream AGENTS
// (services/lifecycle/internal/lifecycle.AgentEventsConsumer): it starts a provisioning workflow
// for every agent.registered event it is handed.
const LifecycleConsumer = "lifecycle-agent-events"

// fetchWait bounds one pull of MarkHandled.
const fetchWait = 2 * time.Second

// ErrForeignEvent marks a pending delivery of a work consumer that this package did not write.
var ErrForeignEvent = errors.New("seed: the consumer has an unhandled event that was not seeded")

// ErrConsumerInUse marks a work consumer that a running process is pulling from.
var ErrConsumerInUse = errors.New("seed: a running process consumes from the consumer")

// HandoffResult counts what MarkHandled did.
type HandoffResult struct {
	// Acked is the number of seeded deliveries acknowledged.
	Acked int
}

// MarkHandled acknowledges, on the durable work consumer name of stream, every pending delivery of
// an event this package wrote (ce-source Source), so that the service owning the consumer does not
// act on seeded events: the lifecycle would otherwise start a provisioning workflow for every seeded
// agent. The consumer must exist (the platform has run once) and nothing may be consuming from it
// (the platform is stopped): otherwise it fails with ErrConsumerInUse and acknowledges nothing. A
// pending delivery of any other event is given back at once (Nak) and fails the call with
// ErrForeignEvent: handling it is the platform's job. It returns once the consumer has nothing
// pending, or when ctx ends.
func MarkHandled(ctx context.Context, js jetstream.JetStream, stream, name string) (HandoffResult, error) {
	var res HandoffResult
	cons, err := js.Consumer(ctx, stream, name)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return res, fmt.Errorf("seed: consumer %s on stream %s does not exist: start the platform once (and stop it) before seeding, or its first start would act on every seeded event", name, stream)
	}
	if err != nil {
		return res, fmt.Errorf("seed: consumer %s on stream %s: %w", name, stream, err)
	}
	info := cons.CachedInfo()
	if info.NumWaiting > 0 {
		return res, fmt.Errorf("%w: %s on stream %s has %d waiting pull requests: stop the platform first", ErrConsumerInUse, name, stream, info.NumWaiting)
	}
	for {
		info, err := cons.Info(ctx)
		if err != nil {
			return res, fmt.Errorf("seed: consumer %s on stream %s: %w", name, stream, err)
		}
		if info.NumPending == 0 && info.NumAckPending == 0 {
			return res, nil
		}
		batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(fetchWait))
		if err != nil {
			return res, fmt.Errorf("seed: fetch from consumer %s: %w", name, err)
		}
		var foreign error
		for msg := range batch.Messages() {
			if foreign != nil || msg.Headers().Get(eventstore.HeaderSource) != Source {
				_ = msg.Nak()
				if foreign == nil {
					foreign = fmt.Errorf("%w: %s (%s): start the platform so that it handles it, stop it and seed again", ErrForeignEvent, msg.Subject(), msg.Headers().Get(eventstore.HeaderType))
				}
				continue
			}
			if err := msg.DoubleAck(ctx); err != nil {
				return res, fmt.Errorf("seed: acknowledge %s on consumer %s: %w", msg.Subject(), name, err)
			}
			res.Acked++
		}
		if foreign != nil {
			return res, foreign
		}
		if err := batch.Error(); err != nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, jetstream.ErrNoMessages) {
			return res, fmt.Errorf("seed: fetch from consumer %s: %w", name, err)
		}
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
	}
}
