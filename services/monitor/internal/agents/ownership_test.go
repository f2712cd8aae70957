package agents_test

import (
	"context"
	"testing"

	"github.com/agentid/agentid/pkg/eventstore"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/monitor/internal/agents"
)

// TestProjectionFollowsOwnership: a transfer changes the owner and sponsor telemetry is enriched
// with and keeps the state; an orphaning changes nothing; a re-driven old transfer changes nothing;
// a transfer of another tenant's agent is refused.
func TestProjectionFollowsOwnership(t *testing.T) {
	ctx := context.Background()
	p := agents.New()
	steps := []struct {
		ev          eventstore.Event
		owner, spon string
	}{
		{event(t, "acme", agents.EventAgentRegistered, 1, registration(etl)), "alice@acme.example", "carol@acme.example"},
		{event(t, "acme", agents.EventAgentActivated, 2, &registryv1.AgentActivated{Name: etl}), "alice@acme.example", "carol@acme.example"},
		{event(t, "acme", agents.EventAgentOrphaned, 3, &registryv1.AgentOrphaned{Name: etl, Principal: "alice@acme.example", Role: "owner"}),
			"alice@acme.example", "carol@acme.example"},
		{event(t, "acme", agents.EventAgentOwnershipTransferred, 4, &registryv1.AgentOwnershipTransferred{Name: etl,
			FromOwner: "alice@acme.example", ToOwner: "bob@acme.example", FromSponsor: "carol@acme.example", ToSponsor: "carol@acme.example"}),
			"bob@acme.example", "carol@acme.example"},
		{event(t, "acme", agents.EventAgentOwnershipTransferred, 3, &registryv1.AgentOwnershipTransferred{Name: etl, ToOwner: "mallory@acme.example"}),
			"bob@acme.example", "carol@acme.example"},
	}
	for _, st := range steps {
		if err := p.Apply(ctx, st.ev); err != nil {
			t.Fatalf("%s: %v", st.ev.Type, err)
		}
		info, ok := p.Lookup("acme", etl)
		if !ok || info.Owner != st.owner || info.Sponsor != st.spon || info.State != registryv1.AgentState_AGENT_STATE_ACTIVE && st.ev.Sequence > 1 {
			t.Fatalf("after %s (seq %d): %+v, want owner %s sponsor %s, ACTIVE", st.ev.Type, st.ev.Sequence, info, st.owner, st.spon)
		}
	}
	err := p.Apply(ctx, event(t, "globex", agents.EventAgentOwnershipTransferred, 9, &registryv1.AgentOwnershipTransferred{Name: etl, ToOwner: "eve@globex.example"}))
	if !eventstore.IsPermanent(err) {
		t.Fatalf("transfer of acme's agent in a globex event: %v, want a permanent refusal", err)
	}
	if info, _ := p.Lookup("acme", etl); info.Owner != "bob@acme.example" {
		t.Fatalf("owner after a refused event: %s", info.Owner)
	}
}
