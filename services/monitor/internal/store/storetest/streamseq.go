package storetest

import (
	"context"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/agentid/agentid/services/monitor/internal/store"
)

// The tests below read the analytics fixture with Window.BeforeStreamSeq set. Its rows carry
// stream sequences in fixture order: a1 1, a2 2, a6 3, a3 4, a4 5, a5 6, p1 7, a7 8, a8 9, b1 10,
// b2 11, b3 12, b4 13, a9 14, x1 15, x2 16, n1 17; globex's g1 has none (0), so it is always kept.
// Windows of whole hours and whole UTC days reach a store's aggregates; rows at or above
// BeforeStreamSeq must leave them as they leave the raw rows.

// before returns w with BeforeStreamSeq set to seq.
func before(w store.Window, seq uint64) store.Window {
	w.BeforeStreamSeq = seq
	return w
}

func testHourlyBeforeStreamSeq(t *testing.T, s store.Store, a store.Analytics) {
	insertFixture(t, s)
	tests := []struct {
		name string
		w    store.Window
		want []store.Hourly
	}{
		// Whole hours. Below 5: a4 and a5 leave faq's h1, b1-b4 (10-13) leave pay's hours empty.
		{"whole hours, before 5", before(window, 5), []store.Hourly{
			{Tenant: "acme", Agent: faq, Hour: h0, Requests: 2, Denied: 1, Rows: 10, Bytes: 100},            // a1, a2
			{Tenant: "acme", Agent: faq, Hour: at(time.Hour), Requests: 1, Denied: 0, Rows: 30, Bytes: 700}, // a3
		}},
		// Below 12: b3 (rows 4, bytes 400) leaves pay's h0, b4 its h2.
		{"whole hours, before 12", before(window, 12), []store.Hourly{
			{Tenant: "acme", Agent: faq, Hour: h0, Requests: 2, Denied: 1, Rows: 10, Bytes: 100},
			{Tenant: "acme", Agent: faq, Hour: at(time.Hour), Requests: 3, Denied: 1, Rows: 30, Bytes: 700},
			{Tenant: "acme", Agent: pay, Hour: h0, Requests: 2, Denied: 0, Rows: 4, Bytes: 200}, // b1, b2
		}},
		// Whole hours h0 and h1, parts of h-1 and h2: b4 leaves the part of h2.
		{"parts of hours, before 12", before(store.Window{Tenant: "acme", From: at(-30 * time.Minute), To: at(150 * time.Minute)}, 12), []store.Hourly{
			{Tenant: "acme", Agent: faq, Hour: h0, Requests: 2, Denied: 1, Rows: 10, Bytes: 100},
			{Tenant: "acme", Agent: faq, Hour: at(time.Hour), Requests: 3, Denied: 1, Rows: 30, Bytes: 700},
			{Tenant: "acme", Agent: pay, Hour: h0, Requests: 2, Denied: 0, Rows: 4, Bytes: 200},
		}},
		// Above every sequence: nothing leaves.
		{"before 18", before(store.Window{Tenant: "acme", Agent: pay, From: window.From, To: window.To}, 18), []store.Hourly{
			{Tenant: "acme", Agent: pay, Hour: h0, Requests: 3, Denied: 0, Rows: 8, Bytes: 600},
			{Tenant: "acme", Agent: pay, Hour: at(2 * time.Hour), Requests: 1, Denied: 1, Rows: 100, Bytes: 1000},
		}},
		{"before 1", before(window, 1), nil},
		// g1 has no stream sequence: kept whatever the bound.
		{"sequence 0 is kept", before(store.Window{Tenant: "globex", From: window.From, To: window.To}, 1), []store.Hourly{
			{Tenant: "globex", Agent: "tenants/globex/agents/x", Hour: h0, Requests: 1, Rows: 7, Bytes: 7},
		}},
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

func testUsageBeforeStreamSeq(t *testing.T, s store.Store, a store.Analytics) {
	insertFixture(t, s)
	tests := []struct {
		name string
		dim  store.Dimension
		w    store.Window
		want []store.Usage
	}{
		// Below 5: only a1, a2, a6, a3 remain of the window's rows.
		{"resource, window, before 5", store.DimResource, before(window, 5), []store.Usage{
			{Agent: faq, Value: "/kb/search", Count: 2, LastSeen: at(20 * time.Minute)}, // a1, a2
			{Agent: faq, Value: "/kb/export", Count: 1, LastSeen: at(70 * time.Minute)}, // a3
		}},
		// Below 11: b2 and b3 leave pay's network.
		{"source network, window, before 11", store.DimSourceNetwork, before(window, 11), []store.Usage{
			{Agent: faq, Value: "10.1.2.0/24", Count: 3, LastSeen: at(80 * time.Minute)},    // a1, a2, a4
			{Agent: faq, Value: "192.168.7.0/24", Count: 1, LastSeen: at(70 * time.Minute)}, // a3
			{Agent: pay, Value: "2001:db8:1::/48", Count: 1, LastSeen: at(5 * time.Minute)}, // b1
		}},
		// Whole days, scopes where used (a1, a3, a4, a9, b1-b3). Below 13: a9 leaves (b4 used no
		// scope). kb.read was last used in a9 (the next day), now in a4.
		{"scope, days, before 13", store.DimScope, before(days, 13), []store.Usage{
			{Agent: faq, Value: "kb.read", Count: 3, LastSeen: at(80 * time.Minute)},   // a1, a3, a4
			{Agent: faq, Value: "kb.export", Count: 2, LastSeen: at(80 * time.Minute)}, // a3, a4
			{Agent: pay, Value: "pay.read", Count: 3, LastSeen: at(7 * time.Minute)},   // b1-b3
		}},
		// Below 5: a4 leaves, and b1-b3; kb.read and kb.export were last used in a4, now in a3 of
		// the same day (a2 and a6, below 5, use no scope).
		{"scope, days, before 5", store.DimScope, before(days, 5), []store.Usage{
			{Agent: faq, Value: "kb.read", Count: 2, LastSeen: at(70 * time.Minute)},   // a1, a3
			{Agent: faq, Value: "kb.export", Count: 1, LastSeen: at(70 * time.Minute)}, // a3
		}},
		// Below 14: a9 leaves; /kb/search was last seen in it, now in a2 the day before.
		{"resource, days, before 14", store.DimResource, before(days, 14), []store.Usage{
			{Agent: faq, Value: "/kb/search", Count: 2, LastSeen: at(20 * time.Minute)}, // a1, a2
			{Agent: faq, Value: "urn:api", Count: 2, LastSeen: at(90 * time.Minute)},    // a4, a5
			{Agent: faq, Value: "/kb/export", Count: 1, LastSeen: at(70 * time.Minute)}, // a3
			{Agent: faq, Value: "/late", Count: 1, LastSeen: at(3 * time.Hour)},         // a8
			{Agent: faq, Value: "/old", Count: 1, LastSeen: at(-2 * time.Hour)},         // a7
			{Agent: pay, Value: "/pay", Count: 3, LastSeen: at(7 * time.Minute)},        // b1-b3
			{Agent: pay, Value: "/refund", Count: 1, LastSeen: at(121 * time.Minute)},   // b4
		}},
		// Below 2: only a1 of alice's rows remains, earlier the same day than a2.
		{"on behalf of, days, before 2", store.DimOnBehalfOf, before(days, 2), []store.Usage{
			{Agent: faq, Value: "alice", Count: 1, LastSeen: at(10 * time.Minute)}, // a1
		}},
		{"resource, days, before 1", store.DimResource, before(days, 1), nil},
		// g1 has no stream sequence: kept whatever the bound.
		{"sequence 0 is kept", store.DimResource, before(store.Window{Tenant: "globex", From: days.From, To: days.To}, 1), []store.Usage{
			{Agent: "tenants/globex/agents/x", Value: "/pay", Count: 1, LastSeen: at(time.Minute)},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
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

func testQuantilesBeforeStreamSeq(t *testing.T, s store.Store, a store.Analytics) {
	insertFixture(t, s)
	// faq's access rows a1, a2, a3 are below 12: as without a bound (see testQuantiles).
	faqSpread := store.Spread{Agent: faq, Accesses: 3, RowsMedian: 10, RowsMAD: 10, BytesMedian: 100, BytesMAD: 100}
	tests := []struct {
		name string
		w    store.Window
		want []store.Spread
	}{
		// pay below 12: b1, b2. rows 1, 3: median 2, deviations 1, 1: MAD 1. bytes 50, 150: median
		// 100, deviations 50, 50: MAD 50.
		{"before 12", before(window, 12), []store.Spread{faqSpread,
			{Agent: pay, Accesses: 2, RowsMedian: 2, RowsMAD: 1, BytesMedian: 100, BytesMAD: 50}}},
		// faq below 3: a1, a2. rows 10, 0: median 5, MAD 5. bytes 100, 0: median 50, MAD 50.
		{"before 3", before(window, 3), []store.Spread{
			{Agent: faq, Accesses: 2, RowsMedian: 5, RowsMAD: 5, BytesMedian: 50, BytesMAD: 50}}},
		{"before 1", before(window, 1), nil},
		// g1 has no stream sequence: kept whatever the bound.
		{"sequence 0 is kept", before(store.Window{Tenant: "globex", From: window.From, To: window.To}, 1), []store.Spread{
			{Agent: "tenants/globex/agents/x", Accesses: 1, RowsMedian: 7, BytesMedian: 7}}},
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

// testLastActiveIgnoresBeforeStreamSeq: LastActive says when an agent was last active in any row,
// acknowledged or not (nothing learns from it).
func testLastActiveIgnoresBeforeStreamSeq(t *testing.T, s store.Store, a store.Analytics) {
	insertFixture(t, s)
	for _, w := range []store.Window{
		before(store.Window{Tenant: "acme", To: at(3 * time.Hour)}, 1),
		before(store.Window{Tenant: "acme", To: at(30 * time.Hour)}, 9),
	} {
		want := map[string]time.Time{faq: at(80 * time.Minute)} // a4 (seq 5), at or above 1
		if w.To.Equal(at(30 * time.Hour)) {
			want = map[string]time.Time{faq: at(80 * time.Minute), ghost: at(200 * time.Minute)}
		}
		got, err := a.LastActive(context.Background(), w)
		if err != nil {
			t.Fatal(err)
		}
		if !maps.EqualFunc(got, want, time.Time.Equal) {
			t.Errorf("last active to %s before %d:\n got  %v\n want %v", w.To.Format(time.RFC3339), w.BeforeStreamSeq, got, want)
		}
	}
}
