package workflows_test

import (
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/workflows"
	"github.com/agentid/agentid/workflows/workflowstest"
)

// TestSweepInactiveNeedsTelemetryOverTheWindow: an agent is taken for inactive only when the
// monitor's telemetry of its tenant covers the whole window; a new or truncated store (coverage
// after the window's start, or none) retires nobody and says why.
func TestSweepInactiveNeedsTelemetryOverTheWindow(t *testing.T) {
	agents := []sweepAgent{
		{tenant: tenant, id: "i-idle", state: active, age: 200 * day, lastActive: ago(100 * day)},
		{tenant: tenant, id: "i-never", state: active, age: 200 * day},
		{tenant: tenant, id: "i-busy", state: active, age: 200 * day, lastActive: ago(time.Hour)},
	}
	in := workflows.SweepInput{Kind: workflows.SweepInactive, Action: workflows.SweepActionDeprovision, InactiveDays: 90}
	tests := []struct {
		name     string
		coverage *time.Duration // how long ago the telemetry starts; nil: the monitor holds none
		want     []string
		wantNote string
	}{
		{name: "covered since before the window", coverage: ago(91 * day), want: []string{"acme/i-idle=retired", "acme/i-never=retired"}},
		{name: "telemetry starts inside the window", coverage: ago(10 * day), wantNote: "starts at"},
		{name: "no telemetry at all", wantNote: "holds no telemetry"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newSweepFixture(t, in.Kind, agents)
			var coverage time.Time
			if tt.coverage != nil {
				coverage = f.env.Now().Add(-*tt.coverage)
			}
			f.fakes.Monitor.SetCoverage(tenant, coverage)
			res, err := f.sweep(t, in)
			if err != nil {
				t.Fatal(err)
			}
			if got := found(res); !slices.Equal(got, tt.want) {
				t.Fatalf("findings = %v, want %v", got, tt.want)
			}
			retires := workflowstest.RequestsOf[*registryv1.RetireAgentRequest](f.fakes, "RetireAgent")
			if len(retires) != len(tt.want) {
				t.Fatalf("RetireAgent = %v, want %d", retires, len(tt.want))
			}
			if tt.wantNote == "" {
				if res.NotEnoughTelemetry != 0 || len(res.Notes) != 0 {
					t.Fatalf("result = %+v, want every agent judged", res)
				}
				return
			}
			// i-busy was seen in the window: it needs no judgement of missing telemetry.
			if res.NotEnoughTelemetry != 2 || len(res.Notes) != 1 || !strings.Contains(res.Notes[0], tt.wantNote) || !strings.Contains(res.Notes[0], "not enough telemetry") {
				t.Fatalf("result = %+v, want 2 agents not judged and a note saying %q", res, tt.wantNote)
			}
		})
	}
}

// TestSweepOrphanedNeedsNeitherOwnerNorSponsor: only an agent nobody answers for is retired; one
// that lacks only its (optional) sponsor, or only its owner, is reported.
func TestSweepOrphanedNeedsNeitherOwnerNorSponsor(t *testing.T) {
	f := newSweepFixture(t, workflows.SweepOrphaned, []sweepAgent{
		{tenant: tenant, id: "o-no-sponsor", state: active, age: day, spons: "-"},
		{tenant: tenant, id: "o-no-owner", state: active, age: day, owner: "-"},
		{tenant: tenant, id: "o-nobody", state: suspended, age: day, owner: "-", spons: "-"},
		{tenant: tenant, id: "o-fine", state: active, age: day},
	})
	res, err := f.sweep(t, workflows.SweepInput{Kind: workflows.SweepOrphaned, Action: workflows.SweepActionDeprovision})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"acme/o-no-sponsor=review", "acme/o-no-owner=review", "acme/o-nobody=retired"}
	if got := found(res); !slices.Equal(got, want) {
		t.Fatalf("findings = %v, want %v", got, want)
	}
	retires := workflowstest.RequestsOf[*registryv1.RetireAgentRequest](f.fakes, "RetireAgent")
	if len(retires) != 1 || !strings.HasSuffix(retires[0].GetName(), "/o-nobody") || retires[0].GetTrigger() != workflows.TriggerOwnerDeparted {
		t.Fatalf("RetireAgent = %v, want o-nobody only (owner_departed)", retires)
	}
	for _, fd := range res.Findings[:2] {
		if !strings.Contains(fd.Reason, "reported only") {
			t.Errorf("finding %+v does not say it is reported only", fd)
		}
	}
}

// TestSweepBreaker: a run retires in a tenant at most MaxRetirements agents, or
// MaxRetirementPercent of its live agents when that is more; finding more, it retires none,
// records them as held and stops before the next tenant.
func TestSweepBreaker(t *testing.T) {
	expired := func(tenantID string, n, live int) []sweepAgent {
		var out []sweepAgent
		for i := range live {
			a := sweepAgent{tenant: tenantID, id: tenantID[:1] + strconv.Itoa(i), state: active, age: day}
			if i < n {
				a.expiresIn = ago(-time.Minute)
			}
			out = append(out, a)
		}
		return out
	}
	tests := []struct {
		name        string
		in          workflows.SweepInput
		agents      []sweepAgent
		wantRetired int
		wantHeld    int
		wantBreaker string
	}{
		{name: "ten of a small tenant", in: workflows.SweepInput{Kind: workflows.SweepExpired},
			agents: append(expired(tenant, 10, 12), expired("globex", 1, 1)...), wantRetired: 11},
		{name: "eleven of a small tenant trip the default breaker and stop the run", in: workflows.SweepInput{Kind: workflows.SweepExpired},
			agents: append(expired(tenant, 11, 12), expired("globex", 1, 1)...), wantHeld: 11, wantBreaker: "tenant acme: 11 agents to retire"},
		{name: "five percent of a large tenant", in: workflows.SweepInput{Kind: workflows.SweepExpired},
			agents: expired(tenant, 15, 300), wantRetired: 15},
		{name: "configured higher", in: workflows.SweepInput{Kind: workflows.SweepExpired, MaxRetirements: 20},
			agents: expired(tenant, 20, 20), wantRetired: 20},
		{name: "configured off: every retirement held", in: workflows.SweepInput{Kind: workflows.SweepExpired, MaxRetirements: -1, MaxRetirementPercent: -1},
			agents: expired(tenant, 1, 5), wantHeld: 1, wantBreaker: "tenant acme: 1 agents to retire"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newSweepFixture(t, tt.in.Kind, tt.agents)
			res, err := f.sweep(t, tt.in)
			if err != nil {
				t.Fatal(err)
			}
			retires := workflowstest.RequestsOf[*registryv1.RetireAgentRequest](f.fakes, "RetireAgent")
			if len(retires) != tt.wantRetired || res.Retired != tt.wantRetired || res.Held != tt.wantHeld {
				t.Fatalf("%d RetireAgent calls, result retired %d held %d; want %d retired, %d held", len(retires), res.Retired, res.Held, tt.wantRetired, tt.wantHeld)
			}
			if !strings.Contains(res.Breaker, tt.wantBreaker) || (tt.wantBreaker == "") != (res.Breaker == "") {
				t.Fatalf("breaker = %q, want %q", res.Breaker, tt.wantBreaker)
			}
			if tt.wantBreaker != "" && res.Tenants != 1 {
				t.Fatalf("the run swept %d tenants after its breaker tripped, want it stopped at the first", res.Tenants)
			}
		})
	}
}

// TestSweepBadBreaker: a breaker bound out of range is refused before anything is read.
func TestSweepBadBreaker(t *testing.T) {
	for _, in := range []workflows.SweepInput{
		{Kind: workflows.SweepExpired, MaxRetirements: -2},
		{Kind: workflows.SweepExpired, MaxRetirementPercent: 101},
	} {
		f := newSweepFixture(t, workflows.SweepExpired, nil)
		if _, err := f.sweep(t, in); err == nil || !strings.Contains(err.Error(), "max retirement") {
			t.Errorf("%+v: err = %v, want the bound named", in, err)
		}
	}
}
