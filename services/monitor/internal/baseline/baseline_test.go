package baseline_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/agentid/agentid/services/monitor/internal/baseline"
	"github.com/agentid/agentid/services/monitor/internal/store"
	"github.com/agentid/agentid/services/monitor/internal/synth"
)

var (
	asOf  = time.Date(2026, 3, 30, 0, 0, 0, 0, time.UTC) // a Monday
	class = baseline.AgentClass{Owner: "team-a", Environment: "prod", Scopes: []string{"b:read", "a:read"}}
)

const (
	tenant  = "acme"
	veteran = "tenants/acme/agents/veteran"
	rookie  = "tenants/acme/agents/rookie"
)

// history: the veteran made 5 requests at 10:00 UTC on each of the last 14 days (one denied a
// day), on /r1 or /r2 from 10.0.0.0/24 for alice; the rookie made 5 on each of the last 2 days.
func history() *synth.Memory {
	mem := synth.NewMemory()
	add := func(agent string, days int) {
		for d := 1; d <= days; d++ {
			for i := range 5 {
				e := store.Event{EventID: agent + time.Duration(d).String() + string(rune('a'+i)), Tenant: tenant, Agent: agent,
					Time: asOf.Add(-time.Duration(d)*24*time.Hour + 10*time.Hour + time.Duration(i)*time.Minute),
					Kind: store.KindAccess, Outcome: "allowed", Resource: "/r1", SourceNetwork: "10.0.0.0/24",
					OnBehalfOf: "alice", Scopes: []string{"a:read"}, Rows: 100, Bytes: 1000}
				if i == 4 {
					e.Resource, e.Outcome, e.Rows, e.Bytes = "/r2", "denied", 0, 0
				}
				mem.Add(e)
			}
		}
	}
	add(veteran, 14)
	add(rookie, 2)
	return mem
}

func classify(_, agent string) (baseline.AgentClass, bool) {
	return class, agent == veteran || agent == rookie
}

func recomputed(t *testing.T, cfg baseline.Config) *baseline.Manager {
	t.Helper()
	m := baseline.NewManager(cfg)
	if err := m.Recompute(context.Background(), history(), tenant, asOf); err != nil {
		t.Fatalf("Recompute: %v", err)
	}
	return m
}

func TestRecomputeLearnsTheAgentsHabits(t *testing.T) {
	m := recomputed(t, baseline.Config{Classify: classify, MinRequests: 50})
	b, fromClass := m.Get(tenant, veteran, class)
	if b == nil || fromClass || b.Agent != veteran {
		t.Fatalf("Get(veteran) = %v, fromClass %v; want its own baseline", b, fromClass)
	}
	mon10 := b.HourOfWeek[10]
	if mon10.Median != 5 || mon10.MAD != 0 || mon10.Samples != 2 || mon10.Max != 5 {
		t.Errorf("Monday 10:00 stats = %+v, want median 5, MAD 0, max 5 over 2 weeks", mon10)
	}
	// From its first hour (Monday 10:00 two weeks ago) to asOf, Monday 03:00 came once.
	if mon3 := b.HourOfWeek[3]; mon3.Median != 0 || mon3.Samples != 1 {
		t.Errorf("Monday 03:00 stats = %+v, want median 0 over 1 week", mon3)
	}
	if !b.ActiveHour(10) || b.ActiveHour(3) || b.HourOfDay[10] != 70 {
		t.Errorf("active hours: 10 %v (count %d), 3 %v; want 10 only, 70 requests", b.ActiveHour(10), b.HourOfDay[10], b.ActiveHour(3))
	}
	if b.Days != 14-10.0/24 || b.Requests() != 70 || b.DenyRate() != 0.2 {
		t.Errorf("days %v, requests %d, deny rate %v; want 13.58, 70, 0.2", b.Days, b.Requests(), b.DenyRate())
	}
	if b.RowsMedian != 100 || b.BytesMedian != 1000 || b.MaxHourRows != 400 || b.Accesses != 70 {
		t.Errorf("rows median %v, bytes median %v, max hour rows %d, accesses %d", b.RowsMedian, b.BytesMedian, b.MaxHourRows, b.Accesses)
	}
	for _, c := range []struct {
		dim   store.Dimension
		value string
		want  bool
	}{
		{store.DimResource, "/r1", true}, {store.DimResource, "/r2", true}, {store.DimResource, "/r3", false},
		{store.DimScope, "a:read", true}, {store.DimScope, "b:read", false},
		{store.DimSourceNetwork, "10.0.0.0/24", true}, {store.DimSourceNetwork, "10.0.1.0/24", false},
		{store.DimOnBehalfOf, "alice", true}, {store.DimOnBehalfOf, "bob", false},
	} {
		if known, sat := b.Known(c.dim, c.value); known != c.want || sat {
			t.Errorf("Known(%s, %s) = %v (saturated %v), want %v", c.dim, c.value, known, sat, c.want)
		}
	}
	if b.ClassKey != "team-a|prod|a:read,b:read" {
		t.Errorf("class key %q", b.ClassKey)
	}
}

func TestYoungAgentsUseTheirClass(t *testing.T) {
	tests := []struct {
		name          string
		cfg           baseline.Config
		agent         string
		class         baseline.AgentClass
		wantFromClass bool
		wantAgent     string
		wantNil       bool
	}{
		{"veteran judged by itself", baseline.Config{Classify: classify, MinRequests: 50}, veteran, class, false, veteran, false},
		{"two days of history: class", baseline.Config{Classify: classify, MinRequests: 50}, rookie, class, true, "", false},
		{"too few requests: class", baseline.Config{Classify: classify, MinRequests: 200}, veteran, class, true, "", false},
		{"no history at all: class", baseline.Config{Classify: classify}, "tenants/acme/agents/new", class, true, "", false},
		{"young without a class: its own", baseline.Config{Classify: classify}, rookie, baseline.AgentClass{Owner: "other"}, false, rookie, false},
		{"nothing known", baseline.Config{Classify: classify}, "tenants/acme/agents/new", baseline.AgentClass{Owner: "other"}, false, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := recomputed(t, tt.cfg)
			b, fromClass := m.Get(tenant, tt.agent, tt.class)
			if tt.wantNil {
				if b != nil {
					t.Fatalf("Get = %+v, want nil", b)
				}
				return
			}
			if b == nil || fromClass != tt.wantFromClass || b.Agent != tt.wantAgent {
				t.Fatalf("Get = agent %q fromClass %v, want agent %q fromClass %v", b.Agent, fromClass, tt.wantAgent, tt.wantFromClass)
			}
			// Saturday 10:00: two for the veteran, one for the rookie (who started that Saturday).
			if sat10 := b.HourOfWeek[5*24+10]; fromClass && (b.Members != 2 || sat10.Samples != 3 || sat10.Median != 5 || b.Requests() != 80) {
				t.Errorf("class baseline: %d members, Saturday 10:00 %+v, %d requests; want 2, median 5 over 3 samples, 80",
					b.Members, sat10, b.Requests())
			}
		})
	}
}

func TestClassesGivenToGetAreRemembered(t *testing.T) {
	m := recomputed(t, baseline.Config{}) // no Classify: no class baselines yet
	if b, fromClass := m.Get(tenant, rookie, class); b == nil || fromClass {
		t.Fatalf("before the engine saw the class: Get = %v, %v; want the rookie's own", b, fromClass)
	}
	m.Get(tenant, veteran, class)
	if err := m.Recompute(context.Background(), history(), tenant, asOf); err != nil {
		t.Fatal(err)
	}
	if b, fromClass := m.Get(tenant, rookie, class); b == nil || !fromClass || b.Members != 2 {
		t.Fatalf("after a recomputation: Get = %v, %v; want the class of 2", b, fromClass)
	}
}

func TestValueSetsAreCapped(t *testing.T) {
	mem := synth.NewMemory()
	for i, r := range []string{"/a", "/a", "/a", "/b", "/b", "/c", "/d"} {
		mem.Add(store.Event{EventID: r + string(rune('0'+i)), Tenant: tenant, Agent: veteran, Time: asOf.Add(-time.Hour), Kind: store.KindAccess, Outcome: "allowed", Resource: r})
	}
	m := baseline.NewManager(baseline.Config{MaxValues: 2, MinRequests: 1, MinDays: 1})
	if err := m.Recompute(context.Background(), mem, tenant, asOf); err != nil {
		t.Fatal(err)
	}
	b, _ := m.Get(tenant, veteran, baseline.AgentClass{})
	if b.Len(store.DimResource) != 2 {
		t.Fatalf("kept %d resources, want 2", b.Len(store.DimResource))
	}
	if known, sat := b.Known(store.DimResource, "/a"); !known || !sat {
		t.Errorf("Known(/a) = %v, saturated %v; want the most used kept and the set saturated", known, sat)
	}
	if known, sat := b.Known(store.DimResource, "/z"); known || !sat {
		t.Errorf("Known(/z) = %v, saturated %v; want unknown in a saturated set", known, sat)
	}
}

func TestObserveLearnsBetweenRecomputations(t *testing.T) {
	m := recomputed(t, baseline.Config{Classify: classify, MinRequests: 50})
	b, _ := m.Get(tenant, veteran, class)
	row := store.Event{Tenant: tenant, Agent: veteran, Time: asOf.Add(time.Minute), Kind: store.KindAccess, Outcome: "denied",
		Resource: "/r9", SourceNetwork: "10.9.9.0/24", OnBehalfOf: "alice", Scopes: []string{"b:read"}}
	milestone := store.Event{Tenant: tenant, Agent: veteran, Time: asOf, Kind: "agent.suspended", Resource: "/never"}
	for range 3 {
		m.Observe([]store.Event{row, milestone})
	}
	for dim, v := range map[store.Dimension]string{store.DimResource: "/r9", store.DimSourceNetwork: "10.9.9.0/24", store.DimScope: "b:read"} {
		if known, _ := b.Known(dim, v); !known {
			t.Errorf("after Observe, %s %s is unknown", dim, v)
		}
	}
	if known, _ := b.Known(store.DimResource, "/never"); known {
		t.Error("a milestone row was learned as a request")
	}
	if b.Requests() != 73 || b.DenyRate() != 17.0/73 {
		t.Errorf("requests %d, deny rate %v; want 73, 17/73", b.Requests(), b.DenyRate())
	}
	if touched, judged := b.UserTouched("alice", "/r9", 3); !touched || !judged {
		t.Errorf("UserTouched(alice, /r9, 3) = %v, %v; want learned", touched, judged)
	}
	if _, judged := b.UserTouched("alice", "/r9", 4); judged {
		t.Error("judged a user's pattern on fewer observations than asked")
	}
	// Learned delegation pairs survive a recomputation (the aggregates cannot give them back).
	if err := m.Recompute(context.Background(), history(), tenant, asOf); err != nil {
		t.Fatal(err)
	}
	b2, _ := m.Get(tenant, veteran, class)
	if touched, judged := b2.UserTouched("alice", "/r9", 3); !touched || !judged {
		t.Errorf("after a recomputation UserTouched(alice, /r9) = %v, %v; want kept", touched, judged)
	}
}

type failing struct{ store.Analytics }

func (failing) Usage(context.Context, store.Window, store.Dimension) ([]store.Usage, error) {
	return nil, errors.New("store down")
}

func TestRecomputeFailureKeepsThePreviousBaselines(t *testing.T) {
	m := recomputed(t, baseline.Config{Classify: classify, MinRequests: 50})
	before, _ := m.Get(tenant, veteran, class)
	err := m.Recompute(context.Background(), failing{history()}, tenant, asOf.Add(time.Hour))
	if err == nil {
		t.Fatal("Recompute over a failing store succeeded")
	}
	if after, _ := m.Get(tenant, veteran, class); after != before {
		t.Error("a failed recomputation replaced the baselines")
	}
	if err := m.Recompute(context.Background(), history(), "", asOf); err == nil {
		t.Error("Recompute without a tenant succeeded")
	}
}

func TestToProto(t *testing.T) {
	m := recomputed(t, baseline.Config{Classify: classify, MinRequests: 50})
	b, fromClass := m.Get(tenant, rookie, class)
	p := baseline.ToProto(rookie, b, fromClass)
	if p.GetAgent() != rookie || !p.GetFromClass() || p.GetClassKey() != class.Key() || p.GetEvents() != 80 {
		t.Errorf("proto header = %v", p)
	}
	if len(p.GetHourly()) != baseline.HoursPerWeek || p.GetHourly()[10].GetMedian() != 5 {
		t.Errorf("hourly = %d slots, Monday 10:00 %v", len(p.GetHourly()), p.GetHourly()[10])
	}
	if len(p.GetActiveHours()) != 1 || p.GetActiveHours()[0] != 10 {
		t.Errorf("active hours %v, want [10]", p.GetActiveHours())
	}
	if r := p.GetResources(); len(r) != 2 || r[0].GetValue() != "/r1" || r[0].GetCount() != 64 {
		t.Errorf("resources %v, want /r1 (64) first", r)
	}
	if p.GetDenyRate() != 0.2 || p.GetRowsMedian() != 100 || !p.GetWindowEnd().AsTime().Equal(asOf) {
		t.Errorf("deny rate %v, rows median %v, window end %v", p.GetDenyRate(), p.GetRowsMedian(), p.GetWindowEnd().AsTime())
	}
	if baseline.ToProto(rookie, nil, false) != nil {
		t.Error("ToProto(nil) is not nil")
	}
}
