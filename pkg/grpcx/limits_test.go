package grpcx_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"

	"golang.org/x/oauth2"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/grpcx"
	"github.com/agentid/agentid/pkg/ratelimit"
	"github.com/agentid/agentid/pkg/testkit"
)

const echoService = "agentid.test.v1.Echo"

type echoServer interface{}

// echoDesc is a public service that answers a string of the requested length.
var echoDesc = grpc.ServiceDesc{
	ServiceName: echoService,
	HandlerType: (*echoServer)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Echo",
		Handler: func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
			in := new(wrapperspb.Int64Value)
			if err := dec(in); err != nil {
				return nil, err
			}
			info := &grpc.UnaryServerInfo{Server: srv, FullMethod: "/" + echoService + "/Echo"}
			return interceptor(ctx, in, info, func(context.Context, any) (any, error) {
				return wrapperspb.String(strings.Repeat("x", int(in.GetValue()))), nil
			})
		},
	}},
}

// limitServer serves echoDesc over bufconn with cfg and returns a client connection.
func limitServer(t *testing.T, cfg grpcx.ServerConfig) *grpc.ClientConn {
	t.Helper()
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.PublicMethods = []string{"/" + echoService + "/Echo"}
	srv := grpcx.NewServer(cfg)
	srv.RegisterService(&echoDesc, struct{}{})
	lis := bufconn.Listen(1 << 20)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	conn, err := grpcx.Dial("passthrough:///localhost", nil,
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(64<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func TestGRPCMessageTooLarge(t *testing.T) {
	tests := []struct {
		name     string
		limits   grpcx.ServerLimits
		request  int // bytes of padding in the request
		response int64
		wantCode codes.Code
	}{
		{name: "small request and response", limits: grpcx.ServerLimits{MaxRecvMsgSize: 1024, MaxSendMsgSize: 1024}, request: 100, response: 100, wantCode: codes.OK},
		{name: "request over the limit", limits: grpcx.ServerLimits{MaxRecvMsgSize: 1024}, request: 2048, response: 1, wantCode: codes.ResourceExhausted},
		{name: "response over the limit", limits: grpcx.ServerLimits{MaxSendMsgSize: 1024}, request: 1, response: 2048, wantCode: codes.ResourceExhausted},
		{name: "default request limit", request: grpcx.DefaultMaxRecvMsgSize + 64, response: 1, wantCode: codes.ResourceExhausted},
		{name: "default response limit", request: 1, response: grpcx.DefaultMaxSendMsgSize + 1, wantCode: codes.ResourceExhausted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn := limitServer(t, grpcx.ServerConfig{Limits: tt.limits})
			// The padding travels as unknown fields of the request: the server must decode the whole message.
			in := wrapperspb.Int64(tt.response)
			in.ProtoReflect().SetUnknown(padding(tt.request))
			out := new(wrapperspb.StringValue)
			err := conn.Invoke(context.Background(), "/"+echoService+"/Echo", in, out)
			if status.Code(err) != tt.wantCode {
				t.Fatalf("code %v (%v), want %v", status.Code(err), err, tt.wantCode)
			}
			if err == nil && int64(len(out.GetValue())) != tt.response {
				t.Fatalf("response of %d bytes, want %d", len(out.GetValue()), tt.response)
			}
		})
	}
}

// padding is an unknown bytes field (number 15) of about n bytes.
func padding(n int) []byte {
	if n < 8 {
		return nil
	}
	body := make([]byte, n-8)
	out := []byte{15<<3 | 2}
	for v := uint64(len(body)); ; v >>= 7 {
		if v < 0x80 {
			out = append(out, byte(v))
			break
		}
		out = append(out, byte(v)|0x80)
	}
	return append(out, body...)
}

func TestPrincipalRateLimit(t *testing.T) {
	limiter, err := ratelimit.New(ratelimit.Config{Rate: 0.001, Burst: 2}) // no refill during the test
	if err != nil {
		t.Fatal(err)
	}
	srv := grpcx.NewServer(grpcx.ServerConfig{Logger: slog.New(slog.DiscardHandler), PrincipalLimiter: limiter,
		PublicMethods: []string{"/" + probeService + "/Public"},
		Verifier: testkit.StaticVerifier(map[string]*authn.Claims{
			"alice": {Subject: "alice", ClientID: "alice", Tenant: "acme", Audience: []string{authn.APIAudience}},
			"bob":   {Subject: "bob", ClientID: "bob", Tenant: "acme", Audience: []string{authn.APIAudience}},
		})})
	srv.RegisterService(&probeDesc, probe{})
	lis := bufconn.Listen(1 << 20)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	dial := func(token string) *grpc.ClientConn {
		creds := authn.PerRPCCredentials(oauth2.StaticTokenSource(&oauth2.Token{AccessToken: token}), false)
		if token == "" {
			creds = nil
		}
		conn, err := grpcx.Dial("passthrough:///localhost", creds,
			grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		return conn
	}
	alice, bob, anonymous := dial("alice"), dial("bob"), dial("")
	for range 2 {
		if _, err := call(context.Background(), alice, "Whoami"); err != nil {
			t.Fatalf("call within the burst: %v", err)
		}
	}
	_, err = call(context.Background(), alice, "Whoami")
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("call over the limit: %v, want ResourceExhausted", err)
	}
	if info := errorInfo(err); info == nil || info.GetReason() != grpcx.ReasonRateLimited {
		t.Fatalf("ErrorInfo %v, want reason %s", info, grpcx.ReasonRateLimited)
	}
	var retry *errdetails.RetryInfo
	for _, d := range status.Convert(err).Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			retry = ri
		}
	}
	if retry == nil || retry.GetRetryDelay().AsDuration() <= 0 {
		t.Fatalf("RetryInfo %v, want a positive delay", retry)
	}
	if _, err := call(context.Background(), bob, "Whoami"); err != nil {
		t.Fatalf("another principal: %v", err)
	}
	for range 5 {
		if _, err := call(context.Background(), anonymous, "Public"); err != nil {
			t.Fatalf("public method: %v", err)
		}
	}
}

func TestReflectionOffByDefault(t *testing.T) {
	for _, tt := range []struct {
		name       string
		reflection bool
		wantCode   codes.Code
	}{
		{name: "default", wantCode: codes.Unimplemented},
		{name: "turned on", reflection: true, wantCode: codes.OK},
	} {
		t.Run(tt.name, func(t *testing.T) {
			conn := limitServer(t, grpcx.ServerConfig{Reflection: tt.reflection})
			stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			// A server without reflection may end the stream before the request is sent: Send then
			// answers io.EOF and the status comes from Recv (grpc.ClientStream.SendMsg).
			if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil && !errors.Is(err, io.EOF) {
				t.Fatal(err)
			}
			resp, err := stream.Recv()
			if status.Code(err) != tt.wantCode {
				t.Fatalf("reflection: code %v (%v), want %v", status.Code(err), err, tt.wantCode)
			}
			if err == nil && !strings.Contains(resp.String(), echoService) {
				t.Fatalf("reflection lists %v, want %s", resp, echoService)
			}
		})
	}
}
