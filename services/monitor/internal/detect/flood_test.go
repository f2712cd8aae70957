package detect_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
	"github.com/agentid/agentid/services/monitor/internal/baseline"
	"github.com/agentid/agentid/services/monitor/internal/detect"
	"github.com/agentid/agentid/services/monitor/internal/store"
	"github.com/agentid/agentid/services/monitor/internal/synth"
)

// TestUnknownAgentsOneAlertPerTenantHour: a batch naming 1,000 unknown agents raises one alert with
// the count and 20 sample names; a later batch of the same hour none; the next hour one more.
func TestUnknownAgentsOneAlertPerTenantHour(t *testing.T) {
	t0 := time.Date(2026, 3, 30, 3, 0, 0, 0, time.UTC)
	eng := detect.NewEngine(detect.Config{}, baseline.NewManager(baseline.Config{}))
	batch := func(prefix string, at time.Time) []store.Event {
		var rows []store.Event
		for i := range 1000 {
			rows = append(rows, store.Event{EventID: fmt.Sprintf("%s-%d", prefix, i), Tenant: "acme", Time: at,
				Agent: fmt.Sprintf("tenants/acme/agents/%s-%04d", prefix, i), Kind: store.KindAccess, Outcome: "allowed"})
		}
		return rows
	}
	got := eng.Process(batch("ghost", t0), registry("ACTIVE", true))
	if len(got) != 1 {
		t.Fatalf("1,000 unknown agents raised %d alerts, want 1", len(got))
	}
	a := got[0]
	ev := a.GetEvidence()[0]
	if a.GetDetector() != detect.UnknownAgent || a.GetAgentKnown() || a.GetSeverity() != monitorv1.AlertSeverity_ALERT_SEVERITY_HIGH ||
		a.GetAlertId() != detect.AlertID("acme", "", detect.UnknownAgent, "2026-03-30T03") {
		t.Fatalf("alert = %v, want the tenant's HIGH unknown_agent alert of the hour", a)
	}
	if ev.GetObserved() != 1000 || len(strings.Split(ev.GetValue(), ",")) != detect.MaxGhostSamples ||
		!strings.Contains(ev.GetExplanation(), "1000 name(s)") || !strings.Contains(ev.GetExplanation(), "ghost-0019") ||
		strings.Contains(ev.GetExplanation(), "ghost-0020") {
		t.Fatalf("evidence = %v, want a count of 1000 and the first 20 names", ev)
	}
	if again := eng.Process(batch("other", t0.Add(30*time.Minute)), registry("ACTIVE", true)); len(again) != 0 {
		t.Fatalf("a second batch of the hour raised %d alerts, want 0", len(again))
	}
	if next := eng.Process(batch("ghost", t0.Add(time.Hour)), registry("ACTIVE", true)); len(next) != 1 || next[0].GetEvidence()[0].GetObserved() != 1000 {
		t.Fatalf("the next hour raised %v, want one alert", next)
	}
}

// TestTenantAlertQuota: a tenant gets at most TenantHourlyQuota alerts an hour plus one
// alert_quota_exceeded; the rest is counted; CRITICAL alerts and other tenants are not held back.
func TestTenantAlertQuota(t *testing.T) {
	now := time.Date(2026, 3, 30, 3, 10, 0, 0, time.UTC)
	reg := prometheus.NewRegistry()
	eng := detect.NewEngine(detect.Config{TenantHourlyQuota: 10, Registerer: reg, Now: func() time.Time { return now }},
		baseline.NewManager(baseline.Config{}))
	// Refused attempts of suspended agents: one LOW alert per agent and hour, 30 agents.
	lookup := func(tenant, id string, _ time.Time) (detect.AgentInfo, bool) {
		return detect.AgentInfo{Tenant: tenant, Name: id, State: "SUSPENDED", Known: true}, true
	}
	rows := func(tenant, outcome string, n int) []store.Event {
		var out []store.Event
		for i := range n {
			out = append(out, store.Event{EventID: fmt.Sprintf("%s-%s-%d", tenant, outcome, i), Tenant: tenant, Time: now,
				Agent: fmt.Sprintf("tenants/%s/agents/a%d", tenant, i), Kind: store.KindAccess, Outcome: outcome})
		}
		return out
	}
	got := eng.Process(rows("acme", "denied", 30), lookup)
	byDetector := countBy(got)
	if byDetector[detect.InactiveAgentActivity] != 10 || byDetector[detect.AlertQuotaExceeded] != 1 || len(got) != 11 {
		t.Fatalf("30 alerts over a quota of 10 gave %v, want 10 and one alert_quota_exceeded", byDetector)
	}
	for _, a := range got {
		if a.GetDetector() == detect.AlertQuotaExceeded && (a.GetTenant() != "acme" || a.GetSeverity() != monitorv1.AlertSeverity_ALERT_SEVERITY_MEDIUM ||
			a.GetAlertId() != detect.AlertID("acme", "", detect.AlertQuotaExceeded, "2026-03-30T03") || a.GetAgent() != "tenants/acme/agents/a10") {
			t.Errorf("quota alert = %v", a)
		}
	}
	if n := testutil.ToFloat64(eng.OverQuota().WithLabelValues(detect.InactiveAgentActivity)); n != 20 {
		t.Errorf("monitor_alerts_over_quota_total = %v, want 20", n)
	}
	if got := eng.Process(rows("acme", "allowed", 5), lookup); countBy(got)[detect.InactiveAgentActivity] != 5 {
		t.Errorf("CRITICAL alerts over the quota: %v, want all 5 raised", countBy(got))
	}
	if got := eng.Process(rows("globex", "denied", 5), lookup); len(got) != 5 {
		t.Errorf("another tenant raised %d alerts, want 5", len(got))
	}
	now = now.Add(time.Hour)
	more := rows("acme", "denied", 30)
	for i := range more {
		more[i].Time = now
	}
	if got := countBy(eng.Process(more, lookup)); got[detect.InactiveAgentActivity] != 10 || got[detect.AlertQuotaExceeded] != 1 {
		t.Errorf("the next hour gave %v, want a fresh quota of 10 and one quota alert", got)
	}
}

// TestValueAlertsComeBackOnAnotherDay: a new resource, scope, network or user raises one alert a
// day, so an occurrence weeks later is raised again under another id.
func TestValueAlertsComeBackOnAnotherDay(t *testing.T) {
	t0 := time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)
	mem := synth.NewMemory()
	for h := range 14 * 24 {
		at := t0.Add(time.Duration(h) * time.Hour)
		for i := range 3 {
			mem.Add(store.Event{EventID: fmt.Sprintf("b%d-%d", h, i), Tenant: "acme", Agent: agentName, AgentKnown: true,
				Time: at.Add(time.Duration(i) * time.Minute), Kind: store.KindAccess, Outcome: "allowed", Resource: "/x",
				Scopes: []string{"read"}, SourceAddress: "10.0.0.1", SourceNetwork: "10.0.0.0/24", OnBehalfOf: "alice"})
		}
	}
	mgr := baseline.NewManager(baseline.Config{})
	learnEnd := t0.Add(14 * 24 * time.Hour)
	if err := mgr.Recompute(context.Background(), mem, "acme", learnEnd); err != nil {
		t.Fatal(err)
	}
	eng := detect.NewEngine(detect.Config{}, mgr)
	odd := func(id string, at time.Time) store.Event {
		return store.Event{EventID: id, Tenant: "acme", Agent: agentName, AgentKnown: true, Time: at, Kind: store.KindAccess,
			Outcome: "allowed", Resource: "/secret", Scopes: []string{"admin"}, SourceAddress: "192.0.2.7", SourceNetwork: "192.0.2.0/24", OnBehalfOf: "mallory"}
	}
	want := []string{detect.NewResource, detect.NewScope, detect.NewSourceNetwork, detect.DelegationOutsidePattern}
	first := countBy(eng.Process([]store.Event{odd("o1", learnEnd.Add(10*time.Hour))}, registry("ACTIVE", true)))
	sameDay := countBy(eng.Process([]store.Event{odd("o2", learnEnd.Add(11*time.Hour))}, registry("ACTIVE", true)))
	weeksLater := countBy(eng.Process([]store.Event{odd("o3", learnEnd.Add(21*24*time.Hour+10*time.Hour))}, registry("ACTIVE", true)))
	for _, d := range want {
		if first[d] != 1 || sameDay[d] != 0 || weeksLater[d] != 1 {
			t.Errorf("%s: first %d, same day %d, weeks later %d; want 1, 0, 1", d, first[d], sameDay[d], weeksLater[d])
		}
	}
}
