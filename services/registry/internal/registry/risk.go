package registry

import (
	"fmt"
	"strings"

	"google.golang.org/protobuf/proto"

	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// Classification is what an agent's risk tier is derived from.
type Classification struct {
	// Environment the identity is valid in.
	Environment registryv1.Environment
	// Autonomy of the agent.
	Autonomy registryv1.Autonomy
	// TrustBoundary the agent is exposed to.
	TrustBoundary registryv1.TrustBoundary
	// DataSensitivity is the most sensitive class of data the agent touches.
	DataSensitivity registryv1.DataSensitivity
	// Scopes are the agent's scopes, `resource.action[.qualifier]`.
	Scopes []string
	// Function is the agent's declared function (empty counts as `other`).
	Function string
}

// ClassificationOf returns the classification fields of a.
func ClassificationOf(a *registryv1.Agent) Classification {
	return Classification{
		Function:        a.GetFunction(),
		Environment:     a.GetEnvironment(),
		Autonomy:        a.GetAutonomy(),
		TrustBoundary:   a.GetTrustBoundary(),
		DataSensitivity: a.GetDataSensitivity(),
		Scopes:          a.GetScopes(),
	}
}

// writeActions are the scope actions that change, move or release data or money.
var writeActions = map[string]bool{
	"write": true, "create": true, "update": true, "delete": true,
	"initiate": true, "execute": true, "send": true, "export": true,
}

// readActions are the scope actions that only read.
var readActions = map[string]bool{
	"read": true, "list": true, "get": true, "search": true, "query": true, "view": true,
}

// scopeAction returns the action segment of a `resource.action[.qualifier]` scope.
func scopeAction(scope string) string {
	parts := strings.Split(scope, ".")
	if len(parts) < 2 {
		return ""
	}
	return parts[1]
}

// ExposureOf derives who can reach an agent from its trust boundary: INTERNAL, PARTNER (B2B) or
// PUBLIC.
func ExposureOf(tb registryv1.TrustBoundary) registryv1.Exposure {
	switch tb {
	case registryv1.TrustBoundary_TRUST_BOUNDARY_INTERNAL:
		return registryv1.Exposure_EXPOSURE_INTERNAL
	case registryv1.TrustBoundary_TRUST_BOUNDARY_B2B:
		return registryv1.Exposure_EXPOSURE_PARTNER
	case registryv1.TrustBoundary_TRUST_BOUNDARY_PUBLIC:
		return registryv1.Exposure_EXPOSURE_PUBLIC
	}
	return registryv1.Exposure_EXPOSURE_UNSPECIFIED
}

// DeriveRiskTier classifies an agent. It is deterministic and depends only on c; the rules, first
// match wins (docs/registry.md):
//
//  1. HIGH when the agent touches regulated data (PII, PHI or PCI);
//  2. HIGH when its function is finance in PROD;
//  3. HIGH when it writes in PROD (any scope whose action is write-like: write, create, update,
//     delete, initiate, execute, send, export);
//  4. HIGH when it acts autonomously with PUBLIC exposure;
//  5. LOW when it runs in DEV or TEST, touches only PUBLIC or INTERNAL data, and every scope's
//     action is read-like (read, list, get, search, query, view);
//  6. MODERATE otherwise.
//
// An agent without scopes is never HIGH by its scopes and counts as read-only.
func DeriveRiskTier(c Classification) registryv1.RiskTier {
	tier, _ := deriveRisk(c)
	return tier
}

// deriveRisk is DeriveRiskTier with the rule that decided, in a sentence.
func deriveRisk(c Classification) (registryv1.RiskTier, string) {
	switch c.DataSensitivity {
	case registryv1.DataSensitivity_DATA_SENSITIVITY_PII,
		registryv1.DataSensitivity_DATA_SENSITIVITY_PHI,
		registryv1.DataSensitivity_DATA_SENSITIVITY_PCI:
		return registryv1.RiskTier_RISK_TIER_HIGH, enumShort(c.DataSensitivity.String(), "DATA_SENSITIVITY_") + " data → HIGH"
	}
	prod := c.Environment == registryv1.Environment_ENVIRONMENT_PROD
	if prod && c.Function == "finance" {
		return registryv1.RiskTier_RISK_TIER_HIGH, "finance function in PROD → HIGH"
	}
	if prod {
		for _, s := range c.Scopes {
			if writeActions[scopeAction(s)] {
				return registryv1.RiskTier_RISK_TIER_HIGH, fmt.Sprintf("write-like scope %s in PROD → HIGH", s)
			}
		}
	}
	if c.Autonomy == registryv1.Autonomy_AUTONOMY_AUTONOMOUS && ExposureOf(c.TrustBoundary) == registryv1.Exposure_EXPOSURE_PUBLIC {
		return registryv1.RiskTier_RISK_TIER_HIGH, "autonomous with PUBLIC exposure → HIGH"
	}
	if isLow(c) {
		return registryv1.RiskTier_RISK_TIER_LOW, "DEV/TEST, PUBLIC/INTERNAL data, read-only scopes → LOW"
	}
	return registryv1.RiskTier_RISK_TIER_MODERATE, "no HIGH or LOW rule applies → MODERATE"
}

func isLow(c Classification) bool {
	switch c.Environment {
	case registryv1.Environment_ENVIRONMENT_DEV, registryv1.Environment_ENVIRONMENT_TEST:
	default:
		return false
	}
	switch c.DataSensitivity {
	case registryv1.DataSensitivity_DATA_SENSITIVITY_PUBLIC, registryv1.DataSensitivity_DATA_SENSITIVITY_INTERNAL:
	default:
		return false
	}
	for _, s := range c.Scopes {
		if !readActions[scopeAction(s)] {
			return false
		}
	}
	return true
}

// Classify is the registry's deterministic classification of a (its function, data sensitivity,
// environment, autonomy and exposure, and the risk tier and rule they give). It carries no
// override.
func Classify(a *registryv1.Agent) *registryv1.Classification {
	c := ClassificationOf(a)
	tier, rule := deriveRisk(c)
	fn := c.Function
	if fn == "" {
		fn = "other"
	}
	return &registryv1.Classification{
		Function:        fn,
		DataSensitivity: c.DataSensitivity,
		Environment:     c.Environment,
		Autonomy:        c.Autonomy,
		Exposure:        ExposureOf(c.TrustBoundary),
		DerivedRiskTier: tier,
		Rule:            rule,
	}
}

// reclassify returns a's classification from its current fields, keeping the policy override of
// prev (the classification it had) only while the derived risk tier stays what it was: an override
// was decided on that tier, so a change of it drops the override (an update that needs admission
// then gets the policy's override afresh, or none).
func reclassify(a *registryv1.Agent, prev *registryv1.Classification) *registryv1.Classification {
	c := Classify(a)
	if prev.GetOverrideRiskTier() != registryv1.RiskTier_RISK_TIER_UNSPECIFIED && prev.GetDerivedRiskTier() == c.GetDerivedRiskTier() {
		c.OverrideRiskTier = prev.GetOverrideRiskTier()
		c.OverrideReason = prev.GetOverrideReason()
		c.OverrideSource = prev.GetOverrideSource()
	}
	return c
}

// EffectiveRiskTier is the risk tier a classification gives the agent: its override when set, its
// derived tier otherwise.
func EffectiveRiskTier(c *registryv1.Classification) registryv1.RiskTier {
	if t := c.GetOverrideRiskTier(); t != registryv1.RiskTier_RISK_TIER_UNSPECIFIED {
		return t
	}
	return c.GetDerivedRiskTier()
}

// sameClassification reports whether two classifications are equal.
func sameClassification(a, b *registryv1.Classification) bool { return proto.Equal(a, b) }

// enumShort is an enum value's name without its prefix.
func enumShort(name, prefix string) string { return strings.TrimPrefix(name, prefix) }
