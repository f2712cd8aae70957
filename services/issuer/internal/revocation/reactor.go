package revocation

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/eventstore"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"

	"github.com/agentid/agentid/services/issuer/internal/agents"
)

// Durable consumers of the reactor, shared by the issuer's replicas.
const (
	// ClientsConsumer turns client.disabled (stream CREDENTIALS) into CLIENT revocations.
	ClientsConsumer = "issuer-revocation-reactor-clients"
	// AgentsConsumer turns an agent leaving ACTIVE or losing scopes (stream AGENTS) into AGENT
	// revocations.
	AgentsConsumer = "issuer-revocation-reactor-agents"
)

// Bounds of the projection-lag allowance.
const (
	// DefaultProjectionLagAllowance is how long after the event that ends a credential the reactor's
	// revocation still covers newly issued tokens, by default.
	DefaultProjectionLagAllowance = 5 * time.Second
	// MaxProjectionLagAllowance is the longest allowance accepted.
	MaxProjectionLagAllowance = time.Minute
)

// RequestIDPrefix starts the request id of a reactor's revocation, followed by the source event's id:
// a redelivered event revokes once.
const RequestIDPrefix = "revoke-from:"

// eventClientDisabled is the CREDENTIALS event type the reactor revokes a client's tokens for.
const eventClientDisabled = "client.disabled"

// Consumer runs a durable consumer (eventstore.Store.Consume).
type Consumer interface {
	Consume(ctx context.Context, name, stream string, filterSubjects []string, h eventstore.Handler, opts ...eventstore.ConsumeOption) error
}

// Revoker stores a revocation idempotently by request id (Writer.Revoke).
type Revoker interface {
	Revoke(ctx context.Context, md eventstore.Metadata, ev *issuerv1.TokensRevoked, requestID string) (*issuerv1.Revocation, error)
}

// ReactorConfig configures a Reactor.
type ReactorConfig struct {
	// Consumer runs the durable consumers. Required.
	Consumer Consumer
	// Revoker stores the revocations. Required.
	Revoker Revoker
	// ProjectionLagAllowance is added to the time of the source event to make a revocation's
	// not_before, so that a token that an issuer replica whose projection had not applied the event
	// yet issued just after it is still covered; default DefaultProjectionLagAllowance, at most
	// MaxProjectionLagAllowance.
	ProjectionLagAllowance time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Reactor turns the facts that end a credential into revocations: client.disabled into a CLIENT
// revocation (cause CLIENT_DISABLED), an agent leaving ACTIVE (rejected, suspended, retirement
// requested, retired) or losing scopes (agent.scopes_removed) into an AGENT revocation (cause
// AGENT_STATE). A resumed agent's tokens revoked by its suspension stay revoked, and so do the tokens
// of an agent whose scopes were removed, those without the removed scopes too: it asks for new ones,
// which carry only the scopes it keeps. It consumes at least once; the request id
// RequestIDPrefix + the source event's id makes each revocation happen once. A source event so old
// that its revocation would already have expired (no token it covers can still be valid) is skipped.
type Reactor struct {
	consumer  Consumer
	revoker   Revoker
	allowance time.Duration
	now       func() time.Time
	logger    *slog.Logger
}

// NewReactor returns a reactor.
func NewReactor(cfg ReactorConfig) (*Reactor, error) {
	if cfg.Consumer == nil || cfg.Revoker == nil {
		return nil, errors.New("revocation: ReactorConfig needs a Consumer and a Revoker")
	}
	if err := CheckProjectionLagAllowance(cfg.ProjectionLagAllowance); err != nil {
		return nil, err
	}
	r := &Reactor{consumer: cfg.Consumer, revoker: cfg.Revoker, allowance: cfg.ProjectionLagAllowance, now: cfg.Now, logger: cfg.Logger}
	if r.allowance == 0 {
		r.allowance = DefaultProjectionLagAllowance
	}
	if r.now == nil {
		r.now = time.Now
	}
	if r.logger == nil {
		r.logger = slog.Default()
	}
	return r, nil
}

// CheckProjectionLagAllowance validates a configured allowance: 0 (the default) up to
// MaxProjectionLagAllowance.
func CheckProjectionLagAllowance(d time.Duration) error {
	if d < 0 || d > MaxProjectionLagAllowance {
		return fmt.Errorf("projection-lag allowance %s must be between 0 (default %s) and %s", d, DefaultProjectionLagAllowance, MaxProjectionLagAllowance)
	}
	return nil
}

// Delays between two runs of a consumer that failed.
const (
	consumerRetryMin = 100 * time.Millisecond
	consumerRetryMax = 10 * time.Second
)

// Run consumes both streams until ctx is done, then returns nil. A consumer that fails (the event
// store unreachable at start, the consumer deleted by an operator) is logged and run again after a
// growing delay: the events wait in the stream, nothing is skipped.
func (r *Reactor) Run(ctx context.Context) error {
	agentFilters := make([]string, 0, len(agents.LeavingActive)+2)
	for _, typ := range append(slices.Clone(agents.LeavingActive), agents.EventAgentScopesRemoved, agents.EventAgentUpdated) {
		agentFilters = append(agentFilters, eventstore.EventSubject("*", eventstore.AggregateAgent, "*", strings.TrimPrefix(typ, eventstore.AggregateAgent+".")))
	}
	clientFilter := eventstore.EventSubject("*", eventstore.AggregateClient, "*", strings.TrimPrefix(eventClientDisabled, eventstore.AggregateClient+"."))
	var wg sync.WaitGroup
	wg.Go(func() {
		r.consume(ctx, ClientsConsumer, eventstore.StreamCredentials, []string{clientFilter}, r.HandleCredentialsEvent)
	})
	wg.Go(func() { r.consume(ctx, AgentsConsumer, eventstore.StreamAgents, agentFilters, r.HandleAgentEvent) })
	wg.Wait()
	return nil
}

// consume runs one durable consumer until ctx is done, running it again whenever it fails.
func (r *Reactor) consume(ctx context.Context, name, stream string, filters []string, h eventstore.Handler) {
	for delay := consumerRetryMin; ; delay = min(2*delay, consumerRetryMax) {
		err := r.consumer.Consume(ctx, name, stream, filters, h)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			err = errors.New("consumer stopped")
		}
		r.logger.ErrorContext(ctx, "revocation reactor consumer failed; running it again", "consumer", name, "stream", stream,
			"retry_in", delay.String(), "error", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
	}
}

// HandleCredentialsEvent revokes the tokens of a disabled client; other events are ignored. Errors
// are transient (redelivered) except for events that no retry can fix (eventstore.Permanent).
func (r *Reactor) HandleCredentialsEvent(ctx context.Context, e eventstore.Event) error {
	if e.Type != eventClientDisabled {
		return nil
	}
	msg, err := eventstore.DecodeAs[*issuerv1.ClientDisabled](e)
	if err != nil {
		return eventstore.Permanent(err)
	}
	tenant, clientID := e.Metadata.Tenant, e.AggregateID
	if !authn.ValidTenant(tenant) || clientID == "" || msg.GetName() != "tenants/"+tenant+"/clients/"+clientID {
		return eventstore.Permanent(fmt.Errorf("client.disabled event %s: client %q on aggregate %s/%s", e.ID, msg.GetName(), tenant, clientID))
	}
	at := e.Time
	if msg.GetRevokeTime() != nil {
		if !msg.GetRevokeTime().IsValid() {
			return eventstore.Permanent(fmt.Errorf("client.disabled event %s: invalid revoke_time", e.ID))
		}
		at = msg.GetRevokeTime().AsTime()
	}
	return r.revoke(ctx, e, at, &issuerv1.TokensRevoked{
		Target:   issuerv1.RevocationTarget_REVOCATION_TARGET_CLIENT,
		Tenant:   tenant,
		ClientId: clientID,
		Cause:    issuerv1.RevocationCause_REVOCATION_CAUSE_CLIENT_DISABLED,
		Reason:   reason("client disabled", msg.GetReason()),
	})
}

// HandleAgentEvent revokes the tokens of an agent that left ACTIVE or lost scopes; other events are
// ignored. Errors are transient (redelivered) except for events that no retry can fix
// (eventstore.Permanent).
func (r *Reactor) HandleAgentEvent(ctx context.Context, e eventstore.Event) error {
	if e.Type == agents.EventAgentScopesRemoved {
		return r.handleScopesRemoved(ctx, e)
	}
	if e.Type == agents.EventAgentUpdated {
		return r.handleUpdated(ctx, e)
	}
	name, state, err := agents.Transition(e)
	switch {
	case err != nil:
		return eventstore.Permanent(err)
	case name == "" || state == registryv1.AgentState_AGENT_STATE_PENDING || state == registryv1.AgentState_AGENT_STATE_ACTIVE:
		return nil
	}
	why := ""
	if e.Type == agents.EventAgentSuspended {
		msg, err := eventstore.DecodeAs[*registryv1.AgentSuspended](e)
		if err != nil {
			return eventstore.Permanent(err)
		}
		why = msg.GetCause()
		if msg.GetReason() != "" {
			why += " - " + msg.GetReason()
		}
	}
	return r.revoke(ctx, e, e.Time, &issuerv1.TokensRevoked{
		Target: issuerv1.RevocationTarget_REVOCATION_TARGET_AGENT,
		Tenant: e.Metadata.Tenant,
		Agent:  name,
		Cause:  issuerv1.RevocationCause_REVOCATION_CAUSE_AGENT_STATE,
		Reason: reason("agent "+agents.StateName(state)+" ("+e.Type+")", why),
	})
}

// handleScopesRemoved revokes every token of an agent whose scopes were removed, issued until the
// event's time plus the allowance: the tokens carrying a removed scope stop working, and the token
// endpoint, its projection having applied the removal, grants the agent new ones without them. An
// event that removes no scope revokes nothing.
func (r *Reactor) handleScopesRemoved(ctx context.Context, e eventstore.Event) error {
	msg, err := eventstore.DecodeAs[*registryv1.AgentScopesRemoved](e)
	if err != nil {
		return eventstore.Permanent(err)
	}
	name := msg.GetName()
	if err := agents.CheckEventAgent(e, name); err != nil {
		return eventstore.Permanent(err)
	}
	if len(msg.GetScopes()) == 0 {
		return nil
	}
	tenant := e.Metadata.Tenant
	why := msg.GetReason()
	if msg.GetTicket() != "" {
		why = strings.TrimPrefix(why+" (ticket "+msg.GetTicket()+")", " ")
	}
	return r.revoke(ctx, e, e.Time, &issuerv1.TokensRevoked{
		Target: issuerv1.RevocationTarget_REVOCATION_TARGET_AGENT,
		Tenant: tenant,
		Agent:  name,
		Cause:  issuerv1.RevocationCause_REVOCATION_CAUSE_AGENT_STATE,
		Reason: reason("agent scopes removed ("+e.Type+"): "+strings.Join(msg.GetScopes(), " "), why),
	})
}

// revoke stores ev for source event e that happened at: not_before is at plus the allowance.
func (r *Reactor) revoke(ctx context.Context, e eventstore.Event, at time.Time, ev *issuerv1.TokensRevoked) error {
	notBefore := at.Add(r.allowance)
	if ExpireTime(notBefore).Before(r.now()) {
		r.logger.DebugContext(ctx, "source event too old to revoke anything", "event_id", e.ID, "event_type", e.Type, "event_time", at)
		return nil
	}
	ev.NotBefore = timestamppb.New(notBefore)
	ev.SourceEventId = e.ID
	md := eventstore.Metadata{Actor: ServiceActor, CausationID: e.ID, CorrelationID: e.Metadata.CorrelationID, Traceparent: e.Metadata.Traceparent}
	rev, err := r.revoker.Revoke(ctx, md, ev, RequestIDPrefix+e.ID)
	switch {
	case err == nil:
		r.logger.InfoContext(ctx, "tokens revoked", "tenant", ev.GetTenant(), "target", ev.GetTarget().String(),
			"client_id", ev.GetClientId(), "agent", ev.GetAgent(), "not_before", notBefore, "revocation", rev.GetName(),
			"sequence", rev.GetSequence(), "source_event_id", e.ID, "source_event_type", e.Type)
		return nil
	case errs.Is(err, errs.KindConflict):
		// The revocation's aggregate (named after the request id) exists: stored by an earlier
		// delivery whose idempotency key the stream has forgotten.
		r.logger.InfoContext(ctx, "revocation already stored", "source_event_id", e.ID, "source_event_type", e.Type)
		return nil
	case errs.Is(err, errs.KindInvalidArgument), errs.Is(err, errs.KindInternal):
		return eventstore.Permanent(fmt.Errorf("revocation for event %s (%s): %w", e.ID, e.Type, err))
	default:
		return fmt.Errorf("revocation for event %s (%s): %w", e.ID, e.Type, err)
	}
}

// reason is what a revocation records as its reason: what happened, and why when the source says,
// cut to MaxReasonBytes of UTF-8 text.
func reason(what, why string) string {
	why = strings.ReplaceAll(strings.ToValidUTF8(why, "?"), "\x00", "?")
	if why != "" {
		what += ": " + why
	}
	if len(what) <= MaxReasonBytes {
		return what
	}
	n := MaxReasonBytes
	for n > 0 && !utf8.RuneStart(what[n]) {
		n--
	}
	return what[:n]
}
