package workflowstest

import (
	"context"
	"crypto"
	"encoding/base64"
	"encoding/json"

	jose "github.com/go-jose/go-jose/v4"
	"google.golang.org/protobuf/proto"

	"github.com/agentid/agentid/pkg/errs"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// Thumbprint is the RFC 7638 SHA-256 thumbprint (base64url) of a public JWK (JSON); "" when it is not
// one.
func Thumbprint(jwk string) string {
	var k jose.JSONWebKey
	if err := k.UnmarshalJSON([]byte(jwk)); err != nil {
		return ""
	}
	t, err := k.Thumbprint(crypto.SHA256)
	if err != nil {
		return ""
	}
	return base64.RawURLEncoding.EncodeToString(t)
}

// editKeys returns a JWK Set with add appended and the key of remove left out.
func editKeys(jwks, add, remove string) (string, bool) {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	_ = json.Unmarshal([]byte(jwks), &doc)
	out := []json.RawMessage{}
	changed := false
	for _, k := range doc.Keys {
		tp := Thumbprint(string(k))
		switch {
		case remove != "" && tp == remove:
			changed = true
			continue
		case add != "" && tp == Thumbprint(add):
			add = ""
		}
		out = append(out, k)
	}
	if add != "" {
		out, changed = append(out, json.RawMessage(add)), true
	}
	b, _ := json.Marshal(map[string]any{"keys": out})
	return string(b), changed
}

// RemoveAgentKey removes a key from an agent's keys and public_jwks; a key it does not hold changes
// nothing, its last key is FailedPrecondition.
func (r *Registry) RemoveAgentKey(_ context.Context, req *registryv1.RemoveAgentKeyRequest) (*registryv1.RemoveAgentKeyResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	a, ok := r.agents[req.GetName()]
	if !ok {
		return nil, errs.NotFound("AGENT_NOT_FOUND", "agent not found")
	}
	var kept []*registryv1.AgentKey
	for _, k := range a.GetKeys() {
		if k.GetThumbprint() != req.GetThumbprint() {
			kept = append(kept, k)
		}
	}
	if len(kept) < len(a.GetKeys()) {
		if len(kept) == 0 {
			return nil, errs.FailedPrecondition("LAST_KEY", "the agent's only key cannot be removed")
		}
		a.Keys = kept
		a.PublicJwks, _ = editKeys(a.GetPublicJwks(), "", req.GetThumbprint())
	}
	return &registryv1.RemoveAgentKeyResponse{Agent: proto.Clone(a).(*registryv1.Agent)}, nil
}

// AddClientKey adds a key to a client's public_jwks (a key it has changes nothing).
func (i *Issuer) AddClientKey(_ context.Context, req *issuerv1.AddClientKeyRequest) (*issuerv1.AddClientKeyResponse, error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	c, ok := i.clients[req.GetName()]
	if !ok {
		return nil, errs.NotFound("CLIENT_NOT_FOUND", "client not found")
	}
	if Thumbprint(req.GetPublicJwk()) == "" {
		return nil, errs.InvalidArgument("public_jwk", "is not a JWK")
	}
	if req.GetThumbprint() != Thumbprint(req.GetPublicJwk()) {
		return nil, errs.InvalidArgument("thumbprint", "is not public_jwk's thumbprint")
	}
	c.PublicJwks, _ = editKeys(c.GetPublicJwks(), req.GetPublicJwk(), "")
	return &issuerv1.AddClientKeyResponse{Client: proto.Clone(c).(*issuerv1.Client)}, nil
}

// RemoveClientKey removes a key from a client's public_jwks (a key it has not changes nothing).
func (i *Issuer) RemoveClientKey(_ context.Context, req *issuerv1.RemoveClientKeyRequest) (*issuerv1.RemoveClientKeyResponse, error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	c, ok := i.clients[req.GetName()]
	if !ok {
		return nil, errs.NotFound("CLIENT_NOT_FOUND", "client not found")
	}
	c.PublicJwks, _ = editKeys(c.GetPublicJwks(), "", req.GetThumbprint())
	return &issuerv1.RemoveClientKeyResponse{Client: proto.Clone(c).(*issuerv1.Client)}, nil
}
