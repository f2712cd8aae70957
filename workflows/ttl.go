package workflows

import (
	"context"
	"fmt"
	"strings"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/agentid/agentid/pkg/errs"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// TTLWorkflowName is the registered name of TTLWorkflow.
const TTLWorkflowName = "TTLWorkflow"

// TTLWorkflowID is the deterministic id of an ephemeral agent's TTL run.
func TTLWorkflowID(tenant, agentID string) string { return "ttl/" + tenant + "/" + agentID }

// Results of TTL runs.
const (
	// ResultExpired: the run asked the registry to retire the agent (trigger ttl).
	ResultExpired = "expired"
	// ResultGoneBefore: the agent left ACTIVE/SUSPENDED before it expired (retired on completion of
	// its task, or rejected); nothing was left to do.
	ResultGoneBefore = "gone_before_expiry"
	// ResultNoLongerExpires: the agent's expire_time was removed before it passed; nothing was done.
	ResultNoLongerExpires = "no_longer_expires"
)

// What ExpireTTLAgent found (ExpireResult.Outcome).
const (
	// ExpireOutcomeExpired: the agent is EXPIRED, by this request (or an earlier attempt of it).
	ExpireOutcomeExpired = "expired"
	// ExpireOutcomeLater: the registry holds a later expire_time than the run waited for (extended
	// since the run started): the run waits for it.
	ExpireOutcomeLater = "later"
	// ExpireOutcomeNoExpiry: the agent no longer has an expire_time.
	ExpireOutcomeNoExpiry = "no_expiry"
	// ExpireOutcomeNotExpirable: the agent's state allows no expiry (already EXPIRED, RETIRING,
	// RETIRED, REJECTED): its retirement decides what is left to do.
	ExpireOutcomeNotExpirable = "not_expirable"
)

// reasonNotExpired is the registry's FailedPrecondition reason of ExpireAgent before the agent's
// expire_time (or on an agent without one).
const reasonNotExpired = "NOT_EXPIRED"

// TTLInput starts TTLWorkflow for an agent with an expire time.
type TTLInput struct {
	// Tenant of the agent.
	Tenant string
	// Agent is the resource name.
	Agent string
	// AgentID is the agent id.
	AgentID string
	// ExpireTime is when the agent expires (UTC).
	ExpireTime time.Time
}

// TTLResult is how a TTL run ended.
type TTLResult struct {
	// Result is ResultExpired or ResultGoneBefore.
	Result string
	// State is the agent's state the run found at expiry.
	State string
}

// TTLWorkflow waits until the agent's expire time, records the expiry in the registry (ExpireAgent:
// the agent becomes EXPIRED and gets no more tokens) and then asks the registry to retire it with
// trigger ttl; the registry's agent.retirement_requested starts the deprovisioning saga, which
// tears everything down (client, keys, grants). An agent retired earlier (its task reported
// completion) is left alone; an agent whose expire_time was moved later is waited for again, one
// whose expire_time was removed is left alone. Runs recorded before versionTTLExpireFirst retire
// without recording the expiry.
func TTLWorkflow(ctx workflow.Context, in TTLInput) (TTLResult, error) {
	if err := validateAgent(in.Tenant, in.Agent, in.AgentID); err != nil {
		return TTLResult{}, err
	}
	if err := sleepUntil(ctx, in.ExpireTime); err != nil {
		return TTLResult{}, err
	}
	actx := workflow.WithActivityOptions(ctx, activityOptions)
	id := workflow.GetInfo(ctx).WorkflowExecution.ID
	if workflow.GetVersion(ctx, versionTTLExpireFirst, workflow.DefaultVersion, 1) >= 1 {
		for {
			var ex ExpireResult
			if err := workflow.ExecuteActivity(actx, acts.ExpireTTLAgent, ExpireRequest{
				Agent: in.Agent, ExpireTime: in.ExpireTime, RequestID: requestID(id, "expire"),
			}).Get(ctx, &ex); err != nil {
				return TTLResult{}, err
			}
			if ex.Outcome == ExpireOutcomeNoExpiry {
				return TTLResult{Result: ResultNoLongerExpires, State: ex.State}, nil
			}
			if ex.Outcome != ExpireOutcomeLater {
				break
			}
			in.ExpireTime = ex.ExpireTime
			if err := sleepUntil(ctx, in.ExpireTime); err != nil {
				return TTLResult{}, err
			}
		}
	}
	var res TTLResult
	err := workflow.ExecuteActivity(actx, acts.RetireExpired, RetireExpiredRequest{
		Agent: in.Agent, ExpireTime: in.ExpireTime, RequestID: requestID(id, "retire"),
	}).Get(ctx, &res)
	return res, err
}

// sleepUntil waits until t (not at all when t has passed).
func sleepUntil(ctx workflow.Context, t time.Time) error {
	if wait := t.Sub(workflow.Now(ctx)); wait > 0 {
		return workflow.Sleep(ctx, wait)
	}
	return nil
}

// ExpireRequest asks the registry to record that an agent's expire time has passed.
type ExpireRequest struct {
	// Agent is the resource name.
	Agent string
	// ExpireTime is the expire time the run waited for.
	ExpireTime time.Time
	// RequestID is the idempotency key.
	RequestID string
}

// ExpireResult is what ExpireTTLAgent found.
type ExpireResult struct {
	// Outcome is ExpireOutcomeExpired, ExpireOutcomeLater, ExpireOutcomeNoExpiry or
	// ExpireOutcomeNotExpirable.
	Outcome string
	// ExpireTime is the registry's expire_time when it is later than the one waited for.
	ExpireTime time.Time `json:",omitzero"`
	// State is the agent's state after the request.
	State string
}

// ExpireTTLAgent asks the registry to make the agent EXPIRED (ExpireAgent). An agent whose state
// allows no expiry (already EXPIRED, RETIRING, RETIRED, REJECTED) is left to RetireExpired. When the
// registry answers that the agent has not expired, the agent is read: a later expire_time (moved
// since the run started) or none is reported; the same expire_time means the registry's clock has
// not reached it yet, and the activity is retried.
func (a *Activities) ExpireTTLAgent(ctx context.Context, in ExpireRequest) (ExpireResult, error) {
	resp, err := a.Registry.ExpireAgent(ctx, &registryv1.ExpireAgentRequest{Name: in.Agent, RequestId: in.RequestID})
	if err == nil {
		return ExpireResult{Outcome: ExpireOutcomeExpired, State: stateName(resp.GetAgent().GetState())}, nil
	}
	e := errs.FromStatus(err)
	if e.Kind != errs.KindFailedPrecondition {
		return ExpireResult{}, classify("registry.ExpireAgent", err)
	}
	if e.Reason != reasonNotExpired {
		// A state that allows no expiry: RetireExpired decides what is left to do.
		return ExpireResult{Outcome: ExpireOutcomeNotExpirable, State: strings.TrimPrefix(e.Reason, "AGENT_STATE_")}, nil
	}
	agent, err := a.getAgent(ctx, in.Agent)
	if err != nil {
		return ExpireResult{}, err
	}
	st := stateName(agent.GetState())
	et := agent.GetExpireTime()
	switch {
	case !et.IsValid() || et.AsTime().IsZero():
		return ExpireResult{Outcome: ExpireOutcomeNoExpiry, State: st}, nil
	case et.AsTime().After(in.ExpireTime):
		return ExpireResult{Outcome: ExpireOutcomeLater, ExpireTime: et.AsTime().UTC(), State: st}, nil
	}
	// The registry's clock is behind the worker's: retried until it has passed the expire time.
	return ExpireResult{}, temporal.NewApplicationError(fmt.Sprintf("registry.ExpireAgent: the registry has not reached the expire time %s yet",
		et.AsTime().UTC().Format(time.RFC3339Nano)), reasonNotExpired)
}

// RetireExpiredRequest asks to retire an agent whose expire time has passed.
type RetireExpiredRequest struct {
	// Agent is the resource name.
	Agent string
	// ExpireTime is when it expired.
	ExpireTime time.Time
	// RequestID is the idempotency key.
	RequestID string
}

// RetireExpired retires an EXPIRED, ACTIVE, SUSPENDED or PENDING agent with trigger ttl; an agent in
// any other state (retiring, retired, rejected) is left as it is.
func (a *Activities) RetireExpired(ctx context.Context, in RetireExpiredRequest) (TTLResult, error) {
	agent, err := a.getAgent(ctx, in.Agent)
	if err != nil {
		return TTLResult{}, err
	}
	switch st := agent.GetState(); st {
	case registryv1.AgentState_AGENT_STATE_EXPIRED, registryv1.AgentState_AGENT_STATE_ACTIVE,
		registryv1.AgentState_AGENT_STATE_SUSPENDED, registryv1.AgentState_AGENT_STATE_PENDING:
	default:
		return TTLResult{Result: ResultGoneBefore, State: stateName(st)}, nil
	}
	_, err = a.Registry.RetireAgent(ctx, &registryv1.RetireAgentRequest{
		Name: in.Agent, Reason: fmt.Sprintf("expired at %s", in.ExpireTime.UTC().Format(time.RFC3339)),
		Trigger: TriggerTTL, RequestId: in.RequestID,
	})
	if e := errs.FromStatus(err); e != nil && e.Kind == errs.KindFailedPrecondition {
		// Retired meanwhile (e.g. its task reported completion): nothing left to do.
		return TTLResult{Result: ResultGoneBefore, State: "changed meanwhile"}, nil
	}
	if err != nil {
		return TTLResult{}, classify("registry.RetireAgent", err)
	}
	return TTLResult{Result: ResultExpired, State: stateName(agent.GetState())}, nil
}
