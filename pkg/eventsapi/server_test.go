package eventsapi_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

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
	return newHarnessServer(t, cfg, grpcx.ServerConfig{Verifier: verifier}, opts...)
}

// newHarnessServer is newHarness with the gRPC server's configuration (its Logger is the harness's).
func newHarnessServer(t *testing.T, cfg eventsapi.Config, scfg grpcx.ServerConfig, opts ...grpc.ServerOption) *harness {
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
	scfg.Logger = log
	srv := grpcx.NewServer(scfg, opts...)
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
		Type:           typ, Subject: "tenants/" + tenant + "/" + aggType + "s/" + aggID, Data: data,
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

func TestSubscribeFilters(t *testing.T) {
	// given is the same history in every case: names of events -> the events.
	given := func(t *testing.T, h *harness) map[string]eventstore.Event {
		ev := map[string]eventstore.Event{}
		ev["tc"] = h.appendEvent(t, "acme", eventstore.AggregateTenant, "acme", "tenant.created", &registryv1.TenantCreated{})
		ev["r1"] = h.agentEvent(t, "acme", "a1", "registered")
		ev["act1"] = h.agentEvent(t, "acme", "a1", "activated")
		ev["r2"] = h.agentEvent(t, "acme", "a2", "registered")
		ev["cc"] = h.appendEvent(t, "acme", eventstore.AggregateClient, "a1", "client.created", &issuerv1.ClientCreated{})
		h.agentEvent(t, "beta", "a1", "registered")
		return ev
	}
	tests := []struct {
		name   string
		req    *eventsv1.SubscribeRequest
		want   []string
		other  func(t *testing.T, h *harness)                  // a new event that does not match
		marker func(t *testing.T, h *harness) eventstore.Event // a new event that matches
	}{
		{
			name: "exact type", req: &eventsv1.SubscribeRequest{EventTypes: []string{"agent.registered"}},
			want:   []string{"r1", "r2"},
			other:  func(t *testing.T, h *harness) { h.agentEvent(t, "acme", "a2", "activated") },
			marker: func(t *testing.T, h *harness) eventstore.Event { return h.agentEvent(t, "acme", "a3", "registered") },
		},
		{
			name: "type prefix", req: &eventsv1.SubscribeRequest{EventTypes: []string{"agent."}},
			want: []string{"r1", "act1", "r2"},
			other: func(t *testing.T, h *harness) {
				h.appendEvent(t, "acme", eventstore.AggregateClient, "x", "client.created", &issuerv1.ClientCreated{})
			},
			marker: func(t *testing.T, h *harness) eventstore.Event { return h.agentEvent(t, "acme", "a4", "retired") },
		},
		{
			name: "two types", req: &eventsv1.SubscribeRequest{EventTypes: []string{"tenant.created", "client.created"}},
			want:  []string{"tc", "cc"},
			other: func(t *testing.T, h *harness) { h.agentEvent(t, "acme", "a5", "registered") },
			marker: func(t *testing.T, h *harness) eventstore.Event {
				return h.appendEvent(t, "acme", eventstore.AggregateClient, "y", "client.created", &issuerv1.ClientCreated{})
			},
		},
		{
			name: "aggregate type", req: &eventsv1.SubscribeRequest{AggregateType: "client"},
			want:  []string{"cc"},
			other: func(t *testing.T, h *harness) { h.agentEvent(t, "acme", "a6", "registered") },
			marker: func(t *testing.T, h *harness) eventstore.Event {
				return h.appendEvent(t, "acme", eventstore.AggregateClient, "z", "client.disabled", &issuerv1.ClientDisabled{})
			},
		},
		{
			name: "aggregate type and id", req: &eventsv1.SubscribeRequest{AggregateType: "agent", AggregateId: "a1"},
			want:   []string{"r1", "act1"},
			other:  func(t *testing.T, h *harness) { h.agentEvent(t, "acme", "a7", "registered") },
			marker: func(t *testing.T, h *harness) eventstore.Event { return h.agentEvent(t, "acme", "a1", "retired") },
		},
		{
			name: "aggregate id of every type", req: &eventsv1.SubscribeRequest{AggregateId: "a1"},
			want:   []string{"r1", "act1", "cc"},
			other:  func(t *testing.T, h *harness) { h.agentEvent(t, "beta", "a1", "activated") },
			marker: func(t *testing.T, h *harness) eventstore.Event { return h.agentEvent(t, "acme", "a1", "suspended") },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, eventsapi.Config{})
			ev := given(t, h)
			req := proto.CloneOf(tt.req)
			req.Parent, req.Start = "tenants/acme", earliest
			s, _ := h.subscribe(t, acmeAdmin, req)
			var want []eventstore.Event
			for _, name := range tt.want {
				want = append(want, ev[name])
			}
			expectIDs(t, s, want...)
			// Nothing else matches: a new event that does not match is skipped, the next one that does comes.
			tt.other(t, h)
			expectIDs(t, s, tt.marker(t, h))
		})
	}
}

func TestSubscribeInvalidRequests(t *testing.T) {
	h := newHarness(t, eventsapi.Config{})
	tests := []struct {
		name      string
		req       *eventsv1.SubscribeRequest
		wantField string
	}{
		{"no parent", &eventsv1.SubscribeRequest{}, "parent"},
		{"malformed parent", &eventsv1.SubscribeRequest{Parent: "acme"}, "parent"},
		{"wildcard in parent", &eventsv1.SubscribeRequest{Parent: "tenants/*"}, "parent"},
		{"wildcard type", &eventsv1.SubscribeRequest{Parent: "tenants/acme", EventTypes: []string{"agent.*"}}, "event_types"},
		{"full wildcard type", &eventsv1.SubscribeRequest{Parent: "tenants/acme", EventTypes: []string{">"}}, "event_types"},
		{"unknown aggregate type", &eventsv1.SubscribeRequest{Parent: "tenants/acme", AggregateType: "telemetry"}, "aggregate_type"},
		{"aggregate id with a dot", &eventsv1.SubscribeRequest{Parent: "tenants/acme", AggregateId: "a.>"}, "aggregate_id"},
		{"aggregate id wildcard", &eventsv1.SubscribeRequest{Parent: "tenants/acme", AggregateId: "*"}, "aggregate_id"},
		{"garbage cursor", &eventsv1.SubscribeRequest{Parent: "tenants/acme", Start: &eventsv1.SubscribeRequest_Cursor{Cursor: "!!"}}, "cursor"},
		{"unknown format", &eventsv1.SubscribeRequest{Parent: "tenants/acme", Format: 9}, "format"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := h.subscribe(t, platformAdmin, tt.req)
			_, err := s.Recv()
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("got %v, want InvalidArgument", err)
			}
			if f := fieldOf(err); f != tt.wantField {
				t.Errorf("field %q, want %q (%v)", f, tt.wantField, err)
			}
		})
	}
}

// fieldOf returns the field named by an InvalidArgument status's BadRequest detail.
func fieldOf(err error) string {
	for _, d := range status.Convert(err).Details() {
		if br, ok := d.(*errdetails.BadRequest); ok && len(br.GetFieldViolations()) > 0 {
			return br.GetFieldViolations()[0].GetField()
		}
	}
	return ""
}

func TestSubscribeResumeFromCursor(t *testing.T) {
	h := newHarness(t, eventsapi.Config{})
	var all []eventstore.Event
	for i := range 3 {
		all = append(all, h.agentEvent(t, "acme", fmt.Sprintf("a%d", i), "registered"))
		all = append(all, h.appendEvent(t, "acme", eventstore.AggregateClient, fmt.Sprintf("c%d", i), "client.created", &issuerv1.ClientCreated{}))
		h.agentEvent(t, "beta", fmt.Sprintf("b%d", i), "registered")
	}
	total := len(all)
	for cut := 1; cut <= total; cut++ {
		t.Run(fmt.Sprintf("after %d", cut), func(t *testing.T) {
			s, cancel := h.subscribe(t, acmeSubscriber, &eventsv1.SubscribeRequest{Parent: "tenants/acme", Start: earliest})
			got := expectIDs(t, s, all[:cut]...)
			cancel()
			s, _ = h.subscribe(t, acmeSubscriber, &eventsv1.SubscribeRequest{Parent: "tenants/acme",
				Start: &eventsv1.SubscribeRequest_Cursor{Cursor: got[cut-1].cursor}})
			// Exactly the events after the cursor: no gap, no duplicate, then a new one.
			expectIDs(t, s, all[cut:]...)
			marker := h.agentEvent(t, "acme", fmt.Sprintf("m%d", cut), "registered")
			expectIDs(t, s, marker)
			all = append(all, marker)
		})
	}
}

func TestSubscribeHeartbeatCursorResumes(t *testing.T) {
	h := newHarness(t, eventsapi.Config{HeartbeatInterval: 20 * time.Millisecond})
	h.agentEvent(t, "acme", "old", "registered")
	s, cancel := h.subscribe(t, acmeAdmin, &eventsv1.SubscribeRequest{Parent: "tenants/acme"})
	var cur string
	for cur == "" {
		r, err := s.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if r.GetHeartbeat() == nil {
			t.Fatalf("a new-only subscription delivered %v before anything was appended", r)
		}
		cur = r.GetCursor()
	}
	cancel()
	after := h.agentEvent(t, "acme", "new", "registered")
	s, _ = h.subscribe(t, acmeAdmin, &eventsv1.SubscribeRequest{Parent: "tenants/acme", Start: &eventsv1.SubscribeRequest_Cursor{Cursor: cur}})
	expectIDs(t, s, after)
}

func TestSubscribeFromTime(t *testing.T) {
	h := newHarness(t, eventsapi.Config{})
	h.agentEvent(t, "acme", "early", "registered")
	start := time.Now() // the streams' storage time, on this machine's clock
	c := h.appendEvent(t, "acme", eventstore.AggregateClient, "late", "client.created", &issuerv1.ClientCreated{})
	a := h.agentEvent(t, "acme", "later", "registered")
	s, _ := h.subscribe(t, acmeAdmin, &eventsv1.SubscribeRequest{Parent: "tenants/acme",
		Start: &eventsv1.SubscribeRequest_StartTime{StartTime: timestamppb.New(start)}})
	// Merged by event time across streams (AGENTS comes before CREDENTIALS in stream order).
	got := expectIDs(t, s, c, a)
	// The cursor of the first event holds no position for AGENTS yet: resuming from it starts AGENTS at
	// the subscription's start time, so the AGENTS event still comes, once.
	s, _ = h.subscribe(t, acmeAdmin, &eventsv1.SubscribeRequest{Parent: "tenants/acme", Start: &eventsv1.SubscribeRequest_Cursor{Cursor: got[0].cursor}})
	expectIDs(t, s, a)
	marker := h.agentEvent(t, "acme", "marker", "registered")
	expectIDs(t, s, marker)
}

func TestSubscribeCloudEventsJSON(t *testing.T) {
	h := newHarness(t, eventsapi.Config{})
	e := h.agentEvent(t, "acme", "a1", "activated")
	s, _ := h.subscribe(t, acmeAdmin, &eventsv1.SubscribeRequest{Parent: "tenants/acme", Start: earliest,
		Format: eventsv1.EventFormat_EVENT_FORMAT_CLOUDEVENTS_JSON})
	r := expectIDs(t, s, e)[0]
	for _, attr := range []string{"id", "source", "type", "specversion", "time", "subject", "datacontenttype"} {
		if v, _ := r.ce[attr].(string); v == "" {
			t.Errorf("CloudEvents attribute %q missing or not a string in %v", attr, r.ce)
		}
	}
	if r.ce["specversion"] != "1.0" || r.ce["type"] != "agent.activated" || r.ce["source"] != "agentid/test" ||
		r.ce["subject"] != "tenants/acme/agents/a1" || r.ce["datacontenttype"] != "application/json" {
		t.Errorf("attributes: %v", r.ce)
	}
	if ts, err := time.Parse(time.RFC3339Nano, r.ce["time"].(string)); err != nil || !ts.Equal(e.Time) {
		t.Errorf("time %v: %v, want %s", r.ce["time"], err, e.Time)
	}
	if ds, _ := r.ce["dataschema"].(string); ds != eventsapi.DataSchemaPrefix+"agentid.registry.v1.AgentActivated" {
		t.Errorf("dataschema %q", ds)
	}
	data, _ := r.ce["data"].(map[string]any)
	if data["name"] != "tenants/acme/agents/a1" {
		t.Errorf("data %v, want the payload as JSON", r.ce["data"])
	}
	// Extension attribute names: lower-case letters and digits only (CloudEvents 1.0).
	for k := range r.ce {
		for _, c := range k {
			if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
				t.Errorf("attribute name %q is not a valid CloudEvents name", k)
			}
		}
	}
}

func TestSubscribeNeverSendsSealedKeys(t *testing.T) {
	h := newHarness(t, eventsapi.Config{})
	secret := []byte("SEALED-PRIVATE-KEY-MATERIAL-0123456789")
	e := h.appendEvent(t, "acme", eventstore.AggregateSigningKey, "acme", "signingkey.created", &issuerv1.SigningKeyCreated{
		Key: &issuerv1.SigningKey{KeyId: "k1", Algorithm: "ES256", PublicJwk: `{"kty":"EC"}`}, SealedPrivateJwk: secret, KekId: "kek-1",
	})
	for _, format := range []eventsv1.EventFormat{eventsv1.EventFormat_EVENT_FORMAT_CLOUDEVENTS_JSON, eventsv1.EventFormat_EVENT_FORMAT_PROTOBUF} {
		t.Run(format.String(), func(t *testing.T) {
			s, _ := h.subscribe(t, acmeAdmin, &eventsv1.SubscribeRequest{Parent: "tenants/acme", Start: earliest, Format: format})
			r := expectIDs(t, s, e)[0]
			b64 := base64.StdEncoding.EncodeToString(secret)
			if bytes.Contains(r.raw, secret) || bytes.Contains(r.raw, []byte(b64)) || bytes.Contains(r.raw, []byte(b64[:20])) {
				t.Fatalf("sealed key material in the response: %q", r.raw)
			}
			var key *issuerv1.SigningKeyCreated
			switch format {
			case eventsv1.EventFormat_EVENT_FORMAT_PROTOBUF:
				key = &issuerv1.SigningKeyCreated{}
				if err := proto.Unmarshal(r.pe.GetData(), key); err != nil {
					t.Fatal(err)
				}
			default:
				b, _ := json.Marshal(r.ce["data"])
				key = &issuerv1.SigningKeyCreated{}
				if err := protojson.Unmarshal(b, key); err != nil {
					t.Fatal(err)
				}
			}
			if len(key.GetSealedPrivateJwk()) != 0 || key.GetKey().GetKeyId() != "k1" || key.GetKey().GetPublicJwk() == "" {
				t.Errorf("payload %v: want the public key without the sealed private key", key)
			}
		})
	}
}

func TestSubscribeAuthorization(t *testing.T) {
	h := newHarness(t, eventsapi.Config{})
	tests := []struct {
		name  string
		token string
		want  codes.Code
	}{
		{"no token", "", codes.Unauthenticated},
		{"unknown token", "forged", codes.Unauthenticated},
		{"analyst", acmeAnalyst, codes.PermissionDenied},
		{"admin of another tenant", betaAdmin, codes.NotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := h.subscribe(t, tt.token, &eventsv1.SubscribeRequest{Parent: "tenants/acme", Start: earliest})
			if _, err := s.Recv(); status.Code(err) != tt.want {
				t.Fatalf("got %v, want %s", err, tt.want)
			}
		})
	}
}

func TestSubscribeLimitsConcurrentStreamsPerCaller(t *testing.T) {
	h := newHarness(t, eventsapi.Config{MaxStreamsPerCaller: 1})
	e := h.agentEvent(t, "acme", "a1", "registered")
	s1, cancel1 := h.subscribe(t, acmeSubscriber, &eventsv1.SubscribeRequest{Parent: "tenants/acme", Start: earliest})
	expectIDs(t, s1, e)
	s2, _ := h.subscribe(t, acmeSubscriber, &eventsv1.SubscribeRequest{Parent: "tenants/acme", Start: earliest})
	if _, err := s2.Recv(); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("second subscription: got %v, want ResourceExhausted", err)
	}
	// Another caller is not affected.
	s3, _ := h.subscribe(t, acmeAdmin, &eventsv1.SubscribeRequest{Parent: "tenants/acme", Start: earliest})
	expectIDs(t, s3, e)
	// Once the first ends, the slot is free again.
	cancel1()
	testkit.Eventually(t, testkit.DefaultWait, "the slot to be released", func() (bool, error) {
		s, err := h.client.Subscribe(testkit.WithBearer(t.Context(), acmeSubscriber), &eventsv1.SubscribeRequest{Parent: "tenants/acme", Start: earliest})
		if err != nil {
			return false, err
		}
		_, err = s.Recv()
		return err == nil, nil
	})
}

// Every subscription opens consumers that outlive it (no identity may delete them): a caller that
// opens and closes subscriptions in a loop is refused beyond its start rate; others are not.
func TestSubscribeLimitsHowFastACallerStartsSubscriptions(t *testing.T) {
	h := newHarness(t, eventsapi.Config{SubscribeRate: 0.001, SubscribeBurst: 2})
	e := h.agentEvent(t, "acme", "a1", "registered")
	for range 2 {
		s, cancel := h.subscribe(t, acmeSubscriber, &eventsv1.SubscribeRequest{Parent: "tenants/acme", Start: earliest})
		expectIDs(t, s, e)
		cancel()
	}
	s, _ := h.subscribe(t, acmeSubscriber, &eventsv1.SubscribeRequest{Parent: "tenants/acme", Start: earliest})
	_, err := s.Recv()
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(status.Convert(err).Message(), "per second") {
		t.Fatalf("third subscription in a row: got %v, want ResourceExhausted naming the start rate", err)
	}
	other, _ := h.subscribe(t, acmeAdmin, &eventsv1.SubscribeRequest{Parent: "tenants/acme", Start: earliest})
	expectIDs(t, other, e)
}

func TestSubscribeCutsOffSlowSubscriber(t *testing.T) {
	h := newHarness(t, eventsapi.Config{SendBuffer: 1, SlowSubscriberTimeout: 50 * time.Millisecond},
		grpc.InitialWindowSize(64<<10), grpc.InitialConnWindowSize(64<<10))
	big := strings.Repeat("x", 200<<10)
	const n = 12 // 2.4 MB: far beyond the flow-control windows and the send buffer
	for i := range n {
		h.appendEvent(t, "acme", eventstore.AggregateAgent, fmt.Sprintf("a%d", i), "agent.activated", &registryv1.AgentActivated{Name: big})
	}
	s, _ := h.subscribe(t, acmeAdmin, &eventsv1.SubscribeRequest{Parent: "tenants/acme", Start: earliest})
	// Read nothing until the server has given up on this subscriber.
	testkit.Eventually(t, testkit.DefaultWait, "the slow subscriber to be cut off", func() (bool, error) {
		return strings.Contains(h.logs.String(), "event subscriber cut off"), nil
	})
	got := 0
	for {
		_, err := s.Recv()
		if err == nil {
			got++
			continue
		}
		if status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("after %d events: got %v, want ResourceExhausted", got, err)
		}
		break
	}
	if got >= n {
		t.Errorf("received all %d events, want a cut-off before", got)
	}
}

// endsWith reads s until it ends and checks that it ends Unauthenticated with reason.
func endsWith(t *testing.T, s grpc.ServerStreamingClient[eventsv1.SubscribeResponse], reason string) {
	t.Helper()
	for {
		_, err := s.Recv()
		if err == nil {
			continue // events and heartbeats until the end
		}
		st := status.Convert(err)
		if st.Code() != codes.Unauthenticated {
			t.Fatalf("subscription ended with %v, want Unauthenticated %s", err, reason)
		}
		for _, d := range st.Details() {
			if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetReason() == reason {
				return
			}
		}
		t.Fatalf("subscription ended with %v (details %v), want reason %s", err, st.Details(), reason)
	}
}

func TestSubscriptionEndsWhenItsTokenIsRevoked(t *testing.T) {
	tests := []struct {
		name      string
		heartbeat time.Duration // the subscription's heartbeats recheck the token
		recheck   time.Duration // and so does the server on its own
	}{
		{name: "at a heartbeat", heartbeat: 20 * time.Millisecond, recheck: time.Hour},
		{name: "at the server's periodic recheck", heartbeat: time.Hour, recheck: 20 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			deny := authn.NewDenylist(authn.DenylistConfig{})
			issued := time.Now().Add(-time.Minute)
			tokenClaims := claims("acme", "siem-acme", "subscriber")
			tokenClaims.IssuedAt, tokenClaims.Expiry = issued, issued.Add(time.Hour)
			static := testkit.StaticVerifier(map[string]*authn.Claims{"siem": tokenClaims})
			// As a JWKSVerifier with Revocations does: the claims, then the denylist.
			revocable := authn.VerifierFunc(func(ctx context.Context, raw string) (*authn.Claims, error) {
				c, err := static.Verify(ctx, raw)
				if err != nil {
					return nil, err
				}
				if err := deny.Check(c, ""); err != nil {
					return nil, err
				}
				return c, nil
			})
			h := newHarnessServer(t, eventsapi.Config{HeartbeatInterval: tt.heartbeat},
				grpcx.ServerConfig{Verifier: revocable, StreamRecheckInterval: tt.recheck})
			s, _ := h.subscribe(t, "siem", &eventsv1.SubscribeRequest{Parent: "tenants/acme"})
			// The subscription is live, and the rechecks of a valid token do not end it.
			first := h.agentEvent(t, "acme", "a1", "activated")
			expectIDs(t, s, first)

			now := time.Now()
			if err := deny.Apply(&issuerv1.TokensRevoked{
				Target: issuerv1.RevocationTarget_REVOCATION_TARGET_CLIENT, Tenant: "acme", ClientId: "siem-acme",
				NotBefore: timestamppb.New(now), ExpireTime: timestamppb.New(now.Add(time.Hour)),
			}, 1); err != nil {
				t.Fatal(err)
			}
			endsWith(t, s, authn.ReasonTokenRevoked)
		})
	}
}

func TestSubscriptionEndsAtItsTokensExpiry(t *testing.T) {
	exp := time.Now().Add(1500 * time.Millisecond)
	tokenClaims := claims("acme", "siem-acme", "subscriber")
	tokenClaims.IssuedAt, tokenClaims.Expiry = time.Now(), exp
	h := newHarnessServer(t, eventsapi.Config{HeartbeatInterval: time.Hour},
		grpcx.ServerConfig{Verifier: testkit.StaticVerifier(map[string]*authn.Claims{"short": tokenClaims}),
			StreamRecheckInterval: time.Hour})
	s, _ := h.subscribe(t, "short", &eventsv1.SubscribeRequest{Parent: "tenants/acme"})
	endsWith(t, s, authn.ReasonTokenExpired)
	if now := time.Now(); now.Before(exp) {
		t.Errorf("subscription ended %s before its token's exp", exp.Sub(now))
	}
}
