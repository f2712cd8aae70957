# Admission policy: decides whether a registered agent may be provisioned, and how.
#
# Input (built by the policy service):
#   tenant  the tenant whose policy applies
#   agent   the registry's Agent in its JSON form (enum names, camelCase fields, zero values omitted)
#   now     the evaluation time, RFC 3339 (UTC)
#
# Output: decision := {"outcome": "allow" | "require_approval" | "deny",
#                      "reasons": [...], "required_approvals": [...]}
# Deny wins over everything; an agent that fits the pre-approved template is allowed without a
# human; everything else needs approvals in order (owner, security, compliance).
#
# Optional output: risk_tier_override := {"tier": "LOW" | "MODERATE" | "HIGH", "reason": "..."}
# sets the agent's risk tier in place of the registry's derived one, with the reason recorded in the
# agent's classification (docs/policy-override.md). This bundle sets none. A tenant's bundle may, e.g.
#
#   risk_tier_override := {"tier": "HIGH", "reason": "agents of the payments team move money"} if {
#   	startswith(object.get(agent, "owner", ""), "team:payments")
#   }
#
# A malformed override (not such an object, an unknown tier, an empty reason, conflicting values)
# turns the decision into a deny naming the rule: it fails closed.
package agentid.admission

# Scope segments that grant admin-style or unbounded access; agents never get them.
forbidden_segments := {"admin", "superuser", "root", "*", "all"}

# Scope actions (the second segment of resource.action[.qualifier]) that only read.
read_actions := {"read", "list", "get", "search", "query", "view"}

# The pre-approved template: low risk, non-production, read-only, non-sensitive, short-lived.
template_environments := {"ENVIRONMENT_DEV", "ENVIRONMENT_TEST"}

template_sensitivities := {"DATA_SENSITIVITY_PUBLIC", "DATA_SENSITIVITY_INTERNAL"}

template_max_lifetime_days := 90

# Data classes that need a compliance approval.
regulated_sensitivities := {"DATA_SENSITIVITY_PII", "DATA_SENSITIVITY_PHI", "DATA_SENSITIVITY_PCI"}

# Data classes an autonomous, public-facing production agent may never touch.
hard_line_sensitivities := {"DATA_SENSITIVITY_PHI", "DATA_SENSITIVITY_PCI"}

# The order approvals are collected in.
approval_order := ["owner", "security", "compliance"]

ns_per_day := ((24 * 60) * 60) * 1000000000

agent := object.get(input, "agent", {})

scopes := object.get(agent, "scopes", [])

environment := object.get(agent, "environment", "ENVIRONMENT_UNSPECIFIED")

sensitivity := object.get(agent, "dataSensitivity", "DATA_SENSITIVITY_UNSPECIFIED")

risk_tier := object.get(agent, "riskTier", "RISK_TIER_UNSPECIFIED")

autonomy := object.get(agent, "autonomy", "AUTONOMY_UNSPECIFIED")

trust_boundary := object.get(agent, "trustBoundary", "TRUST_BOUNDARY_UNSPECIFIED")

# --- helpers ---------------------------------------------------------------------------------

forbidden_scope(scope) if {
	some segment in split(scope, ".")
	lower(segment) in forbidden_segments
}

read_like(scope) if {
	parts := split(scope, ".")
	count(parts) >= 2
	lower(parts[1]) in read_actions
}

has_owner if trim_space(object.get(agent, "owner", "")) != ""

short_lived if not agent.expireTime

short_lived if {
	lifetime := time.parse_rfc3339_ns(agent.expireTime) - time.parse_rfc3339_ns(input.now)
	lifetime <= template_max_lifetime_days * ns_per_day
}

production_write if {
	environment == "ENVIRONMENT_PROD"
	some scope in scopes
	not read_like(scope)
}

# --- deny ------------------------------------------------------------------------------------

deny_reasons contains msg if {
	some scope in scopes
	forbidden_scope(scope)
	msg := sprintf("scope %q grants admin-style access; agents get narrow resource.action scopes only", [scope])
}

deny_reasons contains "owner is missing: every agent needs an accountable owner" if not has_owner

deny_reasons contains msg if {
	environment == "ENVIRONMENT_PROD"
	sensitivity in hard_line_sensitivities
	autonomy == "AUTONOMY_AUTONOMOUS"
	trust_boundary == "TRUST_BOUNDARY_PUBLIC"
	msg := sprintf("an autonomous, public-facing production agent may not handle %s data", [trim_prefix(sensitivity, "DATA_SENSITIVITY_")])
}

# --- pre-approved template -------------------------------------------------------------------

template_misses contains msg if {
	risk_tier != "RISK_TIER_LOW"
	msg := sprintf("not pre-approved: risk tier %s is not RISK_TIER_LOW", [risk_tier])
}

template_misses contains msg if {
	not environment in template_environments
	msg := sprintf("not pre-approved: environment %s is not ENVIRONMENT_DEV or ENVIRONMENT_TEST", [environment])
}

template_misses contains msg if {
	some scope in scopes
	not read_like(scope)
	msg := sprintf("not pre-approved: scope %q is not read-only", [scope])
}

template_misses contains msg if {
	not sensitivity in template_sensitivities
	msg := sprintf("not pre-approved: data sensitivity %s is above DATA_SENSITIVITY_INTERNAL", [sensitivity])
}

template_misses contains msg if {
	not short_lived
	msg := sprintf("not pre-approved: expire_time is more than %d days away", [template_max_lifetime_days])
}

# --- approvals -------------------------------------------------------------------------------

approvers contains "owner"

approvers contains "security" if risk_tier in {"RISK_TIER_HIGH", "RISK_TIER_UNSPECIFIED"}

approvers contains "security" if production_write

approvers contains "compliance" if sensitivity in regulated_sensitivities

approval_reasons contains "the owner approves every agent outside the pre-approved template"

approval_reasons contains msg if {
	risk_tier in {"RISK_TIER_HIGH", "RISK_TIER_UNSPECIFIED"}
	msg := sprintf("risk tier %s requires security approval", [risk_tier])
}

approval_reasons contains "production write access requires security approval" if production_write

approval_reasons contains msg if {
	sensitivity in regulated_sensitivities
	msg := sprintf("data sensitivity %s requires compliance approval", [sensitivity])
}

required_approvals := [a | some a in approval_order; a in approvers]

# --- decision --------------------------------------------------------------------------------

decision := {"outcome": "deny", "reasons": sort(deny_reasons), "required_approvals": []} if {
	count(deny_reasons) > 0
} else := {
	"outcome": "allow",
	"reasons": ["pre-approved template: low risk, non-production, read-only, non-sensitive, short-lived"],
	"required_approvals": [],
} if {
	count(template_misses) == 0
} else := {
	"outcome": "require_approval",
	"reasons": array.concat(sort(template_misses), sort(approval_reasons)),
	"required_approvals": required_approvals,
}
