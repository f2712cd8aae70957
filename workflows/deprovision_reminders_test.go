package workflows_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"

	"github.com/agentid/agentid/workflows"
)

// TestDeprovisionSignOffRemindersBounded: a sign-off that waits long is reminded at most hourly (a
// RemindEvery of a minute is raised to MinSignOffRemindEvery), at most daily after
// SignOffRemindersAtFullRate reminders; the reminders are counted in one step, not one step each, and
// no notice carries the run's step list.
func TestDeprovisionSignOffRemindersBounded(t *testing.T) {
	const agentID = "d-remind"
	f := newFixture(t, workflows.DeprovisionWorkflowID(tenant, agentID))
	f.fakes.Registry.Put(retiringAgent(agentID))
	f.fakes.Issuer.Put(activeClient(agentID))
	f.env.OnRequestCancelExternalWorkflow(mock.Anything, mock.Anything, mock.Anything).Return(nil)
	notifier := &recordingNotifier{}
	f.acts.Notifier = notifier
	// 48 hourly reminders fill the first 48 hours, then daily ones at 72 h and 96 h: 50 before 100 h.
	const signAt, wantReminders = 100 * time.Hour, workflows.SignOffRemindersAtFullRate + 2
	f.env.RegisterDelayedCallback(func() {
		f.env.SignalWorkflow(workflows.SignOffSignal, tokenApproval(t, agentID, "alice@corp.example", "owner", "sign_off", "late"))
	}, signAt)
	in := deprovisionInput(agentID)
	in.SignOffSteps = []string{workflows.StepOwner}
	in.RemindEvery, in.EscalateAfter = time.Minute, 1000*time.Hour
	f.env.ExecuteWorkflow(workflows.DeprovisionWorkflow, in)

	var res workflows.DeprovisionResult
	if err := f.env.GetWorkflowResult(&res); err != nil {
		t.Fatal(err)
	}
	sent := notifier.all()
	if len(sent) != wantReminders {
		t.Fatalf("%d reminders sent, want %d (hourly for %d, then daily)", len(sent), wantReminders, workflows.SignOffRemindersAtFullRate)
	}
	for i, n := range sent {
		if n.Kind != "deprovisioning.sign_off_reminder" || n.RecipientRole != "owner" || len(n.Actions) != 0 ||
			!strings.HasSuffix(n.Summary, fmt.Sprintf("(reminder %d)", i+1)) {
			t.Fatalf("reminder %d = %+v, want an owner reminder numbered %d without the step list", i, n, i+1)
		}
	}
	var reminders []workflows.DeprovisionStep
	for _, s := range res.Steps {
		if strings.HasPrefix(s.Name, "reminder") {
			reminders = append(reminders, s)
		}
	}
	if len(reminders) != 1 || reminders[0].Name != "reminders:owner" ||
		!strings.HasPrefix(reminders[0].Result, fmt.Sprintf("reminded %d times while waiting since ", wantReminders)) ||
		!strings.HasSuffix(reminders[0].Result, " to owner") {
		t.Fatalf("reminder steps = %+v, want one reminders:owner counting %d reminders", reminders, wantReminders)
	}
	if got := stepNames(res.Steps); got[len(got)-1] != "sign_off:owner" || got[len(got)-2] != "reminders:owner" {
		t.Fatalf("steps = %v, want reminders:owner right before sign_off:owner", got)
	}
}
