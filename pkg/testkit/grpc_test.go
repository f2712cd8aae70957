package testkit_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"reflect"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/grpcx"
	"github.com/agentid/agentid/pkg/testkit"
)

func TestServeGRPCServesUntilTheTestEnds(t *testing.T) {
	s := grpc.NewServer()
	hs := health.NewServer()
	healthpb.RegisterHealthServer(s, hs)
	var conn *grpc.ClientConn
	t.Run("serving", func(t *testing.T) {
		conn = testkit.ServeGRPC(t, s)
		resp, err := healthpb.NewHealthClient(conn).Check(t.Context(), &healthpb.HealthCheckRequest{})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("Check = %v, %v; want SERVING", resp, err)
		}
	})
	if got := conn.GetState(); got != connectivity.Shutdown {
		t.Errorf("connection state after the test = %v, want Shutdown", got)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(lis) }()
	select {
	case err := <-served:
		if !errors.Is(err, grpc.ErrServerStopped) {
			t.Errorf("Serve after the test = %v, want the server stopped", err)
		}
	case <-time.After(5 * time.Second):
		s.Stop()
		t.Error("the server was still running after the test")
	}
}

func TestWithBearer(t *testing.T) {
	ctx := context.Background()
	if got := testkit.WithBearer(ctx, ""); got != ctx {
		t.Error("WithBearer with an empty token changed the context")
	}
	md, _ := metadata.FromOutgoingContext(testkit.WithBearer(ctx, "tok"))
	if got := md.Get("authorization"); !reflect.DeepEqual(got, []string{"Bearer tok"}) {
		t.Errorf("authorization = %q, want [Bearer tok]", got)
	}
}

func TestStaticVerifier(t *testing.T) {
	alice := &authn.Claims{Subject: "alice", Tenant: "acme", Roles: []string{"tenant-admin"}, Audience: []string{authn.APIAudience}}
	tokens := map[string]*authn.Claims{"alice": alice}
	v := testkit.StaticVerifier(tokens)
	tokens["mallory"] = &authn.Claims{Subject: "mallory", Tenant: "acme"}

	got, err := v.Verify(t.Context(), "alice")
	if err != nil || !reflect.DeepEqual(got, alice) {
		t.Fatalf("Verify(alice) = %+v, %v; want %+v", got, err, alice)
	}
	got.Subject, got.Roles[0] = "changed", "platform-admin"
	if again, _ := v.Verify(t.Context(), "alice"); again.Subject != "alice" || again.Roles[0] != "tenant-admin" {
		t.Errorf("changing returned claims changed the verifier's: %+v", again)
	}

	for _, raw := range []string{"mallory", "ALICE", "not-a-token", ""} {
		c, err := v.Verify(t.Context(), raw)
		var e *errs.Error
		if c != nil || !errors.As(err, &e) || e.Kind != errs.KindUnauthenticated || e.Reason != authn.ReasonTokenInvalid {
			t.Errorf("Verify(%q) = %+v, %v; want Unauthenticated %s", raw, c, err, authn.ReasonTokenInvalid)
		}
	}
}

// whoami answers UnaryCall with the caller's principal id as the username.
type whoami struct {
	testpb.UnimplementedTestServiceServer
}

func (whoami) UnaryCall(ctx context.Context, _ *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	p, ok := authn.PrincipalFrom(ctx)
	if !ok {
		return nil, errors.New("no principal in context")
	}
	return &testpb.SimpleResponse{Username: p.ID + "@" + p.Tenant}, nil
}

func TestHelpersBehindAPlatformServer(t *testing.T) {
	s := grpcx.NewServer(grpcx.ServerConfig{
		Logger:   slog.New(slog.DiscardHandler),
		Verifier: testkit.StaticVerifier(map[string]*authn.Claims{"alice": {Subject: "alice", Tenant: "acme"}}),
	})
	testpb.RegisterTestServiceServer(s, whoami{})
	client := testpb.NewTestServiceClient(testkit.ServeGRPC(t, s))

	tests := []struct {
		name       string
		token      string
		wantCode   codes.Code
		wantReason string
		wantUser   string
	}{
		{name: "no token", token: "", wantCode: codes.Unauthenticated, wantReason: authn.ReasonTokenMissing},
		{name: "unknown token", token: "bob", wantCode: codes.Unauthenticated, wantReason: authn.ReasonTokenInvalid},
		{name: "known token", token: "alice", wantCode: codes.OK, wantUser: "alice@acme"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := client.UnaryCall(testkit.WithBearer(t.Context(), tt.token), &testpb.SimpleRequest{})
			if got := status.Code(err); got != tt.wantCode {
				t.Fatalf("UnaryCall: %v, want %s", err, tt.wantCode)
			}
			if err != nil {
				if got := errs.FromStatus(err).Reason; got != tt.wantReason {
					t.Fatalf("reason = %q, want %q", got, tt.wantReason)
				}
				return
			}
			if resp.GetUsername() != tt.wantUser {
				t.Fatalf("username = %q, want %q", resp.GetUsername(), tt.wantUser)
			}
		})
	}
}
