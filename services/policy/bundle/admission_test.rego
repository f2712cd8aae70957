# Unit tests of the admission policy (run with `opa test services/policy/bundle` or `go test`).
package agentid.admission_test

import data.agentid.admission

now := "2030-01-01T00:00:00Z"

# A read-only FAQ bot in dev: the pre-approved template.
template_agent := {
	"name": "tenants/acme/agents/faq",
	"owner": "team:support",
	"environment": "ENVIRONMENT_DEV",
	"autonomy": "AUTONOMY_ASSISTIVE",
	"trustBoundary": "TRUST_BOUNDARY_INTERNAL",
	"dataSensitivity": "DATA_SENSITIVITY_INTERNAL",
	"riskTier": "RISK_TIER_LOW",
	"scopes": ["kb.read", "ticket.search.open"],
	"expireTime": "2030-03-01T00:00:00Z",
}

decide(agent) := d if {
	d := admission.decision with input as {"tenant": "acme", "now": now, "agent": agent}
}

test_template_agent_is_allowed if {
	d := decide(template_agent)
	d.outcome == "allow"
	d.required_approvals == []
	count(d.reasons) == 1
}

test_no_expiry_and_no_scopes_fit_the_template if {
	d := decide(object.remove(template_agent, ["expireTime", "scopes"]))
	d.outcome == "allow"
}

test_test_environment_fits_the_template if {
	decide(object.union(template_agent, {"environment": "ENVIRONMENT_TEST"})).outcome == "allow"
}

test_expiry_of_exactly_90_days_fits_the_template if {
	decide(object.union(template_agent, {"expireTime": "2030-04-01T00:00:00Z"})).outcome == "allow"
}

test_expiry_beyond_90_days_needs_the_owner if {
	d := decide(object.union(template_agent, {"expireTime": "2030-04-01T00:00:01Z"}))
	d.outcome == "require_approval"
	d.required_approvals == ["owner"]
	"not pre-approved: expire_time is more than 90 days away" in d.reasons
}

test_write_scope_in_dev_needs_the_owner if {
	d := decide(object.union(template_agent, {"scopes": ["kb.read", "ticket.create"]}))
	d.outcome == "require_approval"
	d.required_approvals == ["owner"]
	"not pre-approved: scope \"ticket.create\" is not read-only" in d.reasons
}

test_moderate_risk_needs_the_owner if {
	d := decide(object.union(template_agent, {"riskTier": "RISK_TIER_MODERATE"}))
	d.outcome == "require_approval"
	d.required_approvals == ["owner"]
}

test_high_risk_needs_owner_and_security if {
	d := decide(object.union(template_agent, {"riskTier": "RISK_TIER_HIGH", "environment": "ENVIRONMENT_STAGING"}))
	d.outcome == "require_approval"
	d.required_approvals == ["owner", "security"]
	"risk tier RISK_TIER_HIGH requires security approval" in d.reasons
}

test_unclassified_risk_is_treated_as_high if {
	d := decide(object.remove(template_agent, ["riskTier"]))
	d.outcome == "require_approval"
	d.required_approvals == ["owner", "security"]
}

test_production_write_needs_security if {
	d := decide(object.union(template_agent, {
		"environment": "ENVIRONMENT_PROD",
		"riskTier": "RISK_TIER_MODERATE",
		"scopes": ["ticket.create"],
	}))
	d.outcome == "require_approval"
	d.required_approvals == ["owner", "security"]
	"production write access requires security approval" in d.reasons
}

test_production_read_is_not_pre_approved if {
	d := decide(object.union(template_agent, {"environment": "ENVIRONMENT_PROD"}))
	d.outcome == "require_approval"
	d.required_approvals == ["owner"]
}

test_pii_needs_compliance if {
	d := decide(object.union(template_agent, {"dataSensitivity": "DATA_SENSITIVITY_PII", "riskTier": "RISK_TIER_HIGH"}))
	d.outcome == "require_approval"
	d.required_approvals == ["owner", "security", "compliance"]
}

test_confidential_is_not_pre_approved_but_needs_no_compliance if {
	d := decide(object.union(template_agent, {"dataSensitivity": "DATA_SENSITIVITY_CONFIDENTIAL", "riskTier": "RISK_TIER_MODERATE"}))
	d.outcome == "require_approval"
	d.required_approvals == ["owner"]
}

test_admin_scope_is_denied if {
	d := decide(object.union(template_agent, {"scopes": ["kb.read", "kb.admin"]}))
	d.outcome == "deny"
	d.reasons == ["scope \"kb.admin\" grants admin-style access; agents get narrow resource.action scopes only"]
	d.required_approvals == []
}

test_every_forbidden_segment_is_denied if {
	every scope in ["admin", "db.superuser", "root.write", "data.*", "data.read.all", "Kb.ADMIN"] {
		decide(object.union(template_agent, {"scopes": [scope]})).outcome == "deny"
	}
}

test_similar_but_harmless_segments_are_not_denied if {
	every scope in ["administration.read", "data.read.allowed", "rooted.list"] {
		decide(object.union(template_agent, {"scopes": [scope]})).outcome == "allow"
	}
}

test_missing_owner_is_denied if {
	d := decide(object.remove(template_agent, ["owner"]))
	d.outcome == "deny"
	d.reasons == ["owner is missing: every agent needs an accountable owner"]
}

test_blank_owner_is_denied if {
	decide(object.union(template_agent, {"owner": "  "})).outcome == "deny"
}

hard_line_agent := object.union(template_agent, {
	"environment": "ENVIRONMENT_PROD",
	"autonomy": "AUTONOMY_AUTONOMOUS",
	"trustBoundary": "TRUST_BOUNDARY_PUBLIC",
	"dataSensitivity": "DATA_SENSITIVITY_PCI",
	"riskTier": "RISK_TIER_HIGH",
})

test_autonomous_public_production_agent_with_payment_data_is_denied if {
	d := decide(hard_line_agent)
	d.outcome == "deny"
	d.reasons == ["an autonomous, public-facing production agent may not handle PCI data"]
}

test_hard_line_needs_every_condition if {
	decide(object.union(hard_line_agent, {"autonomy": "AUTONOMY_ASSISTIVE"})).outcome == "require_approval"
	decide(object.union(hard_line_agent, {"trustBoundary": "TRUST_BOUNDARY_B2B"})).outcome == "require_approval"
	decide(object.union(hard_line_agent, {"environment": "ENVIRONMENT_STAGING"})).outcome == "require_approval"
	decide(object.union(hard_line_agent, {"dataSensitivity": "DATA_SENSITIVITY_PII"})).outcome == "require_approval"
}

test_deny_wins_and_lists_every_reason if {
	d := decide(object.union(object.remove(hard_line_agent, ["owner"]), {"scopes": ["payment.admin"]}))
	d.outcome == "deny"
	count(d.reasons) == 3
	d.required_approvals == []
}

test_deny_wins_over_the_template if {
	decide(object.union(template_agent, {"scopes": ["kb.read.all"]})).outcome == "deny"
}

test_empty_input_is_denied if {
	d := admission.decision with input as {}
	d.outcome == "deny"
}
