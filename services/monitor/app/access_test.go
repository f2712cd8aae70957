package app_test

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/testkit"
	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
	"github.com/agentid/agentid/services/monitor/app"
	"github.com/agentid/agentid/services/monitor/internal/ingest"
)

// accessEvent is an allowed request of agent faq in tenant acme, just now.
func accessEvent(resource string) *monitorv1.AccessEvent {
	return &monitorv1.AccessEvent{
		EventId: uuid.NewString(), Time: timestamppb.Now(), Tenant: "acme", Agent: "tenants/acme/agents/faq",
		ClientId: "faq", Subject: "faq", Environment: "prod", Resource: resource, Action: "GET",
		Scopes: []string{"orders.read"}, Outcome: monitorv1.AccessOutcome_ACCESS_OUTCOME_ALLOWED, Status: 200,
		ResponseBytes: 128, Latency: durationpb.New(2 * time.Millisecond), RequestId: "req-" + resource, TokenBinding: "bearer",
	}
}

func accessBatch(events ...*monitorv1.AccessEvent) *monitorv1.RecordAccessRequest {
	return &monitorv1.RecordAccessRequest{Parent: "tenants/acme", BatchId: uuid.NewString(), Events: events}
}

func (e *env) record(t *testing.T, token string, req *monitorv1.RecordAccessRequest) *monitorv1.RecordAccessResponse {
	t.Helper()
	resp, err := e.client.RecordAccess(testkit.WithBearer(t.Context(), token), req)
	if err != nil {
		t.Fatalf("RecordAccess: %v", err)
	}
	return resp
}

// accessRows waits until the monitor has committed everything on the TELEMETRY stream (its
// consumer acknowledges an event only after its rows are stored) and returns the tenant's access
// rows, which must be want.
func (e *env) accessRows(t *testing.T, want int) []*monitorv1.TelemetryEvent {
	t.Helper()
	js := e.es.JetStream()
	stream, err := js.Stream(t.Context(), eventstore.StreamTelemetry)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(testkit.DefaultWait)
	for {
		c, err := js.Consumer(t.Context(), eventstore.StreamTelemetry, ingest.ConsumerName)
		if err == nil {
			ci, err := c.Info(t.Context())
			if err == nil && ci.AckFloor.Stream >= info.State.LastSeq {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the monitor did not commit the stream up to %d", info.State.LastSeq)
		}
		time.Sleep(20 * time.Millisecond)
	}
	resp, err := e.client.ListTelemetryEvents(testkit.WithBearer(t.Context(), "platform-admin"),
		&monitorv1.ListTelemetryEventsRequest{Parent: "tenants/acme", Kind: "access", PageSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetEvents()) != want {
		t.Fatalf("%d access rows, want %d: %v", len(resp.GetEvents()), want, resp.GetEvents())
	}
	return resp.GetEvents()
}

func detailOf(t *testing.T, r *monitorv1.TelemetryEvent) map[string]any {
	t.Helper()
	var d map[string]any
	if err := json.Unmarshal([]byte(r.GetDetailJson()), &d); err != nil {
		t.Fatalf("detail of %s: %v", r.GetEventId(), err)
	}
	return d
}

func TestRecordAccessIsListedOnce(t *testing.T) {
	e := start(t, app.Config{})
	allowed := accessEvent("/orders/42")
	denied := accessEvent("/orders/43")
	denied.Outcome, denied.Reason, denied.Status = monitorv1.AccessOutcome_ACCESS_OUTCOME_DENIED, "INSUFFICIENT_SCOPE", 403
	denied.OnBehalfOf = "alice@acme.example"
	req := accessBatch(allowed, denied, allowed) // the repeated event counts once
	req.Dropped = 5

	if got := e.record(t, "acme-rs", req).GetAccepted(); got != 2 {
		t.Errorf("accepted = %d, want 2", got)
	}
	// A retry of the batch (a lost response, say) stores nothing twice.
	if got := e.record(t, "acme-rs", req).GetAccepted(); got != 2 {
		t.Errorf("retry accepted = %d, want 2", got)
	}
	rows := e.accessRows(t, 2)
	byResource := map[string]*monitorv1.TelemetryEvent{}
	for _, r := range rows {
		d := detailOf(t, r)
		byResource[d["resource"].(string)] = r
		if d["reporter"] != "orders-api" || d["batch_id"] != req.GetBatchId() {
			t.Errorf("detail of %s = %v", r.GetEventId(), d)
		}
	}
	a, d := byResource["/orders/42"], byResource["/orders/43"]
	if a == nil || a.GetOutcome() != "allowed" || a.GetActor() != "faq" || a.GetAgent() != "tenants/acme/agents/faq" ||
		a.GetEnvironment() != "prod" || !slices.Equal(a.GetScopes(), []string{"orders.read"}) || a.GetRequestId() != "req-/orders/42" ||
		!a.GetTime().AsTime().Equal(allowed.GetTime().AsTime().Truncate(time.Millisecond)) || a.GetTenant() != "acme" {
		t.Errorf("allowed row = %v", a)
	}
	if d == nil || d.GetOutcome() != "denied" || d.GetOnBehalfOf() != "alice@acme.example" {
		t.Errorf("denied row = %v", d)
	}

	// The agent filter finds them; the losses the reporter counted are one access.dropped row.
	e.list(t, &monitorv1.ListTelemetryEventsRequest{Parent: "tenants/acme", Kind: "access", Agent: "tenants/acme/agents/faq"}, 2)
	lost := e.list(t, &monitorv1.ListTelemetryEventsRequest{Parent: "tenants/acme", Kind: "access.dropped"}, 1).GetEvents()[0]
	var ld map[string]any
	if err := json.Unmarshal([]byte(lost.GetDetailJson()), &ld); err != nil || ld["dropped"] != float64(5) || lost.GetActor() != "orders-api" {
		t.Errorf("access.dropped row = %v (detail %v)", lost, ld)
	}
	// A reporter that lost everything since its last batch reports the count alone.
	if got := e.record(t, "acme-rs", &monitorv1.RecordAccessRequest{Parent: "tenants/acme", BatchId: uuid.NewString(), Dropped: 9}).GetAccepted(); got != 0 {
		t.Errorf("loss report accepted = %d, want 0", got)
	}
	e.list(t, &monitorv1.ListTelemetryEventsRequest{Parent: "tenants/acme", Kind: "access.dropped"}, 2)
	// Other tenants see none of it.
	e.record(t, "globex-rs", &monitorv1.RecordAccessRequest{Parent: "tenants/globex", BatchId: uuid.NewString(),
		Events: []*monitorv1.AccessEvent{{EventId: uuid.NewString(), Time: timestamppb.Now(), Tenant: "globex", Resource: "/x",
			Outcome: monitorv1.AccessOutcome_ACCESS_OUTCOME_ALLOWED}}})
	e.list(t, &monitorv1.ListTelemetryEventsRequest{Parent: "tenants/globex", Kind: "access"}, 1)
}

func TestRecordAccessRefusalsStoreNothing(t *testing.T) {
	e := start(t, app.Config{})
	foreign := accessEvent("/foreign")
	foreign.Tenant = "globex"
	noTime := accessEvent("/no-time")
	noTime.Time = nil
	tests := []struct {
		name      string
		token     string
		req       *monitorv1.RecordAccessRequest
		wantCode  codes.Code
		wantField string
	}{
		{name: "event of another tenant", token: "acme-rs", req: accessBatch(accessEvent("/a"), foreign), wantCode: codes.InvalidArgument, wantField: "events[1].tenant"},
		{name: "event without time", token: "acme-rs", req: accessBatch(noTime), wantCode: codes.InvalidArgument, wantField: "events[0].time"},
		{name: "bad batch id", token: "acme-rs", req: &monitorv1.RecordAccessRequest{Parent: "tenants/acme", BatchId: "b1", Events: []*monitorv1.AccessEvent{accessEvent("/b")}}, wantCode: codes.InvalidArgument, wantField: "batch_id"},
		{name: "analyst lacks the role", token: "acme-analyst", req: accessBatch(accessEvent("/c")), wantCode: codes.PermissionDenied},
		{name: "agent lacks the role", token: "acme-agent", req: accessBatch(accessEvent("/d")), wantCode: codes.PermissionDenied},
		{name: "auditor lacks the role", token: "acme-auditor", req: accessBatch(accessEvent("/e")), wantCode: codes.PermissionDenied},
		{name: "other tenant's resource server", token: "globex-rs", req: accessBatch(accessEvent("/f")), wantCode: codes.NotFound},
		{name: "other tenant's admin", token: "globex-admin", req: accessBatch(accessEvent("/g")), wantCode: codes.NotFound},
		{name: "no token", token: "", req: accessBatch(accessEvent("/h")), wantCode: codes.Unauthenticated},
		{name: "tenant-admin may report", token: "acme-admin", req: accessBatch(accessEvent("/ok-1")), wantCode: codes.OK},
		{name: "platform-admin may report", token: "platform-admin", req: accessBatch(accessEvent("/ok-2")), wantCode: codes.OK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.client.RecordAccess(testkit.WithBearer(t.Context(), tt.token), tt.req)
			if got := status.Code(err); got != tt.wantCode {
				t.Fatalf("code = %s, want %s (err %v)", got, tt.wantCode, err)
			}
			if tt.wantField != "" {
				if f := errs.FromStatus(err).Field; f != tt.wantField {
					t.Errorf("field = %q, want %q", f, tt.wantField)
				}
			}
		})
	}
	rows := e.accessRows(t, 2)
	for _, r := range rows {
		if res := detailOf(t, r)["resource"]; res != "/ok-1" && res != "/ok-2" {
			t.Errorf("a refused batch was stored: %v", r)
		}
	}
}

func TestRecordAccessStoreDownIsUnavailable(t *testing.T) {
	e := start(t, app.Config{})
	// The service works, and has looked up the stream's retention.
	e.record(t, "acme-rs", accessBatch(accessEvent("/before-outage")))
	e.accessRows(t, 1)

	req := accessBatch(accessEvent("/during-outage"))
	e.nats.Shutdown()
	_, err := e.client.RecordAccess(testkit.WithBearer(t.Context(), "acme-rs"), req)
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("RecordAccess with the event store down: %v, want Unavailable", err)
	}
	e.nats.Start(t)
	// The reporter retries with the same batch id: stored once, whatever reached the stream before.
	deadline := time.Now().Add(testkit.DefaultWait)
	for {
		_, err := e.client.RecordAccess(testkit.WithBearer(t.Context(), "acme-rs"), req)
		if err == nil {
			break
		}
		if status.Code(err) != codes.Unavailable || time.Now().After(deadline) {
			t.Fatalf("retry after the outage: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	rows := e.accessRows(t, 2)
	if r0, r1 := detailOf(t, rows[0])["resource"], detailOf(t, rows[1])["resource"]; r0 != "/during-outage" && r1 != "/during-outage" {
		t.Errorf("rows = %v", rows)
	}
}
