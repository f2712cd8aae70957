package app_test

import (
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/names"
	"github.com/agentid/agentid/pkg/testkit"
	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/registry/internal/registry"
)

// The monitor's agent.active event (as services/monitor/internal/ingest publishes it) moves the
// agent's last_active_time, and with it the inactive_since filter, in the running registry.
func TestActivityMovesLastActiveTime(t *testing.T) {
	n := testkit.StartNATS(t)
	store := eventstore.New(n.JetStream(t), eventstore.WithSource("agentid/monitor"))
	if err := store.EnsureStreams(t.Context()); err != nil {
		t.Fatal(err)
	}
	seedAgents(t, n, 1)
	id := names.DeriveAgentID("acme", "seed-0")
	var logs lockedBuffer
	c, _, _ := startRegistry(t, n, &logs)
	ctx := testkit.WithBearer(t.Context(), "admin")
	hour := time.Now().UTC().Truncate(time.Hour)
	inactive := &registryv1.ListAgentsRequest{InactiveSince: timestamppb.New(hour.Add(-time.Hour))}
	if ids, _ := listing(t, c, inactive); len(ids) != 1 {
		t.Fatalf("before any activity, inactive agents %v, want the agent registered in March", ids)
	}

	_, err := store.PublishWithID(t.Context(), uuid.NewString(), registry.ActivitySubject("acme"), registry.EventAgentActive, registry.AgentName("acme", id),
		&monitorv1.HourlyActivity{Hour: timestamppb.New(hour)}, eventstore.Metadata{Tenant: "acme", Actor: eventstore.Actor{ID: "monitor", Kind: eventstore.ActorService}})
	if err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 0, "last_active_time moves to the hour of the activity", func() (bool, error) {
		a, err := c.GetAgent(ctx, &registryv1.GetAgentRequest{Name: registry.AgentName("acme", id)})
		if err != nil {
			return false, err
		}
		return a.GetAgent().GetLastActiveTime().AsTime().Equal(hour), nil
	})
	if ids, _ := listing(t, c, inactive); len(ids) != 0 {
		t.Fatalf("after activity this hour, inactive agents %v, want none", ids)
	}
}
