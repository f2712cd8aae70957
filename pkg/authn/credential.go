package authn

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"runtime"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/agentid/agentid/pkg/fsutil"
)

// ClientAssertionType is the RFC 7523 client_assertion_type of private_key_jwt client authentication.
const ClientAssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// ClientAssertionJWTType is the explicit typ of the client assertions the SDK signs
// (draft-ietf-oauth-rfc7523bis), so that no other kind of JWT can be taken for one.
const ClientAssertionJWTType = "client-authentication+jwt"

// AssertionLifetime is how long a client assertion made by Credential.Assertion is valid.
const AssertionLifetime = 60 * time.Second

const maxCredentialFileBytes = 64 << 10

// CredentialFile is the on-disk JSON form of a service identity's credential (mode 0600).
type CredentialFile struct {
	// Tenant is the tenant the client belongs to.
	Tenant string `json:"tenant"`
	// ClientID is the OAuth client id.
	ClientID string `json:"client_id"`
	// Issuer is the tenant issuer identifier; client assertions use it as audience.
	Issuer string `json:"issuer"`
	// TokenURL is the issuer's token endpoint.
	TokenURL string `json:"token_url"`
	// PrivateJWK is the client's private signing key (ES256 or Ed25519) as a JWK.
	PrivateJWK json.RawMessage `json:"private_jwk"`
}

// Credential is a service identity able to authenticate to the issuer with private_key_jwt. Its
// String and LogValue never reveal the key.
type Credential struct {
	// Tenant is the tenant the client belongs to.
	Tenant string
	// ClientID is the OAuth client id.
	ClientID string
	// Issuer is the tenant issuer identifier.
	Issuer string
	// TokenURL is the issuer's token endpoint.
	TokenURL string

	key jose.JSONWebKey
}

// NewSigningKey generates a private ES256 (P-256) signing key as a JWK whose kid is its RFC 7638
// thumbprint: the key an agent or service identity authenticates with.
func NewSigningKey() (jose.JSONWebKey, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return jose.JSONWebKey{}, fmt.Errorf("authn: generate key: %w", err)
	}
	key := jose.JSONWebKey{Key: priv, Algorithm: string(jose.ES256), Use: "sig"}
	if key.KeyID, err = Thumbprint(key); err != nil {
		return jose.JSONWebKey{}, err
	}
	return key, nil
}

// NewCredential creates a credential with a fresh ES256 key whose kid is its RFC 7638 thumbprint.
// The token URL is {issuer}/oauth2/token.
func NewCredential(tenant, clientID, issuer string) (*Credential, error) {
	key, err := NewSigningKey()
	if err != nil {
		return nil, err
	}
	issuer = strings.TrimRight(issuer, "/")
	c := &Credential{Tenant: tenant, ClientID: clientID, Issuer: issuer, TokenURL: issuer + "/oauth2/token", key: key}
	if err := c.validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// Thumbprint returns the RFC 7638 SHA-256 thumbprint of a key, base64url without padding (the kid
// the platform gives keys it makes).
func Thumbprint(k jose.JSONWebKey) (string, error) {
	tp, err := k.Thumbprint(crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("authn: key thumbprint: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(tp), nil
}

func (c *Credential) validate() error {
	switch {
	case !ValidTenant(c.Tenant):
		return fmt.Errorf("authn: credential tenant %q is not a valid tenant id", c.Tenant)
	case c.ClientID == "":
		return errors.New("authn: credential has no client_id")
	case c.Issuer == "":
		return errors.New("authn: credential has no issuer")
	case c.TokenURL == "":
		return errors.New("authn: credential has no token_url")
	}
	if u, err := url.Parse(c.TokenURL); err != nil || u.Scheme == "" || u.Host == "" {
		return fmt.Errorf("authn: credential token_url %q is not an absolute URL", c.TokenURL)
	}
	return nil
}

// ParseCredential parses the JSON of a credential file. The key must be a private ES256 (P-256) or
// Ed25519 key; a missing kid is set to the key's thumbprint and a missing token_url to
// {issuer}/oauth2/token.
func ParseCredential(data []byte) (*Credential, error) {
	var f CredentialFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("authn: parse credential: %w", err)
	}
	if len(f.PrivateJWK) == 0 {
		return nil, errors.New("authn: credential has no private_jwk")
	}
	var k jose.JSONWebKey
	if err := k.UnmarshalJSON(f.PrivateJWK); err != nil {
		return nil, fmt.Errorf("authn: credential private_jwk: %w", err)
	}
	alg, err := signingAlg(k)
	if err != nil {
		return nil, err
	}
	if k.Algorithm == "" {
		k.Algorithm = string(alg)
	} else if k.Algorithm != string(alg) {
		return nil, fmt.Errorf("authn: credential key alg %q does not match its key type (%s)", k.Algorithm, alg)
	}
	if k.KeyID == "" {
		if k.KeyID, err = Thumbprint(k); err != nil {
			return nil, err
		}
	}
	c := &Credential{Tenant: f.Tenant, ClientID: f.ClientID, Issuer: strings.TrimRight(f.Issuer, "/"), TokenURL: f.TokenURL, key: k}
	if c.TokenURL == "" && c.Issuer != "" {
		c.TokenURL = c.Issuer + "/oauth2/token"
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// signingAlg returns the JWS algorithm of a private signing key, rejecting anything else.
func signingAlg(k jose.JSONWebKey) (jose.SignatureAlgorithm, error) {
	if k.IsPublic() || !k.Valid() {
		return "", errors.New("authn: credential private_jwk is not a valid private key")
	}
	switch key := k.Key.(type) {
	case *ecdsa.PrivateKey:
		if key.Curve == elliptic.P256() {
			return jose.ES256, nil
		}
	case ed25519.PrivateKey:
		return jose.EdDSA, nil
	}
	return "", fmt.Errorf("authn: credential key %T is not an ES256 (P-256) or Ed25519 key", k.Key)
}

// LoadCredentialFile reads a credential file. It refuses files readable or writable by group or
// others (the mode must be 0600 or stricter).
func LoadCredentialFile(path string) (*Credential, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("authn: open credential: %w", err)
	}
	defer func() { _ = f.Close() }()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("authn: stat credential: %w", err)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("authn: credential file %s has mode %#o, accessible by group or others; chmod 600 it", path, fi.Mode().Perm())
	}
	data, err := io.ReadAll(io.LimitReader(f, maxCredentialFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("authn: read credential: %w", err)
	}
	if len(data) > maxCredentialFileBytes {
		return nil, fmt.Errorf("authn: credential file %s is larger than %d bytes", path, maxCredentialFileBytes)
	}
	c, err := ParseCredential(data)
	if err != nil {
		return nil, fmt.Errorf("%w (file %s)", err, path)
	}
	return c, nil
}

// MarshalFile returns the credential's file form, including the private key: handle with care.
func (c *Credential) MarshalFile() ([]byte, error) {
	jwk, err := c.key.MarshalJSON()
	if err != nil {
		return nil, fmt.Errorf("authn: marshal key: %w", err)
	}
	out, err := json.MarshalIndent(CredentialFile{
		Tenant: c.Tenant, ClientID: c.ClientID, Issuer: c.Issuer, TokenURL: c.TokenURL, PrivateJWK: jwk,
	}, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("authn: marshal credential: %w", err)
	}
	return append(out, '\n'), nil
}

// WriteCredentialFile writes c to path with mode 0600, atomically and durably (temporary file, fsync,
// rename, fsync of the directory: fsutil.WriteFileAtomic).
func WriteCredentialFile(path string, c *Credential) error {
	data, err := c.MarshalFile()
	if err != nil {
		return err
	}
	if err := fsutil.WriteFileAtomic(path, data, 0o600); err != nil {
		return fmt.Errorf("authn: write credential: %w", err)
	}
	return nil
}

// KeyID returns the kid of the credential's key.
func (c *Credential) KeyID() string { return c.key.KeyID }

// Algorithm returns the JWS algorithm the credential signs with (ES256 or EdDSA).
func (c *Credential) Algorithm() string { return c.key.Algorithm }

// PublicJWKS returns the JWK Set JSON of the credential's public key, for registering the client.
func (c *Credential) PublicJWKS() ([]byte, error) { return PublicJWKSOf(c.key) }

// PublicJWKSOf returns the JWK Set JSON holding the public half of a private key.
func PublicJWKSOf(key jose.JSONWebKey) ([]byte, error) {
	pub := key.Public()
	if pub.Key == nil {
		return nil, errors.New("authn: no usable public key")
	}
	return json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{pub}})
}

// String describes the credential without its key.
func (c Credential) String() string {
	return fmt.Sprintf("credential{tenant=%s client_id=%s kid=%s}", c.Tenant, c.ClientID, c.key.KeyID)
}

// GoString describes the credential without its key, for %#v.
func (c Credential) GoString() string { return c.String() }

// LogValue lets slog log a credential without its key.
func (c Credential) LogValue() slog.Value {
	return slog.GroupValue(slog.String("tenant", c.Tenant), slog.String("client_id", c.ClientID),
		slog.String("kid", c.key.KeyID))
}

// Assertion returns an RFC 7523 client assertion for audience: iss = sub = client_id, iat = now,
// exp = now + AssertionLifetime, a random jti, signed with the credential key (header kid). The
// platform's issuer accepts only its issuer identifier (c.Issuer) as the audience.
func (c *Credential) Assertion(audience string, now time.Time) (string, error) {
	return SignAssertion(c.key, c.ClientID, audience, now)
}

// SignAssertion signs an RFC 7523 client assertion with key for clientID: typ
// client-authentication+jwt, iss = sub = clientID, aud = audience (the authorization server's issuer
// identifier as the only value, draft-ietf-oauth-rfc7523bis), iat = now, exp = now +
// AssertionLifetime, a random 128-bit jti (header kid).
func SignAssertion(key jose.JSONWebKey, clientID, audience string, now time.Time) (string, error) {
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: jose.SignatureAlgorithm(key.Algorithm), Key: key},
		(&jose.SignerOptions{}).WithType(ClientAssertionJWTType))
	if err != nil {
		return "", fmt.Errorf("authn: assertion signer: %w", err)
	}
	jti := make([]byte, 16)
	if _, err := rand.Read(jti); err != nil {
		return "", fmt.Errorf("authn: assertion jti: %w", err)
	}
	claims := jwt.Claims{
		Issuer:   clientID,
		Subject:  clientID,
		Audience: jwt.Audience{audience},
		IssuedAt: jwt.NewNumericDate(now),
		Expiry:   jwt.NewNumericDate(now.Add(AssertionLifetime)),
		ID:       base64.RawURLEncoding.EncodeToString(jti),
	}
	s, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		return "", fmt.Errorf("authn: sign assertion: %w", err)
	}
	return s, nil
}

// TokenSource returns a token source for the client-credentials grant with private_key_jwt client
// authentication: every fetch sends a fresh assertion (aud = Issuer) with the client id in the form.
// Tokens are reused until shortly before they expire. ctx is used for every fetch (it may carry an
// oauth2.HTTPClient).
func (c *Credential) TokenSource(ctx context.Context, scopes ...string) oauth2.TokenSource {
	return c.TokenSourceFor(ctx, TokenRequest{Scopes: scopes})
}

// TokenRequest says what a token source asks for.
type TokenRequest struct {
	// Scopes to request; none asks for every scope of the client.
	Scopes []string
	// Resources are RFC 8707 resource indicators: the token's audience becomes these resource
	// servers instead of the platform API.
	Resources []string
	// DPoP, if set, makes the tokens DPoP-bound to its key (RFC 9449); see DPoPTokenSource.
	DPoP *DPoPProver
}

// TokenSourceFor returns a token source for req: the client-credentials grant with private_key_jwt
// client authentication, bearer tokens unless req.DPoP is set. Tokens are reused until shortly
// before they expire; ctx is used for every fetch (it may carry an oauth2.HTTPClient).
func (c *Credential) TokenSourceFor(ctx context.Context, req TokenRequest) oauth2.TokenSource {
	if req.DPoP != nil {
		return oauth2.ReuseTokenSource(nil, &dpopSource{ctx: ctx, cred: c, prover: req.DPoP, scopes: req.Scopes, resources: req.Resources})
	}
	return oauth2.ReuseTokenSource(nil, &assertionSource{ctx: ctx, cred: c, scopes: req.Scopes, resources: req.Resources})
}

type assertionSource struct {
	ctx       context.Context
	cred      *Credential
	scopes    []string
	resources []string
}

func (s *assertionSource) Token() (*oauth2.Token, error) {
	assertion, err := s.cred.Assertion(s.cred.Issuer, time.Now())
	if err != nil {
		return nil, err
	}
	cfg := clientcredentials.Config{
		ClientID:  s.cred.ClientID,
		TokenURL:  s.cred.TokenURL,
		Scopes:    s.scopes,
		AuthStyle: oauth2.AuthStyleInParams,
		EndpointParams: url.Values{
			"client_assertion_type": {ClientAssertionType},
			"client_assertion":      {assertion},
		},
	}
	if len(s.resources) > 0 {
		cfg.EndpointParams["resource"] = s.resources
	}
	return cfg.Token(s.ctx)
}
