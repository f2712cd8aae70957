// Package agents is the issuer's projection of the AGENTS stream: the lifecycle state of every agent,
// which the token endpoint reads to refuse tokens to agents that are not ACTIVE without calling the
// registry, and the catch-up gate that re-checks a refusal against the stream as of the request.
//
// Memory: one map entry per agent that ever had an event, keyed by its resource name
// (tenants/{tenant}/agents/{agent}, at most about 300 bytes) holding a state, a stream sequence and
// an expire time (24 bytes): with Go's map overhead under 400 bytes per agent, whatever the events'
// payloads, so 100k agents take under 40 MiB.
package agents

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/agentid/agentid/pkg/eventstore"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// ProjectionName names the projection (bump the version when Apply changes).
const ProjectionName = "issuer-agents-v5"

// Event types of the AGENTS stream that change an agent's state (written by the registry).
const (
	EventAgentRegistered          = "agent.registered"
	EventAgentActivated           = "agent.activated"
	EventAgentRejected            = "agent.rejected"
	EventAgentRetirementRequested = "agent.retirement_requested"
	EventAgentRetired             = "agent.retired"
	EventAgentSuspended           = "agent.suspended"
	EventAgentResumed             = "agent.resumed"
)

// LeavingActive are the event types after which an agent is no longer ACTIVE: the events whose
// agent's tokens the revocation reactor revokes.
var LeavingActive = []string{EventAgentRejected, EventAgentRetirementRequested, EventAgentRetired, EventAgentSuspended, EventAgentExpired}

// State is the projection: every agent's lifecycle state. It is safe for concurrent use; Apply is
// called from one goroutine (the runner's).
type State struct {
	mu      sync.RWMutex
	agents  map[string]agentState
	removed map[string][]string // scopes removed from an agent (agent.scopes_removed), only for agents with removals
	allowed map[string][]string // an agent's scopes as its last agent.updated of scopes set them, only for such agents
}

// agentState is what the projection keeps per agent.
type agentState struct {
	state  registryv1.AgentState
	seq    uint64 // stream sequence of the last event applied to the agent
	expire int64  // expire time (agent.registered's agent.expire_time), Unix milliseconds; 0: none
}

var _ eventstore.Projection = (*State)(nil)

// NewState returns an empty projection.
func NewState() *State { return &State{agents: make(map[string]agentState)} }

// Name identifies the projection.
func (s *State) Name() string { return ProjectionName }

// Apply folds one AGENTS event into the state; other event types are ignored. An event at or below
// the sequence of the last one applied to its agent (a re-driven failed event) changes nothing, so a
// late agent.registered never turns a RETIRED agent PENDING again. An event whose agent name does not
// match its tenant or aggregate is refused.
func (s *State) Apply(_ context.Context, e eventstore.Event) error {
	if e.Type == EventAgentScopesRemoved {
		return s.applyScopesRemoved(e)
	}
	if e.Type == EventAgentUpdated {
		return s.applyUpdated(e)
	}
	name, state, err := Transition(e)
	if err != nil || name == "" {
		return err
	}
	expire := int64(0)
	if e.Type == EventAgentRegistered {
		msg, err := eventstore.DecodeAs[*registryv1.AgentRegistered](e)
		if err != nil {
			return err
		}
		if t := msg.GetAgent().GetExpireTime(); t.IsValid() && !t.AsTime().IsZero() {
			expire = max(t.AsTime().UnixMilli(), 1)
		}
	}
	return s.fold(e, name, func(cur *agentState) {
		cur.state = state
		if e.Type == EventAgentRegistered {
			cur.expire = expire
		}
	})
}

// fold applies an event to the agent's state under the lock: an event at or below the last one
// applied to the agent changes nothing; otherwise the agent's sequence advances, apply changes its
// state and the result is stored.
func (s *State) fold(e eventstore.Event, name string, apply func(*agentState)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.agents[name]
	if e.Sequence != 0 && e.Sequence <= cur.seq {
		return nil
	}
	cur.seq = max(cur.seq, e.Sequence)
	apply(&cur)
	s.agents[name] = cur
	return nil
}

// ExpireTime returns the agent's expire time (set at registration); ok is false for an agent
// without one, or one the projection does not know.
func (s *State) ExpireTime(name string) (t time.Time, ok bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if ms := s.agents[name].expire; ms != 0 {
		return time.UnixMilli(ms).UTC(), true
	}
	return time.Time{}, false
}

// AgentState returns the agent's state; AGENT_STATE_UNSPECIFIED for an agent the projection does
// not know.
func (s *State) AgentState(name string) registryv1.AgentState {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.agents[name].state
}

// Len is the number of agents the projection knows.
func (s *State) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.agents)
}

// Transition decodes a state-changing agent event: the agent's resource name and the state the event
// puts it in. Other event types return an empty name and no error. The name must be an agent of the
// event's tenant and, when the event has an aggregate id, that agent.
func Transition(e eventstore.Event) (name string, state registryv1.AgentState, err error) {
	switch e.Type {
	case EventAgentRegistered:
		msg, derr := eventstore.DecodeAs[*registryv1.AgentRegistered](e)
		name, state, err = msg.GetAgent().GetName(), registryv1.AgentState_AGENT_STATE_PENDING, derr
		if msg.GetAgent().GetState() == registryv1.AgentState_AGENT_STATE_PROPOSED {
			state = registryv1.AgentState_AGENT_STATE_PROPOSED
		}
	case EventAgentActivated:
		msg, derr := eventstore.DecodeAs[*registryv1.AgentActivated](e)
		name, state, err = msg.GetName(), registryv1.AgentState_AGENT_STATE_ACTIVE, derr
	case EventAgentRejected:
		msg, derr := eventstore.DecodeAs[*registryv1.AgentRejected](e)
		name, state, err = msg.GetName(), registryv1.AgentState_AGENT_STATE_REJECTED, derr
	case EventAgentRetirementRequested:
		msg, derr := eventstore.DecodeAs[*registryv1.AgentRetirementRequested](e)
		name, state, err = msg.GetName(), registryv1.AgentState_AGENT_STATE_RETIRING, derr
	case EventAgentRetired:
		msg, derr := eventstore.DecodeAs[*registryv1.AgentRetired](e)
		name, state, err = msg.GetName(), registryv1.AgentState_AGENT_STATE_RETIRED, derr
	case EventAgentSuspended:
		msg, derr := eventstore.DecodeAs[*registryv1.AgentSuspended](e)
		name, state, err = msg.GetName(), registryv1.AgentState_AGENT_STATE_SUSPENDED, derr
	case EventAgentResumed:
		msg, derr := eventstore.DecodeAs[*registryv1.AgentResumed](e)
		name, state, err = msg.GetName(), registryv1.AgentState_AGENT_STATE_ACTIVE, derr
	case EventAgentSubmitted:
		msg, derr := eventstore.DecodeAs[*registryv1.AgentSubmitted](e)
		name, state, err = msg.GetName(), registryv1.AgentState_AGENT_STATE_PENDING, derr
	case EventAgentExpired:
		msg, derr := eventstore.DecodeAs[*registryv1.AgentExpired](e)
		name, state, err = msg.GetName(), registryv1.AgentState_AGENT_STATE_EXPIRED, derr
	default:
		return "", registryv1.AgentState_AGENT_STATE_UNSPECIFIED, nil
	}
	if err != nil {
		return "", registryv1.AgentState_AGENT_STATE_UNSPECIFIED, err
	}
	if err := CheckEventAgent(e, name); err != nil {
		return "", registryv1.AgentState_AGENT_STATE_UNSPECIFIED, err
	}
	return name, state, nil
}

// CheckEventAgent checks that the agent an event names is an agent resource name of the event's
// tenant and, when the event has an aggregate id, that agent.
func CheckEventAgent(e eventstore.Event, name string) error {
	tenant, id, ok := ParseName(name)
	switch {
	case !ok:
		return fmt.Errorf("event %s (%s): agent %q is not tenants/{tenant}/agents/{agent}", e.ID, e.Type, name)
	case tenant != e.Metadata.Tenant:
		return fmt.Errorf("event %s (%s): agent %s is not in the event's tenant %q", e.ID, e.Type, name, e.Metadata.Tenant)
	case e.AggregateID != "" && e.AggregateID != id:
		return fmt.Errorf("event %s (%s): agent %s on aggregate %s", e.ID, e.Type, name, e.AggregateID)
	}
	return nil
}

// ParseName splits an agent resource name, tenants/{tenant}/agents/{agent}; ok is false for anything
// else.
func ParseName(name string) (tenant, agentID string, ok bool) {
	parts := strings.Split(name, "/")
	if len(parts) != 4 || parts[0] != "tenants" || parts[2] != "agents" || parts[1] == "" || parts[3] == "" {
		return "", "", false
	}
	return parts[1], parts[3], true
}

// StateName is the short name of a state for logs: ACTIVE, RETIRED, ..., or UNKNOWN for an agent the
// projection does not know.
func StateName(st registryv1.AgentState) string {
	if st == registryv1.AgentState_AGENT_STATE_UNSPECIFIED {
		return "UNKNOWN"
	}
	return strings.TrimPrefix(st.String(), "AGENT_STATE_")
}
