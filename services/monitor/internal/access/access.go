// Package access records the access decisions resource servers report (MonitorService.RecordAccess):
// it authorizes the reporter, validates the whole batch and stores it as one `access.recorded`
// event on the TELEMETRY stream, idempotently by batch id, before answering.
package access

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/eventstore"
	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
)

// EventType is the type of the event a recorded batch is stored as; its payload is the
// monitorv1.RecordAccessRequest as received.
const EventType = "access.recorded"

// Limits of a batch and of its events.
const (
	// MaxEvents is the most events one batch may carry.
	MaxEvents = 1000
	// MaxResourceLen bounds AccessEvent.resource, in bytes.
	MaxResourceLen = 1024
	// MaxFieldLen bounds every other string field of an event, in bytes.
	MaxFieldLen = 256
	// MaxRequestIDLen bounds AccessEvent.request_id, as the platform bounds request ids.
	MaxRequestIDLen = 128
	// MaxScopes is the most scopes one event may list.
	MaxScopes = 64
	// MaxScopeLen bounds one scope, in bytes.
	MaxScopeLen = 128
	// MaxFutureSkew is how far in the future an event's time may be (clock skew of the reporter).
	MaxFutureSkew = 5 * time.Minute
	// MaxPastAge is how long before receipt an event may have happened: a reporter buffers for
	// seconds, not hours, and an access dated long ago would be judged (and learned) out of its hour.
	MaxPastAge = time.Hour
	// DefaultMaxBatchBytes bounds the encoded batch so that it fits one NATS message (max_payload
	// 1 MiB by default) with its headers.
	DefaultMaxBatchBytes = 960 << 10
	// retentionTTL is how long a looked-up stream retention is reused.
	retentionTTL = time.Minute
)

// tokenBindings are the values AccessEvent.token_binding may take ("" when no token was verified).
var tokenBindings = []string{"", "bearer", "dpop", "mtls"}

// batchNamespace derives a batch's event id from its tenant, reporter and batch id.
var batchNamespace = uuid.MustParse("6f1c3e0a-8d2b-5a47-9e61-0c4b7a2d9f15")

// Subject is the TELEMETRY subject of a tenant's recorded access batches.
func Subject(tenant string) string { return "telemetry." + tenant + ".access.recorded" }

// BatchEventID is the event id a batch is stored under: a UUIDv5 of the tenant, the reporter's
// client id and the batch id, so a retry of the batch keeps its id and one reporter cannot
// shadow another's batch.
func BatchEventID(tenant, reporter, batchID string) string {
	return uuid.NewSHA1(batchNamespace, []byte(tenant+"\x00"+reporter+"\x00"+batchID)).String()
}

// Publisher stores a telemetry event under a chosen id (implemented by *eventstore.Store).
type Publisher interface {
	PublishWithID(ctx context.Context, id, subject, typ, ceSubject string, data proto.Message, md eventstore.Metadata) (eventstore.Event, error)
}

// RetentionFunc returns how long the TELEMETRY stream keeps events (0: without limit).
type RetentionFunc func(ctx context.Context) (time.Duration, error)

// Config configures a Recorder.
type Config struct {
	// Publisher stores the batches; required.
	Publisher Publisher
	// Retention returns the TELEMETRY stream's retention; events older than it are refused.
	// Required.
	Retention RetentionFunc
	// MaxBatchBytes bounds the encoded batch (default DefaultMaxBatchBytes).
	MaxBatchBytes int
	// Now defaults to time.Now.
	Now func() time.Time
}

// Recorder records batches of access events.
type Recorder struct {
	cfg Config

	mu          sync.Mutex
	retention   time.Duration
	retentionAt time.Time
}

// New returns a Recorder.
func New(cfg Config) (*Recorder, error) {
	if cfg.Publisher == nil || cfg.Retention == nil {
		return nil, errors.New("access: Config.Publisher and Config.Retention are required")
	}
	if cfg.MaxBatchBytes <= 0 {
		cfg.MaxBatchBytes = DefaultMaxBatchBytes
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Recorder{cfg: cfg}, nil
}

// Record authorizes the caller, validates the batch and stores it; it returns how many distinct
// events the batch holds. A batch without events is accepted when it only reports a dropped count,
// so that a reporter that lost every event still makes its losses visible. Callers: resource-server or tenant-admin of the parent tenant, or a
// platform-admin. Nothing is stored on any error; a store failure is Unavailable. md is the call's
// event metadata; its actor becomes the caller's client id.
func (r *Recorder) Record(ctx context.Context, md eventstore.Metadata, req *monitorv1.RecordAccessRequest) (int, error) {
	tenant, ok := strings.CutPrefix(req.GetParent(), "tenants/")
	switch {
	case req.GetParent() == "":
		return 0, errs.InvalidArgument("parent", "parent is required (tenants/{tenant})")
	case !ok || !authn.ValidTenant(tenant):
		return 0, errs.InvalidArgument("parent", "parent must be tenants/{tenant}")
	}
	p, _ := authn.PrincipalFrom(ctx)
	if err := p.Authorize(tenant, authn.RoleResourceServer, authn.RoleTenantAdmin); err != nil {
		return 0, err
	}
	if !isUUID(req.GetBatchId()) {
		return 0, errs.InvalidArgument("batch_id", "batch_id must be a UUID (lower-case, 36 characters)")
	}
	if req.GetDropped() < 0 {
		return 0, errs.InvalidArgument("dropped", "dropped must not be negative")
	}
	switch n := len(req.GetEvents()); {
	case n == 0 && req.GetDropped() == 0:
		return 0, errs.InvalidArgument("events", "a batch needs at least one event, or a dropped count")
	case n > MaxEvents:
		return 0, errs.InvalidArgument("events", fmt.Sprintf("a batch holds at most %d events, not %d", MaxEvents, n))
	}
	retention, err := r.retentionOf(ctx)
	if err != nil {
		return 0, errs.Unavailable("TELEMETRY_UNAVAILABLE", "the telemetry stream cannot be reached; retry with the same batch_id", err)
	}
	now := r.cfg.Now()
	seen := make(map[string]bool, len(req.GetEvents()))
	for i, e := range req.GetEvents() {
		if err := validateEvent(tenant, e, now, retention); err != nil {
			err.Field = "events[" + strconv.Itoa(i) + "]." + err.Field
			return 0, err
		}
		seen[e.GetEventId()] = true
	}
	if size := proto.Size(req); size > r.cfg.MaxBatchBytes {
		return 0, errs.InvalidArgument("events", fmt.Sprintf("the batch encodes to %d bytes, more than the %d a batch may carry; send fewer events per batch", size, r.cfg.MaxBatchBytes))
	}

	reporter := p.ClientID
	if reporter == "" {
		reporter = p.ID
	}
	md.Tenant = tenant
	md.Actor.ID = reporter
	if p.HasRole(authn.RoleResourceServer) || p.Kind == authn.KindService {
		md.Actor.Kind = eventstore.ActorService
	} else if !md.Actor.Kind.Valid() {
		md.Actor.Kind = eventstore.ActorHuman
	}
	id := BatchEventID(tenant, reporter, req.GetBatchId())
	ceSubject := "tenants/" + tenant + "/clients/" + reporter
	if _, err := r.cfg.Publisher.PublishWithID(ctx, id, Subject(tenant), EventType, ceSubject, req, md); err != nil {
		if errors.Is(err, eventstore.ErrInvalid) {
			return 0, errs.Internal(err)
		}
		return 0, errs.Unavailable("TELEMETRY_UNAVAILABLE", "the access events could not be stored; retry with the same batch_id", err)
	}
	return len(seen), nil
}

// retentionOf returns the stream's retention, looked up at most once per retentionTTL.
func (r *Recorder) retentionOf(ctx context.Context) (time.Duration, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.cfg.Now()
	if !r.retentionAt.IsZero() && !now.Before(r.retentionAt) && now.Sub(r.retentionAt) < retentionTTL {
		return r.retention, nil
	}
	d, err := r.cfg.Retention(ctx)
	if err != nil {
		return 0, err
	}
	r.retention, r.retentionAt = d, now
	return d, nil
}

// validateEvent checks one event of a batch for tenant; the error's Field is relative to the event.
func validateEvent(tenant string, e *monitorv1.AccessEvent, now time.Time, retention time.Duration) *errs.Error {
	if !isUUID(e.GetEventId()) {
		return errs.InvalidArgument("event_id", "event_id must be a UUID (lower-case, 36 characters)")
	}
	if err := validateTime(e, now, retention); err != nil {
		return err
	}
	if e.GetTenant() != tenant {
		return errs.InvalidArgument("tenant", fmt.Sprintf("tenant must be the parent's tenant %q", tenant))
	}
	if a := e.GetAgent(); a != "" {
		id, ok := strings.CutPrefix(a, "tenants/"+tenant+"/agents/")
		if !ok || id == "" || strings.Contains(id, "/") || len(a) > MaxFieldLen || !printable(a) {
			return errs.InvalidArgument("agent", fmt.Sprintf("agent must be tenants/%s/agents/{agent}", tenant))
		}
	}
	switch e.GetOutcome() {
	case monitorv1.AccessOutcome_ACCESS_OUTCOME_ALLOWED, monitorv1.AccessOutcome_ACCESS_OUTCOME_DENIED:
	default:
		return errs.InvalidArgument("outcome", "outcome must be ACCESS_OUTCOME_ALLOWED or ACCESS_OUTCOME_DENIED")
	}
	if e.GetResource() == "" {
		return errs.InvalidArgument("resource", "resource is required")
	}
	for _, f := range []struct {
		name, value string
		max         int
	}{
		{"resource", e.GetResource(), MaxResourceLen},
		{"client_id", e.GetClientId(), MaxFieldLen},
		{"subject", e.GetSubject(), MaxFieldLen},
		{"on_behalf_of", e.GetOnBehalfOf(), MaxFieldLen},
		{"environment", e.GetEnvironment(), MaxFieldLen},
		{"action", e.GetAction(), MaxFieldLen},
		{"reason", e.GetReason(), MaxFieldLen},
		{"request_id", e.GetRequestId(), MaxRequestIDLen},
		{"trace_id", e.GetTraceId(), MaxFieldLen},
		{"source_address", e.GetSourceAddress(), MaxFieldLen},
		{"token_id", e.GetTokenId(), MaxFieldLen},
		{"audience", e.GetAudience(), MaxFieldLen},
	} {
		if len(f.value) > f.max {
			return errs.InvalidArgument(f.name, fmt.Sprintf("%s must be at most %d bytes", f.name, f.max))
		}
		if !printable(f.value) {
			return errs.InvalidArgument(f.name, f.name+" must be printable UTF-8")
		}
	}
	if !slices.Contains(tokenBindings, e.GetTokenBinding()) {
		return errs.InvalidArgument("token_binding", "token_binding must be bearer, dpop, mtls or empty")
	}
	if n := len(e.GetScopes()); n > MaxScopes {
		return errs.InvalidArgument("scopes", fmt.Sprintf("at most %d scopes, not %d", MaxScopes, n))
	}
	for _, s := range e.GetScopes() {
		if s == "" || len(s) > MaxScopeLen || !printable(s) || strings.ContainsRune(s, ' ') {
			return errs.InvalidArgument("scopes", fmt.Sprintf("each scope must be 1-%d printable characters without spaces", MaxScopeLen))
		}
	}
	if st := e.GetStatus(); st < 0 || st > 999 {
		return errs.InvalidArgument("status", "status must be an HTTP status or gRPC code (0-999)")
	}
	if e.GetResponseBytes() < 0 {
		return errs.InvalidArgument("response_bytes", "response_bytes must not be negative")
	}
	if e.GetRows() < 0 {
		return errs.InvalidArgument("rows", "rows must not be negative")
	}
	if l := e.GetLatency(); l != nil {
		if l.CheckValid() != nil || l.AsDuration() < 0 {
			return errs.InvalidArgument("latency", "latency must be a valid, non-negative duration")
		}
	}
	return nil
}

func validateTime(e *monitorv1.AccessEvent, now time.Time, retention time.Duration) *errs.Error {
	ts := e.GetTime()
	if ts == nil {
		return errs.InvalidArgument("time", "time is required")
	}
	if ts.CheckValid() != nil {
		return errs.InvalidArgument("time", "time is not a valid timestamp")
	}
	t := ts.AsTime()
	if t.After(now.Add(MaxFutureSkew)) {
		return errs.InvalidArgument("time", fmt.Sprintf("time is more than %s in the future", MaxFutureSkew))
	}
	if t.Before(now.Add(-MaxPastAge)) {
		return errs.InvalidArgument("time", fmt.Sprintf("time is more than %s before receipt; report access events within %s of the access", MaxPastAge, MaxPastAge))
	}
	if retention > 0 && t.Before(now.Add(-retention)) {
		return errs.InvalidArgument("time", fmt.Sprintf("time is older than the telemetry retention (%s)", retention))
	}
	return nil
}

// isUUID reports whether s is a UUID in its canonical, lower-case 36-character form.
func isUUID(s string) bool {
	u, err := uuid.Parse(s)
	return err == nil && len(s) == 36 && u.String() == s
}

// printable reports whether s is valid UTF-8 of printable characters (spaces included, control
// characters not).
func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}
