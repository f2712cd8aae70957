package detect_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/agentid/agentid/pkg/eventstore"
	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/monitor/internal/agents"
	"github.com/agentid/agentid/services/monitor/internal/baseline"
	"github.com/agentid/agentid/services/monitor/internal/detect"
	"github.com/agentid/agentid/services/monitor/internal/store"
	"github.com/agentid/agentid/services/monitor/internal/synth"
)

const agentName = "tenants/acme/agents/a1"

// registry is a lookup answering state for agent a1 (by name or client id) at any time.
func registry(state string, known bool) detect.Lookup {
	return func(tenant, id string, _ time.Time) (detect.AgentInfo, bool) {
		if id != agentName && id != "client-a1" {
			return detect.AgentInfo{}, false
		}
		return detect.AgentInfo{Tenant: tenant, Name: agentName, Owner: "team-a", State: state, Known: known, RiskTier: "low"}, true
	}
}

// request is an allowed access by a1 at t.
func request(id string, t time.Time) store.Event {
	return store.Event{EventID: id, Tenant: "acme", Agent: agentName, AgentKnown: true, Time: t, Kind: store.KindAccess, Outcome: "allowed", Resource: "/x"}
}

const (
	low      = monitorv1.AlertSeverity_ALERT_SEVERITY_LOW
	critical = monitorv1.AlertSeverity_ALERT_SEVERITY_CRITICAL
	none     = monitorv1.AlertSeverity_ALERT_SEVERITY_UNSPECIFIED
)

// TestInactiveAgentActivity: every activity row of an agent that must not act raises (or belongs
// to) an alert, with or without a baseline: CRITICAL when it succeeded (or its outcome is not a
// known refusal), LOW when the platform refused it. Milestones about the agent raise nothing, nor do
// policy decisions about it (anyone with the auditor role may ask for a dry run naming any agent).
func TestInactiveAgentActivity(t *testing.T) {
	t0 := time.Date(2026, 3, 30, 3, 0, 0, 0, time.UTC)
	tests := []struct {
		state, kind, outcome string
		want                 monitorv1.AlertSeverity
	}{
		{"SUSPENDED", store.KindAccess, "allowed", critical},
		{"AGENT_STATE_SUSPENDED", store.KindTokenRequested, "issued", critical},
		{"retiring", "policy.decided", "allow", none},
		{"RETIRED", store.KindAccess, "allowed", critical},
		{"AGENT_STATE_REJECTED", store.KindTokenRequested, "issued", critical},
		{"SUSPENDED", store.KindAccess, "unspecified", critical}, // not known to be refused
		{"SUSPENDED", store.KindTokenRequested, "", critical},    // no outcome: fail closed
		{"SUSPENDED", "policy.decided", "require_approval", none},
		{"SUSPENDED", store.KindTokenRequested, "invalid_client", low},
		{"AGENT_STATE_SUSPENDED", store.KindTokenRequested, "temporarily_unavailable", low},
		{"SUSPENDED", store.KindAccess, "denied", low},
		{"RETIRED", "policy.decided", "deny", none},
		{"SUSPENDED", "agent.suspended", "", none},
		{"ACTIVE", store.KindAccess, "allowed", none},
		{"AGENT_STATE_ACTIVE", store.KindTokenRequested, "invalid_client", none},
	}
	for _, tt := range tests {
		t.Run(tt.state+" "+tt.kind+" "+tt.outcome, func(t *testing.T) {
			eng := detect.NewEngine(detect.Config{}, baseline.NewManager(baseline.Config{}))
			row := request("e1", t0)
			row.Kind, row.Outcome = tt.kind, tt.outcome
			alerts := eng.Process([]store.Event{row}, registry(tt.state, true))
			if tt.want == none {
				if len(alerts) != 0 {
					t.Fatalf("alerts %v, want none", alerts)
				}
				return
			}
			if len(alerts) != 1 {
				t.Fatalf("%d alerts, want 1", len(alerts))
			}
			a := alerts[0]
			if a.GetDetector() != detect.InactiveAgentActivity || a.GetSeverity() != tt.want ||
				a.GetAgent() != agentName || a.GetEventIds()[0] != "e1" || a.GetEvidence()[0].GetMetric() != "agent_state" {
				t.Errorf("alert = %v, want %v", a, tt.want)
			}
			refused := strings.HasPrefix(a.GetEvidence()[0].GetExplanation(), "refused attempts while ")
			if refused != (tt.want == low) {
				t.Errorf("explanation %q: refused %v, want %v", a.GetEvidence()[0].GetExplanation(), refused, tt.want == low)
			}
		})
	}
}

// TestRefusedAttemptsDoNotHideSuccess: a suspended agent's refused attempts raise one LOW alert per
// hour, and a success in the same hour still raises its CRITICAL alert.
func TestRefusedAttemptsDoNotHideSuccess(t *testing.T) {
	t0 := time.Date(2026, 3, 30, 3, 0, 0, 0, time.UTC)
	eng := detect.NewEngine(detect.Config{}, baseline.NewManager(baseline.Config{}))
	lookup := registry("SUSPENDED", true)
	var rows []store.Event
	for i := range 10 {
		r := request(fmt.Sprintf("refused-%d", i), t0.Add(time.Duration(i)*time.Minute))
		r.Kind, r.Outcome = store.KindTokenRequested, "invalid_client"
		rows = append(rows, r)
	}
	got := eng.Process(rows, lookup)
	if len(got) != 1 || got[0].GetSeverity() != low || got[0].GetEventIds()[0] != "refused-0" ||
		got[0].GetAlertId() != detect.AlertID("acme", agentName, detect.InactiveAgentActivity, "refused/2026-03-30T03") {
		t.Fatalf("10 refused token requests raised %v, want one LOW alert on the first", got)
	}
	got = eng.Process([]store.Event{request("ok", t0.Add(30*time.Minute))}, lookup)
	if len(got) != 1 || got[0].GetSeverity() != critical || got[0].GetEventIds()[0] != "ok" {
		t.Fatalf("an allowed access after refused attempts raised %v, want one CRITICAL alert", got)
	}
	next := request("refused-next-hour", t0.Add(time.Hour))
	next.Outcome = "denied"
	if got = eng.Process([]store.Event{next}, lookup); len(got) != 1 || got[0].GetSeverity() != low {
		t.Fatalf("a refused access the next hour raised %v, want one LOW alert", got)
	}
}

// TestInactivityIsJudgedAtTheRowsTime: with the registry's history in the agents projection (both
// events applied before any row is judged), a row is judged by the agent's state at its own time:
// before the suspension nothing, during it CRITICAL (or LOW when refused), after the resume nothing;
// then retired for good.
func TestInactivityIsJudgedAtTheRowsTime(t *testing.T) {
	suspended := time.Date(2026, 3, 30, 3, 10, 0, 123_456_789, time.UTC)
	resumed := suspended.Add(90 * time.Minute)
	retired := resumed.Add(24 * time.Hour)
	dir := agents.New()
	for i, ev := range []struct {
		typ string
		at  time.Time
		msg proto.Message
	}{
		{agents.EventAgentRegistered, suspended.Add(-48 * time.Hour), &registryv1.AgentRegistered{Agent: &registryv1.Agent{Name: agentName, Owner: "team-a"}}},
		{agents.EventAgentActivated, suspended.Add(-47 * time.Hour), &registryv1.AgentActivated{Name: agentName}},
		{agents.EventAgentSuspended, suspended, &registryv1.AgentSuspended{Name: agentName, Cause: "alert:x"}},
		{agents.EventAgentResumed, resumed, &registryv1.AgentResumed{Name: agentName}},
		{agents.EventAgentRetired, retired, &registryv1.AgentRetired{Name: agentName}},
	} {
		data, err := proto.Marshal(ev.msg)
		if err != nil {
			t.Fatal(err)
		}
		if err := dir.Apply(t.Context(), eventstore.Event{ID: ev.typ, Type: ev.typ, Time: ev.at, Metadata: eventstore.Metadata{Tenant: "acme"},
			Sequence: uint64(i + 1), DataSchema: string(ev.msg.ProtoReflect().Descriptor().FullName()), Data: data}); err != nil {
			t.Fatalf("%s: %v", ev.typ, err)
		}
	}
	lookup := func(tenant, id string, at time.Time) (detect.AgentInfo, bool) {
		info, ok := dir.LookupAt(tenant, id, at)
		return detect.AgentInfo{Tenant: info.Tenant, Name: info.Name, Owner: info.Owner, State: info.StateName(), StateSince: info.StateSince, Known: ok}, ok
	}
	tests := []struct {
		name    string
		at      time.Time
		outcome string
		want    monitorv1.AlertSeverity
	}{
		{"just before the suspension", suspended.Truncate(time.Millisecond).Add(-time.Millisecond), "allowed", none},
		{"an hour before the suspension", suspended.Add(-time.Hour), "allowed", none},
		{"in the suspension's millisecond", suspended.Truncate(time.Millisecond), "allowed", critical},
		{"during the suspension", suspended.Add(20 * time.Minute), "allowed", critical},
		{"refused during the suspension", suspended.Add(21 * time.Minute), "denied", low},
		{"just before the resume", resumed.Add(-time.Millisecond), "allowed", critical},
		{"at the resume", resumed, "allowed", none},
		{"after the resume", resumed.Add(time.Hour), "allowed", none},
		{"after the retirement", retired.Add(time.Minute), "allowed", critical},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			eng := detect.NewEngine(detect.Config{}, baseline.NewManager(baseline.Config{}))
			row := request("e1", tt.at)
			row.Outcome = tt.outcome
			got := eng.Process([]store.Event{row}, lookup)
			if tt.want == none {
				if len(got) != 0 {
					t.Fatalf("alerts %v, want none", got)
				}
				return
			}
			if len(got) != 1 || got[0].GetDetector() != detect.InactiveAgentActivity || got[0].GetSeverity() != tt.want {
				t.Fatalf("alerts %v, want one %v inactive_agent_activity", got, tt.want)
			}
			if ex := got[0].GetEvidence()[0].GetExplanation(); !strings.Contains(ex, " since ") {
				t.Errorf("explanation %q does not say since when", ex)
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
