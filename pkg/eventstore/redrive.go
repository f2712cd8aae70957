package eventstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// redriveClaimTimeout is how long a work consumer's claim on a requested retry holds (by
// default; Store.claimTimeout): a claim older than that, left by a process that stopped
// mid-retry, is taken on by a running consumer of that name, which looks at the entry again when
// the claim runs out.
const redriveClaimTimeout = 5 * time.Minute

// redriveTarget is the owner of a handler whose failed events it retries on request.
type redriveTarget struct {
	handler string
	kind    string
	stream  string
	// exclusive: one process runs each retry (work consumers); otherwise every owner that
	// decide approves runs it (projection runners).
	exclusive bool
	// decide, for a non-exclusive owner, says whether to apply the event (true) or whether the
	// owner has applied it already (false, the entry is removed).
	decide func(ctx context.Context, seq uint64) (apply bool, err error)
	// apply handles the event; it must recover panics.
	apply func(ctx context.Context, ev Event) error
	// applied, if set, is called after a successful retry.
	applied func(seq uint64)
	// stillFailed, for a non-exclusive owner, says whether it has skipped the event at seq and not
	// applied it since: when another owner removes the entry after a successful retry, this one
	// applies the event too.
	stillFailed func(seq uint64) bool
}

// watchRedrives acts on retry requests for t's failed events until ctx is done.
func (s *Store) watchRedrives(ctx context.Context, t redriveTarget) {
	const (
		firstRetry = 100 * time.Millisecond
		maxRetry   = 5 * time.Second
	)
	retry := firstRetry
	for {
		err := s.watchRedrivesOnce(ctx, t)
		if ctx.Err() != nil {
			return
		}
		s.logger.WarnContext(ctx, "failed-event log watch interrupted; resuming",
			"handler", t.handler, "stream", t.stream, "retry_in", retry, "error", err)
		if !sleepCtx(ctx, retry) {
			return
		}
		retry = min(2*retry, maxRetry)
	}
}

func (s *Store) watchRedrivesOnce(ctx context.Context, t redriveTarget) error {
	kv, err := s.failedBucket(ctx)
	if err != nil {
		return err
	}
	w, err := kv.Watch(ctx, failedKeyPrefix(t.handler, t.stream)+".*")
	if err != nil {
		return fmt.Errorf("eventstore: watch failed events of %s: %w", t.handler, err)
	}
	defer func() { _ = w.Stop() }()

	// A claim of another process is looked at again when it runs out.
	done := make(chan struct{})
	defer close(done)
	recheck := make(chan string)
	timers := map[string]*time.Timer{}
	defer func() {
		for _, tm := range timers {
			tm.Stop()
		}
	}()
	unschedule := func(key string) {
		if tm := timers[key]; tm != nil {
			tm.Stop()
			delete(timers, key)
		}
	}
	schedule := func(key string, after time.Duration) {
		unschedule(key)
		timers[key] = time.AfterFunc(max(after, 0), func() {
			select {
			case recheck <- key:
			case <-done:
			}
		})
	}

	open := map[string]bool{}
	gauge := metricFailedOpen.WithLabelValues(t.handler)
	process := func(e jetstream.KeyValueEntry) {
		unschedule(e.Key())
		if e.Operation() != jetstream.KeyValuePut {
			delete(open, e.Key())
			gauge.Set(float64(len(open)))
			if e.Operation() == jetstream.KeyValueDelete && t.stillFailed != nil {
				// Removed after a successful retry (an operator's clear purges instead).
				if seq, ok := seqOfKey(e.Key()); ok && t.stillFailed(seq) {
					s.redriveRemoved(ctx, t, e.Key(), seq)
				}
			}
			return
		}
		fe, err := decodeFailed(e)
		if err != nil {
			s.logger.WarnContext(ctx, "undecodable failed-event entry", "key", e.Key(), "error", err)
			return
		}
		if fe.Kind != t.kind || fe.Handler != t.handler || fe.Stream != t.stream {
			return
		}
		open[e.Key()] = true
		gauge.Set(float64(len(open)))
		if fe.RetryRequestedAt.IsZero() {
			return
		}
		if t.exclusive && !fe.RetryingSince.IsZero() {
			if left := s.claimTimeout - s.clock().Sub(fe.RetryingSince); left > 0 {
				schedule(e.Key(), left) // another process is on it, or was until it stopped
				return
			}
		}
		s.redrive(ctx, kv, t, e.Revision(), fe)
	}

	for {
		select {
		case <-ctx.Done():
			return nil
		case key := <-recheck:
			delete(timers, key)
			e, err := kv.Get(ctx, key)
			switch {
			case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
			case err != nil:
				s.logger.WarnContext(ctx, "could not look at a claimed retry again; retrying", "key", key, "error", err)
				schedule(key, time.Second)
			default:
				process(e)
			}
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("eventstore: failed-event watch closed")
			}
			if e != nil { // nil: the current entries have all been seen
				process(e)
			}
		}
	}
}

// seqOfKey returns the stream sequence a failed-event key ends with.
func seqOfKey(key string) (uint64, bool) {
	i := strings.LastIndexByte(key, '.')
	if i < 0 {
		return 0, false
	}
	seq, err := strconv.ParseUint(key[i+1:], 10, 64)
	return seq, err == nil
}

// redriveRemoved applies the event at seq, whose failed-event entry key another owner removed
// after applying it on a requested retry, to a non-exclusive owner that skipped it too: replicas
// of a projection must not diverge. If it fails again, the failure is recorded anew.
func (s *Store) redriveRemoved(ctx context.Context, t redriveTarget, key string, seq uint64) {
	log := s.logger.With("handler", t.handler, "kind", t.kind, "stream", t.stream, "seq", seq, "key", key)
	log.InfoContext(ctx, "a requested retry succeeded elsewhere; applying the event this owner skipped")
	ev, subject, err := s.eventAt(ctx, t.stream, seq)
	if err == nil {
		err = t.apply(ctx, ev)
	}
	switch {
	case err == nil:
		if t.applied != nil {
			t.applied(seq)
		}
	case ctx.Err() != nil && !errors.Is(err, ErrPanic):
	default:
		log.ErrorContext(ctx, "requested retry failed here", append([]any{"error", err}, panicAttrs(err)...)...)
		fe := FailedEvent{
			Handler: t.handler, Kind: t.kind, Stream: t.stream, Sequence: seq, Subject: subject,
			EventID: ev.ID, EventType: ev.Type, Error: err.Error(), Deliveries: 1, Retries: 1,
		}
		if rerr := s.recordFailure(ctx, fe); rerr != nil {
			log.ErrorContext(ctx, "failed-event log unavailable", "error", rerr)
		}
	}
}

// redrive runs one requested retry of fe, read at revision rev.
func (s *Store) redrive(ctx context.Context, kv jetstream.KeyValue, t redriveTarget, rev uint64, fe FailedEvent) {
	log := s.logger.With("handler", t.handler, "kind", t.kind, "stream", fe.Stream, "seq", fe.Sequence, "key", fe.Key)
	put := func(fe FailedEvent) error {
		b, err := json.Marshal(fe)
		if err != nil {
			return err
		}
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		var next uint64
		if t.exclusive {
			next, err = kv.Update(wctx, fe.Key, b, rev)
		} else {
			next, err = kv.Put(wctx, fe.Key, b)
		}
		if err == nil {
			rev = next
		}
		return err
	}
	if t.exclusive {
		claim := fe
		claim.RetryingSince = s.clock().UTC()
		if err := put(claim); err != nil {
			if !isRevisionMismatch(err) {
				log.WarnContext(ctx, "could not take a requested retry on", "error", err)
			}
			return // another process took it, or the entry changed: the watch shows what now
		}
	} else {
		apply, err := t.decide(ctx, fe.Sequence)
		if err != nil {
			log.WarnContext(ctx, "requested retry not run", "error", err)
			return
		}
		if !apply {
			log.InfoContext(ctx, "requested retry: the projection has applied the event since; removing the entry")
			s.removeRedriven(ctx, kv, fe.Key, rev, log)
			return
		}
	}

	ev, _, err := s.eventAt(ctx, fe.Stream, fe.Sequence)
	if err == nil {
		err = t.apply(ctx, ev)
	}
	switch {
	case err == nil:
		log.InfoContext(ctx, "requested retry succeeded; removing the failed-event entry", "event_id", ev.ID, "event_type", ev.Type)
		if t.applied != nil {
			t.applied(fe.Sequence)
		}
		s.removeRedriven(ctx, kv, fe.Key, rev, log)
	case ctx.Err() != nil && !errors.Is(err, ErrPanic):
		if t.exclusive { // shutting down: leave the request for the next consumer
			release := fe
			release.RetryingSince = time.Time{}
			if perr := put(release); perr != nil && !isRevisionMismatch(perr) {
				log.Warn("could not release a requested retry", "error", perr)
			}
		}
	default:
		log.ErrorContext(ctx, "requested retry failed again", append([]any{"error", err}, panicAttrs(err)...)...)
		next := fe
		next.Error = err.Error()
		next.Retries++
		next.Time = s.clock().UTC()
		next.RetryRequestedAt, next.RetryingSince = time.Time{}, time.Time{}
		if perr := put(next); perr != nil && !isRevisionMismatch(perr) {
			log.ErrorContext(ctx, "failed-event log unavailable", "error", perr)
		}
	}
}

// removeRedriven deletes the entry under key unless it has changed since revision rev.
func (s *Store) removeRedriven(ctx context.Context, kv jetstream.KeyValue, key string, rev uint64, log *slog.Logger) {
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := kv.Delete(wctx, key, jetstream.LastRevision(rev)); err != nil && !isRevisionMismatch(err) {
		log.WarnContext(ctx, "could not remove a retried failed-event entry", "error", err)
	}
}

// eventAt reads the event at seq on stream, and its NATS subject, from the stream leader.
func (s *Store) eventAt(ctx context.Context, stream string, seq uint64) (Event, string, error) {
	st, err := s.js.Stream(ctx, stream)
	if err != nil {
		return Event{}, "", fmt.Errorf("eventstore: read %s/%d: %w", stream, seq, err)
	}
	m, err := st.GetMsg(ctx, seq)
	if err != nil {
		return Event{}, "", fmt.Errorf("eventstore: read %s/%d: %w", stream, seq, err)
	}
	ev, err := EventFromRaw(stream, m.Sequence, m.Subject, m.Header, m.Data)
	return ev, m.Subject, err
}
