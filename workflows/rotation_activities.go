package workflows

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/errs"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	lifecyclev1 "github.com/agentid/agentid/proto/gen/go/agentid/lifecycle/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// EventKeyRotated records the end of a rotation run (lifecyclev1.KeyRotated).
const EventKeyRotated = "lifecycle.key_rotated"

// RotationAgent reads the agent's state and key thumbprints from the registry; an agent the
// registry does not know is State "GONE" (the run starts from the agent's own key_added event, so the
// registry has it).
func (a *Activities) RotationAgent(ctx context.Context, in RotationAgentRequest) (RotationAgentState, error) {
	resp, err := a.Registry.GetAgent(ctx, &registryv1.GetAgentRequest{Name: in.Agent})
	if err != nil && errs.FromStatus(err).Kind == errs.KindNotFound {
		return RotationAgentState{State: "GONE"}, nil
	}
	if err != nil {
		return RotationAgentState{}, classify("registry.GetAgent", err)
	}
	agent := resp.GetAgent()
	st := RotationAgentState{State: strings.TrimPrefix(agent.GetState().String(), "AGENT_STATE_")}
	for _, k := range agent.GetKeys() {
		st.Keys = append(st.Keys, k.GetThumbprint())
	}
	return st, nil
}

// ClientKeyRequest names a key of an agent's client and the change to make.
type ClientKeyRequest struct {
	// Tenant of the client.
	Tenant string
	// ClientID is the client id (the agent id).
	ClientID string
	// PublicJWK is the key to add (AddClientKey).
	PublicJWK string
	// Thumbprint is the key to remove or whose tokens to revoke.
	Thumbprint string
	// Reason is recorded.
	Reason string
	// RequestID is the idempotency key.
	RequestID string
}

// MaxRequestID is the longest request id the registry and the issuer accept.
const MaxRequestID = 128

// BoundedRequestID returns id when the services accept it, and otherwise its first 64 characters
// followed by "~" and the base64url SHA-256 of the whole id: the same id always gives the same
// result, so a retried call stays idempotent. Rotation request ids (workflow id, two thumbprints)
// are longer than the services accept.
func BoundedRequestID(id string) string {
	if len(id) <= MaxRequestID {
		return id
	}
	sum := sha256.Sum256([]byte(id))
	return id[:64] + "~" + base64.RawURLEncoding.EncodeToString(sum[:])
}

func clientName(tenant, clientID string) string { return "tenants/" + tenant + "/clients/" + clientID }

// AddClientKey adds the key to the agent's client (IssuerService.AddClientKey, idempotent: a key the
// client has changes nothing). A client that does not exist yet (the agent is still being
// provisioned) is no error: provisioning creates it from the registry's keys, the new one included.
func (a *Activities) AddClientKey(ctx context.Context, in ClientKeyRequest) error {
	_, err := a.Issuer.AddClientKey(ctx, &issuerv1.AddClientKeyRequest{
		Name: clientName(in.Tenant, in.ClientID), PublicJwk: in.PublicJWK, RequestId: BoundedRequestID(in.RequestID),
	})
	if err != nil && errs.FromStatus(err).Kind == errs.KindNotFound {
		return nil
	}
	return classify("issuer.AddClientKey", err)
}

// RemoveClientKey removes the key from the agent's client (IssuerService.RemoveClientKey; a key the
// client no longer has, or a client that does not exist, changes nothing).
func (a *Activities) RemoveClientKey(ctx context.Context, in ClientKeyRequest) error {
	_, err := a.Issuer.RemoveClientKey(ctx, &issuerv1.RemoveClientKeyRequest{
		Name: clientName(in.Tenant, in.ClientID), Thumbprint: in.Thumbprint, Reason: truncate(in.Reason, 1024), RequestId: BoundedRequestID(in.RequestID),
	})
	if err != nil && errs.FromStatus(err).Kind == errs.KindNotFound {
		return nil
	}
	return classify("issuer.RemoveClientKey", err)
}

// AgentKeyRemovalRequest asks to remove a key from an agent in the registry.
type AgentKeyRemovalRequest struct {
	// Agent is the resource name.
	Agent string
	// Thumbprint names the key.
	Thumbprint string
	// Reason is recorded.
	Reason string
	// RequestID is the idempotency key.
	RequestID string
}

// RemoveAgentKey removes the key from the agent (RegistryService.RemoveAgentKey, agent.key_removed; a
// key the agent no longer has changes nothing).
func (a *Activities) RemoveAgentKey(ctx context.Context, in AgentKeyRemovalRequest) error {
	_, err := a.Registry.RemoveAgentKey(ctx, &registryv1.RemoveAgentKeyRequest{
		Name: in.Agent, Thumbprint: in.Thumbprint, Reason: truncate(in.Reason, 1024), RequestId: BoundedRequestID(in.RequestID),
	})
	return classify("registry.RemoveAgentKey", err)
}

// RevokeClientKeyTokens revokes every token the client obtained with the key (IssuerService.RevokeTokens
// by client_key: a CLIENT_KEY revocation matched on the tokens' ckt claim) and returns the
// revocation's resource name. Tokens of the client's other keys are not touched.
func (a *Activities) RevokeClientKeyTokens(ctx context.Context, in ClientKeyRequest) (string, error) {
	resp, err := a.Issuer.RevokeTokens(ctx, &issuerv1.RevokeTokensRequest{
		Parent: "tenants/" + in.Tenant,
		Target: &issuerv1.RevokeTokensRequest_ClientKey{ClientKey: &issuerv1.ClientKeyRef{
			Client: clientName(in.Tenant, in.ClientID), Thumbprint: in.Thumbprint,
		}},
		Reason: truncate(in.Reason, 512), RequestId: BoundedRequestID(in.RequestID),
	})
	if err != nil {
		return "", classify("issuer.RevokeTokens", err)
	}
	return resp.GetRevocation().GetName(), nil
}

// KeyRotatedRecord is the lifecycle.key_rotated event to record.
type KeyRotatedRecord struct {
	// Tenant, Agent (resource name) and AgentID name the agent.
	Tenant, Agent, AgentID string
	// WorkflowID is the run's id.
	WorkflowID string
	// NewKey is the new key's thumbprint; OldKeys those removed.
	NewKey  string
	OldKeys []string
	// Outcome is ResultRotated or ResultStopped; Detail says why it stopped.
	Outcome, Detail string
	// Revocations are the CLIENT_KEY revocations written.
	Revocations []string
	// OverlapEnd is when the overlap ended (zero if the run stopped before it).
	OverlapEnd time.Time
	// CausationID is the agent.key_added event id.
	CausationID string
	// IdempotencyKey is the key of the append.
	IdempotencyKey string
}

// RecordKeyRotated appends lifecycle.key_rotated.
func (a *Activities) RecordKeyRotated(ctx context.Context, in KeyRotatedRecord) error {
	ev := &lifecyclev1.KeyRotated{
		Agent: in.Agent, WorkflowId: in.WorkflowID, NewKeyThumbprint: in.NewKey,
		OldKeyThumbprint: strings.Join(in.OldKeys, ","), Outcome: in.Outcome, Detail: truncate(in.Detail, 1024),
		Revocation: strings.Join(in.Revocations, ","),
	}
	if !in.OverlapEnd.IsZero() {
		ev.OverlapEndTime = timestamppb.New(in.OverlapEnd)
	}
	return a.record(ctx, in.Tenant, in.AgentID, in.Agent, EventKeyRotated, in.IdempotencyKey, in.WorkflowID, in.CausationID, ev)
}
