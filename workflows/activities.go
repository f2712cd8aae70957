package workflows

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/directory"
	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/failpoint"
	"github.com/agentid/agentid/pkg/policydoc"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	lifecyclev1 "github.com/agentid/agentid/proto/gen/go/agentid/lifecycle/v1"
	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
	policyv1 "github.com/agentid/agentid/proto/gen/go/agentid/policy/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// Lifecycle event types, recorded on stream LIFECYCLE under aggregate "lifecycle" (one per agent).
const (
	EventProvisioningDecided    = "lifecycle.provisioning_decided"
	EventDeprovisioningVerified = "lifecycle.deprovisioning_verified"
)

// DefaultActor is the actor id recorded on lifecycle events when Activities.Actor is empty.
const DefaultActor = "lifecycle"

// AutoApprover is who approved when policy allowed without a human.
const AutoApprover = "policy:auto"

// DefaultTokenTTLSeconds is the access token lifetime of agent clients the workflows create.
const DefaultTokenTTLSeconds = 600

// Activities calls the platform's services for the workflows. Every method is idempotent: mutating
// calls carry the request id the workflow derived from its id and the step. Errors the caller cannot fix
// by retrying (InvalidArgument, NotFound, PermissionDenied, FailedPrecondition) are non-retryable
// application errors whose type is the errs reason code; everything else is retried with backoff.
type Activities struct {
	// Registry is the registry's gRPC client.
	Registry registryv1.RegistryServiceClient
	// Issuer is the issuer's gRPC client.
	Issuer issuerv1.IssuerServiceClient
	// Policy is the policy service's gRPC client.
	Policy policyv1.PolicyServiceClient
	// Monitor is the monitor's gRPC client (the inactivity sweep asks it for activity); nil fails
	// that sweep (closed: no answer is never "inactive").
	Monitor monitorv1.MonitorServiceClient
	// Events records lifecycle.* events on stream LIFECYCLE.
	Events *eventstore.Store
	// Actor is the principal id recorded as the actor of lifecycle events (default DefaultActor).
	Actor string
	// ReadLag bounds how long a call waits for a service's read model to show a change the run
	// reacts to or has just made (default DefaultReadLag).
	ReadLag time.Duration
	// NotFoundRetryFor bounds how long an agent the registry does not know is retried as read-model
	// lag (default DefaultNotFoundRetryFor).
	NotFoundRetryFor time.Duration
	// ApprovalTokens verifies approval tokens; nil refuses every approval token (fail closed).
	ApprovalTokens ApprovalTokenVerifier
	// AgentResources are the RFC 8707 resources registered for every agent client CreateClient
	// creates: the only audiences its tokens may have (the registry holds no per-agent resources
	// yet). Empty: agents can obtain no token until resources are registered for them.
	AgentResources []string
	// Notifier delivers incident notifications; nil records each as not sent.
	Notifier Notifier
	// IncidentPolicy maps alerts to incident actions; nil is the built-in table.
	IncidentPolicy *IncidentPolicy
	// Cleanups are the cleanups deprovisioning runs for every agent, in order (none: nothing to
	// clean, recorded as such).
	Cleanups []Cleanup
	// Runs cancels provisioning runs for deprovisioning (CancelProvisioning); nil: the worker's own
	// Temporal client.
	Runs RunCanceller
}

// Policy outcomes as the workflows see them.
const (
	OutcomeAllow           = "allow"
	OutcomeRequireApproval = "require_approval"
	OutcomeDeny            = "deny"
)

// AdmissionRequest asks for the policy decision on an agent.
type AdmissionRequest struct {
	// Tenant of the agent.
	Tenant string
	// Agent is the resource name.
	Agent string
	// RequestID is the idempotency key of the evaluation.
	RequestID string
}

// AdmissionDecision is the policy decision on an agent.
type AdmissionDecision struct {
	// DecisionID identifies the recorded decision.
	DecisionID string
	// Outcome is OutcomeAllow, OutcomeRequireApproval or OutcomeDeny (anything unknown is a deny).
	Outcome string
	// Reasons are the rules that fired.
	Reasons []string
	// RequiredApprovals are the approver roles, in order, for OutcomeRequireApproval.
	RequiredApprovals []string
	// BundleVersion is the policy bundle that decided.
	BundleVersion string
	// OverrideRiskTier is the risk tier the policy sets in place of the registry's derived one, as
	// the registry's RiskTier enum name (RISK_TIER_HIGH ...); empty when it sets none.
	OverrideRiskTier string `json:",omitempty"`
	// OverrideReason says why the policy sets OverrideRiskTier.
	OverrideReason string `json:",omitempty"`
	// Etag is the etag of the agent version the policy evaluated; the activation is asked with it
	// (since change activate-evaluated-version), so an agent changed after the decision is not
	// activated on it.
	Etag string `json:",omitempty"`
	// PolicyInputDigest is PolicyInputDigest of the agent the policy evaluated: an agent changed
	// since only in fields the policy does not read is activated at its current version (since change
	// activate-neutral-changes). Empty when it could not be computed.
	PolicyInputDigest string `json:",omitempty"`
}

// EvaluateAdmission fetches the agent from the registry and asks policy whether it may be provisioned.
func (a *Activities) EvaluateAdmission(ctx context.Context, in AdmissionRequest) (AdmissionDecision, error) {
	agent, err := a.getAgent(ctx, in.Agent)
	if err != nil {
		return AdmissionDecision{}, err
	}
	doc, err := policydoc.Agent(agent)
	if err != nil {
		return AdmissionDecision{}, temporal.NewNonRetryableApplicationError("agent as JSON: "+err.Error(), "INTERNAL", err)
	}
	resp, err := a.Policy.EvaluateAdmission(ctx, &policyv1.EvaluateAdmissionRequest{Tenant: in.Tenant, Agent: doc, RequestId: in.RequestID})
	if err != nil {
		return AdmissionDecision{}, classify("policy.EvaluateAdmission", err)
	}
	d := resp.GetDecision()
	out := AdmissionDecision{
		DecisionID:        d.GetDecisionId(),
		Reasons:           d.GetReasons(),
		RequiredApprovals: d.GetRequiredApprovals(),
		BundleVersion:     d.GetBundleVersion(),
		Etag:              agent.GetEtag(),
	}
	if digest, err := PolicyInputDigest(agent); err == nil {
		out.PolicyInputDigest = digest
	}
	switch d.GetOutcome() {
	case policyv1.Outcome_OUTCOME_ALLOW:
		out.Outcome = OutcomeAllow
	case policyv1.Outcome_OUTCOME_REQUIRE_APPROVAL:
		out.Outcome = OutcomeRequireApproval
	default:
		out.Outcome = OutcomeDeny
	}
	if o := d.GetRiskTierOverride(); o != nil && out.Outcome != OutcomeDeny {
		out.OverrideRiskTier, out.OverrideReason = o.GetTier(), o.GetReason()
	}
	return out, nil
}

// PolicyInputDigest is a digest of what the admission policy and the approvers may rely on of agent:
// the agent without its display name and the registry's bookkeeping (etag, state, state reason,
// update time, last activity, audit reference). Every other field counts: owner and sponsor
// (policies may decide by owner), labels and dependencies (a tenant's bundle may read them),
// purpose and decommission criteria (the approvers read them), the orphan mark (an agent whose
// owner departed while it waited is rejected, not activated past its orphan review), and any field
// this binary does not know.
func PolicyInputDigest(agent *registryv1.Agent) (string, error) {
	a := proto.CloneOf(agent)
	a.DisplayName = ""
	a.Etag, a.State, a.StateReason, a.UpdateTime, a.LastActiveTime, a.AuditRef = "", registryv1.AgentState_AGENT_STATE_UNSPECIFIED, "", nil, nil, ""
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(a)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// PolicyInputRequest names the agent whose current policy input ReadPolicyInput reads.
type PolicyInputRequest struct {
	// Agent is the resource name.
	Agent string
}

// PolicyInput is an agent's current version and the digest of its policy input.
type PolicyInput struct {
	// Etag is the agent's current etag.
	Etag string
	// Digest is PolicyInputDigest of the agent at that version.
	Digest string
}

// ReadPolicyInput reads the agent's current etag and policy input digest from the registry.
func (a *Activities) ReadPolicyInput(ctx context.Context, in PolicyInputRequest) (PolicyInput, error) {
	agent, err := a.getAgent(ctx, in.Agent)
	if err != nil {
		return PolicyInput{}, err
	}
	digest, err := PolicyInputDigest(agent)
	if err != nil {
		return PolicyInput{}, temporal.NewNonRetryableApplicationError("agent policy input: "+err.Error(), "INTERNAL", err)
	}
	return PolicyInput{Etag: agent.GetEtag(), Digest: digest}, nil
}

// ActivateRequest records an approved provisioning decision.
type ActivateRequest struct {
	// Agent is the resource name.
	Agent string
	// DecisionID is the policy decision that allowed activation.
	DecisionID string
	// ApprovedBy is AutoApprover or the approvers, comma-separated, in order.
	ApprovedBy string
	// RequestID is the idempotency key.
	RequestID string
	// OverrideRiskTier is the policy's risk tier override (RiskTier enum name), empty for none.
	OverrideRiskTier string `json:",omitempty"`
	// OverrideReason says why the policy sets OverrideRiskTier.
	OverrideReason string `json:",omitempty"`
	// OverrideSource names the policy that set it (OverrideSourcePrefix and the bundle version).
	OverrideSource string `json:",omitempty"`
	// Etag, when set, is the version of the agent the decision was made on: the registry refuses the
	// activation of an agent changed since (non-retryable ReasonAgentChanged).
	Etag string `json:",omitempty"`
}

// ReasonAgentChanged is the registry's reason for a command refused because the agent's etag is not
// the one given: the agent changed since it was read.
const ReasonAgentChanged = "ETAG_MISMATCH"

// OverrideSourcePrefix starts the source of a policy's risk tier override recorded on activation;
// the deciding bundle's version follows.
const OverrideSourcePrefix = "policy-bundle:"

// ActivateAgent makes the agent ACTIVE in the registry, with the policy's risk tier override if
// the decision carried one.
func (a *Activities) ActivateAgent(ctx context.Context, in ActivateRequest) error {
	req := &registryv1.ActivateAgentRequest{
		Name: in.Agent, DecisionId: in.DecisionID, ApprovedBy: in.ApprovedBy, RequestId: in.RequestID, Etag: in.Etag,
	}
	if in.OverrideRiskTier != "" {
		tier, ok := registryv1.RiskTier_value[in.OverrideRiskTier]
		if !ok || tier == 0 {
			return temporal.NewNonRetryableApplicationError("the policy's risk tier override "+in.OverrideRiskTier+" is not a risk tier",
				"INVALID_OVERRIDE", nil)
		}
		req.OverrideRiskTier = registryv1.RiskTier(tier)
		req.OverrideReason, req.OverrideSource = in.OverrideReason, in.OverrideSource
	}
	_, err := a.Registry.ActivateAgent(ctx, req)
	if err != nil {
		if e := errs.FromStatus(err); e.Reason == ReasonAgentChanged {
			// No retry can make the decision cover the changed agent.
			return temporal.NewNonRetryableApplicationError("registry.ActivateAgent: "+e.Message, ReasonAgentChanged, err)
		}
	}
	return classify("registry.ActivateAgent", err)
}

// RejectRequest records a rejected provisioning decision.
type RejectRequest struct {
	// Agent is the resource name.
	Agent string
	// DecisionID is the policy decision or approval that rejected the agent.
	DecisionID string
	// Reason is shown to the owner.
	Reason string
	// RequestID is the idempotency key.
	RequestID string
}

// RejectAgent makes the agent REJECTED in the registry.
func (a *Activities) RejectAgent(ctx context.Context, in RejectRequest) error {
	_, err := a.Registry.RejectAgent(ctx, &registryv1.RejectAgentRequest{
		Name: in.Agent, DecisionId: in.DecisionID, Reason: in.Reason, RequestId: in.RequestID,
	})
	return classify("registry.RejectAgent", err)
}

// CreateClientRequest asks for the agent's OAuth client.
type CreateClientRequest struct {
	// Tenant of the agent.
	Tenant string
	// Agent is the resource name.
	Agent string
	// AgentID is the agent id, also the client id.
	AgentID string
	// RequestID is the idempotency key.
	RequestID string
}

// ClientInfo names the agent's OAuth client.
type ClientInfo struct {
	// Name is the client's resource name.
	Name string
	// ClientID is the OAuth client id.
	ClientID string
}

// Application error types of CreateClient that tell the workflow what happened.
const (
	// ErrRetiredMeanwhile: the agent left provisioning (it is retiring, retired or rejected): no
	// credential may be issued.
	ErrRetiredMeanwhile = "AGENT_RETIRED_MEANWHILE"
	// ErrClientDisabled: the agent's client exists but is disabled; a disabled client is never enabled
	// again, so the agent cannot be activated with it.
	ErrClientDisabled = "CLIENT_DISABLED"
	// ErrClientTombstoned: the issuer refuses the client id for good (it was disabled before it
	// existed, by deprovisioning or by an administrator).
	ErrClientTombstoned = "CLIENT_TOMBSTONED"
	// ErrClientExists: a client with the agent's id exists that belongs to something else.
	ErrClientExists = "CLIENT_EXISTS"
)

// ReasonClientNotFound is the issuer's reason code for a client that does not exist.
const ReasonClientNotFound = "CLIENT_NOT_FOUND"

// IsClientNotFound reports whether err is the issuer's NotFound for the client itself (reason
// CLIENT_NOT_FOUND). Other NotFound errors (an unknown tenant, a wrongly scoped identity) are not.
func IsClientNotFound(err error) bool {
	e := errs.FromStatus(err)
	return e != nil && e.Kind == errs.KindNotFound && e.Reason == ReasonClientNotFound
}

// IsClientUnusable reports whether err (from CreateClient, or a run that failed with it) says that the
// agent's client id can never carry its credential: the client is disabled (ErrClientDisabled),
// tombstoned (ErrClientTombstoned) or belongs to something else (ErrClientExists). Retrying cannot
// change that.
func IsClientUnusable(err error) bool {
	var app *temporal.ApplicationError
	if !errors.As(err, &app) {
		return false
	}
	switch app.Type() {
	case ErrClientDisabled, ErrClientTombstoned, ErrClientExists:
		return true
	}
	return false
}

// CreateClient registers the agent's OAuth client with the issuer, with the public keys, scopes and
// environment the registry holds. The agent must be approved and not yet retired: PENDING (the
// provisioning run creates the credential before it activates the agent, so that the agent reads
// ACTIVE only once its credential works) or ACTIVE (runs of the earlier order). A client that already
// exists for the same agent counts as created. When the agent leaves PENDING/ACTIVE while the client is
// created, the client is disabled again and the error is ErrRetiredMeanwhile. A client id that cannot
// be used (IsClientUnusable: disabled, tombstoned, another's) fails with ErrClientDisabled,
// ErrClientTombstoned or ErrClientExists, whatever the agent's state.
func (a *Activities) CreateClient(ctx context.Context, in CreateClientRequest) (ClientInfo, error) {
	agent, err := a.getAgent(ctx, in.Agent)
	if err != nil {
		return ClientInfo{}, err
	}
	if err := requireProvisionable(agent); err != nil {
		return ClientInfo{}, err
	}
	info, err := a.createClient(ctx, in, agent)
	if err != nil {
		return ClientInfo{}, err
	}
	if err := failpoint.Inject(ctx, failpoint.CreateClientBeforeUndo); err != nil {
		return ClientInfo{}, err
	}
	// Retirement may have raced this step: if the agent left PENDING/ACTIVE meanwhile, take the
	// client back so that a retired agent never keeps a working credential.
	now, err := a.getAgent(ctx, in.Agent)
	if err != nil {
		return ClientInfo{}, err
	}
	if err := requireProvisionable(now); err != nil {
		if _, derr := a.DisableClient(ctx, DisableClientRequest{Tenant: in.Tenant, AgentID: in.AgentID,
			Reason: "the agent left provisioning while its client was being created", RequestID: in.RequestID + "/undo"}); derr != nil {
			return ClientInfo{}, derr
		}
		return ClientInfo{}, err
	}
	return info, nil
}

// requireProvisionable fails unless the agent is PENDING (approved by the calling run) or ACTIVE;
// every other state is final and means no credential may be issued.
func requireProvisionable(agent *registryv1.Agent) error {
	switch st := agent.GetState(); st {
	case registryv1.AgentState_AGENT_STATE_ACTIVE, registryv1.AgentState_AGENT_STATE_PENDING,
		// Suspended meanwhile: its client is created (the issuer refuses it tokens while it is
		// suspended), so that resuming it needs no new provisioning.
		registryv1.AgentState_AGENT_STATE_SUSPENDED:
		return nil
	default:
		return temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("agent %s is %s: no credential is issued", agent.GetName(), st), ErrRetiredMeanwhile, nil)
	}
}

// createClient registers the client; an existing client of the same agent counts as created.
func (a *Activities) createClient(ctx context.Context, in CreateClientRequest, agent *registryv1.Agent) (ClientInfo, error) {
	resp, err := a.Issuer.CreateClient(ctx, &issuerv1.CreateClientRequest{
		Parent: "tenants/" + in.Tenant,
		Client: &issuerv1.Client{
			ClientId:        in.AgentID,
			Tenant:          in.Tenant,
			Agent:           in.Agent,
			PublicJwks:      agent.GetPublicJwks(),
			Scopes:          agent.GetScopes(),
			Environment:     EnvironmentName(agent.GetEnvironment()),
			TokenTtlSeconds: DefaultTokenTTLSeconds,
			Resources:       a.AgentResources,
		},
		RequestId: in.RequestID,
	})
	if errs.Is(err, errs.KindAlreadyExists) {
		got, gerr := a.Issuer.GetClient(ctx, &issuerv1.GetClientRequest{Name: ClientName(in.Tenant, in.AgentID)})
		if gerr != nil {
			return ClientInfo{}, classify("issuer.GetClient", gerr)
		}
		if got.GetClient().GetAgent() != in.Agent {
			return ClientInfo{}, temporal.NewNonRetryableApplicationError(
				fmt.Sprintf("client %s exists for another agent (%q)", in.AgentID, got.GetClient().GetAgent()), ErrClientExists, err)
		}
		if got.GetClient().GetState() == issuerv1.ClientState_CLIENT_STATE_DISABLED {
			return ClientInfo{}, temporal.NewNonRetryableApplicationError(
				fmt.Sprintf("client %s of agent %s is disabled", got.GetClient().GetName(), in.Agent), ErrClientDisabled, nil)
		}
		return ClientInfo{Name: got.GetClient().GetName(), ClientID: got.GetClient().GetClientId()}, nil
	}
	// Only the issuer's own reasons for refusing the client id for good settle the agent (the run
	// rejects it); any other FailedPrecondition is an ordinary failure of the run (classify).
	if e := errs.FromStatus(err); e != nil && e.Kind == errs.KindFailedPrecondition &&
		(e.Reason == ErrClientTombstoned || e.Reason == ErrClientDisabled) {
		return ClientInfo{}, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("issuer.CreateClient: the issuer refuses client %s for %s (%s): %s", in.AgentID, in.Agent, e.Reason, e.Message), e.Reason, err)
	}
	if err != nil {
		return ClientInfo{}, classify("issuer.CreateClient", err)
	}
	return ClientInfo{Name: resp.GetClient().GetName(), ClientID: resp.GetClient().GetClientId()}, nil
}

// DisableClientRequest asks to disable the agent's OAuth client.
type DisableClientRequest struct {
	// Tenant of the agent.
	Tenant string
	// AgentID is the agent id, also the client id.
	AgentID string
	// Reason is recorded with the issuer.
	Reason string
	// RequestID is the idempotency key.
	RequestID string
}

// DisableResult says what disabling found.
type DisableResult struct {
	// Found is false when the agent never had a client.
	Found bool
}

// DisableClient disables the agent's OAuth client and revokes its tokens; a client that does not
// exist (none was ever issued: NotFound with reason CLIENT_NOT_FOUND) is not an error. Any other
// NotFound (an unknown tenant, a wrongly scoped identity) is.
func (a *Activities) DisableClient(ctx context.Context, in DisableClientRequest) (DisableResult, error) {
	_, err := a.Issuer.DisableClient(ctx, &issuerv1.DisableClientRequest{
		Name: ClientName(in.Tenant, in.AgentID), Reason: in.Reason, RequestId: in.RequestID,
	})
	if IsClientNotFound(err) {
		return DisableResult{Found: false}, nil
	}
	if err != nil {
		return DisableResult{}, classify("issuer.DisableClient", err)
	}
	return DisableResult{Found: true}, nil
}

// VerifyRequest asks to verify that the agent's access is gone.
type VerifyRequest struct {
	// Tenant of the agent.
	Tenant string
	// AgentID is the agent id, also the client id.
	AgentID string
}

// Verification is what the checks found.
type Verification struct {
	// VerifyTime is when the checks ran.
	VerifyTime time.Time
	// Checks are the checks that passed, one line each.
	Checks []string
}

// ErrStillActive is the application error type of a verification that found the client active.
const ErrStillActive = "CLIENT_STILL_ACTIVE"

var errStillActive = errors.New("client still active")

// VerifyRevocation checks with the issuer that the agent's client is disabled (or never existed),
// giving the issuer's read model up to ReadLag to show a disable it has just recorded; a client still
// active then fails the check with the non-retryable type ErrStillActive (the workflow revokes again).
func (a *Activities) VerifyRevocation(ctx context.Context, in VerifyRequest) (Verification, error) {
	name := ClientName(in.Tenant, in.AgentID)
	var resp *issuerv1.GetClientResponse
	err := untilVisible(ctx, a.readLag(), func() (err error) {
		resp, err = a.Issuer.GetClient(ctx, &issuerv1.GetClientRequest{Name: name})
		if err == nil && resp.GetClient().GetState() != issuerv1.ClientState_CLIENT_STATE_DISABLED {
			return errStillActive
		}
		return err
	}, func(err error) bool { return errors.Is(err, errStillActive) })
	if errors.Is(err, errStillActive) {
		err = nil
	}
	now := time.Now().UTC()
	if IsClientNotFound(err) {
		return Verification{VerifyTime: now, Checks: []string{"no client: " + name + " was never issued"}}, nil
	}
	if err != nil {
		return Verification{}, classify("issuer.GetClient", err)
	}
	if st := resp.GetClient().GetState(); st != issuerv1.ClientState_CLIENT_STATE_DISABLED {
		return Verification{}, temporal.NewNonRetryableApplicationError(fmt.Sprintf("client %s is %s, want disabled", name, st), ErrStillActive, nil)
	}
	return Verification{VerifyTime: now, Checks: []string{"client disabled: " + name}}, nil
}

// CompleteRetirementRequest records verified deprovisioning.
type CompleteRetirementRequest struct {
	// Agent is the resource name.
	Agent string
	// VerifyTime is when revocation was verified.
	VerifyTime time.Time
	// RequestID is the idempotency key.
	RequestID string
}

// CompleteRetirement makes the agent RETIRED in the registry.
func (a *Activities) CompleteRetirement(ctx context.Context, in CompleteRetirementRequest) error {
	_, err := a.Registry.CompleteRetirement(ctx, &registryv1.CompleteRetirementRequest{
		Name: in.Agent, VerifyTime: timestamppb.New(in.VerifyTime), RequestId: in.RequestID,
	})
	return classify("registry.CompleteRetirement", err)
}

// ProvisioningDecidedRecord is the lifecycle.provisioning_decided event to record.
type ProvisioningDecidedRecord struct {
	// Tenant of the agent.
	Tenant string
	// Agent is the resource name.
	Agent string
	// AgentID is the agent id.
	AgentID string
	// WorkflowID is the run's id.
	WorkflowID string
	// Result is ResultActivated or ResultRejected.
	Result string
	// DecisionID is the policy decision id.
	DecisionID string
	// ApprovedBy lists AutoApprover or the approvers, in order.
	ApprovedBy []string
	// CausationID is the id of the event that started the run, if known.
	CausationID string
	// IdempotencyKey is the key of the append.
	IdempotencyKey string
}

// RecordProvisioningDecided appends lifecycle.provisioning_decided.
func (a *Activities) RecordProvisioningDecided(ctx context.Context, in ProvisioningDecidedRecord) error {
	return a.record(ctx, in.Tenant, in.AgentID, in.Agent, EventProvisioningDecided, in.IdempotencyKey, in.WorkflowID, in.CausationID,
		&lifecyclev1.ProvisioningDecided{
			Agent: in.Agent, WorkflowId: in.WorkflowID, Result: in.Result, DecisionId: in.DecisionID, ApprovedBy: in.ApprovedBy,
		})
}

// DeprovisioningVerifiedRecord is the lifecycle.deprovisioning_verified event to record.
type DeprovisioningVerifiedRecord struct {
	// Tenant of the agent.
	Tenant string
	// Agent is the resource name.
	Agent string
	// AgentID is the agent id.
	AgentID string
	// WorkflowID is the run's id.
	WorkflowID string
	// VerifyTime is when the checks ran.
	VerifyTime time.Time
	// Checks are the checks that passed.
	Checks []string
	// CausationID is the id of the event that started the run, if known.
	CausationID string
	// IdempotencyKey is the key of the append.
	IdempotencyKey string
}

// RecordDeprovisioningVerified appends lifecycle.deprovisioning_verified.
func (a *Activities) RecordDeprovisioningVerified(ctx context.Context, in DeprovisioningVerifiedRecord) error {
	return a.record(ctx, in.Tenant, in.AgentID, in.Agent, EventDeprovisioningVerified, in.IdempotencyKey, in.WorkflowID, in.CausationID,
		&lifecyclev1.DeprovisioningVerified{
			Agent: in.Agent, WorkflowId: in.WorkflowID, VerifyTime: timestamppb.New(in.VerifyTime), Checks: in.Checks,
		})
}

func (a *Activities) record(ctx context.Context, tenant, agentID, agent, typ, key, workflowID, causation string, data proto.Message) error {
	if a.Events == nil {
		return temporal.NewNonRetryableApplicationError("no event store configured", "INTERNAL", nil)
	}
	actor := a.Actor
	if actor == "" {
		actor = DefaultActor
	}
	_, err := a.Events.Append(ctx, eventstore.Append{
		Tenant:          tenant,
		AggregateType:   eventstore.AggregateLifecycle,
		AggregateID:     agentID,
		ExpectedVersion: eventstore.AnyVersion,
		IdempotencyKey:  key,
		Type:            typ,
		Subject:         agent,
		Data:            data,
		Metadata: eventstore.Metadata{
			Actor:         eventstore.Actor{ID: actor, Kind: eventstore.ActorService},
			CorrelationID: workflowID,
			CausationID:   causation,
		},
	})
	if errors.Is(err, eventstore.ErrInvalid) || errors.Is(err, eventstore.ErrIdempotencyKeyReused) {
		return temporal.NewNonRetryableApplicationError("record "+typ+": "+err.Error(), "INVALID_ARGUMENT", err)
	}
	if err != nil {
		return fmt.Errorf("record %s: %w", typ, err)
	}
	return nil
}

// DefaultReadLag is the default of Activities.ReadLag: the registry may serve an agent a moment after
// the lifecycle service saw it registered, the issuer a disable a moment after recording it.
const DefaultReadLag = 10 * time.Second

func (a *Activities) readLag() time.Duration {
	if a.ReadLag > 0 {
		return a.ReadLag
	}
	return DefaultReadLag
}

// DefaultNotFoundRetryFor is the default of Activities.NotFoundRetryFor: how long, counted from when
// the workflow scheduled an activity, a NotFound from the registry's read model is taken for lag (a
// retryable error) before it is final. Ten minutes covers a registry replica replaying its projection
// after a restart; an agent that is still unknown after that does not exist.
const DefaultNotFoundRetryFor = 10 * time.Minute

// ErrAgentNotVisible is the (retryable) application error type of a NotFound the registry's read model
// may still outgrow.
const ErrAgentNotVisible = "AGENT_NOT_VISIBLE_YET"

func (a *Activities) notFoundRetryFor() time.Duration {
	if a.NotFoundRetryFor > 0 {
		return a.NotFoundRetryFor
	}
	return DefaultNotFoundRetryFor
}

// getAgent reads an agent, waiting up to ReadLag for one the registry does not show yet. A NotFound
// after that is retryable (ErrAgentNotVisible) until NotFoundRetryFor has passed since the activity
// was scheduled, and final afterwards.
func (a *Activities) getAgent(ctx context.Context, name string) (*registryv1.Agent, error) {
	var resp *registryv1.GetAgentResponse
	err := untilVisible(ctx, a.readLag(), func() (err error) {
		resp, err = a.Registry.GetAgent(ctx, &registryv1.GetAgentRequest{Name: name})
		return err
	}, func(err error) bool { return errs.Is(err, errs.KindNotFound) })
	if errs.Is(err, errs.KindNotFound) && activity.IsActivity(ctx) {
		if waited := time.Since(activity.GetInfo(ctx).ScheduledTime); waited < a.notFoundRetryFor() {
			return nil, temporal.NewApplicationErrorWithCause(
				fmt.Sprintf("registry.GetAgent: agent %s not visible yet (after %s of %s)", name, waited.Round(time.Second), a.notFoundRetryFor()),
				ErrAgentNotVisible, err)
		}
	}
	if err != nil {
		return nil, classify("registry.GetAgent", err)
	}
	return resp.GetAgent(), nil
}

// untilVisible calls fn until notYet(its error) is false or lag has passed, and returns the last error.
func untilVisible(ctx context.Context, lag time.Duration, fn func() error, notYet func(error) bool) error {
	deadline := time.Now().Add(lag)
	delay := 50 * time.Millisecond
	for {
		err := fn()
		if err == nil || !notYet(err) || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(delay):
		}
		delay = min(2*delay, time.Second)
	}
}

// classify turns a gRPC error into a Temporal application error: non-retryable for errors a retry
// cannot fix, retryable otherwise. The error type is the errs reason code (e.g. AGENT_NOT_FOUND).
func classify(op string, err error) error {
	if err == nil {
		return nil
	}
	e := errs.FromStatus(err)
	msg := op + ": " + e.Kind.String() + ": " + e.Message
	switch e.Kind {
	case errs.KindInvalidArgument, errs.KindNotFound, errs.KindPermissionDenied, errs.KindFailedPrecondition:
		return temporal.NewNonRetryableApplicationError(msg, e.Reason, err)
	default:
		return temporal.NewApplicationErrorWithCause(msg, e.Reason, err)
	}
}

// ApprovalTokenVerifier verifies the signature, type, audience and lifetime of approval tokens
// against the tenant issuer's JWKS (authn.JWKSVerifier).
type ApprovalTokenVerifier interface {
	VerifyApproval(ctx context.Context, raw string) (*authn.ApprovalClaims, error)
}

// VerifyApprovalRequest asks to verify an approval token presented to an agent's provisioning run.
type VerifyApprovalRequest struct {
	// Agent is the run's agent (resource name).
	Agent string
	// Token is the approval token.
	Token string
}

// VerifiedApproval is what VerifyApproval found: the token's claims and the agent's owner and
// sponsor, or why the token does not verify.
type VerifiedApproval struct {
	// Refused says why the token does not verify; empty when it does.
	Refused string
	// Subject is the person who decides.
	Subject string
	// Agent, Step, Decision and Run are the token's bindings.
	Agent, Step, Decision, Run string
	// Roles are the person's roles when the token was minted.
	Roles []string
	// TokenID is the token's jti.
	TokenID string
	// Expiry is when the token expires.
	Expiry time.Time
	// Owner is the agent's owner as the registry holds it.
	Owner string
	// Sponsor is the agent's sponsor, the owner's named delegate.
	Sponsor string
}

// VerifyApproval verifies an approval token (ApprovalTokens) for the agent's run and reads the agent's
// owner and sponsor from the registry. A token that does not verify, or whose subject is the agent's
// owner or sponsor while the tenant's directory does not list it as ACTIVE (pkg/directory), is a
// result with Refused set, so the run records why; only an unreachable issuer or registry is an
// error (retryable).
func (a *Activities) VerifyApproval(ctx context.Context, in VerifyApprovalRequest) (VerifiedApproval, error) {
	if a.ApprovalTokens == nil {
		return VerifiedApproval{Refused: "approval tokens cannot be verified: the lifecycle worker has no issuer to verify them with"}, nil
	}
	c, err := a.ApprovalTokens.VerifyApproval(ctx, in.Token)
	if err != nil {
		e := errs.FromStatus(err)
		if e.Kind == errs.KindUnavailable {
			return VerifiedApproval{}, temporal.NewApplicationErrorWithCause("verify approval token: "+e.Message, e.Reason, err)
		}
		return VerifiedApproval{Refused: e.Message}, nil
	}
	tenant, _, ok := ParseAgentName(in.Agent)
	if !ok || c.Tenant != tenant {
		return VerifiedApproval{Refused: fmt.Sprintf("the approval token is from tenant %q, not the agent's", c.Tenant)}, nil
	}
	agent, err := a.getAgent(ctx, in.Agent)
	if err != nil {
		return VerifiedApproval{}, err
	}
	// Every token decision of every run (a provisioning approval, a deprovisioning sign-off, an
	// incident, review or rotation decision), whether it came as an update, a signal from the Temporal
	// UI or through the lifecycle API, is verified here: an owner or sponsor whom the tenant's
	// directory does not list as ACTIVE decides nothing. This is activity logic and needs no workflow
	// version: a recorded run replays this activity's result from its history, and the workflow code
	// that reads Refused is unchanged.
	if c.Subject != "" && (c.Subject == agent.GetOwner() || c.Subject == agent.GetSponsor()) {
		err := directory.CheckActive(ctx, a.Registry, tenant, c.Subject)
		switch {
		case directory.IsNotActive(err):
			return VerifiedApproval{Refused: err.Error()}, nil
		case err != nil:
			return VerifiedApproval{}, classify("registry.ListPrincipals (is "+c.Subject+" an ACTIVE principal?)", err)
		}
	}
	return VerifiedApproval{
		Subject: c.Subject, Agent: c.Agent, Step: c.Step, Decision: c.Decision, Run: c.Run, Roles: c.Roles,
		TokenID: c.ID, Expiry: time.Unix(c.Expiry, 0).UTC(), Owner: agent.GetOwner(), Sponsor: agent.GetSponsor(),
	}, nil
}
