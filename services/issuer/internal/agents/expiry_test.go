package agents_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"

	"github.com/agentid/agentid/services/issuer/internal/agents"
)

// TestStateKeepsTheExpireTime: the expire time set at registration stays through every later event
// (activation, suspension, scope removals); an agent without one has none.
func TestStateKeepsTheExpireTime(t *testing.T) {
	exp := time.Date(2031, 5, 6, 7, 8, 9, 0, time.UTC)
	s := agents.NewState()
	ctx := context.Background()
	apply := func(seq uint64, typ string, msg proto.Message) {
		t.Helper()
		if err := s.Apply(ctx, event(t, typ, seq, msg)); err != nil {
			t.Fatalf("%s: %v", typ, err)
		}
	}
	if _, ok := s.ExpireTime(agentName); ok {
		t.Fatal("an unknown agent has an expire time")
	}
	apply(1, agents.EventAgentRegistered, &registryv1.AgentRegistered{Agent: &registryv1.Agent{Name: agentName, ExpireTime: timestamppb.New(exp)}})
	apply(2, agents.EventAgentActivated, &registryv1.AgentActivated{Name: agentName})
	apply(3, agents.EventAgentScopesRemoved, &registryv1.AgentScopesRemoved{Name: agentName, Scopes: []string{"kb.read"}})
	apply(4, agents.EventAgentSuspended, &registryv1.AgentSuspended{Name: agentName})
	if got, ok := s.ExpireTime(agentName); !ok || !got.Equal(exp) {
		t.Fatalf("ExpireTime = %v, %v; want %v", got, ok, exp)
	}
	other := agents.NewState()
	if err := other.Apply(ctx, event(t, agents.EventAgentRegistered, 1, registered(agentName))); err != nil {
		t.Fatal(err)
	}
	if got, ok := other.ExpireTime(agentName); ok {
		t.Fatalf("an agent registered without expire time has %v", got)
	}
}
