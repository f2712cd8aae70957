package registry

import (
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// Aggregate types of the registry's events.
const (
	// AggregateTenant is the aggregate type of tenants (stream TENANTS).
	AggregateTenant = "tenant"
	// AggregateAgent is the aggregate type of agents (stream AGENTS).
	AggregateAgent = "agent"
)

// Event types: "<aggregate-type>.<event-name>" (docs/architecture.md).
const (
	// EventTenantCreated records a new tenant (registryv1.TenantCreated).
	EventTenantCreated = "tenant.created"
	// EventAgentRegistered records a new agent in state PENDING, or PROPOSED when its payload's
	// state says so (registryv1.AgentRegistered).
	EventAgentRegistered = "agent.registered"
	// EventAgentActivated records an approved provisioning decision (registryv1.AgentActivated).
	EventAgentActivated = "agent.activated"
	// EventAgentRejected records a rejected provisioning decision (registryv1.AgentRejected).
	EventAgentRejected = "agent.rejected"
	// EventAgentRetirementRequested records a retirement request (registryv1.AgentRetirementRequested).
	EventAgentRetirementRequested = "agent.retirement_requested"
	// EventAgentRetired records verified deprovisioning (registryv1.AgentRetired).
	EventAgentRetired = "agent.retired"
	// EventAgentSuspended records the suspension of an ACTIVE agent (registryv1.AgentSuspended).
	EventAgentSuspended = "agent.suspended"
	// EventAgentResumed records the return of a SUSPENDED agent to ACTIVE (registryv1.AgentResumed).
	EventAgentResumed = "agent.resumed"
	// EventAgentUpdated records a change of an agent's declared fields (registryv1.AgentUpdated).
	EventAgentUpdated = "agent.updated"
	// EventAgentSubmitted records that a PROPOSED agent became PENDING (registryv1.AgentSubmitted).
	EventAgentSubmitted = "agent.submitted"
	// EventAgentExpired records that an agent reached its expire_time (registryv1.AgentExpired).
	EventAgentExpired = "agent.expired"
)

// Change is an event a command decided to record: its type and payload.
type Change struct {
	// Type is one of the Event* constants.
	Type string
	// Data is the payload, the protobuf message that belongs to Type.
	Data proto.Message
}

// TenantCreated is the change that creates tenant t.
func TenantCreated(t *registryv1.Tenant) Change {
	return Change{Type: EventTenantCreated, Data: &registryv1.TenantCreated{Tenant: t}}
}

// AgentRegistered is the change that registers agent a (in state PENDING).
func AgentRegistered(a *registryv1.Agent) Change {
	return Change{Type: EventAgentRegistered, Data: &registryv1.AgentRegistered{Agent: a}}
}

// AgentActivated is the change that activates the agent named name.
func AgentActivated(name, decisionID, approvedBy string) Change {
	return Change{Type: EventAgentActivated, Data: &registryv1.AgentActivated{Name: name, DecisionId: decisionID, ApprovedBy: approvedBy}}
}

// AgentRejected is the change that rejects the agent named name.
func AgentRejected(name, decisionID, reason string) Change {
	return Change{Type: EventAgentRejected, Data: &registryv1.AgentRejected{Name: name, DecisionId: decisionID, Reason: reason}}
}

// AgentRetirementRequested is the change that starts the retirement of the agent named name, for
// trigger (one of Triggers).
func AgentRetirementRequested(name, reason, ticket, trigger string) Change {
	return Change{Type: EventAgentRetirementRequested, Data: &registryv1.AgentRetirementRequested{Name: name, Reason: reason, Ticket: ticket, Trigger: trigger}}
}

// AgentRetired is the change that completes the retirement of the agent named name.
func AgentRetired(name string, verifyTime *timestamppb.Timestamp) Change {
	return Change{Type: EventAgentRetired, Data: &registryv1.AgentRetired{Name: name, VerifyTime: verifyTime}}
}

// AgentSuspended is the change that suspends the agent named name.
func AgentSuspended(name, reason, cause, ticket string) Change {
	return Change{Type: EventAgentSuspended, Data: &registryv1.AgentSuspended{Name: name, Reason: reason, Cause: cause, Ticket: ticket}}
}

// AgentResumed is the change that returns the suspended agent named name to ACTIVE.
func AgentResumed(name, reason, ticket string) Change {
	return Change{Type: EventAgentResumed, Data: &registryv1.AgentResumed{Name: name, Reason: reason, Ticket: ticket}}
}

// AgentUpdated is the change that sets the changed fields of the agent named name to their values
// in agent (its declared fields after the change), with the new classification when it changed.
func AgentUpdated(name string, changed []string, agent *registryv1.Agent, reason string, cls *registryv1.Classification) Change {
	return Change{Type: EventAgentUpdated, Data: &registryv1.AgentUpdated{
		Name: name, ChangedFields: changed, Agent: agent, Reason: reason, Classification: cls,
	}}
}

// AgentSubmitted is the change that submits the PROPOSED agent named name: it becomes PENDING.
func AgentSubmitted(name string) Change {
	return Change{Type: EventAgentSubmitted, Data: &registryv1.AgentSubmitted{Name: name}}
}

// AgentExpired is the change that records that the agent named name reached expireTime.
func AgentExpired(name string, expireTime *timestamppb.Timestamp) Change {
	return Change{Type: EventAgentExpired, Data: &registryv1.AgentExpired{Name: name, ExpireTime: expireTime}}
}
