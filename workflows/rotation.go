package workflows

import (
	"errors"
	"slices"
	"strings"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"
)

// RotationWorkflowName is the registered name of RotationWorkflow.
const RotationWorkflowName = "RotationWorkflow"

// DefaultRotationOverlap is how long both keys of a rotation authenticate before the old one goes.
const DefaultRotationOverlap = 24 * time.Hour

// Results of rotation runs.
const (
	// ResultRotated: the old keys were removed from the client and the registry and their tokens
	// revoked.
	ResultRotated = "rotated"
	// ResultStopped: the agent was suspended, retiring or gone, or the new key was no longer
	// registered; nothing was removed or re-enabled.
	ResultStopped = "stopped"
)

// Stages of rotation runs (search attribute Stage).
const (
	StageRotationAdd     = "rotation-add"
	StageRotationOverlap = "rotation-overlap"
	StageRotationRemove  = "rotation-remove"
)

// RotationWorkflowID is the deterministic id of the rotation to the agent's key with thumbprint.
func RotationWorkflowID(tenant, agentID, thumbprint string) string {
	return "rotation/" + tenant + "/" + agentID + "/" + thumbprint
}

// RotationInput starts RotationWorkflow for a key an agent added (agent.key_added).
type RotationInput struct {
	// Tenant of the agent.
	Tenant string
	// Agent is the resource name.
	Agent string
	// AgentID is the agent id.
	AgentID string
	// NewKeyJWK is the added public key as one JWK (JSON).
	NewKeyJWK string
	// NewKeyThumbprint is its RFC 7638 thumbprint (base64url).
	NewKeyThumbprint string
	// Overlap is how long both keys work; zero is DefaultRotationOverlap.
	Overlap time.Duration
	// EventID is the agent.key_added event's id (the causation of what the run records).
	EventID string
}

// Validate says what required field is missing or malformed; a starter refuses such input before
// any run exists.
func (in RotationInput) Validate() error {
	if err := validateAgent(in.Tenant, in.Agent, in.AgentID); err != nil {
		return err
	}
	switch {
	case strings.TrimSpace(in.NewKeyJWK) == "":
		return errors.New("rotation: NewKeyJWK is required")
	case in.NewKeyThumbprint == "" || len(in.NewKeyThumbprint) > 64 || strings.ContainsAny(in.NewKeyThumbprint, "/ \t\r\n"):
		return errors.New("rotation: NewKeyThumbprint must be an RFC 7638 thumbprint (base64url)")
	case in.Overlap < 0:
		return errors.New("rotation: Overlap must not be negative")
	}
	return nil
}

// RotationResult is how a rotation run ended.
type RotationResult struct {
	// Result is ResultRotated or ResultStopped.
	Result string
	// RemovedKeys are the thumbprints of the keys removed.
	RemovedKeys []string
	// Revocations are the resource names of the CLIENT_KEY revocations of their tokens.
	Revocations []string
	// Detail says why the run stopped.
	Detail string
}

// RotationWorkflow rotates an agent's credential with zero downtime: the new key is added to the
// agent's OAuth client (both keys authenticate), the run waits for the overlap, then removes every
// other key from the client and the registry and revokes the tokens each removed key obtained (a
// CLIENT_KEY revocation by the tokens' ckt claim: tokens of the new key stay valid), and records
// lifecycle.key_rotated. An agent that is not ACTIVE or PENDING when the run starts or when the
// overlap ends stops the run: nothing is removed and nothing re-enabled. Every step is idempotent by
// a request id derived from the workflow id.
func RotationWorkflow(ctx workflow.Context, in RotationInput) (RotationResult, error) {
	if err := in.Validate(); err != nil {
		return RotationResult{}, temporal.NewNonRetryableApplicationError(err.Error(), "INVALID_ARGUMENT", nil)
	}
	overlap := in.Overlap
	if overlap == 0 {
		overlap = DefaultRotationOverlap
	}
	wfID := workflow.GetInfo(ctx).WorkflowExecution.ID
	actx := workflow.WithActivityOptions(ctx, activityOptions)
	stage := func(s string) { _ = workflow.UpsertTypedSearchAttributes(ctx, StageKey.ValueSet(s)) }
	finish := func(res RotationResult, overlapEnd time.Time) (RotationResult, error) {
		stage(StageDone)
		rec := KeyRotatedRecord{
			Tenant: in.Tenant, Agent: in.Agent, AgentID: in.AgentID, WorkflowID: wfID, NewKey: in.NewKeyThumbprint,
			OldKeys: res.RemovedKeys, Outcome: res.Result, Detail: res.Detail, Revocations: res.Revocations,
			OverlapEnd: overlapEnd, CausationID: in.EventID, IdempotencyKey: requestID(wfID, "record"),
		}
		if err := workflow.ExecuteActivity(actx, acts.RecordKeyRotated, rec).Get(ctx, nil); err != nil {
			return res, err
		}
		return res, nil
	}

	stage(StageRotationAdd)
	var st RotationAgentState
	if err := workflow.ExecuteActivity(actx, acts.RotationAgent, RotationAgentRequest{Agent: in.Agent, NewKey: in.NewKeyThumbprint}).Get(ctx, &st); err != nil {
		return RotationResult{}, err
	}
	if detail := st.stopReason(in.NewKeyThumbprint); detail != "" {
		return finish(RotationResult{Result: ResultStopped, Detail: detail}, time.Time{})
	}
	if err := workflow.ExecuteActivity(actx, acts.AddClientKey, ClientKeyRequest{
		Tenant: in.Tenant, ClientID: in.AgentID, PublicJWK: in.NewKeyJWK, RequestID: requestID(wfID, "add-client-key"),
	}).Get(ctx, nil); err != nil {
		return RotationResult{}, err
	}

	stage(StageRotationOverlap)
	if err := workflow.Sleep(ctx, overlap); err != nil {
		return RotationResult{}, err
	}
	overlapEnd := workflow.Now(ctx).UTC()

	stage(StageRotationRemove)
	if err := workflow.ExecuteActivity(actx, acts.RotationAgent, RotationAgentRequest{Agent: in.Agent, NewKey: in.NewKeyThumbprint}).Get(ctx, &st); err != nil {
		return RotationResult{}, err
	}
	if detail := st.stopReason(in.NewKeyThumbprint); detail != "" {
		return finish(RotationResult{Result: ResultStopped, Detail: detail}, overlapEnd)
	}
	res := RotationResult{Result: ResultRotated}
	for _, old := range st.Keys {
		if old == in.NewKeyThumbprint {
			continue
		}
		step := "remove-" + old
		if err := workflow.ExecuteActivity(actx, acts.RemoveClientKey, ClientKeyRequest{
			Tenant: in.Tenant, ClientID: in.AgentID, Thumbprint: old, Reason: "rotation " + wfID, RequestID: requestID(wfID, step+"-client"),
		}).Get(ctx, nil); err != nil {
			return res, err
		}
		if err := workflow.ExecuteActivity(actx, acts.RemoveAgentKey, AgentKeyRemovalRequest{
			Agent: in.Agent, Thumbprint: old, Reason: "rotation " + wfID, RequestID: requestID(wfID, step+"-agent"),
		}).Get(ctx, nil); err != nil {
			return res, err
		}
		var rev string
		if err := workflow.ExecuteActivity(actx, acts.RevokeClientKeyTokens, ClientKeyRequest{
			Tenant: in.Tenant, ClientID: in.AgentID, Thumbprint: old, Reason: "rotation " + wfID, RequestID: requestID(wfID, "revoke-"+old),
		}).Get(ctx, &rev); err != nil {
			return res, err
		}
		res.RemovedKeys = append(res.RemovedKeys, old)
		if rev != "" {
			res.Revocations = append(res.Revocations, rev)
		}
	}
	slices.Sort(res.RemovedKeys)
	return finish(res, overlapEnd)
}

// RotationAgentRequest asks for what a rotation needs to know about its agent.
type RotationAgentRequest struct {
	// Agent is the resource name.
	Agent string
	// NewKey is the thumbprint of the rotation's new key.
	NewKey string
}

// RotationAgentState is the agent as a rotation sees it.
type RotationAgentState struct {
	// State is the agent's state without the AGENT_STATE_ prefix; "GONE" when it does not exist.
	State string
	// Keys are the thumbprints of the agent's keys, in the registry's order.
	Keys []string
}

// stopReason says why a rotation must stop here, "" when it goes on.
func (s RotationAgentState) stopReason(newKey string) string {
	switch s.State {
	case "ACTIVE", "PENDING":
	default:
		return "the agent is " + s.State + ": the rotation stops and re-enables nothing"
	}
	if !slices.Contains(s.Keys, newKey) {
		return "the new key is no longer registered for the agent: nothing is removed"
	}
	return ""
}
