package authn

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/agentid/agentid/pkg/errs"
)

// Reason codes of authorization failures at a resource server.
const (
	// ReasonInsufficientScope (kind PermissionDenied) means the token lacks a scope the resource needs.
	ReasonInsufficientScope = "INSUFFICIENT_SCOPE"
	// ReasonTenantNotAllowed means the token's tenant is not one this resource server serves.
	ReasonTenantNotAllowed = "TENANT_NOT_ALLOWED"
)

type claimsKey struct{}

// WithClaims returns a context carrying verified claims.
func WithClaims(ctx context.Context, c *Claims) context.Context {
	return context.WithValue(ctx, claimsKey{}, c)
}

// ClaimsFrom returns the verified claims of the request, set by Middleware or the server interceptors.
func ClaimsFrom(ctx context.Context) (*Claims, bool) {
	c, ok := ctx.Value(claimsKey{}).(*Claims)
	return c, ok && c != nil
}

// HasScopes reports whether the claims grant every one of scopes.
func HasScopes(c *Claims, scopes ...string) bool {
	if len(scopes) == 0 {
		return c != nil
	}
	if c == nil {
		return false
	}
	granted := c.Scope
	for _, want := range scopes {
		if !hasScope(granted, want) {
			return false
		}
	}
	return true
}

// hasScope reports whether the space-separated list granted holds want, without allocating.
func hasScope(granted, want string) bool {
	for granted != "" {
		var s string
		s, granted, _ = strings.Cut(granted, " ")
		if s == want && s != "" {
			return true
		}
	}
	return false
}

// CheckScopes returns a PermissionDenied *errs.Error (ReasonInsufficientScope) unless the claims grant
// every one of scopes.
func CheckScopes(c *Claims, scopes ...string) error {
	if HasScopes(c, scopes...) {
		return nil
	}
	return errs.PermissionDenied(ReasonInsufficientScope, "insufficient scope").
		WithMetadata("required_scopes", strings.Join(scopes, " "))
}

// CheckTenant returns an Unauthenticated *errs.Error (ReasonTenantNotAllowed) unless the claims'
// tenant is one of allowed. An empty allow-list allows every tenant.
func CheckTenant(c *Claims, allowed []string) error {
	if len(allowed) == 0 {
		return nil
	}
	if c != nil && slices.Contains(allowed, c.Tenant) {
		return nil
	}
	tenant := ""
	if c != nil {
		tenant = c.Tenant
	}
	return errs.Unauthenticated(ReasonTenantNotAllowed, "access token is invalid").
		WithCause(fmt.Errorf("tenant %q is not served here", tenant))
}

// RequireScopes returns net/http middleware for one route, placed inside Middleware: it answers 403
// with `error="insufficient_scope"` (RFC 6750 §3.1) unless the request's token grants every one of
// scopes, and 401 when the request did not pass through Middleware. The refusal is what Middleware
// reports to access telemetry.
func RequireScopes(scopes ...string) func(http.Handler) http.Handler {
	scopes = slices.Clone(scopes)
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			st := stateFrom(r.Context())
			c, ok := ClaimsFrom(r.Context())
			if !ok || st == nil {
				writeRefusal(w, nil, refusal{status: http.StatusUnauthorized, code: "invalid_token",
					reason: ReasonTokenMissing})
				return
			}
			if err := CheckScopes(c, scopes...); err != nil {
				st.refuse(w, refusal{status: http.StatusForbidden, code: "insufficient_scope",
					reason: ReasonInsufficientScope, scope: strings.Join(scopes, " "), cause: err})
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}
