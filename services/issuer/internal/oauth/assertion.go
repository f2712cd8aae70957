package oauth

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	josejson "github.com/go-jose/go-jose/v4/json"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Limits of client assertions.
const (
	// MaxAssertionLifetime is how far in the future an assertion's exp may lie.
	MaxAssertionLifetime = 5 * time.Minute
	// MaxAssertionBytes bounds the size of a client assertion.
	MaxAssertionBytes = 8 << 10
	maxJTILen         = 256
)

// ClientAuthenticationType is the explicit type of a client assertion (draft-ietf-oauth-rfc7523bis,
// the media type application/client-authentication+jwt).
const ClientAuthenticationType = "client-authentication+jwt"

// ErrAssertionType is a client assertion whose typ header names another kind of JWT.
var ErrAssertionType = errors.New("assertion typ is not JWT or " + ClientAuthenticationType)

// assertionAlgs are the only signature algorithms accepted for client assertions; none, HS* and RSA
// fail at parse time.
var assertionAlgs = []jose.SignatureAlgorithm{jose.ES256, jose.EdDSA}

// Assertion is a parsed, not yet verified, RFC 7523 client assertion.
type Assertion struct {
	// KeyID is the kid header.
	KeyID string
	// Algorithm is the alg header.
	Algorithm jose.SignatureAlgorithm
	// Issuer is the unverified iss claim, used only to find the client.
	Issuer string
	// Subject is the unverified sub claim.
	Subject string

	jws   *jose.JSONWebSignature
	wire  assertionWire // claims decoded once, trusted only after Verify
	bytes []byte        // the signed payload the claims were decoded from
}

// AssertionClaims are the verified claims of a client assertion.
type AssertionClaims struct {
	Issuer    string
	Subject   string
	Audience  []string
	Expiry    time.Time
	NotBefore time.Time
	IssuedAt  time.Time
	ID        string
}

type assertionWire struct {
	Issuer    string           `json:"iss"`
	Subject   string           `json:"sub"`
	Audience  json.RawMessage  `json:"aud"`
	Expiry    *jwt.NumericDate `json:"exp"`
	NotBefore *jwt.NumericDate `json:"nbf"`
	IssuedAt  *jwt.NumericDate `json:"iat"`
	ID        string           `json:"jti"`
}

// ParseAssertion parses a compact JWS client assertion: ES256 or EdDSA only, exactly one signature,
// a kid header, and claims that decode. It does not verify anything.
func ParseAssertion(raw string) (*Assertion, error) {
	if raw == "" {
		return nil, errors.New("empty assertion")
	}
	if len(raw) > MaxAssertionBytes {
		return nil, fmt.Errorf("assertion larger than %d bytes", MaxAssertionBytes)
	}
	jws, err := jose.ParseSignedCompact(raw, assertionAlgs)
	if err != nil {
		return nil, fmt.Errorf("assertion is not a JWS signed with ES256 or EdDSA: %w", err)
	}
	if len(jws.Signatures) != 1 {
		return nil, errors.New("assertion must have exactly one signature")
	}
	h := jws.Signatures[0].Header
	if h.KeyID == "" {
		return nil, errors.New("assertion header has no kid")
	}
	if h.JSONWebKey != nil {
		return nil, errors.New("assertion header must not embed a key")
	}
	if err := checkAssertionType(h.ExtraHeaders[jose.HeaderType]); err != nil {
		return nil, err
	}
	// Decoded once here, to find the client; Verify checks that these are the signed bytes.
	payload := jws.UnsafePayloadWithoutVerification()
	a := &Assertion{KeyID: h.KeyID, Algorithm: jose.SignatureAlgorithm(h.Algorithm), jws: jws, bytes: payload}
	if err := josejson.Unmarshal(payload, &a.wire); err != nil { // case-sensitive, as go-jose's jwt package
		return nil, fmt.Errorf("assertion claims: %w", err)
	}
	a.Issuer, a.Subject = a.wire.Issuer, a.wire.Subject
	return a, nil
}

// checkAssertionType accepts a typ header that is absent, "JWT" or the client-authentication type
// (with or without the "application/" prefix, compared case-insensitively as media types are): an
// explicitly typed JWT of another kind (at+jwt, dpop+jwt, approval+jwt, ...) signed with the client's
// key is not a client assertion.
func checkAssertionType(v any) error {
	if v == nil {
		return nil
	}
	typ, ok := v.(string)
	if !ok {
		return fmt.Errorf("%w: typ is not a string", ErrAssertionType)
	}
	t := strings.ToLower(typ)
	t = strings.TrimPrefix(t, "application/")
	if t == "jwt" || t == ClientAuthenticationType {
		return nil
	}
	return fmt.Errorf("%w: %q", ErrAssertionType, printable(typ, 64))
}

// VerificationKey checks that the registered public key k can verify the assertion's algorithm and
// returns the key to verify with.
func (a *Assertion) VerificationKey(k jose.JSONWebKey) (any, error) {
	if k.Algorithm != "" && k.Algorithm != string(a.Algorithm) {
		return nil, fmt.Errorf("key %q is registered for %s, assertion uses %s", k.KeyID, k.Algorithm, a.Algorithm)
	}
	switch pub := k.Key.(type) {
	case *ecdsa.PublicKey:
		if a.Algorithm == jose.ES256 && pub.Curve == elliptic.P256() {
			return pub, nil
		}
	case ed25519.PublicKey:
		if a.Algorithm == jose.EdDSA {
			return pub, nil
		}
	}
	return nil, fmt.Errorf("key %q (%T) cannot verify %s", k.KeyID, k.Key, a.Algorithm)
}

// Verify checks the signature with key and returns the verified claims.
func (a *Assertion) Verify(key any) (*AssertionClaims, error) {
	signed, err := a.jws.Verify(key)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(signed, a.bytes) {
		return nil, errors.New("assertion payload changed after parsing")
	}
	w := a.wire
	aud, err := decodeAudience(w.Audience)
	if err != nil {
		return nil, err
	}
	c := &AssertionClaims{Issuer: w.Issuer, Subject: w.Subject, Audience: aud, ID: w.ID}
	if w.Expiry != nil {
		c.Expiry = w.Expiry.Time()
	}
	if w.NotBefore != nil {
		c.NotBefore = w.NotBefore.Time()
	}
	if w.IssuedAt != nil {
		c.IssuedAt = w.IssuedAt.Time()
	}
	return c, nil
}

// decodeAudience accepts a JSON string or an array of strings.
func decodeAudience(raw json.RawMessage) ([]string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil, nil
	}
	var one string
	if err := json.Unmarshal(raw, &one); err == nil {
		return []string{one}, nil
	}
	var many []string
	if err := json.Unmarshal(raw, &many); err != nil {
		return nil, errors.New("aud must be a string or an array of strings")
	}
	return many, nil
}

// CheckAssertionClaims validates verified claims for client clientID at time now: iss = sub =
// clientID; aud exactly the authorization server's issuer identifier as its only value (simple string
// comparison; draft-ietf-oauth-rfc7523bis: the token endpoint URL, another endpoint's URL or several
// values are refused, whichever endpoint the assertion is presented at); exp present, not past (with
// leeway) and at most MaxAssertionLifetime ahead; nbf and iat not in the future; a jti. The error
// names the failed check, for logs.
func CheckAssertionClaims(c *AssertionClaims, clientID, issuer string, now time.Time, leeway time.Duration) error {
	switch {
	case c.Issuer != clientID || c.Subject != clientID:
		return errors.New("assertion iss and sub must both be the client_id")
	case len(c.Audience) != 1 || c.Audience[0] != issuer:
		return fmt.Errorf("assertion aud %q must be the single value %s", printable(strings.Join(c.Audience, ","), 256), issuer)
	case c.Expiry.IsZero():
		return errors.New("assertion has no exp")
	case now.After(c.Expiry.Add(leeway)):
		return errors.New("assertion has expired")
	case c.Expiry.After(now.Add(MaxAssertionLifetime + leeway)):
		return fmt.Errorf("assertion exp is more than %s ahead", MaxAssertionLifetime)
	case !c.NotBefore.IsZero() && c.NotBefore.After(now.Add(leeway)):
		return errors.New("assertion is not valid yet (nbf)")
	case !c.IssuedAt.IsZero() && c.IssuedAt.After(now.Add(leeway)):
		return errors.New("assertion iat is in the future")
	case !c.IssuedAt.IsZero() && c.IssuedAt.After(c.Expiry):
		return errors.New("assertion iat is after its exp")
	case c.ID == "":
		return errors.New("assertion has no jti")
	case len(c.ID) > maxJTILen:
		return fmt.Errorf("assertion jti is longer than %d characters", maxJTILen)
	}
	return nil
}

// expiringReplayCache is a ReplayCache that keeps an id only while it can still be accepted
// (replay.Cache).
type expiringReplayCache interface {
	UseUntil(ctx context.Context, tenant, clientID, jti string, until time.Time) error
}

// useAssertionID spends the assertion's jti once across replicas. The record is kept until the
// assertion has expired (exp plus the leeway), when the cache can forget it, rather than for the
// cache's whole TTL.
func (s *Server) useAssertionID(ctx context.Context, tenant, clientID string, c *AssertionClaims) error {
	if r, ok := s.replay.(expiringReplayCache); ok {
		return r.UseUntil(ctx, tenant, clientID, c.ID, c.Expiry.Add(s.leeway))
	}
	return s.replay.Use(ctx, tenant, clientID, c.ID)
}
