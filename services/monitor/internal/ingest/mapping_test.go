package ingest_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/agentid/agentid/pkg/eventstore"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
	policyv1 "github.com/agentid/agentid/proto/gen/go/agentid/policy/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/monitor/internal/ingest"
	"github.com/agentid/agentid/services/monitor/internal/store"
)

var at = time.Date(2031, 5, 6, 7, 8, 9, 0, time.UTC)

// envelope builds the event a consumer would receive for payload m.
func envelope(t *testing.T, typ, subject string, m proto.Message, md eventstore.Metadata) eventstore.Event {
	t.Helper()
	data, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return eventstore.Event{
		ID: "01a2192e-aaaa-7000-8000-000000000001", Type: typ, Source: "agentid/test", Subject: subject, Time: at,
		Metadata: md, ExpectedVersion: eventstore.AnyVersion, Stream: eventstore.StreamTelemetry, Sequence: 42,
		DataSchema: string(m.ProtoReflect().Descriptor().FullName()), Data: data,
	}
}

func decodeDetail(t *testing.T, s string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatalf("detail %q is not a JSON object: %v", s, err)
	}
	return m
}

func TestMap(t *testing.T) {
	issuedMD := eventstore.Metadata{Tenant: "acme", Actor: eventstore.Actor{ID: "faq", Kind: eventstore.ActorAgent}, CorrelationID: "req-1"}
	input, err := structpb.NewStruct(map[string]any{
		"tenant": "acme", "now": "2031-05-06T07:08:09Z",
		"agent": map[string]any{"environment": "ENVIRONMENT_PROD", "scopes": []any{"payment.initiate", "ledger.read"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		event      eventstore.Event
		want       store.Event // Detail is compared as JSON through wantDetail
		wantDetail map[string]any
	}{
		{
			name: "token issued",
			event: envelope(t, "token.requested", "tenants/acme/clients/faq", &issuerv1.TokenRequested{
				Tenant: "acme", ClientId: "faq", Agent: "tenants/acme/agents/faq", GrantType: "client_credentials",
				Outcome: issuerv1.TokenOutcome_TOKEN_OUTCOME_ISSUED, Scopes: []string{"kb.read"}, Audiences: []string{"urn:agentid:api"},
				TokenId: "tok-1", ExpireTime: timestamppb.New(at.Add(10 * time.Minute)), Environment: "dev", RequestId: "req-1", RemoteAddr: "127.0.0.1:5555",
			}, issuedMD),
			want: store.Event{EventID: "01a2192e-aaaa-7000-8000-000000000001", Time: at, Tenant: "acme", Agent: "tenants/acme/agents/faq",
				Kind: "token.requested", Outcome: "issued", Actor: "faq", Environment: "dev", Scopes: []string{"kb.read"}, RequestID: "req-1", StreamSeq: 42,
				ClientID: "faq", Resource: "urn:agentid:api", SourceAddress: "127.0.0.1", TokenID: "tok-1", TokenExpires: at.Add(10 * time.Minute)},
			wantDetail: map[string]any{"grant_type": "client_credentials", "token_id": "tok-1", "audiences": []any{"urn:agentid:api"},
				"expire_time": "2031-05-06T07:18:09Z", "remote_addr": "127.0.0.1:5555"},
		},
		{
			name: "token denied to an unknown client",
			event: envelope(t, "token.requested", "tenants/acme", &issuerv1.TokenRequested{
				Tenant: "acme", ClientId: "ghost", GrantType: "client_credentials", Outcome: issuerv1.TokenOutcome_TOKEN_OUTCOME_DENIED,
				Error: "invalid_client", RequestId: "req-2",
			}, eventstore.Metadata{Tenant: "acme", CorrelationID: "req-2"}),
			want: store.Event{EventID: "01a2192e-aaaa-7000-8000-000000000001", Time: at, Tenant: "acme", Kind: "token.requested",
				Outcome: "invalid_client", Actor: "ghost", ClientID: "ghost", RequestID: "req-2", StreamSeq: 42},
			wantDetail: map[string]any{"grant_type": "client_credentials", "error": "invalid_client"},
		},
		{
			name: "policy decision",
			event: envelope(t, "policy.decided", "tenants/acme/agents/pay", &policyv1.DecisionRecorded{
				Tenant: "acme", DecisionPoint: "admission", Subject: "tenants/acme/agents/pay", Input: input, RequestId: "provision/acme/pay",
				Decision: &policyv1.Decision{DecisionId: "d-1", Outcome: policyv1.Outcome_OUTCOME_REQUIRE_APPROVAL,
					Reasons: []string{"r1", "r2"}, RequiredApprovals: []string{"owner", "security"}, BundleVersion: "sha256:ab"},
			}, eventstore.Metadata{Tenant: "acme", Actor: eventstore.Actor{ID: "lifecycle-worker", Kind: eventstore.ActorService}, CorrelationID: "corr-9"}),
			want: store.Event{EventID: "01a2192e-aaaa-7000-8000-000000000001", Time: at, Tenant: "acme", Agent: "tenants/acme/agents/pay",
				Kind: "policy.decided", Outcome: "require_approval", Actor: "lifecycle-worker", Environment: "prod",
				Scopes: []string{"payment.initiate", "ledger.read"}, RequestID: "provision/acme/pay", StreamSeq: 42},
			wantDetail: map[string]any{"decision_point": "admission", "decision_id": "d-1", "bundle_version": "sha256:ab",
				"reasons": []any{"r1", "r2"}, "required_approvals": []any{"owner", "security"}},
		},
		{
			name: "dry-run policy decision is marked as one",
			event: envelope(t, "policy.decided", "tenants/acme/agents/pay", &policyv1.DecisionRecorded{
				Tenant: "acme", DecisionPoint: "admission", Subject: "tenants/acme/agents/pay", DryRun: true,
				Decision: &policyv1.Decision{DecisionId: "d-3", Outcome: policyv1.Outcome_OUTCOME_DENY, Reasons: []string{"r"}, BundleVersion: "sha256:ab"},
			}, eventstore.Metadata{Tenant: "acme", Actor: eventstore.Actor{ID: "alice", Kind: eventstore.ActorHuman}, CorrelationID: "corr-10"}),
			want: store.Event{EventID: "01a2192e-aaaa-7000-8000-000000000001", Time: at, Tenant: "acme", Agent: "tenants/acme/agents/pay",
				Kind: "policy.decided", Outcome: "deny", Actor: "alice", RequestID: "corr-10", StreamSeq: 42},
			wantDetail: map[string]any{"decision_point": "admission", "decision_id": "d-3", "bundle_version": "sha256:ab",
				"reasons": []any{"r"}, "dry_run": true},
		},
		{
			name: "policy decision without an outcome is a deny",
			event: envelope(t, "policy.decided", "", &policyv1.DecisionRecorded{Tenant: "acme", Decision: &policyv1.Decision{DecisionId: "d-2"}},
				eventstore.Metadata{Tenant: "acme"}),
			want:       store.Event{EventID: "01a2192e-aaaa-7000-8000-000000000001", Time: at, Tenant: "acme", Kind: "policy.decided", Outcome: "deny", StreamSeq: 42},
			wantDetail: map[string]any{"decision_point": "", "decision_id": "d-2", "bundle_version": "", "reasons": []any{}},
		},
		{
			name: "other event keeps its payload",
			event: envelope(t, "agent.activated", "tenants/acme/agents/faq", &registryv1.AgentActivated{Name: "tenants/acme/agents/faq"},
				eventstore.Metadata{Tenant: "acme", Actor: eventstore.Actor{ID: "alice", Kind: eventstore.ActorHuman}, OnBehalfOf: "bob", CorrelationID: "c"}),
			want: store.Event{EventID: "01a2192e-aaaa-7000-8000-000000000001", Time: at, Tenant: "acme", Agent: "tenants/acme/agents/faq",
				Kind: "agent.activated", Actor: "alice", OnBehalfOf: "bob", RequestID: "c", StreamSeq: 42},
			wantDetail: map[string]any{"name": "tenants/acme/agents/faq"},
		},
		{
			name:       "non-object payload is wrapped",
			event:      envelope(t, "note.added", "", wrapperspb.String("hello"), eventstore.Metadata{Tenant: "acme"}),
			want:       store.Event{EventID: "01a2192e-aaaa-7000-8000-000000000001", Time: at, Tenant: "acme", Kind: "note.added", StreamSeq: 42},
			wantDetail: map[string]any{"payload": "hello"},
		},
		{
			name: "unknown schema is kept with the decode error",
			event: func() eventstore.Event {
				e := envelope(t, "mystery.happened", "tenants/acme/agents/x", wrapperspb.String("x"), eventstore.Metadata{Tenant: "acme"})
				e.DataSchema = "agentid.future.v9.Mystery"
				return e
			}(),
			want: store.Event{EventID: "01a2192e-aaaa-7000-8000-000000000001", Time: at, Tenant: "acme", Agent: "tenants/acme/agents/x",
				Kind: "mystery.happened", StreamSeq: 42},
			wantDetail: map[string]any{"data_schema": "agentid.future.v9.Mystery"},
		},
		{
			name: "corrupt token payload is kept with the decode error",
			event: func() eventstore.Event {
				e := envelope(t, "token.requested", "", &issuerv1.TokenRequested{Tenant: "acme"}, eventstore.Metadata{Tenant: "acme"})
				e.Data = []byte{0xff, 0xff, 0xff}
				return e
			}(),
			want:       store.Event{EventID: "01a2192e-aaaa-7000-8000-000000000001", Time: at, Tenant: "acme", Kind: "token.requested", StreamSeq: 42},
			wantDetail: map[string]any{"data_schema": "agentid.issuer.v1.TokenRequested"},
		},
		{
			name: "tenant from the payload when the envelope has none",
			event: envelope(t, "token.requested", "", &issuerv1.TokenRequested{Tenant: "acme", ClientId: "c", Outcome: issuerv1.TokenOutcome_TOKEN_OUTCOME_ISSUED},
				eventstore.Metadata{}),
			want:       store.Event{EventID: "01a2192e-aaaa-7000-8000-000000000001", Time: at, Tenant: "acme", Kind: "token.requested", Outcome: "issued", Actor: "c", ClientID: "c", StreamSeq: 42},
			wantDetail: map[string]any{"grant_type": ""},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rows, err := ingest.Map(tt.event)
			if err != nil {
				t.Fatal(err)
			}
			if len(rows) != 1 {
				t.Fatalf("%d rows, want 1", len(rows))
			}
			got := rows[0]
			gotDetail := decodeDetail(t, got.Detail)
			if _, ok := tt.wantDetail["data_schema"]; ok {
				if gotDetail["decode_error"] == "" || gotDetail["decode_error"] == nil {
					t.Errorf("detail %v has no decode_error", gotDetail)
				}
				delete(gotDetail, "decode_error")
			}
			if !reflect.DeepEqual(gotDetail, tt.wantDetail) {
				t.Errorf("detail = %v, want %v", gotDetail, tt.wantDetail)
			}
			got.Detail = ""
			if !reflect.DeepEqual(got, tt.want) && !(slices.Equal(got.Scopes, tt.want.Scopes) && equalIgnoringScopes(got, tt.want)) {
				t.Errorf("row:\n got  %+v\n want %+v", got, tt.want)
			}
		})
	}
}

func equalIgnoringScopes(a, b store.Event) bool {
	a.Scopes, b.Scopes = nil, nil
	return reflect.DeepEqual(a, b)
}

func TestMapRejects(t *testing.T) {
	noTenant := envelope(t, "thing.happened", "", wrapperspb.String("x"), eventstore.Metadata{})
	if _, err := ingest.Map(noTenant); !errors.Is(err, ingest.ErrNoTenant) {
		t.Errorf("no tenant: err = %v, want ErrNoTenant", err)
	}
	noID := envelope(t, "thing.happened", "", wrapperspb.String("x"), eventstore.Metadata{Tenant: "acme"})
	noID.ID = ""
	if _, err := ingest.Map(noID); err == nil {
		t.Error("no id: accepted")
	}
}

func TestMapAccessRecorded(t *testing.T) {
	reporter := eventstore.Metadata{Tenant: "acme", Actor: eventstore.Actor{ID: "orders-api", Kind: eventstore.ActorService}, CorrelationID: "rpc-1"}
	allowed := &monitorv1.AccessEvent{
		EventId: "0190a000-0000-7000-8000-000000000001", Time: timestamppb.New(at.Add(-time.Second)), Tenant: "acme",
		Agent: "tenants/acme/agents/faq", ClientId: "faq", Subject: "faq", OnBehalfOf: "alice@acme.example", Environment: "prod",
		Resource: "/orders/42", Action: "GET", Scopes: []string{"orders.read"}, Outcome: monitorv1.AccessOutcome_ACCESS_OUTCOME_ALLOWED,
		Status: 200, ResponseBytes: 512, Rows: 3, Latency: durationpb.New(1500 * time.Microsecond), RequestId: "req-a",
		TraceId: "4bf92f3577b34da6a3ce929d0e0e4736", SourceAddress: "10.0.0.7:5123", TokenId: "jti-1", Audience: "https://orders.example",
		TokenBinding: "dpop",
	}
	denied := &monitorv1.AccessEvent{
		EventId: "0190a000-0000-7000-8000-000000000002", Time: timestamppb.New(at), Tenant: "acme",
		Resource: "/orders/43", Action: "DELETE", Outcome: monitorv1.AccessOutcome_ACCESS_OUTCOME_DENIED, Reason: "TOKEN_REVOKED", Status: 401,
	}
	foreign := &monitorv1.AccessEvent{
		EventId: "0190a000-0000-7000-8000-000000000003", Time: timestamppb.New(at), Tenant: "globex",
		Resource: "/x", Outcome: monitorv1.AccessOutcome_ACCESS_OUTCOME_ALLOWED,
	}
	const batchID = "0190a000-0000-7000-8000-0000000000ff"
	tests := []struct {
		name        string
		batch       *monitorv1.RecordAccessRequest
		wantIDs     []string
		wantSummary map[string]any // detail of the access.dropped row; nil when none is expected
	}{
		{
			name:  "every event a row",
			batch: &monitorv1.RecordAccessRequest{Parent: "tenants/acme", BatchId: batchID, Events: []*monitorv1.AccessEvent{allowed, denied}},
			wantIDs: []string{ingest.AccessRowID("01a2192e-aaaa-7000-8000-000000000001", allowed.GetEventId()),
				ingest.AccessRowID("01a2192e-aaaa-7000-8000-000000000001", denied.GetEventId())},
		},
		{
			name:  "losses counted in an access.dropped row",
			batch: &monitorv1.RecordAccessRequest{Parent: "tenants/acme", BatchId: batchID, Events: []*monitorv1.AccessEvent{allowed, foreign}, Dropped: 7},
			wantIDs: []string{ingest.AccessRowID("01a2192e-aaaa-7000-8000-000000000001", allowed.GetEventId()),
				"01a2192e-aaaa-7000-8000-000000000001"},
			wantSummary: map[string]any{"batch_id": batchID, "dropped": float64(7), "events": float64(2), "skipped_other_tenant": float64(1)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rows, err := ingest.Map(envelope(t, "access.recorded", "tenants/acme/clients/orders-api", tt.batch, reporter))
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, r := range rows {
				ids = append(ids, r.EventID)
			}
			if !slices.Equal(ids, tt.wantIDs) {
				t.Fatalf("row ids = %v, want %v", ids, tt.wantIDs)
			}
			for _, r := range rows {
				if r.Tenant != "acme" || r.StreamSeq != 42 {
					t.Errorf("row %s: tenant %q seq %d", r.EventID, r.Tenant, r.StreamSeq)
				}
				switch r.Kind {
				case ingest.KindAccess:
				case ingest.KindAccessDropped:
					if tt.wantSummary == nil {
						t.Fatalf("unexpected summary row %+v", r)
					}
					if got := decodeDetail(t, r.Detail); !reflect.DeepEqual(got, tt.wantSummary) {
						t.Errorf("summary detail = %v, want %v", got, tt.wantSummary)
					}
					if r.Actor != "orders-api" || r.Outcome != "dropped" || !r.Time.Equal(at) {
						t.Errorf("summary row = %+v", r)
					}
				default:
					t.Errorf("row of kind %q", r.Kind)
				}
			}
		})
	}

	rows, err := ingest.Map(envelope(t, "access.recorded", "tenants/acme/clients/orders-api",
		&monitorv1.RecordAccessRequest{Parent: "tenants/acme", BatchId: batchID, Events: []*monitorv1.AccessEvent{allowed, denied}}, reporter))
	if err != nil {
		t.Fatal(err)
	}
	a, d := rows[0], rows[1]
	want := store.Event{EventID: a.EventID, Time: at.Add(-time.Second), Tenant: "acme", Agent: "tenants/acme/agents/faq", Kind: "access",
		Outcome: "allowed", Actor: "faq", OnBehalfOf: "alice@acme.example", Environment: "prod", Scopes: []string{"orders.read"},
		RequestID: "req-a", StreamSeq: 42, ClientID: "faq", Resource: "/orders/42", Action: "GET", Bytes: 512, Rows: 3,
		SourceAddress: "10.0.0.7", LatencyUS: 1500, TraceID: "4bf92f3577b34da6a3ce929d0e0e4736", Reporter: "orders-api", TokenID: "jti-1"}
	wantDetail := map[string]any{"resource": "/orders/42", "action": "GET", "status": float64(200), "bytes": float64(512), "rows": float64(3),
		"latency_ms": 1.5, "batch_id": batchID, "event_id": allowed.GetEventId(), "reporter": "orders-api", "subject": "faq",
		"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "source_address": "10.0.0.7:5123", "token_id": "jti-1",
		"audience": "https://orders.example", "binding": "dpop"}
	if got := decodeDetail(t, a.Detail); !reflect.DeepEqual(got, wantDetail) {
		t.Errorf("allowed detail = %v\n want %v", got, wantDetail)
	}
	a.Detail = ""
	if !reflect.DeepEqual(a, want) {
		t.Errorf("allowed row:\n got  %+v\n want %+v", a, want)
	}
	if d.Outcome != "denied" || d.Actor != "" || d.Agent != "" || !d.Time.Equal(at) {
		t.Errorf("denied row = %+v", d)
	}
	if got := decodeDetail(t, d.Detail); got["reason"] != "TOKEN_REVOKED" || got["status"] != float64(401) || got["resource"] != "/orders/43" {
		t.Errorf("denied detail = %v", got)
	}
	if _, err := store.Normalize(rows); err != nil {
		t.Errorf("rows do not pass the store's validation: %v", err)
	}

	// The same batch under another event id (another reporter, or another batch) gets other rows.
	other := envelope(t, "access.recorded", "", &monitorv1.RecordAccessRequest{Parent: "tenants/acme", BatchId: batchID, Events: []*monitorv1.AccessEvent{allowed}}, reporter)
	other.ID = "01a2192e-bbbb-7000-8000-000000000002"
	if rows, err := ingest.Map(other); err != nil || rows[0].EventID == a.EventID {
		t.Errorf("another batch's row id = %v (err %v), must differ from %s", rows, err, a.EventID)
	}

	// A corrupt batch is kept as one row with the decode error; a batch without a tenant is refused.
	corrupt := envelope(t, "access.recorded", "", &monitorv1.RecordAccessRequest{}, reporter)
	corrupt.Data = []byte{0xff, 0xff, 0xff}
	if rows, err := ingest.Map(corrupt); err != nil || len(rows) != 1 || decodeDetail(t, rows[0].Detail)["decode_error"] == nil {
		t.Errorf("corrupt batch: rows %v, err %v", rows, err)
	}
	if _, err := ingest.Map(envelope(t, "access.recorded", "", &monitorv1.RecordAccessRequest{}, eventstore.Metadata{})); !errors.Is(err, ingest.ErrNoTenant) {
		t.Errorf("batch without tenant: err = %v, want ErrNoTenant", err)
	}
}
