package assetgraph

import (
	"context"
	"crypto"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"google.golang.org/grpc/status"

	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// DefaultUsageWindow is how far back the builder asks the monitor for usage.
const DefaultUsageWindow = 30 * 24 * time.Hour

// AgentSource returns an agent's registry record.
type AgentSource interface {
	// Agent returns the agent named `tenants/{tenant}/agents/{agent}`.
	Agent(ctx context.Context, name string) (*registryv1.Agent, error)
}

// ClientSource returns an issuer client.
type ClientSource interface {
	// Client returns the client named `tenants/{tenant}/clients/{client}`.
	Client(ctx context.Context, name string) (*issuerv1.Client, error)
}

// UsageSource summarises an agent's telemetry.
type UsageSource interface {
	// Usage summarises what the agent did between start and end.
	Usage(ctx context.Context, agent string, start, end time.Time) (*monitorv1.GetAgentUsageResponse, error)
}

// Builder composes an agent's graph from its sources. Agents is required; a nil Clients or Usage
// omits that part, and one that fails omits it with a note in the graph.
type Builder struct {
	// Agents reads the registry record (required).
	Agents AgentSource
	// Clients reads the agent's issuer client; nil: no client, keys the issuer accepts or audiences.
	Clients ClientSource
	// Usage reads telemetry; nil: no scopes used or resources seen.
	Usage UsageSource
	// UsageWindow is how far back usage is asked for (default DefaultUsageWindow).
	UsageWindow time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Build returns the graph of the agent named `tenants/{tenant}/agents/{agent}`. It fails only when
// the agent cannot be read (with the agent source's error as it is) or ctx ends; the client and
// usage parts degrade to notes.
func (b Builder) Build(ctx context.Context, name string) (*Graph, error) {
	if b.Agents == nil {
		return nil, errors.New("assetgraph: an agent source is required")
	}
	agent, err := b.Agents.Agent(ctx, name)
	if err != nil {
		return nil, err
	}
	if agent == nil {
		return nil, fmt.Errorf("agent %s: the registry returned no agent", name)
	}
	if agent.GetName() == "" {
		agent.Name = name
	}
	g := newGraph(agent.GetName())
	g.Sources = append(g.Sources, "registry")
	g.addAgent(agent)

	if b.Clients != nil {
		clientName := "tenants/" + agent.GetTenant() + "/clients/" + agent.GetAgentId()
		c, err := b.Clients.Client(ctx, clientName)
		switch {
		case ctx.Err() != nil:
			return nil, ctx.Err()
		case err != nil:
			g.note("issuer client omitted: " + describe(err))
		case c == nil:
			g.note("issuer client omitted: the issuer returned no client")
		default:
			g.Sources = append(g.Sources, "issuer")
			g.addClient(c)
		}
	}

	if b.Usage != nil {
		now := time.Now
		if b.Now != nil {
			now = b.Now
		}
		window := b.UsageWindow
		if window <= 0 {
			window = DefaultUsageWindow
		}
		end := now().UTC()
		start := end.Add(-window)
		u, err := b.Usage.Usage(ctx, agent.GetName(), start, end)
		switch {
		case ctx.Err() != nil:
			return nil, ctx.Err()
		case err != nil:
			g.note("resources seen omitted: " + describe(err))
		default:
			g.Sources = append(g.Sources, "monitor")
			g.addUsage(u, start, end)
		}
	}
	g.sort()
	return g, nil
}

func (g *Graph) addClient(c *issuerv1.Client) {
	attrs := map[string]string{
		"state":       enumName(c.GetState(), "CLIENT_STATE_"),
		"environment": c.GetEnvironment(),
	}
	if c.GetDpopBound() {
		attrs["dpop_bound"] = "true"
	}
	if c.GetTokenTtlSeconds() > 0 {
		attrs["token_ttl_seconds"] = strconv.Itoa(int(c.GetTokenTtlSeconds()))
	}
	if c.GetDisableTime() != nil {
		attrs["disable_time"] = timeString(c.GetDisableTime().AsTime(), true)
	}
	client := g.add(KindClient, c.GetClientId(), c.GetClientId(), attrs)
	g.link(g.agentID(), client, EdgeHasClient, nil)
	for _, k := range g.jwksKeys("the issuer client's public_jwks", c.GetPublicJwks()) {
		g.link(client, k, EdgeAcceptsKey, nil)
	}
	for _, s := range c.GetScopes() {
		g.link(client, g.add(KindScope, s, s, nil), EdgeAllowsScope, nil)
	}
	for _, r := range c.GetResources() {
		r = RedactURI(r)
		g.link(client, g.add(KindResource, r, r, nil), EdgeAudience, nil)
	}
}

func (g *Graph) addUsage(u *monitorv1.GetAgentUsageResponse, start, end time.Time) {
	g.Usage = &Usage{
		StartTime: timeString(start, true), EndTime: timeString(end, true), Events: u.GetEvents(),
		CoverageStartTime: timeString(u.GetCoverageStartTime().AsTime(), u.GetCoverageStartTime() != nil),
	}
	agent := g.agentID()
	for _, s := range u.GetScopes() {
		if s.GetValue() == "" {
			continue
		}
		g.link(agent, g.add(KindScope, s.GetValue(), s.GetValue(), nil), EdgeUsedScope, usageAttrs(s))
	}
	for _, r := range u.GetResources() {
		if r.GetValue() == "" {
			continue
		}
		v := RedactURI(r.GetValue())
		g.link(agent, g.add(KindResourceSeen, v, v, nil), EdgeAccessed, usageAttrs(r))
	}
}

func usageAttrs(c *monitorv1.UsageCount) map[string]string {
	attrs := map[string]string{"count": strconv.FormatInt(c.GetCount(), 10)}
	if c.GetLastSeen() != nil {
		attrs["last_seen"] = timeString(c.GetLastSeen().AsTime(), true)
	}
	return attrs
}

// jwksKeys adds a key node for each key of a JWK Set (kid, algorithm and thumbprint only) and
// returns their IDs; a key it cannot read is noted, never printed.
func (g *Graph) jwksKeys(what, jwks string) []string {
	if strings.TrimSpace(jwks) == "" {
		return nil
	}
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal([]byte(jwks), &set); err != nil {
		g.note(what + " is not a JWK Set: its keys are omitted")
		return nil
	}
	var ids []string
	for i, raw := range set.Keys {
		var k jose.JSONWebKey
		if err := k.UnmarshalJSON(raw); err != nil {
			g.note(fmt.Sprintf("%s: key %d is not a readable JWK: omitted", what, i))
			continue
		}
		pub := k.Public()
		tp, err := pub.Thumbprint(crypto.SHA256)
		if err != nil {
			g.note(fmt.Sprintf("%s: key %d has no thumbprint: omitted", what, i))
			continue
		}
		ids = append(ids, g.addKey(k.KeyID, base64.RawURLEncoding.EncodeToString(tp), k.Algorithm, ""))
	}
	return ids
}

// describe says why a source failed in one line: "Code: message" for a gRPC status.
func describe(err error) string {
	if st, ok := status.FromError(err); ok {
		return st.Code().String() + ": " + st.Message()
	}
	return err.Error()
}
