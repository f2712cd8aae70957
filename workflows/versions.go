package workflows

import "go.temporal.io/sdk/workflow"

// Change ids of workflow.GetVersion, named here and nowhere else (docs/workflows-versioning.md).
// Every id is listed in Changes; a test fails when a GetVersion call uses an id or a maximum version
// that Changes does not list. Never remove an id, nor the branch of a version, while histories of
// runs that took it may still be replayed (they are kept in testdata/ with a release suffix).
const (
	// versionClientFirst (version 1): the credential is created before the agent is activated; runs
	// recorded before it (workflow.DefaultVersion) activate first and create the client after.
	versionClientFirst = "client-before-activation"
	// versionSettleUnusableClient (version 1): a client-first run whose client cannot be put to use
	// rejects an agent that is still PENDING (instead of failing, which had the run started again and
	// the approvers asked again for ever), waits for a cancelled ActivateAgent to end, and takes its
	// client back only from an agent that is not ACTIVE. Runs recorded before it take
	// createThenActivateV1.
	versionSettleUnusableClient = "settle-unusable-client"
	// versionApprovalToken (version 1): approvals count only with a verified approval token
	// (VerifyApproval) and the step rules of StepRoles. Runs that took an approval before it
	// (workflow.DefaultVersion) keep taking self-asserted approvals until they end.
	versionApprovalToken = "approval-token"
	// versionApprovalEscalation (version 1): the holder of a waiting approval step is reminded every
	// RemindEvery and, after EscalateAfter without a decision, the step is handed to the next approver
	// in line (EscalationChain), who is notified and may then decide it. Runs recorded before it
	// (workflow.DefaultVersion) take approveV0: after EscalateAfter they only change their stage to
	// approval-escalated.
	versionApprovalEscalation = "approval-escalation"

	// versionDeprovisionSaga (version 1): the complete deprovisioning saga: trigger, suspend, revoke
	// every credential, remove grants, cleanup, verify by trying, retire, sign-offs, evidence. Runs
	// that started before it (workflow.DefaultVersion) finish as they began.
	versionDeprovisionSaga = "deprovision-saga"

	// versionSuspendFirst (version 1): incident runs take the actions the consumer decided
	// (IncidentInput.Actions) and suspend and revoke first, as local activities, before they record
	// lifecycle.incident_opened and notify. Runs recorded before it decide through activity
	// DecideIncidentActions and record incident_opened before they suspend (runV0).
	versionSuspendFirst = "incident-suspend-first"

	// versionIncidentSecurityReminders (version 1): an incident run waiting for security's decision
	// reminds security every IncidentInput.SecurityRemindEvery (default 24h, at least an hour, at most
	// daily after 48 reminders), counting the reminders instead of recording each in the timeline.
	// Runs recorded before it (workflow.DefaultVersion) wait for security without reminders.
	versionIncidentSecurityReminders = "incident-security-reminders"

	// versionProvisionLocalSteps (version 1): the provisioning run takes its fast, idempotent steps
	// (EvaluateAdmission, CreateClient, ActivateAgent, RejectAgent, RecordProvisioningDecided) as
	// local activities first, handed to a regular activity only when the local attempts fail with an
	// error a retry may cure; it sets the identity search attributes only when the start did not, and
	// the Stage search attribute of the steps it goes through without waiting (credentials, activate)
	// only in its status query. An auto-approved run then takes one workflow task instead of five.
	// Runs recorded before it (workflow.DefaultVersion) take every step as a regular activity.
	versionProvisionLocalSteps = "provision-local-steps"

	// versionPolicyOverride (version 1): a provisioning run whose admission decision carries the
	// policy's risk tier override (AdmissionDecision.OverrideRiskTier) passes it, with its reason and
	// the bundle version as source, on ActivateAgent. Only runs with an override ask for the version;
	// runs recorded before it (workflow.DefaultVersion) activate without the override.
	versionPolicyOverride = "policy-risk-tier-override"

	// versionActivateEvaluated (version 1): a provisioning run activates the agent with the etag of
	// the version the policy evaluated (AdmissionDecision.Etag on ActivateRequest.Etag): an agent
	// changed after the decision (during the approvals, say) is refused activation (ETAG_MISMATCH),
	// and the run rejects it with a reason that says so instead of activating what nobody decided on.
	// Only runs whose decision names the version ask for it; runs recorded before it
	// (workflow.DefaultVersion) activate without an etag.
	versionActivateEvaluated = "activate-evaluated-version"

	// versionActivateNeutralChanges (version 1): a provisioning run whose activation is refused
	// because the agent changed after the decision (ETAG_MISMATCH) reads the agent's policy input
	// again (ReadPolicyInput) and, when it is the one the policy evaluated
	// (AdmissionDecision.PolicyInputDigest: only neutral fields such as labels or the display name
	// changed), activates the agent at its current etag (request id <run>/activate/<etag>, at most
	// maxNeutralReactivations times); otherwise it rejects as before. Only runs whose decision carries
	// the digest ask for it, once refused; runs recorded before it (workflow.DefaultVersion) reject
	// every changed agent.
	versionActivateNeutralChanges = "activate-neutral-changes"

	// versionRotationKeySafety (version 1): the rotation reads the new key from the registry by
	// thumbprint (never from its input), notifies the owner, takes the new key off the client when it
	// left the registry, and when the overlap ends removes only the keys added before the new one
	// (from the client by the client's own key list, each revoked right after its removal). Runs
	// recorded before it (workflow.DefaultVersion) take rotateV0.
	versionRotationKeySafety = "rotation-key-safety"

	// versionRotationOwnerApproval (version 1): a rotation of a high- or critical-tier agent waits,
	// before the new key is added to the client, for the owner's decision (update "decide" with an
	// approval token for step owner); a rejection or no decision within RotationInput.ApprovalTimeout
	// removes the key from the registry. The marker is recorded only in runs of such agents; runs
	// recorded before it (workflow.DefaultVersion) add the key without approval.
	versionRotationOwnerApproval = "rotation-owner-approval"

	// versionSweepBreaker (version 1): a deprovisioning sweep reads all pages of a tenant without
	// retiring (SweepPageRequest.FindOnly), then retires the agents found (RetireSweepAgents) only
	// when they are no more than the run's breaker allows; otherwise it records them as held and
	// stops. Runs recorded before it (workflow.DefaultVersion) retire on each page.
	versionSweepBreaker = "sweep-breaker"

	// versionTTLExpireFirst (version 1): when the agent's expire time has passed, the TTL run first
	// records the expiry in the registry (activity ExpireTTLAgent: ExpireAgent, request id
	// <run>/expire; the agent becomes EXPIRED and gets no token from then on), waits again when the
	// registry holds a later expire_time and ends when it holds none, and then asks for the
	// retirement (RetireExpired, trigger ttl) as before. Runs recorded before it
	// (workflow.DefaultVersion) retire without recording the expiry.
	versionTTLExpireFirst = "ttl-expire-first"

	// versionSweepExpireFirst (version 1): an expired sweep records each agent it retires EXPIRED
	// first (RetireSweepRequest.ExpireFirst: ExpireAgent, request id <run>/<agent>/expire) and leaves
	// alone one the registry finds not expired. Asked only by expired sweeps with candidates to
	// retire; runs recorded before it (workflow.DefaultVersion) retire without recording the expiry.
	versionSweepExpireFirst = "sweep-expire-first"

	// versionDeprovisionLocalSteps (version 1): a deprovisioning run takes its fast, idempotent steps up
	// to lifecycle.deprovisioning_verified (SuspendForDeprovisioning, DisableClient, RevokeAgentTokens,
	// RemoveGrants, ListCleanups, VerifyDeprovisioned, CompleteRetirement, RecordDeprovisioningVerified)
	// as local activities first, handed to a regular activity only when the local attempts (about 30
	// seconds) fail with an error a retry may cure; it waits for the cancellation of a provisioning run
	// only after recording the verification, and sets the Stage search attribute of the steps it goes
	// through without waiting only in its status query. Cleanups stay regular activities. A run without
	// cleanups then reaches deprovisioning_verified in its first workflow task. Runs recorded before it
	// (workflow.DefaultVersion) take every step as a regular activity.
	versionDeprovisionLocalSteps = "deprovision-local-steps"

	// versionDeprovisionOneTask (version 1): a deprovisioning run with local steps asks a provisioning
	// run in progress to cancel through a local activity (CancelProvisioning, started with the first
	// steps and awaited after the verification; RequestCancelExternalWorkflow only when its local
	// attempts fail) instead of a RequestCancelExternalWorkflow command whose answer needs a further
	// workflow task, sets the identity search attributes only when its input does not say that the
	// start set them (DeprovisionInput.StartedWithIdentity), and records
	// lifecycle.deprovisioning_completed as a local activity first. A run without sign-offs (a
	// teardown) then ends in its first workflow task. Recorded only in runs with local steps; runs
	// recorded before it (workflow.DefaultVersion) take the external cancel and record the evidence as a
	// regular activity.
	versionDeprovisionOneTask = "deprovision-one-task"

	// versionRotationApprovalDuties (version 1): the approval of a rotation's new key separates duties
	// and cannot be stretched: whoever added the key (RotationInput.AddedBy) may not approve it (the
	// sponsor, the owner when the sponsor added it, or a security-approver must; the refusal is
	// recorded and changes nothing), a security-approver may approve or reject, and once the approval
	// times out only the verification under way is judged (decisions queued behind it are refused
	// without a VerifyApproval, so refused decisions cannot extend the wait). Recorded when the run
	// starts waiting for the approval; runs recorded before it (workflow.DefaultVersion) keep the
	// owner-or-sponsor rules and judge every queued decision after the timeout.
	versionRotationApprovalDuties = "rotation-approval-duties"
)

// Change describes one GetVersion change id of the package's workflows.
type Change struct {
	// ID is the change id passed to workflow.GetVersion.
	ID string
	// Workflow is the registered name of the workflow that calls GetVersion with it.
	Workflow string
	// Max is the newest version of the change (the maxSupported argument).
	Max workflow.Version
	// Before names the recorded histories (testdata/) of runs that took an older version, which keep
	// its branch alive.
	Before []string
}

// Changes lists every change id of the package's workflows, oldest first per workflow.
var Changes = []Change{
	{ID: versionClientFirst, Workflow: ProvisionWorkflowName, Max: 1,
		Before: []string{"provision-auto-approved-v0.json", "provision-approvals-v0.json", "provision-denied-v0.json", "provision-rejected-by-approver-v0.json"}},
	{ID: versionSettleUnusableClient, Workflow: ProvisionWorkflowName, Max: 1,
		Before: []string{"provision-auto-approved-v1.json", "provision-approvals-v1.json", "provision-rejected-by-approver-v1.json"}},
	{ID: versionApprovalToken, Workflow: ProvisionWorkflowName, Max: 1,
		Before: []string{"provision-approvals-v2.json"}},
	{ID: versionApprovalEscalation, Workflow: ProvisionWorkflowName, Max: 1,
		Before: []string{"provision-approvals-v3.json", "provision-rejected-by-approver-v2.json"}},
	{ID: versionProvisionLocalSteps, Workflow: ProvisionWorkflowName, Max: 1,
		Before: []string{"provision-auto-approved-v2.json", "provision-approvals-v4.json", "provision-denied-v1.json",
			"provision-rejected-by-approver-v3.json", "provision-client-unusable-v0.json", "provision-escalated-v0.json", "provision-reminded-v0.json"}},
	{ID: versionPolicyOverride, Workflow: ProvisionWorkflowName, Max: 1},
	{ID: versionActivateEvaluated, Workflow: ProvisionWorkflowName, Max: 1},
	{ID: versionActivateNeutralChanges, Workflow: ProvisionWorkflowName, Max: 1,
		Before: []string{"provision-agent-changed-v0.json"}},
	{ID: versionDeprovisionSaga, Workflow: DeprovisionWorkflowName, Max: 1,
		Before: []string{"deprovision-v0.json"}},
	{ID: versionDeprovisionLocalSteps, Workflow: DeprovisionWorkflowName, Max: 1,
		Before: []string{"deprovision-v1.json"}},
	{ID: versionDeprovisionOneTask, Workflow: DeprovisionWorkflowName, Max: 1,
		Before: []string{"deprovision-v2.json"}},
	{ID: versionRotationKeySafety, Workflow: RotationWorkflowName, Max: 1,
		Before: []string{"rotation-rotated-v0.json", "rotation-stopped-suspended-v0.json"}},
	{ID: versionRotationOwnerApproval, Workflow: RotationWorkflowName, Max: 1},
	{ID: versionRotationApprovalDuties, Workflow: RotationWorkflowName, Max: 1,
		Before: []string{"rotation-approved-v0.json", "rotation-rejected-v0.json"}},
	{ID: versionSweepBreaker, Workflow: SweepWorkflowName, Max: 1,
		Before: []string{"sweep-expired-v0.json", "sweep-inactive-review-v0.json"}},
	{ID: versionSweepExpireFirst, Workflow: SweepWorkflowName, Max: 1,
		Before: []string{"sweep-expired-v1.json"}},
	{ID: versionTTLExpireFirst, Workflow: TTLWorkflowName, Max: 1,
		Before: []string{"ttl-expired-v0.json", "ttl-gone-before-expiry-v0.json"}},
	{ID: versionSuspendFirst, Workflow: IncidentWorkflowName, Max: 1,
		Before: []string{"incident-escalated-to-security-v0.json", "incident-notify-only-v0.json", "incident-restore-v0.json",
			"incident-retire-v0.json", "incident-unknown-agent-v0.json"}},
	{ID: versionIncidentSecurityReminders, Workflow: IncidentWorkflowName, Max: 1,
		Before: []string{"incident-escalated-to-security-v0.json", "incident-escalated-to-security-v1.json"}},
}
