package authn

import (
	"context"
	"crypto/tls"
	"errors"
	"net/http"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/agentid/agentid/pkg/errs"
)

// WithMethodScopes requires, per full gRPC method name ("/pkg.Service/Method"), the scopes a
// token must grant, in addition to WithRequiredScopes.
func WithMethodScopes(scopes map[string][]string) ServerOption {
	return func(o *serverOptions) {
		o.methodScopes = make(map[string][]string, len(scopes))
		for m, s := range scopes {
			o.methodScopes[m] = append([]string(nil), s...)
		}
	}
}

// WithPublicMethods lets the given full gRPC method names through without a token (e.g. health
// checks); they are neither authenticated nor reported.
func WithPublicMethods(methods ...string) ServerOption {
	return func(o *serverOptions) {
		o.publicMethods = make(map[string]bool, len(methods))
		for _, m := range methods {
			o.publicMethods[m] = true
		}
	}
}

// WithDPoPBoundMethods accepts DPoP-bound tokens (cnf.jkt) presented as Bearer tokens on the given
// full gRPC method names. The gRPC interceptors do not check DPoP proofs, so by default they refuse
// DPoP-bound tokens (ReasonDPoPUnsupported); list a method only when something in front of the server
// has checked the proof.
func WithDPoPBoundMethods(methods ...string) ServerOption {
	return func(o *serverOptions) {
		o.dpopMethods = make(map[string]bool, len(methods))
		for _, m := range methods {
			o.dpopMethods[m] = true
		}
	}
}

// UnaryServerInterceptor returns a gRPC interceptor for third-party resource servers that makes the
// checks of Middleware on unary calls: one "authorization: Bearer <token>" metadata entry verified
// by v, certificate binding against the peer's TLS certificate, allowed tenants, and the scopes of
// WithRequiredScopes and WithMethodScopes. DPoP proofs are not checked over gRPC: DPoP-bound tokens
// are refused unless the method is listed in WithDPoPBoundMethods. Refusals are Unauthenticated,
// PermissionDenied (insufficient scope) or Unavailable (cannot verify now), with a message that does
// not say why; every decision is recorded (WithAccessRecorder). The platform's own servers use
// pkg/grpcx instead.
func UnaryServerInterceptor(v Verifier, opts ...ServerOption) grpc.UnaryServerInterceptor {
	g := &grpcGuard{v: v, o: newServerOptions(opts)}
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if g.o.publicMethods[info.FullMethod] {
			return handler(ctx, req)
		}
		st := &requestState{o: g.o, start: g.o.now()}
		ctx = context.WithValue(ctx, stateKey{}, st)
		actx, err := g.authenticate(ctx, info.FullMethod, st)
		if err != nil {
			g.record(ctx, st, info.FullMethod, "unary", err, 0)
			return nil, err
		}
		resp, err := handler(actx, req)
		var size int64
		if m, ok := resp.(proto.Message); ok && err == nil {
			size = int64(proto.Size(m))
		}
		g.record(ctx, st, info.FullMethod, "unary", err, size)
		return resp, err
	}
}

// StreamServerInterceptor returns the streaming counterpart of UnaryServerInterceptor; the access
// event counts the bytes of every message sent.
func StreamServerInterceptor(v Verifier, opts ...ServerOption) grpc.StreamServerInterceptor {
	g := &grpcGuard{v: v, o: newServerOptions(opts)}
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if g.o.publicMethods[info.FullMethod] {
			return handler(srv, ss)
		}
		st := &requestState{o: g.o, start: g.o.now()}
		ctx := context.WithValue(ss.Context(), stateKey{}, st)
		actx, err := g.authenticate(ctx, info.FullMethod, st)
		if err != nil {
			g.record(ctx, st, info.FullMethod, "stream", err, 0)
			return err
		}
		cs := &countingStream{ServerStream: ss, ctx: actx}
		err = handler(srv, cs)
		g.record(ctx, st, info.FullMethod, "stream", err, cs.bytes)
		return err
	}
}

type grpcGuard struct {
	v Verifier
	o *serverOptions
}

// The errors a gRPC caller sees: the kind of refusal, never why.
var (
	errGRPCUnauthenticated = errs.Unauthenticated("UNAUTHENTICATED", "access token is missing or invalid")
	errGRPCScope           = errs.PermissionDenied(ReasonInsufficientScope, "insufficient scope")
	errGRPCUnavailable     = errs.Unavailable("UNAVAILABLE", "cannot verify the access token right now, retry later", nil)
)

// authenticate verifies the call's token; on refusal it records why in st and returns the error
// for the caller.
func (g *grpcGuard) authenticate(ctx context.Context, method string, st *requestState) (context.Context, error) {
	refuse := func(status int, reason string, cause error) error {
		st.note(refusal{status: status, reason: reason, cause: cause})
		switch status {
		case http.StatusServiceUnavailable:
			return errGRPCUnavailable
		case http.StatusForbidden:
			return errGRPCScope
		}
		return errGRPCUnauthenticated
	}
	md, _ := metadata.FromIncomingContext(ctx)
	values := md.Get("authorization")
	switch {
	case len(values) == 0:
		return nil, refuse(http.StatusUnauthorized, ReasonTokenMissing, nil)
	case len(values) > 1:
		return nil, refuse(http.StatusUnauthorized, ReasonTokenScheme, errors.New("more than one authorization entry"))
	}
	scheme, raw, _ := strings.Cut(strings.TrimSpace(values[0]), " ")
	raw = strings.TrimSpace(raw)
	switch {
	case strings.EqualFold(scheme, DPoPTokenType):
		return nil, refuse(http.StatusUnauthorized, ReasonDPoPUnsupported, errors.New("DPoP proofs are not checked over gRPC"))
	case !strings.EqualFold(scheme, "Bearer"):
		return nil, refuse(http.StatusUnauthorized, ReasonTokenScheme, nil)
	case raw == "":
		return nil, refuse(http.StatusUnauthorized, ReasonTokenMissing, nil)
	case g.v == nil:
		return nil, refuse(http.StatusServiceUnavailable, ReasonVerifierMissing, errors.New("the interceptor was given no Verifier"))
	}
	claims, err := g.v.Verify(ctx, raw)
	if err != nil {
		rf := refusalOf(err, false)
		return nil, refuse(rf.status, rf.reason, err)
	}
	st.claims, st.binding = claims, BindingBearer
	if claims.Confirmation != nil && claims.Confirmation.JKT != "" {
		if !g.o.dpopMethods[method] {
			return nil, refuse(http.StatusUnauthorized, ReasonDPoPUnsupported, errors.New("DPoP-bound token over gRPC"))
		}
		st.binding = BindingDPoP
	}
	if err := CheckCertificateBinding(claims, peerTLS(ctx)); err != nil {
		return nil, refuse(http.StatusUnauthorized, ReasonCertificateBinding, err)
	}
	if claims.Confirmation != nil && claims.Confirmation.X5TS256 != "" && st.binding == BindingBearer {
		st.binding = BindingMTLS
	}
	if err := CheckTenant(claims, g.o.tenants); err != nil {
		return nil, refuse(http.StatusUnauthorized, ReasonTenantNotAllowed, err)
	}
	if err := CheckScopes(claims, g.o.scopes...); err != nil {
		return nil, refuse(http.StatusForbidden, ReasonInsufficientScope, err)
	}
	if err := CheckScopes(claims, g.o.methodScopes[method]...); err != nil {
		return nil, refuse(http.StatusForbidden, ReasonInsufficientScope, err)
	}
	return WithPrincipal(WithClaims(ctx, claims), PrincipalFromClaims(claims)), nil
}

// peerTLS returns the TLS state of the call's connection, if it is TLS.
func peerTLS(ctx context.Context) *tls.ConnectionState {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	if info, ok := p.AuthInfo.(credentials.TLSInfo); ok {
		return &info.State
	}
	return nil
}

func (g *grpcGuard) record(ctx context.Context, st *requestState, method, action string, err error, size int64) {
	if g.o.recorder == nil {
		return
	}
	md, _ := metadata.FromIncomingContext(ctx)
	source := ""
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		source = remoteHost(p.Addr.String())
	}
	g.o.recorder.Record(st.event(method, action, int(status.Code(err)), size, source,
		firstValue(md.Get("x-request-id")), firstValue(md.Get("traceparent"))))
}

func firstValue(values []string) string {
	if len(values) == 0 {
		return ""
	}
	return values[0]
}

// countingStream counts the bytes of the messages a stream sends, and carries the authenticated
// context.
type countingStream struct {
	grpc.ServerStream
	ctx   context.Context
	bytes int64
}

func (s *countingStream) Context() context.Context { return s.ctx }

func (s *countingStream) SendMsg(m any) error {
	err := s.ServerStream.SendMsg(m)
	if pm, ok := m.(proto.Message); ok && err == nil {
		s.bytes += int64(proto.Size(pm))
	}
	return err
}
