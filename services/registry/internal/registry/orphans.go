package registry

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/eventstore"
)

// OrphanReactorConsumer is the durable consumer of the orphan reactor, shared by the registry's
// replicas.
const OrphanReactorConsumer = "registry-orphan-reactor"

// OrphanRequestPrefix starts the request id of the orphaning the reactor records, followed by the
// source event's id and a digest of the departed principal: a redelivered directory_synced event
// orphans each agent once.
const OrphanRequestPrefix = "orphaned-by:"

// DefaultOrphanConcurrency is how many agents the reactor orphans at once.
const DefaultOrphanConcurrency = 8

// directorySyncedFilter matches the directory_synced events of every tenant on the TENANTS stream.
var directorySyncedFilter = eventstore.EventSubject("*", AggregateTenant, "*", strings.TrimPrefix(EventDirectorySynced, AggregateTenant+"."))

// OrphanConsumer runs a durable consumer (eventstore.Store.Consume).
type OrphanConsumer interface {
	Consume(ctx context.Context, name, stream string, filterSubjects []string, h eventstore.Handler, opts ...eventstore.ConsumeOption) error
}

// OrphanReactorConfig configures an OrphanReactor.
type OrphanReactorConfig struct {
	// Consumer runs the durable consumer. Required.
	Consumer OrphanConsumer
	// Service records the orphanings and finds the agents. Required.
	Service *Service
	// AgentsLastSequence returns the AGENTS stream's last sequence: before it looks for a departed
	// principal's agents, the reactor waits until the agents read model has applied it, so that an
	// agent registered before the departure is not missed. Required.
	AgentsLastSequence func(ctx context.Context) (uint64, error)
	// Concurrency is how many agents are orphaned at once; default DefaultOrphanConcurrency.
	Concurrency int
	// Logger logs; default slog.Default().
	Logger *slog.Logger
}

// OrphanReactor turns departures into orphaned agents: for each principal a tenant.directory_synced
// event marks DEPARTED, it records agent.orphaned on every agent of that tenant, not RETIRED or
// REJECTED, that the principal owns or sponsors. It consumes at least once and acknowledges an
// event only once every agent is done; the request id of each orphaning derives from the source
// event and the principal, so a redelivered event, or one redelivered after a crash halfway,
// orphans each agent exactly once.
type OrphanReactor struct {
	consumer    OrphanConsumer
	svc         *Service
	lastSeq     func(ctx context.Context) (uint64, error)
	concurrency int
	log         *slog.Logger
}

// NewOrphanReactor returns a reactor.
func NewOrphanReactor(cfg OrphanReactorConfig) (*OrphanReactor, error) {
	if cfg.Consumer == nil || cfg.Service == nil || cfg.AgentsLastSequence == nil {
		return nil, errors.New("registry: OrphanReactorConfig needs a Consumer, a Service and AgentsLastSequence")
	}
	r := &OrphanReactor{consumer: cfg.Consumer, svc: cfg.Service, lastSeq: cfg.AgentsLastSequence, concurrency: cfg.Concurrency, log: cfg.Logger}
	if r.concurrency <= 0 {
		r.concurrency = DefaultOrphanConcurrency
	}
	if r.log == nil {
		r.log = slog.Default()
	}
	return r, nil
}

// Delays between two runs of a consumer that failed.
const (
	orphanRetryMin = 100 * time.Millisecond
	orphanRetryMax = 10 * time.Second
)

// Run consumes directory_synced events until ctx is done, then returns nil. A consumer that fails
// is logged and run again after a growing delay: the events wait in the stream.
func (r *OrphanReactor) Run(ctx context.Context) error {
	for delay := orphanRetryMin; ; delay = min(2*delay, orphanRetryMax) {
		err := r.consumer.Consume(ctx, OrphanReactorConsumer, eventstore.StreamTenants, []string{directorySyncedFilter}, r.Handle)
		if ctx.Err() != nil {
			return nil
		}
		if err == nil {
			err = errors.New("consumer stopped")
		}
		r.log.ErrorContext(ctx, "orphan reactor consumer failed; running it again", "consumer", OrphanReactorConsumer, "retry_in", delay.String(), "error", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
	}
}

// Handle orphans the agents of the principals a directory_synced event marks departed; other
// events are ignored. Errors are transient (redelivered) except for events no retry can fix
// (eventstore.Permanent).
func (r *OrphanReactor) Handle(ctx context.Context, e eventstore.Event) error {
	if e.Type != EventDirectorySynced {
		return nil
	}
	msg, err := decodeDirectorySynced(e)
	if err != nil {
		return eventstore.Permanent(err)
	}
	if len(msg.GetDeparted()) == 0 {
		return nil
	}
	last, err := r.lastSeq(ctx)
	if err != nil {
		return fmt.Errorf("orphan reactor: the agents stream's last sequence: %w", err)
	}
	if err := r.svc.agentRunner.WaitFor(ctx, last); err != nil && !errors.Is(err, eventstore.ErrBeyondLastSequence) {
		return fmt.Errorf("orphan reactor: waiting for the agents read model: %w", err)
	}
	tenant := e.Metadata.Tenant
	md := eventstore.Metadata{
		Actor:         eventstore.Actor{ID: "agentid/registry", Kind: eventstore.ActorService},
		CorrelationID: e.Metadata.CorrelationID,
	}
	for _, p := range msg.GetDeparted() {
		if ValidatePrincipalID("departed", p) != nil {
			return eventstore.Permanent(fmt.Errorf("directory sync %s: malformed departed principal %q", e.ID, printable(p)))
		}
		ids := r.svc.agents.AgentsOwnedBy(tenant, p)
		if err := r.orphanAll(ctx, tenant, p, ids, OrphanRequestID(e.ID, p), md); err != nil {
			return err
		}
	}
	return nil
}

// orphanAll orphans the agents ids of tenant by the departure of principal, r.concurrency at a
// time; it returns the first error once every started orphaning has ended.
func (r *OrphanReactor) orphanAll(ctx context.Context, tenant, principal string, ids []string, requestID string, md eventstore.Metadata) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	work := make(chan string)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	for range min(r.concurrency, max(len(ids), 1)) {
		wg.Go(func() {
			for id := range work {
				_, err := r.svc.OrphanAgent(ctx, OrphanAgent{Tenant: tenant, AgentID: id, Principal: principal, RequestID: requestID}, md)
				if err != nil && !errs.Is(err, errs.KindNotFound) {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("orphan reactor: agent %s: %w", AgentName(tenant, id), err)
					}
					mu.Unlock()
					cancel()
				}
			}
		})
	}
feed:
	for _, id := range ids {
		select {
		case work <- id:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	if firstErr == nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return firstErr
}

// OrphanRequestID is the request id of the orphaning that source event eventID records for the
// departure of principal.
func OrphanRequestID(eventID, principal string) string {
	sum := sha256.Sum256([]byte(principal))
	return OrphanRequestPrefix + eventID + ":" + base64.RawURLEncoding.EncodeToString(sum[:9])
}

// AgentsOwnedBy returns the ids of tenant's agents, not RETIRED or REJECTED, that principal owns
// or sponsors, in registration order (from the owner and sponsor indexes of the read model).
func (p *AgentProjection) AgentsOwnedBy(tenant, principal string) []string {
	return p.OwnedOrSponsoredBy(tenant, principal)
}
