package detect_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
	"github.com/agentid/agentid/services/monitor/internal/baseline"
	"github.com/agentid/agentid/services/monitor/internal/detect"
	"github.com/agentid/agentid/services/monitor/internal/store"
)

const medium = monitorv1.AlertSeverity_ALERT_SEVERITY_MEDIUM

// issuedToken is the issuer's row of a token issued to agent ten minutes before t (the hour
// before), valid ten minutes.
func issuedToken(id, agent, jti string, t time.Time) store.Event {
	t = t.Add(-10 * time.Minute)
	return store.Event{EventID: id, Tenant: "acme", Agent: agent, AgentKnown: true, Time: t, Kind: store.KindTokenRequested,
		Outcome: "issued", TokenID: jti, TokenExpires: t.Add(10 * time.Minute)}
}

// reported is an allowed access of agent a1 reported by orders-api with token jti at t.
func reported(id, jti string, t time.Time) store.Event {
	r := request(id, t)
	r.Reporter, r.TokenID = "orders-api", jti
	return r
}

// TestUncorroboratedAccessIsCappedAtMedium: an access of a suspended agent is CRITICAL only when
// it names a token the issuer issued to that agent and used before it expired; otherwise the alert
// is MEDIUM, under another id, and says why and who reported it.
func TestUncorroboratedAccessIsCappedAtMedium(t *testing.T) {
	t0 := time.Date(2026, 3, 30, 3, 0, 0, 0, time.UTC)
	other := "tenants/acme/agents/other"
	tests := []struct {
		name    string
		rows    []store.Event
		want    monitorv1.AlertSeverity
		wantWhy string
	}{
		{"token issued to the agent", []store.Event{issuedToken("t1", agentName, "jti-1", t0), reported("a1", "jti-1", t0.Add(time.Minute))}, critical, ""},
		{"token row later in the same batch", []store.Event{reported("a1", "jti-1", t0.Add(time.Minute)), issuedToken("t1", agentName, "jti-1", t0)}, critical, ""},
		{"no token named", []store.Event{reported("a1", "", t0)}, medium, "named no token"},
		{"token the platform never issued", []store.Event{issuedToken("t1", agentName, "jti-1", t0), reported("a1", "jti-forged", t0)}, medium, "not one the platform"},
		{"token of another agent", []store.Event{issuedToken("t1", other, "jti-2", t0), reported("a1", "jti-2", t0)}, medium, "was issued to " + other},
		{"token long expired", []store.Event{issuedToken("t1", agentName, "jti-1", t0), reported("a1", "jti-1", t0.Add(detect.TokenSkew+time.Second))}, medium, "had expired"},
		{"token of another tenant", func() []store.Event {
			tok := issuedToken("t1", agentName, "jti-1", t0)
			tok.Tenant = "globex"
			return []store.Event{tok, reported("a1", "jti-1", t0)}
		}(), medium, "not one the platform"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			eng := detect.NewEngine(detect.Config{Corroborate: true}, baseline.NewManager(baseline.Config{}))
			got := eng.Process(tt.rows, registry("SUSPENDED", true))
			var alerts []*monitorv1.Alert
			for _, a := range got {
				if a.GetTenant() == "acme" && a.GetEventIds()[0] == "a1" {
					alerts = append(alerts, a)
				}
			}
			if len(alerts) != 1 {
				t.Fatalf("alerts %v, want one about the access", got)
			}
			a := alerts[0]
			rep := a.GetEvidence()[len(a.GetEvidence())-1]
			if a.GetSeverity() != tt.want || rep.GetMetric() != "reporter" || rep.GetValue() != "orders-api" {
				t.Fatalf("alert = %v, want %v with the reporter in the evidence", a, tt.want)
			}
			corroboratedID := detect.AlertID("acme", agentName, detect.InactiveAgentActivity, "SUSPENDED/2026-03-30T03")
			if tt.want == critical {
				if a.GetAlertId() != corroboratedID || rep.GetObserved() != 1 {
					t.Errorf("corroborated alert id %s, evidence %v", a.GetAlertId(), rep)
				}
				return
			}
			if a.GetAlertId() == corroboratedID || !strings.Contains(rep.GetExplanation(), tt.wantWhy) ||
				!strings.Contains(rep.GetExplanation(), "capped at MEDIUM") || !strings.HasSuffix(a.GetSummary(), "(uncorroborated report)") {
				t.Errorf("uncorroborated alert id %s, summary %q, evidence %q; want another id and %q", a.GetAlertId(), a.GetSummary(), rep.GetExplanation(), tt.wantWhy)
			}
		})
	}
}

// TestForgedReportsHideNoRealAlert: forged reports first take neither the id nor the quota of the
// alerts of real activity, and the baselines do not learn them.
func TestForgedReportsHideNoRealAlert(t *testing.T) {
	t0 := time.Date(2026, 3, 30, 3, 0, 0, 0, time.UTC)
	eng := detect.NewEngine(detect.Config{Corroborate: true, TenantHourlyQuota: 3, Now: func() time.Time { return t0 }},
		baseline.NewManager(baseline.Config{}))
	lookup := func(tenant, id string, _ time.Time) (detect.AgentInfo, bool) {
		return detect.AgentInfo{Tenant: tenant, Name: id, State: "SUSPENDED", Known: true}, true
	}
	var forged []store.Event
	for i := range 10 {
		r := reported(fmt.Sprintf("f%d", i), "jti-forged", t0)
		r.Agent = fmt.Sprintf("tenants/acme/agents/a%d", i)
		forged = append(forged, r)
	}
	got := countBy(eng.Process(forged, lookup))
	if got[detect.InactiveAgentActivity] != 3 || got[detect.AlertQuotaExceeded] != 1 {
		t.Fatalf("forged reports raised %v, want 3 and one quota alert", got)
	}
	real := []store.Event{issuedToken("t1", "tenants/acme/agents/a0", "jti-real", t0), reported("r1", "jti-real", t0.Add(time.Second))}
	real[1].Agent = "tenants/acme/agents/a0"
	var ofAccess []*monitorv1.Alert
	for _, a := range eng.Process(real, lookup) {
		if a.GetEventIds()[0] == "r1" {
			ofAccess = append(ofAccess, a)
		}
	}
	if len(ofAccess) != 1 || ofAccess[0].GetSeverity() != critical {
		t.Fatalf("the real access after the forged reports raised %v, want one CRITICAL alert", ofAccess)
	}
	learn := eng.Learnable(append(forged, real...))
	if len(learn) != 2 || learn[0].EventID != "t1" || learn[1].EventID != "r1" {
		t.Fatalf("Learnable kept %d rows, want the token request and the corroborated access", len(learn))
	}
}

// TestTokensRelearnedFromTheStore: after a restart the engine relearns issued tokens from stored
// token request rows (their detail), so access with them is corroborated again.
func TestTokensRelearnedFromTheStore(t *testing.T) {
	t0 := time.Date(2026, 3, 30, 3, 0, 0, 0, time.UTC)
	eng := detect.NewEngine(detect.Config{Corroborate: true}, baseline.NewManager(baseline.Config{}))
	stored := []store.Event{
		{EventID: "t2", Tenant: "acme", Agent: agentName, Time: t0.Add(-time.Minute), Kind: store.KindTokenRequested, Outcome: "issued",
			Detail: `{"grant_type":"client_credentials","token_id":"jti-new","expire_time":"` + t0.Add(9*time.Minute).Format(time.RFC3339Nano) + `"}`},
		{EventID: "t1", Tenant: "acme", Agent: agentName, Time: t0.Add(-2 * time.Minute), Kind: store.KindTokenRequested, Outcome: "issued",
			Detail: `{"token_id":"jti-old","expire_time":"` + t0.Add(-time.Minute).Format(time.RFC3339Nano) + `"}`},
		{EventID: "t0", Tenant: "acme", Agent: agentName, Time: t0.Add(-3 * time.Minute), Kind: store.KindTokenRequested, Outcome: "invalid_scope",
			Detail: `{"token_id":"jti-refused"}`},
	}
	if n := eng.LearnTokens(stored); n != 2 {
		t.Fatalf("learned %d tokens, want 2", n)
	}
	sev := func(jti string, at time.Time) monitorv1.AlertSeverity {
		e := detect.NewEngine(detect.Config{Corroborate: true}, baseline.NewManager(baseline.Config{}))
		e.LearnTokens(stored)
		got := e.Process([]store.Event{reported("a1", jti, at)}, registry("SUSPENDED", true))
		if len(got) != 1 {
			t.Fatalf("alerts %v, want 1", got)
		}
		return got[0].GetSeverity()
	}
	if s := sev("jti-new", t0); s != critical {
		t.Errorf("access with a relearned token: %v, want CRITICAL", s)
	}
	if s := sev("jti-old", t0.Add(detect.TokenSkew)); s != medium {
		t.Errorf("access with a relearned token long expired: %v, want MEDIUM", s)
	}
	if s := sev("jti-refused", t0); s != medium {
		t.Errorf("access with the id of a refused request: %v, want MEDIUM", s)
	}
}
