package workflows

import (
	"context"
	"fmt"
	"time"

	"go.temporal.io/sdk/activity"

	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// RotationDuePageRequest asks a rotation sweep to look at one page of a tenant's agents.
type RotationDuePageRequest struct {
	// Tenant whose agents are listed.
	Tenant string
	// PageToken is the registry's page token; empty for the first page.
	PageToken string
	// Now is the run's reference time.
	Now time.Time
	// DueDays are the due days by risk tier (normalized).
	DueDays RotationDueDays
	// RemindDays is the reminder window before the due date.
	RemindDays int
}

// RotationDuePageResult is what one page held.
type RotationDuePageResult struct {
	// Scanned is how many agents the page held.
	Scanned int
	// Due are the keys due within the reminder window or overdue, not yet reminded.
	Due []RotationReminder
	// NextPageToken is the registry's token of the next page; empty on the last.
	NextPageToken string
}

// RotationDuePage reads one page of a tenant's agents and returns each ACTIVE agent whose current
// key (the newest by add time) is due for rotation within in.RemindDays, or overdue. A key without
// an add time counts from the agent's creation; one with neither is overdue (fail closed). An agent
// without keys (it authenticates otherwise) has nothing to rotate. A registry that cannot answer
// fails the page (retried): it is never taken for "nothing due".
func (a *Activities) RotationDuePage(ctx context.Context, in RotationDuePageRequest) (RotationDuePageResult, error) {
	resp, err := a.Registry.ListAgents(ctx, &registryv1.ListAgentsRequest{
		Parent: "tenants/" + in.Tenant, PageSize: SweepPageSize, PageToken: in.PageToken,
	})
	if err != nil {
		return RotationDuePageResult{}, classify("registry.ListAgents", err)
	}
	out := RotationDuePageResult{Scanned: len(resp.GetAgents()), NextPageToken: resp.GetNextPageToken()}
	for _, agent := range resp.GetAgents() {
		if agent.GetState() != registryv1.AgentState_AGENT_STATE_ACTIVE {
			continue
		}
		if r, ok := rotationDue(in, agent); ok {
			out.Due = append(out.Due, r)
		}
	}
	return out, nil
}

// rotationDue says whether agent's current key is due or overdue at in.Now, and describes it.
func rotationDue(in RotationDuePageRequest, agent *registryv1.Agent) (RotationReminder, bool) {
	var current *registryv1.AgentKey
	for _, k := range agent.GetKeys() {
		if current == nil || k.GetAddTime().AsTime().After(current.GetAddTime().AsTime()) {
			current = k
		}
	}
	if current == nil {
		return RotationReminder{}, false
	}
	tier := RiskTierName(agent.GetRiskTier())
	r := RotationReminder{
		Tenant: in.Tenant, Agent: agent.GetName(), AgentID: agent.GetAgentId(), Owner: agent.GetOwner(),
		RiskTier: tier, Key: current.GetThumbprint(),
	}
	added := current.GetAddTime()
	if !added.IsValid() || added.AsTime().IsZero() || added.AsTime().Unix() <= 0 {
		added = agent.GetCreateTime()
	}
	if !added.IsValid() || added.AsTime().Unix() <= 0 {
		r.Status, r.Detail = RotationOverdue, "the key's add time is unknown"
		return r, true
	}
	r.KeyAddTime = added.AsTime().UTC()
	r.DueTime = r.KeyAddTime.Add(time.Duration(in.DueDays.For(tier)) * 24 * time.Hour)
	switch {
	case !r.DueTime.After(in.Now):
		r.Status = RotationOverdue
	case !r.DueTime.After(in.Now.Add(time.Duration(in.RemindDays) * 24 * time.Hour)):
		r.Status = RotationDue
	default:
		return RotationReminder{}, false
	}
	return r, true
}

// RotationRemindRequest asks to remind the owners of keys due for rotation.
type RotationRemindRequest struct {
	// RunID is the sweep's workflow id: notification ids are derived from it, the agent and the key.
	RunID string
	// ChangeRef is the run's change reference.
	ChangeRef string
	// Reminders are the keys to remind.
	Reminders []RotationReminder
}

// RotationNotificationID is the id of the reminder of run about an agent's key: a retried delivery,
// or a retried page, repeats it (receivers de-duplicate).
func RotationNotificationID(runID, agentID, thumbprint string) string {
	return runID + "/" + agentID + "/" + thumbprint
}

// RemindRotation sends one notification per key to the agent's owner through Activities.Notifier
// (kind rotation.due or rotation.overdue) and returns the reminders with their notification ids and
// whether each was delivered. Without a notifier nothing is sent and each says so. A delivery that
// fails is retried (the activity's retry policy; the reminders already delivered go again with the
// same ids).
func (a *Activities) RemindRotation(ctx context.Context, in RotationRemindRequest) ([]RotationReminder, error) {
	var run string
	if activity.IsActivity(ctx) {
		run = activity.GetInfo(ctx).WorkflowExecution.RunID
	}
	out := make([]RotationReminder, 0, len(in.Reminders))
	for _, r := range in.Reminders {
		r.NotificationID = RotationNotificationID(in.RunID, r.AgentID, r.Key)
		if a.Notifier == nil {
			r.Detail = joinDetail(r.Detail, "not sent: no notifier configured")
			out = append(out, r)
			continue
		}
		kind := NotificationRotationDue
		if r.Status == RotationOverdue {
			kind = NotificationRotationOverdue
		}
		err := a.Notifier.Notify(ctx, Notification{
			ID: r.NotificationID, Kind: kind, Tenant: r.Tenant, Agent: r.Agent, Severity: r.Status,
			Summary: rotationSummary(r), RecipientRole: HolderOwner, Recipient: r.Owner,
			WorkflowID: in.RunID, RunID: run, Time: time.Now().UTC(),
		})
		if err != nil {
			return nil, fmt.Errorf("remind the owner of %s about key %s: %w", r.Agent, r.Key, err)
		}
		r.Delivered = true
		out = append(out, r)
	}
	return out, nil
}

// rotationSummary says what is due, for the owner.
func rotationSummary(r RotationReminder) string {
	if r.DueTime.IsZero() {
		return fmt.Sprintf("The key %s of agent %s (risk tier %s) is overdue for rotation: %s. Rotate it with `agentctl agents rotate %s --key-out NEW.json`.",
			r.Key, r.Agent, r.RiskTier, r.Detail, r.Agent)
	}
	verb := "is due for rotation on"
	if r.Status == RotationOverdue {
		verb = "was due for rotation on"
	}
	return fmt.Sprintf("The key %s of agent %s (risk tier %s, added %s) %s %s. Rotate it with `agentctl agents rotate %s --key-out NEW.json`.",
		r.Key, r.Agent, r.RiskTier, r.KeyAddTime.Format(time.RFC3339), verb, r.DueTime.Format(time.RFC3339), r.Agent)
}

// joinDetail appends more to detail.
func joinDetail(detail, more string) string {
	if detail == "" {
		return more
	}
	return detail + "; " + more
}
