package registry

import (
	"strings"

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
}

// ClassificationOf returns the classification fields of a.
func ClassificationOf(a *registryv1.Agent) Classification {
	return Classification{
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

// DeriveRiskTier classifies an agent. It is deterministic and depends only on c:
//
//   - HIGH when the agent touches regulated data (PII, PHI or PCI), or writes in production (any
//     scope whose action is write-like: write, create, update, delete, initiate, execute, send,
//     export), or acts autonomously on the public internet;
//   - LOW when it runs in DEV or TEST, touches only PUBLIC or INTERNAL data, and every scope's action
//     is read-like (read, list, get, search, query, view);
//   - MODERATE otherwise.
//
// HIGH wins over LOW. An agent without scopes is never HIGH by its scopes and counts as read-only.
func DeriveRiskTier(c Classification) registryv1.RiskTier {
	if isHigh(c) {
		return registryv1.RiskTier_RISK_TIER_HIGH
	}
	if isLow(c) {
		return registryv1.RiskTier_RISK_TIER_LOW
	}
	return registryv1.RiskTier_RISK_TIER_MODERATE
}

func isHigh(c Classification) bool {
	switch c.DataSensitivity {
	case registryv1.DataSensitivity_DATA_SENSITIVITY_PII,
		registryv1.DataSensitivity_DATA_SENSITIVITY_PHI,
		registryv1.DataSensitivity_DATA_SENSITIVITY_PCI:
		return true
	}
	if c.Environment == registryv1.Environment_ENVIRONMENT_PROD {
		for _, s := range c.Scopes {
			if writeActions[scopeAction(s)] {
				return true
			}
		}
	}
	return c.Autonomy == registryv1.Autonomy_AUTONOMY_AUTONOMOUS &&
		c.TrustBoundary == registryv1.TrustBoundary_TRUST_BOUNDARY_PUBLIC
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
