package access_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/eventstore"
	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
	"github.com/agentid/agentid/services/monitor/internal/access"
)

var now = time.Date(2031, 5, 6, 7, 8, 9, 0, time.UTC)

// published is one PublishWithID call.
type published struct {
	id, subject, typ, ceSubject string
	data                        proto.Message
	md                          eventstore.Metadata
}

// recorder is a Publisher that remembers what it stored, or fails with err.
type recorder struct {
	mu    sync.Mutex
	calls []published
	err   error
}

func (r *recorder) PublishWithID(_ context.Context, id, subject, typ, ceSubject string, data proto.Message, md eventstore.Metadata) (eventstore.Event, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return eventstore.Event{}, r.err
	}
	r.calls = append(r.calls, published{id: id, subject: subject, typ: typ, ceSubject: ceSubject, data: proto.Clone(data), md: md})
	return eventstore.Event{ID: id}, nil
}

func (r *recorder) stored() []published {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]published(nil), r.calls...)
}

const weekly = 7 * 24 * time.Hour

func newRecorder(t *testing.T, pub access.Publisher, retention access.RetentionFunc) *access.Recorder {
	t.Helper()
	if retention == nil {
		retention = func(context.Context) (time.Duration, error) { return weekly, nil }
	}
	r, err := access.New(access.Config{Publisher: pub, Retention: retention, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

var principals = map[string]*authn.Principal{
	"resource-server":          {ID: "orders-api", ClientID: "orders-api", Kind: authn.KindHuman, Tenant: "acme", Roles: []authn.Role{authn.RoleResourceServer}},
	"tenant-admin":             {ID: "alice", ClientID: "alice-cli", Kind: authn.KindHuman, Tenant: "acme", Roles: []authn.Role{authn.RoleTenantAdmin}},
	"platform-admin":           {ID: "root", ClientID: "root", Kind: authn.KindService, Tenant: authn.SystemTenant, Roles: []authn.Role{authn.RolePlatformAdmin}},
	"analyst":                  {ID: "ann", ClientID: "ann", Kind: authn.KindHuman, Tenant: "acme", Roles: []authn.Role{authn.RoleAnalyst}},
	"agent":                    {ID: "faq", ClientID: "faq", Kind: authn.KindAgent, Tenant: "acme"},
	"globex-rs":                {ID: "shop-api", ClientID: "shop-api", Kind: authn.KindHuman, Tenant: "globex", Roles: []authn.Role{authn.RoleResourceServer}},
	"system-resource-srv":      {ID: "sys-api", ClientID: "sys-api", Kind: authn.KindService, Tenant: authn.SystemTenant, Roles: []authn.Role{authn.RoleResourceServer}},
	"acme-platform-admin-role": {ID: "fake", ClientID: "fake", Kind: authn.KindHuman, Tenant: "acme", Roles: []authn.Role{authn.RolePlatformAdmin}},
}

func as(name string) context.Context {
	return authn.WithPrincipal(context.Background(), principals[name])
}

func event(id string) *monitorv1.AccessEvent {
	return &monitorv1.AccessEvent{
		EventId: id, Time: timestamppb.New(now.Add(-time.Second)), Tenant: "acme", Agent: "tenants/acme/agents/faq",
		ClientId: "faq", Subject: "faq", Environment: "prod", Resource: "/orders/42", Action: "GET",
		Scopes: []string{"orders.read"}, Outcome: monitorv1.AccessOutcome_ACCESS_OUTCOME_ALLOWED, Status: 200,
		ResponseBytes: 10, Latency: durationpb.New(time.Millisecond), RequestId: "req-1", TokenBinding: "bearer",
	}
}

const batchID = "0190a000-0000-7000-8000-0000000000ff"

func batch(events ...*monitorv1.AccessEvent) *monitorv1.RecordAccessRequest {
	if len(events) == 0 {
		events = []*monitorv1.AccessEvent{event("0190a000-0000-7000-8000-000000000001")}
	}
	return &monitorv1.RecordAccessRequest{Parent: "tenants/acme", BatchId: batchID, Events: events}
}

func TestRecordStoresOneEventPerBatch(t *testing.T) {
	pub := &recorder{}
	r := newRecorder(t, pub, nil)
	req := batch(event("0190a000-0000-7000-8000-000000000001"), event("0190a000-0000-7000-8000-000000000002"),
		event("0190a000-0000-7000-8000-000000000001")) // a duplicate within the batch counts once
	req.Dropped = 4
	md := eventstore.Metadata{CorrelationID: "rpc-1", Actor: eventstore.Actor{ID: "orders-api", Kind: eventstore.ActorHuman}}
	n, err := r.Record(as("resource-server"), md, req)
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Errorf("accepted = %d, want 2 distinct events", n)
	}
	calls := pub.stored()
	if len(calls) != 1 {
		t.Fatalf("%d publishes, want 1", len(calls))
	}
	c := calls[0]
	if c.subject != "telemetry.acme.access.recorded" || c.typ != access.EventType || c.ceSubject != "tenants/acme/clients/orders-api" {
		t.Errorf("published to %s as %s about %s", c.subject, c.typ, c.ceSubject)
	}
	if c.id != access.BatchEventID("acme", "orders-api", batchID) {
		t.Errorf("event id %s, want the batch's derived id", c.id)
	}
	if !proto.Equal(c.data, req) {
		t.Errorf("payload differs from the request:\n%v", c.data)
	}
	want := eventstore.Metadata{Tenant: "acme", CorrelationID: "rpc-1", Actor: eventstore.Actor{ID: "orders-api", Kind: eventstore.ActorService}}
	if c.md != want {
		t.Errorf("metadata = %+v, want %+v", c.md, want)
	}

	// A retry keeps the event id (the stream's duplicate window and the row ids make it a no-op);
	// another reporter's batch with the same batch id does not.
	if _, err := r.Record(as("resource-server"), md, req); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Record(as("tenant-admin"), eventstore.Metadata{}, req); err != nil {
		t.Fatal(err)
	}
	calls = pub.stored()
	if calls[1].id != calls[0].id {
		t.Errorf("retry stored under %s, first under %s", calls[1].id, calls[0].id)
	}
	if calls[2].id == calls[0].id || calls[2].md.Actor.ID != "alice-cli" || calls[2].md.Actor.Kind != eventstore.ActorHuman {
		t.Errorf("tenant-admin's batch: id %s (first %s), actor %+v", calls[2].id, calls[0].id, calls[2].md.Actor)
	}
}

func TestRecordAuthorization(t *testing.T) {
	tests := []struct {
		caller   string
		parent   string
		wantKind errs.Kind // KindInternal stands for success
	}{
		{caller: "resource-server", parent: "tenants/acme"},
		{caller: "tenant-admin", parent: "tenants/acme"},
		{caller: "platform-admin", parent: "tenants/acme"},
		{caller: "analyst", parent: "tenants/acme", wantKind: errs.KindPermissionDenied},
		{caller: "agent", parent: "tenants/acme", wantKind: errs.KindPermissionDenied},
		{caller: "globex-rs", parent: "tenants/acme", wantKind: errs.KindNotFound},
		{caller: "system-resource-srv", parent: "tenants/acme", wantKind: errs.KindNotFound},
		{caller: "acme-platform-admin-role", parent: "tenants/acme", wantKind: errs.KindPermissionDenied},
		{caller: "nobody", parent: "tenants/acme", wantKind: errs.KindUnauthenticated},
	}
	for _, tt := range tests {
		t.Run(tt.caller, func(t *testing.T) {
			pub := &recorder{}
			req := batch()
			req.Parent = tt.parent
			_, err := newRecorder(t, pub, nil).Record(as(tt.caller), eventstore.Metadata{}, req)
			if tt.wantKind == errs.KindInternal {
				if err != nil {
					t.Fatal(err)
				}
				if len(pub.stored()) != 1 {
					t.Fatal("nothing stored")
				}
				return
			}
			if errs.KindOf(err) != tt.wantKind {
				t.Fatalf("err = %v, want %s", err, tt.wantKind)
			}
			if len(pub.stored()) != 0 {
				t.Error("a refused batch was stored")
			}
		})
	}
}

func TestRecordRejectsMalformedBatches(t *testing.T) {
	const id1 = "0190a000-0000-7000-8000-000000000001"
	edit := func(f func(e *monitorv1.AccessEvent)) func(*monitorv1.RecordAccessRequest) {
		return func(r *monitorv1.RecordAccessRequest) {
			e := event("0190a000-0000-7000-8000-000000000002")
			f(e)
			r.Events = append(r.Events, e) // the second event is the bad one
		}
	}
	many := func(n int) []*monitorv1.AccessEvent {
		out := make([]*monitorv1.AccessEvent, n)
		for i := range out {
			out[i] = event(id1)
		}
		return out
	}
	tests := []struct {
		name      string
		edit      func(*monitorv1.RecordAccessRequest)
		wantField string
	}{
		{name: "missing parent", edit: func(r *monitorv1.RecordAccessRequest) { r.Parent = "" }, wantField: "parent"},
		{name: "malformed parent", edit: func(r *monitorv1.RecordAccessRequest) { r.Parent = "acme" }, wantField: "parent"},
		{name: "missing batch id", edit: func(r *monitorv1.RecordAccessRequest) { r.BatchId = "" }, wantField: "batch_id"},
		{name: "batch id not a UUID", edit: func(r *monitorv1.RecordAccessRequest) { r.BatchId = "batch-1" }, wantField: "batch_id"},
		{name: "batch id upper case", edit: func(r *monitorv1.RecordAccessRequest) { r.BatchId = strings.ToUpper(batchID) }, wantField: "batch_id"},
		{name: "batch id as URN", edit: func(r *monitorv1.RecordAccessRequest) { r.BatchId = "urn:uuid:" + batchID }, wantField: "batch_id"},
		{name: "no events and nothing dropped", edit: func(r *monitorv1.RecordAccessRequest) { r.Events = nil }, wantField: "events"},
		{name: "too many events", edit: func(r *monitorv1.RecordAccessRequest) { r.Events = many(access.MaxEvents + 1) }, wantField: "events"},
		{name: "negative dropped", edit: func(r *monitorv1.RecordAccessRequest) { r.Dropped = -1 }, wantField: "dropped"},
		{name: "event of another tenant", edit: edit(func(e *monitorv1.AccessEvent) { e.Tenant = "globex" }), wantField: "events[1].tenant"},
		{name: "event without tenant", edit: edit(func(e *monitorv1.AccessEvent) { e.Tenant = "" }), wantField: "events[1].tenant"},
		{name: "event id missing", edit: edit(func(e *monitorv1.AccessEvent) { e.EventId = "" }), wantField: "events[1].event_id"},
		{name: "event id not a UUID", edit: edit(func(e *monitorv1.AccessEvent) { e.EventId = "e-1" }), wantField: "events[1].event_id"},
		{name: "time missing", edit: edit(func(e *monitorv1.AccessEvent) { e.Time = nil }), wantField: "events[1].time"},
		{name: "time invalid", edit: edit(func(e *monitorv1.AccessEvent) { e.Time = &timestamppb.Timestamp{Nanos: -1} }), wantField: "events[1].time"},
		{name: "time far in the future", edit: edit(func(e *monitorv1.AccessEvent) { e.Time = timestamppb.New(now.Add(access.MaxFutureSkew + time.Second)) }), wantField: "events[1].time"},
		{name: "time more than an hour before receipt", edit: edit(func(e *monitorv1.AccessEvent) { e.Time = timestamppb.New(now.Add(-access.MaxPastAge - time.Second)) }), wantField: "events[1].time"},
		{name: "time older than the retention", edit: edit(func(e *monitorv1.AccessEvent) { e.Time = timestamppb.New(now.Add(-weekly - time.Second)) }), wantField: "events[1].time"},
		{name: "outcome unspecified", edit: edit(func(e *monitorv1.AccessEvent) { e.Outcome = monitorv1.AccessOutcome_ACCESS_OUTCOME_UNSPECIFIED }), wantField: "events[1].outcome"},
		{name: "outcome unknown", edit: edit(func(e *monitorv1.AccessEvent) { e.Outcome = 9 }), wantField: "events[1].outcome"},
		{name: "resource missing", edit: edit(func(e *monitorv1.AccessEvent) { e.Resource = "" }), wantField: "events[1].resource"},
		{name: "resource too long", edit: edit(func(e *monitorv1.AccessEvent) { e.Resource = "/" + strings.Repeat("a", access.MaxResourceLen) }), wantField: "events[1].resource"},
		{name: "resource with a control character", edit: edit(func(e *monitorv1.AccessEvent) { e.Resource = "/a\nb" }), wantField: "events[1].resource"},
		{name: "resource not UTF-8", edit: edit(func(e *monitorv1.AccessEvent) { e.Resource = "/\xff" }), wantField: "events[1].resource"},
		{name: "action too long", edit: edit(func(e *monitorv1.AccessEvent) { e.Action = strings.Repeat("A", access.MaxFieldLen+1) }), wantField: "events[1].action"},
		{name: "client id with an escape", edit: edit(func(e *monitorv1.AccessEvent) { e.ClientId = "faq\x1b[31m" }), wantField: "events[1].client_id"},
		{name: "reason too long", edit: edit(func(e *monitorv1.AccessEvent) { e.Reason = strings.Repeat("R", access.MaxFieldLen+1) }), wantField: "events[1].reason"},
		{name: "request id too long", edit: edit(func(e *monitorv1.AccessEvent) { e.RequestId = strings.Repeat("r", access.MaxRequestIDLen+1) }), wantField: "events[1].request_id"},
		{name: "agent of another tenant", edit: edit(func(e *monitorv1.AccessEvent) { e.Agent = "tenants/globex/agents/faq" }), wantField: "events[1].agent"},
		{name: "agent not a resource name", edit: edit(func(e *monitorv1.AccessEvent) { e.Agent = "faq" }), wantField: "events[1].agent"},
		{name: "unknown token binding", edit: edit(func(e *monitorv1.AccessEvent) { e.TokenBinding = "cookie" }), wantField: "events[1].token_binding"},
		{name: "too many scopes", edit: edit(func(e *monitorv1.AccessEvent) { e.Scopes = make([]string, access.MaxScopes+1) }), wantField: "events[1].scopes"},
		{name: "empty scope", edit: edit(func(e *monitorv1.AccessEvent) { e.Scopes = []string{""} }), wantField: "events[1].scopes"},
		{name: "scope with a space", edit: edit(func(e *monitorv1.AccessEvent) { e.Scopes = []string{"a b"} }), wantField: "events[1].scopes"},
		{name: "negative status", edit: edit(func(e *monitorv1.AccessEvent) { e.Status = -1 }), wantField: "events[1].status"},
		{name: "negative bytes", edit: edit(func(e *monitorv1.AccessEvent) { e.ResponseBytes = -1 }), wantField: "events[1].response_bytes"},
		{name: "negative rows", edit: edit(func(e *monitorv1.AccessEvent) { e.Rows = -1 }), wantField: "events[1].rows"},
		{name: "negative latency", edit: edit(func(e *monitorv1.AccessEvent) { e.Latency = durationpb.New(-time.Second) }), wantField: "events[1].latency"},
		{name: "batch too large to store", edit: func(r *monitorv1.RecordAccessRequest) {
			r.Events = many(access.MaxEvents)
			for _, e := range r.Events {
				e.Resource = "/" + strings.Repeat("x", access.MaxResourceLen-1)
			}
		}, wantField: "events"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pub := &recorder{}
			req := batch(event(id1))
			tt.edit(req)
			_, err := newRecorder(t, pub, nil).Record(as("resource-server"), eventstore.Metadata{}, req)
			var e *errs.Error
			if !errors.As(err, &e) || e.Kind != errs.KindInvalidArgument || e.Field != tt.wantField {
				t.Fatalf("err = %v, want InvalidArgument on %s", err, tt.wantField)
			}
			if len(pub.stored()) != 0 {
				t.Error("a malformed batch was stored")
			}
		})
	}
}

func TestRecordAcceptsTheLimits(t *testing.T) {
	e := event("0190a000-0000-7000-8000-000000000001")
	e.Time = timestamppb.New(now.Add(access.MaxFutureSkew))
	e.Resource = "/" + strings.Repeat("é", (access.MaxResourceLen-1)/2)
	e.Scopes = make([]string, access.MaxScopes)
	for i := range e.Scopes {
		e.Scopes[i] = "s"
	}
	e.Agent, e.ClientId, e.TokenBinding, e.Latency = "", "", "", nil // a denial without a valid token
	e.Outcome = monitorv1.AccessOutcome_ACCESS_OUTCOME_DENIED
	old := event("0190a000-0000-7000-8000-000000000002")
	old.Time = timestamppb.New(now.Add(-access.MaxPastAge + time.Second))
	pub := &recorder{}
	if _, err := newRecorder(t, pub, nil).Record(as("resource-server"), eventstore.Metadata{}, batch(e, old)); err != nil {
		t.Fatal(err)
	}
	if len(pub.stored()) != 1 {
		t.Error("not stored")
	}
}

func TestRecordAcceptsALossReportWithoutEvents(t *testing.T) {
	pub := &recorder{}
	req := &monitorv1.RecordAccessRequest{Parent: "tenants/acme", BatchId: batchID, Dropped: 12}
	n, err := newRecorder(t, pub, nil).Record(as("resource-server"), eventstore.Metadata{}, req)
	if err != nil || n != 0 {
		t.Fatalf("n = %d, err = %v", n, err)
	}
	if calls := pub.stored(); len(calls) != 1 || !proto.Equal(calls[0].data, req) {
		t.Errorf("stored %v", calls)
	}
}

func TestRecordStoreFailuresAreUnavailable(t *testing.T) {
	tests := []struct {
		name      string
		pub       *recorder
		retention access.RetentionFunc
		want      errs.Kind
	}{
		{name: "publish fails", pub: &recorder{err: errors.New("nats: timeout")}, want: errs.KindUnavailable},
		{name: "stream unreachable", pub: &recorder{}, retention: func(context.Context) (time.Duration, error) {
			return 0, errors.New("nats: no responders")
		}, want: errs.KindUnavailable},
		{name: "event refused by the store is a bug, not a retry", pub: &recorder{err: &eventstore.InvalidError{Field: "subject", Reason: "bad"}}, want: errs.KindInternal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := newRecorder(t, tt.pub, tt.retention).Record(as("resource-server"), eventstore.Metadata{}, batch())
			if err == nil || errs.KindOf(err) != tt.want || n != 0 {
				t.Fatalf("n = %d, err = %v, want %s", n, err, tt.want)
			}
			if len(tt.pub.stored()) != 0 {
				t.Error("stored despite the failure")
			}
		})
	}
}

func TestRecordLooksUpTheRetentionOncePerMinute(t *testing.T) {
	var lookups int
	clock := now
	r, err := access.New(access.Config{
		Publisher: &recorder{},
		Retention: func(context.Context) (time.Duration, error) { lookups++; return time.Hour, nil },
		Now:       func() time.Time { return clock },
	})
	if err != nil {
		t.Fatal(err)
	}
	old := batch()
	old.Events[0].Time = timestamppb.New(now.Add(-2 * time.Hour))
	for range 3 {
		if _, err := r.Record(as("resource-server"), eventstore.Metadata{}, old); errs.KindOf(err) != errs.KindInvalidArgument {
			t.Fatalf("event older than the stream's 1h retention: err = %v", err)
		}
	}
	clock = clock.Add(2 * time.Minute)
	if _, err := r.Record(as("resource-server"), eventstore.Metadata{}, batch()); err != nil {
		t.Fatal(err)
	}
	if lookups != 2 {
		t.Errorf("%d retention lookups, want 2 (cached for a minute)", lookups)
	}
}

func TestNewNeedsItsDependencies(t *testing.T) {
	if _, err := access.New(access.Config{}); err == nil {
		t.Error("New accepted an empty config")
	}
}
