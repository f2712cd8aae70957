// Package authn verifies the platform's access tokens, turns them into principals with roles, and
// gives service identities their client side: credential files, RFC 7523 client assertions, an
// oauth2.TokenSource and gRPC per-RPC credentials.
//
// It is also the verifier SDK for resource servers (docs/sdk.md):
//
//   - JWKSVerifier verifies RFC 9068 access tokens locally against each tenant issuer's JWKS, cached
//     and refetched on rotation; configure Audience as the resource server's URL and Revocations as a
//     Denylist kept current by a RevocationFeed (push revocation from the REVOCATIONS stream).
//   - IntrospectionVerifier asks the issuer's RFC 7662 endpoint instead, for servers that cannot reach
//     NATS; it fails closed.
//   - Middleware (net/http) and UnaryServerInterceptor/StreamServerInterceptor (gRPC) authenticate
//     each request, enforce DPoP (RFC 9449) and certificate (RFC 8705) binding, allowed tenants and
//     scopes (RequireScopes, WithMethodScopes), and put the Claims and Principal in the context.
//   - AccessReporter sends every decision, allowed or refused, to the monitor in batches without
//     blocking requests; Report lets a handler add rows and bytes to its request's event.
package authn
