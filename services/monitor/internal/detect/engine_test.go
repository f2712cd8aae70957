package detect_test

import (
	"context"
	"testing"
	"time"

	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
	"github.com/agentid/agentid/services/monitor/internal/baseline"
	"github.com/agentid/agentid/services/monitor/internal/detect"
	"github.com/agentid/agentid/services/monitor/internal/store"
	"github.com/agentid/agentid/services/monitor/internal/synth"
)

const agentName = "tenants/acme/agents/a1"

func registry(state string, known bool) func(string, string) (detect.AgentInfo, bool) {
	return func(tenant, id string) (detect.AgentInfo, bool) {
		if id != agentName && id != "client-a1" {
			return detect.AgentInfo{}, false
		}
		return detect.AgentInfo{Tenant: tenant, Name: agentName, Owner: "team-a", State: state, Known: known, RiskTier: "low"}, true
	}
}

func request(id string, t time.Time) store.Event {
	return store.Event{EventID: id, Tenant: "acme", Agent: agentName, AgentKnown: true, Time: t, Kind: store.KindAccess, Outcome: "denied", Resource: "/x"}
}

// TestInactiveAgentActivityIsAlwaysCritical: every activity row of an agent that must not act
// raises (or belongs to) a CRITICAL alert, with or without a baseline; milestones about it do not.
func TestInactiveAgentActivityIsAlwaysCritical(t *testing.T) {
	t0 := time.Date(2026, 3, 30, 3, 0, 0, 0, time.UTC)
	tests := []struct {
		state string
		kind  string
		want  bool
	}{
		{"SUSPENDED", store.KindAccess, true},
		{"AGENT_STATE_SUSPENDED", store.KindTokenRequested, true},
		{"retiring", "policy.decided", true},
		{"RETIRED", store.KindAccess, true},
		{"AGENT_STATE_REJECTED", store.KindTokenRequested, true},
		{"SUSPENDED", "agent.suspended", false},
		{"ACTIVE", store.KindAccess, false},
		{"AGENT_STATE_ACTIVE", store.KindTokenRequested, false},
	}
	for _, tt := range tests {
		t.Run(tt.state+" "+tt.kind, func(t *testing.T) {
			eng := detect.NewEngine(detect.Config{}, baseline.NewManager(baseline.Config{}))
			row := request("e1", t0)
			row.Kind = tt.kind
			alerts := eng.Process([]store.Event{row}, registry(tt.state, true))
			if !tt.want {
				if len(alerts) != 0 {
					t.Fatalf("alerts %v, want none", alerts)
				}
				return
			}
			if len(alerts) != 1 {
				t.Fatalf("%d alerts, want 1", len(alerts))
			}
			a := alerts[0]
			if a.GetDetector() != detect.InactiveAgentActivity || a.GetSeverity() != monitorv1.AlertSeverity_ALERT_SEVERITY_CRITICAL ||
				a.GetAgent() != agentName || a.GetEventIds()[0] != "e1" || a.GetEvidence()[0].GetMetric() != "agent_state" {
				t.Errorf("alert = %v", a)
			}
		})
	}
}

func TestUnknownAgents(t *testing.T) {
	t0 := time.Date(2026, 3, 30, 3, 0, 0, 0, time.UTC)
	tests := []struct {
		name      string
		row       store.Event
		known     bool
		wantAgent string
	}{
		{"unknown client id", store.Event{EventID: "e1", Tenant: "acme", ClientID: "ghost", Time: t0, Kind: store.KindTokenRequested, Outcome: "invalid_client"}, true, "ghost"},
		{"agent name the registry does not know", store.Event{EventID: "e2", Tenant: "acme", Agent: "tenants/acme/agents/zz", Time: t0, Kind: store.KindAccess}, true, "tenants/acme/agents/zz"},
		{"agent the registry lists as unknown", request("e3", t0), false, agentName},
		{"a row about no agent", store.Event{EventID: "e4", Tenant: "acme", AgentKnown: true, Time: t0, Kind: store.KindAccess}, true, ""},
		{"a milestone of an unknown agent", store.Event{EventID: "e5", Tenant: "acme", Agent: "tenants/acme/agents/zz", Time: t0, Kind: "agent.registered"}, true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			eng := detect.NewEngine(detect.Config{}, baseline.NewManager(baseline.Config{}))
			alerts := eng.Process([]store.Event{tt.row}, registry("ACTIVE", tt.known))
			if tt.wantAgent == "" {
				if len(alerts) != 0 {
					t.Fatalf("alerts %v, want none", alerts)
				}
				return
			}
			if len(alerts) != 1 || alerts[0].GetDetector() != detect.UnknownAgent || alerts[0].GetAgent() != tt.wantAgent ||
				alerts[0].GetAgentKnown() || alerts[0].GetSeverity() != monitorv1.AlertSeverity_ALERT_SEVERITY_HIGH {
				t.Fatalf("alerts = %v, want one HIGH unknown_agent about %s", alerts, tt.wantAgent)
			}
		})
	}
}

// TestOneAlertPerBucketWithBoundedMemory: rows of one bucket raise one alert, a later bucket
// another, a redelivered row none; the remembered ids are bounded by DedupeSize.
func TestOneAlertPerBucketWithBoundedMemory(t *testing.T) {
	t0 := time.Date(2026, 3, 30, 3, 0, 0, 0, time.UTC)
	eng := detect.NewEngine(detect.Config{DedupeSize: 2}, baseline.NewManager(baseline.Config{}))
	lookup := registry("SUSPENDED", true)
	var rows []store.Event
	for i := range 100 {
		rows = append(rows, request("e"+string(rune('A'+i%26))+string(rune('a'+i/26)), t0.Add(time.Duration(i)*time.Second)))
	}
	first := eng.Process(rows, lookup)
	if len(first) != 1 {
		t.Fatalf("100 rows in one hour raised %d alerts, want 1", len(first))
	}
	wantID := detect.AlertID("acme", agentName, detect.InactiveAgentActivity, "SUSPENDED/2026-03-30T03")
	if first[0].GetAlertId() != wantID || first[0].GetName() != "tenants/acme/alerts/"+wantID {
		t.Errorf("alert id %s name %s, want %s", first[0].GetAlertId(), first[0].GetName(), wantID)
	}
	if again := eng.Process(rows[:1], lookup); len(again) != 0 {
		t.Errorf("a redelivered row raised %d alerts", len(again))
	}
	// Two more hours push the first id out of a memory of two.
	for h := 1; h <= 2; h++ {
		if got := eng.Process([]store.Event{request("h"+string(rune('0'+h)), t0.Add(time.Duration(h)*time.Hour))}, lookup); len(got) != 1 {
			t.Fatalf("hour %d raised %d alerts, want 1", h, len(got))
		}
	}
	again := eng.Process(rows[:1], lookup)
	if len(again) != 1 || again[0].GetAlertId() != wantID {
		t.Errorf("after eviction the row raised %v, want the same alert id %s again", again, wantID)
	}
}

func TestAlertIDIsDeterministic(t *testing.T) {
	a := detect.AlertID("acme", agentName, detect.VolumeSpike, "2026-03-30T03")
	if a != detect.AlertID("acme", agentName, detect.VolumeSpike, "2026-03-30T03") || len(a) != 32 {
		t.Fatalf("AlertID not stable or not 32 hex digits: %s", a)
	}
	for _, other := range []string{
		detect.AlertID("acme2", agentName, detect.VolumeSpike, "2026-03-30T03"),
		detect.AlertID("acme", agentName+"x", detect.VolumeSpike, "2026-03-30T03"),
		detect.AlertID("acme", agentName, detect.OffHours, "2026-03-30T03"),
		detect.AlertID("acme", agentName, detect.VolumeSpike, "2026-03-30T04"),
		detect.AlertID("acm", "e"+agentName, detect.VolumeSpike, "2026-03-30T03"),
	} {
		if other == a {
			t.Errorf("different inputs share the id %s", a)
		}
	}
}

// TestConcurrentUse runs detection, incremental updates and recomputations at once (run with -race).
func TestConcurrentUse(t *testing.T) {
	w := memWorld(synth.Config{Seed: 3, Agents: 20})
	w.load(t, start, start.Add(7*day))
	w.recompute(t, start.Add(7*day))
	rows := w.g.Events(start.Add(7*day), start.Add(8*day))
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 3 {
			if err := w.mgr.Recompute(context.Background(), w.an, w.g.Tenant(), start.Add(7*day)); err != nil {
				t.Errorf("Recompute: %v", err)
			}
		}
	}()
	for i := 0; i < len(rows); i += 500 {
		batch := rows[i:min(i+500, len(rows))]
		w.eng.Process(batch, w.lookup)
		w.mgr.Observe(batch)
	}
	<-done
}
