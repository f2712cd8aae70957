package workflows_test

import (
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/errs"
	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/workflows"
	"github.com/agentid/agentid/workflows/workflowstest"
)

// sweepRunTime is the scheduled time a Schedule appends to its id in the workflow id of a run.
const sweepRunTime = "2026-06-01T10:00:00Z"

// sweepAgent describes one agent of a sweep test, relative to the run's start.
type sweepAgent struct {
	tenant, id   string
	state        registryv1.AgentState
	age          time.Duration  // since creation
	expiresIn    *time.Duration // nil: no expire time
	lastActive   *time.Duration // how long ago; nil: never
	owner, spons string         // "-" clears the field
}

func ago(d time.Duration) *time.Duration { return &d }

const day = 24 * time.Hour

// newSweepFixture is a fixture for a sweep run of kind started by its Schedule, with the agents put
// into the fake registry and their activity into the fake monitor.
func newSweepFixture(t *testing.T, kind string, agents []sweepAgent) *fixture {
	t.Helper()
	f := newFixture(t, workflows.SweepScheduleID(kind)+"-"+sweepRunTime)
	f.acts.Monitor = monitorv1.NewMonitorServiceClient(f.fakes.Conn(t))
	f.fakes.Registry.Clock = f.env.Now
	now := f.env.Now()
	for i, s := range agents {
		a := workflowstest.NewAgent(s.tenant, s.id, registryv1.RiskTier_RISK_TIER_LOW)
		a.State = s.state
		// Creation order is the listing order.
		a.CreateTime = timestamppb.New(now.Add(-s.age).Add(time.Duration(i) * time.Millisecond))
		if s.expiresIn != nil {
			a.ExpireTime = timestamppb.New(now.Add(*s.expiresIn))
		}
		switch s.owner {
		case "-":
			a.Owner = ""
		case "":
		default:
			a.Owner = s.owner
		}
		if s.spons == "-" {
			a.Sponsor = ""
		}
		f.fakes.Registry.Put(a)
		if s.lastActive != nil {
			f.fakes.Monitor.SetLastActive(a.GetName(), now.Add(-*s.lastActive))
		}
	}
	return f
}

func (f *fixture) sweep(t *testing.T, in workflows.SweepInput) (workflows.SweepResult, error) {
	t.Helper()
	f.env.ExecuteWorkflow(workflows.SweepWorkflow, in)
	if !f.env.IsWorkflowCompleted() {
		t.Fatal("the sweep did not complete")
	}
	var res workflows.SweepResult
	err := f.env.GetWorkflowError()
	if err == nil {
		err = f.env.GetWorkflowResult(&res)
	}
	return res, err
}

func found(res workflows.SweepResult) []string {
	var out []string
	for _, f := range res.Findings {
		out = append(out, f.Tenant+"/"+f.AgentID+"="+f.Outcome)
	}
	return out
}

const (
	active    = registryv1.AgentState_AGENT_STATE_ACTIVE
	suspended = registryv1.AgentState_AGENT_STATE_SUSPENDED
	retired   = registryv1.AgentState_AGENT_STATE_RETIRED
	pending   = registryv1.AgentState_AGENT_STATE_PENDING
)

func TestSweepWorkflow(t *testing.T) {
	tests := []struct {
		name        string
		in          workflows.SweepInput
		agents      []sweepAgent
		want        []string // tenant/agent=outcome, in tenant and creation order
		wantTrigger string   // of every RetireAgent; "" wants none
		wantScanned int
	}{
		{
			name: "expired agents of every tenant are retired with trigger ttl",
			in:   workflows.SweepInput{Kind: workflows.SweepExpired},
			agents: []sweepAgent{
				{tenant: tenant, id: "x-active", state: active, age: day, expiresIn: ago(-time.Minute)},
				{tenant: tenant, id: "x-suspended", state: suspended, age: day, expiresIn: ago(-time.Hour)},
				{tenant: tenant, id: "x-later", state: active, age: day, expiresIn: ago(time.Minute)},
				{tenant: tenant, id: "x-retired", state: retired, age: day, expiresIn: ago(-time.Hour)},
				{tenant: tenant, id: "x-pending", state: pending, age: day, expiresIn: ago(-time.Hour)},
				{tenant: tenant, id: "x-forever", state: active, age: day},
				{tenant: "globex", id: "g-active", state: active, age: day, expiresIn: ago(-day)},
			},
			want:        []string{"acme/x-active=retired", "acme/x-suspended=retired", "globex/g-active=retired"},
			wantTrigger: workflows.TriggerTTL, wantScanned: 7,
		},
		{
			name: "inactive agents are recorded for review",
			in:   workflows.SweepInput{Kind: workflows.SweepInactive, InactiveDays: 90},
			agents: []sweepAgent{
				{tenant: tenant, id: "i-idle", state: active, age: 200 * day, lastActive: ago(100 * day)},
				{tenant: tenant, id: "i-busy", state: active, age: 200 * day, lastActive: ago(time.Hour)},
				{tenant: tenant, id: "i-never", state: active, age: 120 * day},
				{tenant: tenant, id: "i-new", state: active, age: 10 * day},
				{tenant: tenant, id: "i-edge", state: active, age: 200 * day, lastActive: ago(89 * day)},
				{tenant: tenant, id: "i-suspended", state: suspended, age: 200 * day},
			},
			want:        []string{"acme/i-idle=review", "acme/i-never=review"},
			wantScanned: 6,
		},
		{
			name: "inactive agents are retired with trigger inactivity when configured",
			in:   workflows.SweepInput{Kind: workflows.SweepInactive, Action: workflows.SweepActionDeprovision, InactiveDays: 30},
			agents: []sweepAgent{
				{tenant: tenant, id: "i-idle", state: active, age: 200 * day, lastActive: ago(31 * day)},
				{tenant: tenant, id: "i-busy", state: active, age: 200 * day, lastActive: ago(29 * day)},
			},
			want:        []string{"acme/i-idle=retired"},
			wantTrigger: workflows.TriggerInactivity, wantScanned: 2,
		},
		{
			name: "orphaned agents are recorded for review",
			in:   workflows.SweepInput{Kind: workflows.SweepOrphaned},
			agents: []sweepAgent{
				{tenant: tenant, id: "o-no-sponsor", state: active, age: day, spons: "-"},
				{tenant: tenant, id: "o-no-owner", state: suspended, age: day, owner: "-"},
				{tenant: tenant, id: "o-fine", state: active, age: day},
				{tenant: tenant, id: "o-retired", state: retired, age: day, spons: "-"},
			},
			want:        []string{"acme/o-no-sponsor=review", "acme/o-no-owner=review"},
			wantScanned: 4,
		},
		{
			name: "agents with neither owner nor sponsor are retired with trigger owner_departed when configured",
			in:   workflows.SweepInput{Kind: workflows.SweepOrphaned, Action: workflows.SweepActionDeprovision},
			agents: []sweepAgent{
				{tenant: tenant, id: "o-nobody", state: active, age: day, owner: "-", spons: "-"},
				{tenant: tenant, id: "o-fine", state: active, age: day},
			},
			want:        []string{"acme/o-nobody=retired"},
			wantTrigger: workflows.TriggerOwnerDeparted, wantScanned: 2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newSweepFixture(t, tt.in.Kind, tt.agents)
			res, err := f.sweep(t, tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if got := found(res); !slices.Equal(got, tt.want) {
				t.Fatalf("findings = %v, want %v", got, tt.want)
			}
			wantRef := "sweep:" + workflows.SweepScheduleID(tt.in.Kind) + "/" + sweepRunTime
			if res.ChangeRef != wantRef || res.Scanned != tt.wantScanned || res.Found != len(tt.want) || res.Kind != tt.in.Kind {
				t.Errorf("result = %+v, want change ref %s, %d scanned, %d found", res, wantRef, tt.wantScanned, len(tt.want))
			}
			for _, fd := range res.Findings {
				if fd.Reason == "" || fd.State == "" {
					t.Errorf("finding %+v says neither why nor in which state", fd)
				}
			}
			retires := workflowstest.RequestsOf[*registryv1.RetireAgentRequest](f.fakes, "RetireAgent")
			if tt.wantTrigger == "" {
				if len(retires) != 0 || res.Retired != 0 {
					t.Fatalf("a review sweep retired %v", retires)
				}
				return
			}
			if len(retires) != len(tt.want) || res.Retired != len(tt.want) {
				t.Fatalf("RetireAgent = %v, want %d", retires, len(tt.want))
			}
			for i, r := range retires {
				_, id, _ := workflows.ParseAgentName(r.GetName())
				if r.GetTrigger() != tt.wantTrigger || r.GetTicket() != wantRef ||
					r.GetRequestId() != workflows.SweepScheduleID(tt.in.Kind)+"-"+sweepRunTime+"/"+id || r.GetReason() == "" {
					t.Errorf("RetireAgent[%d] = %v, want trigger %s, ticket %s and the run's request id", i, r, tt.wantTrigger, wantRef)
				}
				if st := f.fakes.Registry.Agent(r.GetName()).GetState(); st != registryv1.AgentState_AGENT_STATE_RETIRING {
					t.Errorf("%s is %s, want RETIRING", r.GetName(), st)
				}
			}
		})
	}
}

// TestSweepExpiredRecordsTheExpiryFirst: the expired sweep makes each agent it retires EXPIRED
// first (request id <run>/<agent>/expire), retires an agent its TTL run left EXPIRED, and leaves
// alone one whose expire time was moved later after its page was read.
func TestSweepExpiredRecordsTheExpiryFirst(t *testing.T) {
	f := newSweepFixture(t, workflows.SweepExpired, []sweepAgent{
		{tenant: tenant, id: "x-active", state: active, age: day, expiresIn: ago(-time.Minute)},
		{tenant: tenant, id: "x-expired", state: registryv1.AgentState_AGENT_STATE_EXPIRED, age: day, expiresIn: ago(-time.Hour)},
		{tenant: tenant, id: "x-extended", state: suspended, age: day, expiresIn: ago(-time.Hour)},
	})
	extended := workflows.AgentName(tenant, "x-extended")
	f.fakes.After("ListAgents", func() {
		a := f.fakes.Registry.Agent(extended)
		a.ExpireTime = timestamppb.New(f.env.Now().Add(day))
		f.fakes.Registry.Put(a)
	})
	var expiredByCall []string // agents EXPIRED right after an ExpireAgent call of theirs
	f.fakes.After("ExpireAgent", func() {
		reqs := workflowstest.RequestsOf[*registryv1.ExpireAgentRequest](f.fakes, "ExpireAgent")
		name := reqs[len(reqs)-1].GetName()
		if f.fakes.Registry.Agent(name).GetState() == registryv1.AgentState_AGENT_STATE_EXPIRED {
			expiredByCall = append(expiredByCall, name)
		}
	})
	res, err := f.sweep(t, workflows.SweepInput{Kind: workflows.SweepExpired, Tenants: []string{tenant}})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := found(res), []string{"acme/x-active=retired", "acme/x-expired=retired", "acme/x-extended=changed_meanwhile"}; !slices.Equal(got, want) {
		t.Fatalf("findings = %v, want %v", got, want)
	}
	run := workflows.SweepScheduleID(workflows.SweepExpired) + "-" + sweepRunTime
	expires := workflowstest.RequestsOf[*registryv1.ExpireAgentRequest](f.fakes, "ExpireAgent")
	if len(expires) != 2 {
		t.Errorf("ExpireAgent = %v, want x-active's and x-extended's (x-expired is EXPIRED already)", expires)
	}
	for _, r := range expires {
		_, id, _ := workflows.ParseAgentName(r.GetName())
		if r.GetRequestId() != run+"/"+id+"/expire" {
			t.Errorf("ExpireAgent %v, want request id %s", r, run+"/"+id+"/expire")
		}
	}
	if want := []string{workflows.AgentName(tenant, "x-active")}; !slices.Equal(expiredByCall, want) {
		t.Errorf("agents made EXPIRED by the sweep = %v, want %v (before their retirement)", expiredByCall, want)
	}
	for id, want := range map[string]registryv1.AgentState{"x-active": registryv1.AgentState_AGENT_STATE_RETIRING,
		"x-expired": registryv1.AgentState_AGENT_STATE_RETIRING, "x-extended": suspended} {
		if got := f.fakes.Registry.Agent(workflows.AgentName(tenant, id)).GetState(); got != want {
			t.Errorf("%s is %s, want %s", id, got, want)
		}
	}
}

// TestSweepPages: a tenant with more agents than a page is swept to its last agent.
func TestSweepPages(t *testing.T) {
	n := 2*workflows.SweepPageSize + 50
	var agents []sweepAgent
	for i := range n {
		s := sweepAgent{tenant: tenant, id: "p" + strconv.Itoa(i), state: active, age: day}
		if i%100 == 99 {
			s.expiresIn = ago(-time.Minute)
		}
		agents = append(agents, s)
	}
	f := newSweepFixture(t, workflows.SweepExpired, agents)
	res, err := f.sweep(t, workflows.SweepInput{Kind: workflows.SweepExpired})
	if err != nil {
		t.Fatal(err)
	}
	if res.Scanned != n || res.Retired != 4 {
		t.Fatalf("scanned %d, retired %d; want %d and 4 (%v)", res.Scanned, res.Retired, n, found(res))
	}
	if pages := len(f.fakes.Requests("ListAgents")); pages != 3 {
		t.Errorf("ListAgents called %d times, want 3 pages", pages)
	}
}

// TestSweepInactiveNeedsTheMonitor: a monitor that cannot answer makes the inactivity sweep retry,
// and one that keeps refusing makes it fail; no agent is ever taken for inactive without an answer.
func TestSweepInactiveNeedsTheMonitor(t *testing.T) {
	idle := []sweepAgent{
		{tenant: tenant, id: "i-idle", state: active, age: 200 * day, lastActive: ago(100 * day)},
		{tenant: tenant, id: "i-never", state: active, age: 200 * day},
	}
	in := workflows.SweepInput{Kind: workflows.SweepInactive, Action: workflows.SweepActionDeprovision}

	t.Run("unreachable for a while: retried", func(t *testing.T) {
		f := newSweepFixture(t, workflows.SweepInactive, idle)
		unavailable := errs.Unavailable("TELEMETRY_UNAVAILABLE", "the telemetry store did not answer", nil)
		f.fakes.FailNext("GetAgentUsage", unavailable, unavailable, unavailable)
		res, err := f.sweep(t, in)
		if err != nil {
			t.Fatal(err)
		}
		if got := found(res); !slices.Equal(got, []string{"acme/i-idle=retired", "acme/i-never=retired"}) {
			t.Fatalf("findings = %v", got)
		}
		// Three failed pages, then one that asked about both agents.
		if n := len(f.fakes.Requests("GetAgentUsage")); n != 5 {
			t.Errorf("GetAgentUsage called %d times, want 5", n)
		}
	})
	t.Run("refused: the run fails and retires nothing", func(t *testing.T) {
		f := newSweepFixture(t, workflows.SweepInactive, idle)
		f.fakes.FailNext("GetAgentUsage", errs.PermissionDenied("MISSING_ROLE", "requires lifecycle-worker"))
		if _, err := f.sweep(t, in); err == nil || !strings.Contains(err.Error(), "GetAgentUsage") {
			t.Fatalf("err = %v, want the monitor's refusal", err)
		}
		if r := f.fakes.Requests("RetireAgent"); len(r) != 0 {
			t.Fatalf("retired without an answer from the monitor: %v", r)
		}
	})
	t.Run("no monitor configured: the run fails and retires nothing", func(t *testing.T) {
		f := newSweepFixture(t, workflows.SweepInactive, idle)
		f.acts.Monitor = nil
		if _, err := f.sweep(t, in); err == nil || !strings.Contains(err.Error(), "MONITOR_NOT_CONFIGURED") && !strings.Contains(err.Error(), "no monitor") {
			t.Fatalf("err = %v, want no monitor", err)
		}
		if r := f.fakes.Requests("RetireAgent"); len(r) != 0 {
			t.Fatalf("retired without a monitor: %v", r)
		}
	})
}

// TestSweepIdempotent: a page retried after some of its retirements went through asks for them again
// with the same request ids (the registry answers like the first time), and an agent retired
// meanwhile by someone else is recorded as changed, not failed.
func TestSweepIdempotent(t *testing.T) {
	agents := []sweepAgent{
		{tenant: tenant, id: "x1", state: active, age: day, expiresIn: ago(-time.Minute)},
		{tenant: tenant, id: "x2", state: active, age: day, expiresIn: ago(-time.Minute)},
		{tenant: tenant, id: "x3", state: active, age: day, expiresIn: ago(-time.Minute)},
	}
	f := newSweepFixture(t, workflows.SweepExpired, agents)
	// x1 goes through; x2 fails once (the page is retried: x1 again, then x2); x3 is retired by its
	// TTL run after the retried page read it.
	calls := 0
	f.fakes.After("RetireAgent", func() {
		calls++
		switch calls {
		case 1:
			f.fakes.FailNext("RetireAgent", errs.Unavailable("REGISTRY_UNAVAILABLE", "try again", nil))
		case 3:
			x3 := f.fakes.Registry.Agent(workflows.AgentName(tenant, "x3"))
			x3.State = registryv1.AgentState_AGENT_STATE_RETIRING
			f.fakes.Registry.Put(x3)
		}
	})
	res, err := f.sweep(t, workflows.SweepInput{Kind: workflows.SweepExpired})
	if err != nil {
		t.Fatal(err)
	}
	if got := found(res); !slices.Equal(got, []string{"acme/x1=retired", "acme/x2=retired", "acme/x3=changed_meanwhile"}) {
		t.Fatalf("findings = %v", got)
	}
	var x1 []string
	for _, r := range workflowstest.RequestsOf[*registryv1.RetireAgentRequest](f.fakes, "RetireAgent") {
		if strings.HasSuffix(r.GetName(), "/x1") {
			x1 = append(x1, r.GetRequestId())
		}
	}
	if len(x1) < 2 || x1[0] != x1[len(x1)-1] {
		t.Fatalf("x1 retire request ids = %v, want the same id asked again on the retried page", x1)
	}
	if res.Changed != 1 || res.Retired != 2 {
		t.Errorf("counts = %+v", res)
	}
}

// TestSweepBadInput: a sweep that cannot be run as asked fails at once and touches nothing.
func TestSweepBadInput(t *testing.T) {
	for _, in := range []workflows.SweepInput{
		{Kind: "stale"},
		{Kind: workflows.SweepExpired, Action: workflows.SweepActionReview},
		{Kind: workflows.SweepOrphaned, Action: "delete"},
		{Kind: workflows.SweepInactive, InactiveDays: -1},
	} {
		f := newSweepFixture(t, workflows.SweepExpired, nil)
		if _, err := f.sweep(t, in); err == nil || !strings.Contains(err.Error(), "INVALID_ARGUMENT") && !strings.Contains(err.Error(), "sweep:") {
			t.Errorf("%+v: err = %v, want InvalidArgument", in, err)
		}
		if n := len(f.fakes.Requests("ListTenants")) + len(f.fakes.Requests("ListAgents")); n != 0 {
			t.Errorf("%+v: the registry was asked %d times", in, n)
		}
	}
}
