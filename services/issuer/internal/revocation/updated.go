package revocation

import (
	"context"
	"slices"
	"strings"

	"github.com/agentid/agentid/pkg/eventstore"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/issuer/internal/agents"
)

// handleUpdated revokes every token of an agent whose scopes, roles or credential type an
// agent.updated changed, issued until the event's time plus the allowance: a token may carry a scope
// the update took away (or be a bearer token of an agent now bound to DPoP), and the token endpoint,
// its projection having applied the update, grants new ones as the agent now is. An update of other
// fields revokes nothing.
func (r *Reactor) handleUpdated(ctx context.Context, e eventstore.Event) error {
	msg, err := eventstore.DecodeAs[*registryv1.AgentUpdated](e)
	if err != nil {
		return eventstore.Permanent(err)
	}
	name := msg.GetName()
	if err := agents.CheckEventAgent(e, name); err != nil {
		return eventstore.Permanent(err)
	}
	tenant := e.Metadata.Tenant
	var grants []string
	for _, f := range msg.GetChangedFields() {
		if slices.Contains([]string{"scopes", "roles", "credential_type"}, f) {
			grants = append(grants, f)
		}
	}
	if len(grants) == 0 {
		return nil
	}
	return r.revoke(ctx, e, e.Time, &issuerv1.TokensRevoked{
		Target: issuerv1.RevocationTarget_REVOCATION_TARGET_AGENT,
		Tenant: tenant,
		Agent:  name,
		Cause:  issuerv1.RevocationCause_REVOCATION_CAUSE_AGENT_STATE,
		Reason: reason("agent "+strings.Join(grants, ", ")+" updated ("+e.Type+")", msg.GetReason()),
	})
}
