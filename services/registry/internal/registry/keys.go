package registry

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/eventstore"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// Event types of agent key rotation.
const (
	// EventAgentKeyAdded records the agent's next public key (registryv1.AgentKeyAdded).
	EventAgentKeyAdded = "agent.key_added"
	// EventAgentKeyRemoved records the removal of one of the agent's keys (registryv1.AgentKeyRemoved).
	EventAgentKeyRemoved = "agent.key_removed"
)

const (
	// MaxKeysForAdd is how many keys an agent may hold when it adds one: a rotation holds the current
	// key and the next one, never more.
	MaxKeysForAdd = 2
	// ReasonKeyInUse is the AlreadyExists reason of a key this agent or another agent of the tenant
	// holds or held.
	ReasonKeyInUse = "KEY_IN_USE"

	cmdAddAgentKey    = "AddAgentKey"
	cmdRemoveAgentKey = "RemoveAgentKey"
	maxKeyReason      = 1024
)

// AgentKeyAdded is the change that adds the public key jwk (kid, thumbprint) to the agent named name.
func AgentKeyAdded(name, jwk, kid, thumbprint string) Change {
	return Change{Type: EventAgentKeyAdded, Data: &registryv1.AgentKeyAdded{Name: name, PublicJwk: jwk, Kid: kid, Thumbprint: thumbprint}}
}

// AgentKeyRemoved is the change that removes the key kid (thumbprint) from the agent named name.
func AgentKeyRemoved(name, kid, thumbprint, reason string) Change {
	return Change{Type: EventAgentKeyRemoved, Data: &registryv1.AgentKeyRemoved{Name: name, Kid: kid, Thumbprint: thumbprint, Reason: reason}}
}

// KeyThumbprint is the RFC 7638 SHA-256 thumbprint of k, base64url without padding.
func KeyThumbprint(k jose.JSONWebKey) (string, error) {
	t, err := k.Thumbprint(crypto.SHA256)
	if err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(t), nil
}

// ParsePublicJWK parses one public JWK as registration accepts keys (EC P-256/ES256 or
// Ed25519/EdDSA, a kid, no private members) and returns it with its canonical JSON and thumbprint.
// Errors are InvalidArgument on field, their message starting with the field and the rule.
func ParsePublicJWK(field, raw string) (jose.JSONWebKey, string, string, error) {
	var members map[string]json.RawMessage
	if err := json.Unmarshal([]byte(raw), &members); err != nil {
		return jose.JSONWebKey{}, "", "", invalid(field, "is not a JWK (a JSON object)")
	}
	if _, ok := members["keys"]; ok {
		return jose.JSONWebKey{}, "", "", invalid(field, "must be one JWK, not a JWK Set")
	}
	set, err := json.Marshal(map[string]any{"keys": []json.RawMessage{json.RawMessage(raw)}})
	if err != nil {
		return jose.JSONWebKey{}, "", "", invalid(field, "is not a JWK")
	}
	keys, err := authn.ParsePublicJWKS(string(set), 1)
	if err != nil {
		// The set holds this one key: its rule reads without the set's "key 0".
		rule := strings.TrimPrefix(strings.TrimPrefix(err.Error(), "key 0: "), "key 0 ")
		return jose.JSONWebKey{}, "", "", invalid(field, rule)
	}
	k := keys[0]
	canon, err := k.MarshalJSON()
	if err != nil {
		return jose.JSONWebKey{}, "", "", invalid(field, "is not a JWK")
	}
	tp, err := KeyThumbprint(k)
	if err != nil {
		return jose.JSONWebKey{}, "", "", invalid(field, "has no thumbprint: "+err.Error())
	}
	return k, string(canon), tp, nil
}

// agentKeysOf lists the keys of a public JWK Set, all added at t; keys it cannot read are skipped
// (registration validated them).
func agentKeysOf(jwks string, t time.Time) []*registryv1.AgentKey {
	keys, err := authn.ParsePublicJWKS(jwks, maxJWKSKeys)
	if err != nil {
		return nil
	}
	out := make([]*registryv1.AgentKey, 0, len(keys))
	for _, k := range keys {
		tp, err := KeyThumbprint(k)
		if err != nil {
			continue
		}
		out = append(out, &registryv1.AgentKey{Kid: k.KeyID, Thumbprint: tp, Algorithm: keyAlgorithm(k), AddTime: timestamppb.New(t)})
	}
	return out
}

// keyAlgorithm is the JOSE algorithm a key signs with.
func keyAlgorithm(k jose.JSONWebKey) string {
	if k.Algorithm != "" {
		return k.Algorithm
	}
	switch k.Key.(type) {
	case ed25519.PublicKey:
		return string(jose.EdDSA)
	case *ecdsa.PublicKey:
		return string(jose.ES256)
	}
	return ""
}

// editJWKS returns the JWK Set raw with the key jwk appended (add) or the key of thumbprint removed.
func editJWKS(raw, addJWK, removeThumbprint string) (string, error) {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal([]byte(raw), &doc); err != nil {
		return "", fmt.Errorf("public_jwks is not a JWK Set: %w", err)
	}
	out := doc.Keys[:0:0]
	for _, m := range doc.Keys {
		if removeThumbprint != "" {
			var k jose.JSONWebKey
			if err := k.UnmarshalJSON(m); err == nil {
				if tp, err := KeyThumbprint(k); err == nil && tp == removeThumbprint {
					continue
				}
			}
		}
		out = append(out, m)
	}
	if addJWK != "" {
		out = append(out, json.RawMessage(addJWK))
	}
	b, err := json.Marshal(map[string]any{"keys": out})
	if err != nil {
		return "", err
	}
	return string(b), nil
}

// foldAgentKey applies agent.key_added or agent.key_removed to next (a copy the caller owns).
func foldAgentKey(next *registryv1.Agent, e eventstore.Event) error {
	switch e.Type {
	case EventAgentKeyAdded:
		d, err := eventstore.DecodeAs[*registryv1.AgentKeyAdded](e)
		if err != nil {
			return err
		}
		for _, k := range next.GetKeys() {
			if k.GetThumbprint() == d.GetThumbprint() {
				return nil
			}
		}
		jwks, err := editJWKS(next.GetPublicJwks(), d.GetPublicJwk(), "")
		if err != nil {
			return fmt.Errorf("registry: %s event %s: %w", e.Type, e.ID, err)
		}
		alg := ""
		var k jose.JSONWebKey
		if err := k.UnmarshalJSON([]byte(d.GetPublicJwk())); err == nil {
			alg = keyAlgorithm(k)
		}
		next.PublicJwks = jwks
		next.Keys = append(next.Keys, &registryv1.AgentKey{Kid: d.GetKid(), Thumbprint: d.GetThumbprint(), Algorithm: alg, AddTime: timestamppb.New(e.Time)})
	case EventAgentKeyRemoved:
		d, err := eventstore.DecodeAs[*registryv1.AgentKeyRemoved](e)
		if err != nil {
			return err
		}
		jwks, err := editJWKS(next.GetPublicJwks(), "", d.GetThumbprint())
		if err != nil {
			return fmt.Errorf("registry: %s event %s: %w", e.Type, e.ID, err)
		}
		next.PublicJwks = jwks
		kept := next.Keys[:0:0]
		for _, k := range next.GetKeys() {
			if k.GetThumbprint() != d.GetThumbprint() {
				kept = append(kept, k)
			}
		}
		next.Keys = kept
	}
	return nil
}

// AddAgentKey registers an agent's next public key.
type AddAgentKey struct {
	// Tenant and AgentID name the agent.
	Tenant, AgentID string
	// PublicJWK is the key as one JWK (JSON).
	PublicJWK string
	// RequestID is the idempotency key.
	RequestID string
	// RequireOwner, when set, is the owner the agent must have for the caller to add a key.
	RequireOwner string
}

// RemoveAgentKey removes one of an agent's keys.
type RemoveAgentKey struct {
	// Tenant and AgentID name the agent.
	Tenant, AgentID string
	// Thumbprint names the key (RFC 7638 SHA-256, base64url).
	Thumbprint string
	// Reason says why (required).
	Reason string
	// RequestID is the idempotency key.
	RequestID string
	// RequireOwner, when set, is the owner the agent must have for the caller to remove a key.
	RequireOwner string
}

func (c RemoveAgentKey) validate() error {
	if err := checkText("thumbprint", c.Thumbprint, true, 64); err != nil {
		return err
	}
	if err := checkText("reason", c.Reason, true, maxKeyReason); err != nil {
		return err
	}
	return checkRequestID(c.RequestID)
}

// AddKey decides the addition of a parsed key (canonical JSON jwk, kid, thumbprint): only an ACTIVE
// agent holding fewer than MaxKeysForAdd keys, and not a key it holds or held (held lists thumbprints
// of other agents of the tenant, and this agent's removed keys, that count as used). A PENDING agent
// is refused: provisioning creates its client from the keys it holds, which would let a key added
// while it waits skip the rotation's checks (the owner's approval for high-risk agents); it is
// registered with the key it will use and rotates once ACTIVE.
func (a *Agent) AddKey(c AddAgentKey, jwk, kid, thumbprint string, used func(thumbprint string) (agent string, ok bool)) (*Change, error) {
	if !a.Exists() {
		return nil, a.notFound()
	}
	if c.RequireOwner != "" && a.view.GetOwner() != c.RequireOwner {
		return nil, errs.PermissionDenied("NOT_OWNER", "only the agent itself, its owner, a tenant-admin or a platform-admin may add its keys")
	}
	if err := a.allow(CmdAddKey); err != nil {
		return nil, err
	}
	for _, k := range a.view.GetKeys() {
		if k.GetThumbprint() == thumbprint {
			return nil, errs.AlreadyExists(ReasonKeyInUse, "the agent already has this key").WithMetadata("thumbprint", thumbprint)
		}
		if k.GetKid() == kid {
			return nil, invalid("public_jwk", fmt.Sprintf("kid %q is already used by another key of the agent; choose a new kid", kid))
		}
	}
	if a.removedKeys[thumbprint] {
		return nil, errs.AlreadyExists(ReasonKeyInUse, "the agent used this key before; register a new key").WithMetadata("thumbprint", thumbprint)
	}
	if owner, ok := used(thumbprint); ok && owner != a.ID {
		return nil, errs.AlreadyExists(ReasonKeyInUse, "another agent of the tenant holds or held this key").WithMetadata("thumbprint", thumbprint)
	}
	if n := len(a.view.GetKeys()); n >= MaxKeysForAdd {
		return nil, invalid("public_jwk",
			fmt.Sprintf("the agent already has %d keys: finish the rotation in progress (remove the old key) before adding another", n))
	}
	ch := AgentKeyAdded(a.Name(), jwk, kid, thumbprint)
	return &ch, nil
}

// RemoveKey decides the removal of a key. A key the agent does not hold changes nothing; the last
// key cannot be removed.
func (a *Agent) RemoveKey(c RemoveAgentKey) (*Change, error) {
	if !a.Exists() {
		return nil, a.notFound()
	}
	if c.RequireOwner != "" && a.view.GetOwner() != c.RequireOwner {
		return nil, errs.PermissionDenied("NOT_OWNER", "only the agent's owner, a tenant-admin or a platform-admin may remove its keys")
	}
	if err := a.allow(CmdRemoveKey); err != nil {
		return nil, err
	}
	var found *registryv1.AgentKey
	for _, k := range a.view.GetKeys() {
		if k.GetThumbprint() == c.Thumbprint {
			found = k
		}
	}
	if found == nil {
		return nil, nil
	}
	if len(a.view.GetKeys()) <= 1 {
		return nil, errs.FailedPrecondition("LAST_KEY", "the agent's only key cannot be removed; add its next key first").
			WithMetadata("thumbprint", c.Thumbprint)
	}
	ch := AgentKeyRemoved(a.Name(), found.GetKid(), found.GetThumbprint(), c.Reason)
	return &ch, nil
}

// AddAgentKey validates and records an agent's next public key (agent.key_added). Nothing is written
// when the key is refused: not one public JWK of an accepted algorithm, a key this agent or another
// agent of the tenant holds or held, or an agent that already holds MaxKeysForAdd keys. Keys of other
// agents are checked against the read model, so two agents adding the same new key within its lag can
// both succeed; the issuer still keeps each client's keys apart.
func (s *Service) AddAgentKey(ctx context.Context, c AddAgentKey, md eventstore.Metadata) (*registryv1.Agent, *registryv1.AgentKey, error) {
	k, jwk, tp, err := ParsePublicJWK("public_jwk", c.PublicJWK)
	if err != nil {
		return nil, nil, err
	}
	if err := checkRequestID(c.RequestID); err != nil {
		return nil, nil, err
	}
	if err := s.checkCaller(c.Tenant, c.RequireOwner); err != nil {
		return nil, nil, err
	}
	key := commandKey(cmdAddAgentKey, c.Tenant, c.AgentID, c.RequestID)
	agent, err := s.runAgent(ctx, c.Tenant, c.AgentID, key, md, func(a *Agent) (*Change, error) {
		return a.AddKey(c, jwk, k.KeyID, tp, func(t string) (string, bool) { return s.agents.KeyHolder(c.Tenant, t) })
	})
	if err != nil {
		return nil, nil, err
	}
	for _, ak := range agent.GetKeys() {
		if ak.GetThumbprint() == tp {
			return agent, ak, nil
		}
	}
	return agent, nil, nil
}

// RemoveAgentKey records the removal of one of an agent's keys (agent.key_removed); a key the agent
// does not hold changes nothing.
func (s *Service) RemoveAgentKey(ctx context.Context, c RemoveAgentKey, md eventstore.Metadata) (*registryv1.Agent, error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	if err := s.checkCaller(c.Tenant, c.RequireOwner); err != nil {
		return nil, err
	}
	key := commandKey(cmdRemoveAgentKey, c.Tenant, c.AgentID, c.RequestID)
	return s.runAgent(ctx, c.Tenant, c.AgentID, key, md, func(a *Agent) (*Change, error) { return a.RemoveKey(c) })
}
