package workflows_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/errs"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/workflows"
	"github.com/agentid/agentid/workflows/workflowstest"
)

// rotationSweepRunID is the workflow id of a rotation sweep run its Schedule started.
const rotationSweepRunID = workflows.RotationSweepScheduleID + "-" + sweepRunTime

// keyedAgent describes one agent of a rotation sweep test, relative to the run's start.
type keyedAgent struct {
	tenant, id string
	state      registryv1.AgentState
	tier       registryv1.RiskTier
	keyAges    []time.Duration // the add time of each key, as an age; none: the agent has no key
	noAddTime  bool            // the keys carry no add time
}

// newRotationSweepFixture is a fixture for a rotation sweep run started by its Schedule, with the
// agents put into the fake registry and a recording notifier.
func newRotationSweepFixture(t *testing.T, agents []keyedAgent) (*fixture, *recordingNotifier) {
	t.Helper()
	f := newFixture(t, rotationSweepRunID)
	n := &recordingNotifier{}
	f.acts.Notifier = n
	now := f.env.Now()
	for i, s := range agents {
		a := workflowstest.NewAgent(s.tenant, s.id, s.tier)
		a.State = s.state
		a.CreateTime = timestamppb.New(now.Add(-400 * day).Add(time.Duration(i) * time.Millisecond))
		for j, age := range s.keyAges {
			k := &registryv1.AgentKey{Kid: "k" + string(rune('1'+j)), Thumbprint: s.id + "-key" + string(rune('1'+j)), Algorithm: "ES256"}
			if !s.noAddTime {
				k.AddTime = timestamppb.New(now.Add(-age))
			}
			a.Keys = append(a.Keys, k)
		}
		f.fakes.Registry.Put(a)
	}
	return f, n
}

func (f *fixture) rotationSweep(t *testing.T, in workflows.RotationSweepInput) (workflows.RotationSweepResult, error) {
	t.Helper()
	f.env.ExecuteWorkflow(workflows.RotationSweepWorkflow, in)
	if !f.env.IsWorkflowCompleted() {
		t.Fatal("the rotation sweep did not complete")
	}
	var res workflows.RotationSweepResult
	err := f.env.GetWorkflowError()
	if err == nil {
		err = f.env.GetWorkflowResult(&res)
	}
	return res, err
}

// reminded lists the reminders as tenant/agent/key=status.
func reminded(res workflows.RotationSweepResult) []string {
	var out []string
	for _, r := range res.Reminders {
		out = append(out, r.Tenant+"/"+r.AgentID+"/"+r.Key+"="+r.Status)
	}
	return out
}

const (
	low      = registryv1.RiskTier_RISK_TIER_LOW
	moderate = registryv1.RiskTier_RISK_TIER_MODERATE
	high     = registryv1.RiskTier_RISK_TIER_HIGH
	unclass  = registryv1.RiskTier_RISK_TIER_UNSPECIFIED
)

func TestRotationSweepWorkflow(t *testing.T) {
	tests := []struct {
		name   string
		in     workflows.RotationSweepInput
		agents []keyedAgent
		want   []string // tenant/agent/key=status, in tenant and creation order
	}{
		{
			name: "default due days by risk tier, reminded 7 days ahead",
			agents: []keyedAgent{
				{tenant: tenant, id: "low-fresh", state: active, tier: low, keyAges: []time.Duration{82 * day}},
				{tenant: tenant, id: "low-due", state: active, tier: low, keyAges: []time.Duration{84 * day}},
				{tenant: tenant, id: "low-overdue", state: active, tier: low, keyAges: []time.Duration{91 * day}},
				{tenant: tenant, id: "mod-fresh", state: active, tier: moderate, keyAges: []time.Duration{22 * day}},
				{tenant: tenant, id: "mod-due", state: active, tier: moderate, keyAges: []time.Duration{24 * day}},
				{tenant: tenant, id: "high-due", state: active, tier: high, keyAges: []time.Duration{time.Hour}},
				{tenant: tenant, id: "high-overdue", state: active, tier: high, keyAges: []time.Duration{7 * day}},
				{tenant: tenant, id: "unclassified", state: active, tier: unclass, keyAges: []time.Duration{8 * day}},
				{tenant: "globex", id: "g-overdue", state: active, tier: moderate, keyAges: []time.Duration{31 * day}},
			},
			want: []string{
				"acme/low-due/low-due-key1=due", "acme/low-overdue/low-overdue-key1=overdue", "acme/mod-due/mod-due-key1=due",
				"acme/high-due/high-due-key1=due", "acme/high-overdue/high-overdue-key1=overdue",
				"acme/unclassified/unclassified-key1=overdue", "globex/g-overdue/g-overdue-key1=overdue",
			},
		},
		{
			name: "the newest key counts: an agent in the middle of a rotation is not due",
			agents: []keyedAgent{
				{tenant: tenant, id: "rotating", state: active, tier: moderate, keyAges: []time.Duration{40 * day, time.Hour}},
				{tenant: tenant, id: "stale-pair", state: active, tier: moderate, keyAges: []time.Duration{40 * day, 35 * day}},
			},
			want: []string{"acme/stale-pair/stale-pair-key2=overdue"},
		},
		{
			name: "only ACTIVE agents with keys; a key without add time counts from the agent's creation",
			agents: []keyedAgent{
				{tenant: tenant, id: "suspended", state: suspended, tier: high, keyAges: []time.Duration{30 * day}},
				{tenant: tenant, id: "pending", state: pending, tier: high, keyAges: []time.Duration{30 * day}},
				{tenant: tenant, id: "retired", state: retired, tier: high, keyAges: []time.Duration{30 * day}},
				{tenant: tenant, id: "keyless", state: active, tier: high},
				{tenant: tenant, id: "no-add-time", state: active, tier: low, keyAges: []time.Duration{time.Hour}, noAddTime: true},
			},
			want: []string{"acme/no-add-time/no-add-time-key1=overdue"},
		},
		{
			name: "configured due days and reminder window",
			in:   workflows.RotationSweepInput{DueDays: workflows.RotationDueDays{Low: 10, High: 2}, RemindDays: 1},
			agents: []keyedAgent{
				{tenant: tenant, id: "low-9", state: active, tier: low, keyAges: []time.Duration{9*day + time.Hour}},
				{tenant: tenant, id: "low-8", state: active, tier: low, keyAges: []time.Duration{8 * day}},
				{tenant: tenant, id: "high-2", state: active, tier: high, keyAges: []time.Duration{2 * day}},
				{tenant: tenant, id: "mod-default", state: active, tier: moderate, keyAges: []time.Duration{29*day + time.Hour}},
			},
			want: []string{"acme/low-9/low-9-key1=due", "acme/high-2/high-2-key1=overdue", "acme/mod-default/mod-default-key1=due"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, n := newRotationSweepFixture(t, tt.agents)
			res, err := f.rotationSweep(t, tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if got := reminded(res); !slices.Equal(got, tt.want) {
				t.Fatalf("reminders = %v, want %v", got, tt.want)
			}
			wantRef := "sweep:" + workflows.RotationSweepScheduleID + "/" + sweepRunTime
			if res.ChangeRef != wantRef || res.Scanned != len(tt.agents) || res.Due+res.Overdue != len(tt.want) || res.Delivered != len(tt.want) {
				t.Errorf("result = %+v, want change ref %s, %d scanned, %d reminded and delivered", res, wantRef, len(tt.agents), len(tt.want))
			}
			sent := n.all()
			if len(sent) != len(tt.want) {
				t.Fatalf("%d notifications sent, want %d: %+v", len(sent), len(tt.want), sent)
			}
			for i, r := range res.Reminders {
				s := sent[i]
				wantKind := workflows.NotificationRotationDue
				if r.Status == workflows.RotationOverdue {
					wantKind = workflows.NotificationRotationOverdue
				}
				if s.ID != r.NotificationID || r.NotificationID != workflows.RotationNotificationID(rotationSweepRunID, r.AgentID, r.Key) ||
					s.Kind != wantKind || s.Agent != r.Agent || s.RecipientRole != "owner" || s.Recipient != "team:payments" ||
					!strings.Contains(s.Summary, r.Key) || !strings.Contains(s.Summary, "agentctl agents rotate") {
					t.Errorf("notification %d = %+v for reminder %+v", i, s, r)
				}
				if !r.Delivered || r.Owner != "team:payments" || r.RiskTier == "" {
					t.Errorf("reminder %+v: want delivered, with owner and tier", r)
				}
				if r.Detail == "" && (r.KeyAddTime.IsZero() || r.DueTime.Sub(r.KeyAddTime) < 24*time.Hour) {
					t.Errorf("reminder %+v: want the key's add time and due time", r)
				}
			}
			if r := f.fakes.Requests("AddClientKey"); len(r) != 0 {
				t.Fatalf("a reminder changed a client: %v", r)
			}
		})
	}
}

// TestRotationSweepDueTime: the due time is the key's add time plus the tier's days.
func TestRotationSweepDueTime(t *testing.T) {
	f, _ := newRotationSweepFixture(t, []keyedAgent{{tenant: tenant, id: "m", state: active, tier: moderate, keyAges: []time.Duration{25 * day}}})
	res, err := f.rotationSweep(t, workflows.RotationSweepInput{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Reminders) != 1 {
		t.Fatalf("reminders = %v", reminded(res))
	}
	r := res.Reminders[0]
	if got := r.DueTime.Sub(r.KeyAddTime); got != 30*day {
		t.Errorf("due %s after the add time, want 30 days", got)
	}
	if want := res.Time.Add(-25 * day); !r.KeyAddTime.Equal(want) {
		t.Errorf("key add time %s, want %s", r.KeyAddTime, want)
	}
}

// flakyNotifier fails its first fails deliveries, then records.
type flakyNotifier struct {
	recordingNotifier
	mu    sync.Mutex
	fails int
}

func (n *flakyNotifier) Notify(ctx context.Context, x workflows.Notification) error {
	n.mu.Lock()
	fail := n.fails > 0
	if fail {
		n.fails--
	}
	n.mu.Unlock()
	if fail {
		return errors.New("webhook answered 503")
	}
	return n.recordingNotifier.Notify(ctx, x)
}

// TestRotationSweepFailsClosed: a registry that cannot answer is retried and one that refuses fails
// the run; neither is ever taken for "nothing due". A failed delivery is retried with the same id.
func TestRotationSweepFailsClosed(t *testing.T) {
	overdue := []keyedAgent{
		{tenant: tenant, id: "o1", state: active, tier: high, keyAges: []time.Duration{10 * day}},
		{tenant: tenant, id: "o2", state: active, tier: high, keyAges: []time.Duration{10 * day}},
	}
	want := []string{"acme/o1/o1-key1=overdue", "acme/o2/o2-key1=overdue"}

	t.Run("registry unreachable for a while: retried", func(t *testing.T) {
		f, n := newRotationSweepFixture(t, overdue)
		unavailable := errs.Unavailable("REGISTRY_UNAVAILABLE", "try again", nil)
		f.fakes.FailNext("ListAgents", unavailable, unavailable, unavailable)
		res, err := f.rotationSweep(t, workflows.RotationSweepInput{})
		if err != nil {
			t.Fatal(err)
		}
		if got := reminded(res); !slices.Equal(got, want) || len(n.all()) != 2 {
			t.Fatalf("reminders = %v, sent %d", got, len(n.all()))
		}
		if pages := len(f.fakes.Requests("ListAgents")); pages != 4 {
			t.Errorf("ListAgents called %d times, want 3 failures and 1 answer", pages)
		}
	})
	t.Run("tenants cannot be listed: the run fails", func(t *testing.T) {
		f, n := newRotationSweepFixture(t, overdue)
		f.fakes.FailNext("ListTenants", errs.PermissionDenied("MISSING_ROLE", "requires lifecycle-worker"))
		if _, err := f.rotationSweep(t, workflows.RotationSweepInput{}); err == nil || !strings.Contains(err.Error(), "ListTenants") {
			t.Fatalf("err = %v, want the registry's refusal", err)
		}
		if len(n.all()) != 0 {
			t.Fatalf("sent %v", n.all())
		}
	})
	t.Run("agents cannot be listed: the run fails", func(t *testing.T) {
		f, n := newRotationSweepFixture(t, overdue)
		f.fakes.FailNext("ListAgents", errs.PermissionDenied("MISSING_ROLE", "requires lifecycle-worker"))
		if _, err := f.rotationSweep(t, workflows.RotationSweepInput{}); err == nil || !strings.Contains(err.Error(), "ListAgents") {
			t.Fatalf("err = %v, want the registry's refusal", err)
		}
		if len(n.all()) != 0 {
			t.Fatalf("sent %v", n.all())
		}
	})
	t.Run("a failed delivery is retried with the same ids", func(t *testing.T) {
		f, _ := newRotationSweepFixture(t, overdue)
		n := &flakyNotifier{fails: 2}
		f.acts.Notifier = n
		res, err := f.rotationSweep(t, workflows.RotationSweepInput{})
		if err != nil {
			t.Fatal(err)
		}
		if got := reminded(res); !slices.Equal(got, want) || res.Delivered != 2 {
			t.Fatalf("reminders = %v, delivered %d", got, res.Delivered)
		}
		var ids []string
		for _, s := range n.all() {
			ids = append(ids, s.ID)
		}
		wantIDs := []string{workflows.RotationNotificationID(rotationSweepRunID, "o1", "o1-key1"), workflows.RotationNotificationID(rotationSweepRunID, "o2", "o2-key1")}
		if !slices.Equal(ids, wantIDs) {
			t.Fatalf("delivered ids %v, want %v", ids, wantIDs)
		}
	})
	t.Run("no notifier: recorded as not sent", func(t *testing.T) {
		f, _ := newRotationSweepFixture(t, overdue)
		f.acts.Notifier = nil
		res, err := f.rotationSweep(t, workflows.RotationSweepInput{})
		if err != nil {
			t.Fatal(err)
		}
		if got := reminded(res); !slices.Equal(got, want) || res.Delivered != 0 {
			t.Fatalf("reminders = %v, delivered %d", got, res.Delivered)
		}
		for _, r := range res.Reminders {
			if r.Delivered || !strings.Contains(r.Detail, "no notifier") || r.NotificationID == "" {
				t.Errorf("reminder %+v, want not sent with the reason and an id", r)
			}
		}
	})
}

// TestRotationSweepBadInput: due days or a reminder window out of range fail the run at once.
func TestRotationSweepBadInput(t *testing.T) {
	for _, in := range []workflows.RotationSweepInput{
		{DueDays: workflows.RotationDueDays{Low: -1}},
		{DueDays: workflows.RotationDueDays{Critical: workflows.MaxRotationDueDays + 1}},
		{RemindDays: -3},
	} {
		f, n := newRotationSweepFixture(t, []keyedAgent{{tenant: tenant, id: "o", state: active, tier: high, keyAges: []time.Duration{10 * day}}})
		if _, err := f.rotationSweep(t, in); err == nil || !strings.Contains(err.Error(), "INVALID_ARGUMENT") && !strings.Contains(err.Error(), "between") {
			t.Errorf("%+v: err = %v, want a refusal", in, err)
		}
		if len(n.all()) != 0 || len(f.fakes.Requests("ListAgents")) != 0 {
			t.Errorf("%+v: the refused run did something", in)
		}
	}
}

func TestRotationDueDays(t *testing.T) {
	d := workflows.RotationDueDays{Moderate: 20}
	for tier, want := range map[string]int{"low": 90, "moderate": 20, "high": 7, "critical": 7, "unclassified": 7, "": 7} {
		if got := d.For(tier); got != want {
			t.Errorf("For(%q) = %d, want %d", tier, got, want)
		}
	}
	if got := (workflows.RotationDueDays{High: 14, Critical: 3}).For("unclassified"); got != 3 {
		t.Errorf("unclassified takes %d days, want the strictest (3)", got)
	}
	if err := (workflows.RotationDueDays{High: -1}).Validate(); err == nil || !strings.Contains(err.Error(), "high") {
		t.Errorf("Validate = %v, want the tier named", err)
	}
}
