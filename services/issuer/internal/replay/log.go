package replay

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/natsauth"
)

// LogStream is the stream of the replay log: records of used ids, each appended by one issuer replica
// and read by all of them (natsauth.IssuerReplayStream).
const LogStream = natsauth.IssuerReplayStream

// LogSubject is the one subject of LogStream (natsauth.IssuerReplaySubject).
const LogSubject = natsauth.IssuerReplaySubject

// logFormat is the first byte of a record: format 1 is a sequence of entries of logEntrySize bytes,
// each a key (the first keySize bytes of the SHA-256 of tenant, client and id) and the time until
// which the id is usable (big-endian Unix milliseconds).
const logFormat = 1

const (
	keySize      = 16
	logEntrySize = keySize + 8
)

// Defaults of LogConfig.
const (
	DefaultMaxBatch    = 1024
	DefaultCommitters  = 2
	DefaultWaitTimeout = 5 * time.Second
	DefaultMaxEntries  = 4_000_000
)

// ErrLogFull means the log's index holds LogConfig.MaxEntries usable ids: a new id is refused (the
// caller fails closed) rather than the memory growing without bound.
var ErrLogFull = errors.New("replay: too many assertion ids in use")

type logKey [keySize]byte

// logEntry is where an id was first recorded in the log and until when it is usable (Unix ms).
type logEntry struct {
	seq   uint64
	until int64
}

// LogConfig configures a Log.
type LogConfig struct {
	// TTL is the longest an id is remembered (Use records an id for TTL, UseUntil for less); default
	// DefaultTTL. The stream keeps records for TTL plus a minute.
	TTL time.Duration
	// Replicas of the stream; default 1 (3 in clusters).
	Replicas int
	// SkewMargin is added to a UseUntil lifetime, as for Cache; default DefaultSkewMargin, negative
	// for none.
	SkewMargin time.Duration
	// MaxBatch is the most ids one record holds; default DefaultMaxBatch.
	MaxBatch int
	// Committers is the number of records in flight at once; default DefaultCommitters.
	Committers int
	// WaitTimeout bounds how long Use waits for its record to be stored and read back before it
	// fails (closed); default DefaultWaitTimeout.
	WaitTimeout time.Duration
	// MaxEntries bounds the ids held in memory; default DefaultMaxEntries (about 60 bytes each).
	MaxEntries int
	// Logger; default slog.Default().
	Logger *slog.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Log records used ids in a JetStream stream that every issuer replica appends to and reads, and
// decides each id by the stream's order: an id is accepted by the replica whose record holds it first.
//
// A replica checks an id in memory first (an id it already knows is refused without a write), then
// queues it; its committers append the queued ids of many concurrent requests as one record (one
// message, one fsync under sync_always) and answer each request once the replica has read the log up
// to that record: the request is accepted only if no earlier record in the stream holds its id. Every
// replica reads the same records in the same order, so two replicas given one id at once accept it
// once between them, and a replica that starts reads the last TTL of records before its first answer.
// Nothing is accepted that is not stored: a failed or unanswered append, a reader that has not reached
// the record, or a full index all refuse.
type Log struct {
	js  jetstream.JetStream
	cfg LogConfig
	log *slog.Logger

	mu       sync.Mutex
	index    map[logKey]logEntry
	expiry   map[int64][]logKey // keys by the second their entry expires, for pruning
	pruned   int64              // every second up to this one has been pruned
	applied  uint64             // the last stream sequence read
	advanced chan struct{}      // closed (and replaced) each time applied moves
	queue    []*pendingUse
	wake     chan struct{}

	ensured atomic.Bool
	records atomic.Uint64 // records appended by this replica
	ids     atomic.Uint64 // ids in them
	bad     atomic.Uint64 // records read that could not be decoded
}

type pendingUse struct {
	key   logKey
	until int64
	done  chan useResult // buffered: the committer never blocks on it
}

type useResult struct {
	seq uint64
	err error
}

// NewLog returns a log over js; Run must run for Use to succeed.
func NewLog(js jetstream.JetStream, cfg LogConfig) *Log {
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.Replicas <= 0 {
		cfg.Replicas = 1
	}
	switch {
	case cfg.SkewMargin == 0:
		cfg.SkewMargin = DefaultSkewMargin
	case cfg.SkewMargin < 0:
		cfg.SkewMargin = 0
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = DefaultMaxBatch
	}
	if cfg.Committers <= 0 {
		cfg.Committers = DefaultCommitters
	}
	if cfg.WaitTimeout <= 0 {
		cfg.WaitTimeout = DefaultWaitTimeout
	}
	if cfg.MaxEntries <= 0 {
		cfg.MaxEntries = DefaultMaxEntries
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Log{
		js: js, cfg: cfg, log: cfg.Logger.With("component", "jti-log", "stream", LogStream),
		index: make(map[logKey]logEntry), expiry: make(map[int64][]logKey),
		pruned:   cfg.Now().Unix() - 1,
		advanced: make(chan struct{}), wake: make(chan struct{}, 1),
	}
}

// TTL is the longest an id is remembered.
func (l *Log) TTL() time.Duration { return l.cfg.TTL }

// StreamConfig is the configuration Ensure gives the stream.
func (l *Log) StreamConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        LogStream,
		Description: "Client assertion and DPoP proof ids (jti) used at the issuer, in batches",
		Subjects:    []string{LogSubject},
		Storage:     jetstream.FileStorage,
		Replicas:    l.cfg.Replicas,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		// A record is read by replicas that start within TTL of it; a minute more for clocks.
		MaxAge:     l.cfg.TTL + time.Minute,
		Duplicates: time.Minute,
		DenyDelete: true,
		DenyPurge:  true,
	}
}

// Ensure creates the stream, or updates it to the current configuration.
func (l *Log) Ensure(ctx context.Context) error {
	if l.ensured.Load() {
		return nil
	}
	if _, err := l.js.CreateOrUpdateStream(ctx, l.StreamConfig()); err != nil {
		return fmt.Errorf("replay: stream %s: %w", LogStream, err)
	}
	l.ensured.Store(true)
	return nil
}

// Run creates the stream (retrying while NATS is unavailable), then reads the log and appends the
// queued ids until ctx is done; it returns nil then.
func (l *Log) Run(ctx context.Context) error {
	for delay := 100 * time.Millisecond; ; delay = min(2*delay, 5*time.Second) {
		err := l.Ensure(ctx)
		if err == nil {
			break
		}
		l.log.WarnContext(ctx, "cannot create the replay log yet; retrying", "retry_in", delay.String(), "error", err.Error())
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
	}
	var wg sync.WaitGroup
	for range l.cfg.Committers {
		wg.Go(func() { l.commit(ctx) })
	}
	wg.Go(func() { l.read(ctx) })
	wg.Wait()
	return nil
}

// Use records the id for TTL; it fails with ErrReplayed if an earlier record holds it and has not
// expired. Any other error means the id could not be recorded: the caller must fail closed.
func (l *Log) Use(ctx context.Context, tenant, clientID, jti string) error {
	return l.use(ctx, logKeyOf(tenant, clientID, jti), l.cfg.Now().Add(l.cfg.TTL))
}

// UseUntil is Use for an id accepted only until until: it is remembered until then plus SkewMargin,
// at most TTL.
func (l *Log) UseUntil(ctx context.Context, tenant, clientID, jti string, until time.Time) error {
	until = until.Add(l.cfg.SkewMargin)
	if limit := l.cfg.Now().Add(l.cfg.TTL); until.After(limit) {
		until = limit
	}
	return l.use(ctx, logKeyOf(tenant, clientID, jti), until)
}

func logKeyOf(tenant, clientID, jti string) logKey {
	var k logKey
	sum := keyHash(tenant, clientID, jti)
	copy(k[:], sum[:keySize])
	return k
}

func (l *Log) use(ctx context.Context, key logKey, until time.Time) error {
	now := l.cfg.Now()
	if !until.After(now) {
		return errors.New("replay: the id is no longer usable")
	}
	ctx, cancel := context.WithTimeout(ctx, l.cfg.WaitTimeout)
	defer cancel()
	p := &pendingUse{key: key, until: until.UnixMilli(), done: make(chan useResult, 1)}
	l.mu.Lock()
	if e, ok := l.index[key]; ok && e.until > now.UnixMilli() {
		l.mu.Unlock()
		return ErrReplayed
	}
	if len(l.index)+len(l.queue) >= l.cfg.MaxEntries {
		l.mu.Unlock()
		return ErrLogFull
	}
	l.queue = append(l.queue, p)
	l.mu.Unlock()
	l.signal()

	var seq uint64
	select {
	case r := <-p.done:
		if r.err != nil {
			return r.err
		}
		seq = r.seq
	case <-ctx.Done():
		l.dequeue(p) // not appended if still queued; if appended, the id is spent and refused here
		return fmt.Errorf("replay: record jti: %w", ctx.Err())
	}
	for {
		l.mu.Lock()
		if l.applied >= seq {
			e, ok := l.index[key]
			l.mu.Unlock()
			switch {
			case ok && e.seq == seq:
				return nil
			case ok:
				return ErrReplayed // an earlier record holds the id
			default:
				return errors.New("replay: the id expired before its record was read")
			}
		}
		advanced := l.advanced
		l.mu.Unlock()
		select {
		case <-advanced:
		case <-ctx.Done():
			return fmt.Errorf("replay: read the log up to record %d: %w", seq, ctx.Err())
		}
	}
}

func (l *Log) signal() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// dequeue removes p from the queue if no committer has taken it.
func (l *Log) dequeue(p *pendingUse) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, q := range l.queue {
		if q == p {
			l.queue = append(l.queue[:i], l.queue[i+1:]...)
			return
		}
	}
}

// commit appends the queued ids, as many as MaxBatch per record, until ctx is done. Ids queued while
// a record is being stored go into the next one: under load each record holds the ids of every
// request that arrived during the previous store.
func (l *Log) commit(ctx context.Context) {
	for {
		l.mu.Lock()
		for len(l.queue) == 0 {
			l.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-l.wake:
			}
			l.mu.Lock()
		}
		n := min(len(l.queue), l.cfg.MaxBatch)
		batch := make([]*pendingUse, n)
		copy(batch, l.queue)
		l.queue = append(l.queue[:0], l.queue[n:]...)
		more := len(l.queue) > 0
		l.mu.Unlock()
		if more {
			l.signal()
		}
		l.append(ctx, batch)
	}
}

// append stores one record holding batch and answers each of its requests. The same id twice in a
// batch is recorded once: the second request is refused at once.
func (l *Log) append(ctx context.Context, batch []*pendingUse) {
	data := make([]byte, 1, 1+len(batch)*logEntrySize)
	data[0] = logFormat
	seen := make(map[logKey]struct{}, len(batch))
	stored := batch[:0:0]
	for _, p := range batch {
		if _, dup := seen[p.key]; dup {
			p.done <- useResult{err: ErrReplayed}
			continue
		}
		seen[p.key] = struct{}{}
		data = append(data, p.key[:]...)
		data = binary.BigEndian.AppendUint64(data, uint64(p.until))
		stored = append(stored, p)
	}
	pctx, cancel := context.WithTimeout(ctx, l.cfg.WaitTimeout)
	ack, err := l.js.Publish(pctx, LogSubject, data,
		jetstream.WithMsgID(nuid.Next()), jetstream.WithExpectStream(LogStream))
	cancel()
	res := useResult{}
	if err != nil {
		res.err = fmt.Errorf("replay: record jti: %w", err)
	} else {
		res.seq = ack.Sequence
		l.records.Add(1)
		l.ids.Add(uint64(len(stored)))
	}
	for _, p := range stored {
		p.done <- res
	}
}

// read follows the stream from its first record until ctx is done, applying each record to the
// index, and prunes expired ids each second.
func (l *Log) read(ctx context.Context) {
	var cc jetstream.ConsumeContext
	for delay := 100 * time.Millisecond; cc == nil; delay = min(2*delay, 5*time.Second) {
		cons, err := l.js.OrderedConsumer(ctx, LogStream, jetstream.OrderedConsumerConfig{
			FilterSubjects:    []string{LogSubject},
			DeliverPolicy:     jetstream.DeliverAllPolicy,
			NamePrefix:        "issuer_jti_" + nuid.Next(),
			InactiveThreshold: eventstore.OrderedInactiveThreshold,
		})
		if err == nil {
			cc, err = cons.Consume(l.apply, jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
				if ctx.Err() == nil {
					l.log.Warn("replay log consumer", "error", err.Error())
				}
			}))
		}
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return
		}
		l.log.WarnContext(ctx, "cannot read the replay log yet; retrying", "retry_in", delay.String(), "error", err.Error())
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
	}
	defer cc.Stop()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			l.prune()
		}
	}
}

// apply adds the ids of one record that are not held by an earlier record (or only by an expired one).
func (l *Log) apply(m jetstream.Msg) {
	md, err := m.Metadata()
	if err != nil {
		l.bad.Add(1)
		l.log.Error("replay log record without metadata; skipped", "error", err.Error())
		return
	}
	seq := md.Sequence.Stream
	data := m.Data()
	if len(data) == 0 || data[0] != logFormat || (len(data)-1)%logEntrySize != 0 {
		// Nothing in it is applied: a request waiting on this record finds its id missing and fails.
		l.bad.Add(1)
		l.log.Error("replay log record not understood; skipped", "seq", seq, "bytes", len(data))
		data = nil
	}
	now := l.cfg.Now().UnixMilli()
	l.mu.Lock()
	for off := 1; off+logEntrySize <= len(data); off += logEntrySize {
		var k logKey
		copy(k[:], data[off:off+keySize])
		until := int64(binary.BigEndian.Uint64(data[off+keySize : off+logEntrySize]))
		if until <= now {
			continue
		}
		if e, ok := l.index[k]; ok && e.until > now {
			continue // the earlier record holds it
		}
		l.index[k] = logEntry{seq: seq, until: until}
		sec := max(until/1000, l.pruned+1) // a clock set back must not hide an entry from prune
		l.expiry[sec] = append(l.expiry[sec], k)
	}
	if seq > l.applied {
		l.applied = seq
	}
	close(l.advanced)
	l.advanced = make(chan struct{})
	l.mu.Unlock()
}

// prune forgets the ids whose time has passed.
func (l *Log) prune() {
	now := l.cfg.Now().UnixMilli()
	upTo := now/1000 - 1 // whole seconds entirely in the past
	l.mu.Lock()
	defer l.mu.Unlock()
	for sec := l.pruned + 1; sec <= upTo; sec++ {
		for _, k := range l.expiry[sec] {
			if e, ok := l.index[k]; ok && e.until <= now {
				delete(l.index, k)
			}
		}
		delete(l.expiry, sec)
	}
	l.pruned = max(l.pruned, upTo)
}

// LogStats describe a Log.
type LogStats struct {
	// Entries is the number of ids held in memory, Queued the number waiting for a committer;
	// Applied is the last stream sequence read.
	Entries, Queued int
	Applied         uint64
	// Records and IDs count what this replica appended; BadRecords the records read and skipped.
	Records, IDs, BadRecords uint64
}

// Stats returns the log's counters.
func (l *Log) Stats() LogStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return LogStats{Entries: len(l.index), Queued: len(l.queue), Applied: l.applied, Records: l.records.Load(), IDs: l.ids.Load(), BadRecords: l.bad.Load()}
}

// keyHash is the SHA-256 of tenant, client and id, each followed by a zero byte.
func keyHash(tenant, clientID, jti string) [sha256.Size]byte {
	h := sha256.New()
	for _, p := range []string{tenant, clientID, jti} {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return sum
}
