package registry

import (
	"context"
	"fmt"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/eventstore"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// Paging of GetAgentHistory.
const (
	// DefaultHistoryPageSize is the history page size when a request gives none.
	DefaultHistoryPageSize = 100
)

// GetAgentHistory returns one page of an agent's timeline from its events in the event store,
// oldest first, and the next page's token (empty on the last page). An agent without events is
// NotFound AGENT_NOT_FOUND.
func (s *Service) GetAgentHistory(ctx context.Context, tenant, agentID string, size int32, token string) ([]*registryv1.AgentHistoryEntry, string, error) {
	n := DefaultHistoryPageSize
	if size != 0 {
		var err error
		if n, err = pageSize(size); err != nil {
			return nil, "", err
		}
	}
	after, err := decodePageToken(token)
	if err != nil {
		return nil, "", err
	}
	events, version, err := s.store.Load(ctx, tenant, AggregateAgent, agentID)
	if err != nil {
		return nil, "", storeError(err)
	}
	if version == 0 || len(events) == 0 {
		return nil, "", errs.NotFound("AGENT_NOT_FOUND", "agent not found").WithMetadata("name", AgentName(tenant, agentID))
	}
	out := make([]*registryv1.AgentHistoryEntry, 0, min(n, len(events)))
	for i, e := range events {
		if e.Sequence <= after {
			continue
		}
		if len(out) == n {
			return out, encodePageToken(events[i-1].Sequence), nil
		}
		out = append(out, HistoryEntry(e))
	}
	return out, "", nil
}

// HistoryEntry describes one agent event for the agent's timeline: its version, who, when, which
// request, a one-sentence summary, the agent fields it changed and its payload as JSON.
func HistoryEntry(e eventstore.Event) *registryv1.AgentHistoryEntry {
	entry := &registryv1.AgentHistoryEntry{
		Version:       e.Sequence,
		EventId:       e.ID,
		EventType:     e.Type,
		Time:          timestamppb.New(e.Time.UTC()),
		Actor:         e.Metadata.Actor.ID,
		ActorKind:     string(e.Metadata.Actor.Kind),
		RequestId:     requestIDOf(e.Metadata.CausationID),
		CorrelationId: e.Metadata.CorrelationID,
		Summary:       e.Type,
	}
	msg, err := e.Decode()
	if err != nil {
		entry.Summary = e.Type + " (payload unreadable)"
		return entry
	}
	if b, err := (protojson.MarshalOptions{UseProtoNames: true}).Marshal(msg); err == nil {
		var st structpb.Struct
		if err := protojson.Unmarshal(b, &st); err == nil {
			entry.Data = &st
		}
	}
	entry.Summary, entry.ChangedFields = describe(e.Type, msg)
	return entry
}

// requestIDOf is the request id in a command's idempotency key (Command/tenant/agent/request id);
// other causation ids (an event id) are returned as they are.
func requestIDOf(causation string) string {
	parts := strings.SplitN(causation, "/", 4)
	if len(parts) == 4 {
		return parts[3]
	}
	return causation
}

// withReason appends ": reason" when there is one.
func withReason(s, reason string) string {
	if reason == "" {
		return s
	}
	return s + ": " + reason
}

// describe is the summary of an agent event and the agent fields it changed.
func describe(typ string, msg proto.Message) (string, []string) {
	stateFields := []string{"state", "state_reason"}
	switch d := msg.(type) {
	case *registryv1.AgentRegistered:
		a := d.GetAgent()
		var set []string
		for _, p := range declaredPaths {
			if fd := agentField(p); fd != nil && a.ProtoReflect().Has(fd) {
				set = append(set, p)
			}
		}
		set = append(set, "public_jwks", "state", "risk_tier", "classification")
		st := "PENDING"
		if a.GetState() == registryv1.AgentState_AGENT_STATE_PROPOSED {
			st = "PROPOSED"
		}
		return fmt.Sprintf("registered %s, %s, risk tier %s, owner %s, sponsor %s", st,
			enumShort(a.GetEnvironment().String(), "ENVIRONMENT_"), enumShort(a.GetRiskTier().String(), "RISK_TIER_"),
			a.GetOwner(), a.GetSponsor()), set
	case *registryv1.AgentActivated:
		return fmt.Sprintf("activated (decision %s, approved by %s)", d.GetDecisionId(), d.GetApprovedBy()), stateFields
	case *registryv1.AgentRejected:
		return withReason(fmt.Sprintf("rejected (decision %s)", d.GetDecisionId()), d.GetReason()), stateFields
	case *registryv1.AgentRetirementRequested:
		return withReason(fmt.Sprintf("retirement requested (trigger %s)", d.GetTrigger()), d.GetReason()), stateFields
	case *registryv1.AgentRetired:
		return "retired: deprovisioning verified", []string{"state"}
	case *registryv1.AgentSuspended:
		return withReason(fmt.Sprintf("suspended (cause %s)", d.GetCause()), d.GetReason()), stateFields
	case *registryv1.AgentResumed:
		return withReason("resumed", d.GetReason()), stateFields
	case *registryv1.AgentKeyAdded:
		return fmt.Sprintf("key %s added (thumbprint %s)", d.GetKid(), d.GetThumbprint()), []string{"public_jwks", "keys"}
	case *registryv1.AgentKeyRemoved:
		return withReason(fmt.Sprintf("key %s removed (thumbprint %s)", d.GetKid(), d.GetThumbprint()), d.GetReason()), []string{"public_jwks", "keys"}
	case *registryv1.AgentScopesRemoved:
		return withReason("scopes removed: "+strings.Join(d.GetScopes(), ", "), d.GetReason()), []string{"scopes"}
	case *registryv1.AgentUpdated:
		changed := append([]string(nil), d.GetChangedFields()...)
		s := "updated " + strings.Join(changed, ", ")
		if c := d.GetClassification(); c != nil {
			changed = append(changed, "classification", "risk_tier")
			s += fmt.Sprintf("; reclassified: risk tier %s (%s)", enumShort(EffectiveRiskTier(c).String(), "RISK_TIER_"), c.GetRule())
		}
		return withReason(s, d.GetReason()), changed
	case *registryv1.AgentSubmitted:
		return "submitted: PROPOSED → PENDING, provisioning starts", []string{"state"}
	case *registryv1.AgentExpired:
		s := "expired"
		if t := d.GetExpireTime(); t.IsValid() {
			s += " (expire_time " + t.AsTime().UTC().Format("2006-01-02T15:04:05Z") + ")"
		}
		return s, stateFields
	case *registryv1.AgentOwnershipTransferred:
		var parts []string
		var changed []string
		if d.GetToOwner() != "" && d.GetToOwner() != d.GetFromOwner() {
			parts = append(parts, fmt.Sprintf("owner %s → %s", d.GetFromOwner(), d.GetToOwner()))
			changed = append(changed, "owner")
		}
		if d.GetToSponsor() != "" && d.GetToSponsor() != d.GetFromSponsor() {
			parts = append(parts, fmt.Sprintf("sponsor %s → %s", d.GetFromSponsor(), d.GetToSponsor()))
			changed = append(changed, "sponsor")
		}
		return withReason("ownership transferred: "+strings.Join(parts, ", "), d.GetReason()), append(changed, "orphaned", "orphan_reason", "orphan_time")
	case *registryv1.AgentOrphaned:
		return withReason(fmt.Sprintf("orphaned: %s %s departed", d.GetRole(), d.GetPrincipal()), d.GetReason()), []string{"orphaned", "orphan_reason", "orphan_time"}
	}
	return typ, nil
}
