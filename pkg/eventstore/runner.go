package eventstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/nats-io/nuid"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Handler handles one event; a returned error means "not handled".
type Handler func(ctx context.Context, e Event) error

// Projection is a read model built from events. Name identifies it in logs, consumer names and the
// failed-event log; put the projection's version in it (e.g. "agents-v2") so that a changed
// projection is rebuilt under a new name. Apply is never called concurrently; it sees the events in
// stream order, except for a failed event retried on an operator's request (RetryFailedEvent),
// which comes late.
type Projection interface {
	Name() string
	Apply(ctx context.Context, e Event) error
}

// Runner replays a stream into a projection and then follows it live, tracking the stream sequence
// it has applied. Every replica runs its own Runner over an ephemeral ordered consumer.
type Runner struct {
	s       *Store
	p       Projection
	stream  string
	filters []string

	running atomic.Bool
	applyMu sync.Mutex // serialises Apply between the stream and requested retries

	mu          sync.Mutex
	startPos    uint64          // the position the runner was created with
	failedSeqs  map[uint64]bool // events this runner skipped because Apply failed
	lastSeq     uint64          // the stream's last sequence as last seen
	pos         uint64
	changed     chan struct{} // closed and replaced whenever pos moves or a position sync ends
	waiters     int           // WaitFor calls waiting
	syncing     bool          // syncLoop is running
	syncStarts  uint64        // position syncs started, numbered from 1
	syncedGen   uint64        // number of the last started sync that read the stream's last sequence
	syncHook    func()        // called as each position sync starts (tests)
	started     chan struct{} // closed once Run knows readyTarget
	readyTarget uint64

	ckpt *checkpointing // nil without WithCheckpoints; used by the Run goroutine only
}

// RunnerOption configures a Runner.
type RunnerOption func(*Runner)

// StartAfter makes the runner begin after stream sequence seq, for projections that persist their
// state together with the position they had reached.
func StartAfter(seq uint64) RunnerOption { return func(r *Runner) { r.pos = seq } }

// NewRunner returns a runner applying the events of stream that match filterSubjects (all of them
// when empty) to p.
func (s *Store) NewRunner(p Projection, stream string, filterSubjects []string, opts ...RunnerOption) *Runner {
	r := &Runner{
		s:       s,
		p:       p,
		stream:  stream,
		filters: append([]string(nil), filterSubjects...),
		changed: make(chan struct{}),
		started: make(chan struct{}),
	}
	for _, o := range opts {
		o(r)
	}
	r.startPos = r.pos
	r.failedSeqs = map[uint64]bool{}
	return r
}

// Run applies events until ctx is done, then returns nil. An event that Apply rejects, or on which
// it panics (the panic is recovered and logged with its stack), is logged, recorded in the
// failed-event log and skipped; while the log cannot record it, the runner holds at that event. Once caught up, Run also applies the failed events whose retry an
// operator requests (RetryFailedEvent). Losing the server (a restart, a leader change) is
// logged and retried from Position; only a missing stream ends Run with an error. Run may be called
// again after it returns; it resumes after Position.
func (r *Runner) Run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return fmt.Errorf("eventstore: runner %s is already running", r.p.Name())
	}
	defer r.running.Store(false)
	defer r.stopCheckpoints(ctx)

	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, stop := context.WithCancel(ctx)
	defer stop() // before wg.Wait
	wg.Go(func() {
		if r.Ready(ctx) != nil {
			return
		}
		r.s.watchRedrives(ctx, redriveTarget{
			handler: r.p.Name(), kind: FailedByProjection, stream: r.stream,
			decide: r.decideRedrive, apply: r.apply,
			applied: func(seq uint64) {
				r.mu.Lock()
				defer r.mu.Unlock()
				delete(r.failedSeqs, seq)
			},
			stillFailed: func(seq uint64) bool {
				r.mu.Lock()
				defer r.mu.Unlock()
				return r.failedSeqs[seq]
			},
		})
	})

	const (
		firstRetry = 100 * time.Millisecond
		maxRetry   = 5 * time.Second
	)
	retry := firstRetry
	for {
		applied, err := r.follow(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, jetstream.ErrStreamNotFound):
			return fmt.Errorf("eventstore: runner %s: %w (run EnsureStreams)", r.p.Name(), err)
		}
		if applied {
			retry = firstRetry
		}
		r.s.logger.WarnContext(ctx, "projection runner interrupted; resuming",
			"projection", r.p.Name(), "stream", r.stream, "position", r.Position(), "retry_in", retry, "error", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(retry):
		}
		retry = min(2*retry, maxRetry)
	}
}

// follow applies events from after Position until ctx is done or the consumer fails, and reports
// whether it applied any.
func (r *Runner) follow(ctx context.Context) (applied bool, err error) {
	stream, err := r.s.js.Stream(ctx, r.stream)
	if err != nil {
		return false, err
	}
	if r.ckpt != nil {
		r.restoreCheckpoint(ctx, stream.CachedInfo())
	}
	r.markStarted(stream.CachedInfo().State.LastSeq)
	r.sawLastSeq(stream.CachedInfo().State.LastSeq)

	cfg := jetstream.OrderedConsumerConfig{
		FilterSubjects: r.filters,
		// Each runner gets a consumer of its own: replicas and rebuilds of one projection must
		// not share (and split) a server-side consumer.
		NamePrefix:        consumerToken(r.p.Name()) + "_" + nuid.Next(),
		InactiveThreshold: OrderedInactiveThreshold,
	}
	if start := r.Position(); start > 0 {
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = start + 1
	}
	cons, err := stream.OrderedConsumer(ctx, cfg)
	if err != nil {
		return false, err
	}
	it, err := cons.Messages()
	if err != nil {
		return false, err
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()

	for {
		msg, err := it.Next()
		if err != nil {
			return applied, err
		}
		md, err := msg.Metadata()
		if err != nil {
			return applied, err
		}
		ev, err := EventFromMsg(msg)
		if err == nil {
			err = r.apply(ctx, ev)
		}
		if err != nil {
			if ctx.Err() != nil && !errors.Is(err, ErrPanic) {
				return applied, ctx.Err() // interrupted mid-apply: the event is applied on the next run
			}
			if ferr := r.fail(ctx, msg, md, ev, err); ferr != nil {
				return applied, ferr // not skipped: the event is applied again on the next run
			}
		}
		metricProjectionLag.WithLabelValues(r.p.Name(), r.stream).Set(float64(md.NumPending))
		r.sawLastSeq(md.Sequence.Stream)
		r.advance(md.Sequence.Stream)
		r.afterApply(ctx)
		applied = true
	}
}

// apply runs Apply on ev, turning a panic into a *PanicError.
func (r *Runner) apply(ctx context.Context, ev Event) error {
	r.applyMu.Lock()
	defer r.applyMu.Unlock()
	return safeCall(ctx, r.p.Apply, ev)
}

// decideRedrive says whether a requested retry of the event at seq must be applied by this runner:
// it skipped the event, or started after it (StartAfter). Otherwise, once it has reached seq, it
// has applied the event itself.
func (r *Runner) decideRedrive(ctx context.Context, seq uint64) (bool, error) {
	r.mu.Lock()
	own, start := r.failedSeqs[seq], r.startPos
	r.mu.Unlock()
	if own || seq <= start {
		return true, nil
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := r.WaitFor(wctx, seq); err != nil {
		return false, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failedSeqs[seq], nil
}

// fail records that Apply failed on the event at md and lets the runner skip it. The runner holds
// at the event until the failed-event log has recorded it, retrying the record with a growing
// delay: a projection never skips an event silently. It returns an error only when ctx ends first.
func (r *Runner) fail(ctx context.Context, msg jetstream.Msg, md *jetstream.MsgMetadata, ev Event, err error) error {
	r.s.logger.ErrorContext(ctx, "projection could not apply event", append([]any{
		"projection", r.p.Name(), "stream", md.Stream, "seq", md.Sequence.Stream,
		"subject", msg.Subject(), "event_id", ev.ID, "event_type", ev.Type, "error", err}, panicAttrs(err)...)...)
	fe := FailedEvent{
		Handler: r.p.Name(), Kind: FailedByProjection,
		Stream: md.Stream, Sequence: md.Sequence.Stream, Subject: msg.Subject(),
		EventID: ev.ID, EventType: ev.Type, Error: err.Error(), Deliveries: 1,
	}
	const (
		firstRetry = 100 * time.Millisecond
		maxRetry   = 5 * time.Second
	)
	held := metricProjectionHeld.WithLabelValues(r.p.Name(), md.Stream)
	defer held.Set(0)
	for retry := firstRetry; ; retry = min(2*retry, maxRetry) {
		rerr := r.s.recordFailure(ctx, fe)
		if rerr == nil {
			break
		}
		held.Set(float64(md.Sequence.Stream))
		metricFailedRecordErrors.WithLabelValues(r.p.Name(), FailedByProjection).Inc()
		r.s.logger.ErrorContext(ctx, "projection cannot record a failed event in the failed-event log; holding at the event until it can",
			"projection", r.p.Name(), "stream", md.Stream, "seq", md.Sequence.Stream, "retry_in", retry, "error", rerr)
		if !sleepCtx(ctx, retry) {
			return fmt.Errorf("eventstore: runner %s: recording failed event %s/%d: %w", r.p.Name(), md.Stream, md.Sequence.Stream, rerr)
		}
	}
	r.mu.Lock()
	r.failedSeqs[md.Sequence.Stream] = true
	r.mu.Unlock()
	return nil
}

func (r *Runner) markStarted(target uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	select {
	case <-r.started:
	default:
		r.readyTarget = target
		close(r.started)
	}
}

// advance moves the position forward to seq and wakes waiters.
func (r *Runner) advance(seq uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if seq > r.pos {
		r.pos = seq
		r.wakeLocked()
		metricProjectionPosition.WithLabelValues(r.p.Name(), r.stream).Set(float64(seq))
	}
}

// wakeLocked wakes the WaitFor calls; r.mu must be held.
func (r *Runner) wakeLocked() {
	close(r.changed)
	r.changed = make(chan struct{})
}

// sawLastSeq notes that the stream's last sequence is at least seq.
func (r *Runner) sawLastSeq(seq uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sawLastSeqLocked(seq)
}

func (r *Runner) sawLastSeqLocked(seq uint64) {
	if seq > r.lastSeq {
		r.lastSeq = seq
		metricProjectionLastSeq.WithLabelValues(r.p.Name(), r.stream).Set(float64(seq))
	}
}

// Position is the stream sequence up to which the projection is complete: the last applied event,
// or later if no event of the projection's subjects follows it.
func (r *Runner) Position() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pos
}

// OrderedInactiveThreshold is how long the server keeps an ordered consumer nobody pulls from.
// The platform's NATS identities may not delete consumers (a durable must never be deleted by
// anyone but an operator), so an ordered consumer left by a stopped projection, a restarted
// process or a closed event subscription stays until this threshold: with nats.go's default of
// five minutes, clients that open and close subscriptions could fill a stream's 1,000 consumers and
// every service's next start would be refused (the events API also limits how fast a caller starts
// subscriptions). A reader keeps a pull request waiting whenever its buffer has room, so only a
// reader that stops pulling for this long — a handler blocked that long, a subscriber's stream held
// back by the others — loses its consumer: nats.go notices within two missed heartbeats (about 10 s)
// and creates it again from the last message it delivered, so nothing is skipped or repeated.
const OrderedInactiveThreshold = 2 * time.Minute

// ErrBeyondLastSequence marks a WaitFor for a sequence the stream has not reached: no event with
// that sequence has been stored, so waiting cannot help.
var ErrBeyondLastSequence = errors.New("eventstore: sequence beyond the stream's last sequence")

// Bounds of the position sync of WaitFor.
const (
	// syncTimeout bounds one position sync.
	syncTimeout = time.Second
	// firstSync is the delay before the first sync, in which the position usually moves by itself.
	firstSync = 10 * time.Millisecond
	// maxSync is the longest interval between syncs.
	maxSync = 250 * time.Millisecond
)

// WaitFor blocks until Position() >= seq or ctx is done, for reading one's own writes: pass the
// Sequence of an event returned by Append. seq need not match the runner's filter subjects: when
// the runner has nothing left to apply up to the stream's last sequence, its position moves there.
// When the stream's last sequence, read after WaitFor was called, is lower than seq, WaitFor fails
// at once with ErrBeyondLastSequence.
//
// However many calls wait, the runner asks the server about the stream with one sync at a time,
// first after firstSync and then at growing intervals of at most maxSync.
func (r *Runner) WaitFor(ctx context.Context, seq uint64) error {
	r.mu.Lock()
	if r.pos >= seq {
		r.mu.Unlock()
		return nil
	}
	since := r.syncStarts // a sync started after this one saw the stream as of the call or later
	r.waiters++
	if !r.syncing {
		r.syncing = true
		go r.syncLoop()
	}
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.waiters--
		r.mu.Unlock()
	}()
	for {
		r.mu.Lock()
		pos, changed, last, fresh := r.pos, r.changed, r.lastSeq, r.syncedGen > since
		r.mu.Unlock()
		switch {
		case pos >= seq:
			return nil
		case fresh && seq > last:
			return fmt.Errorf("eventstore: runner %s waiting for %s/%d: %w (%d)", r.p.Name(), r.stream, seq, ErrBeyondLastSequence, last)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("eventstore: runner %s waiting for %s/%d at %d: %w", r.p.Name(), r.stream, seq, pos, ctx.Err())
		case <-changed:
		}
	}
}

// syncLoop runs the position syncs of the waiting WaitFor calls, one at a time, until none waits.
func (r *Runner) syncLoop() {
	delay := firstSync
	timer := time.NewTimer(delay)
	defer timer.Stop()
	for range timer.C {
		r.mu.Lock()
		if r.waiters == 0 {
			r.syncing = false
			r.mu.Unlock()
			return
		}
		r.syncStarts++
		n, hook := r.syncStarts, r.syncHook
		r.mu.Unlock()
		if hook != nil {
			hook()
		}
		metricProjectionSyncs.WithLabelValues(r.p.Name(), r.stream).Inc()
		// Bounded, so that a request that gets no answer does not keep the waiters from seeing
		// the position move.
		ctx, cancel := context.WithTimeout(context.Background(), syncTimeout)
		if err := r.sync(ctx, n); err != nil {
			r.s.logger.Debug("projection position sync failed", "projection", r.p.Name(), "error", err)
		}
		cancel()
		delay = min(2*delay, maxSync)
		timer.Reset(delay)
	}
}

// Ready blocks until Run has started and the projection has caught up with the stream as it was
// when Run started.
func (r *Runner) Ready(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return fmt.Errorf("eventstore: runner %s not started: %w", r.p.Name(), ctx.Err())
	case <-r.started:
	}
	r.mu.Lock()
	target := r.readyTarget
	r.mu.Unlock()
	return r.WaitFor(ctx, target)
}

// sync moves the position over events the runner will never see because they do not match its
// filters: if no matching event lies between the position and the stream's last sequence, the
// projection is complete up to that last sequence. Both reads go to the stream leader. n is the
// sync's number; the waiters are woken once the last sequence is known.
func (r *Runner) sync(ctx context.Context, n uint64) error {
	from := r.Position()
	last, err := r.s.leaderLastSeq(ctx, r.stream)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.sawLastSeqLocked(last)
	r.syncedGen = max(r.syncedGen, n)
	r.wakeLocked()
	r.mu.Unlock()
	if last <= from {
		return nil
	}
	filters := r.filters
	if len(filters) == 0 {
		filters = []string{">"}
	}
	for _, f := range filters {
		next, ok, err := r.s.leaderNextSeq(ctx, r.stream, f, from+1)
		if err != nil {
			return err
		}
		if ok && next <= last {
			return nil // the runner still has to apply next
		}
	}
	r.advance(last)
	return nil
}

// leaderLastSeq returns the stream's last sequence as the stream leader knows it.
func (s *Store) leaderLastSeq(ctx context.Context, stream string) (uint64, error) {
	st, err := s.js.Stream(ctx, stream)
	if err != nil {
		return 0, err
	}
	return st.CachedInfo().State.LastSeq, nil
}

// leaderNextSeq returns the sequence of the first message at or after from matching filter, asking
// the stream leader (not a direct get, which any replica may answer).
func (s *Store) leaderNextSeq(ctx context.Context, stream, filter string, from uint64) (uint64, bool, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.js.Options().DefaultTimeout)
		defer cancel()
	}
	body, err := json.Marshal(directGetRequest{Seq: from, NextFor: filter})
	if err != nil {
		return 0, false, err
	}
	resp, err := s.js.Conn().RequestWithContext(ctx, s.apiPrefix()+"STREAM.MSG.GET."+stream, body)
	if err != nil {
		return 0, false, fmt.Errorf("eventstore: get next %s on %s: %w", filter, stream, err)
	}
	var out struct {
		Error   *jetstream.APIError `json:"error"`
		Message *struct {
			Seq uint64 `json:"seq"`
		} `json:"message"`
	}
	if err := json.Unmarshal(resp.Data, &out); err != nil {
		return 0, false, fmt.Errorf("eventstore: get next %s on %s: %w", filter, stream, err)
	}
	switch {
	case out.Error != nil && out.Error.ErrorCode == jetstream.JSErrCodeMessageNotFound:
		return 0, false, nil
	case out.Error != nil:
		return 0, false, fmt.Errorf("eventstore: get next %s on %s: %w", filter, stream, out.Error)
	case out.Message == nil:
		return 0, false, errors.New("eventstore: get next: empty response")
	}
	return out.Message.Seq, true, nil
}

// consumerToken maps a name onto the characters consumer names allow.
func consumerToken(name string) string {
	b := []byte(name)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			b[i] = '_'
		}
	}
	return string(b)
}
