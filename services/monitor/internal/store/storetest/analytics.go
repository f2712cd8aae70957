package storetest

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/services/monitor/internal/store"
)

// The analytics fixture: two agents of acme, an agent-less row, a row of another tenant. Every
// expected value in the tests below is worked out by hand from these rows (see the comments),
// never by the code under test.
var (
	h0     = time.Date(2031, 3, 14, 15, 0, 0, 0, time.UTC)
	faq    = "tenants/acme/agents/faq"
	pay    = "tenants/acme/agents/pay"
	ghost  = "tenants/acme/agents/ghost"
	window = store.Window{Tenant: "acme", From: h0.Add(-time.Hour), To: h0.Add(3 * time.Hour)}
	days   = store.Window{Tenant: "acme", From: time.Date(2031, 3, 13, 0, 0, 0, 0, time.UTC), To: time.Date(2031, 3, 16, 0, 0, 0, 0, time.UTC)}
)

// row is one fixture row.
type row struct {
	id, agent, kind, outcome, resource, src, obo string
	at                                           time.Duration
	scopes                                       []string
	rows, bytes                                  int64
	ghost                                        bool
}

var fixture = []row{
	// faq, hour h0: two accesses, one denied.
	{id: "a1", agent: faq, kind: store.KindAccess, outcome: "allowed", resource: "/kb/search", src: "10.1.2.3", obo: "alice", at: 10 * time.Minute, scopes: []string{"kb.read"}, rows: 10, bytes: 100},
	{id: "a2", agent: faq, kind: store.KindAccess, outcome: "denied", resource: "/kb/search", src: "10.1.2.99", obo: "alice", at: 20 * time.Minute, scopes: []string{"kb.read"}},
	// faq, a policy decision in h0: not a request, and it uses no scope (its scopes are those asked
	// for at admission).
	{id: "a6", agent: faq, kind: "policy.decided", outcome: "allow", at: 30 * time.Minute, scopes: []string{"kb.read"}},
	// faq, hour h1: an access and two token requests, one refused.
	{id: "a3", agent: faq, kind: store.KindAccess, outcome: "allowed", resource: "/kb/export", src: "192.168.7.1", obo: "bob", at: 70 * time.Minute, scopes: []string{"kb.read", "kb.export"}, rows: 30, bytes: 700},
	{id: "a4", agent: faq, kind: store.KindTokenRequested, outcome: "issued", resource: "urn:api", src: "10.1.2.4", at: 80 * time.Minute, scopes: []string{"kb.read", "kb.export"}},
	{id: "a5", agent: faq, kind: store.KindTokenRequested, outcome: "invalid_scope", resource: "urn:api", at: 90 * time.Minute},
	// faq, hour h2: only a policy decision, so no hourly row.
	{id: "p1", agent: faq, kind: "policy.decided", outcome: "deny", at: 150 * time.Minute},
	// faq, outside the window: before From and exactly at To.
	{id: "a7", agent: faq, kind: store.KindAccess, outcome: "allowed", resource: "/old", at: -2 * time.Hour, rows: 1000, bytes: 1000},
	{id: "a8", agent: faq, kind: store.KindAccess, outcome: "allowed", resource: "/late", at: 3 * time.Hour, rows: 5},
	// pay, hour h0: three accesses, two from one IPv6 /48.
	{id: "b1", agent: pay, kind: store.KindAccess, outcome: "allowed", resource: "/pay", src: "2001:db8:1:2::5", at: 5 * time.Minute, scopes: []string{"pay.read"}, rows: 1, bytes: 50},
	{id: "b2", agent: pay, kind: store.KindAccess, outcome: "allowed", resource: "/pay", src: "2001:db8:1:ffff::1", at: 6 * time.Minute, scopes: []string{"pay.read"}, rows: 3, bytes: 150},
	{id: "b3", agent: pay, kind: store.KindAccess, outcome: "allowed", resource: "/pay", at: 7 * time.Minute, scopes: []string{"pay.read"}, rows: 4, bytes: 400},
	// pay, hour h2: a denied bulk access.
	{id: "b4", agent: pay, kind: store.KindAccess, outcome: "denied", resource: "/refund", at: 121 * time.Minute, scopes: []string{"pay.read", "pay.refund"}, rows: 100, bytes: 1000},
	// faq, the next day (h0 + 27h, 2031-03-15 18:00 UTC): an access, for windows of whole days.
	{id: "a9", agent: faq, kind: store.KindAccess, outcome: "allowed", resource: "/kb/search", at: 27 * time.Hour, scopes: []string{"kb.read"}},
	// an agent the registry does not know (agent_known false): left out of Hourly, Usage and
	// Quantiles (no baseline), kept by LastActive (x2, a token issued).
	{id: "x1", agent: ghost, kind: store.KindAccess, outcome: "allowed", resource: "/kb/search", src: "10.1.2.5", obo: "alice", at: 12 * time.Minute, scopes: []string{"kb.read"}, rows: 5000, bytes: 5000, ghost: true},
	{id: "x2", agent: ghost, kind: store.KindTokenRequested, outcome: "issued", resource: "urn:api", at: 200 * time.Minute, scopes: []string{"kb.read"}, ghost: true},
	// no agent: left out of every per-agent read.
	{id: "n1", kind: store.KindTokenRequested, outcome: "invalid_client", resource: "urn:api", src: "10.9.9.9", obo: "mallory", at: time.Minute, scopes: []string{"kb.read"}},
}

func insertFixture(t *testing.T, s store.Store) {
	t.Helper()
	events := make([]store.Event, 0, len(fixture)+1)
	for i, r := range fixture {
		events = append(events, store.Event{
			EventID: r.id, Time: h0.Add(r.at), Tenant: "acme", Agent: r.agent, Kind: r.kind, Outcome: r.outcome,
			Resource: r.resource, SourceAddress: r.src, OnBehalfOf: r.obo, Scopes: r.scopes, Rows: r.rows, Bytes: r.bytes,
			AgentKnown: r.agent != "" && !r.ghost, StreamSeq: uint64(i + 1),
		})
	}
	events = append(events, store.Event{EventID: "g1", Time: h0.Add(time.Minute), Tenant: "globex", Agent: "tenants/globex/agents/x",
		Kind: store.KindAccess, Outcome: "allowed", Resource: "/pay", Rows: 7, Bytes: 7, AgentKnown: true})
	insert(t, s, events...)
}

func at(d time.Duration) time.Time { return h0.Add(d) }

func testAnalyticsArguments(t *testing.T, _ store.Store, a store.Analytics) {
	ctx := context.Background()
	tests := []struct {
		name      string
		call      func() error
		wantField string
	}{
		{"hourly without tenant", func() error { _, err := a.Hourly(ctx, store.Window{From: h0, To: at(time.Hour)}); return err }, "tenant"},
		{"hourly without from", func() error { _, err := a.Hourly(ctx, store.Window{Tenant: "acme", To: h0}); return err }, "from"},
		{"hourly without to", func() error { _, err := a.Hourly(ctx, store.Window{Tenant: "acme", From: h0}); return err }, "to"},
		{"hourly from after to", func() error {
			_, err := a.Hourly(ctx, store.Window{Tenant: "acme", From: at(time.Hour), To: h0})
			return err
		}, "from"},
		{"usage of an unknown dimension", func() error { _, err := a.Usage(ctx, window, "kind"); return err }, "dimension"},
		{"usage from equal to", func() error {
			_, err := a.Usage(ctx, store.Window{Tenant: "acme", From: h0, To: h0}, store.DimResource)
			return err
		}, "from"},
		{"quantiles without tenant", func() error { _, err := a.Quantiles(ctx, store.Window{From: h0, To: at(time.Hour)}); return err }, "tenant"},
		{"last active without to", func() error { _, err := a.LastActive(ctx, store.Window{Tenant: "acme"}); return err }, "to"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if errs.KindOf(err) != errs.KindInvalidArgument {
				t.Fatalf("err = %v, want InvalidArgument", err)
			}
			if f := errs.FromStatus(err).Field; f != tt.wantField {
				t.Errorf("field = %q, want %q", f, tt.wantField)
			}
		})
	}
	// LastActive ignores From.
	if _, err := a.LastActive(ctx, store.Window{Tenant: "acme", To: h0}); err != nil {
		t.Errorf("last active without from: %v", err)
	}
}

func testHourly(t *testing.T, s store.Store, a store.Analytics) {
	insertFixture(t, s)
	tests := []struct {
		name string
		w    store.Window
		want []store.Hourly
	}{
		{"window", window, []store.Hourly{
			// a1 + a2 (a2 denied); a6 is no request.
			{Tenant: "acme", Agent: faq, Hour: h0, Requests: 2, Denied: 1, Rows: 10, Bytes: 100},
			// a3 + a4 + a5 (invalid_scope is a refusal).
			{Tenant: "acme", Agent: faq, Hour: at(time.Hour), Requests: 3, Denied: 1, Rows: 30, Bytes: 700},
			// b1 + b2 + b3: rows 1+3+4, bytes 50+150+400.
			{Tenant: "acme", Agent: pay, Hour: h0, Requests: 3, Denied: 0, Rows: 8, Bytes: 600},
			{Tenant: "acme", Agent: pay, Hour: at(2 * time.Hour), Requests: 1, Denied: 1, Rows: 100, Bytes: 1000},
		}},
		{"one agent", store.Window{Tenant: "acme", Agent: pay, From: window.From, To: window.To}, []store.Hourly{
			{Tenant: "acme", Agent: pay, Hour: h0, Requests: 3, Denied: 0, Rows: 8, Bytes: 600},
			{Tenant: "acme", Agent: pay, Hour: at(2 * time.Hour), Requests: 1, Denied: 1, Rows: 100, Bytes: 1000},
		}},
		{"one hour, To exclusive", store.Window{Tenant: "acme", From: at(time.Hour), To: at(80 * time.Minute)}, []store.Hourly{
			{Tenant: "acme", Agent: faq, Hour: at(time.Hour), Requests: 1, Denied: 0, Rows: 30, Bytes: 700}, // a3 only
		}},
		{"From inclusive", store.Window{Tenant: "acme", From: at(7 * time.Minute), To: at(10 * time.Minute).Add(time.Millisecond)}, []store.Hourly{
			{Tenant: "acme", Agent: faq, Hour: h0, Requests: 1, Denied: 0, Rows: 10, Bytes: 100}, // a1
			{Tenant: "acme", Agent: pay, Hour: h0, Requests: 1, Denied: 0, Rows: 4, Bytes: 400},  // b3
		}},
		{"other tenant", store.Window{Tenant: "globex", From: window.From, To: window.To}, []store.Hourly{
			{Tenant: "globex", Agent: "tenants/globex/agents/x", Hour: h0, Requests: 1, Rows: 7, Bytes: 7},
		}},
		{"unknown tenant", store.Window{Tenant: "initech", From: window.From, To: window.To}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := a.Hourly(context.Background(), tt.w)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.EqualFunc(got, tt.want, func(x, y store.Hourly) bool {
				return x.Tenant == y.Tenant && x.Agent == y.Agent && x.Hour.Equal(y.Hour) && x.Requests == y.Requests &&
					x.Denied == y.Denied && x.Rows == y.Rows && x.Bytes == y.Bytes
			}) {
				t.Errorf("hourly:\n got  %+v\n want %+v", got, tt.want)
			}
		})
	}
}

func testUsage(t *testing.T, s store.Store, a store.Analytics) {
	insertFixture(t, s)
	tests := []struct {
		dim  store.Dimension
		w    store.Window
		want []store.Usage
	}{
		{store.DimResource, window, []store.Usage{
			{Agent: faq, Value: "/kb/search", Count: 2, LastSeen: at(20 * time.Minute)}, // a1, a2
			{Agent: faq, Value: "urn:api", Count: 2, LastSeen: at(90 * time.Minute)},    // a4, a5
			{Agent: faq, Value: "/kb/export", Count: 1, LastSeen: at(70 * time.Minute)}, // a3
			{Agent: pay, Value: "/pay", Count: 3, LastSeen: at(7 * time.Minute)},        // b1-b3
			{Agent: pay, Value: "/refund", Count: 1, LastSeen: at(121 * time.Minute)},   // b4
		}},
		// Scopes only where used: a1, a3 (allowed accesses) and a4 (issued); not a2 and b4 (denied)
		// nor a6 (a policy decision).
		{store.DimScope, window, []store.Usage{
			{Agent: faq, Value: "kb.read", Count: 3, LastSeen: at(80 * time.Minute)},   // a1, a3, a4
			{Agent: faq, Value: "kb.export", Count: 2, LastSeen: at(80 * time.Minute)}, // a3, a4
			{Agent: pay, Value: "pay.read", Count: 3, LastSeen: at(7 * time.Minute)},   // b1-b3
		}},
		{store.DimSourceNetwork, window, []store.Usage{
			{Agent: faq, Value: "10.1.2.0/24", Count: 3, LastSeen: at(80 * time.Minute)},    // a1, a2, a4
			{Agent: faq, Value: "192.168.7.0/24", Count: 1, LastSeen: at(70 * time.Minute)}, // a3
			{Agent: pay, Value: "2001:db8:1::/48", Count: 2, LastSeen: at(6 * time.Minute)}, // b1, b2
		}},
		{store.DimOnBehalfOf, window, []store.Usage{
			{Agent: faq, Value: "alice", Count: 2, LastSeen: at(20 * time.Minute)},
			{Agent: faq, Value: "bob", Count: 1, LastSeen: at(70 * time.Minute)},
		}},
		// Whole UTC days (the aggregate of a store that keeps one): 2031-03-13 to 2031-03-16.
		{store.DimScope, days, []store.Usage{
			{Agent: faq, Value: "kb.read", Count: 4, LastSeen: at(27 * time.Hour)},     // a1, a3, a4, a9
			{Agent: faq, Value: "kb.export", Count: 2, LastSeen: at(80 * time.Minute)}, // a3, a4
			{Agent: pay, Value: "pay.read", Count: 3, LastSeen: at(7 * time.Minute)},   // b1-b3
		}},
		// A whole day (2031-03-14) and parts of the days around it (from 23:00 the day before,
		// to 19:00 the day after): /kb/search counted in both.
		{store.DimResource, store.Window{Tenant: "acme", From: at(-16 * time.Hour), To: at(28 * time.Hour)}, []store.Usage{
			{Agent: faq, Value: "/kb/search", Count: 3, LastSeen: at(27 * time.Hour)},   // a1, a2, a9
			{Agent: faq, Value: "urn:api", Count: 2, LastSeen: at(90 * time.Minute)},    // a4, a5
			{Agent: faq, Value: "/kb/export", Count: 1, LastSeen: at(70 * time.Minute)}, // a3
			{Agent: faq, Value: "/late", Count: 1, LastSeen: at(3 * time.Hour)},         // a8
			{Agent: faq, Value: "/old", Count: 1, LastSeen: at(-2 * time.Hour)},         // a7
			{Agent: pay, Value: "/pay", Count: 3, LastSeen: at(7 * time.Minute)},        // b1-b3
			{Agent: pay, Value: "/refund", Count: 1, LastSeen: at(121 * time.Minute)},   // b4
		}},
		{store.DimResource, store.Window{Tenant: "acme", Agent: faq, From: at(-3 * time.Hour), To: at(time.Hour)}, []store.Usage{
			{Agent: faq, Value: "/kb/search", Count: 2, LastSeen: at(20 * time.Minute)},
			{Agent: faq, Value: "/old", Count: 1, LastSeen: at(-2 * time.Hour)}, // a7
		}},
	}
	for _, tt := range tests {
		t.Run(string(tt.dim)+" "+tt.w.Agent+" "+tt.w.From.Format(time.RFC3339), func(t *testing.T) {
			got, err := a.Usage(context.Background(), tt.w, tt.dim)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.EqualFunc(got, tt.want, func(x, y store.Usage) bool {
				return x.Agent == y.Agent && x.Value == y.Value && x.Count == y.Count && x.LastSeen.Equal(y.LastSeen)
			}) {
				t.Errorf("usage of %s:\n got  %+v\n want %+v", tt.dim, got, tt.want)
			}
		})
	}
}

func testQuantiles(t *testing.T, s store.Store, a store.Analytics) {
	insertFixture(t, s)
	// faq: access rows a1, a2, a3 in the window. rows 10, 0, 30: median 10, deviations 0, 10, 20:
	// MAD 10. bytes 100, 0, 700: median 100, deviations 0, 100, 600: MAD 100.
	// pay: b1-b4. rows 1, 3, 4, 100: median (3+4)/2 = 3.5, deviations 2.5, 0.5, 0.5, 96.5: MAD
	// (0.5+2.5)/2 = 1.5. bytes 50, 150, 400, 1000: median 275, deviations 225, 125, 125, 725: MAD
	// (125+225)/2 = 175.
	faqSpread := store.Spread{Agent: faq, Accesses: 3, RowsMedian: 10, RowsMAD: 10, BytesMedian: 100, BytesMAD: 100}
	paySpread := store.Spread{Agent: pay, Accesses: 4, RowsMedian: 3.5, RowsMAD: 1.5, BytesMedian: 275, BytesMAD: 175}
	tests := []struct {
		name string
		w    store.Window
		want []store.Spread
	}{
		{"window", window, []store.Spread{faqSpread, paySpread}},
		{"one agent", store.Window{Tenant: "acme", Agent: pay, From: window.From, To: window.To}, []store.Spread{paySpread}},
		// Only a7 (rows 1000, bytes 1000) and nothing else of faq before h0.
		{"one row", store.Window{Tenant: "acme", From: at(-3 * time.Hour), To: h0}, []store.Spread{
			{Agent: faq, Accesses: 1, RowsMedian: 1000, BytesMedian: 1000}}},
		{"no access rows", store.Window{Tenant: "acme", From: at(150 * time.Minute), To: at(160 * time.Minute)}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := a.Quantiles(context.Background(), tt.w)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("quantiles:\n got  %+v\n want %+v", got, tt.want)
			}
		})
	}
}

func testLastActive(t *testing.T, s store.Store, a store.Analytics) {
	insertFixture(t, s)
	tests := []struct {
		name string
		w    store.Window
		want map[string]time.Time
	}{
		// Only tokens issued count: faq's a4; not its later accesses (a3, a8), its refused request
		// (a5) or its policy decisions (a6, p1); pay has accesses only; the ghost's x2 is after To.
		{"at To", store.Window{Tenant: "acme", To: at(3 * time.Hour)}, map[string]time.Time{faq: at(80 * time.Minute)}},
		{"From is ignored", store.Window{Tenant: "acme", From: at(2*time.Hour + 59*time.Minute), To: at(3 * time.Hour)}, map[string]time.Time{faq: at(80 * time.Minute)}},
		// x2 is exactly at To: "at or before"; a millisecond earlier the ghost has none.
		{"ghost at x2", store.Window{Tenant: "acme", Agent: ghost, To: at(200 * time.Minute)}, map[string]time.Time{ghost: at(200 * time.Minute)}},
		{"ghost before x2", store.Window{Tenant: "acme", Agent: ghost, To: at(200 * time.Minute).Add(-time.Millisecond)}, map[string]time.Time{}},
		// The next day: earlier days (and hours) from a store's aggregate, To's own from the rows;
		// faq's access a9 does not count.
		{"next day", store.Window{Tenant: "acme", To: at(30 * time.Hour)}, map[string]time.Time{faq: at(80 * time.Minute), ghost: at(200 * time.Minute)}},
		{"one agent", store.Window{Tenant: "acme", Agent: pay, To: at(5 * time.Hour)}, map[string]time.Time{}},
		{"before a4", store.Window{Tenant: "acme", To: at(80 * time.Minute).Add(-time.Millisecond)}, map[string]time.Time{}},
		{"unknown tenant", store.Window{Tenant: "initech", To: at(5 * time.Hour)}, map[string]time.Time{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := a.LastActive(context.Background(), tt.w)
			if err != nil {
				t.Fatal(err)
			}
			if !maps.EqualFunc(got, tt.want, time.Time.Equal) {
				t.Errorf("last active:\n got  %v\n want %v", got, tt.want)
			}
		})
	}
}

// testQuantileSample stores QuantileSample+5 access rows of one agent: the newest QuantileSample
// alternate rows 1 and 3 (bytes 10 and 30), the five oldest return 1000 each. Only the newest
// count: median (1+3)/2 = 2, every deviation 1, MAD 1 (bytes: median 20, MAD 10); with the old
// ones, the median of rows would be 3. Rows 4 and 5 share a millisecond: the one with the greater
// event id is the newer.
func testQuantileSample(t *testing.T, s store.Store, a store.Analytics) {
	const bulk = "tenants/acme/agents/bulk"
	n := store.QuantileSample + 5
	events := make([]store.Event, n)
	for i := range n {
		e := store.Event{EventID: fmt.Sprintf("bulk-%05d", i), Time: h0.Add(time.Duration(i) * time.Millisecond), Tenant: "acme",
			Agent: bulk, Kind: store.KindAccess, Outcome: "allowed", AgentKnown: true, Rows: 1 + 2*int64(i%2), Bytes: 10 + 20*int64(i%2)}
		if i == 5 {
			e.Time = events[4].Time
		}
		if i < 5 {
			e.Rows, e.Bytes = 1000, 1000
		}
		events[i] = e
	}
	for chunk := range slices.Chunk(events, 1000) {
		insert(t, s, chunk...)
	}
	got, err := a.Quantiles(context.Background(), store.Window{Tenant: "acme", From: h0, To: at(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	want := []store.Spread{{Agent: bulk, Accesses: store.QuantileSample, RowsMedian: 2, RowsMAD: 1, BytesMedian: 20, BytesMAD: 10}}
	if !slices.Equal(got, want) {
		t.Errorf("quantiles:\n got  %+v\n want %+v", got, want)
	}
}

func testTenants(t *testing.T, s store.Store, a store.Analytics) {
	got, err := a.Tenants(context.Background())
	if err != nil || len(got) != 0 {
		t.Fatalf("tenants of an empty store: %v, %v", got, err)
	}
	insertFixture(t, s)
	got, err = a.Tenants(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"acme", "globex"}; !slices.Equal(got, want) {
		t.Errorf("tenants = %v, want %v", got, want)
	}
}

// testUsageOfScopes: Usage of DimScope counts a scope only where it was used (store.UsesScopes):
// on a token request that issued a token and on an allowed access. Each other kind of row carries
// a scope of its own and "shared"; none of them counts. The rows fall on 2031-03-14 (h0 is
// 15:00 UTC), so the whole-day window reads a store's daily aggregate and the hour window the raw
// rows.
func testUsageOfScopes(t *testing.T, s store.Store, a store.Analytics) {
	const agent = "tenants/acme/agents/scoped"
	rows := []struct {
		id, kind, outcome, scope string
	}{
		{"u1", store.KindTokenRequested, "issued", "s.issued"},         // counts
		{"u2", store.KindTokenRequested, "invalid_scope", "s.refused"}, // refused
		{"u3", store.KindTokenRequested, "denied", "s.token-denied"},   // refused
		{"u4", store.KindAccess, "allowed", "s.allowed"},               // counts
		{"u5", store.KindAccess, "denied", "s.denied"},                 // refused
		{"u6", "policy.decided", "allow", "s.admitted"},                // admission: asked for, not used
		{"u7", store.KindAccess, "allow", "s.allow"},                   // not an access outcome
		{"u8", "agent.registered", "", "s.registered"},                 // a milestone
	}
	events := make([]store.Event, len(rows))
	for i, r := range rows {
		events[i] = store.Event{EventID: r.id, Time: at(time.Duration(i+1) * time.Minute), Tenant: "acme", Agent: agent,
			Kind: r.kind, Outcome: r.outcome, Scopes: []string{r.scope, "shared"}, AgentKnown: true, StreamSeq: uint64(i + 1)}
	}
	insert(t, s, events...)
	for _, r := range rows {
		if got := store.UsesScopes(r.kind, r.outcome); got != (r.id == "u1" || r.id == "u4") {
			t.Errorf("UsesScopes(%q, %q) = %v", r.kind, r.outcome, got)
		}
	}
	day := store.Window{Tenant: "acme", From: h0.Truncate(24 * time.Hour), To: h0.Truncate(24 * time.Hour).Add(24 * time.Hour)}
	hour := store.Window{Tenant: "acme", Agent: agent, From: h0, To: at(time.Hour)}
	used := []store.Usage{
		{Agent: agent, Value: "shared", Count: 2, LastSeen: at(4 * time.Minute)},    // u1, u4
		{Agent: agent, Value: "s.allowed", Count: 1, LastSeen: at(4 * time.Minute)}, // u4
		{Agent: agent, Value: "s.issued", Count: 1, LastSeen: at(time.Minute)},      // u1
	}
	tests := []struct {
		name string
		w    store.Window
		want []store.Usage
	}{
		{"whole day", day, used},
		{"part of a day", hour, used},
		// Below 4: u4 leaves; "shared" was last used in u1.
		{"whole day, before 4", before(day, 4), []store.Usage{
			{Agent: agent, Value: "s.issued", Count: 1, LastSeen: at(time.Minute)},
			{Agent: agent, Value: "shared", Count: 1, LastSeen: at(time.Minute)},
		}},
		{"part of a day, before 4", before(hour, 4), []store.Usage{
			{Agent: agent, Value: "s.issued", Count: 1, LastSeen: at(time.Minute)},
			{Agent: agent, Value: "shared", Count: 1, LastSeen: at(time.Minute)},
		}},
		{"whole day, before 1", before(day, 1), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := a.Usage(context.Background(), tt.w, store.DimScope)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.EqualFunc(got, tt.want, func(x, y store.Usage) bool {
				return x.Agent == y.Agent && x.Value == y.Value && x.Count == y.Count && x.LastSeen.Equal(y.LastSeen)
			}) {
				t.Errorf("usage of scopes:\n got  %+v\n want %+v", got, tt.want)
			}
		})
	}
}

// testLastActiveCountsOnlyActivity: rows that name an agent without the agent acting never move
// its last activity, whether they come in the same batch, a later one, the day of To or an earlier
// day (a store's aggregate): policy decisions (dry runs included), refused token requests and
// access rows (a resource server may report one naming any agent, with a token id or not). A token
// issued to the agent does.
func testLastActiveCountsOnlyActivity(t *testing.T, s store.Store, a store.Analytics) {
	const agent = "tenants/acme/agents/idle"
	issued := h0.Add(-48 * time.Hour)
	e := func(id string, at time.Time, kind, outcome string) store.Event {
		return store.Event{EventID: id, Time: at, Tenant: "acme", Agent: agent, Kind: kind, Outcome: outcome, AgentKnown: true}
	}
	insert(t, s, e("issued", issued, store.KindTokenRequested, store.OutcomeIssued))
	var noise []store.Event
	for d := range 3 { // two days before To's day and To's own
		at := h0.Add(time.Duration(d-2)*24*time.Hour + time.Hour)
		dryRun := e(fmt.Sprintf("dry-run-%d", d), at, "policy.decided", "allow")
		dryRun.Detail = `{"dry_run":true}`
		access := e(fmt.Sprintf("access-%d", d), at.Add(time.Minute), store.KindAccess, store.OutcomeAllowed)
		access.TokenID, access.Detail = "forged", `{"token_id":"forged"}`
		noise = append(noise, dryRun,
			e(fmt.Sprintf("deny-%d", d), at.Add(2*time.Minute), "policy.decided", "deny"),
			e(fmt.Sprintf("refused-%d", d), at.Add(3*time.Minute), store.KindTokenRequested, "invalid_client"),
			access)
	}
	insert(t, s, noise...)
	to := h0.Add(2 * time.Hour)
	for _, w := range []store.Window{{Tenant: "acme", To: to}, {Tenant: "acme", Agent: agent, To: to}} {
		got, err := a.LastActive(context.Background(), w)
		if err != nil {
			t.Fatal(err)
		}
		if want := map[string]time.Time{agent: issued}; !maps.EqualFunc(got, want, time.Time.Equal) {
			t.Errorf("last active (agent %q): got %v, want %v (decisions, refusals and accesses are no activity)", w.Agent, got, want)
		}
	}
	again := h0.Add(90 * time.Minute)
	insert(t, s, e("issued-again", again, store.KindTokenRequested, store.OutcomeIssued))
	got, err := a.LastActive(context.Background(), store.Window{Tenant: "acme", Agent: agent, To: to})
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]time.Time{agent: again}; !maps.EqualFunc(got, want, time.Time.Equal) {
		t.Errorf("last active after a token issued: got %v, want %v", got, want)
	}
}
