package authn

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"encoding/json"
	"fmt"
	"strings"
	"unicode"

	"github.com/go-jose/go-jose/v4"
)

// Limits of a registered public JWK Set.
const (
	// MaxJWKSBytes bounds the JSON of a JWK Set.
	MaxJWKSBytes = 16 << 10
	// MaxKeyIDLength bounds a kid.
	MaxKeyIDLength = 128
)

// privateJWKParams are the JWK members that carry private or symmetric key material (RFC 7518 §6).
var privateJWKParams = []string{"d", "p", "q", "dp", "dq", "qi", "k", "oth", "priv"}

// ParsePublicJWKS parses the JWK Set an agent or service identity registers to authenticate with:
// 1 to maxKeys public signing keys, each EC P-256 (ES256) or Ed25519 (EdDSA), "use" sig when set, and
// a distinct printable kid. Private or symmetric key material is refused. The error reads as the
// continuation of a field name ("public_jwks must hold 1 to 5 keys").
func ParsePublicJWKS(raw string, maxKeys int) ([]jose.JSONWebKey, error) {
	if strings.TrimSpace(raw) == "" {
		return nil, fmt.Errorf("is required: a JWK Set of the public keys")
	}
	if len(raw) > MaxJWKSBytes {
		return nil, fmt.Errorf("must be at most %d bytes", MaxJWKSBytes)
	}
	var doc struct {
		Keys []map[string]json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal([]byte(raw), &doc); err != nil {
		return nil, fmt.Errorf("is not a JWK Set (JSON object with \"keys\")")
	}
	if len(doc.Keys) == 0 || len(doc.Keys) > maxKeys {
		return nil, fmt.Errorf("must hold 1 to %d keys", maxKeys)
	}
	keys := make([]jose.JSONWebKey, 0, len(doc.Keys))
	kids := make(map[string]bool, len(doc.Keys))
	for i, members := range doc.Keys {
		for _, p := range privateJWKParams {
			if _, ok := members[p]; ok {
				return nil, fmt.Errorf("key %d contains private key material (%q); register public keys only", i, p)
			}
		}
		b, err := json.Marshal(members)
		if err != nil {
			return nil, fmt.Errorf("key %d is not a JWK", i)
		}
		var k jose.JSONWebKey
		if err := k.UnmarshalJSON(b); err != nil {
			return nil, fmt.Errorf("key %d is not a supported JWK (EC P-256 or Ed25519 public key)", i)
		}
		if !k.Valid() || !k.IsPublic() {
			return nil, fmt.Errorf("key %d is not a valid public key", i)
		}
		switch pub := k.Key.(type) {
		case *ecdsa.PublicKey:
			if pub.Curve != elliptic.P256() {
				return nil, fmt.Errorf("key %d: only EC keys on P-256 are accepted", i)
			}
			if k.Algorithm != "" && k.Algorithm != string(jose.ES256) {
				return nil, fmt.Errorf("key %d: alg %q does not fit a P-256 key; use ES256", i, k.Algorithm)
			}
		case ed25519.PublicKey:
			if k.Algorithm != "" && k.Algorithm != string(jose.EdDSA) {
				return nil, fmt.Errorf("key %d: alg %q does not fit an Ed25519 key; use EdDSA", i, k.Algorithm)
			}
		default:
			return nil, fmt.Errorf("key %d: only EC P-256 (ES256) and Ed25519 (EdDSA) keys are accepted", i)
		}
		if k.Use != "" && k.Use != "sig" {
			return nil, fmt.Errorf("key %d: use must be \"sig\"", i)
		}
		if k.KeyID == "" {
			return nil, fmt.Errorf("key %d has no kid", i)
		}
		if len(k.KeyID) > MaxKeyIDLength || strings.IndexFunc(k.KeyID, unicode.IsControl) >= 0 {
			return nil, fmt.Errorf("key %d: kid must be at most %d printable characters", i, MaxKeyIDLength)
		}
		if kids[k.KeyID] {
			return nil, fmt.Errorf("key %d: kid %q is used twice", i, k.KeyID)
		}
		kids[k.KeyID] = true
		keys = append(keys, k)
	}
	return keys, nil
}
