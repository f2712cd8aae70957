package authn_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/agentid/agentid/pkg/authn"
)

type fakeServerStream struct {
	grpc.ServerStream
	ctx  context.Context
	sent int
}

func (s *fakeServerStream) Context() context.Context { return s.ctx }
func (s *fakeServerStream) SendMsg(any) error        { s.sent++; return nil }

func TestServerInterceptors(t *testing.T) {
	rs := newResourceServer(t, false)
	v, err := authn.NewJWKSVerifier(authn.JWKSVerifierConfig{
		IssuerBaseURL: rs.fi.srv.URL, Audience: rsAudience, HTTPClient: rs.fi.srv.Client(), Now: rs.clk.Now, Revocations: rs.deny,
	})
	if err != nil {
		t.Fatal(err)
	}
	const (
		read   = "/files.v1.Files/Read"
		write  = "/files.v1.Files/Write"
		health = "/grpc.health.v1.Health/Check"
		proxy  = "/files.v1.Files/ReadBehindProxy"
	)
	sink := &eventSink{}
	opts := []authn.ServerOption{
		authn.WithAccessRecorder(sink), authn.WithAllowedTenants("acme"), authn.WithServerClock(rs.clk.Now),
		authn.WithMethodScopes(map[string][]string{write: {"files.write"}}),
		authn.WithPublicMethods(health), authn.WithDPoPBoundMethods(proxy),
	}
	unary := authn.UnaryServerInterceptor(v, opts...)
	stream := authn.StreamServerInterceptor(v, opts...)
	valid := rs.token(t, nil)
	bound := rs.token(t, func(c *authn.Claims) { c.Confirmation = &authn.Confirmation{JKT: "thumb"} })

	tests := []struct {
		name       string
		method     string
		auth       string
		wantCode   codes.Code
		wantReason string
	}{
		{"allowed", read, "Bearer " + valid, codes.OK, ""},
		{"public method without token", health, "", codes.OK, ""},
		{"no token", read, "", codes.Unauthenticated, authn.ReasonTokenMissing},
		{"bad scheme", read, "Basic abc", codes.Unauthenticated, authn.ReasonTokenScheme},
		{"expired", read, "Bearer " + rs.token(t, func(c *authn.Claims) { c.Expiry = baseTime.Add(-10 * time.Minute) }), codes.Unauthenticated, authn.ReasonTokenExpired},
		{"method scope missing", write, "Bearer " + valid, codes.PermissionDenied, authn.ReasonInsufficientScope},
		{"DPoP scheme over gRPC", read, "DPoP " + bound, codes.Unauthenticated, authn.ReasonDPoPUnsupported},
		{"DPoP-bound token over gRPC", read, "Bearer " + bound, codes.Unauthenticated, authn.ReasonDPoPUnsupported},
		{"DPoP-bound token on a configured method", proxy, "Bearer " + bound, codes.OK, ""},
		{"certificate-bound token without TLS", read, "Bearer " + rs.token(t, func(c *authn.Claims) {
			c.Confirmation = &authn.Confirmation{X5TS256: "abc"}
		}), codes.Unauthenticated, authn.ReasonCertificateBinding},
	}
	for _, tc := range tests {
		for _, kind := range []string{"unary", "stream"} {
			t.Run(tc.name+"/"+kind, func(t *testing.T) {
				id := strings.ReplaceAll("grpc-"+kind+"-"+tc.name, " ", "_")
				md := metadata.Pairs("x-request-id", id)
				if tc.auth != "" {
					md.Set("authorization", tc.auth)
				}
				ctx := metadata.NewIncomingContext(t.Context(), md)
				ctx = peer.NewContext(ctx, &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(10, 0, 0, 7), Port: 4242}})
				reached := false
				var err error
				if kind == "unary" {
					_, err = unary(ctx, &emptypb.Empty{}, &grpc.UnaryServerInfo{FullMethod: tc.method}, func(ctx context.Context, _ any) (any, error) {
						_, reached = authn.PrincipalFrom(ctx)
						return &emptypb.Empty{}, nil
					})
				} else {
					err = stream(nil, &fakeServerStream{ctx: ctx}, &grpc.StreamServerInfo{FullMethod: tc.method}, func(_ any, ss grpc.ServerStream) error {
						_, reached = authn.PrincipalFrom(ss.Context())
						return ss.SendMsg(&emptypb.Empty{})
					})
				}
				if got := status.Code(err); got != tc.wantCode {
					t.Fatalf("code %v (%v), want %v", got, err, tc.wantCode)
				}
				if tc.method == health {
					return // public: neither authenticated nor reported
				}
				if reached != (tc.wantCode == codes.OK) {
					t.Errorf("handler reached with a principal = %v, want %v", reached, tc.wantCode == codes.OK)
				}
				if tc.wantReason != "" && status.Convert(err).Message() == tc.wantReason {
					t.Errorf("the caller is told the reason %s", tc.wantReason)
				}
				ev := sink.waitFor(t, id)
				if ev.Reason != tc.wantReason || ev.Allowed != (tc.wantCode == codes.OK) || ev.Status != int(tc.wantCode) ||
					ev.Resource != tc.method || ev.Action != kind || ev.SourceAddress != "10.0.0.7" {
					t.Errorf("event %+v, want reason %q, status %d, resource %s, action %s from 10.0.0.7", ev, tc.wantReason, tc.wantCode, tc.method, kind)
				}
			})
		}
	}
}
