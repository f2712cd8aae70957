package app_test

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/grpcx"
	"github.com/agentid/agentid/pkg/testkit"
	eventsv1 "github.com/agentid/agentid/proto/gen/go/agentid/events/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/registry/app"
)

func TestNewRequiresStore(t *testing.T) {
	if _, err := app.New(app.Config{}, app.Deps{}); err == nil {
		t.Fatal("New without a store succeeded")
	}
}

func TestAppServesAndEnsuresTenant(t *testing.T) {
	n := testkit.StartNATS(t)
	store := eventstore.New(n.JetStream(t), eventstore.WithSource("agentid/registry"))
	ctx := t.Context()
	if err := store.EnsureStreams(ctx); err != nil {
		t.Fatal(err)
	}
	a, err := app.New(app.Config{}, app.Deps{Store: store, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if a.Name() != "registry" {
		t.Fatalf("name %q", a.Name())
	}
	tasks := a.Tasks()
	if len(tasks) != 6 {
		t.Fatalf("%d tasks, want the tenants, agents, directories and activity read models, the orphan reactor and the discovery read model", len(tasks))
	}
	runCtx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, task := range tasks {
		wg.Go(func() {
			if err := task(runCtx); err != nil {
				t.Errorf("task: %v", err)
			}
		})
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
	rctx, rcancel := context.WithTimeout(ctx, testkit.DefaultWait)
	defer rcancel()
	if err := a.Ready(rctx); err != nil {
		t.Fatal(err)
	}

	for range 2 {
		if err := a.EnsureTenant(ctx, "default", "Default tenant"); err != nil {
			t.Fatal(err)
		}
	}
	evs, _, err := store.Load(ctx, "default", "tenant", "default")
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 1 || evs[0].Type != "tenant.created" || evs[0].Metadata.Actor != (eventstore.Actor{ID: app.DevActor, Kind: eventstore.ActorService}) {
		t.Fatalf("events of tenant default: %+v", evs)
	}

	srv := grpcx.NewServer(grpcx.ServerConfig{
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Verifier: testkit.StaticVerifier(map[string]*authn.Claims{
			"x": {Subject: "ops", Tenant: authn.SystemTenant, Roles: []string{"platform-admin"}},
		}),
	})
	a.RegisterGRPC(srv)
	client := registryv1.NewRegistryServiceClient(testkit.ServeGRPC(t, srv))
	resp, err := client.GetTenant(testkit.WithBearer(ctx, "x"), &registryv1.GetTenantRequest{Name: "tenants/default"})
	if err != nil || resp.GetTenant().GetDisplayName() != "Default tenant" {
		t.Fatalf("get tenant over gRPC: %v %v", resp, err)
	}

	// The tenants' event subscriptions are served beside the registry.
	events := eventsv1.NewEventsServiceClient(testkit.ServeGRPC(t, srv))
	sub, err := events.Subscribe(testkit.WithBearer(ctx, "x"), &eventsv1.SubscribeRequest{Parent: "tenants/default",
		Start: &eventsv1.SubscribeRequest_Position{Position: eventsv1.StartPosition_START_POSITION_EARLIEST}})
	if err != nil {
		t.Fatal(err)
	}
	ev, err := sub.Recv()
	if err != nil || !strings.Contains(string(ev.GetCloudEventJson()), `"type":"tenant.created"`) {
		t.Fatalf("subscribe to tenant default: %v %v", ev, err)
	}
}
