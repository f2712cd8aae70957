package authn

import (
	"context"
	"errors"
	"net"
	"net/http"

	"golang.org/x/oauth2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/agentid/agentid/pkg/tlsx"
)

// PerRPCCredentials sends "authorization: Bearer <token>" from ts on every RPC. With requireTLS the
// credentials are only sent over a transport with privacy and integrity (TLS); without it they may
// also go over insecure loopback connections in development. A token endpoint that rejects the
// client (4xx) fails the RPC with Unauthenticated; an unreachable one with Unavailable. Prefer
// BearerCredentials, which decides requireTLS from the target.
func PerRPCCredentials(ts oauth2.TokenSource, requireTLS bool) credentials.PerRPCCredentials {
	return &tokenCredentials{ts: ts, requireTLS: requireTLS}
}

// BearerCredentials is PerRPCCredentials for the gRPC target the connection dials: plaintext is
// allowed only when the target is a loopback address (or a Unix socket); to any other target the
// token is sent only over TLS, and a plaintext connection fails instead of leaking it.
func BearerCredentials(target string, ts oauth2.TokenSource) credentials.PerRPCCredentials {
	return PerRPCCredentials(ts, !tlsx.IsLoopbackTarget(target))
}

type tokenCredentials struct {
	ts         oauth2.TokenSource
	requireTLS bool
}

func (t *tokenCredentials) GetRequestMetadata(ctx context.Context, _ ...string) (map[string]string, error) {
	if t.requireTLS {
		ri, _ := credentials.RequestInfoFromContext(ctx)
		if err := credentials.CheckSecurityLevel(ri.AuthInfo, credentials.PrivacyAndIntegrity); err != nil {
			return nil, status.Errorf(codes.Unauthenticated, "refusing to send a bearer token over a connection without TLS (plaintext is allowed only to loopback): %v", err)
		}
	}
	tok, err := t.ts.Token()
	if err != nil {
		return nil, tokenError(err)
	}
	return map[string]string{"authorization": "Bearer " + tok.AccessToken}, nil
}

func (t *tokenCredentials) RequireTransportSecurity() bool { return t.requireTLS }

func tokenError(err error) error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) && re.Response != nil && re.Response.StatusCode >= 400 && re.Response.StatusCode < 500 &&
		re.Response.StatusCode != http.StatusTooManyRequests {
		return status.Errorf(codes.Unauthenticated, "token endpoint rejected the client: %v", err)
	}
	var ne net.Error
	if errors.As(err, &ne) || re != nil {
		return status.Errorf(codes.Unavailable, "token endpoint unavailable: %v", err)
	}
	return status.Errorf(codes.Unauthenticated, "cannot obtain an access token: %v", err)
}
