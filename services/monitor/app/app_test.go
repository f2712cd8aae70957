package app_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/grpcx"
	"github.com/agentid/agentid/pkg/testkit"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
	policyv1 "github.com/agentid/agentid/proto/gen/go/agentid/policy/v1"
	"github.com/agentid/agentid/services/monitor/app"
)

var quiet = slog.New(slog.DiscardHandler)

// principals are the callers of the tests, by bearer token.
var principals = map[string]*authn.Claims{
	"platform-admin": {Subject: "root-operator", Tenant: authn.SystemTenant, Roles: []string{"platform-admin"}},
	"acme-admin":     {Subject: "alice@acme.example", Tenant: "acme", Roles: []string{"tenant-admin"}},
	"acme-auditor":   {Subject: "bob@acme.example", Tenant: "acme", Roles: []string{"auditor"}},
	"acme-analyst":   {Subject: "ann@acme.example", Tenant: "acme", Roles: []string{"analyst"}},
	"acme-owner":     {Subject: "olga@acme.example", Tenant: "acme", Roles: []string{"owner"}},
	"acme-approver":  {Subject: "pat@acme.example", Tenant: "acme", Roles: []string{"approver"}},
	"acme-agent":     {Subject: "faq", ClientID: "faq", Tenant: "acme", Agent: "tenants/acme/agents/faq", Scope: "kb.read"},
	"globex-admin":   {Subject: "carol@globex.example", Tenant: "globex", Roles: []string{"tenant-admin"}},
	"acme-rs":        {Subject: "orders-api", ClientID: "orders-api", Tenant: "acme", Roles: []string{"resource-server"}},
	"globex-rs":      {Subject: "shop-api", ClientID: "shop-api", Tenant: "globex", Roles: []string{"resource-server"}},
	"system-auditor": {Subject: "sys-audit", Tenant: authn.SystemTenant, Roles: []string{"auditor"}},
}

type env struct {
	client monitorv1.MonitorServiceClient
	es     *eventstore.Store
	nats   *testkit.NATS
}

// start runs the monitor service (gRPC over bufconn, ingest task) on an embedded NATS.
func start(t *testing.T, cfg app.Config) *env {
	t.Helper()
	n := testkit.StartNATS(t)
	js := n.JetStream(t)
	es := eventstore.New(js, eventstore.WithSource("agentid/issuer"), eventstore.WithLogger(quiet))
	if err := es.EnsureStreams(t.Context()); err != nil {
		t.Fatal(err)
	}
	a, err := app.New(cfg, app.Deps{Store: es, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if a.Name() != "monitor" || len(a.Tasks()) == 0 {
		t.Fatalf("Name() = %q, %d tasks", a.Name(), len(a.Tasks()))
	}
	ctx, cancel := context.WithCancel(context.Background())
	tasks := a.Tasks()
	done := make(chan error, len(tasks))
	for _, task := range tasks {
		go func() { done <- task(ctx) }()
	}

	srv := grpcx.NewServer(grpcx.ServerConfig{Logger: quiet, Verifier: testkit.StaticVerifier(principals)})
	a.RegisterGRPC(srv)
	t.Cleanup(func() {
		cancel()
		for range tasks {
			if err := <-done; err != nil {
				t.Errorf("task: %v", err)
			}
		}
		if err := a.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	conn := testkit.ServeGRPC(t, srv)
	return &env{client: monitorv1.NewMonitorServiceClient(conn), es: es, nats: n}
}

func (e *env) publishToken(t *testing.T, tenant, agent, clientID string) eventstore.Event {
	t.Helper()
	ev, err := e.es.Publish(t.Context(), "telemetry."+tenant+".token.requested", "token.requested", agent, &issuerv1.TokenRequested{
		Tenant: tenant, ClientId: clientID, Agent: agent, GrantType: "client_credentials",
		Outcome: issuerv1.TokenOutcome_TOKEN_OUTCOME_ISSUED, Scopes: []string{"kb.read"}, Environment: "dev",
	}, eventstore.Metadata{Tenant: tenant, CorrelationID: "req-" + clientID})
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// list polls as the platform admin until the request returns want events.
func (e *env) list(t *testing.T, req *monitorv1.ListTelemetryEventsRequest, want int) *monitorv1.ListTelemetryEventsResponse {
	t.Helper()
	deadline := time.Now().Add(testkit.DefaultWait)
	for {
		resp, err := e.client.ListTelemetryEvents(testkit.WithBearer(t.Context(), "platform-admin"), req)
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.GetEvents()) >= want || time.Now().After(deadline) {
			if len(resp.GetEvents()) != want {
				t.Fatalf("%d events, want %d", len(resp.GetEvents()), want)
			}
			return resp
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestListTelemetryEventsAuthorization(t *testing.T) {
	e := start(t, app.Config{})
	e.publishToken(t, "acme", "tenants/acme/agents/faq", "faq")
	e.list(t, &monitorv1.ListTelemetryEventsRequest{Parent: "tenants/acme"}, 1)

	tests := []struct {
		name      string
		token     string
		req       *monitorv1.ListTelemetryEventsRequest
		wantCode  codes.Code
		wantField string
	}{
		{name: "platform-admin", token: "platform-admin", req: &monitorv1.ListTelemetryEventsRequest{Parent: "tenants/acme"}, wantCode: codes.OK},
		{name: "tenant-admin", token: "acme-admin", req: &monitorv1.ListTelemetryEventsRequest{Parent: "tenants/acme"}, wantCode: codes.OK},
		{name: "auditor", token: "acme-auditor", req: &monitorv1.ListTelemetryEventsRequest{Parent: "tenants/acme"}, wantCode: codes.OK},
		{name: "analyst", token: "acme-analyst", req: &monitorv1.ListTelemetryEventsRequest{Parent: "tenants/acme"}, wantCode: codes.OK},
		{name: "owner lacks the role", token: "acme-owner", req: &monitorv1.ListTelemetryEventsRequest{Parent: "tenants/acme"}, wantCode: codes.PermissionDenied},
		{name: "approver lacks the role", token: "acme-approver", req: &monitorv1.ListTelemetryEventsRequest{Parent: "tenants/acme"}, wantCode: codes.PermissionDenied},
		{name: "agent lacks the role", token: "acme-agent", req: &monitorv1.ListTelemetryEventsRequest{Parent: "tenants/acme"}, wantCode: codes.PermissionDenied},
		{name: "other tenant's admin", token: "globex-admin", req: &monitorv1.ListTelemetryEventsRequest{Parent: "tenants/acme"}, wantCode: codes.NotFound},
		{name: "system auditor is no platform-admin", token: "system-auditor", req: &monitorv1.ListTelemetryEventsRequest{Parent: "tenants/acme"}, wantCode: codes.NotFound},
		{name: "no token", token: "", req: &monitorv1.ListTelemetryEventsRequest{Parent: "tenants/acme"}, wantCode: codes.Unauthenticated},
		{name: "bad token", token: "forged", req: &monitorv1.ListTelemetryEventsRequest{Parent: "tenants/acme"}, wantCode: codes.Unauthenticated},
		{name: "missing parent", token: "platform-admin", req: &monitorv1.ListTelemetryEventsRequest{}, wantCode: codes.InvalidArgument, wantField: "parent"},
		{name: "malformed parent", token: "platform-admin", req: &monitorv1.ListTelemetryEventsRequest{Parent: "acme"}, wantCode: codes.InvalidArgument, wantField: "parent"},
		{name: "agent of another tenant", token: "platform-admin", req: &monitorv1.ListTelemetryEventsRequest{Parent: "tenants/acme", Agent: "tenants/globex/agents/faq"}, wantCode: codes.InvalidArgument, wantField: "agent"},
		{name: "agent not a resource name", token: "platform-admin", req: &monitorv1.ListTelemetryEventsRequest{Parent: "tenants/acme", Agent: "faq"}, wantCode: codes.InvalidArgument, wantField: "agent"},
		{name: "negative page size", token: "platform-admin", req: &monitorv1.ListTelemetryEventsRequest{Parent: "tenants/acme", PageSize: -1}, wantCode: codes.InvalidArgument, wantField: "page_size"},
		{name: "bad page token", token: "platform-admin", req: &monitorv1.ListTelemetryEventsRequest{Parent: "tenants/acme", PageToken: "nope"}, wantCode: codes.InvalidArgument, wantField: "page_token"},
		{name: "bad start time", token: "platform-admin", req: &monitorv1.ListTelemetryEventsRequest{Parent: "tenants/acme", StartTime: &timestamppb.Timestamp{Nanos: -1}}, wantCode: codes.InvalidArgument, wantField: "start_time"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := e.client.ListTelemetryEvents(testkit.WithBearer(t.Context(), tt.token), tt.req)
			if got := status.Code(err); got != tt.wantCode {
				t.Fatalf("code = %s, want %s (err %v)", got, tt.wantCode, err)
			}
			if tt.wantCode != codes.OK {
				if f := errs.FromStatus(err).Field; tt.wantField != "" && f != tt.wantField {
					t.Errorf("field = %q, want %q", f, tt.wantField)
				}
				return
			}
			if len(resp.GetEvents()) != 1 || resp.GetEvents()[0].GetTenant() != "acme" {
				t.Errorf("events = %v", resp.GetEvents())
			}
		})
	}
}

func TestListTelemetryEventsEndToEnd(t *testing.T) {
	e := start(t, app.Config{DuckDBPath: filepath.Join(t.TempDir(), "data", "telemetry.duckdb")})
	var want []string // newest first
	for _, c := range []string{"a", "b", "c", "d", "e"} {
		ev := e.publishToken(t, "acme", "tenants/acme/agents/"+c, c)
		want = append([]string{ev.ID}, want...)
	}
	e.publishToken(t, "globex", "tenants/globex/agents/x", "x")
	dec, err := e.es.Publish(t.Context(), "telemetry.acme.policy.decided", "policy.decided", "tenants/acme/agents/a", &policyv1.DecisionRecorded{
		Tenant: "acme", DecisionPoint: "admission", Subject: "tenants/acme/agents/a",
		Decision: &policyv1.Decision{DecisionId: "d", Outcome: policyv1.Outcome_OUTCOME_DENY, Reasons: []string{"owner is missing"}},
	}, eventstore.Metadata{Tenant: "acme", Actor: eventstore.Actor{ID: "lifecycle-worker", Kind: eventstore.ActorService}})
	if err != nil {
		t.Fatal(err)
	}
	want = append([]string{dec.ID}, want...)

	all := e.list(t, &monitorv1.ListTelemetryEventsRequest{Parent: "tenants/acme", PageSize: 100}, 6)
	var got []string
	for _, ev := range all.GetEvents() {
		got = append(got, ev.GetEventId())
	}
	if !slices.Equal(got, want) {
		t.Errorf("ids = %v, want %v (newest first)", got, want)
	}
	first := all.GetEvents()[0]
	if first.GetKind() != "policy.decided" || first.GetOutcome() != "deny" || first.GetAgent() != "tenants/acme/agents/a" ||
		first.GetActor() != "lifecycle-worker" || !first.GetTime().AsTime().Equal(dec.Time.Truncate(time.Millisecond)) || first.GetDetailJson() == "" {
		t.Errorf("decision event = %v", first)
	}

	// Paging through the API, two at a time, with a filter.
	var paged []string
	req := &monitorv1.ListTelemetryEventsRequest{Parent: "tenants/acme", Kind: "token.requested", PageSize: 2}
	for range 10 {
		resp := e.list(t, req, min(2, 5-len(paged)))
		for _, ev := range resp.GetEvents() {
			paged = append(paged, ev.GetEventId())
		}
		if resp.GetNextPageToken() == "" {
			break
		}
		req.PageToken = resp.GetNextPageToken()
	}
	if !slices.Equal(paged, want[1:]) {
		t.Errorf("paged ids = %v, want %v", paged, want[1:])
	}

	byAgent := e.list(t, &monitorv1.ListTelemetryEventsRequest{Parent: "tenants/acme", Agent: "tenants/acme/agents/a"}, 2)
	for _, ev := range byAgent.GetEvents() {
		if ev.GetAgent() != "tenants/acme/agents/a" {
			t.Errorf("agent filter returned %v", ev)
		}
	}
	future := e.list(t, &monitorv1.ListTelemetryEventsRequest{Parent: "tenants/acme", StartTime: timestamppb.New(time.Now().Add(time.Hour))}, 0)
	if future.GetNextPageToken() != "" {
		t.Error("empty page with a next page token")
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	js := testkit.StartNATS(t).JetStream(t)
	es := eventstore.New(js)
	tests := []struct {
		name string
		cfg  app.Config
		deps app.Deps
	}{
		{name: "no event store", cfg: app.Config{}, deps: app.Deps{Logger: quiet}},
		{name: "path is a directory", cfg: app.Config{DuckDBPath: t.TempDir()}, deps: app.Deps{Store: es, Logger: quiet}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if a, err := app.New(tt.cfg, tt.deps); err == nil {
				_ = a.Close()
				t.Fatal("New accepted the config")
			}
		})
	}
}
