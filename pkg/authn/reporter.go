package authn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/observability"
	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
)

// AccessEvent is one access decision of a resource server: who or what accessed what, when, how,
// and with which outcome (monitorv1.AccessEvent).
type AccessEvent struct {
	// Time is when the request arrived.
	Time time.Time
	// Tenant is the token's tenant; empty when no valid token was presented.
	Tenant string
	// Agent is the agent claim, for agents.
	Agent string
	// ClientID is the token's client_id.
	ClientID string
	// Subject is the token's sub.
	Subject string
	// OnBehalfOf is the user a delegated token acts for.
	OnBehalfOf string
	// Environment is the token's env claim.
	Environment string
	// Resource is what was accessed (URL path or gRPC method, unless the handler named it).
	Resource string
	// Action is the HTTP method, or unary/stream for gRPC, unless the handler named it.
	Action string
	// Scopes are the token's scopes.
	Scopes []string
	// Allowed is the outcome: true when the request reached the handler.
	Allowed bool
	// Reason is why it was refused (a reason code such as TOKEN_EXPIRED or INSUFFICIENT_SCOPE).
	Reason string
	// Status is the HTTP status or gRPC code number of the response.
	Status int
	// ResponseBytes counts the bytes sent in the response.
	ResponseBytes int64
	// Rows counts the rows or records the handler reported (AccessReport.AddRows).
	Rows int64
	// Latency is the time spent serving the request.
	Latency time.Duration
	// RequestID is the caller's X-Request-Id (x-request-id for gRPC).
	RequestID string
	// TraceID is the W3C trace id of the request's traceparent.
	TraceID string
	// SourceAddress is the caller's address as this server sees it.
	SourceAddress string
	// TokenID is the token's jti.
	TokenID string
	// Audience is the audience the token was verified for.
	Audience string
	// Binding is how the token was bound: BindingBearer, BindingDPoP or BindingMTLS.
	Binding string
}

// AccessRecorder receives the access decisions of Middleware and the server interceptors. Record is
// called on the request path and must not block.
type AccessRecorder interface {
	Record(ev AccessEvent)
}

// AccessRecorderFunc adapts a function to AccessRecorder.
type AccessRecorderFunc func(ev AccessEvent)

// Record calls f.
func (f AccessRecorderFunc) Record(ev AccessEvent) { f(ev) }

// Defaults and limits of an AccessReporter.
const (
	// DefaultAccessQueueSize is how many events an AccessReporter holds before it drops.
	DefaultAccessQueueSize = 4096
	// DefaultAccessBatchSize is the largest batch an AccessReporter sends.
	DefaultAccessBatchSize = 500
	// MaxAccessBatchSize is the most events MonitorService.RecordAccess takes in one batch.
	MaxAccessBatchSize = 1000
)

// AccessReporterConfig configures an AccessReporter.
type AccessReporterConfig struct {
	// Tenant is the resource server's own tenant: events of requests refused before a token was
	// verified are reported there. Required.
	Tenant string
	// OtherTenants are further tenants whose events the reporter sends under their own tenant (a
	// resource server serving several tenants, with a credential the monitor accepts for each). An
	// event of any other tenant is recorded under Tenant with reason TENANT_NOT_ALLOWED and the
	// foreign token's identifiers cleared: the monitor would refuse it elsewhere.
	OtherTenants []string
	// Conn is the gRPC connection to the monitor's MonitorService. Required.
	Conn grpc.ClientConnInterface
	// Credentials, when set, authenticate every RecordAccess call (e.g. PerRPCCredentials of the
	// resource server's own Credential); leave it nil when Conn already carries credentials.
	Credentials credentials.PerRPCCredentials
	// QueueSize bounds the events waiting to be sent; default DefaultAccessQueueSize. When it is full
	// new events are dropped and counted, never waited for.
	QueueSize int
	// BatchSize is the most events per RecordAccess call; default DefaultAccessBatchSize, at most
	// MaxAccessBatchSize.
	BatchSize int
	// FlushInterval is the longest an event waits for its batch; default 1 second.
	FlushInterval time.Duration
	// MaxAttempts bounds the RecordAccess calls per batch; default 5. A batch that still fails is
	// counted as failed and its events as dropped (reported in the tenant's next batch).
	MaxAttempts int
	// RetryBackoff is the wait before the first retry, doubled for each next one up to 5 seconds;
	// default 250 ms.
	RetryBackoff time.Duration
	// CallTimeout bounds one RecordAccess call; default 10 seconds.
	CallTimeout time.Duration
	// Logger receives failures; default slog.Default().
	Logger *slog.Logger
	// Registerer, when set, gets the reporter's counters (agentid_authn_access_events_total).
	Registerer prometheus.Registerer
}

// AccessReporterStats counts the events of an AccessReporter.
type AccessReporterStats struct {
	// Queued counts events accepted into the queue.
	Queued int64
	// Sent counts events the monitor acknowledged.
	Sent int64
	// Dropped counts events dropped because the queue was full or the reporter closed.
	Dropped int64
	// Failed counts events of batches that failed after every attempt.
	Failed int64
	// Batches counts batches the monitor acknowledged.
	Batches int64
}

// AccessReporter batches access events to MonitorService.RecordAccess in the background: Record
// never blocks (a full queue drops and counts the event), batches of up to BatchSize events per
// tenant go out at least every FlushInterval, a batch keeps its batch_id across retries (the monitor
// stores it once), and each batch carries the count of events lost since the tenant's previous one.
type AccessReporter struct {
	tenant   string
	others   []string
	client   monitorv1.MonitorServiceClient
	callOpts []grpc.CallOption
	batch    int
	interval time.Duration
	attempts int
	backoff  time.Duration
	timeout  time.Duration
	logger   *slog.Logger

	mu     sync.RWMutex // guards closed against Record
	closed bool
	queue  chan AccessEvent

	dropMu  sync.Mutex
	pending map[string]int64 // tenant -> events lost and not yet reported

	queued, sent, dropped, failed, batches atomic.Int64

	ctx     context.Context
	cancel  context.CancelFunc
	closing chan struct{}
	done    chan struct{}
	lastErr atomic.Pointer[error]
}

var _ AccessRecorder = (*AccessReporter)(nil)

// NewAccessReporter validates cfg and starts the reporter's background loop; Close stops it.
func NewAccessReporter(cfg AccessReporterConfig) (*AccessReporter, error) {
	switch {
	case !ValidTenant(cfg.Tenant):
		return nil, fmt.Errorf("authn: access reporter tenant %q is not a valid tenant id", cfg.Tenant)
	case cfg.Conn == nil:
		return nil, errors.New("authn: access reporter needs a connection to the monitor (Conn)")
	case cfg.BatchSize > MaxAccessBatchSize:
		return nil, fmt.Errorf("authn: access reporter batch size %d is above the monitor's limit %d", cfg.BatchSize, MaxAccessBatchSize)
	}
	for _, t := range cfg.OtherTenants {
		if !ValidTenant(t) {
			return nil, fmt.Errorf("authn: access reporter other tenant %q is not a valid tenant id", t)
		}
	}
	r := &AccessReporter{
		tenant:   cfg.Tenant,
		others:   slices.Clone(cfg.OtherTenants),
		client:   monitorv1.NewMonitorServiceClient(cfg.Conn),
		batch:    orDefault(cfg.BatchSize, DefaultAccessBatchSize),
		interval: orDefault(cfg.FlushInterval, time.Second),
		attempts: orDefault(cfg.MaxAttempts, 5),
		backoff:  orDefault(cfg.RetryBackoff, 250*time.Millisecond),
		timeout:  orDefault(cfg.CallTimeout, 10*time.Second),
		logger:   cfg.Logger,
		queue:    make(chan AccessEvent, orDefault(cfg.QueueSize, DefaultAccessQueueSize)),
		pending:  make(map[string]int64),
		closing:  make(chan struct{}),
		done:     make(chan struct{}),
	}
	if cfg.Credentials != nil {
		r.callOpts = append(r.callOpts, grpc.PerRPCCredentials(cfg.Credentials))
	}
	if r.logger == nil {
		r.logger = slog.Default()
	}
	if cfg.Registerer != nil {
		r.register(cfg.Registerer)
	}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	go r.run()
	return r, nil
}

func orDefault[T int | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

func (r *AccessReporter) register(reg prometheus.Registerer) {
	for _, c := range []struct {
		result string
		n      *atomic.Int64
	}{{"queued", &r.queued}, {"sent", &r.sent}, {"dropped", &r.dropped}, {"failed", &r.failed}} {
		n := c.n
		observability.Register(reg, prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "agentid_authn_access_events_total",
			Help:        "Access events of the verifier SDK's reporter, by result (queued, sent, dropped, failed).",
			ConstLabels: prometheus.Labels{"result": c.result},
		}, func() float64 { return float64(n.Load()) }))
	}
}

// Record cleans ev so that the monitor accepts it (see the MaxAccess limits) and queues it without
// blocking; when the queue is full, or the reporter is closed, the event is dropped and counted.
func (r *AccessReporter) Record(ev AccessEvent) {
	r.sanitize(&ev, time.Now())
	r.mu.RLock()
	if !r.closed {
		select {
		case r.queue <- ev:
			r.mu.RUnlock()
			r.queued.Add(1)
			return
		default:
		}
	}
	r.mu.RUnlock()
	r.lose(ev.Tenant, 1)
	r.dropped.Add(1)
}

// lose counts n events of tenant as lost, to be reported in the tenant's next batch.
func (r *AccessReporter) lose(tenant string, n int64) {
	if n <= 0 {
		return
	}
	r.dropMu.Lock()
	r.pending[tenant] += n
	r.dropMu.Unlock()
}

// takeLost returns and clears the count of tenant's lost events.
func (r *AccessReporter) takeLost(tenant string) int64 {
	r.dropMu.Lock()
	defer r.dropMu.Unlock()
	n := r.pending[tenant]
	delete(r.pending, tenant)
	return n
}

// lostTenants returns the tenants with lost events not yet reported.
func (r *AccessReporter) lostTenants() []string {
	r.dropMu.Lock()
	defer r.dropMu.Unlock()
	out := make([]string, 0, len(r.pending))
	for t := range r.pending {
		out = append(out, t)
	}
	return out
}

// Stats returns the reporter's counters.
func (r *AccessReporter) Stats() AccessReporterStats {
	return AccessReporterStats{
		Queued: r.queued.Load(), Sent: r.sent.Load(), Dropped: r.dropped.Load(),
		Failed: r.failed.Load(), Batches: r.batches.Load(),
	}
}

// Close stops accepting events, sends what is queued and waits for it until ctx is done; then it
// abandons what is left. It returns an error when some events could not be sent.
func (r *AccessReporter) Close(ctx context.Context) error {
	failedBefore := r.failed.Load()
	r.mu.Lock()
	already := r.closed
	r.closed = true
	r.mu.Unlock()
	if !already {
		close(r.closing)
	}
	select {
	case <-r.done:
	case <-ctx.Done():
		r.cancel()
		<-r.done
	}
	r.cancel()
	if r.failed.Load() > failedBefore {
		if p := r.lastErr.Load(); p != nil {
			return *p
		}
		return errors.New("authn: access reporter could not send every event")
	}
	if ctx.Err() != nil {
		return fmt.Errorf("authn: access reporter closed before every event was sent: %w", ctx.Err())
	}
	return nil
}

func (r *AccessReporter) run() {
	defer close(r.done)
	tick := time.NewTicker(r.interval)
	defer tick.Stop()
	batches := make(map[string][]AccessEvent)
	add := func(ev AccessEvent) {
		b := append(batches[ev.Tenant], ev)
		if len(b) >= r.batch {
			r.send(ev.Tenant, b)
			b = nil
		}
		batches[ev.Tenant] = b
	}
	for {
		select {
		case ev := <-r.queue:
			add(ev)
		case <-tick.C:
			r.flush(batches)
		case <-r.closing:
			for drained := false; !drained; {
				select {
				case ev := <-r.queue:
					add(ev)
				default:
					drained = true
				}
			}
			r.flush(batches)
			return
		}
	}
}

// flush sends every tenant's partial batch, and an empty batch to tenants that only lost events.
func (r *AccessReporter) flush(batches map[string][]AccessEvent) {
	for tenant, b := range batches {
		if len(b) > 0 {
			r.send(tenant, b)
		}
		delete(batches, tenant)
	}
	for _, tenant := range r.lostTenants() {
		r.send(tenant, nil)
	}
}

// send delivers a tenant's events, with the count of its lost events, in as many batches as keep
// each request under MaxAccessBatchBytes.
func (r *AccessReporter) send(tenant string, events []AccessEvent) {
	lost := r.takeLost(tenant)
	if len(events) == 0 && lost == 0 {
		return
	}
	protos := make([]*monitorv1.AccessEvent, len(events))
	for i := range events {
		protos[i] = accessEventProto(&events[i])
	}
	overhead := proto.Size(&monitorv1.RecordAccessRequest{Parent: "tenants/" + tenant, BatchId: newUUID(), Dropped: lost})
	parts := splitBySize(protos, overhead, MaxAccessBatchBytes)
	if len(parts) == 0 {
		parts = append(parts, nil) // only the lost count
	}
	for i, part := range parts {
		if i > 0 {
			lost = 0
		}
		r.sendBatch(tenant, part, lost)
	}
}

// sendBatch delivers one batch with bounded retries under one batch_id. On final failure its events
// are counted as failed and lost.
func (r *AccessReporter) sendBatch(tenant string, events []*monitorv1.AccessEvent, lost int64) {
	req := &monitorv1.RecordAccessRequest{
		Parent:  "tenants/" + tenant,
		BatchId: newUUID(),
		Events:  events,
		Dropped: lost,
	}
	var err error
	for attempt := 1; attempt <= r.attempts; attempt++ {
		ctx, cancel := context.WithTimeout(r.ctx, r.timeout)
		_, err = r.client.RecordAccess(ctx, req, r.callOpts...)
		cancel()
		if err == nil {
			r.sent.Add(int64(len(events)))
			r.batches.Add(1)
			return
		}
		if !errs.Retryable(err) || r.ctx.Err() != nil || attempt == r.attempts {
			break
		}
		wait := min(r.backoff<<(attempt-1), 5*time.Second)
		wait += time.Duration(rand.Int64N(int64(wait)/4 + 1))
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-r.ctx.Done():
			t.Stop()
		}
	}
	r.failed.Add(int64(len(events)))
	switch errs.KindOf(err) {
	case errs.KindPermissionDenied, errs.KindNotFound:
		// The tenant takes nothing from this reporter: a count sent there would be refused again,
		// forever. The events are counted as failed, once.
	case errs.KindInvalidArgument:
		// The events are reported as lost in the tenant's next batch, once; the count this batch
		// carried is not carried again (an empty batch refused would otherwise come back forever).
		r.lose(tenant, int64(len(events)))
	default:
		r.lose(tenant, lost+int64(len(events)))
	}
	err = fmt.Errorf("authn: record %d access events of tenant %s (batch %s): %w", len(events), tenant, req.BatchId, err)
	r.lastErr.Store(&err)
	r.logger.Warn("access events not recorded", "tenant", tenant, "batch_id", req.BatchId,
		"events", len(events), "cause", err.Error())
}

func newUUID() string {
	if id, err := uuid.NewV7(); err == nil {
		return id.String()
	}
	return uuid.NewString()
}

func accessEventProto(ev *AccessEvent) *monitorv1.AccessEvent {
	outcome := monitorv1.AccessOutcome_ACCESS_OUTCOME_DENIED
	if ev.Allowed {
		outcome = monitorv1.AccessOutcome_ACCESS_OUTCOME_ALLOWED
	}
	return &monitorv1.AccessEvent{
		EventId:       newUUID(),
		Time:          timestamppb.New(ev.Time.UTC()),
		Tenant:        ev.Tenant,
		Agent:         ev.Agent,
		ClientId:      ev.ClientID,
		Subject:       ev.Subject,
		OnBehalfOf:    ev.OnBehalfOf,
		Environment:   ev.Environment,
		Resource:      ev.Resource,
		Action:        ev.Action,
		Scopes:        ev.Scopes,
		Outcome:       outcome,
		Reason:        ev.Reason,
		Status:        int32(ev.Status),
		ResponseBytes: ev.ResponseBytes,
		Rows:          ev.Rows,
		Latency:       durationpb.New(ev.Latency),
		RequestId:     ev.RequestID,
		TraceId:       ev.TraceID,
		SourceAddress: ev.SourceAddress,
		TokenId:       ev.TokenID,
		Audience:      ev.Audience,
		TokenBinding:  ev.Binding,
	}
}
