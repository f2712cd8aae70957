// Package tokenclient makes OAuth 2.0 client-credentials token requests with private_key_jwt
// client authentication (RFC 6749 §4.4, RFC 7523), exactly as any agent would: every request carries
// a freshly signed client assertion with its own jti.
package tokenclient

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/agentid/agentid/pkg/authn"
)

// Error codes of failures that are not OAuth error responses.
const (
	// CodeTransport is a request that got no HTTP response (connection refused, reset, timeout).
	CodeTransport = "transport_error"
	// CodeInvalidResponse is a 200 response without a bearer access token.
	CodeInvalidResponse = "invalid_response"
)

// Identity is an agent's OAuth client: its client id and ES256 private key. It is safe for
// concurrent use once ClientID is set.
type Identity struct {
	// ClientID is the OAuth client id (the agent id); empty until the agent is registered.
	ClientID string

	key jose.JSONWebKey
}

// NewIdentity creates an identity with a fresh ES256 (P-256) key whose kid is its RFC 7638
// thumbprint.
func NewIdentity() (*Identity, error) {
	key, err := authn.NewSigningKey()
	if err != nil {
		return nil, fmt.Errorf("tokenclient: %w", err)
	}
	return &Identity{key: key}, nil
}

// KeyID returns the kid of the identity's key.
func (id *Identity) KeyID() string { return id.key.KeyID }

// PublicJWKS returns the JWK Set JSON of the public key, as registered with the registry.
func (id *Identity) PublicJWKS() (string, error) {
	b, err := authn.PublicJWKSOf(id.key)
	if err != nil {
		return "", fmt.Errorf("tokenclient: %w", err)
	}
	return string(b), nil
}

// Assertion signs an RFC 7523 client assertion for audience (authn.SignAssertion): iss = sub =
// client id, exp = now + authn.AssertionLifetime and a random 128-bit jti.
func (id *Identity) Assertion(audience string, now time.Time) (string, error) {
	return authn.SignAssertion(id.key, id.ClientID, audience, now)
}

// Client sends token requests to one token endpoint.
type Client struct {
	// HTTP is the HTTP client (NewHTTPClient gives one without proxies, sized for the load).
	HTTP *http.Client
	// TokenURL is the token endpoint, {issuer}/oauth2/token.
	TokenURL string
	// Audience is the client assertion audience: the issuer identifier.
	Audience string
	// Scope is the space-separated scope to ask for; empty asks for every scope of the client.
	Scope string
	// Resource, when set, is the RFC 8707 resource the token is asked for (its audience).
	Resource string
}

// NewHTTPClient returns an HTTP client for token requests that keeps up to conns idle connections,
// never uses a proxy from the environment, and gives up on a request after timeout. https URLs are
// verified against the system roots.
func NewHTTPClient(conns int, timeout time.Duration) *http.Client {
	return NewTLSHTTPClient(conns, timeout, nil)
}

// NewTLSHTTPClient is NewHTTPClient whose https connections use a clone of tlsConfig (e.g.
// tlsx.NewClientConfig verifying a CA file); nil means the system roots. It speaks HTTP/1.1 with
// keep-alive, each worker on its own connection as separate agents would be, so a TLS handshake is
// paid per connection, not per request.
func NewTLSHTTPClient(conns int, timeout time.Duration, tlsConfig *tls.Config) *http.Client {
	t := &http.Transport{
		Proxy:               nil,
		MaxIdleConns:        conns,
		MaxIdleConnsPerHost: conns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	if tlsConfig != nil {
		t.TLSClientConfig = tlsConfig.Clone()
	}
	return &http.Client{Timeout: timeout, Transport: t}
}

// Error is a failed token request.
type Error struct {
	// Code is the OAuth error code of the response (invalid_client, ...), CodeTransport when no
	// response arrived, CodeInvalidResponse for a 200 without a token, or http_<status> for an error
	// response that is not an OAuth error.
	Code string
	// Status is the HTTP status, 0 without a response.
	Status int
	// Description is the error_description of the response, or the transport error.
	Description string
}

// Error describes the failure.
func (e *Error) Error() string {
	s := "token request failed: " + e.Code
	if e.Status != 0 {
		s += fmt.Sprintf(" (HTTP %d)", e.Status)
	}
	if e.Description != "" {
		s += ": " + e.Description
	}
	return s
}

// Token is a successful token response.
type Token struct {
	// AccessToken is the access token.
	AccessToken string `json:"access_token"`
	// TokenType is the token type (Bearer).
	TokenType string `json:"token_type"`
	// ExpiresIn is the token lifetime in seconds.
	ExpiresIn int64 `json:"expires_in"`
	// Scope is the granted scope.
	Scope string `json:"scope"`
}

// Request makes one client-credentials request for id with a fresh assertion. A failure is an
// *Error, except when ctx ends first (then ctx.Err()).
func (c *Client) Request(ctx context.Context, id *Identity) (*Token, error) {
	assertion, err := id.Assertion(c.Audience, time.Now())
	if err != nil {
		return nil, err
	}
	return c.RequestWithAssertion(ctx, id, assertion)
}

// RequestWithAssertion makes one client-credentials request for id with an assertion signed
// beforehand (Identity.Assertion); each assertion may be used once. Failures are as for Request.
func (c *Client) RequestWithAssertion(ctx context.Context, id *Identity, assertion string) (*Token, error) {
	form := url.Values{
		"grant_type":            {"client_credentials"},
		"client_id":             {id.ClientID},
		"client_assertion_type": {authn.ClientAssertionType},
		"client_assertion":      {assertion},
	}
	if c.Scope != "" {
		form.Set("scope", c.Scope)
	}
	if c.Resource != "" {
		form.Set("resource", c.Resource)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.TokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, fmt.Errorf("tokenclient: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	resp, err := c.HTTP.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, &Error{Code: CodeTransport, Description: err.Error()}
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, &Error{Code: CodeTransport, Status: resp.StatusCode, Description: err.Error()}
	}
	if resp.StatusCode != http.StatusOK {
		var oe struct {
			Code        string `json:"error"`
			Description string `json:"error_description"`
		}
		if json.Unmarshal(body, &oe) != nil || oe.Code == "" {
			return nil, &Error{Code: fmt.Sprintf("http_%d", resp.StatusCode), Status: resp.StatusCode}
		}
		return nil, &Error{Code: oe.Code, Status: resp.StatusCode, Description: oe.Description}
	}
	var tok Token
	if err := json.Unmarshal(body, &tok); err != nil || tok.AccessToken == "" || !strings.EqualFold(tok.TokenType, "bearer") {
		return nil, &Error{Code: CodeInvalidResponse, Status: resp.StatusCode, Description: "no bearer access_token in the response"}
	}
	return &tok, nil
}

// Code returns the error code of a Request error: the Error's Code, or "canceled" for an ended
// context and "client_error" for anything else.
func Code(err error) string {
	var e *Error
	switch {
	case errors.As(err, &e):
		return e.Code
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return "canceled"
	default:
		return "client_error"
	}
}
