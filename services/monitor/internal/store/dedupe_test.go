package store_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/agentid/agentid/services/monitor/internal/store"
)

// TestCheckRanges: a batch is checked per tenant and per cluster of close times, never in one range
// spanning the time between a late event and new ones, and no check names more than maxIDs ids.
func TestCheckRanges(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	ev := func(tenant, id string, at time.Time) store.Event {
		return store.Event{Tenant: tenant, EventID: id, Time: at}
	}
	rows := []store.Event{
		ev("acme", "new-1", now),
		ev("globex", "g-1", now.Add(time.Second)),
		ev("acme", "late", now.Add(-3*time.Hour)),
		ev("acme", "new-2", now.Add(2*time.Second)),
		ev("acme", "new-3", now.Add(9*time.Minute)),
		ev("acme", "new-4", now.Add(11*time.Minute)),
	}
	got := store.CheckRanges(rows, 10*time.Minute, 1000)
	var desc []string
	for _, c := range got {
		desc = append(desc, fmt.Sprintf("%s %s..%s %v", c.Tenant, time.UnixMilli(c.Lo).UTC().Format("15:04:05"),
			time.UnixMilli(c.Hi).UTC().Format("15:04:05"), c.IDs))
	}
	want := []string{
		"acme 09:00:00..09:00:00 [late]",
		"acme 12:00:00..12:09:00 [new-1 new-2 new-3]",
		"acme 12:11:00..12:11:00 [new-4]",
		"globex 12:00:01..12:00:01 [g-1]",
	}
	if !slices.Equal(desc, want) {
		t.Fatalf("checks\n%v\nwant\n%v", desc, want)
	}
	// The input is left as it was.
	if rows[0].EventID != "new-1" || rows[2].EventID != "late" {
		t.Fatalf("CheckRanges reordered its input: %v", rows)
	}
	for _, c := range store.CheckRanges(rows, 10*time.Minute, 2) {
		if len(c.IDs) > 2 {
			t.Fatalf("a check names %d ids, at most 2 allowed: %+v", len(c.IDs), c)
		}
	}
	if n := len(store.CheckRanges(nil, time.Minute, 10)); n != 0 {
		t.Fatalf("%d checks for no rows", n)
	}
}

// TestRecentIDsForgetTheOldest: ids are remembered for RecentHorizon, and forgotten sooner when
// more than MaxRecentIDs are held.
func TestRecentIDsForgetTheOldest(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	var r store.RecentIDs
	if r.Has("a") {
		t.Fatal("an empty set has an id")
	}
	r.Add(now, []store.Event{{EventID: "a"}, {EventID: "b"}})
	r.Add(now.Add(store.RecentHorizon/2), []store.Event{{EventID: "c"}})
	if !r.Has("a") || !r.Has("c") {
		t.Fatal("ids inserted within the horizon are forgotten")
	}
	r.Add(now.Add(store.RecentHorizon+time.Second), []store.Event{{EventID: "d"}})
	if r.Has("a") || r.Has("b") || !r.Has("c") || !r.Has("d") {
		t.Fatal("after the horizon: want a and b forgotten, c and d kept")
	}
	big := make([]store.Event, store.MaxRecentIDs)
	for i := range big {
		big[i].EventID = fmt.Sprint("x", i)
	}
	r.Add(now.Add(store.RecentHorizon+2*time.Second), big)
	if r.Has("c") || r.Has("d") {
		t.Fatal("beyond MaxRecentIDs the oldest batches must go first")
	}
}
