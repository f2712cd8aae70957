// Package storetest is the contract suite every telemetry store implementation must pass.
package storetest

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/services/monitor/internal/store"
)

// base is the time of the suite's events: a fixed instant keeps failures reproducible.
var base = time.Date(2031, 3, 14, 15, 9, 26, 535_000_000, time.UTC)

// Run runs the contract suite; newStore returns an empty store, closed by the suite.
func Run(t *testing.T, newStore func(t *testing.T) store.Store) {
	open := func(t *testing.T) store.Store {
		t.Helper()
		s := newStore(t)
		t.Cleanup(func() {
			if err := s.Close(); err != nil {
				t.Errorf("close: %v", err)
			}
		})
		return s
	}
	tests := []struct {
		name string
		run  func(t *testing.T, s store.Store)
	}{
		{"InsertThenListRoundTripsEveryField", testRoundTrip},
		{"ReinsertIsANoOp", testReinsert},
		{"DuplicatesWithinABatchAreStoredOnce", testDuplicatesInBatch},
		{"EmptyInsertIsANoOp", testEmptyInsert},
		{"InvalidEventFailsTheWholeBatch", testInvalidBatch},
		{"TimesAreUTCMilliseconds", testUTC},
		{"NewestFirstThenEventIDDescending", testOrdering},
		{"Filters", testFilters},
		{"TenantsAreIsolated", testTenantIsolation},
		{"PagingCoversEverythingOnce", testPaging},
		{"PagingIsStableWhileNewerEventsArrive", testPagingStable},
		{"PageSizeDefaultsAndCap", testPageSizeDefaults},
		{"BadQueriesAreInvalidArguments", testBadQueries},
		{"ConcurrentInserts", testConcurrentInserts},
		{"WideRowRoundTrips", testWideRoundTrip},
		{"WideRowBoundsAreInvalidArguments", testWideBounds},
		{"AnalyticsValidateTheirArguments", analytics(testAnalyticsArguments)},
		{"AnalyticsHourly", analytics(testHourly)},
		{"AnalyticsUsage", analytics(testUsage)},
		{"AnalyticsUsageCountsScopesWhereUsed", analytics(testUsageOfScopes)},
		{"AnalyticsQuantiles", analytics(testQuantiles)},
		{"AnalyticsQuantilesSampleTheNewestRows", analytics(testQuantileSample)},
		{"AnalyticsLastActive", analytics(testLastActive)},
		{"AnalyticsLastActiveCountsOnlyActivity", analytics(testLastActiveCountsOnlyActivity)},
		{"AnalyticsTenants", analytics(testTenants)},
		{"AnalyticsHourlyBeforeStreamSeq", analytics(testHourlyBeforeStreamSeq)},
		{"AnalyticsUsageBeforeStreamSeq", analytics(testUsageBeforeStreamSeq)},
		{"AnalyticsQuantilesBeforeStreamSeq", analytics(testQuantilesBeforeStreamSeq)},
		{"AnalyticsLastActiveIgnoresBeforeStreamSeq", analytics(testLastActiveIgnoresBeforeStreamSeq)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.run(t, open(t)) })
	}
}

// analytics adapts a test of store.Analytics: a store that does not implement it fails.
func analytics(run func(t *testing.T, s store.Store, a store.Analytics)) func(t *testing.T, s store.Store) {
	return func(t *testing.T, s store.Store) {
		a, ok := s.(store.Analytics)
		if !ok {
			t.Fatalf("%T does not implement store.Analytics", s)
		}
		run(t, s, a)
	}
}

// event returns a valid event of tenant "acme" at base+offset.
func event(id string, offset time.Duration) store.Event {
	return store.Event{
		EventID:     id,
		Time:        base.Add(offset),
		Tenant:      "acme",
		Agent:       "tenants/acme/agents/faq",
		Kind:        "token.requested",
		Outcome:     "issued",
		Actor:       "faq",
		Environment: "dev",
		Scopes:      []string{"kb.read"},
		RequestID:   "req-" + id,
		Detail:      `{"grant_type":"client_credentials"}`,
		StreamSeq:   1,
	}
}

func insert(t *testing.T, s store.Store, events ...store.Event) {
	t.Helper()
	if err := s.Insert(context.Background(), events); err != nil {
		t.Fatalf("insert: %v", err)
	}
}

// listAll pages through q with the given page size and returns every event.
func listAll(t *testing.T, s store.Store, q store.Query) []store.Event {
	t.Helper()
	var out []store.Event
	for range 10_000 {
		page, next, err := s.List(context.Background(), q)
		if err != nil {
			t.Fatalf("list %+v: %v", q, err)
		}
		if q.PageSize > 0 && len(page) > q.PageSize {
			t.Fatalf("page of %d events, page size %d", len(page), q.PageSize)
		}
		out = append(out, page...)
		if next == "" {
			return out
		}
		if len(page) == 0 {
			t.Fatal("empty page with a next page token")
		}
		q.PageToken = next
	}
	t.Fatal("paging does not end")
	return nil
}

func ids(events []store.Event) []string {
	out := make([]string, len(events))
	for i, e := range events {
		out[i] = e.EventID
	}
	return out
}

func equal(a, b store.Event) bool {
	return a.EventID == b.EventID && a.Time.Equal(b.Time) && a.Tenant == b.Tenant && a.Agent == b.Agent &&
		a.Kind == b.Kind && a.Outcome == b.Outcome && a.Actor == b.Actor && a.OnBehalfOf == b.OnBehalfOf &&
		a.Environment == b.Environment && slices.Equal(a.Scopes, b.Scopes) && a.RequestID == b.RequestID &&
		a.Detail == b.Detail && a.StreamSeq == b.StreamSeq && a.Owner == b.Owner && a.AgentKnown == b.AgentKnown &&
		a.ClientID == b.ClientID && a.Resource == b.Resource && a.Action == b.Action && a.Bytes == b.Bytes &&
		a.Rows == b.Rows && a.SourceAddress == b.SourceAddress && a.SourceNetwork == b.SourceNetwork &&
		a.LatencyUS == b.LatencyUS && a.TraceID == b.TraceID
}

func testRoundTrip(t *testing.T, s store.Store) {
	full := store.Event{
		EventID: "01a2192e-0000-7000-8000-000000000001", Time: base, Tenant: "acme",
		Agent: "tenants/acme/agents/pay", Kind: "token.requested", Outcome: "denied", Actor: "pay-client",
		OnBehalfOf: "alice@acme.example", Environment: "prod", Scopes: []string{"payment.initiate.limited", "ledger.read"},
		RequestID: "req-1", Detail: `{"error":"invalid_scope","audiences":["https://pay.example"],"n":1.5,"unicode":"zürich ✓"}`,
		StreamSeq: 1<<53 + 1,
	}
	sparse := store.Event{EventID: "e-sparse", Time: base.Add(-time.Second), Tenant: "acme", Kind: "agent.registered"}
	insert(t, s, full, sparse)
	got := listAll(t, s, store.Query{Tenant: "acme"})
	if len(got) != 2 {
		t.Fatalf("listed %d events, want 2", len(got))
	}
	if !equal(got[0], full) {
		t.Errorf("round trip:\n got  %+v\n want %+v", got[0], full)
	}
	wantSparse := sparse
	wantSparse.Detail = store.EmptyDetail
	if !equal(got[1], wantSparse) || got[1].Scopes != nil {
		t.Errorf("sparse round trip:\n got  %+v\n want %+v (nil scopes)", got[1], wantSparse)
	}
}

func testReinsert(t *testing.T, s store.Store) {
	first := event("e1", 0)
	insert(t, s, first)
	changed := first
	changed.Outcome = "denied"
	changed.Time = base.Add(time.Hour)
	insert(t, s, changed, event("e2", time.Second))
	got := listAll(t, s, store.Query{Tenant: "acme"})
	if want := []string{"e2", "e1"}; !slices.Equal(ids(got), want) {
		t.Fatalf("ids = %v, want %v", ids(got), want)
	}
	if !equal(got[1], first) {
		t.Errorf("re-insert changed the stored row: %+v", got[1])
	}
}

func testDuplicatesInBatch(t *testing.T, s store.Store) {
	a := event("dup", 0)
	b := a
	b.Outcome = "denied"
	insert(t, s, a, b, a)
	got := listAll(t, s, store.Query{Tenant: "acme"})
	if len(got) != 1 || got[0].Outcome != "issued" {
		t.Fatalf("got %+v, want the first copy once", got)
	}
}

func testEmptyInsert(t *testing.T, s store.Store) {
	insert(t, s)
	if err := s.Insert(context.Background(), nil); err != nil {
		t.Fatalf("nil insert: %v", err)
	}
	if got := listAll(t, s, store.Query{Tenant: "acme"}); len(got) != 0 {
		t.Fatalf("listed %d events from an empty store", len(got))
	}
}

func testInvalidBatch(t *testing.T, s store.Store) {
	tests := []struct {
		name      string
		mutate    func(e *store.Event)
		wantField string
	}{
		{"no event id", func(e *store.Event) { e.EventID = "" }, "events[1].event_id"},
		{"no tenant", func(e *store.Event) { e.Tenant = "" }, "events[1].tenant"},
		{"no kind", func(e *store.Event) { e.Kind = "" }, "events[1].kind"},
		{"no time", func(e *store.Event) { e.Time = time.Time{} }, "events[1].time"},
		{"detail not JSON", func(e *store.Event) { e.Detail = "{oops" }, "events[1].detail"},
		{"detail not an object", func(e *store.Event) { e.Detail = `["a"]` }, "events[1].detail"},
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
}

func testUTC(t *testing.T, s store.Store) {
	zone := time.FixedZone("UTC+5:30", 5*3600+1800)
	at := time.Date(2031, 3, 14, 20, 39, 26, 535_987_654, zone) // base + sub-millisecond, in another zone
	e := event("zoned", 0)
	e.Time = at
	insert(t, s, e)
	got := listAll(t, s, store.Query{Tenant: "acme"})
	if len(got) != 1 {
		t.Fatalf("listed %d events", len(got))
	}
	want := at.UTC().Truncate(time.Millisecond)
	if !got[0].Time.Equal(want) || got[0].Time.Location() != time.UTC {
		t.Errorf("time = %v (%v), want %v in UTC", got[0].Time, got[0].Time.Location(), want)
	}
}

func testOrdering(t *testing.T, s store.Store) {
	insert(t, s,
		event("b", 0), event("a", 0), event("c", 0), // same millisecond: event id descending
		event("old", -time.Hour), event("new", time.Hour), event("sub", 400*time.Microsecond), // same millisecond as base
	)
	got := listAll(t, s, store.Query{Tenant: "acme"})
	if want := []string{"new", "sub", "c", "b", "a", "old"}; !slices.Equal(ids(got), want) {
		t.Errorf("order = %v, want %v", ids(got), want)
	}
}

func testFilters(t *testing.T, s store.Store) {
	other := event("other-agent", 2*time.Second)
	other.Agent = "tenants/acme/agents/pay"
	decided := event("decided", 3*time.Second)
	decided.Kind = "policy.decided"
	early := event("early", -time.Minute)
	insert(t, s, event("at-base", 0), event("later", time.Second), other, decided, early)
	tests := []struct {
		name string
		q    store.Query
		want []string
	}{
		{"all", store.Query{}, []string{"decided", "other-agent", "later", "at-base", "early"}},
		{"agent", store.Query{Agent: "tenants/acme/agents/pay"}, []string{"other-agent"}},
		{"kind", store.Query{Kind: "policy.decided"}, []string{"decided"}},
		{"start is inclusive", store.Query{Start: base}, []string{"decided", "other-agent", "later", "at-base"}},
		{"start a nanosecond later excludes the millisecond", store.Query{Start: base.Add(time.Nanosecond)}, []string{"decided", "other-agent", "later"}},
		{"start in another zone", store.Query{Start: base.Add(time.Second).In(time.FixedZone("X", -7*3600))}, []string{"decided", "other-agent", "later"}},
		{"agent and kind", store.Query{Agent: "tenants/acme/agents/faq", Kind: "token.requested", Start: base}, []string{"later", "at-base"}},
		{"no match", store.Query{Kind: "nope"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.q.Tenant = "acme"
			if got := ids(listAll(t, s, tt.q)); !slices.Equal(got, tt.want) && (len(got) != 0 || len(tt.want) != 0) {
				t.Errorf("ids = %v, want %v", got, tt.want)
			}
			tt.q.PageSize = 1
			if got := ids(listAll(t, s, tt.q)); !slices.Equal(got, tt.want) && (len(got) != 0 || len(tt.want) != 0) {
				t.Errorf("paged one by one: ids = %v, want %v", got, tt.want)
			}
		})
	}
}

func testTenantIsolation(t *testing.T, s store.Store) {
	g := event("globex-1", 0)
	g.Tenant = "globex"
	insert(t, s, event("acme-1", 0), event("acme-2", -time.Second), g)
	if got := ids(listAll(t, s, store.Query{Tenant: "globex"})); !slices.Equal(got, []string{"globex-1"}) {
		t.Errorf("globex sees %v", got)
	}
	if got := ids(listAll(t, s, store.Query{Tenant: "acme"})); !slices.Equal(got, []string{"acme-1", "acme-2"}) {
		t.Errorf("acme sees %v", got)
	}
	// A page token of one tenant does not open another's events.
	_, next, err := s.List(context.Background(), store.Query{Tenant: "acme", PageSize: 1})
	if err != nil || next == "" {
		t.Fatalf("first page: next %q, err %v", next, err)
	}
	_, _, err = s.List(context.Background(), store.Query{Tenant: "globex", PageToken: next})
	if errs.KindOf(err) != errs.KindInvalidArgument {
		t.Errorf("foreign page token: err = %v, want InvalidArgument", err)
	}
}

func testPaging(t *testing.T, s store.Store) {
	var all []store.Event
	for i := range 25 {
		// Pairs share a millisecond so that page boundaries fall inside equal times.
		all = append(all, event(fmt.Sprintf("e%02d", i), time.Duration(i/2)*time.Millisecond))
	}
	insert(t, s, all...)
	for _, size := range []int{1, 2, 3, 10, 24, 25, 26} {
		t.Run(fmt.Sprint("size ", size), func(t *testing.T) {
			got := listAll(t, s, store.Query{Tenant: "acme", PageSize: size})
			if len(got) != 25 {
				t.Fatalf("listed %d events, want 25", len(got))
			}
			seen := map[string]bool{}
			for i, e := range got {
				if seen[e.EventID] {
					t.Fatalf("%s listed twice", e.EventID)
				}
				seen[e.EventID] = true
				if i > 0 {
					prev := got[i-1]
					if e.Time.After(prev.Time) || (e.Time.Equal(prev.Time) && e.EventID > prev.EventID) {
						t.Fatalf("%s listed after %s", e.EventID, prev.EventID)
					}
				}
			}
		})
	}
	page, next, err := s.List(context.Background(), store.Query{Tenant: "acme", PageSize: 25})
	if err != nil || len(page) != 25 || next != "" {
		t.Errorf("exact last page: %d events, next %q, err %v; want 25 and no token", len(page), next, err)
	}
}

func testPagingStable(t *testing.T, s store.Store) {
	insert(t, s, event("e1", 1*time.Second), event("e2", 2*time.Second), event("e3", 3*time.Second), event("e4", 4*time.Second))
	page, next, err := s.List(context.Background(), store.Query{Tenant: "acme", PageSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	insert(t, s, event("e5", 5*time.Second), event("e0", 0))
	rest := listAll(t, s, store.Query{Tenant: "acme", PageSize: 2, PageToken: next})
	if got, want := append(ids(page), ids(rest)...), []string{"e4", "e3", "e2", "e1", "e0"}; !slices.Equal(got, want) {
		t.Errorf("ids = %v, want %v", got, want)
	}
}

func testPageSizeDefaults(t *testing.T, s store.Store) {
	events := make([]store.Event, store.MaxPageSize+5)
	for i := range events {
		events[i] = event(fmt.Sprintf("e%04d", i), time.Duration(i)*time.Millisecond)
	}
	insert(t, s, events...)
	tests := []struct {
		size, want int
	}{
		{0, store.DefaultPageSize},
		{7, 7},
		{store.MaxPageSize, store.MaxPageSize},
		{store.MaxPageSize + 1, store.MaxPageSize},
		{1 << 30, store.MaxPageSize},
	}
	for _, tt := range tests {
		page, next, err := s.List(context.Background(), store.Query{Tenant: "acme", PageSize: tt.size})
		if err != nil {
			t.Fatalf("page size %d: %v", tt.size, err)
		}
		if len(page) != tt.want || next == "" {
			t.Errorf("page size %d: %d events (next %q), want %d and a token", tt.size, len(page), next, tt.want)
		}
	}
	if got := listAll(t, s, store.Query{Tenant: "acme", PageSize: store.MaxPageSize}); len(got) != len(events) {
		t.Errorf("listed %d events, want %d", len(got), len(events))
	}
}

func testBadQueries(t *testing.T, s store.Store) {
	insert(t, s, event("e1", 0), event("e2", time.Second))
	_, token, err := s.List(context.Background(), store.Query{Tenant: "acme", Kind: "token.requested", PageSize: 1})
	if err != nil || token == "" {
		t.Fatalf("first page: token %q, err %v", token, err)
	}
	tests := []struct {
		name      string
		q         store.Query
		wantField string
	}{
		{"no tenant", store.Query{}, "tenant"},
		{"negative page size", store.Query{Tenant: "acme", PageSize: -1}, "page_size"},
		{"garbage token", store.Query{Tenant: "acme", PageToken: "not a token!"}, "page_token"},
		{"token of other JSON", store.Query{Tenant: "acme", PageToken: "e30"}, "page_token"},
		{"token with other kind", store.Query{Tenant: "acme", Kind: "policy.decided", PageToken: token}, "page_token"},
		{"token without the kind", store.Query{Tenant: "acme", PageToken: token}, "page_token"},
		{"token with a start", store.Query{Tenant: "acme", Kind: "token.requested", Start: base, PageToken: token}, "page_token"},
		{"token with an agent", store.Query{Tenant: "acme", Kind: "token.requested", Agent: "tenants/acme/agents/x", PageToken: token}, "page_token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := s.List(context.Background(), tt.q)
			if errs.KindOf(err) != errs.KindInvalidArgument {
				t.Fatalf("err = %v, want InvalidArgument", err)
			}
			if f := errs.FromStatus(err).Field; f != tt.wantField {
				t.Errorf("field = %q, want %q", f, tt.wantField)
			}
		})
	}
	page, _, err := s.List(context.Background(), store.Query{Tenant: "acme", Kind: "token.requested", PageSize: 1, PageToken: token})
	if err != nil || len(page) != 1 || page[0].EventID != "e1" {
		t.Errorf("the same filters continue: %v, %v", ids(page), err)
	}
}

func testConcurrentInserts(t *testing.T, s store.Store) {
	const writers, perWriter = 4, 25
	var wg sync.WaitGroup
	errc := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				// Every writer also re-inserts writer 0's events, as a redelivery would.
				batch := []store.Event{event(fmt.Sprintf("w%d-%02d", w, i), time.Duration(i)*time.Millisecond), event(fmt.Sprintf("w0-%02d", i), time.Duration(i)*time.Millisecond)}
				if err := s.Insert(context.Background(), batch); err != nil {
					errc <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Errorf("concurrent insert: %v", err)
	}
	if got := listAll(t, s, store.Query{Tenant: "acme", PageSize: store.MaxPageSize}); len(got) != writers*perWriter {
		t.Errorf("stored %d events, want %d", len(got), writers*perWriter)
	}
}
