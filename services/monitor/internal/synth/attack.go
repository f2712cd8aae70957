package synth

import (
	"strconv"
	"time"

	"github.com/agentid/agentid/services/monitor/internal/store"
)

// AttackKind names an attack an injector produces.
type AttackKind int

// Attacks.
const (
	// BulkExport: a read-only analytics agent exports 1000 times its median rows per request
	// (Requests requests, default 5) from its usual network and resources.
	BulkExport AttackKind = iota + 1
	// NewNetwork: the agent's credential is used from a network it never used (a token request and
	// Requests accesses, default 10).
	NewNetwork
	// ScopeProbing: the agent asks for scopes it was never granted and its accesses are refused
	// (Requests denied token requests and accesses, default 60).
	ScopeProbing
	// VolumeSpike: the agent makes Requests normal-looking requests within the hour (default 20
	// times its expected hourly volume, at least 500).
	VolumeSpike
	// Ghost: an unregistered client (client id "ghost-<n>", no agent name) makes Requests requests
	// (default 5).
	Ghost
	// SuspendedActivity: the agent makes Requests normal requests (default 3); the test's registry
	// lookup says the agent is suspended.
	SuspendedActivity
	// DelegationOutside: the (Support) agent acts for a user it never acted for (Requests requests,
	// default 3), and for one of its users on a resource that user's delegations never touched.
	DelegationOutside
)

// String names the attack.
func (k AttackKind) String() string {
	switch k {
	case BulkExport:
		return "bulk_export"
	case NewNetwork:
		return "new_network"
	case ScopeProbing:
		return "scope_probing"
	case VolumeSpike:
		return "volume_spike"
	case Ghost:
		return "ghost"
	case SuspendedActivity:
		return "suspended_activity"
	case DelegationOutside:
		return "delegation_outside"
	}
	return "attack-" + strconv.Itoa(int(k))
}

// Attack is one injected attack.
type Attack struct {
	// Kind is what happens.
	Kind AttackKind
	// Agent is the index of the target agent in Generator.Agents (ignored by Ghost).
	Agent int
	// At is when it starts; its events fall in the next 10 minutes (VolumeSpike: the rest of the
	// hour).
	At time.Time
	// Requests is how many requests it makes (0: the kind's default).
	Requests int
}

// Attack returns the events of at in time order (the injector Run merges in).
func (g *Generator) Attack(at Attack) []store.Event { return g.inject(at) }

func (g *Generator) inject(at Attack) []store.Event {
	r := stream(g.cfg.Seed, 4, uint64(at.Kind)<<40|uint64(at.At.Unix()))
	var a *Agent
	if at.Kind != Ghost {
		if at.Agent < 0 || at.Agent >= len(g.Agents) {
			return nil
		}
		a = g.Agents[at.Agent]
	}
	n := at.Requests
	start := at.At.UTC()
	span := 10 * time.Minute
	var out []store.Event
	id := func(i int) string {
		return "atk-" + at.Kind.String() + "-" + strconv.Itoa(at.Agent) + "-" + strconv.FormatInt(start.Unix(), 36) + "-" + strconv.Itoa(i)
	}
	at0 := func(i, of int) time.Time {
		return start.Add(time.Duration(int64(span) * int64(i) / int64(max(of, 1)))).Truncate(time.Millisecond)
	}
	switch at.Kind {
	case BulkExport:
		n = or(n, 5)
		for i := range n {
			e := g.request(r, a, start.Truncate(time.Hour), 0)
			e.EventID, e.Time, e.Kind, e.Outcome, e.Action = id(i), at0(i, n), store.KindAccess, "allowed", "GET"
			e.Resource, e.OnBehalfOf = a.Resources[0], ""
			e.Rows = int64(1000 * a.RowsMedian)
			e.Bytes = int64(float64(e.Rows) * a.bytesRow)
			out = append(out, e)
		}
	case NewNetwork:
		n = or(n, 10)
		for i := range n + 1 {
			e := g.request(r, a, start.Truncate(time.Hour), 0)
			e.EventID, e.Time = id(i), at0(i, n+1)
			e.SourceAddress = "203.0.113." + strconv.Itoa(10+i%5)
			e.SourceNetwork = "203.0.113.0/24"
			if i == 0 {
				e.Kind, e.Outcome, e.Resource, e.Rows, e.Bytes, e.OnBehalfOf, e.Action = store.KindTokenRequested, "issued", "https://api.example.com", 0, 0, "", ""
			}
			out = append(out, e)
		}
	case ScopeProbing:
		n = or(n, 60)
		probes := []string{"admin:write", "users:delete", "billing:read", "secrets:read", "keys:rotate"}
		for i := range n {
			e := g.request(r, a, start.Truncate(time.Hour), 0)
			e.EventID, e.Time, e.Rows, e.Bytes = id(i), at0(i, n), 0, 0
			if i%3 == 0 {
				e.Kind, e.Outcome, e.Resource, e.OnBehalfOf, e.Action = store.KindTokenRequested, "invalid_scope", "https://api.example.com", "", ""
				e.Scopes = append(append([]string(nil), a.Scopes...), probes[(i/3)%len(probes)])
			} else {
				e.Kind, e.Outcome, e.Action = store.KindAccess, "denied", "GET"
				e.Resource = "/admin/" + probes[i%len(probes)]
			}
			out = append(out, e)
		}
	case VolumeSpike:
		n = or(n, max(500, int(20*a.Expected(start))))
		span = start.Truncate(time.Hour).Add(time.Hour).Sub(start)
		for i := range n {
			e := g.request(r, a, start.Truncate(time.Hour), 0)
			e.EventID, e.Time = id(i), at0(i, n)
			out = append(out, e)
		}
	case Ghost:
		n = or(n, 5)
		client := "ghost-" + strconv.Itoa(at.Agent)
		for i := range n {
			e := store.Event{
				EventID: id(i), Time: at0(i, n), Tenant: g.cfg.Tenant, Kind: store.KindAccess, Outcome: "allowed",
				Actor: client, ClientID: client, AgentKnown: false, Resource: "/reports/finance", Action: "GET",
				Rows: 50, Bytes: 20000, SourceAddress: "198.51.100.7", SourceNetwork: "198.51.100.0/24",
			}
			if i == 0 {
				e.Kind, e.Outcome, e.Resource, e.Rows, e.Bytes, e.Action = store.KindTokenRequested, "invalid_client", "https://api.example.com", 0, 0, ""
			}
			out = append(out, e)
		}
	case SuspendedActivity:
		n = or(n, 3)
		for i := range n {
			e := g.request(r, a, start.Truncate(time.Hour), 0)
			e.EventID, e.Time = id(i), at0(i, n)
			out = append(out, e)
		}
	case DelegationOutside:
		n = or(n, 3)
		for i := range n + 1 {
			e := g.request(r, a, start.Truncate(time.Hour), 0)
			e.EventID, e.Time, e.Kind, e.Outcome = id(i), at0(i, n+1), store.KindAccess, "allowed"
			if i < n {
				e.OnBehalfOf = "mallory" + strconv.Itoa(at.Agent) + "@example.com"
			} else if len(a.Users) > 0 {
				e.OnBehalfOf = a.Users[0]
				e.Resource = a.Resources[untouched(a, 0)]
			}
			out = append(out, e)
		}
	}
	return out
}

// untouched returns the index of a resource of a that user u's delegations never touch (the last
// one if every resource is touched).
func untouched(a *Agent, u int) int {
	touched := map[int]bool{}
	for _, i := range a.UserResources[u] {
		touched[i] = true
	}
	for i := range a.Resources {
		if !touched[i] {
			return i
		}
	}
	return len(a.Resources) - 1
}

func or(n, def int) int {
	if n > 0 {
		return n
	}
	return def
}
