package replay

import (
	"context"
	"crypto/rand"
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
	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/natsauth"
	"github.com/agentid/agentid/pkg/observability"
)

// LogStream is the stream of the replay log: records of used ids, each appended by one issuer replica
// and read by all of them (natsauth.IssuerReplayStream).
const LogStream = natsauth.IssuerReplayStream

// LogSubject is the one subject of LogStream (natsauth.IssuerReplaySubject).
const LogSubject = natsauth.IssuerReplaySubject

// logFormat is the first byte of a record. Format 1: the record's random 8-byte id, then entries of
// logEntrySize bytes, each a key (the first keySize bytes of the SHA-256 of tenant, client and id)
// and the time until which the id is usable (big-endian Unix milliseconds).
const logFormat = 1

const (
	keySize       = 16
	logEntrySize  = keySize + 8
	logHeaderSize = 1 + 8
	// recentRecords is how many of the last records read a replica remembers the ids of, to check
	// that the record at its own append's sequence is its own.
	recentRecords = 1 << 13
)

// Defaults of LogConfig.
const (
	DefaultMaxBatch    = 1024
	DefaultCommitters  = 1
	DefaultWaitTimeout = 5 * time.Second
	DefaultMaxEntries  = 4_000_000
	// DefaultDrainTimeout is the longest Run keeps serving requests once its context is done (the
	// HTTP server drains them meanwhile); it stops earlier once none has been in flight for 250 ms.
	DefaultDrainTimeout = 5 * time.Second
)

// errSequence means the record at this replica's append's sequence is not its record: the stream's
// sequence went back (acknowledged records were lost, or the stream was recreated), and the replica
// reads the log again from its start.
var errSequence = errors.New("replay: the log's sequence went back; reading it again")

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
	// Config holds the lifetime of ids (TTL: the longest an id is remembered, Use records an id for
	// TTL and UseUntil for less; the stream keeps records for TTL plus a minute), the stream's replicas
	// and the clock-skew margin of UseUntil, with Cache's defaults.
	Config
	// MaxBatch is the most ids one record holds; default DefaultMaxBatch.
	MaxBatch int
	// Committers is the number of records in flight at once; default DefaultCommitters (1: a stream
	// stores its messages one after another anyway, and one committer makes the largest batches,
	// measured fastest with sync_always in docs/performance.md).
	Committers int
	// WaitTimeout bounds how long Use waits for its record to be stored and read back before it
	// fails (closed); default DefaultWaitTimeout.
	WaitTimeout time.Duration
	// MaxEntries bounds the ids held in memory (every replica holds every replica's ids); default
	// DefaultMaxEntries (about 100 bytes each).
	MaxEntries int
	// DrainTimeout is how long Run keeps serving requests in flight after its context is done;
	// default DefaultDrainTimeout.
	DrainTimeout time.Duration
	// Registerer receives the metrics; nil for none.
	Registerer prometheus.Registerer
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

	mu         sync.Mutex
	index      map[logKey]logEntry
	expiry     map[int64][]logKey // keys by the second their entry expires, for pruning
	pruned     int64              // every second up to this one has been pruned
	applied    uint64             // the last stream sequence read
	recent     [recentRecords]appliedRecord
	gen        uint64        // the generation of the consumer whose deliveries are applied
	subscribed bool          // the reader has subscribed once
	target     uint64        // the stream's last sequence when the reader first subscribed
	caught     chan struct{} // closed once applied reached target
	advanced   chan struct{} // closed (and replaced) each time applied moves
	queue      []*pendingUse
	wake       chan struct{}
	rebuild    chan struct{} // asks the reader to read the log again from its start

	ensured  atomic.Bool
	stopped  atomic.Bool   // Run has returned: Use fails at once
	stopOnce sync.Once     // closes done
	done     chan struct{} // closed when the log stops
	inflight atomic.Int64  // Use calls in progress
	records  atomic.Uint64
	ids      atomic.Uint64
	bad      atomic.Uint64
	rebuilds atomic.Uint64
	m        logMetrics

	beforeApply func() // tests only: runs as a delivery is applied, before the generation check
}

// appliedRecord is a record read: its stream sequence and its id.
type appliedRecord struct{ seq, id uint64 }

type logMetrics struct {
	records, ids, bad, rebuilds prometheus.Counter
	refused                     *prometheus.CounterVec
	entries, queued             prometheus.Gauge
}

func newLogMetrics(reg prometheus.Registerer) logMetrics {
	m := logMetrics{
		records:  prometheus.NewCounter(prometheus.CounterOpts{Name: "issuer_jti_log_records_total", Help: "Records (batches of used assertion and DPoP proof ids) this replica appended to the replay log."}),
		ids:      prometheus.NewCounter(prometheus.CounterOpts{Name: "issuer_jti_log_ids_total", Help: "Ids in the records this replica appended to the replay log."}),
		bad:      prometheus.NewCounter(prometheus.CounterOpts{Name: "issuer_jti_log_bad_records_total", Help: "Replay log records read that were not understood and were skipped."}),
		rebuilds: prometheus.NewCounter(prometheus.CounterOpts{Name: "issuer_jti_log_rebuilds_total", Help: "Times the replica read the replay log again from its start because the stream's sequence went back."}),
		refused:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "issuer_jti_log_refusals_total", Help: "Ids refused for a reason other than reuse (the request fails with 503), by reason."}, []string{"reason"}),
		entries:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "issuer_jti_log_entries", Help: "Usable ids held in memory by the replay log (every replica's)."}),
		queued:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "issuer_jti_log_queued", Help: "Ids waiting to be appended to the replay log."}),
	}
	if reg != nil {
		m.records = observability.Register(reg, m.records)
		m.ids = observability.Register(reg, m.ids)
		m.bad = observability.Register(reg, m.bad)
		m.rebuilds = observability.Register(reg, m.rebuilds)
		m.refused = observability.Register(reg, m.refused)
		m.entries = observability.Register(reg, m.entries)
		m.queued = observability.Register(reg, m.queued)
	}
	return m
}

type pendingUse struct {
	key   logKey
	until int64
	done  chan useResult // buffered: the committer never blocks on it
}

type useResult struct {
	seq, rec uint64 // the record's stream sequence and id
	err      error
}

// NewLog returns a log over js; Run must run for Use to succeed.
func NewLog(js jetstream.JetStream, cfg LogConfig) *Log {
	cfg.Config = cfg.Config.withDefaults()
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
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = DefaultDrainTimeout
	}
	return &Log{
		js: js, cfg: cfg, log: cfg.Logger.With("component", "jti-log", "stream", LogStream),
		index: make(map[logKey]logEntry), expiry: make(map[int64][]logKey),
		pruned: cfg.Now().Unix() - 1, caught: make(chan struct{}), done: make(chan struct{}),
		advanced: make(chan struct{}), wake: make(chan struct{}, 1), rebuild: make(chan struct{}, 1),
		m: newLogMetrics(cfg.Registerer),
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
// queued ids until ctx is done. It then keeps serving the requests in flight for at most DrainTimeout
// (an HTTP server drains them meanwhile) and returns nil; Use fails at once after that.
func (l *Log) Run(ctx context.Context) error {
	defer l.stop()
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
	run, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	for range l.cfg.Committers {
		wg.Go(func() { l.commit(run) })
	}
	wg.Go(func() { l.read(run) })
	<-ctx.Done()
	// The HTTP server drains its requests while the process stops (after the gRPC server's graceful
	// stop): keep serving until no request has been in flight for drainIdle, at most DrainTimeout.
	deadline := time.Now().Add(l.cfg.DrainTimeout)
	idleSince := time.Now()
	for now := time.Now(); now.Before(deadline) && now.Sub(idleSince) < drainIdle; now = time.Now() {
		if l.inflight.Load() > 0 {
			idleSince = now
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := l.inflight.Load(); n > 0 {
		l.log.Warn("replay log stopped with requests in flight", "requests", n)
	}
	l.stop()
	cancel()
	return nil
}

// drainIdle is how long Run waits without a request in flight before it stops, once its context is
// done.
const drainIdle = 250 * time.Millisecond

// stop marks the log stopped: a Use in progress or to come fails at once.
func (l *Log) stop() {
	l.stopOnce.Do(func() {
		l.stopped.Store(true)
		close(l.done)
	})
}

// Ready blocks until the reader has read every record the stream held when it first subscribed (a
// replica that starts answers only then), or ctx is done.
func (l *Log) Ready(ctx context.Context) error {
	select {
	case <-l.caught:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("replay: log not read up to its end yet: %w", ctx.Err())
	}
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
	l.inflight.Add(1)
	defer l.inflight.Add(-1)
	if l.stopped.Load() {
		l.m.refused.WithLabelValues("stopped").Inc()
		return errors.New("replay: the log has stopped")
	}
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
		l.m.refused.WithLabelValues("full").Inc()
		l.log.Warn("replay log full: id refused", "entries", l.cfg.MaxEntries)
		return ErrLogFull
	}
	l.queue = append(l.queue, p)
	l.mu.Unlock()
	l.signal()

	var r useResult
	select {
	case r = <-p.done:
		if r.err != nil {
			l.m.refused.WithLabelValues("append").Inc()
			return r.err
		}
	case <-ctx.Done():
		l.dequeue(p) // not appended if still queued; if appended, the id is spent and refused here
		l.m.refused.WithLabelValues("timeout").Inc()
		return fmt.Errorf("replay: record jti: %w", ctx.Err())
	case <-l.done:
		l.dequeue(p)
		l.m.refused.WithLabelValues("stopped").Inc()
		return errors.New("replay: the log has stopped")
	}
	for {
		l.mu.Lock()
		if l.applied >= r.seq {
			rec := l.recent[r.seq%recentRecords]
			e, ok := l.index[key]
			l.mu.Unlock()
			switch {
			case rec.seq != r.seq || rec.id != r.rec:
				// The record read at this sequence is not the one appended: the stream's sequence
				// went back (or the record was read too long ago to tell). Refuse, and read again.
				l.requestRebuild(r.seq)
				l.m.refused.WithLabelValues("sequence").Inc()
				return errSequence
			case ok && e.seq == r.seq:
				return nil
			case ok:
				return ErrReplayed // an earlier record holds the id
			default:
				l.m.refused.WithLabelValues("expired").Inc()
				return errors.New("replay: the id expired before its record was read")
			}
		}
		advanced := l.advanced
		l.mu.Unlock()
		select {
		case <-advanced:
		case <-ctx.Done():
			l.m.refused.WithLabelValues("timeout").Inc()
			return fmt.Errorf("replay: read the log up to record %d: %w", r.seq, ctx.Err())
		case <-l.done:
			l.m.refused.WithLabelValues("stopped").Inc()
			return errors.New("replay: the log has stopped")
		}
	}
}

// requestRebuild asks the reader to read the log again from its start.
func (l *Log) requestRebuild(seq uint64) {
	select {
	case l.rebuild <- struct{}{}:
		l.log.Error("the replay log's record at an appended sequence is another's: the stream lost records or was recreated; reading it again", "seq", seq)
	default:
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
		for len(l.queue) == 0 || ctx.Err() != nil {
			if ctx.Err() != nil {
				// Shutting down: what is still queued is refused now rather than at its timeout.
				for _, p := range l.queue {
					p.done <- useResult{err: fmt.Errorf("replay: record jti: %w", ctx.Err())}
				}
				l.queue = nil
				l.mu.Unlock()
				return
			}
			l.mu.Unlock()
			select {
			case <-ctx.Done():
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
	var idb [8]byte
	var rec uint64
	for rec == 0 { // 0 marks a record not in the log's format
		_, _ = rand.Read(idb[:]) // crypto/rand.Read does not fail
		rec = binary.BigEndian.Uint64(idb[:])
	}
	data := make([]byte, logHeaderSize, logHeaderSize+len(batch)*logEntrySize)
	data[0] = logFormat
	copy(data[1:], idb[:])
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
	res := useResult{rec: rec}
	if err != nil {
		res.err = fmt.Errorf("replay: record jti: %w", err)
	} else {
		res.seq = ack.Sequence
		l.records.Add(1)
		l.ids.Add(uint64(len(stored)))
		l.m.records.Inc()
		l.m.ids.Add(float64(len(stored)))
	}
	for _, p := range stored {
		p.done <- res
	}
}

// read follows the stream from its first record until ctx is done, applying each record to the
// index. Each second it prunes expired ids and checks the stream (check). A consumer that ends is
// created again from the next record.
func (l *Log) read(ctx context.Context) {
	var (
		cc      jetstream.ConsumeContext
		closed  <-chan struct{} // cc.Closed(), taken once per consumer (each call starts a goroutine)
		created time.Time       // the stream's creation time when subscribed
	)
	stopConsumer := func() {
		if cc != nil {
			cc.Stop()
		}
		cc, closed = nil, nil
	}
	defer stopConsumer()
	subscribe := func(from uint64) bool {
		for delay := 100 * time.Millisecond; ; delay = min(2*delay, 5*time.Second) {
			c, t, err := l.subscribe(ctx, from)
			if err == nil {
				cc, closed, created = c, c.Closed(), t
				return true
			}
			if ctx.Err() != nil {
				return false
			}
			l.log.WarnContext(ctx, "cannot read the replay log yet; retrying", "retry_in", delay.String(), "error", err.Error())
			select {
			case <-ctx.Done():
				return false
			case <-time.After(delay):
			}
		}
	}
	// reread forgets every record read and subscribes again from the stream's start.
	reread := func() bool {
		stopConsumer()
		l.rebuilds.Add(1)
		l.m.rebuilds.Inc()
		l.mu.Lock()
		l.index = make(map[logKey]logEntry)
		l.expiry = make(map[int64][]logKey)
		l.applied = 0
		l.recent = [recentRecords]appliedRecord{}
		l.mu.Unlock()
		select { // a request that asked meanwhile waits for its record to be read again
		case <-l.rebuild:
		default:
		}
		return subscribe(0)
	}
	if !subscribe(0) {
		return
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-closed:
			l.log.Warn("replay log consumer ended; subscribing again")
			stopConsumer()
			l.mu.Lock()
			from := l.applied + 1
			l.mu.Unlock()
			if !subscribe(from) {
				return
			}
		case <-l.rebuild:
			if !reread() {
				return
			}
		case <-tick.C:
			l.prune()
			if l.check(ctx, created) && !reread() {
				return
			}
		}
	}
}

// check reports whether the log must be read again: the stream's last sequence is below the last one
// read, the stream is not the one subscribed to (created at another time), or the record stored at
// the last sequence read is not the one read there (the stream lost records and others were
// written in their place). It also ends the first catch-up when the records it waited for have aged
// out of the stream. An unreachable stream reports false.
func (l *Log) check(ctx context.Context, created time.Time) bool {
	// The position read first: the stream's state, read after it, can only be further on.
	l.mu.Lock()
	applied, read := l.applied, l.recent[l.applied%recentRecords]
	l.mu.Unlock()
	cctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	st, err := l.js.Stream(cctx, LogStream)
	if err != nil {
		return false
	}
	info := st.CachedInfo()
	l.mu.Lock()
	if info.State.Msgs == 0 || info.State.FirstSeq > l.target {
		l.target = 0 // nothing left to wait for
		l.markCaughtLocked()
	}
	l.mu.Unlock()
	wentBack := info.State.LastSeq < applied || (!created.IsZero() && !info.Created.Equal(created))
	if !wentBack && applied > 0 && applied >= info.State.FirstSeq && read.seq == applied {
		msg, err := st.GetMsg(cctx, applied)
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
			wentBack = applied >= info.State.FirstSeq // not aged out: lost
		case err == nil:
			wentBack = recordID(msg.Data) != read.id
		}
	}
	if wentBack {
		l.log.Error("the replay log's stream lost records or was recreated; reading it again",
			"last_seq", info.State.LastSeq, "read_up_to", applied, "created", info.Created, "subscribed_to_created", created)
	}
	return wentBack
}

// recordID returns a record's id, 0 for a record not in the log's format.
func recordID(data []byte) uint64 {
	if len(data) < logHeaderSize || data[0] != logFormat || (len(data)-logHeaderSize)%logEntrySize != 0 {
		return 0
	}
	return binary.BigEndian.Uint64(data[1:logHeaderSize])
}

// subscribe starts an ordered consumer from sequence from (0: the stream's start) and returns it with
// the stream's creation time. The records it delivers are applied only while it is the latest
// consumer: a delivery of a stopped one (nats.go may still run one after Stop) is ignored.
func (l *Log) subscribe(ctx context.Context, from uint64) (jetstream.ConsumeContext, time.Time, error) {
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := l.js.Stream(sctx, LogStream)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("stream %s: %w", LogStream, err)
	}
	info := st.CachedInfo()
	cfg := jetstream.OrderedConsumerConfig{
		FilterSubjects:    []string{LogSubject},
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		NamePrefix:        "issuer_jti_" + nuid.Next(),
		InactiveThreshold: eventstore.OrderedInactiveThreshold,
	}
	if from > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, from
	}
	cons, err := st.OrderedConsumer(sctx, cfg)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("consumer on %s: %w", LogStream, err)
	}
	l.mu.Lock()
	l.gen++
	gen := l.gen
	if !l.subscribed {
		l.subscribed = true
		if info.State.Msgs > 0 { // an empty stream (every record aged out) keeps its last sequence
			l.target = info.State.LastSeq
		}
		l.markCaughtLocked()
	}
	l.mu.Unlock()
	// Heartbeats every second: a consumer lost with a server is noticed and replaced within seconds.
	cc, err := cons.Consume(func(m jetstream.Msg) { l.apply(gen, m) },
		jetstream.PullExpiry(5*time.Second), jetstream.PullHeartbeat(time.Second),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			if ctx.Err() == nil {
				l.log.Warn("replay log consumer", "error", err.Error())
			}
		}))
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("consume %s: %w", LogStream, err)
	}
	return cc, info.Created, nil
}

// markCaughtLocked closes caught once the first subscription's end has been read.
func (l *Log) markCaughtLocked() {
	if l.applied >= l.target {
		select {
		case <-l.caught:
		default:
			close(l.caught)
		}
	}
}

// apply adds the ids of one record delivered by the consumer of generation gen that are not held by
// an earlier record (or only by an expired one).
func (l *Log) apply(gen uint64, m jetstream.Msg) {
	if l.beforeApply != nil {
		l.beforeApply()
	}
	md, err := m.Metadata()
	if err != nil {
		l.bad.Add(1)
		l.m.bad.Inc()
		l.log.Error("replay log record without metadata; skipped", "error", err.Error())
		return
	}
	seq := md.Sequence.Stream
	data := m.Data()
	rec := recordID(data)
	if rec == 0 {
		// Nothing in it is applied: a request waiting on this record finds its id missing and fails.
		l.bad.Add(1)
		l.m.bad.Inc()
		l.log.Error("replay log record not understood; skipped", "seq", seq, "bytes", len(data))
		data = nil
	}
	now := l.cfg.Now().UnixMilli()
	// No id outlives its record by more than TTL and a minute for clocks: every replica, one that
	// starts later included, forgets it by then.
	limit := md.Timestamp.Add(l.cfg.TTL + time.Minute).UnixMilli()
	l.mu.Lock()
	defer l.mu.Unlock()
	if gen != l.gen {
		return // a stopped consumer's delivery
	}
	for off := logHeaderSize; off+logEntrySize <= len(data); off += logEntrySize {
		var k logKey
		copy(k[:], data[off:off+keySize])
		until := min(int64(binary.BigEndian.Uint64(data[off+keySize:off+logEntrySize])), limit)
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
	l.recent[seq%recentRecords] = appliedRecord{seq: seq, id: rec}
	if seq > l.applied {
		l.applied = seq
	}
	l.markCaughtLocked()
	close(l.advanced)
	l.advanced = make(chan struct{})
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
	l.m.entries.Set(float64(len(l.index)))
	l.m.queued.Set(float64(len(l.queue)))
}

// LogStats describe a Log.
type LogStats struct {
	// Entries is the number of ids held in memory, Queued the number waiting for a committer;
	// Applied is the last stream sequence read.
	Entries, Queued int
	Applied         uint64
	// Records and IDs count what this replica appended; BadRecords the records read and skipped;
	// Rebuilds the times the log was read again from its start.
	Records, IDs, BadRecords, Rebuilds uint64
}

// Stats returns the log's counters.
func (l *Log) Stats() LogStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return LogStats{Entries: len(l.index), Queued: len(l.queue), Applied: l.applied, Records: l.records.Load(), IDs: l.ids.Load(), BadRecords: l.bad.Load(), Rebuilds: l.rebuilds.Load()}
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
