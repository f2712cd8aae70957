package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/eventstore"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

const (
	// maxAttempts bounds how often a command is decided again after losing a version race.
	maxAttempts = 3
	// defaultWaitTimeout bounds how long a command waits for the read model to show its event.
	defaultWaitTimeout = 10 * time.Second
	// DefaultMaxReadWait caps how long a read waits for the read model to reach a minimum version.
	DefaultMaxReadWait = 5 * time.Second
	// ReadRetryDelay is the delay a read that timed out waiting for a minimum version suggests
	// before its retry.
	ReadRetryDelay = 500 * time.Millisecond
)

// ReasonReadModelLagging is the Unavailable reason of a command or read whose version the read
// model has not applied yet.
const ReasonReadModelLagging = "READ_MODEL_LAGGING"

// Command names, the first part of each command's idempotency key.
const (
	cmdCreateTenant       = "CreateTenant"
	cmdRegisterAgent      = "RegisterAgent"
	cmdActivateAgent      = "ActivateAgent"
	cmdRejectAgent        = "RejectAgent"
	cmdRetireAgent        = "RetireAgent"
	cmdCompleteRetirement = "CompleteRetirement"
	cmdSuspendAgent       = "SuspendAgent"
	cmdResumeAgent        = "ResumeAgent"
)

// errStaleRead marks a repeated append that resolved to an event the aggregate's read had not shown.
var errStaleRead = errors.New("registry: the aggregate read lagged behind its own events")

// EventStore is what the service needs from the event store.
type EventStore interface {
	Load(ctx context.Context, tenant, aggType, aggID string) ([]eventstore.Event, uint64, error)
	Append(ctx context.Context, a eventstore.Append) (eventstore.Event, error)
	NewRunner(p eventstore.Projection, stream string, filterSubjects []string, opts ...eventstore.RunnerOption) *eventstore.Runner
}

// Config configures a Service.
type Config struct {
	// Store holds the events. Required.
	Store EventStore
	// Logger logs; default slog.Default().
	Logger *slog.Logger
	// Now is the clock used for validation; default time.Now.
	Now func() time.Time
	// WaitTimeout bounds how long a command waits for the read model; default 10s.
	WaitTimeout time.Duration
	// MaxReadWait caps how long a read with a minimum version waits for the read model (the
	// request deadline may shorten it); default DefaultMaxReadWait.
	MaxReadWait time.Duration
	// Directory checks owners and sponsors against the tenant's directory; nil: no directory,
	// any well-formed principal is accepted.
	Directory Directory
	// Admission admits updates that escalate an agent past PENDING; nil: such updates are
	// refused (fail closed).
	Admission Admission
	// Checkpoints keeps the checkpoints of the tenants, agents and activity read models; nil:
	// they are rebuilt from the first event at every start.
	Checkpoints eventstore.CheckpointStore
	// CheckpointPolicy says when checkpoints are written (eventstore defaults when zero).
	CheckpointPolicy eventstore.CheckpointPolicy
}

// Service runs the registry's commands and queries.
type Service struct {
	store       EventStore
	log         *slog.Logger
	now         func() time.Time
	waitTimeout time.Duration
	maxReadWait time.Duration
	directory   Directory
	admission   Admission

	tenants      *TenantProjection
	agents       *AgentProjection
	tenantRunner *eventstore.Runner
	agentRunner  *eventstore.Runner
	// activityRunner folds the monitor's activity events into the agents' last_active_time.
	activityRunner *eventstore.Runner
	directories    directories // the tenants' directories (directory.go)
}

// New returns a service over cfg.Store. Its read models fill only while the runners of Runners run.
func New(cfg Config) (*Service, error) {
	if cfg.Store == nil {
		return nil, errors.New("registry: Config.Store is required")
	}
	s := &Service{
		store:       cfg.Store,
		log:         cfg.Logger,
		now:         cfg.Now,
		waitTimeout: cfg.WaitTimeout,
		maxReadWait: cfg.MaxReadWait,
		directory:   cfg.Directory,
		admission:   cfg.Admission,
		tenants:     NewTenantProjection(),
		agents:      NewAgentProjection(),
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.waitTimeout <= 0 {
		s.waitTimeout = defaultWaitTimeout
	}
	if s.maxReadWait <= 0 {
		s.maxReadWait = DefaultMaxReadWait
	}
	var ckpt []eventstore.RunnerOption
	if cfg.Checkpoints != nil {
		ckpt = append(ckpt, eventstore.WithCheckpoints(cfg.Checkpoints, cfg.CheckpointPolicy))
	}
	s.tenantRunner = s.store.NewRunner(s.tenants, eventstore.StreamTenants, []string{eventstore.AggregateTypeSubject(AggregateTenant)}, ckpt...)
	s.agentRunner = s.store.NewRunner(s.agents, eventstore.StreamAgents, []string{eventstore.AggregateTypeSubject(AggregateAgent)}, ckpt...)
	s.activityRunner = s.store.NewRunner(s.agents.Activity(), eventstore.StreamTelemetry, []string{ActivityFilter}, ckpt...)
	s.directories = newDirectories(s.store)
	if s.directory == nil { // the registry's own directory, synced by SyncDirectory
		s.directory = s.directories
	}
	return s, nil
}

// Runners returns the runners that build the read models; run each until shutdown.
func (s *Service) Runners() []*eventstore.Runner {
	return []*eventstore.Runner{s.tenantRunner, s.agentRunner, s.directories.runner, s.activityRunner}
}

// Ready blocks until both read models have caught up with their streams as they were at start.
func (s *Service) Ready(ctx context.Context) error {
	for _, r := range s.Runners() {
		if r == s.activityRunner {
			continue // last_active_time has hour precision: it does not hold readiness
		}
		if err := r.Ready(ctx); err != nil {
			return err
		}
	}
	return nil
}

// Agents returns the agents read model.
func (s *Service) Agents() *AgentProjection { return s.agents }

// Tenants returns the tenants read model.
func (s *Service) Tenants() *TenantProjection { return s.tenants }

// storeError classifies an event store failure for the caller; the cause stays in the logs.
func storeError(err error) error {
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case errors.Is(err, eventstore.ErrConflict):
		return errs.Conflict("CONCURRENT_MODIFICATION", "the resource was changed concurrently; retry").WithCause(err)
	case errors.Is(err, eventstore.ErrInvalid), errors.Is(err, eventstore.ErrIdempotencyKeyReused):
		return errs.Internal(err)
	default:
		return errs.Unavailable("EVENT_STORE_UNAVAILABLE", "the event store is unavailable; retry", err)
	}
}

// wait blocks until runner has applied stream sequence seq.
func (s *Service) wait(ctx context.Context, r *eventstore.Runner, seq uint64) error {
	wctx, cancel := context.WithTimeout(ctx, s.waitTimeout)
	defer cancel()
	err := r.WaitFor(wctx, seq)
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return ctx.Err()
	default:
		return errs.Unavailable(ReasonReadModelLagging, "the change was recorded but the read model has not caught up yet; read it again shortly", err)
	}
}

// append writes change to an aggregate at version, recording key as the command's idempotency key
// and as the event's causation id.
func (s *Service) append(ctx context.Context, tenant, aggType, aggID, subject, key string, version uint64, ch *Change, md eventstore.Metadata) (eventstore.Event, error) {
	md.Tenant = tenant
	md.CausationID = key
	return s.store.Append(ctx, eventstore.Append{
		Tenant:          tenant,
		AggregateType:   aggType,
		AggregateID:     aggID,
		ExpectedVersion: version,
		IdempotencyKey:  key,
		Type:            ch.Type,
		Subject:         subject,
		Data:            ch.Data,
		Metadata:        md,
	})
}

// runAgent loads an agent, skips commands it has already handled, decides, appends at the loaded
// version and retries on a version conflict. Once the read model has caught up with the result it
// returns the agent as of the command's own event (folded as the read model folds it), so a
// concurrent later change does not show up in this command's response.
func (s *Service) runAgent(ctx context.Context, tenant, agentID, key string, md eventstore.Metadata, decide func(*Agent) (*Change, error)) (*registryv1.Agent, error) {
	a, err := s.runAgentAggregate(ctx, tenant, agentID, key, md, decide)
	if err != nil {
		return nil, err
	}
	return a.View(), nil
}

// runAgentAggregate is runAgent returning the aggregate as the command left it.
func (s *Service) runAgentAggregate(ctx context.Context, tenant, agentID, key string, md eventstore.Metadata, decide func(*Agent) (*Change, error)) (*Agent, error) {
	return s.runAgentRepeatable(ctx, tenant, agentID, key, md, decide, nil)
}

// runAgentRepeatable is runAgentAggregate calling repeat (when not nil) on an agent that has
// handled the command already: its error refuses the repeat.
func (s *Service) runAgentRepeatable(ctx context.Context, tenant, agentID, key string, md eventstore.Metadata, decide func(*Agent) (*Change, error), repeat func(*Agent) error) (*Agent, error) {
	var lastErr error
	for range maxAttempts {
		events, _, err := s.store.Load(ctx, tenant, AggregateAgent, agentID)
		if err != nil {
			return nil, storeError(err)
		}
		a, err := LoadAgent(tenant, agentID, events)
		if err != nil {
			return nil, errs.Internal(err)
		}
		if a.Handled(key) && repeat != nil {
			if err := repeat(a); err != nil {
				return nil, err
			}
		}
		if !a.Handled(key) {
			ch, err := decide(a)
			if err != nil {
				return nil, err
			}
			if ch != nil {
				ev, err := s.append(ctx, tenant, AggregateAgent, agentID, a.Name(), key, a.Version, ch, md)
				if errors.Is(err, eventstore.ErrConflict) {
					lastErr = err
					continue
				}
				if err != nil {
					return nil, storeError(err)
				}
				if ev.ExpectedVersion != a.Version {
					lastErr = errStaleRead
					continue // a repeat resolved to an event decided on a state this read did not show: read again
				}
				if err := a.Apply(ev); err != nil {
					return nil, errs.Internal(err)
				}
			}
		}
		if err := s.wait(ctx, s.agentRunner, a.Version); err != nil {
			return nil, err
		}
		return a, nil
	}
	return nil, storeError(lastErr)
}

// CreateTenant creates a tenant. A repeat with the same request id returns the tenant it created;
// any other creation of an existing tenant is AlreadyExists TENANT_EXISTS.
func (s *Service) CreateTenant(ctx context.Context, c CreateTenant, md eventstore.Metadata) (*registryv1.Tenant, error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	key := commandKey(cmdCreateTenant, c.TenantID, c.TenantID, c.RequestID)
	var lastErr error
	for range maxAttempts {
		events, _, err := s.store.Load(ctx, c.TenantID, AggregateTenant, c.TenantID)
		if err != nil {
			return nil, storeError(err)
		}
		t, err := LoadTenant(c.TenantID, events)
		if err != nil {
			return nil, errs.Internal(err)
		}
		if !t.Handled(key) {
			ch, err := t.Create(c)
			if err != nil {
				return nil, err
			}
			ev, err := s.append(ctx, c.TenantID, AggregateTenant, c.TenantID, TenantName(c.TenantID), key, t.Version, ch, md)
			if errors.Is(err, eventstore.ErrConflict) {
				lastErr = err
				continue
			}
			if err != nil {
				return nil, storeError(err)
			}
			if ev.ExpectedVersion != t.Version {
				lastErr = errStaleRead
				continue
			}
			if err := t.Apply(ev); err != nil {
				return nil, errs.Internal(err)
			}
		}
		if err := s.wait(ctx, s.tenantRunner, t.Version); err != nil {
			return nil, err
		}
		return t.View(), nil
	}
	return nil, storeError(lastErr)
}

// EnsureTenant creates the tenant unless it exists, whoever created it.
func (s *Service) EnsureTenant(ctx context.Context, id, displayName string, md eventstore.Metadata) error {
	if _, ok := s.tenants.Get(id); ok {
		return nil
	}
	_, err := s.CreateTenant(ctx, CreateTenant{TenantID: id, DisplayName: displayName, RequestID: "ensure"}, md)
	if errs.Is(err, errs.KindAlreadyExists) {
		return nil
	}
	return err
}

// checkTenantExists answers NotFound TENANT_NOT_FOUND for a tenant that has not been created,
// asking the event store when the read model does not know it (yet).
func (s *Service) checkTenantExists(ctx context.Context, tenant string) error {
	if _, ok := s.tenants.Get(tenant); ok {
		return nil
	}
	_, version, err := s.store.Load(ctx, tenant, AggregateTenant, tenant)
	if err != nil {
		return storeError(err)
	}
	if version == 0 {
		return errs.NotFound("TENANT_NOT_FOUND", "tenant not found").WithMetadata("tenant", tenant)
	}
	return nil
}

// RegisterAgent validates and records a new agent in state PENDING (PROPOSED with c.Proposed), its
// owner and sponsor checked against the tenant's directory when one is configured (they must
// differ). With a request id the agent id is derived from it, so a repeat returns the agent the
// first attempt created and records nothing; a repeat from another caller or with another body is
// AlreadyExists REQUEST_ID_REUSED naming the request id. An owner may not set labels under
// ReservedLabelPrefix. With c.ValidateOnly it decides and returns the agent as it would be
// registered, writing nothing.
func (s *Service) RegisterAgent(ctx context.Context, c RegisterAgent, md eventstore.Metadata) (*registryv1.Agent, error) {
	if !ValidTenantID(c.Tenant) {
		return nil, invalid("parent", "must have the form tenants/{tenant}")
	}
	if c.Tenant == SystemTenant {
		return nil, invalid("parent", "agents cannot be registered in the system tenant")
	}
	if err := checkRequestID(c.RequestID); err != nil {
		return nil, err
	}
	if err := checkReservedRequestID(ctx, c.RequestID, c.RequireOwner); err != nil {
		return nil, err
	}
	if err := ValidateAgent(c.Agent, s.now()); err != nil {
		return nil, err
	}
	if err := checkOwnerNotSponsor("agent.sponsor", c.Agent.GetOwner(), c.Agent.GetSponsor()); err != nil {
		return nil, err
	}
	if c.RequireOwner != "" {
		if err := checkReservedLabels(nil, c.Agent.GetLabels()); err != nil {
			return nil, err
		}
	}
	if err := s.checkTenantExists(ctx, c.Tenant); err != nil {
		return nil, err
	}
	if err := s.checkCaller(c.Tenant, c.RequireOwner); err != nil {
		return nil, err
	}
	if err := s.checkPrincipals(c.Tenant, c.Agent.GetOwner(), c.Agent.GetSponsor()); err != nil {
		return nil, err
	}
	agentID := NewAgentID()
	if c.RequestID != "" {
		agentID = DeriveAgentID(c.Tenant, c.RequestID)
	}
	key := commandKey(cmdRegisterAgent, c.Tenant, agentID, c.RequestID)
	decide := func(a *Agent) (*Change, error) { return a.Register(c) }
	if c.ValidateOnly {
		a, err := s.previewAgent(ctx, c.Tenant, agentID, key, decide)
		if err != nil {
			return nil, err
		}
		if a.Handled(key) {
			if err := a.checkRepeat(c, md.Actor, false); err != nil {
				return nil, err
			}
		}
		return a.View(), nil
	}
	repeat := func(a *Agent) error { return a.checkRepeat(c, md.Actor, true) }
	a, err := s.runAgentRepeatable(ctx, c.Tenant, agentID, key, md, decide, repeat)
	if err != nil {
		return nil, err
	}
	return a.View(), nil
}

// ActivateAgent records an approval: PENDING becomes ACTIVE.
func (s *Service) ActivateAgent(ctx context.Context, c ActivateAgent, md eventstore.Metadata) (*registryv1.Agent, error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	key := commandKey(cmdActivateAgent, c.Tenant, c.AgentID, c.RequestID)
	return s.runAgent(ctx, c.Tenant, c.AgentID, key, md, func(a *Agent) (*Change, error) { return a.Activate(c) })
}

// RejectAgent records a rejection: PENDING becomes REJECTED.
func (s *Service) RejectAgent(ctx context.Context, c RejectAgent, md eventstore.Metadata) (*registryv1.Agent, error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	key := commandKey(cmdRejectAgent, c.Tenant, c.AgentID, c.RequestID)
	return s.runAgent(ctx, c.Tenant, c.AgentID, key, md, func(a *Agent) (*Change, error) { return a.Reject(c) })
}

// RetireAgent requests retirement: PENDING, ACTIVE or SUSPENDED becomes RETIRING.
func (s *Service) RetireAgent(ctx context.Context, c RetireAgent, md eventstore.Metadata) (*registryv1.Agent, error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	if err := s.checkCaller(c.Tenant, c.RequireOwner); err != nil {
		return nil, err
	}
	key := commandKey(cmdRetireAgent, c.Tenant, c.AgentID, c.RequestID)
	return s.runAgent(ctx, c.Tenant, c.AgentID, key, md, func(a *Agent) (*Change, error) { return a.Retire(c) })
}

// SuspendAgent suspends an agent: ACTIVE becomes SUSPENDED; a SUSPENDED agent is returned as it is
// and nothing is written.
func (s *Service) SuspendAgent(ctx context.Context, c SuspendAgent, md eventstore.Metadata) (*registryv1.Agent, error) {
	res, err := s.Suspend(ctx, c, md)
	if err != nil {
		return nil, err
	}
	return res.Agent, nil
}

// Suspension is the answer to a suspension: the agent, whether this command made its current
// suspension, and that suspension's cause.
type Suspension struct {
	// Agent is the agent, SUSPENDED.
	Agent *registryv1.Agent
	// ByRequest is true when the command (or an earlier attempt with its request id) made the
	// agent's current suspension, false when the agent was SUSPENDED already.
	ByRequest bool
	// Cause is the current suspension's cause.
	Cause string
}

// Suspend is SuspendAgent saying whether this command made the agent's current suspension and what
// caused it.
func (s *Service) Suspend(ctx context.Context, c SuspendAgent, md eventstore.Metadata) (Suspension, error) {
	if err := c.validate(); err != nil {
		return Suspension{}, err
	}
	key := commandKey(cmdSuspendAgent, c.Tenant, c.AgentID, c.RequestID)
	a, err := s.runAgentAggregate(ctx, c.Tenant, c.AgentID, key, md, func(a *Agent) (*Change, error) { return a.Suspend(c) })
	if err != nil {
		return Suspension{}, err
	}
	return Suspension{Agent: a.View(), ByRequest: a.SuspendedBy(key), Cause: a.SuspensionCause()}, nil
}

// ResumeAgent resumes a suspended agent: SUSPENDED becomes ACTIVE (when c.ExpectedCause is set, only
// a suspension of that cause).
func (s *Service) ResumeAgent(ctx context.Context, c ResumeAgent, md eventstore.Metadata) (*registryv1.Agent, error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	key := commandKey(cmdResumeAgent, c.Tenant, c.AgentID, c.RequestID)
	return s.runAgent(ctx, c.Tenant, c.AgentID, key, md, func(a *Agent) (*Change, error) { return a.Resume(c) })
}

// CompleteRetirement records verified deprovisioning: RETIRING becomes RETIRED. Without a verify
// time the current time is recorded.
func (s *Service) CompleteRetirement(ctx context.Context, c CompleteRetirement, md eventstore.Metadata) (*registryv1.Agent, error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	if c.VerifyTime == nil {
		c.VerifyTime = timestamppb.New(s.now())
	}
	key := commandKey(cmdCompleteRetirement, c.Tenant, c.AgentID, c.RequestID)
	return s.runAgent(ctx, c.Tenant, c.AgentID, key, md, func(a *Agent) (*Change, error) { return a.CompleteRetirement(c) })
}

// GetTenant returns one tenant from the read model.
func (s *Service) GetTenant(_ context.Context, id string) (*registryv1.Tenant, error) {
	t, ok := s.tenants.Get(id)
	if !ok {
		return nil, errs.NotFound("TENANT_NOT_FOUND", "tenant not found").WithMetadata("tenant", id)
	}
	return t, nil
}

// ListTenants returns one page of tenants in creation order and the token of the next page.
func (s *Service) ListTenants(_ context.Context, size int32, token string) ([]*registryv1.Tenant, string, error) {
	n, err := pageSize(size)
	if err != nil {
		return nil, "", err
	}
	after, err := decodePageToken(token)
	if err != nil {
		return nil, "", err
	}
	out, next := s.tenants.List(after, n)
	return out, nextToken(next), nil
}

// GetAgent returns one agent from the read model. With a minVersion (the agent's etag as a number,
// or the aggregate version of one of its events) it first waits until the read model has applied
// that version, for at most the configured MaxReadWait and, when ctx has a deadline, nine tenths of
// the time left, so that the caller hears Unavailable READ_MODEL_LAGGING (metadata min_version and
// applied_version) rather than its own timeout. A minVersion beyond the last event stored in the
// agents stream is answered at once with InvalidArgument naming min_version: no wait can reach it.
func (s *Service) GetAgent(ctx context.Context, tenant, agentID string, minVersion uint64) (*registryv1.Agent, error) {
	if err := s.waitRead(ctx, minVersion); err != nil {
		return nil, err
	}
	a, ok := s.agents.Get(tenant, agentID)
	if !ok {
		return nil, errs.NotFound("AGENT_NOT_FOUND", "agent not found").WithMetadata("name", AgentName(tenant, agentID))
	}
	return a, nil
}

// waitRead blocks until the agents read model has applied stream sequence version (bounded as
// GetAgent says).
func (s *Service) waitRead(ctx context.Context, version uint64) error {
	if version == 0 || s.agentRunner.Position() >= version {
		return nil
	}
	budget := s.maxReadWait
	if dl, ok := ctx.Deadline(); ok {
		budget = min(budget, time.Until(dl)*9/10)
	}
	wctx, cancel := context.WithTimeout(ctx, max(budget, 0))
	defer cancel()
	err := s.agentRunner.WaitFor(wctx, version)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, eventstore.ErrBeyondLastSequence):
		return errs.InvalidArgument("min_version",
			fmt.Sprintf("no agent event has version %d yet: min_version must be an etag or event version the registry returned", version)).
			WithCause(err)
	case ctx.Err() != nil:
		return ctx.Err()
	}
	applied := s.agentRunner.Position()
	return errs.Unavailable(ReasonReadModelLagging,
		fmt.Sprintf("this replica has applied the agents up to version %d, not yet %d; retry with the same min_version", applied, version), err).
		WithMetadata("min_version", strconv.FormatUint(version, 10)).
		WithMetadata("applied_version", strconv.FormatUint(applied, 10))
}

// ListAgents returns one page of a tenant's agents matching q, in q's order (ListAgents filters,
// order_by, page tokens bound to them, total_size).
func (s *Service) ListAgents(_ context.Context, q AgentQuery) (AgentPage, error) {
	if _, ok := s.tenants.Get(q.Tenant); !ok {
		return AgentPage{}, errs.NotFound("TENANT_NOT_FOUND", "tenant not found").WithMetadata("tenant", q.Tenant)
	}
	return s.agents.List(q)
}

// ActivityRunner returns the runner that folds the monitor's activity events (its position is on
// the TELEMETRY stream); Ready does not wait for it.
func (s *Service) ActivityRunner() *eventstore.Runner { return s.activityRunner }

func nextToken(seq uint64) string {
	if seq == 0 {
		return ""
	}
	return encodePageToken(seq)
}
