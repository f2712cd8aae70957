package workflows

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/assetgraph"
	"github.com/agentid/agentid/pkg/errs"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	lifecyclev1 "github.com/agentid/agentid/proto/gen/go/agentid/lifecycle/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// EventDeprovisioningCompleted is the evidence record of a finished deprovisioning (LIFECYCLE).
const EventDeprovisioningCompleted = "lifecycle.deprovisioning_completed"

// Cleanup removes what an agent leaves behind in one system (its dependent resources: data, queues,
// accounts) when it is deprovisioned. Implementations are idempotent by CleanupRequest.RequestID.
type Cleanup interface {
	// Name identifies the cleanup in the run's steps (cleanup:<name>).
	Name() string
	// Clean removes the agent's resources and says what it did.
	Clean(ctx context.Context, req CleanupRequest) (string, error)
}

// StepResult says what one step of a run did or found.
type StepResult struct {
	// Result is one line for the evidence.
	Result string
}

// SuspendRequest asks to suspend an agent that is still ACTIVE before it is deprovisioned.
type SuspendRequest struct {
	// Agent is the resource name.
	Agent string
	// Reason is recorded with the suspension.
	Reason string
	// Trigger is the retirement trigger.
	Trigger string
	// ChangeRef is the change reference, recorded as the suspension's ticket.
	ChangeRef string
	// RequestID is the idempotency key.
	RequestID string
}

// SuspendForDeprovisioning suspends the agent when it is ACTIVE (so it gets no token while it is torn
// down); an agent in any other state gets no token already and is left as it is.
func (a *Activities) SuspendForDeprovisioning(ctx context.Context, in SuspendRequest) (StepResult, error) {
	agent, err := a.getAgent(ctx, in.Agent)
	if err != nil {
		return StepResult{}, err
	}
	st := agent.GetState()
	if st != registryv1.AgentState_AGENT_STATE_ACTIVE {
		return StepResult{Result: "agent is " + stateName(st) + ": no token is issued, nothing to suspend"}, nil
	}
	_, err = a.Registry.SuspendAgent(ctx, &registryv1.SuspendAgentRequest{
		Name: in.Agent, Reason: clip(in.Reason, 1024), Cause: "policy", Ticket: in.ChangeRef, RequestId: in.RequestID,
	})
	if err != nil {
		// Retirement may have moved the agent on meanwhile: it gets no token either way.
		if e := errs.FromStatus(err); e != nil && e.Kind == errs.KindFailedPrecondition {
			return StepResult{Result: "agent left ACTIVE meanwhile: no token is issued, nothing to suspend"}, nil
		}
		return StepResult{}, classify("registry.SuspendAgent", err)
	}
	return StepResult{Result: "agent suspended"}, nil
}

func stateName(s registryv1.AgentState) string {
	return strings.TrimPrefix(s.String(), "AGENT_STATE_")
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// RevokeAgentTokensRequest asks to revoke every token of an agent.
type RevokeAgentTokensRequest struct {
	// Agent is the resource name.
	Agent string
	// Reason is recorded with the revocation.
	Reason string
	// RequestID is the idempotency key.
	RequestID string
}

// RevokeAgentTokens revokes every token issued to the agent (RevokeTokens by agent): verifiers refuse
// them once they have applied the revocation, whatever client they were issued to.
func (a *Activities) RevokeAgentTokens(ctx context.Context, in RevokeAgentTokensRequest) (StepResult, error) {
	tenant, _, ok := ParseAgentName(in.Agent)
	if !ok {
		return StepResult{}, temporal.NewNonRetryableApplicationError("agent "+in.Agent+" is not tenants/{tenant}/agents/{agent}", "INVALID_ARGUMENT", nil)
	}
	resp, err := a.Issuer.RevokeTokens(ctx, &issuerv1.RevokeTokensRequest{
		Parent: "tenants/" + tenant, Target: &issuerv1.RevokeTokensRequest_Agent{Agent: in.Agent},
		Reason: clip(in.Reason, 512), RequestId: in.RequestID,
	})
	if err != nil {
		return StepResult{}, classify("issuer.RevokeTokens", err)
	}
	if r := resp.GetRevocation(); r.GetName() != "" {
		return StepResult{Result: fmt.Sprintf("every token of the agent revoked (%s, sequence %d)", r.GetName(), r.GetSequence())}, nil
	}
	return StepResult{Result: "every token of the agent revoked (nothing outstanding)"}, nil
}

// RemoveGrantsRequest asks to remove what the platform grants an agent.
type RemoveGrantsRequest struct {
	// Tenant of the agent.
	Tenant string
	// AgentID is the agent id, also the client id.
	AgentID string
}

// RemoveGrants settles what the platform grants an agent — the scopes, resources and roles held by
// its OAuth client — and says exactly what that is: the issuer has no call that removes a client's
// grants, so nothing is removed; the revoke step disabled the client for good (a client is never
// enabled again and its id is tombstoned), so none of them can be granted any more. It checks that
// (CheckClient: a token request is refused) and fails with ErrStillActive while the issuer would
// still grant a token; the client record keeps the grants as the record of what the agent had, as
// the registry keeps the agent's scopes.
func (a *Activities) RemoveGrants(ctx context.Context, in RemoveGrantsRequest) (StepResult, error) {
	name := ClientName(in.Tenant, in.AgentID)
	resp, err := a.Issuer.GetClient(ctx, &issuerv1.GetClientRequest{Name: name})
	if IsClientNotFound(err) {
		return StepResult{Result: "no client was ever issued, so no scope, resource or role was ever granted; nothing to remove"}, nil
	}
	if err != nil {
		return StepResult{}, classify("issuer.GetClient", err)
	}
	c := resp.GetClient()
	// The issuer replica answering may apply the disable (or the agent's RETIRING state) a moment after
	// the one that recorded it: allow it the read lag before calling the client still active.
	var check *issuerv1.CheckClientResponse
	stillGranted := errors.New("still granted")
	err = untilVisible(ctx, a.readLag(), func() error {
		var cerr error
		if check, cerr = a.checkClient(ctx, name, time.Time{}); cerr != nil {
			return cerr
		}
		if !check.GetTokenRefused() {
			return stillGranted
		}
		return nil
	}, func(err error) bool { return errors.Is(err, stillGranted) })
	if err != nil && !errors.Is(err, stillGranted) {
		return StepResult{}, err
	}
	if !check.GetTokenRefused() {
		return StepResult{}, temporal.NewNonRetryableApplicationError(fmt.Sprintf("client %s would still be granted a token with scopes %v, resources %v, roles %v",
			name, check.GetScopes(), check.GetResources(), check.GetRoles()), ErrStillActive, nil)
	}
	return StepResult{Result: fmt.Sprintf("nothing removed (the issuer has no call to remove a client's grants): client %s refuses every token request (%s), "+
		"so none of its grants can be used; its record keeps scopes %v, resources %v, roles %v as what the agent had",
		name, refusal(check), orNone(c.GetScopes()), orNone(c.GetResources()), orNone(c.GetRoles()))}, nil
}

// refusal names why the issuer refuses a token request (the OAuth error and its reason).
func refusal(check *issuerv1.CheckClientResponse) string {
	if r := check.GetTokenReason(); r != "" {
		return check.GetTokenError() + ", " + r
	}
	return check.GetTokenError()
}

func orNone(s []string) any {
	if len(s) == 0 {
		return "none"
	}
	return s
}

// checkClient asks the issuer what its token endpoint and introspection would answer now.
func (a *Activities) checkClient(ctx context.Context, name string, issued time.Time) (*issuerv1.CheckClientResponse, error) {
	req := &issuerv1.CheckClientRequest{Name: name}
	if !issued.IsZero() {
		req.TokenIssueTime = timestamppb.New(issued)
	}
	resp, err := a.Issuer.CheckClient(ctx, req)
	if err != nil {
		return nil, classify("issuer.CheckClient", err)
	}
	return resp, nil
}

// ListCleanups names the configured cleanups, in order.
func (a *Activities) ListCleanups(_ context.Context) ([]string, error) {
	out := make([]string, 0, len(a.Cleanups))
	for _, c := range a.Cleanups {
		out = append(out, c.Name())
	}
	return out, nil
}

// CleanupRequest asks one cleanup to remove an agent's resources.
type CleanupRequest struct {
	// Name is the cleanup's name.
	Name string `json:"name"`
	// Tenant of the agent.
	Tenant string `json:"tenant"`
	// Agent is the resource name.
	Agent string `json:"agent"`
	// AgentID is the agent id.
	AgentID string `json:"agent_id"`
	// Trigger is the retirement trigger.
	Trigger string `json:"trigger"`
	// ChangeRef is the change reference.
	ChangeRef string `json:"change_ref,omitempty"`
	// RequestID is the idempotency key.
	RequestID string `json:"request_id"`
	// Dependencies are the agent's declared dependencies (queues, webhooks, storage, …), read by
	// RunCleanup from the registry through the agent's asset graph; the workflow leaves it unset.
	Dependencies []assetgraph.Dependency `json:"dependencies,omitzero"`
}

// RunCleanup runs the named cleanup. A cleanup that is no longer configured fails (non-retryable):
// the run must not conclude that nothing was left behind.
func (a *Activities) RunCleanup(ctx context.Context, in CleanupRequest) (StepResult, error) {
	i := slices.IndexFunc(a.Cleanups, func(c Cleanup) bool { return c.Name() == in.Name })
	if i < 0 {
		return StepResult{}, temporal.NewNonRetryableApplicationError("cleanup "+in.Name+" is not configured on this worker", "CLEANUP_NOT_CONFIGURED", nil)
	}
	deps, err := a.cleanupDependencies(ctx, in.Agent)
	if err != nil {
		return StepResult{}, err
	}
	in.Dependencies = deps
	res, err := a.Cleanups[i].Clean(ctx, in)
	if err != nil {
		return StepResult{}, fmt.Errorf("cleanup %s: %w", in.Name, err)
	}
	return StepResult{Result: res}, nil
}

// DeprovisionNotice is one notification about a deprovisioning.
type DeprovisionNotice struct {
	// Tenant of the agent.
	Tenant string `json:"tenant"`
	// Agent is the resource name.
	Agent string `json:"agent"`
	// To are the recipients by role: owner, sponsor, security.
	To []string `json:"to"`
	// Kind is sign_off_reminder or cleanup_failed.
	Kind string `json:"kind"`
	// Text says what is needed.
	Text string `json:"text"`
	// Steps are the run's steps so far, for a notice that needs them (cleanup_failed); reminders
	// carry none, so their size does not grow with the run.
	Steps []DeprovisionStep `json:"steps,omitempty"`
	// IdempotencyKey identifies the notice.
	IdempotencyKey string `json:"idempotency_key"`
}

// NotifyDeprovisioning sends a notice to each recipient role through Activities.Notifier (one
// notification per role, kind deprovisioning.<kind>); without a notifier it is only logged.
func (a *Activities) NotifyDeprovisioning(ctx context.Context, n DeprovisionNotice) error {
	if a.Notifier == nil {
		if activity.IsActivity(ctx) {
			activity.GetLogger(ctx).Warn("no notifier configured; deprovisioning notice logged only", "agent", n.Agent, "kind", n.Kind, "to", n.To, "text", n.Text)
		}
		return nil
	}
	steps := make([]string, 0, len(n.Steps))
	for _, s := range n.Steps {
		steps = append(steps, s.Time.UTC().Format(time.RFC3339)+" "+s.Name+": "+s.Result)
	}
	var wf, run string
	if activity.IsActivity(ctx) {
		info := activity.GetInfo(ctx)
		wf, run = info.WorkflowExecution.ID, info.WorkflowExecution.RunID
	}
	for _, to := range n.To {
		err := a.Notifier.Notify(ctx, Notification{
			ID: n.IdempotencyKey + "/" + to, Kind: "deprovisioning." + n.Kind, Tenant: n.Tenant, Agent: n.Agent,
			Summary: n.Text, RecipientRole: to, Actions: steps, WorkflowID: wf, RunID: run, Time: time.Now().UTC(),
		})
		if err != nil {
			return fmt.Errorf("notify %s about %s: %w", to, n.Agent, err)
		}
	}
	return nil
}

// VerifyDeprovisioned verifies by trying that the agent's access is gone: the issuer refuses a token
// request of its client at a gate (CheckClient: every gate but the signature, which needs the agent's
// private key the platform does not hold), introspection of a token issued to it up to now (its last
// token included) answers inactive, and so no scope, resource or role can be granted (the grants are
// not deleted: the client record keeps them), and the client is disabled. Anything
// still granted fails with the non-retryable type ErrStillActive (the workflow revokes again).
func (a *Activities) VerifyDeprovisioned(ctx context.Context, in VerifyRequest) (Verification, error) {
	base, err := a.VerifyRevocation(ctx, in)
	if err != nil {
		return Verification{}, err
	}
	name := ClientName(in.Tenant, in.AgentID)
	check, err := a.checkClient(ctx, name, base.VerifyTime)
	if err != nil {
		return Verification{}, err
	}
	now := time.Now().UTC()
	still := func(format string, args ...any) (Verification, error) {
		return Verification{}, temporal.NewNonRetryableApplicationError(fmt.Sprintf(format, args...), ErrStillActive, nil)
	}
	switch {
	case !check.GetTokenRefused():
		return still("a token request of client %s would be granted", name)
	case check.GetTokenActive():
		return still("a token of client %s issued at %s would introspect active", name, base.VerifyTime.Format(time.RFC3339))
	case len(check.GetScopes())+len(check.GetResources())+len(check.GetRoles()) > 0:
		return still("client %s still grants scopes %v, resources %v, roles %v", name, check.GetScopes(), check.GetResources(), check.GetRoles())
	}
	checks := append(base.Checks,
		fmt.Sprintf("token request refused: %s (%s)", check.GetTokenError(), check.GetTokenReason()),
		fmt.Sprintf("introspection of a token issued up to %s (the last one included): inactive (%s)", base.VerifyTime.Format(time.RFC3339), check.GetTokenInactiveReason()),
		fmt.Sprintf("no scope, resource or role can be granted: the token request is refused (%s) before any grant; "+
			"the client record and the registry keep the agent's scopes as the record of what it had", refusal(check)),
	)
	return Verification{VerifyTime: now, Checks: checks}, nil
}

// DeprovisioningCompletedRecord is the lifecycle.deprovisioning_completed evidence to record.
type DeprovisioningCompletedRecord struct {
	// Tenant of the agent.
	Tenant string
	// Agent is the resource name.
	Agent string
	// AgentID is the agent id.
	AgentID string
	// WorkflowID is the run's id.
	WorkflowID string
	// Trigger is what triggered the run.
	Trigger string
	// TriggerTime is when.
	TriggerTime time.Time
	// ChangeRef is the change reference.
	ChangeRef string
	// Steps are the run's steps, sign-offs included.
	Steps []DeprovisionStep
	// Checks are the verification checks that passed.
	Checks []string
	// CausationID is the id of the event that started the run, if known.
	CausationID string
	// IdempotencyKey is the key of the append.
	IdempotencyKey string
}

// RecordDeprovisioningCompleted appends lifecycle.deprovisioning_completed.
func (a *Activities) RecordDeprovisioningCompleted(ctx context.Context, in DeprovisioningCompletedRecord) error {
	msg := &lifecyclev1.DeprovisioningCompleted{
		Agent: in.Agent, WorkflowId: in.WorkflowID, Trigger: in.Trigger, TriggerTime: timestamppb.New(in.TriggerTime),
		ChangeRef: in.ChangeRef, Checks: in.Checks,
	}
	for _, s := range in.Steps {
		msg.Steps = append(msg.Steps, &lifecyclev1.DeprovisioningStep{Name: s.Name, Time: timestamppb.New(s.Time), Result: s.Result, Actor: s.Actor})
	}
	return a.record(ctx, in.Tenant, in.AgentID, in.Agent, EventDeprovisioningCompleted, in.IdempotencyKey, in.WorkflowID, in.CausationID, msg)
}
