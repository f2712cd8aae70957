// Package keys holds the issuer's token signing keys: generation, RFC 7638 key ids, signing of access
// tokens, and sealing of private keys with the key-encryption key.
package keys

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/agentid/agentid/pkg/authn"
)

// AccessTokenType is the JWT "typ" header of access tokens (RFC 9068).
const AccessTokenType = "at+jwt"

// KEKSize is the size in bytes of a key-encryption key (AES-256).
const KEKSize = 32

// SigningKey is one tenant's token signing key with its private half. It is safe for concurrent use.
type SigningKey struct {
	// KeyID is the key's kid, its RFC 7638 thumbprint (SHA-256, base64url).
	KeyID string
	// Algorithm is the JOSE signature algorithm (ES256).
	Algorithm jose.SignatureAlgorithm
	// CreateTime is when the key was created.
	CreateTime time.Time

	public jose.JSONWebKey
	priv   *ecdsa.PrivateKey
	header string // base64url of the protected header and the dot: the constant prefix of every token
}

// Generate creates a new ES256 signing key and returns it with its private JWK (JSON), which the
// caller seals before storing it.
func Generate(createTime time.Time) (*SigningKey, []byte, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("keys: generate: %w", err)
	}
	jwk := jose.JSONWebKey{Key: priv, Algorithm: string(jose.ES256), Use: "sig"}
	if jwk.KeyID, err = authn.Thumbprint(jwk); err != nil {
		return nil, nil, err
	}
	privJSON, err := jwk.MarshalJSON()
	if err != nil {
		return nil, nil, fmt.Errorf("keys: marshal private key: %w", err)
	}
	k, err := fromJWK(jwk, createTime)
	if err != nil {
		return nil, nil, err
	}
	return k, privJSON, nil
}

// FromPrivateJWK rebuilds a signing key from its private JWK (JSON). The key must be an ES256 (P-256)
// private key whose kid is its thumbprint.
func FromPrivateJWK(privJSON []byte, createTime time.Time) (*SigningKey, error) {
	var jwk jose.JSONWebKey
	if err := jwk.UnmarshalJSON(privJSON); err != nil {
		return nil, fmt.Errorf("keys: parse private key: %w", err)
	}
	priv, ok := jwk.Key.(*ecdsa.PrivateKey)
	if !ok || priv.Curve != elliptic.P256() {
		return nil, fmt.Errorf("keys: private key is %T, want an ES256 (P-256) key", jwk.Key)
	}
	tp, err := authn.Thumbprint(jwk)
	if err != nil {
		return nil, err
	}
	if jwk.KeyID != tp {
		return nil, fmt.Errorf("keys: kid %q is not the key's thumbprint %q", jwk.KeyID, tp)
	}
	jwk.Algorithm, jwk.Use = string(jose.ES256), "sig"
	return fromJWK(jwk, createTime)
}

func fromJWK(jwk jose.JSONWebKey, createTime time.Time) (*SigningKey, error) {
	priv, ok := jwk.Key.(*ecdsa.PrivateKey)
	if !ok || priv.Curve != elliptic.P256() {
		return nil, fmt.Errorf("keys: signer: %T is not an ES256 (P-256) private key", jwk.Key)
	}
	header, err := json.Marshal(struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
		Typ string `json:"typ"`
	}{string(jose.ES256), jwk.KeyID, AccessTokenType})
	if err != nil {
		return nil, fmt.Errorf("keys: signer: %w", err)
	}
	return &SigningKey{
		KeyID:      jwk.KeyID,
		Algorithm:  jose.ES256,
		CreateTime: createTime.UTC(),
		public:     jwk.Public(),
		priv:       priv,
		header:     base64.RawURLEncoding.EncodeToString(header) + ".",
	}, nil
}

// Public returns the public half as a JWK (kid, alg, use set).
func (k *SigningKey) Public() jose.JSONWebKey { return k.public }

// PublicJSON returns the public JWK as JSON.
func (k *SigningKey) PublicJSON() (string, error) {
	b, err := json.Marshal(k.public)
	if err != nil {
		return "", fmt.Errorf("keys: marshal public key: %w", err)
	}
	return string(b), nil
}

// Sign returns the compact JWS (RFC 7515 §7.1) of payload with the protected header alg ES256,
// kid and typ at+jwt, and the signature as R || S, 32 bytes each (RFC 7518 §3.4).
func (k *SigningKey) Sign(payload []byte) (string, error) { return k.sign(k.header, payload) }

// SignTyped returns the compact JWS of payload like Sign, with typ as the "typ" header (for tokens
// that are not access tokens, e.g. authn.ApprovalTokenType).
func (k *SigningKey) SignTyped(typ string, payload []byte) (string, error) {
	if typ == "" {
		return "", errors.New("keys: sign: typ is required")
	}
	header, err := json.Marshal(struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
		Typ string `json:"typ"`
	}{string(k.Algorithm), k.KeyID, typ})
	if err != nil {
		return "", fmt.Errorf("keys: sign: %w", err)
	}
	return k.sign(base64.RawURLEncoding.EncodeToString(header)+".", payload)
}

// sign signs header (base64url of the protected header and the dot) and payload.
func (k *SigningKey) sign(header string, payload []byte) (string, error) {
	b64 := base64.RawURLEncoding
	const sigLen = 64
	out := make([]byte, 0, len(header)+b64.EncodedLen(len(payload))+1+b64.EncodedLen(sigLen))
	out = append(out, header...)
	out = b64.AppendEncode(out, payload)
	digest := sha256.Sum256(out)
	r, s, err := ecdsa.Sign(rand.Reader, k.priv, digest[:])
	if err != nil {
		return "", fmt.Errorf("keys: sign: %w", err)
	}
	var sig [sigLen]byte
	r.FillBytes(sig[:sigLen/2]) // r and s are below the P-256 order: 32 bytes each
	s.FillBytes(sig[sigLen/2:])
	out = append(out, '.')
	out = b64.AppendEncode(out, sig[:])
	return string(out), nil
}

// Sealer encrypts private keys at rest with AES-256-GCM under a key-encryption key. The sealed form
// is nonce || ciphertext; associated data binds it to where it belongs.
type Sealer struct {
	id   string
	aead cipher.AEAD
}

// NewSealer returns a sealer for the 32-byte key-encryption key kek, known by id.
func NewSealer(id string, kek []byte) (*Sealer, error) {
	if len(kek) != KEKSize {
		return nil, fmt.Errorf("keys: key-encryption key must be %d bytes, got %d", KEKSize, len(kek))
	}
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, fmt.Errorf("keys: key-encryption key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("keys: key-encryption key: %w", err)
	}
	return &Sealer{id: id, aead: aead}, nil
}

// ID is the id of the key-encryption key.
func (s *Sealer) ID() string { return s.id }

// Seal encrypts plaintext bound to aad.
func (s *Sealer) Seal(plaintext, aad []byte) ([]byte, error) {
	nonce := make([]byte, s.aead.NonceSize(), s.aead.NonceSize()+len(plaintext)+s.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("keys: nonce: %w", err)
	}
	return s.aead.Seal(nonce, nonce, plaintext, aad), nil
}

// ErrUnseal means a sealed key could not be decrypted: wrong key-encryption key, wrong associated
// data, or tampering.
var ErrUnseal = errors.New("keys: cannot unseal private key")

// Open decrypts what Seal produced with the same aad.
func (s *Sealer) Open(sealed, aad []byte) ([]byte, error) {
	n := s.aead.NonceSize()
	if len(sealed) < n+s.aead.Overhead() {
		return nil, ErrUnseal
	}
	out, err := s.aead.Open(nil, sealed[:n], sealed[n:], aad)
	if err != nil {
		return nil, ErrUnseal
	}
	return out, nil
}

// SealAAD is the associated data a tenant's signing key is sealed with.
func SealAAD(tenant, kid string) []byte {
	return []byte("agentid/issuer/signingkey/" + tenant + "/" + kid)
}
