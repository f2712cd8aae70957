package authn

import (
	"errors"
	"fmt"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Proof of possession of a current key, required when an agent adds a key to itself with its own
// token (RegistryService.AddAgentKey): a stolen access token alone cannot plant a key.
const (
	// KeyProofMetadata is the gRPC metadata key that carries the proof (a compact JWS).
	KeyProofMetadata = "agentid-key-proof"
	// KeyProofJWTType is the proof's typ header.
	KeyProofJWTType = "agentid-key-proof+jwt"
	// KeyProofLifetime is how long after its iat a proof is accepted.
	KeyProofLifetime = 2 * time.Minute
	// keyProofSkew is how far in the future an iat may lie (clock skew).
	keyProofSkew = 30 * time.Second
)

// KeyProofClaims are what a key proof binds: the agent (resource name), the RFC 7638 thumbprint of
// the key being added (jkt), the request id of the AddAgentKey call (rid) and when it was made.
type KeyProofClaims struct {
	// Agent is the agent's resource name (tenants/{tenant}/agents/{agent}).
	Agent string `json:"agent"`
	// NewKeyThumbprint is the thumbprint of the key being added.
	NewKeyThumbprint string `json:"jkt"`
	// RequestID is the AddAgentKey request id.
	RequestID string `json:"rid"`
	// IssuedAt is when the proof was made (seconds since the epoch).
	IssuedAt int64 `json:"iat"`
}

// KeyProof signs a proof with the credential's key (header kid) that the holder of this current key
// asks to add the key newThumbprint to agent in the request requestID.
func (c *Credential) KeyProof(agent, newThumbprint, requestID string, now time.Time) (string, error) {
	return SignKeyProof(c.key, KeyProofClaims{Agent: agent, NewKeyThumbprint: newThumbprint, RequestID: requestID, IssuedAt: now.Unix()})
}

// SignKeyProof signs claims with key (a private ES256 or EdDSA JWK) as a compact JWS of type
// KeyProofJWTType with the key's kid.
func SignKeyProof(key jose.JSONWebKey, claims KeyProofClaims) (string, error) {
	if claims.Agent == "" || claims.NewKeyThumbprint == "" || claims.RequestID == "" || claims.IssuedAt == 0 {
		return "", errors.New("authn: a key proof needs the agent, the new key's thumbprint, the request id and iat")
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.SignatureAlgorithm(key.Algorithm), Key: key},
		(&jose.SignerOptions{}).WithType(KeyProofJWTType))
	if err != nil {
		return "", fmt.Errorf("authn: key proof signer: %w", err)
	}
	s, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		return "", fmt.Errorf("authn: sign key proof: %w", err)
	}
	return s, nil
}

// VerifyKeyProof checks proof against the agent's current public keys: signed (ES256 or EdDSA, typ
// KeyProofJWTType) by one of them, naming want's agent, new key thumbprint and request id, made at
// most KeyProofLifetime before now and not more than 30 s after it. It returns the thumbprint of the
// key that signed. A replayed proof can only repeat the same request (same agent, key and request
// id), which the registry answers idempotently without writing again.
func VerifyKeyProof(proof string, current []jose.JSONWebKey, want KeyProofClaims, now time.Time) (string, error) {
	if proof == "" {
		return "", errors.New("no proof of possession of a current key")
	}
	tok, err := jwt.ParseSigned(proof, []jose.SignatureAlgorithm{jose.ES256, jose.EdDSA})
	if err != nil {
		return "", fmt.Errorf("the proof is not a compact JWS signed with ES256 or EdDSA: %w", err)
	}
	if len(tok.Headers) != 1 {
		return "", errors.New("the proof must carry one signature")
	}
	h := tok.Headers[0]
	if typ, _ := h.ExtraHeaders[jose.HeaderType].(string); typ != KeyProofJWTType {
		return "", fmt.Errorf("the proof's typ is %q, not %q", typ, KeyProofJWTType)
	}
	for _, k := range current {
		if h.KeyID != "" && k.KeyID != h.KeyID {
			continue
		}
		if k.Algorithm != "" && k.Algorithm != h.Algorithm {
			continue
		}
		var got KeyProofClaims
		if err := tok.Claims(k.Key, &got); err != nil {
			continue
		}
		switch {
		case got.Agent != want.Agent:
			return "", fmt.Errorf("the proof names agent %q, not %q", got.Agent, want.Agent)
		case got.NewKeyThumbprint != want.NewKeyThumbprint:
			return "", errors.New("the proof names another key than the one being added")
		case got.RequestID == "" || got.RequestID != want.RequestID:
			return "", errors.New("the proof names another request id than this request's")
		case got.IssuedAt == 0:
			return "", errors.New("the proof has no iat")
		}
		iat := time.Unix(got.IssuedAt, 0)
		if now.Sub(iat) > KeyProofLifetime || iat.Sub(now) > keyProofSkew {
			return "", fmt.Errorf("the proof was made at %s: it is accepted for %s", iat.UTC().Format(time.RFC3339), KeyProofLifetime)
		}
		return Thumbprint(k)
	}
	return "", errors.New("the proof is not signed by a key the agent currently holds")
}
