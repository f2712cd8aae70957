// Package oauth is the issuer's per-tenant OAuth 2.0 authorization server, without transport: the
// client-credentials grant with private_key_jwt client authentication (RFC 6749, RFC 7523), RFC 9068
// JWT access tokens, RFC 8707 resource indicators, RFC 7662 introspection and RFC 8414 metadata.
package oauth

import (
	"fmt"
	"net/http"
	"strings"
	"time"
)

// OAuth error codes (RFC 6749 §5.2, RFC 6750 §3.1, RFC 8707 §2).
const (
	ErrInvalidRequest         = "invalid_request"
	ErrInvalidClient          = "invalid_client"
	ErrUnauthorizedClient     = "unauthorized_client"
	ErrUnsupportedGrantType   = "unsupported_grant_type"
	ErrInvalidScope           = "invalid_scope"
	ErrInvalidTarget          = "invalid_target"
	ErrInvalidToken           = "invalid_token"
	ErrInsufficientScope      = "insufficient_scope"
	ErrServerError            = "server_error"
	ErrTemporarilyUnavailable = "temporarily_unavailable"
	ErrNotFound               = "not_found"
	// ErrSlowDown answers a request over a rate limit (429 with Retry-After); the code is the one
	// RFC 8628 §3.5 gives a client that polls too fast.
	ErrSlowDown = "slow_down"
)

// Error is an OAuth error response: the code and description go to the caller (RFC 6749 §5.2), the
// cause only to the logs.
type Error struct {
	// Code is the OAuth error code.
	Code string
	// Description is a human-readable, caller-safe explanation.
	Description string
	// Status is the HTTP status of the response.
	Status int
	// Challenge, when set, is the WWW-Authenticate header value of a 401 or 403 response.
	Challenge string
	// DPoPNonce, when set, is a fresh server nonce for the DPoP-Nonce response header (RFC 9449 §8).
	DPoPNonce string
	// RetryAfter, when above 0, is the Retry-After of a 429 or 503 response.
	RetryAfter time.Duration
	// Reason is a short internal reason code of a failed client authentication (unknown_client,
	// bad_signature, ...): for logs and telemetry only, never sent to the caller.
	Reason string
	// Cause is the internal reason, for logs.
	Cause error
}

// Error describes the error for logs.
func (e *Error) Error() string {
	s := e.Code
	if e.Description != "" {
		s += ": " + e.Description
	}
	if e.Cause != nil {
		s += ": " + e.Cause.Error()
	}
	return s
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Cause }

func newError(code string, status int, format string, args ...any) *Error {
	return &Error{Code: code, Status: status, Description: fmt.Sprintf(format, args...)}
}

func invalidRequest(format string, args ...any) *Error {
	return newError(ErrInvalidRequest, http.StatusBadRequest, format, args...)
}

// ClientAuthFailedDescription is the error_description of every failed client authentication:
// whatever went wrong (unknown or disabled client, unknown kid, bad signature, wrong aud or typ,
// expired or replayed assertion, inactive agent), the caller learns nothing about clients, keys or
// their state. The reason goes to the logs.
const ClientAuthFailedDescription = "client authentication failed"

// invalidClient is a failed client authentication: 401 with a WWW-Authenticate challenge for the
// authentication scheme the client tried (RFC 6749 §5.2), the same description whatever the reason.
func invalidClient(realm, scheme, reason string, cause error) *Error {
	if scheme == "" || !printableASCII(scheme) {
		scheme = "private_key_jwt"
	}
	e := newError(ErrInvalidClient, http.StatusUnauthorized, "%s", ClientAuthFailedDescription)
	e.Challenge = fmt.Sprintf(`%s realm=%q`, scheme, realm)
	e.Reason, e.Cause = reason, cause
	return e
}

func unavailable(cause error) *Error {
	return &Error{Code: ErrTemporarilyUnavailable, Status: http.StatusServiceUnavailable,
		Description: "the authorization server is temporarily unavailable, retry", Cause: cause}
}

func serverError(cause error) *Error {
	return &Error{Code: ErrServerError, Status: http.StatusInternalServerError,
		Description: "internal error", Cause: cause}
}

// SlowDown answers a request over a rate limit: 429 slow_down, to be retried after retryAfter.
func SlowDown(retryAfter time.Duration) *Error {
	return &Error{Code: ErrSlowDown, Status: http.StatusTooManyRequests, RetryAfter: retryAfter,
		Description: "too many requests, retry later"}
}

// ErrUnknownTenant answers requests for a tenant that has no authorization server.
func ErrUnknownTenant() *Error {
	return newError(ErrNotFound, http.StatusNotFound, "unknown tenant")
}

// SafeDescription maps s onto the characters RFC 6749 allows in error_description
// (%x20-21 / %x23-5B / %x5D-7E) and bounds its length.
func SafeDescription(s string) string {
	const maxLen = 256
	var b strings.Builder
	for i := 0; i < len(s) && b.Len() < maxLen; i++ {
		c := s[i]
		if c < 0x20 || c == '"' || c == '\\' || c > 0x7e {
			c = '?'
		}
		b.WriteByte(c)
	}
	return b.String()
}
