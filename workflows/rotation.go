package workflows

import (
	"errors"
	"fmt"
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
	// NewKeyJWK is the added public key as one JWK (JSON), as the event carried it. It is not
	// trusted: the run adds the key the registry holds under NewKeyThumbprint (anyone who can start
	// a run could put any key here).
	NewKeyJWK string
	// NewKeyThumbprint is its RFC 7638 thumbprint (base64url).
	NewKeyThumbprint string
	// Overlap is how long both keys work; zero is DefaultRotationOverlap.
	Overlap time.Duration
	// EventID is the agent.key_added event's id (the causation of what the run records).
	EventID string
	// ApprovalTimeout is how long a rotation of a high- or critical-tier agent waits for the owner's
	// decision before it rejects the new key; zero is DefaultRotationApprovalTimeout.
	ApprovalTimeout time.Duration
	// AddedBy is who added the new key (the agent.key_added event's actor). Since
	// versionRotationApprovalDuties they may not approve it: the agent's sponsor, its owner when the
	// sponsor added it, or a security-approver must. Empty: unknown, nobody is excluded.
	AddedBy string `json:",omitempty"`
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
	case in.ApprovalTimeout < 0:
		return errors.New("rotation: ApprovalTimeout must not be negative")
	}
	return nil
}

// RotationResult is how a rotation run ended.
type RotationResult struct {
	// Result is ResultRotated, ResultStopped or ResultRejected (the owner, or an approver, rejected
	// the new key of a high- or critical-tier agent, or nobody decided in time: the key was removed
	// from the registry and never added to the client).
	Result string
	// RemovedKeys are the thumbprints of the keys removed.
	RemovedKeys []string
	// Revocations are the resource names of the CLIENT_KEY revocations of their tokens.
	Revocations []string
	// Detail says why the run stopped or rejected the new key.
	Detail string
	// Decision is the owner's decision on the new key of a high- or critical-tier agent.
	Decision *TakenDecision `json:",omitempty"`
}

// RotationWorkflow rotates an agent's credential with zero downtime: the new key, read from the
// registry by its thumbprint, is added to the agent's OAuth client (both keys authenticate) and the
// owner notified, the run waits for the overlap, then removes the keys added before the new one from
// the client and the registry and revokes the tokens each removed key obtained (a CLIENT_KEY
// revocation by the tokens' ckt claim: tokens of the new key stay valid), and records
// lifecycle.key_rotated (rotate; runs recorded before versionRotationKeySafety take rotateV0). An agent that is not ACTIVE or PENDING when the run starts or when the
// overlap ends stops the run: nothing is removed and nothing re-enabled. Since
// versionRotationOwnerApproval the new key of a high- or critical-tier agent is added to the client
// only after its owner approved it (update "decide" with an approval token); a rejection, or no
// decision within the approval timeout, removes the key from the registry. Query "status" shows
// where the run is and what it waits for. Every step is idempotent by a request id derived from the
// workflow id.
func RotationWorkflow(ctx workflow.Context, in RotationInput) (RotationResult, error) {
	if err := in.Validate(); err != nil {
		return RotationResult{}, temporal.NewNonRetryableApplicationError(err.Error(), "INVALID_ARGUMENT", nil)
	}
	g := &rotationGate{agent: in.Agent, status: RotationStatus{NewKey: in.NewKeyThumbprint}}
	if err := g.registerHandlers(ctx); err != nil {
		return RotationResult{}, err
	}
	if workflow.GetVersion(ctx, versionRotationKeySafety, workflow.DefaultVersion, 1) == workflow.DefaultVersion {
		return rotateV0(ctx, in)
	}
	res, err := rotate(ctx, in, g)
	g.status.Result = res.Result
	return res, err
}

// rotateV0 is the rotation of runs recorded before versionRotationKeySafety: it removes every key but
// the new one, from the registry's list, and revokes after the registry's removal.
func rotateV0(ctx workflow.Context, in RotationInput) (RotationResult, error) {
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
		Tenant: in.Tenant, Agent: in.Agent, ClientID: in.AgentID, Thumbprint: in.NewKeyThumbprint, RequestID: requestID(wfID, "add-client-key"),
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

// rotate is the rotation of runs from versionRotationKeySafety on. The new key's JWK is read from the
// registry by thumbprint (never from the input), the owner is notified of the addition, and the key is
// checked again after it reached the client: a key removed from the registry meanwhile is taken off
// the client at once. When the overlap ends only the keys added BEFORE the new one go: from the client
// those that precede it in the client's own key list (read from the issuer), each revoked right after
// its removal, and from the registry those with an earlier add time. A stop leaves no key on the
// client that the registry does not hold.
func rotate(ctx workflow.Context, in RotationInput, g *rotationGate) (RotationResult, error) {
	overlap := in.Overlap
	if overlap == 0 {
		overlap = DefaultRotationOverlap
	}
	wfID := workflow.GetInfo(ctx).WorkflowExecution.ID
	actx := workflow.WithActivityOptions(ctx, activityOptions)
	stage := func(s string) {
		g.status.Stage = s
		_ = workflow.UpsertTypedSearchAttributes(ctx, StageKey.ValueSet(s))
	}
	reason := "rotation " + wfID
	var decision *TakenDecision // the owner's decision, for high- and critical-tier agents
	finish := func(res RotationResult, overlapEnd time.Time) (RotationResult, error) {
		stage(StageDone)
		slices.Sort(res.RemovedKeys)
		if res.Decision == nil && decision != nil {
			res.Decision = decision
			if res.Detail == "" {
				res.Detail = fmt.Sprintf("the new key was approved by %s (%s)", decision.Decider, decision.Role)
			}
		}
		rec := KeyRotatedRecord{
			Tenant: in.Tenant, Agent: in.Agent, AgentID: in.AgentID, WorkflowID: wfID, NewKey: in.NewKeyThumbprint,
			OldKeys: res.RemovedKeys, Outcome: res.Result, Detail: res.Detail, Revocations: res.Revocations,
			OverlapEnd: overlapEnd, CausationID: in.EventID, IdempotencyKey: requestID(wfID, "record"), Decision: res.Decision,
		}
		if err := workflow.ExecuteActivity(actx, acts.RecordKeyRotated, rec).Get(ctx, nil); err != nil {
			return res, err
		}
		return res, nil
	}
	agent := func() (RotationAgentState, error) {
		var st RotationAgentState
		err := workflow.ExecuteActivity(actx, acts.RotationAgent, RotationAgentRequest{Agent: in.Agent, NewKey: in.NewKeyThumbprint}).Get(ctx, &st)
		return st, err
	}
	// removeFromClient takes key off the client and revokes the tokens it obtained right after, so
	// no later failure can leave its tokens alive; the revocation's request id is the key's own,
	// shared with the key-removal run of its agent.key_removed (one revocation per key).
	removeFromClient := func(res *RotationResult, key string) error {
		if err := workflow.ExecuteActivity(actx, acts.RemoveClientKey, ClientKeyRequest{
			Tenant: in.Tenant, ClientID: in.AgentID, Thumbprint: key, Reason: reason, RequestID: requestID(wfID, "remove-"+key+"-client"),
		}).Get(ctx, nil); err != nil {
			return err
		}
		var rev string
		if err := workflow.ExecuteActivity(actx, acts.RevokeClientKeyTokens, ClientKeyRequest{
			Tenant: in.Tenant, ClientID: in.AgentID, Thumbprint: key, Reason: reason, RequestID: ClientKeyRevocationRequestID(in.AgentID, key),
		}).Get(ctx, &rev); err != nil {
			return err
		}
		if rev != "" {
			res.Revocations = append(res.Revocations, rev)
		}
		return nil
	}
	// dropNewKey stops a run whose new key left the registry: the key leaves the client too.
	dropNewKey := func(overlapEnd time.Time) (RotationResult, error) {
		res := RotationResult{Result: ResultStopped, Detail: "the new key is no longer registered for the agent: it was taken off the client, its tokens revoked, and no other key removed"}
		if err := removeFromClient(&res, in.NewKeyThumbprint); err != nil {
			return res, err
		}
		return finish(res, overlapEnd)
	}

	stage(StageRotationAdd)
	st, err := agent()
	if err != nil {
		return RotationResult{}, err
	}
	if detail := st.stopReason(in.NewKeyThumbprint); detail != "" {
		return finish(RotationResult{Result: ResultStopped, Detail: detail}, time.Time{})
	}
	g.status.RiskTier = st.RiskTier
	approval := rotationNeedsApproval(st.RiskTier) &&
		workflow.GetVersion(ctx, versionRotationOwnerApproval, workflow.DefaultVersion, 1) == 1
	if err := workflow.ExecuteActivity(actx, acts.NotifyKeyAdded, KeyAddedNotice{
		Tenant: in.Tenant, Agent: in.Agent, AgentID: in.AgentID, Owner: st.Owner, RiskTier: st.RiskTier, Thumbprint: in.NewKeyThumbprint,
		WorkflowID: wfID, NotificationID: requestID(wfID, "key-added"), Overlap: overlap, AwaitsApproval: approval,
	}).Get(ctx, nil); err != nil {
		return RotationResult{}, err
	}
	if approval {
		timeout := in.ApprovalTimeout
		if timeout == 0 {
			timeout = DefaultRotationApprovalTimeout
		}
		stage(StageRotationApproval)
		g.duties = workflow.GetVersion(ctx, versionRotationApprovalDuties, workflow.DefaultVersion, 1) >= 1
		g.addedBy = in.AddedBy
		if decision, err = g.awaitOwner(ctx, timeout); err != nil {
			return RotationResult{}, err
		}
		if decision == nil || decision.Decision != DecisionApprove {
			// Nothing was added to the client: the key only leaves the registry.
			if err := workflow.ExecuteActivity(actx, acts.RemoveAgentKey, AgentKeyRemovalRequest{
				Agent: in.Agent, Thumbprint: in.NewKeyThumbprint, Reason: reason + ": " + rejectDetail(decision, timeout),
				RequestID: requestID(wfID, "reject-"+in.NewKeyThumbprint+"-agent"),
			}).Get(ctx, nil); err != nil {
				return RotationResult{}, err
			}
			return finish(RotationResult{Result: ResultRejected, Detail: rejectDetail(decision, timeout), Decision: decision}, time.Time{})
		}
		// The agent may have changed while the owner decided.
		stage(StageRotationAdd)
		if st, err = agent(); err != nil {
			return RotationResult{}, err
		}
		if detail := st.stopReason(in.NewKeyThumbprint); detail != "" {
			return finish(RotationResult{Result: ResultStopped, Detail: detail, Decision: decision}, time.Time{})
		}
	}
	if err := workflow.ExecuteActivity(actx, acts.AddClientKey, ClientKeyRequest{
		Tenant: in.Tenant, Agent: in.Agent, ClientID: in.AgentID, Thumbprint: in.NewKeyThumbprint, RequestID: requestID(wfID, "add-client-key"),
	}).Get(ctx, nil); err != nil {
		return RotationResult{}, err
	}
	// A removal of the new key that ran before the key reached the client removed nothing there.
	if st, err = agent(); err != nil {
		return RotationResult{}, err
	}
	if !slices.Contains(st.Keys, in.NewKeyThumbprint) {
		return dropNewKey(time.Time{})
	}
	if detail := st.stopReason(in.NewKeyThumbprint); detail != "" {
		return finish(RotationResult{Result: ResultStopped, Detail: detail}, time.Time{})
	}

	stage(StageRotationOverlap)
	if err := workflow.Sleep(ctx, overlap); err != nil {
		return RotationResult{}, err
	}
	overlapEnd := workflow.Now(ctx).UTC()

	stage(StageRotationRemove)
	if st, err = agent(); err != nil {
		return RotationResult{}, err
	}
	if !slices.Contains(st.Keys, in.NewKeyThumbprint) {
		return dropNewKey(overlapEnd)
	}
	if detail := st.stopReason(in.NewKeyThumbprint); detail != "" {
		return finish(RotationResult{Result: ResultStopped, Detail: detail}, overlapEnd)
	}
	var ck ClientKeysState
	if err := workflow.ExecuteActivity(actx, acts.ClientKeys, ClientKeyRequest{
		Tenant: in.Tenant, ClientID: in.AgentID, Thumbprint: in.NewKeyThumbprint,
	}).Get(ctx, &ck); err != nil {
		return RotationResult{}, err
	}
	if ck.Exists && !ck.HasKey {
		return finish(RotationResult{Result: ResultStopped,
			Detail: "the new key is not on the agent's client: no key is removed (the agent would be locked out)"}, overlapEnd)
	}
	res := RotationResult{Result: ResultRotated}
	for _, old := range ck.Before {
		if err := removeFromClient(&res, old); err != nil {
			return res, err
		}
		res.RemovedKeys = append(res.RemovedKeys, old)
	}
	for _, old := range st.Before {
		if err := workflow.ExecuteActivity(actx, acts.RemoveAgentKey, AgentKeyRemovalRequest{
			Agent: in.Agent, Thumbprint: old, Reason: reason, RequestID: requestID(wfID, "remove-"+old+"-agent"),
		}).Get(ctx, nil); err != nil {
			return res, err
		}
		if !slices.Contains(res.RemovedKeys, old) {
			res.RemovedKeys = append(res.RemovedKeys, old)
		}
	}
	return finish(res, overlapEnd)
}

// ClientKeyRevocationRequestID is the request id of the CLIENT_KEY revocation of the tokens client
// obtained with the key of thumbprint: the rotation and the key-removal run share it, so a key's
// tokens are revoked once however many runs remove it.
func ClientKeyRevocationRequestID(clientID, thumbprint string) string {
	return "client-key-removed/" + clientID + "/" + thumbprint
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
	// Before are the thumbprints of the keys added before the new key (by the registry's add time;
	// equal times by the registry's order); empty when the new key is not registered.
	Before []string
	// Owner and RiskTier (without the RISK_TIER_ prefix) of the agent, for the owner's notice.
	Owner, RiskTier string
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
