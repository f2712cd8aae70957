package eventsapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/grpcx"
	"github.com/agentid/agentid/pkg/ratelimit"
	eventsv1 "github.com/agentid/agentid/proto/gen/go/agentid/events/v1"
	// The payload types of the aggregate streams, so that every event decodes (and is redacted).
	_ "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	_ "github.com/agentid/agentid/proto/gen/go/agentid/lifecycle/v1"
	_ "github.com/agentid/agentid/proto/gen/go/agentid/policy/v1"
	_ "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// errGone ends a subscription whose subscriber has left.
var errGone = errors.New("eventsapi: the subscriber is gone")

// AggregateStreams are the streams Subscribe reads, always narrowed to one tenant's subjects.
var AggregateStreams = []string{
	eventstore.StreamTenants, eventstore.StreamAgents, eventstore.StreamCredentials,
	eventstore.StreamPolicy, eventstore.StreamLifecycle, eventstore.StreamRevocations,
}

// AllowedRoles are the roles that may subscribe to their tenant's events (platform-admins of the
// system tenant may subscribe to any tenant's).
var AllowedRoles = []authn.Role{authn.RoleSubscriber, authn.RoleAuditor, authn.RoleTenantAdmin}

// Defaults of Config.
const (
	// DefaultMaxStreamsPerCaller is how many subscriptions one principal may hold at once.
	DefaultMaxStreamsPerCaller = 4
	// DefaultHeartbeatInterval is how long a subscription may go without a message before a heartbeat.
	DefaultHeartbeatInterval = 15 * time.Second
	// DefaultSlowSubscriberTimeout is how long the send buffer may stay full before the subscriber is
	// cut off with ResourceExhausted.
	DefaultSlowSubscriberTimeout = 10 * time.Second
	// DefaultSendBuffer is how many responses wait for a slow subscriber.
	DefaultSendBuffer = 64
	// DefaultSubscribeRate is how many subscriptions per second one principal may start in the long
	// run, and DefaultSubscribeBurst how many at once: every subscription opens a server-side consumer
	// per stream, which outlives it by eventstore.OrderedInactiveThreshold (no identity may delete
	// consumers), so subscriptions opened and closed in a loop must not fill a stream's consumer limit.
	DefaultSubscribeRate  = 1.0
	DefaultSubscribeBurst = 20
)

// Limits of a request.
const (
	maxEventTypes = 32
	maxFilterLen  = 128
	// streamBuffer bounds the events read ahead from each stream.
	streamBuffer = 64
)

// Config configures New.
type Config struct {
	// JetStream reads the aggregate streams. Required.
	JetStream jetstream.JetStream
	// Logger logs subscriptions and cut-offs; default slog.Default().
	Logger *slog.Logger
	// MaxStreamsPerCaller caps one principal's concurrent subscriptions; default DefaultMaxStreamsPerCaller.
	MaxStreamsPerCaller int
	// HeartbeatInterval is how long a subscription may be quiet before a heartbeat; default
	// DefaultHeartbeatInterval.
	HeartbeatInterval time.Duration
	// SlowSubscriberTimeout is how long the send buffer may stay full before the subscription ends with
	// ResourceExhausted; default DefaultSlowSubscriberTimeout.
	SlowSubscriberTimeout time.Duration
	// SendBuffer is how many responses may wait for the subscriber; default DefaultSendBuffer.
	SendBuffer int
	// SubscribeRate is how many subscriptions per second one principal may start in the long run
	// (default DefaultSubscribeRate) and SubscribeBurst how many at once (default
	// DefaultSubscribeBurst); more are refused with ResourceExhausted TOO_MANY_SUBSCRIPTIONS.
	SubscribeRate  float64
	SubscribeBurst int
}

// Server implements agentid.events.v1.EventsService.
type Server struct {
	eventsv1.UnimplementedEventsServiceServer
	cfg Config
	log *slog.Logger

	mu     sync.Mutex
	active map[string]int // principal -> open subscriptions

	starts *ratelimit.Limiter // subscriptions started, per principal
}

var _ eventsv1.EventsServiceServer = (*Server)(nil)

// New builds the EventsService.
func New(cfg Config) (*Server, error) {
	if cfg.JetStream == nil {
		return nil, errors.New("eventsapi: Config.JetStream is required")
	}
	if cfg.MaxStreamsPerCaller < 0 || cfg.HeartbeatInterval < 0 || cfg.SlowSubscriberTimeout < 0 || cfg.SendBuffer < 0 ||
		cfg.SubscribeRate < 0 || cfg.SubscribeBurst < 0 {
		return nil, errors.New("eventsapi: limits and intervals must not be negative")
	}
	if cfg.MaxStreamsPerCaller == 0 {
		cfg.MaxStreamsPerCaller = DefaultMaxStreamsPerCaller
	}
	if cfg.HeartbeatInterval == 0 {
		cfg.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if cfg.SlowSubscriberTimeout == 0 {
		cfg.SlowSubscriberTimeout = DefaultSlowSubscriberTimeout
	}
	if cfg.SendBuffer == 0 {
		cfg.SendBuffer = DefaultSendBuffer
	}
	if cfg.SubscribeRate == 0 {
		cfg.SubscribeRate = DefaultSubscribeRate
	}
	if cfg.SubscribeBurst == 0 {
		cfg.SubscribeBurst = DefaultSubscribeBurst
	}
	starts, err := ratelimit.New(ratelimit.Config{Rate: cfg.SubscribeRate, Burst: cfg.SubscribeBurst})
	if err != nil {
		return nil, fmt.Errorf("eventsapi: subscribe rate: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Server{cfg: cfg, log: log.With("component", "eventsapi"), active: make(map[string]int), starts: starts}, nil
}

// Register registers EventsService on s.
func (s *Server) Register(g *grpc.Server) { eventsv1.RegisterEventsServiceServer(g, s) }

// Subscribe implements EventsService.Subscribe.
func (s *Server) Subscribe(req *eventsv1.SubscribeRequest, ss grpc.ServerStreamingServer[eventsv1.SubscribeResponse]) error {
	ctx := ss.Context()
	p, _ := authn.PrincipalFrom(ctx)
	if p == nil {
		return errs.Unauthenticated("UNAUTHENTICATED", "authentication required")
	}
	tenant, ok := strings.CutPrefix(req.GetParent(), "tenants/")
	if !ok || !authn.ValidTenant(tenant) {
		return errs.InvalidArgument("parent", "must have the form tenants/{tenant}")
	}
	if err := p.Authorize(tenant, AllowedRoles...); err != nil {
		return err
	}
	pl, err := newPlan(tenant, req)
	if err != nil {
		return err
	}
	release, err := s.acquire(p)
	if err != nil {
		return err
	}
	defer release()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	srcs, err := s.open(ctx, pl)
	if err != nil {
		return err
	}
	// The response headers tell the subscriber that every stream is open: whatever is appended from
	// now on will be delivered.
	if err := ss.SendHeader(metadata.MD{}); err != nil {
		for _, src := range srcs {
			src.it.Stop()
		}
		return nil // the subscriber is gone
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel() // runs before wg.Wait: stops the readers
	notify := make(chan struct{}, 1)
	for _, src := range srcs {
		wg.Go(func() { src.read(ctx, notify, s.log) })
	}
	s.log.InfoContext(ctx, "event subscription started", "tenant", tenant, "principal", p.ID,
		"principal_tenant", p.Tenant, "streams", len(srcs))
	err = s.serve(ctx, ss, pl, srcs, notify)
	if errs.KindOf(err) == errs.KindResourceExhausted {
		s.log.WarnContext(ctx, "event subscriber cut off", "tenant", tenant, "principal", p.ID, "error", err)
	}
	return err
}

// acquire takes one of the principal's subscription slots.
func (s *Server) acquire(p *authn.Principal) (release func(), err error) {
	key := p.Tenant + "/" + p.ID
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.active[key] >= s.cfg.MaxStreamsPerCaller {
		return nil, errs.ResourceExhausted("TOO_MANY_SUBSCRIPTIONS",
			fmt.Sprintf("at most %d concurrent event subscriptions per caller", s.cfg.MaxStreamsPerCaller))
	}
	// Charged only for a subscription that starts (and opens consumers).
	if ok, wait := s.starts.Allow(key); !ok {
		return nil, errs.ResourceExhausted("TOO_MANY_SUBSCRIPTIONS",
			fmt.Sprintf("a caller starts at most %d event subscriptions at once and %g per second; retry in %s",
				s.cfg.SubscribeBurst, s.cfg.SubscribeRate, wait.Round(time.Millisecond)))
	}
	s.active[key]++
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.active[key]--; s.active[key] <= 0 {
			delete(s.active, key)
		}
	}, nil
}

// plan is a validated subscription: which subjects of which streams, which types, from where.
type plan struct {
	tenant   string
	streams  []string // in AggregateStreams order
	filter   string   // the subject filter on every stream, built from the authorized tenant
	types    []string // exact types, or prefixes ending in "."
	format   eventsv1.EventFormat
	cursor   *cursor
	from     *time.Time
	earliest bool
}

// newPlan validates req for the authorized tenant.
func newPlan(tenant string, req *eventsv1.SubscribeRequest) (*plan, error) {
	pl := &plan{tenant: tenant, streams: AggregateStreams, format: req.GetFormat()}
	switch pl.format {
	case eventsv1.EventFormat_EVENT_FORMAT_UNSPECIFIED:
		pl.format = eventsv1.EventFormat_EVENT_FORMAT_CLOUDEVENTS_JSON
	case eventsv1.EventFormat_EVENT_FORMAT_CLOUDEVENTS_JSON, eventsv1.EventFormat_EVENT_FORMAT_PROTOBUF:
	default:
		return nil, errs.InvalidArgument("format", "unknown event format")
	}
	if len(req.GetEventTypes()) > maxEventTypes {
		return nil, errs.InvalidArgument("event_types", fmt.Sprintf("at most %d types", maxEventTypes))
	}
	for _, t := range req.GetEventTypes() {
		if !validToken(t, true) {
			return nil, errs.InvalidArgument("event_types", fmt.Sprintf("%q is not an event type or a prefix ending in a dot", t))
		}
		pl.types = append(pl.types, t)
	}
	aggType, aggID := req.GetAggregateType(), req.GetAggregateId()
	if aggID != "" && !validToken(aggID, false) {
		return nil, errs.InvalidArgument("aggregate_id", "must be one subject token: no dots, wildcards, spaces or control characters, at most 128 bytes")
	}
	typeToken := "*"
	if aggType != "" {
		stream, ok := eventstore.StreamForAggregate(aggType)
		if !ok || !slices.Contains(AggregateStreams, stream) {
			return nil, errs.InvalidArgument("aggregate_type", fmt.Sprintf("unknown aggregate type %q", aggType))
		}
		pl.streams, typeToken = []string{stream}, aggType
	}
	switch {
	case aggID != "":
		pl.filter = eventstore.AggregateSubject(tenant, typeToken, aggID)
	case aggType != "":
		pl.filter = eventstore.SubjectRoot + "." + tenant + "." + aggType + ".>"
	default:
		pl.filter = eventstore.SubjectRoot + "." + tenant + ".>"
	}
	switch st := req.GetStart().(type) {
	case nil:
	case *eventsv1.SubscribeRequest_Cursor:
		c, err := decodeCursor(st.Cursor, tenant, AggregateStreams)
		if err != nil {
			return nil, errs.InvalidArgument("cursor", err.Error())
		}
		pl.cursor, pl.from = &c, c.From
	case *eventsv1.SubscribeRequest_StartTime:
		if err := st.StartTime.CheckValid(); err != nil {
			return nil, errs.InvalidArgument("start_time", "not a valid time")
		}
		t := st.StartTime.AsTime()
		pl.from = &t
	case *eventsv1.SubscribeRequest_Position:
		switch st.Position {
		case eventsv1.StartPosition_START_POSITION_UNSPECIFIED, eventsv1.StartPosition_START_POSITION_NEW:
		case eventsv1.StartPosition_START_POSITION_EARLIEST:
			pl.earliest = true
		default:
			return nil, errs.InvalidArgument("position", "unknown start position")
		}
	}
	return pl, nil
}

// validToken reports whether s may appear in a filter: printable, no spaces or subject wildcards, at
// most maxFilterLen bytes, and, unless dots are allowed (event types), no dots.
func validToken(s string, dots bool) bool {
	if s == "" || len(s) > maxFilterLen || strings.ContainsAny(s, "*>") || (!dots && strings.Contains(s, ".")) ||
		strings.HasPrefix(s, ".") || strings.Contains(s, "..") {
		return false
	}
	for _, r := range s {
		if unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

// matches reports whether e is one the subscriber asked for.
func (pl *plan) matches(e eventstore.Event) bool {
	if e.Metadata.Tenant != "" && e.Metadata.Tenant != pl.tenant {
		return false // the subject says otherwise: never deliver another tenant's event
	}
	if len(pl.types) == 0 {
		return true
	}
	for _, t := range pl.types {
		if e.Type == t || (strings.HasSuffix(t, ".") && strings.HasPrefix(e.Type, t)) {
			return true
		}
	}
	return false
}

// item is one message read from a stream: its sequence, the matching messages after it, and the
// event (nil when the message is not a well-formed event), or the error that ended the reading.
type item struct {
	seq     uint64
	pending uint64
	ev      *eventstore.Event
	err     error
}

// source is the reading of one stream.
type source struct {
	stream   string
	it       jetstream.MessagesContext
	ch       chan item
	caughtUp bool   // every message stored when the subscription started has been processed
	known    bool   // pos is the position reached
	pos      uint64 // last processed sequence
	head     *item  // next item to merge
}

// open creates an ordered consumer on every stream of pl at its start position.
func (s *Server) open(ctx context.Context, pl *plan) ([]*source, error) {
	unavailable := func(stream string, err error) error {
		return errs.Unavailable("EVENTS_UNAVAILABLE", "the event streams cannot be read right now, retry later",
			fmt.Errorf("stream %s: %w", stream, err))
	}
	var srcs []*source
	stopAll := func() {
		for _, src := range srcs {
			src.it.Stop()
		}
	}
	for _, name := range pl.streams {
		src := &source{stream: name, ch: make(chan item, streamBuffer)}
		cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{pl.filter}, InactiveThreshold: eventstore.OrderedInactiveThreshold}
		seq, inCursor := uint64(0), false
		if pl.cursor != nil {
			seq, inCursor = pl.cursor.Seqs[name]
		}
		switch {
		case inCursor:
			cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, seq+1
			src.known, src.pos = true, seq
		case pl.from != nil:
			cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, pl.from
		case pl.earliest:
			cfg.DeliverPolicy = jetstream.DeliverAllPolicy
			src.known = true
		default: // new only: after the stream's last message now
			st, err := s.cfg.JetStream.Stream(ctx, name)
			if err != nil {
				stopAll()
				return nil, unavailable(name, err)
			}
			last := st.CachedInfo().State.LastSeq
			cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, last+1
			src.known, src.pos = true, last
		}
		cons, err := s.cfg.JetStream.OrderedConsumer(ctx, name, cfg)
		if err != nil {
			stopAll()
			return nil, unavailable(name, err)
		}
		it, err := cons.Messages(jetstream.PullMaxMessages(streamBuffer))
		if err != nil {
			stopAll()
			return nil, unavailable(name, err)
		}
		src.it = it
		info := cons.CachedInfo()
		src.caughtUp = info != nil && info.NumPending == 0
		srcs = append(srcs, src)
	}
	return srcs, nil
}

// read moves the stream's messages into src.ch until ctx is done, signalling notify after each.
func (src *source) read(ctx context.Context, notify chan<- struct{}, log *slog.Logger) {
	go func() { <-ctx.Done(); src.it.Stop() }()
	push := func(it item) bool {
		select {
		case src.ch <- it:
		case <-ctx.Done():
			return false
		}
		select {
		case notify <- struct{}{}:
		default:
		}
		return true
	}
	for {
		m, err := src.it.Next()
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				push(item{err: fmt.Errorf("stream %s: %w", src.stream, err)})
			}
			return
		}
		md, err := m.Metadata()
		if err != nil {
			log.WarnContext(ctx, "skipping a message without metadata", "stream", src.stream, "subject", m.Subject(), "error", err)
			continue
		}
		it := item{seq: md.Sequence.Stream, pending: md.NumPending}
		if ev, err := eventstore.EventFromRaw(src.stream, it.seq, m.Subject(), m.Headers(), m.Data()); err == nil {
			it.ev = &ev
		} else {
			log.WarnContext(ctx, "not delivering a malformed event", "stream", src.stream, "sequence", it.seq, "error", err)
		}
		if !push(it) {
			return
		}
	}
}

// serve merges the sources by event time and sends what matches, with heartbeats, until the
// subscriber leaves (nil), is too slow (ResourceExhausted) or a stream cannot be read (Unavailable).
func (s *Server) serve(ctx context.Context, ss grpc.ServerStreamingServer[eventsv1.SubscribeResponse], pl *plan,
	srcs []*source, notify <-chan struct{}) error {
	out := make(chan *eventsv1.SubscribeResponse, s.cfg.SendBuffer)
	sendErr := make(chan error, 1)
	defer close(out)
	go func() {
		for r := range out {
			if err := ss.Send(r); err != nil {
				sendErr <- err
				return
			}
		}
	}()
	heartbeat := time.NewTimer(s.cfg.HeartbeatInterval)
	defer heartbeat.Stop()
	enqueue := func(r *eventsv1.SubscribeResponse) error {
		heartbeat.Reset(s.cfg.HeartbeatInterval)
		select {
		case out <- r:
			return nil
		default:
		}
		slow := time.NewTimer(s.cfg.SlowSubscriberTimeout)
		defer slow.Stop()
		select {
		case out <- r:
			return nil
		case <-slow.C:
			return errs.ResourceExhausted("SLOW_SUBSCRIBER", fmt.Sprintf(
				"the subscriber did not keep up for %s; subscribe again with the last cursor received", s.cfg.SlowSubscriberTimeout))
		case <-ctx.Done():
			return errGone
		case <-sendErr:
			return errGone
		}
	}
	for {
		for _, src := range srcs {
			if src.head != nil {
				continue
			}
			select {
			case it := <-src.ch:
				if it.err != nil {
					return errs.Unavailable("EVENTS_UNAVAILABLE", "the event streams cannot be read right now; subscribe again with the last cursor received", it.err)
				}
				src.head = &it
			default:
			}
		}
		var next *source
		waiting := false
		for _, src := range srcs {
			switch {
			case src.head == nil:
				waiting = waiting || !src.caughtUp
			case next == nil || earlier(src, next):
				next = src
			}
		}
		if next != nil && !waiting {
			it := next.head
			next.head, next.pos, next.known = nil, it.seq, true
			if it.pending == 0 {
				next.caughtUp = true
			}
			if it.ev == nil || !pl.matches(*it.ev) {
				continue
			}
			r, err := response(pl, *it.ev, cursorOf(pl, srcs))
			if err != nil {
				return err
			}
			if err := enqueue(r); err != nil {
				return ignoreGone(err)
			}
			continue
		}
		select {
		case <-notify:
		case <-heartbeat.C:
			// A subscription lasts only while its token would still be accepted: a revoked token ends
			// it here (and at the server's own rechecks), an expired one at its exp (pkg/grpcx).
			if err := grpcx.RecheckToken(ctx); err != nil {
				return err
			}
			if err := enqueue(&eventsv1.SubscribeResponse{Cursor: cursorOf(pl, srcs),
				Payload: &eventsv1.SubscribeResponse_Heartbeat{Heartbeat: &eventsv1.Heartbeat{Time: timestamppb.Now()}}}); err != nil {
				return ignoreGone(err)
			}
		case <-ctx.Done():
			return nil
		case <-sendErr:
			return nil // the subscriber is gone
		}
	}
}

// ignoreGone is err, or nil when the subscriber has left.
func ignoreGone(err error) error {
	if errors.Is(err, errGone) {
		return nil
	}
	return err
}

// earlier orders the heads of two sources: by event time, then by stream order.
func earlier(a, b *source) bool {
	ta, tb := headTime(a.head), headTime(b.head)
	if !ta.Equal(tb) {
		return ta.Before(tb)
	}
	return slices.Index(AggregateStreams, a.stream) < slices.Index(AggregateStreams, b.stream)
}

func headTime(it *item) time.Time {
	if it.ev == nil {
		return time.Time{} // a malformed message is skipped first
	}
	return it.ev.Time
}

// cursorOf is the cursor of the position every source has reached.
func cursorOf(pl *plan, srcs []*source) string {
	c := cursor{Tenant: pl.tenant, Seqs: make(map[string]uint64, len(srcs)), From: pl.from}
	unknown := false
	for _, src := range srcs {
		if src.known {
			c.Seqs[src.stream] = src.pos
		} else {
			unknown = true
		}
	}
	if !unknown {
		c.From = nil
	}
	return c.encode()
}

// response renders one event in the plan's format.
func response(pl *plan, e eventstore.Event, cur string) (*eventsv1.SubscribeResponse, error) {
	msg, ok := payload(e)
	if !ok {
		msg = nil
	}
	if pl.format == eventsv1.EventFormat_EVENT_FORMAT_PROTOBUF {
		pe, err := protoEvent(e, msg)
		if err != nil {
			return nil, fmt.Errorf("eventsapi: encode event %s: %w", e.ID, err)
		}
		return &eventsv1.SubscribeResponse{Cursor: cur, Payload: &eventsv1.SubscribeResponse_Event{Event: pe}}, nil
	}
	b, err := cloudEventJSON(e, msg)
	if err != nil {
		return nil, fmt.Errorf("eventsapi: encode event %s: %w", e.ID, err)
	}
	return &eventsv1.SubscribeResponse{Cursor: cur, Payload: &eventsv1.SubscribeResponse_CloudEventJson{CloudEventJson: b}}, nil
}
