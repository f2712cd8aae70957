package lifecycle

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"

	enumspb "go.temporal.io/api/enums/v1"

	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/eventstore"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/workflows"
)

// EventAgentOrphaned is the registry's event of an agent whose owner or sponsor departed.
const EventAgentOrphaned = "agent.orphaned"

// OrphanedRequestPrefix starts the request id of the retirement an agent.orphaned event asks for,
// followed by the event's id: a redelivered event retires once.
const OrphanedRequestPrefix = "orphaned:"

// orphanedSubject matches agent.orphaned events.
var orphanedSubject = eventstore.SubjectRoot + ".*." + eventstore.AggregateAgent + ".*.orphaned"

// OrphanReviewCampaign is the campaign of the review an agent.orphaned event opens: `orphaned-`
// and a digest of the event id, so a redelivered event opens the same review (its workflow id is
// workflows.ReviewWorkflowID of it).
func OrphanReviewCampaign(eventID string) string {
	sum := sha256.Sum256([]byte(eventID))
	return "orphaned-" + hex.EncodeToString(sum[:10])
}

// actOnOrphaned acts on agent.orphaned as the orphan sweep's action says: with
// workflows.SweepActionDeprovision it retires the agent (trigger owner_departed, request id
// OrphanedRequestPrefix + event id), and otherwise (review, the default) it opens a review of the
// agent (ReviewWorkflow in campaign OrphanReviewCampaign): the owner is asked, the sponsor when the
// owner does not answer, and the agent is suspended when nobody does. Only principals the tenant's
// directory lists as ACTIVE are asked (activeReviewers): the sponsor first when the owner departed,
// nobody but the roles that may revoke when both did. An agent that is no longer
// orphaned (its ownership was transferred meanwhile) or no longer ACTIVE or SUSPENDED (retired,
// rejected, not provisioned yet) is left alone. The retirement carries the etag of the agent as
// read, so an agent fixed between the read and the retirement is not retired.
func (s *Service) actOnOrphaned(ctx context.Context, ev eventstore.Event) error {
	msg, tenant, agentID, err := decodeAgentEvent[*registryv1.AgentOrphaned](ev)
	if err != nil {
		return err
	}
	if s.registry == nil {
		return eventstore.Permanent(errors.New("agent.orphaned: the lifecycle service has no registry client to act with"))
	}
	resp, err := s.registry.GetAgent(ctx, &registryv1.GetAgentRequest{Name: msg.GetName(), MinVersion: ev.Sequence})
	switch e := errs.FromStatus(err); {
	case err == nil:
	case e.Kind == errs.KindNotFound:
		return nil
	default:
		return fmt.Errorf("agent.orphaned %s: read the agent: %w", ev.ID, err)
	}
	agent := resp.GetAgent()
	if !agent.GetOrphaned() {
		s.log.InfoContext(ctx, "orphaned agent not acted on: it is no longer orphaned", "agent", msg.GetName(), "event_id", ev.ID)
		return nil
	}
	if st := agent.GetState(); st != registryv1.AgentState_AGENT_STATE_ACTIVE && st != registryv1.AgentState_AGENT_STATE_SUSPENDED {
		s.log.InfoContext(ctx, "orphaned agent not acted on: it is not ACTIVE or SUSPENDED", "agent", msg.GetName(), "state", st.String(), "event_id", ev.ID)
		return nil
	}
	if s.orphanedAction == workflows.SweepActionDeprovision {
		_, err := s.registry.RetireAgent(ctx, &registryv1.RetireAgentRequest{
			Name: msg.GetName(), Reason: clipReason("orphaned: " + msg.GetReason()), Trigger: workflows.TriggerOwnerDeparted,
			RequestId: OrphanedRequestPrefix + ev.ID, Etag: agent.GetEtag(),
		})
		switch e := errs.FromStatus(err); {
		case err == nil:
			s.log.InfoContext(ctx, "orphaned agent retired", "agent", msg.GetName(), "event_id", ev.ID)
			return nil
		case e.Kind == errs.KindFailedPrecondition || e.Kind == errs.KindNotFound:
			s.log.InfoContext(ctx, "orphaned agent not retired: it changed meanwhile", "agent", msg.GetName(), "event_id", ev.ID, "error", err)
			return nil
		case e.Kind == errs.KindConflict:
			// The agent changed after it was read (a transfer may have cleared the orphaning):
			// the redelivered event reads it again and decides again.
			return fmt.Errorf("agent.orphaned %s: retire %s: the agent changed since it was read: %w", ev.ID, msg.GetName(), err)
		default:
			return fmt.Errorf("agent.orphaned %s: retire %s: %w", ev.ID, msg.GetName(), err)
		}
	}
	owner, sponsor, err := s.activeReviewers(ctx, tenant, agent.GetOwner(), agent.GetSponsor())
	if err != nil {
		return fmt.Errorf("agent.orphaned %s: who reviews %s: %w", ev.ID, msg.GetName(), err)
	}
	campaign := OrphanReviewCampaign(ev.ID)
	tier := workflows.RiskTierName(agent.GetRiskTier())
	spec := runSpec{
		id: workflows.ReviewWorkflowID(tenant, campaign, agentID), name: workflows.ReviewWorkflowName,
		tenant: tenant, agentID: agentID, tier: tier, stage: "review", eventID: ev.ID, event: ev.Type, md: ev.Metadata,
		memo: map[string]string{"agent": msg.GetName(), "campaign": campaign},
		in: workflows.ReviewInput{Tenant: tenant, Campaign: campaign, Agent: msg.GetName(), AgentID: agentID,
			Owner: owner, Sponsor: sponsor, RiskTier: tier, Scopes: agent.GetScopes()},
	}
	if _, err := s.startRun(ctx, spec, enumspb.WORKFLOW_ID_REUSE_POLICY_REJECT_DUPLICATE); err != nil && !errors.Is(err, errRunExists) {
		return err
	}
	return nil
}

// clipReason bounds a retirement reason to what the registry accepts.
func clipReason(s string) string {
	if r := []rune(s); len(r) > 1000 {
		return string(r[:999]) + "…"
	}
	return s
}
