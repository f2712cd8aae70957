package registry

import (
	"google.golang.org/protobuf/proto"

	"github.com/agentid/agentid/pkg/eventstore"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// RiskTierOverride is a policy's override of an agent's derived risk tier: the tier, why, and the
// policy (bundle version) that set it. The zero value is no override.
type RiskTierOverride struct {
	// Tier replaces the derived risk tier; UNSPECIFIED means no override.
	Tier registryv1.RiskTier
	// Reason says why (required with Tier, at most 1000 characters).
	Reason string
	// Source names the policy that set it, e.g. `policy-bundle:<version>` (required with Tier, at
	// most 200 characters).
	Source string
}

// Set reports whether o overrides anything.
func (o RiskTierOverride) Set() bool { return o.Tier != registryv1.RiskTier_RISK_TIER_UNSPECIFIED }

// validate checks an override carried by a command; fields are named as in ActivateAgentRequest.
func (o RiskTierOverride) validate() error {
	if !o.Set() {
		if o.Reason != "" || o.Source != "" {
			return invalid("override_risk_tier", "is required with override_reason and override_source")
		}
		return nil
	}
	if _, known := registryv1.RiskTier_name[int32(o.Tier)]; !known {
		return invalid("override_risk_tier", "must be RISK_TIER_LOW, RISK_TIER_MODERATE or RISK_TIER_HIGH")
	}
	if err := checkText("override_reason", o.Reason, true, 1000); err != nil {
		return err
	}
	return checkText("override_source", o.Source, true, 200)
}

// ApplyRiskTierOverride records o in a's classification (override tier, reason and source) and
// makes it a's risk tier; a zero o changes nothing. a's classification is replaced, never modified
// in place.
func ApplyRiskTierOverride(a *registryv1.Agent, o RiskTierOverride) {
	if a == nil || !o.Set() {
		return
	}
	c := &registryv1.Classification{}
	if prev := a.GetClassification(); prev != nil {
		c = proto.CloneOf(prev)
	}
	c.OverrideRiskTier, c.OverrideReason, c.OverrideSource = o.Tier, o.Reason, o.Source
	a.Classification = c
	a.RiskTier = o.Tier
}

// foldActivationOverride applies the risk tier override an agent.activated event carries, if any.
// Events are facts: an override the command validated is applied as recorded.
func foldActivationOverride(next *registryv1.Agent, e eventstore.Event) error {
	d, err := eventstore.DecodeAs[*registryv1.AgentActivated](e)
	if err != nil {
		return err
	}
	ApplyRiskTierOverride(next, RiskTierOverride{Tier: d.GetOverrideRiskTier(), Reason: d.GetOverrideReason(), Source: d.GetOverrideSource()})
	return nil
}

// withOverride returns the activation change ch carrying o (unchanged when o is zero).
func withOverride(ch Change, o RiskTierOverride) Change {
	if d, ok := ch.Data.(*registryv1.AgentActivated); ok && o.Set() {
		d.OverrideRiskTier, d.OverrideReason, d.OverrideSource = o.Tier, o.Reason, o.Source
	}
	return ch
}
