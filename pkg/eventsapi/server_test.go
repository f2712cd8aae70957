package eventsapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/eventsapi"
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/grpcx"
	"github.com/agentid/agentid/pkg/testkit"
	eventsv1 "github.com/agentid/agentid/proto/gen/go/agentid/events/v1"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// The test tokens.
const (
	platformAdmin  = "platform-admin"
	acmeAdmin      = "acme-admin"
	acmeSubscriber = "acme-subscriber"
	acmeAuditor    = "acme-auditor"
	acmeAnalyst    = "acme-analyst"
	betaAdmin      = "beta-admin"
)

func claims(tenant, sub string, roles ...string) *authn.Claims {
	return &authn.Claims{Subject: sub, ClientID: sub, Tenant: tenant, Roles: roles, Audience: []string{authn.APIAudience}}
}

var verifier = testkit.StaticVerifier(map[string]*authn.Claims{
	platformAdmin:  claims(authn.SystemTenant, "ops", "platform-admin"),
	acmeAdmin:      claims("acme", "admin@acme.example", "tenant-admin"),
	acmeSubscriber: claims("acme", "siem-acme", "subscriber"),
	acmeAuditor:    claims("acme", "audit@acme.example", "auditor"),
	acmeAnalyst:    claims("acme", "analyst@acme.example", "analyst"),
	betaAdmin:      claims("beta", "admin@beta.example", "tenant-admin"),
})

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type harness struct {
	store  *eventstore.Store
	client eventsv1.EventsServiceClient
	logs   *syncBuffer
}

func newHarness(t *testing.T, cfg eventsapi.Config, opts ...grpc.ServerOption) *harness {
	t.Helper()
	n := testkit.StartNATS(t)
	js := n.JetStream(t)
	store := eventstore.New(js, eventstore.WithSource("agentid/test"), eventstore.WithLogger(slog.New(slog.DiscardHandler)))
	if err := store.EnsureStreams(t.Context()); err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, nil))
	cfg.JetStream, cfg.Logger = js, log
	api, err := eventsapi.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpcx.NewServer(grpcx.ServerConfig{Logger: log, Verifier: verifier}, opts...)
	api.Register(srv)
	conn := testkit.ServeGRPC(t, srv)
	return &harness{store: store, client: eventsv1.NewEventsServiceClient(conn), logs: logs}
}

var appended atomic.Int64

// appendEvent appends one event of aggregate aggType/aggID in tenant.
func (h *harness) appendEvent(t *testing.T, tenant, aggType, aggID, typ string, data proto.Message) eventstore.Event {
	t.Helper()
	e, err := h.store.Append(t.Context(), eventstore.Append{
		Tenant: tenant, AggregateType: aggType, AggregateID: aggID, ExpectedVersion: eventstore.AnyVersion,
		IdempotencyKey: fmt.Sprintf("req-%d", appended.Add(1)),
		Type: typ, Subject: "tenants/" + tenant + "/" + aggType + "s/" + aggID, Data: data,
		Metadata: eventstore.Metadata{Actor: eventstore.Actor{ID: "tester", Kind: eventstore.ActorHuman}},
	})
	if err != nil {
		t.Fatalf("append %s: %v", typ, err)
	}
	return e
}

func (h *harness) agentEvent(t *testing.T, tenant, agent, name string) eventstore.Event {
	t.Helper()
	return h.appendEvent(t, tenant, eventstore.AggregateAgent, agent, "agent."+name,
		&registryv1.AgentActivated{Name: "tenants/" + tenant + "/agents/" + agent})
}

func (h *harness) subscribe(t *testing.T, token string, req *eventsv1.SubscribeRequest) (grpc.ServerStreamingClient[eventsv1.SubscribeResponse], context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithTimeout(testkit.WithBearer(t.Context(), token), testkit.DefaultWait)
	t.Cleanup(cancel)
	s, err := h.client.Subscribe(ctx, req)
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	_, _ = s.Header() // the server sends its headers once the subscription is open (or fails)
	return s, cancel
}

// received is one delivered event, whatever its format.
type received struct {
	id, typ, tenant, cursor string
	ce                      map[string]any
	pe                      *eventsv1.Event
	raw                     []byte
}

// next returns the next event of s, skipping heartbeats.
func next(t *testing.T, s grpc.ServerStreamingClient[eventsv1.SubscribeResponse]) received {
	t.Helper()
	for {
		r, err := s.Recv()
		if err != nil {
			t.Fatalf("recv: %v", err)
		}
		raw, err := proto.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		switch p := r.GetPayload().(type) {
		case *eventsv1.SubscribeResponse_Heartbeat:
			continue
		case *eventsv1.SubscribeResponse_CloudEventJson:
			var ce map[string]any
			if err := json.Unmarshal(p.CloudEventJson, &ce); err != nil {
				t.Fatalf("cloud event is not JSON: %v: %s", err, p.CloudEventJson)
			}
			str := func(k string) string { v, _ := ce[k].(string); return v }
			return received{id: str("id"), typ: str("type"), tenant: str("tenant"), cursor: r.GetCursor(), ce: ce, raw: raw}
		case *eventsv1.SubscribeResponse_Event:
			return received{id: p.Event.GetId(), typ: p.Event.GetType(), tenant: p.Event.GetTenant(), cursor: r.GetCursor(), pe: p.Event, raw: raw}
		default:
			t.Fatalf("response without payload: %v", r)
		}
	}
}

// expectIDs reads len(want) events from s and checks their ids, in order.
func expectIDs(t *testing.T, s grpc.ServerStreamingClient[eventsv1.SubscribeResponse], want ...eventstore.Event) []received {
	t.Helper()
	var got []received
	for i, w := range want {
		r := next(t, s)
		if r.id != w.ID {
			t.Fatalf("event %d: got %s (%s, tenant %s), want %s (%s, tenant %s)", i, r.id, r.typ, r.tenant, w.ID, w.Type, w.Metadata.Tenant)
		}
		got = append(got, r)
	}
	return got
}

var earliest = &eventsv1.SubscribeRequest_Position{Position: eventsv1.StartPosition_START_POSITION_EARLIEST}

func TestSubscribeSeesOnlyItsTenant(t *testing.T) {
	h := newHarness(t, eventsapi.Config{})
	a1 := h.appendEvent(t, "acme", eventstore.AggregateTenant, "acme", "tenant.created", &registryv1.TenantCreated{})
	h.appendEvent(t, "beta", eventstore.AggregateTenant, "beta", "tenant.created", &registryv1.TenantCreated{})
	a2 := h.agentEvent(t, "acme", "a1", "registered")
	h.agentEvent(t, "beta", "b1", "registered")
	a3 := h.appendEvent(t, "acme", eventstore.AggregateClient, "c1", "client.created", &issuerv1.ClientCreated{})

	for _, token := range []string{acmeAdmin, acmeSubscriber, acmeAuditor, platformAdmin} {
		t.Run(token, func(t *testing.T) {
			s, _ := h.subscribe(t, token, &eventsv1.SubscribeRequest{Parent: "tenants/acme", Start: earliest})
			for _, r := range expectIDs(t, s, a1, a2, a3) {
				if r.tenant != "acme" {
					t.Errorf("event %s of tenant %q delivered to an acme subscription", r.id, r.tenant)
				}
			}
		})
	}

	// Live: a beta event is never delivered, the acme event after it is.
	s, _ := h.subscribe(t, acmeAdmin, &eventsv1.SubscribeRequest{Parent: "tenants/acme"})
	h.agentEvent(t, "beta", "b2", "registered")
	live := h.agentEvent(t, "acme", "a2", "registered")
	expectIDs(t, s, live)
}
