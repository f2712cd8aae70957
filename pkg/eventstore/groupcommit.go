package eventstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentid/agentid/pkg/failpoint"
)

// Group commit (docs/adr/0008-group-commit.md): concurrent Appends to one stream are published as
// one JetStream atomic batch, which a single server with sync_always writes with one fsync for the
// whole batch instead of one per event.

// Headers of JetStream's atomic batch publish (nats-server 2.12+).
const (
	headerBatchID     = "Nats-Batch-Id"
	headerBatchSeq    = "Nats-Batch-Sequence"
	headerBatchCommit = "Nats-Batch-Commit"
)

const (
	// DefaultGroupCommitMaxBatch is the default most events one group commit carries.
	DefaultGroupCommitMaxBatch = 256
	// maxAtomicBatch is the server's default limit on the size of an atomic batch.
	maxAtomicBatch = 1000
	// groupCommitTimeout bounds the wait for a batch's acknowledgement; its appends then fall back
	// to single publishes, which resolve whatever the batch stored through their message ids.
	groupCommitTimeout = 5 * time.Second
	// groupCommitDisabledFor is how long appends to a stream that refuses atomic batches (no
	// AllowAtomicPublish: EnsureStreams has not run since the upgrade) are published one by one
	// before a batch is tried again.
	groupCommitDisabledFor = time.Minute
	// errCodeAtomicPublishDisabled is the server's answer to a batch on a stream without
	// AllowAtomicPublish.
	errCodeAtomicPublishDisabled jetstream.ErrorCode = 10174
)

// GroupCommit configures group commit (WithGroupCommit, Store.EnableGroupCommit).
type GroupCommit struct {
	// MaxBatch is the most events one batch carries (default DefaultGroupCommitMaxBatch; at most
	// 1000, the server's default limit).
	MaxBatch int
}

// WithGroupCommit turns on group commit for the store's Appends (see Store.EnableGroupCommit).
func WithGroupCommit(gc GroupCommit) Option {
	return func(s *Store) { s.EnableGroupCommit(gc) }
}

// EnableGroupCommit turns on group commit for the store's Appends from now on: concurrent Appends to
// aggregates of one stream are collected while the stream's previous batch is being stored and then
// published together as one atomic batch (at most one batch per stream in flight, no added wait when
// a single Append is pending: it is published on its own). Each Append returns only after the batch
// is acknowledged, that is stored (and, with sync_always, fsynced), with its own event and sequence.
// Append's guarantees are unchanged: a batch holds at most one event per aggregate; a batch the
// server refuses as a whole (a stale expected version, a repeated idempotency key, a restart) is
// published again event by event, so each caller gets exactly the result a lone Append would give.
// The streams need AllowAtomicPublish, which EnsureStreams sets; on a stream without it Appends are
// published one by one. Calling it again with another MaxBatch changes it; it is safe for
// concurrent use.
func (s *Store) EnableGroupCommit(gc GroupCommit) {
	if gc.MaxBatch <= 0 {
		gc.MaxBatch = DefaultGroupCommitMaxBatch
	}
	gc.MaxBatch = min(gc.MaxBatch, maxAtomicBatch)
	if g := s.group.Load(); g != nil && g.maxBatch == gc.MaxBatch {
		return
	}
	g := &groupCommitter{s: s, maxBatch: gc.MaxBatch, queues: map[string]*commitQueue{}}
	g.resumed = sync.NewCond(&g.mu)
	s.group.Store(g)
}

// groupCommitter collects appends per stream and commits them in batches.
type groupCommitter struct {
	s        *Store
	maxBatch int

	mu     sync.Mutex
	queues map[string]*commitQueue // stream -> its pending appends
	// paused holds the committers before they take their next batch (tests: PauseGroupCommit).
	paused  bool
	resumed *sync.Cond // on mu: paused became false
}

// commitQueue is one stream's pending appends. Guarded by groupCommitter.mu.
type commitQueue struct {
	pending       []*commitRequest
	running       bool      // a committer goroutine serves the queue
	disabledUntil time.Time // the stream refused atomic batches: publish one by one until then
}

// commitRequest is one Append waiting for its batch.
type commitRequest struct {
	ctx   context.Context
	p     preparedAppend
	taken bool              // in a batch (guarded by groupCommitter.mu)
	done  chan commitResult // buffered: the committer never blocks on it
}

// commitResult is a request's outcome: its sequence in a committed batch (stream, seq), the result
// of its lone publish (done), or alone: publish it on its own.
type commitResult struct {
	stream string
	seq    uint64
	done   bool
	ev     Event
	err    error
	alone  bool
}

// append stores p through the stream's group commit.
func (g *groupCommitter) append(ctx context.Context, p preparedAppend) (Event, error) {
	if err := ctx.Err(); err != nil {
		return Event{}, fmt.Errorf("eventstore: append %s: %w", p.a.Type, err)
	}
	req := &commitRequest{ctx: ctx, p: p, done: make(chan commitResult, 1)}
	g.mu.Lock()
	q := g.queues[p.stream]
	if q == nil {
		q = &commitQueue{}
		g.queues[p.stream] = q
	}
	if time.Now().Before(q.disabledUntil) {
		g.mu.Unlock()
		return g.s.appendPrepared(ctx, p)
	}
	q.pending = append(q.pending, req)
	if !q.running {
		q.running = true
		go g.run(p.stream, q)
	}
	g.mu.Unlock()

	var r commitResult
	select {
	case r = <-req.done:
	case <-ctx.Done():
		g.mu.Lock()
		if !req.taken {
			q.remove(req)
			g.mu.Unlock()
			return Event{}, fmt.Errorf("eventstore: append %s: %w", p.a.Type, ctx.Err())
		}
		g.mu.Unlock()
		// Its batch is being published: whether the event is stored is not known yet, as when a
		// lone publish is cancelled. A repeat with the same idempotency key resolves it.
		return Event{}, fmt.Errorf("eventstore: append %s: cancelled while its batch was being stored: %w", p.a.Type, ctx.Err())
	}
	switch {
	case r.alone:
		return g.s.appendPrepared(ctx, p)
	case r.done:
		return r.ev, r.err
	}
	ev := p.ev
	ev.Stream, ev.Sequence = r.stream, r.seq
	if err := failpoint.Inject(ctx, failpoint.AppendBeforeReply); err != nil {
		return Event{}, fmt.Errorf("eventstore: append %s: %w", p.a.Type, err)
	}
	return ev, nil
}

// remove drops req from the pending appends.
func (q *commitQueue) remove(req *commitRequest) {
	for i, r := range q.pending {
		if r == req {
			q.pending = append(q.pending[:i], q.pending[i+1:]...)
			return
		}
	}
}

// run commits the stream's pending appends batch after batch until none is left.
func (g *groupCommitter) run(stream string, q *commitQueue) {
	for {
		g.mu.Lock()
		for g.paused {
			g.resumed.Wait()
		}
		batch := g.take(q)
		if len(batch) == 0 {
			q.running = false
			g.mu.Unlock()
			return
		}
		g.mu.Unlock()
		if len(batch) == 1 {
			// Nothing to group: a lone publish is cheaper than a batch of one. The committer makes
			// it, so the appends that arrive meanwhile form the next batch.
			r := batch[0]
			ev, err := g.s.appendPrepared(r.ctx, r.p)
			r.done <- commitResult{done: true, ev: ev, err: err}
			continue
		}
		g.commit(stream, q, batch)
	}
}

// take removes the next batch from q: up to maxBatch appends in arrival order, at most one per
// aggregate (the server checks each expected version against the stream before the batch, so two
// appends to one aggregate in one batch could both pass the check), skipping cancelled ones. The
// skipped appends of an aggregate already in the batch stay queued, in order, for the next one.
// Called with g.mu held.
func (g *groupCommitter) take(q *commitQueue) []*commitRequest {
	var (
		batch []*commitRequest
		rest  = q.pending[:0]
		aggs  = map[string]bool{}
	)
	for _, r := range q.pending {
		switch {
		case r.ctx.Err() != nil:
			// Its caller is returning the context's error and removing it; drop it here.
			continue
		case len(batch) < g.maxBatch && !aggs[r.p.aggSubject]:
			aggs[r.p.aggSubject] = true
			r.taken = true
			batch = append(batch, r)
		default:
			rest = append(rest, r)
		}
	}
	clear(q.pending[len(rest):])
	q.pending = rest
	return batch
}

// commit publishes batch as one atomic batch and hands each request its sequence, or, if the
// batch is not acknowledged as a whole, tells each to publish on its own.
func (g *groupCommitter) commit(stream string, q *commitQueue, batch []*commitRequest) {
	start := time.Now()
	first, err := g.publishBatch(stream, batch)
	outcome := "committed"
	if err != nil {
		outcome = "fallback"
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode == errCodeAtomicPublishDisabled {
			g.mu.Lock()
			q.disabledUntil = time.Now().Add(groupCommitDisabledFor)
			g.mu.Unlock()
			g.s.logger.Warn("stream refuses atomic batches; publishing appends one by one (run EnsureStreams to enable group commit)",
				"stream", stream, "for", groupCommitDisabledFor)
		} else {
			g.s.logger.Debug("group commit not acknowledged; publishing its appends one by one",
				"stream", stream, "events", len(batch), "error", err)
		}
	}
	groupCommitBatches.WithLabelValues(stream, outcome).Inc()
	groupCommitEvents.WithLabelValues(stream).Observe(float64(len(batch)))
	groupCommitSeconds.WithLabelValues(stream).Observe(time.Since(start).Seconds())
	for i, r := range batch {
		if err != nil {
			r.done <- commitResult{alone: true}
			continue
		}
		r.done <- commitResult{stream: stream, seq: first + uint64(i)}
	}
}

// batchAck is the server's answer to a batch's commit message.
type batchAck struct {
	Error    *jetstream.APIError `json:"error,omitempty"`
	Stream   string              `json:"stream"`
	Sequence uint64              `json:"seq"`
	Batch    string              `json:"batch"`
	Count    int                 `json:"count"`
}

// publishBatch publishes batch as one atomic batch and returns the stream sequence of its first
// event (the others follow it in order). The server stores all of the batch or none of it.
func (g *groupCommitter) publishBatch(stream string, batch []*commitRequest) (uint64, error) {
	nc := g.s.js.Conn()
	if nc == nil {
		return 0, errors.New("no NATS connection")
	}
	id := uuid.NewString()
	ctx, cancel := context.WithTimeout(context.Background(), groupCommitTimeout)
	defer cancel()
	var reply *nats.Msg
	for i, r := range batch {
		a := r.p.a
		h := r.p.ev.header()
		h.Set(jetstream.MsgIDHeader, a.msgID())
		h.Set(jetstream.ExpectedStreamHeader, stream)
		if a.ExpectedVersion != AnyVersion {
			h.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(a.ExpectedVersion, 10))
			h.Set(jetstream.ExpectedLastSubjSeqSubjHeader, r.p.aggSubject)
		}
		h.Set(headerBatchID, id)
		h.Set(headerBatchSeq, strconv.Itoa(i+1))
		msg := &nats.Msg{Subject: r.p.subject, Header: h, Data: r.p.ev.Data}
		if i < len(batch)-1 {
			// The server answers only the commit; a message it refused fails the commit.
			if err := nc.PublishMsg(msg); err != nil {
				return 0, fmt.Errorf("publish batch message %d: %w", i+1, err)
			}
			continue
		}
		h.Set(headerBatchCommit, "1")
		var err error
		if reply, err = nc.RequestMsgWithContext(ctx, msg); err != nil {
			return 0, fmt.Errorf("commit batch: %w", err)
		}
	}
	var ack batchAck
	if err := json.Unmarshal(reply.Data, &ack); err != nil {
		return 0, fmt.Errorf("commit batch: reading the acknowledgement %q: %w", reply.Data, err)
	}
	switch {
	case ack.Error != nil:
		return 0, ack.Error
	case ack.Stream != stream || ack.Batch != id || ack.Count != len(batch) || ack.Sequence < uint64(len(batch)):
		return 0, fmt.Errorf("commit batch: unexpected acknowledgement %q for batch %s of %d events on %s", reply.Data, id, len(batch), stream)
	}
	return ack.Sequence - uint64(len(batch)) + 1, nil
}
