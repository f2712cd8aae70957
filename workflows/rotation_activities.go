package workflows

import (
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/authn"
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
	st := RotationAgentState{
		State: strings.TrimPrefix(agent.GetState().String(), "AGENT_STATE_"), Owner: agent.GetOwner(),
		RiskTier: strings.TrimPrefix(agent.GetRiskTier().String(), "RISK_TIER_"),
	}
	newAt := -1
	for i, k := range agent.GetKeys() {
		st.Keys = append(st.Keys, k.GetThumbprint())
		if k.GetThumbprint() == in.NewKey {
			newAt = i
		}
	}
	if newAt >= 0 {
		added := agent.GetKeys()[newAt].GetAddTime().AsTime()
		for i, k := range agent.GetKeys() {
			at := k.GetAddTime().AsTime()
			if i != newAt && (at.Before(added) || (at.Equal(added) && i < newAt)) {
				st.Before = append(st.Before, k.GetThumbprint())
			}
		}
	}
	return st, nil
}

// ClientKeysState is an agent's client as a rotation sees it.
type ClientKeysState struct {
	// Exists is false when the client does not exist (the agent is still being provisioned).
	Exists bool
	// HasKey says whether the client holds the key asked about.
	HasKey bool
	// Before are the thumbprints of the client's keys that precede that key in the client's key
	// list (keys are appended as they are added: these were added before it).
	Before []string
}

// ClientKeys reads the keys of the agent's client from the issuer (not the registry) and returns those
// added before the key in.Thumbprint.
func (a *Activities) ClientKeys(ctx context.Context, in ClientKeyRequest) (ClientKeysState, error) {
	resp, err := a.Issuer.GetClient(ctx, &issuerv1.GetClientRequest{Name: clientName(in.Tenant, in.ClientID)})
	if err != nil && errs.FromStatus(err).Kind == errs.KindNotFound {
		return ClientKeysState{}, nil
	}
	if err != nil {
		return ClientKeysState{}, classify("issuer.GetClient", err)
	}
	keys, err := authn.ParsePublicJWKS(resp.GetClient().GetPublicJwks(), maxClientKeys)
	if err != nil {
		return ClientKeysState{}, temporal.NewNonRetryableApplicationError("the client's public_jwks "+err.Error(), "INVALID_CLIENT_KEYS", nil)
	}
	st := ClientKeysState{Exists: true}
	var before []string
	for _, k := range keys {
		tp, err := jwkThumbprint(k)
		if err != nil {
			return ClientKeysState{}, temporal.NewNonRetryableApplicationError(err.Error(), "INVALID_CLIENT_KEYS", nil)
		}
		if tp == in.Thumbprint {
			st.HasKey, st.Before = true, before
			break
		}
		before = append(before, tp)
	}
	return st, nil
}

// maxClientKeys bounds the keys read from a client (the issuer keeps at most 10).
const maxClientKeys = 10

// jwkThumbprint is k's RFC 7638 SHA-256 thumbprint, base64url without padding.
func jwkThumbprint(k jose.JSONWebKey) (string, error) {
	b, err := k.Thumbprint(crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("key %q has no RFC 7638 thumbprint: %w", k.KeyID, err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// registeredJWK returns the public key of agent with thumbprint as one JWK (JSON), read from the
// registry and its thumbprint recomputed; found is false when the agent does not hold it.
func (a *Activities) registeredJWK(ctx context.Context, agent, thumbprint string) (jwk string, found bool, err error) {
	resp, err := a.Registry.GetAgent(ctx, &registryv1.GetAgentRequest{Name: agent})
	if err != nil && errs.FromStatus(err).Kind == errs.KindNotFound {
		return "", false, nil
	}
	if err != nil {
		return "", false, classify("registry.GetAgent", err)
	}
	keys, err := authn.ParsePublicJWKS(resp.GetAgent().GetPublicJwks(), maxClientKeys)
	if err != nil {
		return "", false, temporal.NewNonRetryableApplicationError("the agent's public_jwks "+err.Error(), "INVALID_AGENT_KEYS", nil)
	}
	for _, k := range keys {
		tp, err := jwkThumbprint(k)
		if err != nil {
			return "", false, temporal.NewNonRetryableApplicationError(err.Error(), "INVALID_AGENT_KEYS", nil)
		}
		if tp != thumbprint {
			continue
		}
		b, err := json.Marshal(k)
		if err != nil {
			return "", false, temporal.NewNonRetryableApplicationError("encode key "+k.KeyID+": "+err.Error(), "INVALID_AGENT_KEYS", nil)
		}
		return string(b), true, nil
	}
	return "", false, nil
}

// ClientKeyRequest names a key of an agent's client and the change to make.
type ClientKeyRequest struct {
	// Tenant of the client.
	Tenant string
	// Agent is the agent's resource name (AddClientKey reads the key from it).
	Agent string
	// ClientID is the client id (the agent id).
	ClientID string
	// PublicJWK is not read: runs recorded before versionRotationKeySafety carried the key to add
	// here; the key is now always read from the registry by Thumbprint.
	PublicJWK string
	// Thumbprint is the key to add, to remove or whose tokens to revoke.
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

// AddClientKey adds the agent's key in.Thumbprint to its client (IssuerService.AddClientKey,
// idempotent: a key the client has changes nothing). The key is read from the registry by its
// thumbprint, which is recomputed, and the issuer checks the thumbprint again: a key in the run's
// input is never trusted. A key the agent no longer holds is not added (the run finds it gone and
// stops). A client that does not exist yet (the agent is still being provisioned) is no error:
// provisioning creates it from the registry's keys, the new one included.
func (a *Activities) AddClientKey(ctx context.Context, in ClientKeyRequest) error {
	if in.Agent == "" || in.Thumbprint == "" {
		return temporal.NewNonRetryableApplicationError("AddClientKey: the agent and the key's thumbprint are required", "INVALID_ARGUMENT", nil)
	}
	jwk, ok, err := a.registeredJWK(ctx, in.Agent, in.Thumbprint)
	if err != nil || !ok {
		return err
	}
	_, err = a.Issuer.AddClientKey(ctx, &issuerv1.AddClientKeyRequest{
		Name: clientName(in.Tenant, in.ClientID), PublicJwk: jwk, Thumbprint: in.Thumbprint, RequestId: BoundedRequestID(in.RequestID),
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
	// Decision is the decision on the new key of a high- or critical-tier agent (who, in which role,
	// approve or reject, when); nil when none was needed or taken.
	Decision *TakenDecision `json:",omitempty"`
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
	if d := in.Decision; d != nil {
		ev.DecidedBy, ev.DecidedRole, ev.Decision = d.Decider, d.Role, d.Decision
		if !d.Time.IsZero() {
			ev.DecisionTime = timestamppb.New(d.Time)
		}
	}
	return a.record(ctx, in.Tenant, in.AgentID, in.Agent, EventKeyRotated, in.IdempotencyKey, in.WorkflowID, in.CausationID, ev)
}

// NotificationKeyAdded is the kind of the owner's notice of a key added to an agent.
const NotificationKeyAdded = "rotation.key_added"

// KeyAddedNotice tells the owner that a key was added to its agent.
type KeyAddedNotice struct {
	// Tenant, Agent (resource name) and AgentID name the agent.
	Tenant, Agent, AgentID string
	// Owner is the agent's owner; RiskTier its risk tier.
	Owner, RiskTier string
	// Thumbprint names the added key.
	Thumbprint string
	// WorkflowID is the rotation's id; NotificationID the notice's (a retried delivery repeats it).
	WorkflowID, NotificationID string
	// Overlap is how long both keys will work before the older ones are removed.
	Overlap time.Duration
	// AwaitsApproval: the key is added to the client only once the owner approved it (high- and
	// critical-tier agents).
	AwaitsApproval bool `json:",omitempty"`
}

// NotifyKeyAdded tells the agent's owner through Activities.Notifier that a key was added and when
// the older keys will be removed, so that a key the owner does not know of is caught in the overlap
// (removed with `agentctl agents keys remove`). Without a notifier nothing is sent and a warning is
// logged; a delivery that fails is retried.
func (a *Activities) NotifyKeyAdded(ctx context.Context, n KeyAddedNotice) error {
	if a.Notifier == nil {
		if activity.IsActivity(ctx) {
			activity.GetLogger(ctx).Warn("no notifier configured; key addition notice logged only", "agent", n.Agent, "key", n.Thumbprint, "owner", n.Owner)
		}
		return nil
	}
	var run string
	if activity.IsActivity(ctx) {
		run = activity.GetInfo(ctx).WorkflowExecution.RunID
	}
	summary := fmt.Sprintf("A new key %s was added to agent %s; after %s the keys added before it are removed. If you did not expect it, remove it now with `agentctl agents keys remove %s %s --reason unexpected`.",
		n.Thumbprint, n.Agent, n.Overlap, n.Agent, n.Thumbprint)
	if n.AwaitsApproval {
		summary = fmt.Sprintf("A new key %s was added to agent %s (risk tier %s) and waits for your approval before it can authenticate: `agentctl rotations decide %s %s approve` (or `reject`). Without a decision it is rejected.",
			n.Thumbprint, n.Agent, n.RiskTier, n.Agent, n.Thumbprint)
	}
	err := a.Notifier.Notify(ctx, Notification{
		ID: n.NotificationID, Kind: NotificationKeyAdded, Tenant: n.Tenant, Agent: n.Agent, Severity: n.RiskTier,
		Summary:       summary,
		RecipientRole: HolderOwner, Recipient: n.Owner, WorkflowID: n.WorkflowID, RunID: run, Time: time.Now().UTC(),
	})
	if err != nil {
		return fmt.Errorf("notify the owner of %s of key %s: %w", n.Agent, n.Thumbprint, err)
	}
	return nil
}
