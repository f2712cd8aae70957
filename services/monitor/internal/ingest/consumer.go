package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/failpoint"
	"github.com/agentid/agentid/pkg/observability"
	"github.com/agentid/agentid/services/monitor/internal/agents"
	"github.com/agentid/agentid/services/monitor/internal/store"
)

// ConsumerName is the durable consumer on the TELEMETRY stream shared by every monitor replica.
const ConsumerName = "monitor-telemetry"

// FilterSubject selects every telemetry event.
const FilterSubject = "telemetry.>"

// Defaults of Config.
const (
	// DefaultConcurrency is how many deliveries are in flight at once; they are group-committed.
	DefaultConcurrency = 256
	// DefaultMaxBatch caps the rows of one insert (an event with more rows is inserted alone). A
	// commit's fixed cost (a transaction, a WAL fsync, the duplicate check's queries) is shared by
	// its rows: under a backlog, commits of 20,000 rows cost both stores a tenth to a fifth less CPU
	// per row than commits of 5,000. The rows in flight stay bounded by Concurrency deliveries.
	DefaultMaxBatch = 20000
	// DefaultLinger is how long a commit waits for more rows after its first event.
	DefaultLinger = 200 * time.Millisecond
)

// Inserter stores telemetry rows (implemented by every store.Store).
type Inserter interface {
	Insert(ctx context.Context, events []store.Event) error
}

// Source delivers events through a durable consumer (implemented by *eventstore.Store).
type Source interface {
	Consume(ctx context.Context, name, stream string, filterSubjects []string, h eventstore.Handler, opts ...eventstore.ConsumeOption) error
}

// Config configures a Consumer.
type Config struct {
	// Source delivers the TELEMETRY stream; required.
	Source Source
	// Store receives the rows; required.
	Store Inserter
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Concurrency is how many deliveries are handled at once (default DefaultConcurrency).
	Concurrency int
	// MaxBatch caps the rows of one insert (default DefaultMaxBatch).
	MaxBatch int
	// Linger is how long a commit waits for more events after its first one, unless MaxBatch
	// rows arrive sooner (default DefaultLinger; negative commits whatever is waiting at once).
	// A commit has a fixed cost (a transaction and a WAL fsync, about 1.5 ms of CPU with DuckDB)
	// that fewer, larger commits share; it delays acknowledgements, never beyond the ack wait.
	Linger time.Duration
	// InsertTimeout bounds each insert of a batch (default DefaultInsertTimeout); a timed-out
	// insert is an error and the batch's events are redelivered.
	InsertTimeout time.Duration
	// ConsumeOptions are passed on to Source.Consume (ack wait, redelivery backoff ...).
	ConsumeOptions []eventstore.ConsumeOption
	// Registerer receives the consumer's metrics; default prometheus.DefaultRegisterer.
	Registerer prometheus.Registerer
	// Directory, if set, enriches each row with what the registry knows of its agent or client
	// (owner, environment when the event has none) and flags a row whose agent or client id it
	// does not know (AgentKnown false: a ghost, kept, never dropped). Without it every row counts
	// as known.
	Directory agents.Directory
	// Ready, if set, is waited for before consuming (the Directory's projections catching up, so
	// that a registered agent is not taken for a ghost at start).
	Ready func(ctx context.Context) error
	// OnStored, if set, is called with the rows of each batch once they are durably stored (the
	// detection engine), one batch at a time in commit order, before the batch's events are
	// released for acknowledgement. The next batch is inserted while it runs, and waits, stored,
	// until it returns: it must keep up with the inserts, or it slows ingest. If the consumer stops
	// (ctx done) while it runs, the batch's events are not acknowledged: they are redelivered and
	// their rows handed on again. A panic of the consumer does not wait for it (its ctx is
	// cancelled). The rows are its own; a redelivered event's rows may come again.
	OnStored func(ctx context.Context, rows []store.Event)
	// Activity, if set, receives an agent.active event (ActivitySubject) at most once per
	// registered agent and hour in which its activity is ingested: the registry's last_active_time.
	Activity ActivityPublisher
}

// Consumer copies the TELEMETRY stream into the telemetry store. Deliveries are handled
// concurrently and group-committed: an insert takes the events that arrive within Config.Linger of
// its first one (at most Config.MaxBatch rows), and each event is acknowledged only once its insert
// has committed. Redelivered events are no-ops, since
// rows are keyed by the CloudEvents id (or, for access events, by an id derived from it).
type Consumer struct {
	cfg     Config
	reqs    chan insertReq
	running atomic.Bool
	done    chan struct{} // closed when the commit loop of the current run has stopped

	accessLost *prometheus.CounterVec
	refused    *prometheus.CounterVec
	ghostRows  prometheus.Counter

	insertTimeouts prometheus.Counter
	insertFailures prometheus.Counter

	activity *activityReporter // nil without Config.Activity
}

type insertReq struct {
	rows        []store.Event
	redelivered bool // the event was delivered before (store.WithRedelivered)
	result      chan error
}

// NewConsumer returns a Consumer; run it with Run.
func NewConsumer(cfg Config) (*Consumer, error) {
	if cfg.Source == nil || cfg.Store == nil {
		return nil, errors.New("ingest: Config.Source and Config.Store are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = DefaultMaxBatch
	}
	if cfg.Linger == 0 {
		cfg.Linger = DefaultLinger
	}
	if cfg.Registerer == nil {
		cfg.Registerer = prometheus.DefaultRegisterer
	}
	if cfg.InsertTimeout <= 0 {
		cfg.InsertTimeout = DefaultInsertTimeout
	}
	c := &Consumer{cfg: cfg, reqs: make(chan insertReq), insertTimeouts: registerInsertTimeouts(cfg.Registerer)}
	if cfg.Activity != nil {
		c.activity = newActivityReporter(cfg.Activity, cfg.Logger)
	}
	c.accessLost = observability.Register(cfg.Registerer, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "monitor_access_events_lost_total",
		Help: "Access events lost before the telemetry store, by cause: dropped by the reporting resource server (its buffer was full) or skipped (another tenant than its batch). A redelivered batch may be counted again; the access.dropped rows are exact.",
	}, []string{"cause"}))
	c.refused = observability.Register(cfg.Registerer, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "monitor_telemetry_events_refused_total",
		Help: "Telemetry events refused as malformed (no id, no tenant, a row out of bounds) and put in the failed-event log with the reason, by reason.",
	}, []string{"reason"}))
	c.insertFailures = observability.Register(cfg.Registerer, prometheus.NewCounter(prometheus.CounterOpts{
		Name: "monitor_telemetry_insert_failures_total",
		Help: "Group commits of telemetry rows that failed (the store unavailable, refusing or timing out); their events were not acknowledged and are redelivered.",
	}))
	c.ghostRows = observability.Register(cfg.Registerer, prometheus.NewCounter(prometheus.CounterOpts{
		Name: "monitor_telemetry_ghost_rows_total",
		Help: "Telemetry rows stored for an agent or client id the registry does not know (flagged agent_known = false).",
	}))
	return c, nil
}

// Run consumes until ctx is done. It may be called again after it returns, not concurrently.
func (c *Consumer) Run(ctx context.Context) error {
	if !c.running.CompareAndSwap(false, true) {
		return errors.New("ingest: consumer is already running")
	}
	defer c.running.Store(false)
	done := make(chan struct{})
	c.done = done
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(done)
		c.commitLoop(gctx)
		return nil
	})
	g.Go(func() error {
		if c.cfg.Ready != nil {
			if err := c.cfg.Ready(gctx); err != nil {
				if gctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("ingest: waiting to be ready: %w", err)
			}
		}
		opts := append([]eventstore.ConsumeOption{eventstore.WithConcurrency(c.cfg.Concurrency)}, c.cfg.ConsumeOptions...)
		return c.cfg.Source.Consume(gctx, ConsumerName, eventstore.StreamTelemetry, []string{FilterSubject}, c.Handle, opts...)
	})
	return g.Wait()
}

// Handle maps one event and waits until its rows are committed. A malformed event (no id, no
// tenant, a row the store refuses) is refused permanently: it goes to the failed-event log with
// the reason at once and is counted (monitor_telemetry_events_refused_total), never dropped
// silently; a payload that does not decode is stored with the decode error in its detail. A store
// failure is returned as is: the event waits in the stream and is redelivered. Access events the
// event's batch lost are logged and counted once its rows are committed.
func (c *Consumer) Handle(ctx context.Context, e eventstore.Event) error {
	if e.Type == TypeAgentActive {
		return nil // derived from rows stored already (see TypeAgentActive)
	}
	rows, lost, err := mapEvent(e)
	if err != nil {
		return c.refuse(ctx, e, reasonOf(err), err)
	}
	c.enrich(rows)
	// Validate alone, so that one bad event can never fail a whole group commit.
	rows, err = store.Normalize(rows)
	if err != nil {
		return c.refuse(ctx, e, "invalid_row", fmt.Errorf("ingest: event %s (%s): %w", e.ID, e.Type, err))
	}
	if len(rows) > 0 {
		if err := c.insert(ctx, rows); err != nil {
			return err
		}
		c.reportActivity(ctx, rows)
	}
	if lost.dropped > 0 || lost.skipped > 0 {
		c.accessLost.WithLabelValues("dropped").Add(float64(lost.dropped))
		c.accessLost.WithLabelValues("skipped").Add(float64(lost.skipped))
		c.cfg.Logger.WarnContext(ctx, "access events lost before the telemetry store",
			"tenant", e.Metadata.Tenant, "reporter", e.Metadata.Actor.ID, "event_id", e.ID,
			"dropped_by_reporter", lost.dropped, "skipped_other_tenant", lost.skipped)
	}
	return nil
}

// refuse counts and logs a malformed event and marks its error permanent.
func (c *Consumer) refuse(ctx context.Context, e eventstore.Event, reason string, err error) error {
	c.refused.WithLabelValues(reason).Inc()
	c.cfg.Logger.WarnContext(ctx, "malformed telemetry event refused; recorded in the failed-event log",
		"event_id", e.ID, "event_type", e.Type, "stream_seq", e.Sequence, "reason", reason, "error", err)
	return eventstore.Permanent(err)
}

func reasonOf(err error) string {
	switch {
	case errors.Is(err, ErrNoTenant):
		return "no_tenant"
	case errors.Is(err, ErrNoID):
		return "no_id"
	}
	return "invalid"
}

// ClientDirectory is a Directory that also follows the issuer's clients (CREDENTIALS), so that a
// client id it does not know is a ghost.
type ClientDirectory interface {
	agents.Directory
	// KnowsClients reports whether client ids are followed.
	KnowsClients() bool
}

func knowsClients(d agents.Directory) bool {
	cd, ok := d.(ClientDirectory)
	return ok && cd.KnowsClients()
}

// activityKinds are the kinds of rows an agent's credential produces: only they flag a ghost. A
// policy decision is not one: it is taken on a registration or an update (a dry run included),
// whoever asked for it.
var activityKinds = map[string]bool{KindAccess: true, TypeTokenRequested: true}

// enrich fills in what the Directory knows of each row's agent (by name, else by client id):
// the agent when only the client was named, the owner, the environment when the event has none,
// and whether the agent or client of an activity row is registered at all.
func (c *Consumer) enrich(rows []store.Event) {
	for i := range rows {
		r := &rows[i]
		r.AgentKnown = true
		if c.cfg.Directory == nil {
			continue
		}
		key := first(r.Agent, r.ClientID)
		if key == "" {
			continue
		}
		info, ok := c.cfg.Directory.Lookup(r.Tenant, key)
		if !ok && r.Agent != "" && r.ClientID != "" {
			info, ok = c.cfg.Directory.Lookup(r.Tenant, r.ClientID)
		}
		if !ok {
			// Only activity is a ghost's: a milestone may reach the monitor before the registry's
			// event does.
			// A client named without an agent is a ghost only when the Directory knows clients
			// (it follows CREDENTIALS) or the issuer itself refused it as unknown.
			if activityKinds[r.Kind] && (r.Agent != "" || r.Outcome == "invalid_client" || knowsClients(c.cfg.Directory)) {
				r.AgentKnown = false
				c.ghostRows.Inc()
			}
			continue
		}
		r.Agent = first(r.Agent, info.Name)
		r.Owner = info.Owner
		r.Environment = first(r.Environment, info.Environment)
	}
}

// insert hands rows to the commit loop and waits for their commit.
func (c *Consumer) insert(ctx context.Context, rows []store.Event) error {
	req := insertReq{rows: rows, redelivered: eventstore.Deliveries(ctx) > 1, result: make(chan error, 1)}
	select {
	case c.reqs <- req:
	case <-ctx.Done():
		return ctx.Err()
	case <-c.done:
		return errors.New("ingest: consumer stopped")
	}
	select {
	case err := <-req.result:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// commitLoop inserts one batch at a time until ctx is done: the rows that arrive within the
// linger of the batch's first event, or at most MaxBatch rows. With Config.OnStored, a stored
// batch is handed to handOff and the next batch is collected and inserted while OnStored runs on
// it (a batch stored meanwhile waits for the hand-off, so at most two stored batches are held);
// a batch's events are released only once OnStored has returned on its rows.
//
// When ctx is done it returns once the hand-off has finished. A panic (a store's Insert, say) does
// not wait for the hand-off: OnStored may wait for ctx (publishing alerts until they are stored),
// which a panic does not cancel, and the process must crash at once, as it did before the
// hand-off, rather than hang with every Handle blocked. The hand-off's context is cancelled on the
// way out; whatever was not acknowledged is redelivered.
func (c *Consumer) commitLoop(ctx context.Context) {
	if c.cfg.OnStored == nil {
		c.storeBatches(ctx, nil)
		return
	}
	handCtx, cancelHandOff := context.WithCancel(ctx)
	defer cancelHandOff()
	stored := make(chan storedBatch)
	var handing sync.WaitGroup
	handing.Go(func() { c.handOff(handCtx, stored) })
	c.storeBatches(ctx, stored)
	// Reached only when storeBatches returned (ctx done), never while it panics.
	close(stored)
	handing.Wait()
}

// storeBatches collects and inserts batches until ctx is done (see commitLoop), and hands each
// stored batch to stored (nil: releases it at once).
func (c *Consumer) storeBatches(ctx context.Context, stored chan<- storedBatch) {
	rows := make([]store.Event, 0, c.cfg.MaxBatch)
	linger := time.NewTimer(time.Hour)
	linger.Stop()
	for {
		batch := make([]insertReq, 0, c.cfg.Concurrency) // its own: a hand-off may still hold the last one
		rows = rows[:0]
		select {
		case r := <-c.reqs:
			batch, rows = append(batch, r), append(rows, r.rows...)
		case <-ctx.Done():
			return
		}
		if c.cfg.Linger > 0 {
			linger.Reset(c.cfg.Linger)
		}
	collect:
		for len(rows) < c.cfg.MaxBatch {
			if c.cfg.Linger < 0 {
				select {
				case r := <-c.reqs:
					batch, rows = append(batch, r), append(rows, r.rows...)
				default:
					break collect
				}
				continue
			}
			select {
			case r := <-c.reqs:
				batch, rows = append(batch, r), append(rows, r.rows...)
			case <-linger.C:
				break collect
			case <-ctx.Done():
				break collect
			}
		}
		linger.Stop()
		// Finish a started insert even when stopping, so acknowledged work is never left half done.
		err := failpoint.Inject(ctx, failpoint.TelemetryBeforeCommit)
		if err == nil {
			err = c.storeBatch(ctx, batch, rows)
		}
		if err == nil {
			err = failpoint.Inject(ctx, failpoint.TelemetryAfterCommit)
		}
		if err != nil {
			c.insertFailures.Inc()
			c.cfg.Logger.ErrorContext(ctx, "telemetry insert failed; events will be redelivered",
				"events", len(batch), "rows", len(rows), "error", err)
		}
		if err == nil && stored != nil && len(rows) > 0 {
			// Waits while the previous batch is still being handed on.
			stored <- storedBatch{reqs: batch, rows: slices.Clone(rows)}
			continue
		}
		release(batch, err)
	}
}

// storedBatch is a committed batch waiting for Config.OnStored: its requests and its rows.
type storedBatch struct {
	reqs []insertReq
	rows []store.Event
}

// handOff calls Config.OnStored on each stored batch, in commit order, then releases the batch's
// events. Before the acknowledgements, so what OnStored must finish (the alerts of the rows on
// ALERTS) survives a crash: unfinished, the events are redelivered and seen again. If the consumer
// stops while OnStored runs, the batch's events are released with an error (not acknowledged).
func (c *Consumer) handOff(ctx context.Context, stored <-chan storedBatch) {
	for b := range stored {
		var err error
		c.cfg.OnStored(ctx, b.rows)
		if ctx.Err() != nil {
			err = fmt.Errorf("ingest: stopped before the stored rows were handed on: %w", ctx.Err())
		}
		release(b.reqs, err)
	}
}

// release tells the handlers of a batch's events how its commit (and hand-off) ended.
func release(batch []insertReq, err error) {
	for _, r := range batch {
		r.result <- err
	}
}
