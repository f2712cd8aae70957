// Package workflows holds the platform's Temporal workflows and the activities they call.
//
// Workflow code here is deterministic orchestration only: every call to another service goes through an
// activity of Activities, with an idempotency key derived from the workflow id and the step. The names
// (task queue, workflow ids, search attributes, signal, update and query names) are the contract of
// docs/architecture.md ("Temporal"); approvers act from the Temporal UI (signal "approval") or through
// the lifecycle service (update "approve").
package workflows

import (
	"strings"

	"go.temporal.io/sdk/temporal"

	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// Temporal names shared with the lifecycle service and operators.
const (
	// Namespace is the Temporal namespace of the platform.
	Namespace = "agentid"
	// TaskQueue is the task queue of the lifecycle worker.
	TaskQueue = "agentid-lifecycle"
	// ProvisionWorkflowName is the registered name of ProvisionWorkflow.
	ProvisionWorkflowName = "ProvisionWorkflow"
	// DeprovisionWorkflowName is the registered name of DeprovisionWorkflow.
	DeprovisionWorkflowName = "DeprovisionWorkflow"
	// ApprovalSignal carries an Approval as JSON, e.g. from the Temporal UI.
	ApprovalSignal = "approval"
	// ApproveUpdate carries an Approval and answers with the run's Status; its validator rejects
	// approvals the run cannot take.
	ApproveUpdate = "approve"
	// StatusQuery answers with the run's Status.
	StatusQuery = "status"
)

// Stages of the runs, kept in the Stage search attribute and the status query.
const (
	StagePolicy            = "policy"
	StageApproval          = "approval"
	StageApprovalEscalated = "approval-escalated"
	StageActivate          = "activate"
	StageCredentials       = "credentials"
	StageReject            = "reject"
	StageRevoke            = "revoke"
	StageVerify            = "verify"
	StageDone              = "done"
	StageFailed            = "failed"
)

// Results of finished runs.
const (
	ResultActivated = "activated"
	ResultRejected  = "rejected"
	ResultRetired   = "retired"
)

// Custom search attributes (Keyword) registered in the namespace.
var (
	// AgentIDKey is the agent id.
	AgentIDKey = temporal.NewSearchAttributeKeyKeyword("AgentId")
	// TenantKey is the agent's tenant.
	TenantKey = temporal.NewSearchAttributeKeyKeyword("Tenant")
	// RiskTierKey is the agent's risk tier (low, moderate, high, unclassified).
	RiskTierKey = temporal.NewSearchAttributeKeyKeyword("RiskTier")
	// StageKey is the run's current stage.
	StageKey = temporal.NewSearchAttributeKeyKeyword("Stage")
)

// ProvisionWorkflowID is the deterministic id of an agent's provisioning run.
func ProvisionWorkflowID(tenant, agentID string) string { return "provision/" + tenant + "/" + agentID }

// DeprovisionWorkflowID is the deterministic id of an agent's deprovisioning run.
func DeprovisionWorkflowID(tenant, agentID string) string {
	return "deprovision/" + tenant + "/" + agentID
}

// AgentName is the resource name of an agent: tenants/{tenant}/agents/{agent}.
func AgentName(tenant, agentID string) string { return "tenants/" + tenant + "/agents/" + agentID }

// ParseAgentName splits tenants/{tenant}/agents/{agent}; ok is false for anything else.
func ParseAgentName(name string) (tenant, agentID string, ok bool) {
	parts := strings.Split(name, "/")
	if len(parts) != 4 || parts[0] != "tenants" || parts[2] != "agents" || parts[1] == "" || parts[3] == "" {
		return "", "", false
	}
	return parts[1], parts[3], true
}

// ClientName is the resource name of an agent's OAuth client: tenants/{tenant}/clients/{agent}.
func ClientName(tenant, agentID string) string { return "tenants/" + tenant + "/clients/" + agentID }

// RiskTierName is the search attribute value of a risk tier: low, moderate, high or unclassified.
func RiskTierName(t registryv1.RiskTier) string {
	switch t {
	case registryv1.RiskTier_RISK_TIER_LOW:
		return "low"
	case registryv1.RiskTier_RISK_TIER_MODERATE:
		return "moderate"
	case registryv1.RiskTier_RISK_TIER_HIGH:
		return "high"
	default:
		return "unclassified"
	}
}

// EnvironmentName is the token claim value of an environment: dev, test, staging or prod ("" if unset).
func EnvironmentName(e registryv1.Environment) string {
	switch e {
	case registryv1.Environment_ENVIRONMENT_DEV:
		return "dev"
	case registryv1.Environment_ENVIRONMENT_TEST:
		return "test"
	case registryv1.Environment_ENVIRONMENT_STAGING:
		return "staging"
	case registryv1.Environment_ENVIRONMENT_PROD:
		return "prod"
	default:
		return ""
	}
}

// identityAttributes are the search attributes of a run about one agent; an unknown risk tier is left unset.
func identityAttributes(agentID, tenant, riskTier, stage string) []temporal.SearchAttributeUpdate {
	attrs := []temporal.SearchAttributeUpdate{AgentIDKey.ValueSet(agentID), TenantKey.ValueSet(tenant), StageKey.ValueSet(stage)}
	if riskTier != "" {
		attrs = append(attrs, RiskTierKey.ValueSet(riskTier))
	}
	return attrs
}
