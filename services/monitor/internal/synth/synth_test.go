package synth_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/agentid/agentid/services/monitor/internal/store"
	"github.com/agentid/agentid/services/monitor/internal/synth"
)

var from = time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)

func TestHistoryIsDeterministicOrderedAndValid(t *testing.T) {
	g1, g2 := synth.New(synth.Config{Seed: 7, Agents: 20}), synth.New(synth.Config{Seed: 7, Agents: 20})
	a := g1.Events(from, from.Add(48*time.Hour))
	b := g2.Events(from.Add(24*time.Hour), from.Add(48*time.Hour))
	if len(a) < 1000 {
		t.Fatalf("two days of 20 agents gave %d rows, want a realistic history (> 1000)", len(a))
	}
	// The same seed gives the same rows, whatever window is asked for.
	var secondDay []store.Event
	for _, e := range a {
		if !e.Time.Before(from.Add(24 * time.Hour)) {
			secondDay = append(secondDay, e)
		}
	}
	if !slices.EqualFunc(secondDay, b, func(x, y store.Event) bool { return x.EventID == y.EventID && x.Time.Equal(y.Time) && x.Rows == y.Rows }) {
		t.Error("the second day differs when generated alone")
	}
	if other := synth.New(synth.Config{Seed: 8, Agents: 20}).Events(from, from.Add(48*time.Hour)); len(other) == len(a) && other[0].EventID == a[0].EventID {
		t.Error("another seed gave the same history")
	}
	if _, err := store.Normalize(a); err != nil {
		t.Fatalf("rows are not valid store rows: %v", err)
	}
	for i := 1; i < len(a); i++ {
		if a[i].Time.Before(a[i-1].Time) {
			t.Fatalf("row %d at %v before row %d at %v", i, a[i].Time, i-1, a[i-1].Time)
		}
	}
}

func TestAttacksAreMergedIn(t *testing.T) {
	g := synth.New(synth.Config{Seed: 1, Agents: 8})
	at := synth.Attack{Kind: synth.BulkExport, Agent: 0, At: from.Add(3 * time.Hour)}
	events := g.Events(from, from.Add(24*time.Hour), at)
	injected := g.Attack(at)
	if len(injected) != 5 {
		t.Fatalf("bulk export injected %d rows, want 5", len(injected))
	}
	for _, e := range injected {
		if !slices.ContainsFunc(events, func(x store.Event) bool { return x.EventID == e.EventID }) {
			t.Fatalf("attack row %s missing from the history", e.EventID)
		}
		if e.Rows != int64(1000*g.Agents[0].RowsMedian) {
			t.Errorf("bulk export row has %d rows, want 1000x the median %v", e.Rows, g.Agents[0].RowsMedian)
		}
	}
}

func TestMemoryAnalytics(t *testing.T) {
	m := synth.NewMemory()
	t0 := from.Add(10 * time.Hour)
	m.Add(
		store.Event{EventID: "1", Tenant: "acme", Agent: "a", Time: t0, Kind: store.KindAccess, Outcome: "allowed", Rows: 10, Resource: "/x", Scopes: []string{"s1", "s2"}},
		store.Event{EventID: "2", Tenant: "acme", Agent: "a", Time: t0.Add(time.Minute), Kind: store.KindAccess, Outcome: "denied", Rows: 30, Resource: "/x"},
		store.Event{EventID: "3", Tenant: "acme", Agent: "a", Time: t0.Add(time.Hour), Kind: "agent.suspended", Resource: "/y"},
	)
	ctx := context.Background()
	w := store.Window{Tenant: "acme", From: from, To: from.Add(24 * time.Hour)}
	h, err := m.Hourly(ctx, w)
	if err != nil || len(h) != 1 || h[0].Requests != 2 || h[0].Denied != 1 || h[0].Rows != 40 {
		t.Errorf("Hourly = %+v, %v; want one hour of 2 requests, 1 denied, 40 rows (the milestone left out)", h, err)
	}
	u, _ := m.Usage(ctx, w, store.DimResource)
	if len(u) != 2 || u[0].Value != "/x" || u[0].Count != 2 || u[1].Value != "/y" {
		t.Errorf("Usage(resource) = %+v", u)
	}
	q, _ := m.Quantiles(ctx, w)
	if len(q) != 1 || q[0].RowsMedian != 20 || q[0].RowsMAD != 10 {
		t.Errorf("Quantiles = %+v, want median 20, MAD 10", q)
	}
	if _, err := m.Hourly(ctx, store.Window{From: from, To: from.Add(time.Hour)}); err == nil {
		t.Error("Hourly without a tenant succeeded")
	}
}
