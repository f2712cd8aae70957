// Package assetgraph builds an agent's asset graph: what an agent is tied to (its tenant, owner and
// sponsor), what it authenticates with (its issuer client and keys, by kid and thumbprint only), what
// it may do (scopes, roles, resources), what it depends on (declared queues, webhooks, storage, …)
// and what telemetry saw it touch. The graph renders as JSON (a stable, documented schema), Graphviz
// DOT and a Mermaid flowchart. Deprovisioning reads an agent's declared dependencies from it.
//
// The graph never holds secret material: keys appear by kid, algorithm and RFC 7638 thumbprint, and a
// URI's password and credential-like query values are replaced by Redacted.
package assetgraph

import (
	"cmp"
	"encoding/json"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/reflect/protoreflect"

	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// SchemaVersion names the JSON schema of a rendered graph (docs/asset-graph.md).
const SchemaVersion = "agentid.dev/asset-graph/v1"

// Redacted replaces secret-looking parts of URIs.
const Redacted = "REDACTED"

// NodeKind is what a node stands for.
type NodeKind string

// Node kinds, in the order a rendered graph lists them.
const (
	// KindAgent is the agent the graph is about.
	KindAgent NodeKind = "agent"
	// KindTenant is the agent's tenant.
	KindTenant NodeKind = "tenant"
	// KindOwner is the agent's accountable owner (a person or team).
	KindOwner NodeKind = "owner"
	// KindSponsor is who asked for the agent.
	KindSponsor NodeKind = "sponsor"
	// KindClient is the agent's OAuth client at the issuer.
	KindClient NodeKind = "client"
	// KindKey is a public key the agent authenticates with (kid and thumbprint only).
	KindKey NodeKind = "key"
	// KindScope is a scope granted to the agent or seen used by it.
	KindScope NodeKind = "scope"
	// KindRole is a role the agent holds.
	KindRole NodeKind = "role"
	// KindResource is an RFC 8707 resource the agent's client may get tokens for.
	KindResource NodeKind = "resource"
	// KindDependency is a declared dependent resource (queue, webhook, storage, …).
	KindDependency NodeKind = "dependency"
	// KindResourceSeen is a resource the agent accessed, as telemetry recorded it.
	KindResourceSeen NodeKind = "resource_seen"
)

var kindRank = map[NodeKind]int{
	KindAgent: 0, KindTenant: 1, KindOwner: 2, KindSponsor: 3, KindClient: 4, KindKey: 5, KindScope: 6,
	KindRole: 7, KindResource: 8, KindDependency: 9, KindResourceSeen: 10,
}

var edgeRank = map[EdgeKind]int{
	EdgeBelongsTo: 0, EdgeOwnedBy: 1, EdgeSponsoredBy: 2, EdgeHasClient: 3, EdgeAuthenticatesWith: 4, EdgeAcceptsKey: 5,
	EdgeGrantedScope: 6, EdgeAllowsScope: 7, EdgeHasRole: 8, EdgeAudience: 9, EdgeDependsOn: 10, EdgeUsedScope: 11, EdgeAccessed: 12,
}

// EdgeKind is what an edge says about its two nodes.
type EdgeKind string

// Edge kinds.
const (
	// EdgeBelongsTo links the agent to its tenant.
	EdgeBelongsTo EdgeKind = "belongs_to"
	// EdgeOwnedBy links the agent to its owner.
	EdgeOwnedBy EdgeKind = "owned_by"
	// EdgeSponsoredBy links the agent to its sponsor.
	EdgeSponsoredBy EdgeKind = "sponsored_by"
	// EdgeHasClient links the agent to its issuer client.
	EdgeHasClient EdgeKind = "has_client"
	// EdgeAuthenticatesWith links the agent to a key the registry holds for it.
	EdgeAuthenticatesWith EdgeKind = "authenticates_with"
	// EdgeAcceptsKey links the client to a key the issuer accepts for it.
	EdgeAcceptsKey EdgeKind = "accepts_key"
	// EdgeGrantedScope links the agent to a scope its registry record grants.
	EdgeGrantedScope EdgeKind = "granted_scope"
	// EdgeAllowsScope links the client to a scope the issuer may put in its tokens.
	EdgeAllowsScope EdgeKind = "allows_scope"
	// EdgeHasRole links the agent to a role it holds.
	EdgeHasRole EdgeKind = "has_role"
	// EdgeAudience links the client to a resource its tokens may be for.
	EdgeAudience EdgeKind = "audience"
	// EdgeDependsOn links the agent to a declared dependency.
	EdgeDependsOn EdgeKind = "depends_on"
	// EdgeUsedScope links the agent to a scope telemetry saw it use (attrs count, last_seen).
	EdgeUsedScope EdgeKind = "used_scope"
	// EdgeAccessed links the agent to a resource telemetry saw it access (attrs count, last_seen).
	EdgeAccessed EdgeKind = "accessed"
)

// Node is one asset of the graph.
type Node struct {
	// ID is unique in the graph and stable across builds: "<kind>:<key>".
	ID string `json:"id"`
	// Kind is what the node stands for.
	Kind NodeKind `json:"kind"`
	// Label is a one-line human description (renderers escape it).
	Label string `json:"label"`
	// Attrs are the node's properties; absent ones are omitted.
	Attrs map[string]string `json:"attrs,omitempty"`
}

// Edge is one relation between two nodes.
type Edge struct {
	// From is the source node's ID.
	From string `json:"from"`
	// To is the target node's ID.
	To string `json:"to"`
	// Kind is the relation.
	Kind EdgeKind `json:"kind"`
	// Attrs are the relation's properties (counts, times).
	Attrs map[string]string `json:"attrs,omitempty"`
}

// Usage says which telemetry window the used_scope and accessed edges cover.
type Usage struct {
	// StartTime is the window's start (RFC 3339, UTC).
	StartTime string `json:"start_time"`
	// EndTime is the window's end (RFC 3339, UTC).
	EndTime string `json:"end_time"`
	// Events is how many telemetry events of the agent the window holds.
	Events int64 `json:"events"`
	// CoverageStartTime is from when the telemetry store holds the tenant's telemetry completely;
	// empty when it holds none. Nothing seen before it is not evidence of "not used".
	CoverageStartTime string `json:"coverage_start_time,omitempty"`
}

// Graph is an agent's asset graph.
type Graph struct {
	// Schema is SchemaVersion.
	Schema string `json:"schema"`
	// Agent is the agent's resource name.
	Agent string `json:"agent"`
	// Sources are the services the graph was built from (registry, issuer, monitor).
	Sources []string `json:"sources"`
	// Usage is the telemetry window, when the monitor was asked and answered.
	Usage *Usage `json:"usage,omitempty"`
	// Nodes, the agent first, then by kind and ID.
	Nodes []Node `json:"nodes"`
	// Edges, ordered by source node, kind (in the order of the EdgeKind constants) and target node.
	Edges []Edge `json:"edges"`
	// Notes say what is missing and why (a service that did not answer, an unreadable key).
	Notes []string `json:"notes,omitempty"`

	index map[string]int
}

// Dependency is a resource an agent declared it depends on: what its teardown must clean up.
type Dependency struct {
	// Kind: queue, webhook, storage, database, api, secret or other.
	Kind string `json:"kind"`
	// URI is where it is (credentials in it redacted).
	URI string `json:"uri"`
	// Description says what it is for.
	Description string `json:"description,omitempty"`
}

// Dependencies returns the agent's declared dependencies, normalised: kind lowercased (empty is
// "other"), URI trimmed with credentials redacted, entries without a URI dropped, duplicates (same
// kind and URI) merged, ordered by kind then URI. The result is never nil.
func Dependencies(agent *registryv1.Agent) []Dependency {
	out := []Dependency{}
	seen := map[[2]string]bool{}
	for _, d := range agent.GetDependencies() {
		dep := Dependency{
			Kind:        strings.ToLower(strings.TrimSpace(d.GetKind())),
			URI:         RedactURI(strings.TrimSpace(d.GetUri())),
			Description: strings.TrimSpace(d.GetDescription()),
		}
		if dep.Kind == "" {
			dep.Kind = "other"
		}
		if dep.URI == "" || seen[[2]string{dep.Kind, dep.URI}] {
			continue
		}
		seen[[2]string{dep.Kind, dep.URI}] = true
		out = append(out, dep)
	}
	slices.SortFunc(out, func(a, b Dependency) int {
		return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.URI, b.URI))
	})
	return out
}

// secretParams are query parameter names whose values RedactURI hides (compared lowercased, as
// substrings).
var secretParams = []string{"token", "secret", "password", "passwd", "pwd", "key", "sig", "signature", "credential", "auth"}

// RedactURI returns uri with its password and credential-like query values replaced by Redacted.
// Anything that does not parse as a URL with a scheme is returned as it is.
func RedactURI(uri string) string {
	u, err := url.Parse(uri)
	if err != nil || u.Scheme == "" {
		return uri
	}
	changed := false
	if u.User != nil {
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), Redacted)
			changed = true
		}
	}
	if u.RawQuery != "" {
		q := u.Query()
		for name, vals := range q {
			lower := strings.ToLower(name)
			if slices.ContainsFunc(secretParams, func(s string) bool { return strings.Contains(lower, s) }) {
				for i := range vals {
					vals[i] = Redacted
				}
				changed = true
			}
		}
		if changed {
			u.RawQuery = q.Encode()
		}
	}
	if !changed {
		return uri
	}
	return u.String()
}

// Dependencies returns the graph's dependency nodes as Dependency values, in the graph's order.
func (g *Graph) Dependencies() []Dependency {
	out := []Dependency{}
	for _, n := range g.Nodes {
		if n.Kind == KindDependency {
			out = append(out, Dependency{Kind: n.Attrs["kind"], URI: n.Attrs["uri"], Description: n.Attrs["description"]})
		}
	}
	return out
}

// Node returns the node with id, if the graph has it.
func (g *Graph) Node(id string) (Node, bool) {
	for _, n := range g.Nodes {
		if n.ID == id {
			return n, true
		}
	}
	return Node{}, false
}

// JSON renders the graph as indented JSON (schema SchemaVersion, docs/asset-graph.md).
func (g *Graph) JSON() ([]byte, error) {
	b, err := json.MarshalIndent(g, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// FromAgent returns the graph of what the registry record alone says about the agent: tenant, owner,
// sponsor, keys, scopes, roles and declared dependencies.
func FromAgent(agent *registryv1.Agent) *Graph {
	g := newGraph(agent.GetName())
	g.Sources = append(g.Sources, "registry")
	g.addAgent(agent)
	g.sort()
	return g
}

func newGraph(agent string) *Graph {
	return &Graph{Schema: SchemaVersion, Agent: agent, Sources: []string{}, Nodes: []Node{}, Edges: []Edge{}, index: map[string]int{}}
}

// add adds a node unless one with its ID exists; it returns the ID.
func (g *Graph) add(kind NodeKind, key, label string, attrs map[string]string) string {
	id := string(kind) + ":" + key
	if _, ok := g.index[id]; ok {
		return id
	}
	for k, v := range attrs {
		if v == "" {
			delete(attrs, k)
		}
	}
	if len(attrs) == 0 {
		attrs = nil
	}
	g.index[id] = len(g.Nodes)
	g.Nodes = append(g.Nodes, Node{ID: id, Kind: kind, Label: label, Attrs: attrs})
	return id
}

func (g *Graph) link(from, to string, kind EdgeKind, attrs map[string]string) {
	for _, e := range g.Edges {
		if e.From == from && e.To == to && e.Kind == kind {
			return
		}
	}
	if len(attrs) == 0 {
		attrs = nil
	}
	g.Edges = append(g.Edges, Edge{From: from, To: to, Kind: kind, Attrs: attrs})
}

func (g *Graph) note(s string) { g.Notes = append(g.Notes, s) }

func (g *Graph) agentID() string { return string(KindAgent) + ":" + g.Agent }

func (g *Graph) addAgent(a *registryv1.Agent) {
	label := a.GetAgentId()
	if a.GetDisplayName() != "" {
		label = a.GetDisplayName() + " (" + a.GetAgentId() + ")"
	}
	attrs := map[string]string{
		"agent_id":         a.GetAgentId(),
		"display_name":     a.GetDisplayName(),
		"state":            enumName(a.GetState(), "AGENT_STATE_"),
		"environment":      enumName(a.GetEnvironment(), "ENVIRONMENT_"),
		"risk_tier":        enumName(a.GetRiskTier(), "RISK_TIER_"),
		"autonomy":         enumName(a.GetAutonomy(), "AUTONOMY_"),
		"identity_model":   enumName(a.GetIdentityModel(), "IDENTITY_MODEL_"),
		"trust_boundary":   enumName(a.GetTrustBoundary(), "TRUST_BOUNDARY_"),
		"data_sensitivity": enumName(a.GetDataSensitivity(), "DATA_SENSITIVITY_"),
		"credential_type":  enumName(a.GetCredentialType(), "CREDENTIAL_TYPE_"),
		"function":         a.GetFunction(),
		"expire_time":      timeString(a.GetExpireTime().AsTime(), a.GetExpireTime() != nil),
		"last_active_time": timeString(a.GetLastActiveTime().AsTime(), a.GetLastActiveTime() != nil),
		"orphan_reason":    a.GetOrphanReason(),
	}
	if a.GetOrphaned() {
		attrs["orphaned"] = "true"
	}
	agent := g.add(KindAgent, g.Agent, label, attrs)
	if a.GetTenant() != "" {
		g.link(agent, g.add(KindTenant, a.GetTenant(), a.GetTenant(), nil), EdgeBelongsTo, nil)
	}
	if a.GetOwner() != "" {
		g.link(agent, g.add(KindOwner, a.GetOwner(), a.GetOwner(), nil), EdgeOwnedBy, nil)
	}
	if a.GetSponsor() != "" {
		g.link(agent, g.add(KindSponsor, a.GetSponsor(), a.GetSponsor(), nil), EdgeSponsoredBy, nil)
	}
	keys := a.GetKeys()
	if len(keys) > 0 {
		for _, k := range keys {
			id := g.addKey(k.GetKid(), k.GetThumbprint(), k.GetAlgorithm(), timeString(k.GetAddTime().AsTime(), k.GetAddTime() != nil))
			g.link(agent, id, EdgeAuthenticatesWith, nil)
		}
	} else if a.GetPublicJwks() != "" {
		for _, k := range g.jwksKeys("the agent's public_jwks", a.GetPublicJwks()) {
			g.link(agent, k, EdgeAuthenticatesWith, nil)
		}
	}
	for _, s := range a.GetScopes() {
		g.link(agent, g.add(KindScope, s, s, nil), EdgeGrantedScope, nil)
	}
	for _, r := range a.GetRoles() {
		g.link(agent, g.add(KindRole, r, r, nil), EdgeHasRole, nil)
	}
	for _, d := range Dependencies(a) {
		id := g.add(KindDependency, d.Kind+":"+d.URI, d.Kind+": "+d.URI, map[string]string{"kind": d.Kind, "uri": d.URI, "description": d.Description})
		g.link(agent, id, EdgeDependsOn, nil)
	}
}

// addKey adds a key node, identified by its thumbprint (by its kid when the thumbprint is unknown).
func (g *Graph) addKey(kid, thumbprint, alg, added string) string {
	key, label := "thumbprint:"+thumbprint, "kid "+kid
	if thumbprint == "" {
		key = "kid:" + kid
	}
	var details []string
	if alg != "" {
		details = append(details, alg)
	}
	if thumbprint != "" {
		details = append(details, "thumbprint "+thumbprint[:min(len(thumbprint), 12)])
	}
	if len(details) > 0 {
		label += " (" + strings.Join(details, ", ") + ")"
	}
	return g.add(KindKey, key, label, map[string]string{"kid": kid, "thumbprint": thumbprint, "algorithm": alg, "add_time": added})
}

// sort orders nodes by kind then ID (the agent first) and edges by source node, kind and target.
func (g *Graph) sort() {
	slices.SortStableFunc(g.Nodes, func(a, b Node) int {
		return cmp.Or(cmp.Compare(kindRank[a.Kind], kindRank[b.Kind]), cmp.Compare(a.ID, b.ID))
	})
	for i, n := range g.Nodes {
		g.index[n.ID] = i
	}
	slices.SortStableFunc(g.Edges, func(a, b Edge) int {
		return cmp.Or(cmp.Compare(g.index[a.From], g.index[b.From]), cmp.Compare(edgeRank[a.Kind], edgeRank[b.Kind]), cmp.Compare(g.index[a.To], g.index[b.To]))
	})
}

// enumName is a proto enum value's name without prefix, lowercased; "" for the zero value.
func enumName(e protoreflect.Enum, prefix string) string {
	if e.Number() == 0 {
		return ""
	}
	d := e.Descriptor().Values().ByNumber(e.Number())
	if d == nil {
		return strconv.Itoa(int(e.Number()))
	}
	return strings.ToLower(strings.TrimPrefix(string(d.Name()), prefix))
}

func timeString(t time.Time, ok bool) string {
	if !ok {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}
