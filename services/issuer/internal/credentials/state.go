package credentials

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/eventstore"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/services/issuer/internal/keys"
)

// ProjectionName names the in-memory credentials projection (bump the version when Apply changes).
const ProjectionName = "issuer-credentials-v2"

// State is the in-memory projection of the CREDENTIALS stream: every tenant's signing keys (private
// halves unsealed when applied) and OAuth clients. The token endpoint reads only this. It is safe
// for concurrent use; Apply is called from one goroutine.
type State struct {
	sealers map[string]*keys.Sealer
	logger  *slog.Logger

	mu      sync.RWMutex
	tenants map[string]*tenantState
}

type tenantState struct {
	keys    keys.Ring // signing keys, with their private halves unsealed where the KEK is known
	clients map[string]*Client
}

var _ eventstore.Projection = (*State)(nil)

// NewState returns an empty projection that unseals signing keys with the given sealers (by
// key-encryption key id).
func NewState(logger *slog.Logger, sealers ...*keys.Sealer) *State {
	if logger == nil {
		logger = slog.Default()
	}
	s := &State{sealers: make(map[string]*keys.Sealer, len(sealers)), logger: logger, tenants: make(map[string]*tenantState)}
	for _, sl := range sealers {
		s.sealers[sl.ID()] = sl
	}
	return s
}

// Name identifies the projection.
func (s *State) Name() string { return ProjectionName }

// Apply folds one CREDENTIALS event into the state. Unknown event types are ignored.
func (s *State) Apply(_ context.Context, e eventstore.Event) error {
	switch e.Type {
	case EventSigningKeyCreated, EventSigningKeyActivated, EventSigningKeyRemoved, EventSigningKeyResealed:
		return s.applySigningKeyEvent(e)
	case EventClientCreated:
		return s.applyClientCreated(e)
	case EventClientDisabled:
		return s.applyClientDisabled(e)
	case EventClientTombstoned:
		return s.applyClientTombstoned(e)
	case EventClientKeyAdded, EventClientKeyRemoved:
		return s.applyClientKeyEvent(e)
	default:
		return nil
	}
}

func (s *State) applyClientCreated(e eventstore.Event) error {
	msg, err := eventstore.DecodeAs[*issuerv1.ClientCreated](e)
	if err != nil {
		return err
	}
	c := msg.GetClient()
	tenant := e.Metadata.Tenant
	if err := checkClientCreated(e, c); err != nil {
		return err
	}
	jwks, err := ParsePublicJWKS(c.GetPublicJwks())
	if err != nil {
		return fmt.Errorf("client %s: public_jwks %w", c.GetName(), err)
	}
	client := &Client{Proto: cloneClient(c), Keys: jwks, TokenTTL: time.Duration(c.GetTokenTtlSeconds()) * time.Second}
	if client.TokenTTL <= 0 {
		client.TokenTTL = DefaultTokenTTL
	}
	// Registrations from before the limit (or written around the commands) still never yield a
	// role-bearing token that outlives it.
	if len(c.GetRoles()) > 0 && client.TokenTTL > MaxRoleTokenTTL {
		client.TokenTTL = MaxRoleTokenTTL
		client.Proto.TokenTtlSeconds = int32(MaxRoleTokenTTL / time.Second)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ts := s.tenantLocked(tenant)
	if _, exists := ts.clients[c.GetClientId()]; exists {
		s.logger.Warn("ignoring a second client.created event", "tenant", tenant, "client_id", c.GetClientId(), "event_id", e.ID)
		return nil
	}
	ts.clients[c.GetClientId()] = client
	return nil
}

// checkClientCreated re-checks the invariants of a client.created event before it is applied, so that
// an event appended around the commands (a leaked NATS credential that may publish on CREDENTIALS)
// cannot create a client the commands would refuse: the client's tenant is the event's tenant, its
// resource name's and its aggregate's, and a system-only role (platform-admin, lifecycle-worker) is
// granted only in tenant "system". A violation is permanent: the event goes to the failed-event log and
// the client does not exist.
func checkClientCreated(e eventstore.Event, c *issuerv1.Client) error {
	tenant := e.Metadata.Tenant
	refuse := func(format string, args ...any) error {
		return eventstore.Permanent(fmt.Errorf("client.created event %s refused: "+format, append([]any{e.ID}, args...)...))
	}
	switch {
	case c.GetTenant() != tenant || c.GetClientId() != e.AggregateID:
		return refuse("client %s/%s on aggregate %s/%s", c.GetTenant(), c.GetClientId(), tenant, e.AggregateID)
	case e.Subject != "" && e.Subject != ClientName(tenant, e.AggregateID):
		return refuse("event subject %q is not client %s/%s", e.Subject, tenant, e.AggregateID)
	case c.GetName() != "" && c.GetName() != ClientName(tenant, e.AggregateID):
		return refuse("client name %q is not client %s/%s", c.GetName(), tenant, e.AggregateID)
	}
	if tenant != authn.SystemTenant {
		for _, r := range c.GetRoles() {
			if authn.Role(r).SystemOnly() {
				return refuse("role %s granted in tenant %s (only in tenant %s)", r, tenant, authn.SystemTenant)
			}
		}
	}
	return nil
}

func (s *State) applyClientDisabled(e eventstore.Event) error {
	msg, err := eventstore.DecodeAs[*issuerv1.ClientDisabled](e)
	if err != nil {
		return err
	}
	tenant := e.Metadata.Tenant
	s.mu.Lock()
	defer s.mu.Unlock()
	ts := s.tenantLocked(tenant)
	old, ok := ts.clients[e.AggregateID]
	if !ok {
		return fmt.Errorf("client.disabled event %s for unknown client %s/%s", e.ID, tenant, e.AggregateID)
	}
	revoke := e.Time
	if msg.GetRevokeTime() != nil {
		revoke = msg.GetRevokeTime().AsTime()
	}
	p := cloneClient(old.Proto)
	p.State = issuerv1.ClientState_CLIENT_STATE_DISABLED
	p.DisableTime = timestamppb.New(revoke)
	ts.clients[e.AggregateID] = &Client{Proto: p, Keys: old.Keys, TokenTTL: old.TokenTTL, RevokeTime: revoke}
	return nil
}

// applyClientTombstoned records a client id that was disabled before it was created: a DISABLED
// client without keys that the token endpoint refuses and that no later client.created replaces.
func (s *State) applyClientTombstoned(e eventstore.Event) error {
	msg, err := eventstore.DecodeAs[*issuerv1.ClientTombstoned](e)
	if err != nil {
		return err
	}
	tenant := e.Metadata.Tenant
	if msg.GetName() != ClientName(tenant, e.AggregateID) {
		return fmt.Errorf("client.tombstoned event %s: name %q on aggregate %s/%s", e.ID, msg.GetName(), tenant, e.AggregateID)
	}
	at := e.Time
	if msg.GetTombstoneTime() != nil {
		at = msg.GetTombstoneTime().AsTime()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ts := s.tenantLocked(tenant)
	if _, exists := ts.clients[e.AggregateID]; exists {
		s.logger.Warn("ignoring a tombstone of an existing client", "tenant", tenant, "client_id", e.AggregateID, "event_id", e.ID)
		return nil
	}
	ts.clients[e.AggregateID] = &Client{Proto: tombstone(tenant, e.AggregateID, at), Keys: map[string]jose.JSONWebKey{}, TokenTTL: DefaultTokenTTL, RevokeTime: at}
	return nil
}

// tombstone is the API form of a client id tombstoned at t.
func tombstone(tenant, clientID string, t time.Time) *issuerv1.Client {
	return &issuerv1.Client{
		Name:        ClientName(tenant, clientID),
		ClientId:    clientID,
		Tenant:      tenant,
		State:       issuerv1.ClientState_CLIENT_STATE_DISABLED,
		DisableTime: timestamppb.New(t),
		Tombstone:   true,
	}
}

func (s *State) tenantLocked(tenant string) *tenantState {
	ts, ok := s.tenants[tenant]
	if !ok {
		ts = &tenantState{clients: make(map[string]*Client)}
		s.tenants[tenant] = ts
	}
	return ts
}

// Client returns one client of the tenant.
func (s *State) Client(tenant, clientID string) (*Client, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	ts, ok := s.tenants[tenant]
	if !ok {
		return nil, false
	}
	c, ok := ts.clients[clientID]
	return c, ok
}
