package authn

import (
	"encoding/json"
	"time"

	"github.com/go-jose/go-jose/v4/jwt"
)

// Claims are the claims of a platform access token (RFC 9068 profile, docs/architecture.md). Times
// are encoded as NumericDate (seconds since the epoch); a zero time is omitted.
type Claims struct {
	// Issuer is "iss", the tenant issuer identifier {public_url}/t/{tenant}.
	Issuer string `json:"iss,omitempty"`
	// Subject is "sub", the client_id for client-credentials tokens.
	Subject string `json:"sub,omitempty"`
	// Audience is "aud", a string or an array on the wire.
	Audience []string `json:"aud,omitempty"`
	// Expiry is "exp".
	Expiry time.Time `json:"exp,omitzero"`
	// IssuedAt is "iat".
	IssuedAt time.Time `json:"iat,omitzero"`
	// NotBefore is "nbf".
	NotBefore time.Time `json:"nbf,omitzero"`
	// ID is "jti".
	ID string `json:"jti,omitempty"`
	// ClientID is "client_id".
	ClientID string `json:"client_id,omitempty"`
	// Scope is "scope", space-separated.
	Scope string `json:"scope,omitempty"`
	// Tenant is "tenant"; it must match the issuer's tenant.
	Tenant string `json:"tenant,omitempty"`
	// Environment is "env", set for agents.
	Environment string `json:"env,omitempty"`
	// Agent is "agent", the agent's resource name, set for agents.
	Agent string `json:"agent,omitempty"`
	// Roles is "roles", set for platform identities.
	Roles []string `json:"roles,omitempty"`
	// Act is "act" (RFC 8693), the actor of a delegated token.
	Act map[string]any `json:"act,omitempty"`
	// Confirmation is "cnf" (RFC 7800): the key the token is bound to, for sender-constrained tokens.
	Confirmation *Confirmation `json:"cnf,omitempty"`
	// Permissions is "permissions", set only in tokens for TemporalAudience: "<namespace>:<role>"
	// entries for Temporal's default JWT claim mapper.
	Permissions []string `json:"permissions,omitempty"`
	// ClientKeyThumbprint is "ckt": the RFC 7638 SHA-256 thumbprint (base64url) of the client key the
	// token was obtained with (private_key_jwt), so that the tokens of a rotated-out key are revoked
	// without touching those of the client's other keys.
	ClientKeyThumbprint string `json:"ckt,omitempty"`
}

// Confirmation is the "cnf" claim of a sender-constrained token.
type Confirmation struct {
	// JKT is "jkt" (RFC 9449 §6.1): the base64url SHA-256 JWK thumbprint (RFC 7638) of the DPoP key.
	JKT string `json:"jkt,omitempty"`
	// X5TS256 is "x5t#S256" (RFC 8705 §3.1): the base64url SHA-256 thumbprint of the client's
	// TLS certificate (DER).
	X5TS256 string `json:"x5t#S256,omitempty"`
}

// MaxTokenLifetime is the longest lifetime of any access token the platform issues; revocations are
// kept this long (plus leeway) after their not-before time.
const MaxTokenLifetime = 24 * time.Hour

type wireClaims struct {
	Issuer      string           `json:"iss,omitempty"`
	Subject     string           `json:"sub,omitempty"`
	Audience    jwt.Audience     `json:"aud,omitempty"`
	Expiry      *jwt.NumericDate `json:"exp,omitempty"`
	IssuedAt    *jwt.NumericDate `json:"iat,omitempty"`
	NotBefore   *jwt.NumericDate `json:"nbf,omitempty"`
	ID          string           `json:"jti,omitempty"`
	ClientID    string           `json:"client_id,omitempty"`
	Scope       string           `json:"scope,omitempty"`
	Tenant      string           `json:"tenant,omitempty"`
	Environment string           `json:"env,omitempty"`
	Agent       string           `json:"agent,omitempty"`
	Roles       []string         `json:"roles,omitempty"`
	Act         map[string]any   `json:"act,omitempty"`
	Cnf         *Confirmation    `json:"cnf,omitempty"`
	Permissions []string         `json:"permissions,omitempty"`
	CKT         string           `json:"ckt,omitempty"`
}

func numericDate(t time.Time) *jwt.NumericDate {
	if t.IsZero() {
		return nil
	}
	return jwt.NewNumericDate(t)
}

func timeOf(d *jwt.NumericDate) time.Time {
	if d == nil {
		return time.Time{}
	}
	return d.Time().UTC()
}

// MarshalJSON encodes the claims with NumericDate times, as they appear in a JWT.
func (c Claims) MarshalJSON() ([]byte, error) {
	return json.Marshal(wireClaims{
		Issuer: c.Issuer, Subject: c.Subject, Audience: jwt.Audience(c.Audience),
		Expiry: numericDate(c.Expiry), IssuedAt: numericDate(c.IssuedAt), NotBefore: numericDate(c.NotBefore),
		ID: c.ID, ClientID: c.ClientID, Scope: c.Scope, Tenant: c.Tenant, Environment: c.Environment,
		Agent: c.Agent, Roles: c.Roles, Act: c.Act, Cnf: c.Confirmation, Permissions: c.Permissions,
		CKT: c.ClientKeyThumbprint,
	})
}

// UnmarshalJSON decodes JWT claims (NumericDate times, "aud" as string or array).
func (c *Claims) UnmarshalJSON(b []byte) error {
	var w wireClaims
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*c = Claims{
		Issuer: w.Issuer, Subject: w.Subject, Audience: []string(w.Audience),
		Expiry: timeOf(w.Expiry), IssuedAt: timeOf(w.IssuedAt), NotBefore: timeOf(w.NotBefore),
		ID: w.ID, ClientID: w.ClientID, Scope: w.Scope, Tenant: w.Tenant, Environment: w.Environment,
		Agent: w.Agent, Roles: w.Roles, Act: w.Act, Confirmation: w.Cnf, Permissions: w.Permissions,
		ClientKeyThumbprint: w.CKT,
	}
	return nil
}

func (c *Claims) registered() jwt.Claims {
	return jwt.Claims{
		Issuer: c.Issuer, Subject: c.Subject, Audience: jwt.Audience(c.Audience), ID: c.ID,
		Expiry: numericDate(c.Expiry), IssuedAt: numericDate(c.IssuedAt), NotBefore: numericDate(c.NotBefore),
	}
}
