package registry_test

import (
	"fmt"
	"slices"
	"testing"

	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/registry/internal/registry"
)

// TestPlatformIndexPages: the distinct owners and sponsors and the agents without one are read
// in pages that together list each exactly once, in order; orphaned agents and agents in other
// states are left out; a position the read model does not hold is refused.
func TestPlatformIndexPages(t *testing.T) {
	agents := registry.NewAgentProjection()
	x := registry.PlatformIndex{Agents: agents, Directories: registry.NewDirectoryProjection()}
	seq := 0
	apply := func(id, typ string, data *registryv1.Agent, orphan bool) {
		t.Helper()
		seq++
		var ch registry.Change
		if orphan {
			ch = registry.Change{Type: registry.EventAgentOrphaned, Data: &registryv1.AgentOrphaned{Name: registry.AgentName("acme", id), Principal: "p", Role: "owner"}}
		} else {
			ch = registry.Change{Type: typ, Data: &registryv1.AgentRegistered{Agent: data}}
		}
		ev := history(t, "acme", registry.AggregateAgent, id, ch)[0]
		ev.Sequence, ev.ID = uint64(seq), fmt.Sprintf("ev-%d", seq)
		if err := agents.Apply(t.Context(), ev); err != nil {
			t.Fatal(err)
		}
	}
	var unassigned []string
	for i := range 7 {
		id := fmt.Sprintf("agt_%02d", i)
		a := &registryv1.Agent{Name: registry.AgentName("acme", id), AgentId: id, Tenant: "acme",
			Owner: fmt.Sprintf("owner-%d@x", i%3), Sponsor: fmt.Sprintf("sponsor-%d@x", i%2)}
		switch i {
		case 1, 4:
			a.Sponsor = ""
		case 2:
			a.Owner = ""
		case 5:
			a.Sponsor = "" // orphaned below: reported as orphaned, not here
		}
		apply(id, registry.EventAgentRegistered, a, false)
		if i == 5 {
			apply(id, "", nil, true)
		}
		if (a.Owner == "" || a.Sponsor == "") && i != 5 {
			unassigned = append(unassigned, id)
		}
	}

	var principals []string
	after := ""
	for range 10 {
		page, more := x.AgentPrincipals("acme", after, 2)
		principals = append(principals, page...)
		if !more {
			break
		}
		after = page[len(page)-1]
	}
	want := []string{"owner-0@x", "owner-1@x", "owner-2@x", "sponsor-0@x", "sponsor-1@x"}
	if !slices.Equal(principals, want) {
		t.Fatalf("principals %v, want %v", principals, want)
	}

	states := []registryv1.AgentState{registryv1.AgentState_AGENT_STATE_PENDING}
	var got []string
	afterID := ""
	for range 10 {
		page, next, err := x.Unassigned("acme", states, afterID, 1)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range page {
			got = append(got, a.GetAgentId())
		}
		if next == "" {
			break
		}
		afterID = next
	}
	if !slices.Equal(got, unassigned) {
		t.Fatalf("unassigned %v, want %v", got, unassigned)
	}
	if page, _, err := x.Unassigned("acme", []registryv1.AgentState{registryv1.AgentState_AGENT_STATE_ACTIVE}, "", 10); err != nil || len(page) != 0 {
		t.Fatalf("unassigned ACTIVE agents: %v %v", page, err)
	}
	if _, _, err := x.Unassigned("acme", states, "agt_nope", 1); err == nil {
		t.Fatal("an unknown position is accepted")
	}
	if has, _ := x.PrincipalStatus("acme", "owner-0@x"); has {
		t.Fatal("a tenant without a directory has one")
	}
}
