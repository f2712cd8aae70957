package testkit

import (
	"context"
	"maps"
	"net"
	"slices"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/test/bufconn"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
)

// bufSize is the in-memory listener's buffer, enough for any message of the platform's APIs.
const bufSize = 1 << 20

// ServeGRPC serves s on an in-memory bufconn listener until the test ends and returns a plaintext
// client connection to it. The connection is closed, then the server stopped, in t.Cleanup.
func ServeGRPC(t testing.TB, s *grpc.Server) *grpc.ClientConn {
	t.Helper()
	lis := bufconn.Listen(bufSize)
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// WithBearer returns ctx with token sent as "authorization: Bearer <token>" on outgoing calls; an
// empty token returns ctx unchanged, for calls without credentials.
func WithBearer(ctx context.Context, token string) context.Context {
	if token == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

// StaticVerifier returns an authn.Verifier that accepts exactly the given tokens, answering a copy
// of their claims, and rejects any other token as invalid, as authn.JWKSVerifier does.
func StaticVerifier(tokens map[string]*authn.Claims) authn.Verifier {
	known := maps.Clone(tokens)
	return authn.VerifierFunc(func(_ context.Context, raw string) (*authn.Claims, error) {
		c, ok := known[raw]
		if !ok || c == nil {
			return nil, errs.Unauthenticated(authn.ReasonTokenInvalid, "access token is invalid")
		}
		cp := *c
		cp.Audience = slices.Clone(c.Audience)
		cp.Roles = slices.Clone(c.Roles)
		cp.Act = maps.Clone(c.Act)
		return &cp, nil
	})
}
