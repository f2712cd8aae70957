package detect_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
	"github.com/agentid/agentid/services/monitor/internal/detect"
	"github.com/agentid/agentid/services/monitor/internal/store"
	"github.com/agentid/agentid/services/monitor/internal/store/duckdb"
	"github.com/agentid/agentid/services/monitor/internal/synth"
)

// pickAgents returns the indexes of the first n agents of profile p.
func pickAgents(t *testing.T, g *synth.Generator, p synth.Profile, n int) []int {
	t.Helper()
	var out []int
	for _, a := range g.Agents {
		if a.Profile == p && len(out) < n {
			out = append(out, a.Index)
		}
	}
	if len(out) < n {
		t.Fatalf("population has %d %s agents, want %d", len(out), p, n)
	}
	return out
}

// TestAttacksAreDetected replays 50 agents: 21 days learned by a full recomputation, 7 clean days
// replayed through the engine (the incremental path), then one day with every attack in it. Each
// attack must raise the right detector's alert, with its evidence, once; the clean days raise none.
func TestAttacksAreDetected(t *testing.T) {
	backends := []struct {
		name string
		open func(t *testing.T, cfg synth.Config) *world
	}{
		{"memory seed 1", func(t *testing.T, cfg synth.Config) *world { return memWorld(cfg) }},
		{"memory seed 2", func(t *testing.T, cfg synth.Config) *world { cfg.Seed = 2; return memWorld(cfg) }},
		{"duckdb seed 1", func(t *testing.T, cfg synth.Config) *world {
			s, err := duckdb.Open(context.Background(), "")
			if err != nil {
				t.Fatalf("duckdb.Open: %v", err)
			}
			t.Cleanup(func() { _ = s.Close() })
			return newWorld(cfg, s, func(rows []store.Event) {
				if err := s.Insert(context.Background(), rows); err != nil {
					t.Fatalf("Insert: %v", err)
				}
			})
		}},
	}
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			w := be.open(t, synth.Config{Seed: 1, Agents: 50})
			learnEnd, attackDay := start.Add(21*day), start.Add(28*day) // attackDay is a Monday
			w.load(t, start, learnEnd)
			w.recompute(t, learnEnd)
			clean, _ := w.replay(t, learnEnd, attackDay)
			if len(clean) != 0 {
				for _, a := range clean {
					t.Errorf("clean day alert %s on %s: %s", a.GetDetector(), a.GetAgent(), a.GetEvidence()[0].GetExplanation())
				}
			}

			an := pickAgents(t, w.g, synth.Analytics, 1)
			svc := pickAgents(t, w.g, synth.Service, 2)
			sup := pickAgents(t, w.g, synth.Support, 2)
			bat := pickAgents(t, w.g, synth.Batch, 1)
			at := func(h int) time.Time { return attackDay.Add(time.Duration(h)*time.Hour + 7*time.Minute) }
			attacks := []synth.Attack{
				{Kind: synth.BulkExport, Agent: an[0], At: at(3)},
				{Kind: synth.NewNetwork, Agent: svc[0], At: at(10)},
				{Kind: synth.ScopeProbing, Agent: svc[1], At: at(11)},
				{Kind: synth.VolumeSpike, Agent: sup[0], At: at(13)},
				{Kind: synth.Ghost, Agent: 7, At: at(9)},
				{Kind: synth.SuspendedActivity, Agent: bat[0], At: at(2)},
				{Kind: synth.DelegationOutside, Agent: sup[1], At: at(15)},
			}
			suspended := w.g.Agents[bat[0]].Name
			w.state[suspended] = "AGENT_STATE_SUSPENDED"
			alerts, _ := w.replay(t, attackDay, attackDay.Add(day), attacks...)

			byAgent := map[string]map[string][]*monitorv1.Alert{}
			for _, a := range alerts {
				idAgent := a.GetAgent()
				if a.GetDetector() == detect.UnknownAgent {
					idAgent = "" // one alert per tenant and hour
				}
				if a.GetAlertId() != detect.AlertID(a.GetTenant(), idAgent, a.GetDetector(), bucketOf(a)) && a.GetDetector() != detect.NewResource {
					// bucketOf covers the hour- and day-bucketed detectors; value buckets are checked below.
					if !strings.HasPrefix(a.GetDetector(), "new_") && a.GetDetector() != detect.DelegationOutsidePattern {
						t.Errorf("%s alert id %s is not AlertID(tenant, agent, detector, bucket)", a.GetDetector(), a.GetAlertId())
					}
				}
				if a.GetName() != "tenants/"+a.GetTenant()+"/alerts/"+a.GetAlertId() {
					t.Errorf("alert name %q does not match its id %s", a.GetName(), a.GetAlertId())
				}
				if byAgent[a.GetAgent()] == nil {
					byAgent[a.GetAgent()] = map[string][]*monitorv1.Alert{}
				}
				byAgent[a.GetAgent()][a.GetDetector()] = append(byAgent[a.GetAgent()][a.GetDetector()], a)
			}
			name := func(i int) string { return w.g.Agents[i].Name }
			one := func(agent, detector string, sev monitorv1.AlertSeverity) *monitorv1.Alert {
				t.Helper()
				got := byAgent[agent][detector]
				if len(got) != 1 {
					t.Fatalf("%s on %s: %d alerts, want 1 (alerts of the agent: %v)", detector, agent, len(got), keys(byAgent[agent]))
				}
				if got[0].GetSeverity() != sev {
					t.Errorf("%s on %s: severity %v, want %v", detector, agent, got[0].GetSeverity(), sev)
				}
				if len(got[0].GetEvidence()) == 0 || got[0].GetEvidence()[0].GetExplanation() == "" {
					t.Errorf("%s on %s: no evidence", detector, agent)
				}
				return got[0]
			}

			// 3 a.m. bulk export by a read-only analytics agent: flagged on its first request.
			bulk := one(name(an[0]), detect.BulkExport, monitorv1.AlertSeverity_ALERT_SEVERITY_HIGH)
			ev := bulk.GetEvidence()[0]
			wantRows := float64(int64(1000 * w.g.Agents[an[0]].RowsMedian))
			if ev.GetMetric() != "rows_per_request" || ev.GetObserved() != wantRows || ev.GetScore() <= 8 || ev.GetObserved() < 10*ev.GetBaseline() {
				t.Errorf("bulk export evidence = %v, want rows_per_request observed %v, z > 8, >= 10x baseline", ev, wantRows)
			}
			firstAttack := w.g.Attack(attacks[0])[0]
			if got := bulk.GetEventIds(); len(got) != 1 || got[0] != firstAttack.EventID || !bulk.GetWindowEnd().AsTime().Equal(firstAttack.Time) {
				t.Errorf("bulk export raised on events %v at %v, want the first attack request %s", got, bulk.GetWindowEnd().AsTime(), firstAttack.EventID)
			}
			if bulk.GetOwner() != w.g.Agents[an[0]].Owner || bulk.GetRiskTier() != "high" || !bulk.GetAgentKnown() {
				t.Errorf("bulk export alert lacks the agent's registry facts: %v", bulk)
			}
			off := one(name(an[0]), detect.OffHours, monitorv1.AlertSeverity_ALERT_SEVERITY_MEDIUM)
			if off.GetEvidence()[0].GetValue() != "03" || off.GetEvidence()[0].GetBaseline() != 0 {
				t.Errorf("off hours evidence = %v, want hour 03 with baseline 0", off.GetEvidence()[0])
			}

			// Credential use from a new network.
			nn := one(name(svc[0]), detect.NewSourceNetwork, monitorv1.AlertSeverity_ALERT_SEVERITY_MEDIUM)
			if nn.GetEvidence()[0].GetValue() != "203.0.113.0/24" {
				t.Errorf("new network evidence value = %q", nn.GetEvidence()[0].GetValue())
			}

			// Scope probing: scopes never granted, and the denies.
			probing := byAgent[name(svc[1])][detect.NewScope]
			if len(probing) != 5 {
				t.Errorf("scope probing raised %d new_scope alerts, want 5 (one per probed scope)", len(probing))
			}
			for _, a := range probing {
				if a.GetSeverity() != monitorv1.AlertSeverity_ALERT_SEVERITY_HIGH || !strings.Contains(a.GetEvidence()[0].GetExplanation(), "not granted") {
					t.Errorf("probed scope %s: severity %v, explanation %q; want HIGH, not granted", a.GetEvidence()[0].GetValue(), a.GetSeverity(), a.GetEvidence()[0].GetExplanation())
				}
			}
			deny := one(name(svc[1]), detect.DenySpike, monitorv1.AlertSeverity_ALERT_SEVERITY_MEDIUM)
			if ev := deny.GetEvidence()[0]; ev.GetObserved() < 10 || ev.GetScore() <= 6 {
				t.Errorf("deny spike evidence = %v, want >= 10 denies, z > 6", ev)
			}

			// Volume spike: one alert for the hour, raised long before the hour ends.
			vol := one(name(sup[0]), detect.VolumeSpike, monitorv1.AlertSeverity_ALERT_SEVERITY_MEDIUM)
			if ev := vol.GetEvidence()[0]; ev.GetScore() <= 6 || ev.GetObserved() < 50 || ev.GetObserved() < 3*ev.GetBaseline() {
				t.Errorf("volume spike evidence = %v", ev)
			}
			if end := vol.GetWindowEnd().AsTime(); end.After(at(13).Add(20 * time.Minute)) {
				t.Errorf("volume spike raised at the row of %v, want within the first 20 minutes of the attack", end)
			}

			// Ghost agent.
			ghost := one("ghost-7", detect.UnknownAgent, monitorv1.AlertSeverity_ALERT_SEVERITY_HIGH)
			if ghost.GetAgentKnown() {
				t.Error("ghost alert says the agent is known")
			}

			// Activity of a suspended agent: every row that succeeded covered by a CRITICAL alert,
			// every refused one by a LOW alert of its hour, nothing else.
			for det := range byAgent[suspended] {
				if det != detect.InactiveAgentActivity {
					t.Errorf("suspended agent raised %s; only inactive_agent_activity applies", det)
				}
			}
			ids := map[string]monitorv1.AlertSeverity{}
			for _, a := range byAgent[suspended][detect.InactiveAgentActivity] {
				ids[a.GetAlertId()] = a.GetSeverity()
			}
			rowsOfSuspended, succeeded := 0, 0
			for _, e := range w.g.Events(attackDay, attackDay.Add(day), attacks...) {
				if e.Agent != suspended {
					continue
				}
				rowsOfSuspended++
				hour := e.Time.UTC().Format("2006-01-02T15")
				bucket, sev := "SUSPENDED/"+hour, monitorv1.AlertSeverity_ALERT_SEVERITY_CRITICAL
				if detect.Refused(e.Kind, e.Outcome) {
					bucket, sev = "refused/"+hour, monitorv1.AlertSeverity_ALERT_SEVERITY_LOW
				} else {
					succeeded++
				}
				if got := ids[detect.AlertID(e.Tenant, suspended, detect.InactiveAgentActivity, bucket)]; got != sev {
					t.Fatalf("row %s (%s %s) of the suspended agent at %v is covered by an alert of severity %v, want %v", e.EventID, e.Kind, e.Outcome, e.Time, got, sev)
				}
			}
			if rowsOfSuspended < 3 || succeeded == 0 {
				t.Fatalf("suspended agent made %d requests, %d not refused; want at least the 3 injected, some not refused", rowsOfSuspended, succeeded)
			}

			// Delegation outside the pattern: an unknown user, and a known user on a resource of
			// another user's pattern.
			dels := byAgent[name(sup[1])][detect.DelegationOutsidePattern]
			var values []string
			for _, a := range dels {
				values = append(values, a.GetEvidence()[0].GetValue())
			}
			ag := w.g.Agents[sup[1]]
			wantUser := "mallory" + strconv.Itoa(sup[1]) + "@example.com"
			if len(dels) != 2 || !contains(values, wantUser) || !containsPrefix(values, ag.Users[0]+" -> ") {
				t.Errorf("delegation alerts %v, want %s and %s -> <resource>", values, wantUser, ag.Users[0])
			}
			attacked := map[string]bool{"ghost-7": true}
			for _, at := range attacks {
				attacked[name(at.Agent)] = true
			}
			for _, a := range alerts {
				if !attacked[a.GetAgent()] {
					t.Errorf("alert %s on %s, which was not attacked: %s", a.GetDetector(), a.GetAgent(), a.GetEvidence()[0].GetExplanation())
				}
			}
			t.Logf("attack day: %d alerts: %s", len(alerts), summary(countBy(alerts)))
		})
	}
}

// bucketOf rebuilds the bucket of an hour- or day-bucketed alert from its window.
func bucketOf(a *monitorv1.Alert) string {
	t := a.GetWindowEnd().AsTime().UTC()
	switch a.GetDetector() {
	case detect.InactiveAgentActivity:
		if a.GetSeverity() == monitorv1.AlertSeverity_ALERT_SEVERITY_LOW {
			return "refused/" + t.Format("2006-01-02T15")
		}
		return "SUSPENDED/" + t.Format("2006-01-02T15")
	}
	return t.Format("2006-01-02T15")
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func contains(xs []string, s string) bool {
	for _, x := range xs {
		if x == s {
			return true
		}
	}
	return false
}

func containsPrefix(xs []string, p string) bool {
	for _, x := range xs {
		if strings.HasPrefix(x, p) {
			return true
		}
	}
	return false
}
