// Package discovery implements agentid.registry.v1.DiscoveryService: it resolves identifiers found
// by scans (pkg/discovery) against the registry, scans gateway access log lines, lists the
// platform's own ghost and stale identities (issuer clients without a registry entry, inactive and
// ownerless agents) and adopts a finding as a PROPOSED agent.
package discovery

import (
	"context"
	"crypto"
	"encoding/base64"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/tidwall/btree"

	"github.com/agentid/agentid/pkg/eventstore"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
)

// ClientsProjectionName names the read model of the issuer's clients; the suffix is its version.
const ClientsProjectionName = "registry-discovery-clients-v1"

// Client event types of the CREDENTIALS stream (the issuer's facts).
const (
	eventClientCreated    = "client.created"
	eventClientDisabled   = "client.disabled"
	eventClientTombstoned = "client.tombstoned"
	eventClientKeyAdded   = "client.key_added"
	eventClientKeyRemoved = "client.key_removed"
)

// IssuerClient is what discovery knows of one issuer client.
type IssuerClient struct {
	// Tenant and ClientID name it.
	Tenant, ClientID string
	// Agent is the resource name of the agent it was created for; empty for platform identities.
	Agent string
	// Disabled is true once the client was disabled (or tombstoned).
	Disabled bool
	// CreateTime is when it was created.
	CreateTime time.Time
	// Thumbprints are the RFC 7638 thumbprints of its keys.
	Thumbprints []string
}

// ClientProjection is the in-memory read model of the issuer's OAuth clients (the client events of
// the CREDENTIALS stream): per tenant, each client with its agent, state and key thumbprints. It
// holds no secret (CREDENTIALS' signing key events are ignored). Safe for concurrent use.
type ClientProjection struct {
	mu      sync.RWMutex
	clients map[string]*IssuerClient      // tenant + "/" + client id
	thumbs  map[string]string             // tenant + "/" + thumbprint → client id
	order   map[string]*btree.Set[string] // tenant → its client ids, ordered (pages of ClientsAfter)
}

var _ eventstore.Projection = (*ClientProjection)(nil)

// NewClientProjection returns an empty clients read model.
func NewClientProjection() *ClientProjection {
	return &ClientProjection{clients: map[string]*IssuerClient{}, thumbs: map[string]string{}, order: map[string]*btree.Set[string]{}}
}

// Name implements eventstore.Projection.
func (p *ClientProjection) Name() string { return ClientsProjectionName }

// Apply implements eventstore.Projection: it folds one client event; other events are ignored.
// Events are facts: a client event it cannot decode is skipped, never refused.
func (p *ClientProjection) Apply(_ context.Context, e eventstore.Event) error {
	if e.AggregateType != eventstore.AggregateClient {
		return nil
	}
	tenant, clientID := e.Metadata.Tenant, e.AggregateID
	key := tenant + "/" + clientID
	p.mu.Lock()
	defer p.mu.Unlock()
	switch e.Type {
	case eventClientCreated:
		msg, err := eventstore.DecodeAs[*issuerv1.ClientCreated](e)
		if err != nil {
			return nil
		}
		c := msg.GetClient()
		ic := &IssuerClient{Tenant: tenant, ClientID: clientID, Agent: c.GetAgent(), CreateTime: e.Time,
			Disabled: c.GetState() == issuerv1.ClientState_CLIENT_STATE_DISABLED}
		if prev := p.clients[key]; prev != nil && prev.Disabled {
			ic.Disabled = true // a tombstone stays disabled
		}
		for _, tp := range jwksThumbprints(c.GetPublicJwks()) {
			ic.Thumbprints = append(ic.Thumbprints, tp)
			p.thumbs[tenant+"/"+tp] = clientID
		}
		p.clients[key] = ic
		p.ordered(tenant).Insert(clientID)
	case eventClientDisabled, eventClientTombstoned:
		c := p.clients[key]
		if c == nil {
			c = &IssuerClient{Tenant: tenant, ClientID: clientID, CreateTime: e.Time}
			p.clients[key] = c
			p.ordered(tenant).Insert(clientID)
		}
		c.Disabled = true
	case eventClientKeyAdded:
		msg, err := eventstore.DecodeAs[*issuerv1.ClientKeyAdded](e)
		if err != nil || msg.GetThumbprint() == "" {
			return nil
		}
		if c := p.clients[key]; c != nil && !slices.Contains(c.Thumbprints, msg.GetThumbprint()) {
			c.Thumbprints = append(c.Thumbprints, msg.GetThumbprint())
		}
		p.thumbs[tenant+"/"+msg.GetThumbprint()] = clientID
	case eventClientKeyRemoved:
		msg, err := eventstore.DecodeAs[*issuerv1.ClientKeyRemoved](e)
		if err != nil {
			return nil
		}
		if c := p.clients[key]; c != nil {
			c.Thumbprints = slices.DeleteFunc(c.Thumbprints, func(tp string) bool { return tp == msg.GetThumbprint() })
		}
		// The removed key stays attributed to its client: a leaked old key is still that client's.
	}
	return nil
}

// Client returns a copy of one client.
func (p *ClientProjection) Client(tenant, clientID string) (IssuerClient, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	c, ok := p.clients[tenant+"/"+clientID]
	if !ok {
		return IssuerClient{}, false
	}
	cp := *c
	cp.Thumbprints = slices.Clone(c.Thumbprints)
	return cp, true
}

// KeyClient returns the client whose key (ever) had thumbprint.
func (p *ClientProjection) KeyClient(tenant, thumbprint string) (string, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	id, ok := p.thumbs[tenant+"/"+thumbprint]
	return id, ok
}

// Clients returns copies of tenant's clients ordered by client id.
func (p *ClientProjection) Clients(tenant string) []IssuerClient {
	p.mu.RLock()
	var out []IssuerClient
	prefix := tenant + "/"
	for k, c := range p.clients {
		if strings.HasPrefix(k, prefix) {
			cp := *c
			cp.Thumbprints = slices.Clone(c.Thumbprints)
			out = append(out, cp)
		}
	}
	p.mu.RUnlock()
	slices.SortFunc(out, func(a, b IssuerClient) int { return strings.Compare(a.ClientID, b.ClientID) })
	return out
}

// jwksThumbprints returns the RFC 7638 SHA-256 thumbprints (base64url) of a JWK Set's keys.
func jwksThumbprints(raw string) []string {
	if raw == "" {
		return nil
	}
	var set jose.JSONWebKeySet
	if json.Unmarshal([]byte(raw), &set) != nil {
		return nil
	}
	var out []string
	for _, k := range set.Keys {
		if tp, err := k.Thumbprint(crypto.SHA256); err == nil {
			out = append(out, base64.RawURLEncoding.EncodeToString(tp))
		}
	}
	return out
}
