package workflows

import (
	"context"
	"fmt"
	"time"

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
)

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

// TTLWorkflow waits until the agent's expire time and then asks the registry to retire it with
// trigger ttl; the registry's agent.retirement_requested starts the deprovisioning saga, which
// tears everything down (client, keys, grants). An agent retired earlier (its task reported
// completion) is left alone.
func TTLWorkflow(ctx workflow.Context, in TTLInput) (TTLResult, error) {
	if err := validateAgent(in.Tenant, in.Agent, in.AgentID); err != nil {
		return TTLResult{}, err
	}
	if wait := in.ExpireTime.Sub(workflow.Now(ctx)); wait > 0 {
		if err := workflow.Sleep(ctx, wait); err != nil {
			return TTLResult{}, err
		}
	}
	actx := workflow.WithActivityOptions(ctx, activityOptions)
	var res TTLResult
	err := workflow.ExecuteActivity(actx, acts.RetireExpired, RetireExpiredRequest{
		Agent: in.Agent, ExpireTime: in.ExpireTime, RequestID: requestID(workflow.GetInfo(ctx).WorkflowExecution.ID, "retire"),
	}).Get(ctx, &res)
	return res, err
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

// RetireExpired retires an ACTIVE, SUSPENDED or PENDING agent with trigger ttl; an agent in any other
// state (retiring, retired, rejected) is left as it is.
func (a *Activities) RetireExpired(ctx context.Context, in RetireExpiredRequest) (TTLResult, error) {
	agent, err := a.getAgent(ctx, in.Agent)
	if err != nil {
		return TTLResult{}, err
	}
	switch st := agent.GetState(); st {
	case registryv1.AgentState_AGENT_STATE_ACTIVE, registryv1.AgentState_AGENT_STATE_SUSPENDED, registryv1.AgentState_AGENT_STATE_PENDING:
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
