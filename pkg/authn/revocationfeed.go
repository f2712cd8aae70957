package authn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
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

// DefaultRevocationContactInterval is how often an idle RevocationFeed asks NATS about its consumer, so
// that its last contact (see Fresh) stays recent while no revocation arrives.
const DefaultRevocationContactInterval = 5 * time.Second

// OrderedInactiveThreshold is how long the NATS server keeps the feed's consumer once nobody pulls
// from it (a stopped or restarted verifier, which may not delete it); the platform's own readers use
// the same value (eventstore.OrderedInactiveThreshold, whose comment says why).
const OrderedInactiveThreshold = 2 * time.Minute

// DefaultRevocationMaxAge is the staleness a resource server should tolerate before it stops taking
// traffic (Fresh, ReadinessHandler): a few missed contact polls.
const DefaultRevocationMaxAge = 30 * time.Second

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
	// ContactInterval is how often the feed, while no message arrives, asks NATS about its consumer to
	// confirm that it is still current; default DefaultRevocationContactInterval.
	ContactInterval time.Duration
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
//
// Being caught up once says nothing about now: if NATS goes away or the consumer stalls, the Denylist
// silently stops changing. The feed therefore records its last contact with the stream (a delivery, or
// a consumer info poll every ContactInterval while idle that shows nothing left to deliver); Fresh and
// ReadinessHandler fail when that contact is too old, and a resource server should then stop taking
// traffic rather than accept tokens that may have been revoked.
type RevocationFeed struct {
	js       jetstream.JetStream
	deny     *Denylist
	stream   string
	subject  string
	tenant   string
	lookback time.Duration
	retry    time.Duration
	contact  time.Duration
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

	lastContact atomic.Int64 // unix ns of the last delivery or confirming poll; 0 = never

	mu       sync.Mutex
	consumer string // consumer that delivered the last message
	consumed uint64 // its consumer sequence of that message
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
	// LastContact is when the feed last heard from the stream: a delivery, or a poll of its consumer
	// that showed nothing left to deliver; zero before the first.
	LastContact time.Time
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
		contact: cfg.ContactInterval, log: cfg.Logger, now: cfg.Now, caught: make(chan struct{}),
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
	if f.contact <= 0 {
		f.contact = DefaultRevocationContactInterval
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

// Run subscribes (retrying while NATS or the stream is unavailable), applies revocations, polls its
// consumer while idle (see Fresh) and prunes the Denylist until ctx is done; it then returns nil.
func (f *RevocationFeed) Run(ctx context.Context) error {
	cons, cc, err := f.subscribe(ctx)
	if err != nil {
		return nil // ctx done before the first subscription
	}
	defer cc.Stop()
	prune := time.NewTicker(f.deny.pruneEvery)
	defer prune.Stop()
	poll := time.NewTicker(f.contact)
	defer poll.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-prune.C:
			f.deny.Prune()
		case <-poll.C:
			if f.now().Sub(f.LastContact()) >= f.contact {
				f.poll(ctx, cons)
			}
		}
	}
}

// poll asks NATS about the feed's consumer and records a contact when the consumer exists and has
// nothing left that the feed has not received: its pending count is zero and it has delivered no
// message beyond the last one handled. A consumer that NATS no longer knows, a connection that is
// down or a consumer whose deliveries do not arrive all leave the last contact where it was.
func (f *RevocationFeed) poll(ctx context.Context, cons jetstream.Consumer) {
	pctx, cancel := context.WithTimeout(ctx, f.contact)
	defer cancel()
	info, err := cons.Info(pctx)
	if err != nil {
		if ctx.Err() == nil {
			f.log.Debug("revocation consumer poll failed", "error", err.Error())
		}
		return
	}
	f.mu.Lock()
	current := info.Delivered.Consumer == 0 || (info.Name == f.consumer && info.Delivered.Consumer <= f.consumed)
	f.mu.Unlock()
	if info.NumPending == 0 && current {
		f.touch()
	}
}

// touch records a contact with the stream now.
func (f *RevocationFeed) touch() { f.lastContact.Store(f.now().UnixNano()) }

// LastContact returns when the feed last heard from the stream (see RevocationFeedStats.LastContact).
func (f *RevocationFeed) LastContact() time.Time {
	ns := f.lastContact.Load()
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

// Fresh returns nil when the feed has caught up and has heard from the stream within maxAge, and
// otherwise an error saying which is not the case. A resource server should report itself not ready
// while Fresh fails: its Denylist may be missing revocations. maxAge should be several times
// RevocationFeedConfig.ContactInterval; DefaultRevocationMaxAge fits the default.
func (f *RevocationFeed) Fresh(maxAge time.Duration) error {
	if !f.Caught() {
		return fmt.Errorf("revocations not caught up (position %d of %d)", f.delivered.Load(), f.target.Load())
	}
	last := f.LastContact()
	if last.IsZero() {
		return errors.New("revocations: no contact with the stream yet")
	}
	if age := f.now().Sub(last); age > maxAge {
		return fmt.Errorf("revocations stale: no contact with the %s stream for %s (allowed %s)",
			f.stream, age.Round(time.Millisecond), maxAge)
	}
	return nil
}

// ReadinessHandler returns a readiness endpoint for a resource server: 200 "ok" while Fresh(maxAge)
// passes, 503 with the reason otherwise. Serve it outside the authentication middleware, e.g. at
// /readyz, so that load balancers stop sending traffic while revocations may be missing.
func (f *RevocationFeed) ReadinessHandler(maxAge time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if err := f.Fresh(maxAge); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = fmt.Fprintln(w, err.Error())
			return
		}
		_, _ = fmt.Fprintln(w, "ok")
	})
}

// subscribe creates the ordered consumer and starts consuming, retrying until it succeeds or ctx is
// done.
func (f *RevocationFeed) subscribe(ctx context.Context) (jetstream.Consumer, jetstream.ConsumeContext, error) {
	for attempt := 0; ; attempt++ {
		cons, cc, err := f.trySubscribe(ctx)
		if err == nil {
			return cons, cc, nil
		}
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		if attempt == 0 || attempt%30 == 0 {
			f.log.Warn("cannot subscribe to revocations yet; retrying", "error", err.Error())
		}
		select {
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-time.After(f.retry):
		}
	}
}

func (f *RevocationFeed) trySubscribe(ctx context.Context) (jetstream.Consumer, jetstream.ConsumeContext, error) {
	actx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := f.js.Stream(actx, f.stream)
	if err != nil {
		return nil, nil, fmt.Errorf("stream %s: %w", f.stream, err)
	}
	info, err := st.Info(actx)
	if err != nil {
		return nil, nil, fmt.Errorf("stream %s info: %w", f.stream, err)
	}
	start := f.now().Add(-f.lookback)
	cons, err := st.OrderedConsumer(actx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{f.subject},
		DeliverPolicy:  jetstream.DeliverByStartTimePolicy,
		OptStartTime:   &start,
		NamePrefix:     "revocations_" + nuid.Next(),
		// Verifiers may not delete consumers: one left by a stopped or restarted feed goes after
		// this idle time instead of nats.go's five minutes.
		InactiveThreshold: OrderedInactiveThreshold,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("consumer on %s: %w", f.stream, err)
	}
	f.subscribes.Add(1)
	// Creating the consumer is a contact with the stream; record it before the feed can report itself
	// caught up, so that a caught-up feed always has a last contact.
	f.touch()
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
		return nil, nil, fmt.Errorf("consume %s: %w", f.stream, err)
	}
	return cons, cc, nil
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
	f.mu.Lock()
	f.consumer, f.consumed = md.Consumer, md.Sequence.Consumer
	f.mu.Unlock()
	f.touch()
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

		LastContact: f.LastContact(),
	}
}
