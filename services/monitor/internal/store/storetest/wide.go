package storetest

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/services/monitor/internal/store"
)

func testWideRoundTrip(t *testing.T, s store.Store) {
	v4 := store.Event{
		EventID: "wide-v4", Time: base, Tenant: "acme", Agent: "tenants/acme/agents/etl", Kind: store.KindAccess,
		Outcome: "allowed", Actor: "etl-client", OnBehalfOf: "alice@acme.example", Environment: "prod",
		Scopes: []string{"warehouse.read"}, RequestID: "req-w1", Detail: `{"status":200}`, StreamSeq: 42,
		Owner: "team-data@acme.example", AgentKnown: true, ClientID: "etl-client", Resource: "/warehouse/orders",
		Action: "GET", Bytes: 1 << 40, Rows: 123_456_789, SourceAddress: "10.20.30.40",
		SourceNetwork: "caller's value is replaced", LatencyUS: 1_500_000, TraceID: "4bf92f3577b34da6a3ce929d0e0e4736",
	}
	v6 := store.Event{
		EventID: "wide-v6", Time: base.Add(-time.Second), Tenant: "acme", Kind: store.KindTokenRequested,
		Outcome: "invalid_client", ClientID: "ghost-client", AgentKnown: false, Resource: "urn:agentid:api",
		SourceAddress: "2001:db8:abcd:12::1",
	}
	mapped := store.Event{
		EventID: "wide-mapped", Time: base.Add(-2 * time.Second), Tenant: "acme", Kind: store.KindAccess,
		AgentKnown: true, SourceAddress: "::ffff:192.0.2.77",
	}
	insert(t, s, v4, v6, mapped)
	got := listAll(t, s, store.Query{Tenant: "acme"})
	if len(got) != 3 {
		t.Fatalf("listed %d events, want 3", len(got))
	}
	tests := []struct {
		in          store.Event
		wantNetwork string
	}{
		{v4, "10.20.30.0/24"},
		{v6, "2001:db8:abcd::/48"},
		{mapped, "192.0.2.0/24"},
	}
	for i, tt := range tests {
		want := tt.in
		want.SourceNetwork = tt.wantNetwork
		if want.Detail == "" {
			want.Detail = store.EmptyDetail
		}
		if !equal(got[i], want) {
			t.Errorf("round trip of %s:\n got  %+v\n want %+v", tt.in.EventID, got[i], want)
		}
	}
}

func testWideBounds(t *testing.T, s store.Store) {
	long := strings.Repeat("x", store.MaxStringLen+1)
	tests := []struct {
		name      string
		mutate    func(e *store.Event)
		wantField string
	}{
		{"negative bytes", func(e *store.Event) { e.Bytes = -1 }, "events[1].bytes"},
		{"negative rows", func(e *store.Event) { e.Rows = -1 }, "events[1].rows"},
		{"negative latency", func(e *store.Event) { e.LatencyUS = -1 }, "events[1].latency_us"},
		{"source address with a port", func(e *store.Event) { e.SourceAddress = "10.0.0.1:443" }, "events[1].source_address"},
		{"source address a host name", func(e *store.Event) { e.SourceAddress = "evil.example" }, "events[1].source_address"},
		{"resource too long", func(e *store.Event) { e.Resource = strings.Repeat("r", store.MaxResourceLen+1) }, "events[1].resource"},
		{"owner too long", func(e *store.Event) { e.Owner = long }, "events[1].owner"},
		{"client id too long", func(e *store.Event) { e.ClientID = long }, "events[1].client_id"},
		{"trace id too long", func(e *store.Event) { e.TraceID = long }, "events[1].trace_id"},
		{"too many scopes", func(e *store.Event) { e.Scopes = make([]string, store.MaxScopes+1) }, "events[1].scopes"},
		{"scope too long", func(e *store.Event) { e.Scopes = []string{strings.Repeat("s", store.MaxScopeLen+1)} }, "events[1].scopes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bad := event("bad", time.Second)
			tt.mutate(&bad)
			err := s.Insert(context.Background(), []store.Event{event("good", 0), bad})
			if errs.KindOf(err) != errs.KindInvalidArgument {
				t.Fatalf("err = %v, want InvalidArgument", err)
			}
			if f := errs.FromStatus(err).Field; f != tt.wantField {
				t.Errorf("field = %q, want %q", f, tt.wantField)
			}
			if got := listAll(t, s, store.Query{Tenant: "acme"}); len(got) != 0 {
				t.Errorf("a failed batch stored %v", ids(got))
			}
		})
	}
	// At the bounds everything is accepted.
	ok := event("at-bounds", 0)
	ok.Resource = strings.Repeat("r", store.MaxResourceLen)
	ok.Owner = strings.Repeat("o", store.MaxStringLen)
	ok.Scopes = slices.Repeat([]string{strings.Repeat("s", store.MaxScopeLen)}, store.MaxScopes)
	insert(t, s, ok)
}
