package authn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"google.golang.org/protobuf/proto"

	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
)

// The names below are pkg/eventstore's (StreamRevocations, SubjectRoot, AggregateRevocation and the
// CloudEvents header names), repeated here so that resource servers importing authn do not link the
// event store and its embedded NATS server; a test keeps them equal.
const (
	// RevocationStream is the JetStream stream holding tokens.revoked events (eventstore.StreamRevocations).
	RevocationStream = "REVOCATIONS"
	// RevokedEventType is the CloudEvents type of issuerv1.TokensRevoked events.
	RevokedEventType = "tokens.revoked"

	revocationSubjectRoot = "agentid"
	revocationAggregate   = "revocation"
	headerEventType       = "ce-type"
	headerDataSchema      = "ce-dataschema"
)

// RevocationSubject is the subject filter of the revocations of one tenant, or of every tenant when
// tenant is empty: agentid.<tenant>.revocation.> (agentid.*.revocation.>).
func RevocationSubject(tenant string) string {
	if tenant == "" {
		tenant = "*"
	}
	return revocationSubjectRoot + "." + tenant + "." + revocationAggregate + ".>"
}

// DefaultRevocationLookback is how far back a RevocationFeed starts reading: the longest token lifetime
// plus five minutes of leeway, so that every revocation that can still cover an unexpired token is
// read again at start.
const DefaultRevocationLookback = MaxTokenLifetime + 5*time.Minute

// RevocationFeedConfig configures a RevocationFeed.
type RevocationFeedConfig struct {
	// JetStream is the JetStream API on a NATS connection allowed to read the REVOCATIONS stream.
	// Required.
	JetStream jetstream.JetStream
	// Denylist receives the revocations. Required.
	Denylist *Denylist
	// Tenant limits the feed to one tenant's revocations (for NATS users permitted only
	// agentid.<tenant>.revocation.>); empty follows every tenant.
	Tenant string
	// Stream is the stream name; default RevocationStream.
	Stream string
	// Lookback is how far back from now the feed starts reading; default DefaultRevocationLookback.
	// It must cover the longest token lifetime, or a restart forgets revocations.
	Lookback time.Duration
	// RetryInterval is the pause between attempts to subscribe while NATS or the stream is not there;
	// default one second.
	RetryInterval time.Duration
	// Logger receives malformed events and subscription errors; default slog.Default().
	Logger *slog.Logger
	// Now returns the current time; default time.Now.
	Now func() time.Time
}

// RevocationFeed keeps a Denylist up to date from the REVOCATIONS stream: at start it reads every
// revocation stored within the lookback, then it follows new ones as they are appended. It is ready
// (Ready, Caught) once it has applied everything the stream held when it subscribed. It uses an
// ordered, ephemeral JetStream consumer, which resumes after the last delivered sequence when NATS
// reconnects, without a gap and without reading from the start again.
type RevocationFeed struct {
	js       jetstream.JetStream
	deny     *Denylist
	stream   string
	subject  string
	tenant   string
	lookback time.Duration
	retry    time.Duration
	log      *slog.Logger
	now      func() time.Time

	caught     chan struct{}
	caughtOnce sync.Once
	target     atomic.Uint64 // stream's last sequence when the feed subscribed; 0 = none to wait for
	delivered  atomic.Uint64 // stream sequence of the last delivered message
	pending    atomic.Uint64 // messages still to deliver, as of the last delivery
	delayNanos atomic.Int64  // storage-to-application delay of the last applied event
	rejected   atomic.Uint64 // events that could not be applied (malformed, foreign tenant)
	subscribes atomic.Uint64 // consumers created (1 after the start, more after failures)
}

// RevocationFeedStats is a snapshot of a feed's progress, for metrics.
type RevocationFeedStats struct {
	// Caught reports whether the feed has caught up with the stream as of its subscription.
	Caught bool
	// Applied is the number of revocation events applied to the Denylist.
	Applied uint64
	// Rejected is the number of events that could not be applied (malformed or on a foreign
	// tenant's subject); each is logged.
	Rejected uint64
	// Entries is the number of entries the Denylist holds.
	Entries int
	// Position is the stream sequence of the last message delivered to the feed.
	Position uint64
	// Pending is the number of messages the stream held beyond Position at the last delivery.
	Pending uint64
	// Delay is the time between the storage and the application of the last applied event.
	Delay time.Duration
}

// NewRevocationFeed returns a feed; Run starts it.
func NewRevocationFeed(cfg RevocationFeedConfig) (*RevocationFeed, error) {
	if cfg.JetStream == nil {
		return nil, errors.New("authn: RevocationFeedConfig.JetStream is required")
	}
	if cfg.Denylist == nil {
		return nil, errors.New("authn: RevocationFeedConfig.Denylist is required")
	}
	if cfg.Tenant != "" && !ValidTenant(cfg.Tenant) {
		return nil, fmt.Errorf("authn: revocation feed tenant %q is not a valid tenant id", cfg.Tenant)
	}
	f := &RevocationFeed{
		js: cfg.JetStream, deny: cfg.Denylist, stream: cfg.Stream, tenant: cfg.Tenant,
		subject: RevocationSubject(cfg.Tenant), lookback: cfg.Lookback, retry: cfg.RetryInterval,
		log: cfg.Logger, now: cfg.Now, caught: make(chan struct{}),
	}
	if f.stream == "" {
		f.stream = RevocationStream
	}
	if f.lookback <= 0 {
		f.lookback = DefaultRevocationLookback
	}
	if f.retry <= 0 {
		f.retry = time.Second
	}
	if f.log == nil {
		f.log = slog.Default()
	}
	if f.now == nil {
		f.now = time.Now
	}
	f.log = f.log.With("component", "revocation-feed", "stream", f.stream, "subject", f.subject)
	return f, nil
}

// Denylist returns the Denylist the feed keeps up to date.
func (f *RevocationFeed) Denylist() *Denylist { return f.deny }

// Run subscribes (retrying while NATS or the stream is unavailable), applies revocations and prunes the
// Denylist until ctx is done; it then returns nil.
func (f *RevocationFeed) Run(ctx context.Context) error {
	cc, err := f.subscribe(ctx)
	if err != nil {
		return nil // ctx done before the first subscription
	}
	defer cc.Stop()
	prune := time.NewTicker(f.deny.pruneEvery)
	defer prune.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-prune.C:
			f.deny.Prune()
		}
	}
}

// subscribe creates the ordered consumer and starts consuming, retrying until it succeeds or ctx is
// done.
func (f *RevocationFeed) subscribe(ctx context.Context) (jetstream.ConsumeContext, error) {
	for attempt := 0; ; attempt++ {
		cc, err := f.trySubscribe(ctx)
		if err == nil {
			return cc, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if attempt == 0 || attempt%30 == 0 {
			f.log.Warn("cannot subscribe to revocations yet; retrying", "error", err.Error())
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(f.retry):
		}
	}
}

func (f *RevocationFeed) trySubscribe(ctx context.Context) (jetstream.ConsumeContext, error) {
	actx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := f.js.Stream(actx, f.stream)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", f.stream, err)
	}
	info, err := st.Info(actx)
	if err != nil {
		return nil, fmt.Errorf("stream %s info: %w", f.stream, err)
	}
	start := f.now().Add(-f.lookback)
	cons, err := st.OrderedConsumer(actx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{f.subject},
		DeliverPolicy:  jetstream.DeliverByStartTimePolicy,
		OptStartTime:   &start,
		NamePrefix:     "revocations_" + nuid.Next(),
	})
	if err != nil {
		return nil, fmt.Errorf("consumer on %s: %w", f.stream, err)
	}
	f.subscribes.Add(1)
	f.target.Store(info.State.LastSeq)
	if ci := cons.CachedInfo(); ci != nil && ci.NumPending == 0 {
		f.markCaught() // nothing to read within the lookback
	}
	if f.delivered.Load() >= info.State.LastSeq {
		f.markCaught()
	}
	cc, err := cons.Consume(f.handle, jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		if ctx.Err() == nil {
			f.log.Warn("revocation consumer", "error", err.Error())
		}
	}))
	if err != nil {
		return nil, fmt.Errorf("consume %s: %w", f.stream, err)
	}
	return cc, nil
}

// handle applies one delivered message.
func (f *RevocationFeed) handle(m jetstream.Msg) {
	md, err := m.Metadata()
	if err != nil {
		f.rejected.Add(1)
		f.log.Error("revocation message without metadata; skipped", "error", err.Error())
		return
	}
	seq := md.Sequence.Stream
	if err := f.apply(m); err != nil {
		f.rejected.Add(1)
		f.log.Error("revocation event not applied", "seq", seq, "nats_subject", m.Subject(), "error", err.Error())
	} else {
		f.delayNanos.Store(int64(f.now().Sub(md.Timestamp)))
	}
	f.delivered.Store(seq)
	f.pending.Store(md.NumPending)
	if md.NumPending == 0 || seq >= f.target.Load() {
		f.markCaught()
	}
}

// apply decodes m as a TokensRevoked event and applies it, checking that the event's tenant is the one
// of its subject: a writer allowed only one tenant's subjects cannot revoke another tenant's tokens.
func (f *RevocationFeed) apply(m jetstream.Msg) error {
	h := m.Headers()
	if typ := h.Get(headerEventType); typ != RevokedEventType {
		return fmt.Errorf("event type %q, want %q", typ, RevokedEventType)
	}
	var ev issuerv1.TokensRevoked
	if schema, want := h.Get(headerDataSchema), string(ev.ProtoReflect().Descriptor().FullName()); schema != want {
		return fmt.Errorf("data schema %q, want %q", schema, want)
	}
	if err := proto.Unmarshal(m.Data(), &ev); err != nil {
		return fmt.Errorf("decode payload: %w", err)
	}
	parts := strings.SplitN(m.Subject(), ".", 4)
	if len(parts) < 4 || parts[0] != revocationSubjectRoot || parts[2] != revocationAggregate || parts[1] != ev.GetTenant() {
		return fmt.Errorf("event of tenant %q on subject %q", ev.GetTenant(), m.Subject())
	}
	md, _ := m.Metadata()
	var seq uint64
	if md != nil {
		seq = md.Sequence.Stream
	}
	return f.deny.Apply(&ev, seq)
}

func (f *RevocationFeed) markCaught() {
	f.caughtOnce.Do(func() {
		close(f.caught)
		f.log.Info("revocations caught up", "position", f.delivered.Load(), "entries", f.deny.Len())
	})
}

// Caught reports whether the feed has applied everything the stream held when it subscribed.
func (f *RevocationFeed) Caught() bool {
	select {
	case <-f.caught:
		return true
	default:
		return false
	}
}

// Ready blocks until the feed has caught up (see Caught) or ctx is done.
func (f *RevocationFeed) Ready(ctx context.Context) error {
	select {
	case <-f.caught:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("revocations not caught up (position %d of %d): %w", f.delivered.Load(), f.target.Load(), ctx.Err())
	}
}

// Stats returns a snapshot of the feed's progress.
func (f *RevocationFeed) Stats() RevocationFeedStats {
	return RevocationFeedStats{
		Caught:   f.Caught(),
		Applied:  f.deny.Applied(),
		Rejected: f.rejected.Load(),
		Entries:  f.deny.Len(),
		Position: f.delivered.Load(),
		Pending:  f.pending.Load(),
		Delay:    time.Duration(f.delayNanos.Load()),
	}
}
