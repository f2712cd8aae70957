package workflows

import (
	"errors"
	"strings"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"
)

// KeyRemovalWorkflowName is the registered name of KeyRemovalWorkflow.
const KeyRemovalWorkflowName = "KeyRemovalWorkflow"

// StageKeyRemoval is the Stage of a key-removal run before it ends.
const StageKeyRemoval = "key-removal"

// KeyRemovalWorkflowID is the deterministic id of the removal of the agent's key with thumbprint from
// its client (one run per removed key: the registry never lets a removed key come back).
func KeyRemovalWorkflowID(tenant, agentID, thumbprint string) string {
	return "key-removal/" + tenant + "/" + agentID + "/" + thumbprint
}

// KeyRemovalInput starts KeyRemovalWorkflow for a key removed from an agent (agent.key_removed).
type KeyRemovalInput struct {
	// Tenant of the agent.
	Tenant string
	// Agent is the resource name.
	Agent string
	// AgentID is the agent id (its client's id).
	AgentID string
	// Thumbprint is the removed key's RFC 7638 thumbprint (base64url).
	Thumbprint string
	// Reason is the removal's reason, recorded with the client's removal and the revocation.
	Reason string
	// EventID is the agent.key_removed event's id.
	EventID string
}

// Validate says what required field is missing or malformed; a starter refuses such input before
// any run exists.
func (in KeyRemovalInput) Validate() error {
	if err := validateAgent(in.Tenant, in.Agent, in.AgentID); err != nil {
		return err
	}
	if in.Thumbprint == "" || len(in.Thumbprint) > 64 || strings.ContainsAny(in.Thumbprint, "/ \t\r\n") {
		return errors.New("key removal: Thumbprint must be an RFC 7638 thumbprint (base64url)")
	}
	return nil
}

// KeyRemovalResult is how a key-removal run ended.
type KeyRemovalResult struct {
	// Revocation is the resource name of the CLIENT_KEY revocation of the key's tokens.
	Revocation string
	// Detail says what could not be done (the key stayed on the client).
	Detail string
}

// KeyRemovalWorkflow makes a key removed from an agent in the registry (by its owner, an admin or a
// rotation) stop working at the issuer: it removes the key from the agent's client and then revokes
// every token the key obtained (a CLIENT_KEY revocation by the tokens' ckt claim, request id
// ClientKeyRevocationRequestID: a rotation that removed the same key wrote the same one). Both steps
// are idempotent and the run survives a crash between them (Temporal resumes it at the revocation).
// A removal the issuer refuses (the client's last key) still revokes the key's tokens, then fails
// the run with the refusal so that it is seen.
func KeyRemovalWorkflow(ctx workflow.Context, in KeyRemovalInput) (KeyRemovalResult, error) {
	if err := in.Validate(); err != nil {
		return KeyRemovalResult{}, temporal.NewNonRetryableApplicationError(err.Error(), "INVALID_ARGUMENT", nil)
	}
	wfID := workflow.GetInfo(ctx).WorkflowExecution.ID
	actx := workflow.WithActivityOptions(ctx, activityOptions)
	_ = workflow.UpsertTypedSearchAttributes(ctx, StageKey.ValueSet(StageKeyRemoval))
	reason := "agent key removed"
	if in.Reason != "" {
		reason += ": " + in.Reason
	}
	removeErr := workflow.ExecuteActivity(actx, acts.RemoveClientKey, ClientKeyRequest{
		Tenant: in.Tenant, ClientID: in.AgentID, Thumbprint: in.Thumbprint, Reason: reason, RequestID: requestID(wfID, "remove-client-key"),
	}).Get(ctx, nil)
	var res KeyRemovalResult
	if err := workflow.ExecuteActivity(actx, acts.RevokeClientKeyTokens, ClientKeyRequest{
		Tenant: in.Tenant, ClientID: in.AgentID, Thumbprint: in.Thumbprint, Reason: reason, RequestID: ClientKeyRevocationRequestID(in.AgentID, in.Thumbprint),
	}).Get(ctx, &res.Revocation); err != nil {
		return res, err
	}
	_ = workflow.UpsertTypedSearchAttributes(ctx, StageKey.ValueSet(StageDone))
	if removeErr != nil {
		res.Detail = "the key stays on the client: " + removeErr.Error()
		return res, removeErr
	}
	return res, nil
}
