package credentials

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/eventstore"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"

	"github.com/agentid/agentid/services/issuer/internal/keys"
)

// ServiceActor is the actor id of events the issuer writes on its own behalf (signing keys,
// bootstrap clients).
const ServiceActor = "issuer"

// maxAttempts bounds the re-read-and-retry loop after a version conflict.
const maxAttempts = 3

// ReasonClientTombstoned is the FailedPrecondition reason of a CreateClient (or EnsureClient) of a
// client id that was disabled: disabling is final, whether the client existed or not.
const ReasonClientTombstoned = "CLIENT_TOMBSTONED"

// EventStore is what the commands need from the event store.
type EventStore interface {
	Append(ctx context.Context, a eventstore.Append) (eventstore.Event, error)
	Load(ctx context.Context, tenant, aggType, aggID string) ([]eventstore.Event, uint64, error)
}

// ServiceConfig configures a Service.
type ServiceConfig struct {
	// Store appends and loads events. Required.
	Store EventStore
	// State is the projection queries read. Required.
	State *State
	// Sealer seals new signing keys (the current key-encryption key). Required.
	Sealer *keys.Sealer
	// OldSealers open signing keys sealed with older key-encryption keys, for ResealSigningKeys.
	OldSealers []*keys.Sealer
	// Rotation configures signing-key rotation; the zero value takes the defaults and rotates on demand only.
	Rotation SigningKeyRotation
	// DefaultTokenTTL is the token lifetime of clients that set none; default DefaultTokenTTL.
	DefaultTokenTTL time.Duration
	// WaitApplied, if set, blocks until the projection has applied stream sequence seq, so that a
	// command's result is visible to the next read.
	WaitApplied func(ctx context.Context, seq uint64)
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Service runs the issuer's commands (clients, signing keys) and answers queries from the projection.
type Service struct {
	store    EventStore
	state    *State
	sealer   *keys.Sealer
	openers  map[string]*keys.Sealer // every key-encryption key by id, the current one included
	rotation SigningKeyRotation
	ttl      time.Duration
	wait     func(ctx context.Context, seq uint64)
	now      func() time.Time
	logger   *slog.Logger
}

// NewService returns a Service.
func NewService(cfg ServiceConfig) (*Service, error) {
	if cfg.Store == nil || cfg.State == nil || cfg.Sealer == nil {
		return nil, errors.New("credentials: Store, State and Sealer are required")
	}
	rotation, err := cfg.Rotation.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &Service{store: cfg.Store, state: cfg.State, sealer: cfg.Sealer, ttl: cfg.DefaultTokenTTL,
		wait: cfg.WaitApplied, now: cfg.Now, logger: cfg.Logger, rotation: rotation,
		openers: map[string]*keys.Sealer{cfg.Sealer.ID(): cfg.Sealer}}
	for _, o := range cfg.OldSealers {
		if o == nil {
			return nil, errors.New("credentials: nil old sealer")
		}
		if _, dup := s.openers[o.ID()]; dup {
			return nil, fmt.Errorf("credentials: key-encryption key id %q given twice", o.ID())
		}
		s.openers[o.ID()] = o
	}
	if s.ttl <= 0 {
		s.ttl = DefaultTokenTTL
	}
	if s.ttl > MaxTokenTTL {
		return nil, fmt.Errorf("credentials: default token TTL %s exceeds %s", s.ttl, MaxTokenTTL)
	}
	if s.wait == nil {
		s.wait = func(context.Context, uint64) {}
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.logger == nil {
		s.logger = slog.Default()
	}
	return s, nil
}

// State returns the projection the service reads.
func (s *Service) State() *State { return s.state }

// serviceMetadata is the metadata of events the issuer writes on its own behalf.
func serviceMetadata(tenant string) eventstore.Metadata {
	return eventstore.Metadata{Tenant: tenant, Actor: eventstore.Actor{ID: ServiceActor, Kind: eventstore.ActorService}}
}

func storeError(op string, err error) error {
	switch {
	case errors.Is(err, eventstore.ErrIdempotencyKeyReused):
		return errs.InvalidArgument("request_id", "was already used for a different request")
	case errors.Is(err, eventstore.ErrInvalid):
		return errs.Internal(fmt.Errorf("%s: %w", op, err))
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return errs.Unavailable("EVENT_STORE_UNAVAILABLE", "the event store did not answer in time, retry", err)
	default:
		return errs.Unavailable("EVENT_STORE_UNAVAILABLE", "the event store is unavailable, retry later", fmt.Errorf("%s: %w", op, err))
	}
}

func checkRequestID(id string) (string, error) {
	if id == "" {
		return uuid.NewString(), nil
	}
	if len(id) > 128 {
		return "", errs.InvalidArgument("request_id", "must be at most 128 characters")
	}
	for i := 0; i < len(id); i++ {
		if id[i] <= ' ' || id[i] > '~' {
			return "", errs.InvalidArgument("request_id", "must be printable ASCII without spaces")
		}
	}
	return id, nil
}

// EnsureSigningKey makes sure the tenant has a signing key, creating the first one if it has none.
// Concurrent callers (replicas) create exactly one key.
func (s *Service) EnsureSigningKey(ctx context.Context, tenant string) error {
	if err := checkTenant("tenant", tenant); err != nil {
		return err
	}
	if s.state.HasTenant(tenant) {
		return nil
	}
	_, version, err := s.store.Load(ctx, tenant, eventstore.AggregateSigningKey, tenant)
	if err != nil {
		return storeError("load signing keys", err)
	}
	if version > 0 {
		return nil
	}
	now := s.now().UTC()
	k, priv, err := keys.Generate(now)
	if err != nil {
		return errs.Internal(err)
	}
	sealed, err := s.sealer.Seal(priv, keys.SealAAD(tenant, k.KeyID))
	if err != nil {
		return errs.Internal(err)
	}
	pub, err := k.PublicJSON()
	if err != nil {
		return errs.Internal(err)
	}
	ev, err := s.store.Append(ctx, eventstore.Append{
		Tenant:          tenant,
		AggregateType:   eventstore.AggregateSigningKey,
		AggregateID:     tenant,
		ExpectedVersion: 0,
		IdempotencyKey:  "signingkey-initial-" + tenant,
		Type:            EventSigningKeyCreated,
		Subject:         TenantName(tenant),
		Data: &issuerv1.SigningKeyCreated{
			Key: &issuerv1.SigningKey{
				KeyId: k.KeyID, Algorithm: string(k.Algorithm), PublicJwk: pub, CreateTime: timestamppb.New(now),
			},
			SealedPrivateJwk: sealed,
			KekId:            s.sealer.ID(),
			State:            keys.StateCurrent,
		},
		Metadata: serviceMetadata(tenant),
	})
	switch {
	case errors.Is(err, eventstore.ErrConflict):
		return nil // another replica created it
	case err != nil:
		return storeError("append signing key", err)
	}
	s.logger.InfoContext(ctx, "created tenant signing key", "tenant", tenant, "kid", k.KeyID, "seq", ev.Sequence)
	s.wait(ctx, ev.Sequence)
	return nil
}

func checkTenant(field, tenant string) error {
	if _, err := ParseTenantName(field, "tenants/"+tenant); err != nil {
		return err
	}
	return nil
}

// CreateClient registers a client in tenant. It is idempotent by requestID: repeating a request
// returns the client it created while that client is active. A client id that was ever disabled is
// tombstoned: creating it fails with FailedPrecondition CLIENT_TOMBSTONED and writes nothing. A
// client id that exists from another request is AlreadyExists.
//
// The create is appended only if the client aggregate does not exist (version 0), so a tombstone
// that a concurrent DisableClient writes first makes the append conflict; the client is then read
// again and the tombstone refuses the create.
func (s *Service) CreateClient(ctx context.Context, md eventstore.Metadata, tenant string, in *issuerv1.Client, requestID string) (*issuerv1.Client, error) {
	if err := checkTenant("parent", tenant); err != nil {
		return nil, err
	}
	client, _, err := NormalizeClient(tenant, in, s.ttl, s.now().UTC())
	if err != nil {
		return nil, err
	}
	if requestID, err = checkRequestID(requestID); err != nil {
		return nil, err
	}
	if err := s.EnsureSigningKey(ctx, tenant); err != nil {
		return nil, err
	}
	md.Tenant = tenant
	for range maxAttempts {
		cur, _, err := s.load(ctx, tenant, client.GetClientId())
		if err != nil {
			return nil, err
		}
		if cur != nil && cur.GetState() != issuerv1.ClientState_CLIENT_STATE_ACTIVE {
			return nil, tombstonedError(cur)
		}
		ev, err := s.store.Append(ctx, eventstore.Append{
			Tenant:          tenant,
			AggregateType:   eventstore.AggregateClient,
			AggregateID:     client.GetClientId(),
			ExpectedVersion: 0,
			IdempotencyKey:  requestID,
			Type:            EventClientCreated,
			Subject:         client.GetName(),
			Data:            &issuerv1.ClientCreated{Client: client},
			Metadata:        md,
		})
		switch {
		case errors.Is(err, eventstore.ErrConflict) && cur == nil:
			continue // created or tombstoned since the read: read again
		case errors.Is(err, eventstore.ErrConflict):
			return nil, errs.AlreadyExists("CLIENT_ALREADY_EXISTS", fmt.Sprintf("client %q already exists", client.GetClientId())).
				WithMetadata("client", client.GetName())
		case err != nil:
			return nil, storeError("append client.created", err)
		}
		created, err := eventstore.DecodeAs[*issuerv1.ClientCreated](ev)
		if err != nil {
			return nil, errs.Internal(err)
		}
		s.wait(ctx, ev.Sequence)
		if c, ok := s.state.Client(tenant, client.GetClientId()); ok {
			return cloneClient(c.Proto), nil
		}
		return created.GetClient(), nil
	}
	return nil, errs.Conflict("CLIENT_CHANGED", "the client changed concurrently, retry")
}

// tombstonedError is the answer to creating a client id that was disabled.
func tombstonedError(c *issuerv1.Client) error {
	return errs.FailedPrecondition(ReasonClientTombstoned,
		fmt.Sprintf("client %q was disabled and can never be created again", c.GetClientId())).
		WithMetadata("client", c.GetName())
}

// GetClient returns one client.
func (s *Service) GetClient(tenant, clientID string) (*issuerv1.Client, error) {
	c, ok := s.state.Client(tenant, clientID)
	if !ok {
		return nil, errs.NotFound("CLIENT_NOT_FOUND", fmt.Sprintf("client %q not found", clientID)).
			WithMetadata("client", ClientName(tenant, clientID))
	}
	return cloneClient(c.Proto), nil
}

// load folds a client's events into its current form; nil if it does not exist. A tombstone is a
// DISABLED client with Tombstone set.
func (s *Service) load(ctx context.Context, tenant, clientID string) (*issuerv1.Client, uint64, error) {
	events, version, err := s.store.Load(ctx, tenant, eventstore.AggregateClient, clientID)
	if err != nil {
		return nil, 0, storeError("load client", err)
	}
	var c *issuerv1.Client
	for _, e := range events {
		switch e.Type {
		case EventClientCreated:
			m, err := eventstore.DecodeAs[*issuerv1.ClientCreated](e)
			if err != nil {
				return nil, 0, errs.Internal(err)
			}
			if c == nil {
				c = m.GetClient()
			}
		case EventClientDisabled:
			m, err := eventstore.DecodeAs[*issuerv1.ClientDisabled](e)
			if err != nil {
				return nil, 0, errs.Internal(err)
			}
			if c != nil {
				c.State = issuerv1.ClientState_CLIENT_STATE_DISABLED
				c.DisableTime = m.GetRevokeTime()
			}
		case EventClientTombstoned:
			m, err := eventstore.DecodeAs[*issuerv1.ClientTombstoned](e)
			if err != nil {
				return nil, 0, errs.Internal(err)
			}
			if c == nil {
				c = tombstone(tenant, clientID, m.GetTombstoneTime().AsTime())
			}
		}
	}
	return c, version, nil
}

// DisableClient disables a client and revokes its tokens (those issued at or before now). Disabling
// is final. A client that does not exist yet is tombstoned: a client.tombstoned event, appended only
// if the aggregate still does not exist, keeps any later or concurrent CreateClient from creating it.
// With requireExisting such a client is NotFound CLIENT_NOT_FOUND instead and nothing is written.
// Disabling a disabled client or a tombstone changes nothing.
func (s *Service) DisableClient(ctx context.Context, md eventstore.Metadata, tenant, clientID, reason, requestID string, requireExisting bool) (*issuerv1.Client, error) {
	if len(reason) > maxReasonLen || !utf8.ValidString(reason) || strings.ContainsAny(reason, "\x00") {
		return nil, errs.InvalidArgument("reason", fmt.Sprintf("must be valid UTF-8 text of at most %d bytes", maxReasonLen))
	}
	requestID, err := checkRequestID(requestID)
	if err != nil {
		return nil, err
	}
	md.Tenant = tenant
	name := ClientName(tenant, clientID)
	for range maxAttempts {
		cur, version, err := s.load(ctx, tenant, clientID)
		if err != nil {
			return nil, err
		}
		switch {
		case cur == nil && requireExisting:
			return nil, errs.NotFound("CLIENT_NOT_FOUND", fmt.Sprintf("client %q not found", clientID)).WithMetadata("client", name)
		case cur != nil && cur.GetState() == issuerv1.ClientState_CLIENT_STATE_DISABLED:
			return cur, nil
		}
		at := s.now().UTC()
		a := eventstore.Append{
			Tenant:          tenant,
			AggregateType:   eventstore.AggregateClient,
			AggregateID:     clientID,
			ExpectedVersion: version,
			IdempotencyKey:  requestID,
			Type:            EventClientDisabled,
			Subject:         name,
			Data:            &issuerv1.ClientDisabled{Name: name, Reason: reason, RevokeTime: timestamppb.New(at)},
			Metadata:        md,
		}
		if cur == nil {
			a.Type = EventClientTombstoned
			a.Data = &issuerv1.ClientTombstoned{Name: name, Reason: reason, TombstoneTime: timestamppb.New(at)}
		}
		ev, err := s.store.Append(ctx, a)
		if errors.Is(err, eventstore.ErrConflict) {
			continue
		}
		if err != nil {
			return nil, storeError("append "+a.Type, err)
		}
		s.wait(ctx, ev.Sequence)
		if c, ok := s.state.Client(tenant, clientID); ok && !c.Active() {
			return cloneClient(c.Proto), nil
		}
		if ev.Type == EventClientTombstoned {
			if m, err := eventstore.DecodeAs[*issuerv1.ClientTombstoned](ev); err == nil {
				at = m.GetTombstoneTime().AsTime()
			}
			return tombstone(tenant, clientID, at), nil
		}
		if m, err := eventstore.DecodeAs[*issuerv1.ClientDisabled](ev); err == nil {
			at = m.GetRevokeTime().AsTime()
		}
		cur.State = issuerv1.ClientState_CLIENT_STATE_DISABLED
		cur.DisableTime = timestamppb.New(at)
		return cur, nil
	}
	return nil, errs.Conflict("CLIENT_CHANGED", "the client changed concurrently, retry")
}

// EnsureClient registers a client unless it exists with the same registration (keys, scopes, roles,
// agent, environment, token lifetime). It fails with AlreadyExists when the client exists with a
// different registration and FailedPrecondition when it is disabled.
func (s *Service) EnsureClient(ctx context.Context, tenant string, in *issuerv1.Client) error {
	if err := checkTenant("tenant", tenant); err != nil {
		return err
	}
	want, _, err := NormalizeClient(tenant, in, s.ttl, s.now().UTC())
	if err != nil {
		return err
	}
	if err := s.EnsureSigningKey(ctx, tenant); err != nil {
		return err
	}
	for range maxAttempts {
		cur, version, err := s.load(ctx, tenant, want.GetClientId())
		if err != nil {
			return err
		}
		if cur != nil {
			switch {
			case cur.GetTombstone():
				return tombstonedError(cur)
			case !sameRegistration(cur, want):
				return errs.AlreadyExists("CLIENT_ALREADY_EXISTS",
					fmt.Sprintf("client %q exists with a different registration", want.GetClientId())).WithMetadata("client", want.GetName())
			case cur.GetState() != issuerv1.ClientState_CLIENT_STATE_ACTIVE:
				return errs.FailedPrecondition("CLIENT_DISABLED", fmt.Sprintf("client %q is disabled", want.GetClientId())).
					WithMetadata("client", want.GetName())
			}
			return nil
		}
		ev, err := s.store.Append(ctx, eventstore.Append{
			Tenant:          tenant,
			AggregateType:   eventstore.AggregateClient,
			AggregateID:     want.GetClientId(),
			ExpectedVersion: version,
			IdempotencyKey:  uuid.NewString(),
			Type:            EventClientCreated,
			Subject:         want.GetName(),
			Data:            &issuerv1.ClientCreated{Client: want},
			Metadata:        serviceMetadata(tenant),
		})
		if errors.Is(err, eventstore.ErrConflict) {
			continue
		}
		if err != nil {
			return storeError("append client.created", err)
		}
		s.wait(ctx, ev.Sequence)
		return nil
	}
	return errs.Conflict("CLIENT_CHANGED", "the client changed concurrently, retry")
}

// ListSigningKeys returns the tenant's signing keys (public halves), removed ones included, newest
// first, with their rotation states and dates.
func (s *Service) ListSigningKeys(tenant string) ([]*issuerv1.SigningKey, error) {
	ens := s.state.SigningKeyEntries(tenant)
	if len(ens) == 0 {
		return nil, errs.NotFound("TENANT_NOT_FOUND", "tenant not found").WithMetadata("tenant", tenant)
	}
	out := make([]*issuerv1.SigningKey, 0, len(ens))
	for _, en := range ens {
		out = append(out, SigningKeyProto(en))
	}
	return out, nil
}
