package grpcx

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"log/slog"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"time"
	"weak"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/ratelimit"
)

// ServerConfig configures NewServer.
type ServerConfig struct {
	// Logger receives access logs, internal error causes and panics; default slog.Default().
	Logger *slog.Logger
	// Verifier checks bearer tokens. Without one every non-public method answers Unauthenticated.
	Verifier authn.Verifier
	// PublicMethods are full method names ("/pkg.Service/Method") callable without a token. Health and
	// reflection are always public.
	PublicMethods []string
	// Registry, if set, receives the grpc_server_handled_total and grpc_server_handling_seconds metrics.
	Registry prometheus.Registerer
	// Health is the health server to register; default a new one (see HealthServer).
	Health *health.Server
	// Reflection registers the gRPC reflection service (public, like health). Off by default: it
	// lists every method to anyone who can connect; `agentid dev` and --reflection turn it on.
	Reflection bool
	// Limits bound messages, streams and keepalive pings; zero fields take the defaults.
	Limits ServerLimits
	// PrincipalLimiter, if set, limits the calls of each authenticated principal (by tenant and
	// id); over the limit a call fails ResourceExhausted (reason RATE_LIMITED) with a RetryInfo.
	// Public methods are not limited.
	PrincipalLimiter *ratelimit.Limiter
	// StreamRecheckInterval is how often the bearer token of an open stream is verified again (a
	// revoked token ends the stream Unauthenticated TOKEN_REVOKED); default
	// DefaultStreamRecheckInterval. Every stream also ends at its token's exp (TOKEN_EXPIRED).
	StreamRecheckInterval time.Duration
}

// ReasonRateLimited is the ErrorInfo reason of a call refused by ServerConfig.PrincipalLimiter.
const ReasonRateLimited = "RATE_LIMITED"

// Defaults of ServerLimits.
const (
	// DefaultMaxRecvMsgSize is the largest request message accepted (gRPC's own default).
	DefaultMaxRecvMsgSize = 4 << 20
	// DefaultMaxSendMsgSize is the largest response message sent.
	DefaultMaxSendMsgSize = 16 << 20
	// DefaultMaxConcurrentStreams is how many calls one connection may have open at once.
	DefaultMaxConcurrentStreams = 256
	// DefaultKeepaliveMinTime is the shortest interval between a client's keepalive pings; a client
	// pinging more often is disconnected (GOAWAY too_many_pings).
	DefaultKeepaliveMinTime = 10 * time.Second
	// DefaultKeepaliveTime is how long a connection may be silent before the server pings it.
	DefaultKeepaliveTime = time.Minute
	// DefaultKeepaliveTimeout is how long the server waits for a ping's answer before closing.
	DefaultKeepaliveTimeout = 20 * time.Second
	// DefaultMaxConnectionIdle closes a connection without calls for this long (clients reconnect).
	DefaultMaxConnectionIdle = 15 * time.Minute
)

// ServerLimits bound what one client may make the server hold. Zero fields take the defaults.
type ServerLimits struct {
	// MaxRecvMsgSize is the largest request message in bytes; larger ones fail ResourceExhausted.
	MaxRecvMsgSize int
	// MaxSendMsgSize is the largest response message in bytes.
	MaxSendMsgSize int
	// MaxConcurrentStreams is how many calls one connection may have open at once.
	MaxConcurrentStreams uint32
	// KeepaliveMinTime is the shortest interval allowed between a client's keepalive pings.
	KeepaliveMinTime time.Duration
	// KeepaliveTime is how long a connection may be silent before the server pings it.
	KeepaliveTime time.Duration
	// KeepaliveTimeout is how long the server waits for a ping's answer before closing.
	KeepaliveTimeout time.Duration
	// MaxConnectionIdle closes a connection that has had no call for this long.
	MaxConnectionIdle time.Duration
}

// withDefaults fills the zero fields.
func (l ServerLimits) withDefaults() ServerLimits {
	set := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	if l.MaxRecvMsgSize <= 0 {
		l.MaxRecvMsgSize = DefaultMaxRecvMsgSize
	}
	if l.MaxSendMsgSize <= 0 {
		l.MaxSendMsgSize = DefaultMaxSendMsgSize
	}
	if l.MaxConcurrentStreams == 0 {
		l.MaxConcurrentStreams = DefaultMaxConcurrentStreams
	}
	set(&l.KeepaliveMinTime, DefaultKeepaliveMinTime)
	set(&l.KeepaliveTime, DefaultKeepaliveTime)
	set(&l.KeepaliveTimeout, DefaultKeepaliveTimeout)
	set(&l.MaxConnectionIdle, DefaultMaxConnectionIdle)
	return l
}

// options are the server options of l.
func (l ServerLimits) options() []grpc.ServerOption {
	l = l.withDefaults()
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(l.MaxRecvMsgSize),
		grpc.MaxSendMsgSize(l.MaxSendMsgSize),
		grpc.MaxConcurrentStreams(l.MaxConcurrentStreams),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: l.KeepaliveMinTime, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: l.MaxConnectionIdle,
			Time: l.KeepaliveTime, Timeout: l.KeepaliveTimeout}),
	}
}

// alwaysPublic are the service prefixes that never require a token.
var alwaysPublic = []string{
	"/" + healthpb.Health_ServiceDesc.ServiceName + "/",
	"/grpc.reflection.v1.ServerReflection/",
	"/grpc.reflection.v1alpha.ServerReflection/",
}

// NewServer builds a gRPC server with the platform's interceptors, limits (ServerConfig.Limits),
// health and, if ServerConfig.Reflection, reflection. Options in opts come last and win. The unary
// and stream interceptor chains run, outermost first:
//
//  1. request id: the caller's "x-request-id" or a new UUIDv7, in the context and echoed as a
//     response header;
//  2. access log and metrics: one JSON line per call (method, code, duration, request id,
//     principal, tenant), so every outcome below is logged with its final code;
//  3. error mapping: errs.ToStatus, logging internal causes with the request id;
//  4. panic recovery: logs the stack and fails the call with Internal; the server keeps serving;
//  5. authentication: "authorization: Bearer <token>" checked by the Verifier, the principal put in
//     the context with authn.WithPrincipal;
//  6. with a PrincipalLimiter, the principal's rate limit.
//
// Register services on the returned server, then call MarkServing, or let service.Run drive the
// health server from readiness (NOT_SERVING until every component is ready).
func NewServer(cfg ServerConfig, opts ...grpc.ServerOption) *grpc.Server {
	ic := newInterceptors(cfg)
	unary := []grpc.UnaryServerInterceptor{ic.unaryRequestID, ic.unaryAccessLog, ic.unaryMapErrors, ic.unaryRecover, ic.unaryAuthenticate}
	stream := []grpc.StreamServerInterceptor{ic.streamRequestID, ic.streamAccessLog, ic.streamMapErrors, ic.streamRecover, ic.streamAuthenticate}
	if ic.limiter != nil {
		unary = append(unary, ic.unaryRateLimit)
		stream = append(stream, ic.streamRateLimit)
	}
	all := append([]grpc.ServerOption{
		grpc.StatsHandler(otelgrpc.NewServerHandler()),
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(stream...),
	}, cfg.Limits.options()...)
	all = append(all, opts...)
	s := grpc.NewServer(all...)

	hs := cfg.Health
	if hs == nil {
		hs = health.NewServer()
	}
	healthpb.RegisterHealthServer(s, hs)
	if cfg.Reflection {
		reflection.Register(s)
	}
	rememberHealth(s, hs)
	if cfg.Verifier == nil {
		ic.log.Warn("grpc server has no token verifier: every non-public method will answer Unauthenticated")
	}
	return s
}

var healthServers sync.Map // weak.Pointer[grpc.Server] -> *health.Server

func rememberHealth(s *grpc.Server, hs *health.Server) {
	key := weak.Make(s)
	healthServers.Store(key, hs)
	runtime.AddCleanup(s, func(k weak.Pointer[grpc.Server]) { healthServers.Delete(k) }, key)
}

// HealthServer returns the health server NewServer registered on s, or nil for other servers. Use it
// to report NOT_SERVING for a service whose dependency is down, or Shutdown on graceful stop.
func HealthServer(s *grpc.Server) *health.Server {
	hs, _ := healthServers.Load(weak.Make(s))
	h, _ := hs.(*health.Server)
	return h
}

// MarkServing sets the overall status ("") and that of every service registered on s to SERVING.
func MarkServing(s *grpc.Server) {
	hs := HealthServer(s)
	if hs == nil {
		return
	}
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	for name := range s.GetServiceInfo() {
		hs.SetServingStatus(name, healthpb.HealthCheckResponse_SERVING)
	}
}

type interceptors struct {
	log      *slog.Logger
	verifier authn.Verifier
	public   map[string]bool
	metrics  *metrics
	limiter  *ratelimit.Limiter
	// streamRecheck is how often an open stream's token is verified again.
	streamRecheck time.Duration
}

func newInterceptors(cfg ServerConfig) *interceptors {
	ic := &interceptors{log: cfg.Logger, verifier: cfg.Verifier, public: make(map[string]bool), limiter: cfg.PrincipalLimiter}
	if ic.log == nil {
		ic.log = slog.Default()
	}
	for _, m := range cfg.PublicMethods {
		ic.public[m] = true
	}
	if cfg.Registry != nil {
		ic.metrics = newMetrics(cfg.Registry)
	}
	ic.streamRecheck = cfg.StreamRecheckInterval
	if ic.streamRecheck <= 0 {
		ic.streamRecheck = DefaultStreamRecheckInterval
	}
	return ic
}

func (ic *interceptors) isPublic(method string) bool {
	if ic.public[method] {
		return true
	}
	for _, p := range alwaysPublic {
		if strings.HasPrefix(method, p) {
			return true
		}
	}
	return false
}

// call is the per-call state shared by the interceptors; the authentication step fills in the
// principal for the access log, which runs outside it.
type call struct {
	principal *authn.Principal
}

type callKey struct{}

func callFrom(ctx context.Context) *call {
	c, _ := ctx.Value(callKey{}).(*call)
	return c
}

type serverStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *serverStream) Context() context.Context { return s.ctx }

func withContext(ss grpc.ServerStream, ctx context.Context) grpc.ServerStream {
	return &serverStream{ServerStream: ss, ctx: ctx}
}

// 1. request id

func (ic *interceptors) startCall(ctx context.Context) (context.Context, string) {
	id := incomingRequestID(ctx)
	ctx = WithRequestID(ctx, id)
	return context.WithValue(ctx, callKey{}, &call{}), id
}

func (ic *interceptors) unaryRequestID(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	ctx, id := ic.startCall(ctx)
	_ = grpc.SetHeader(ctx, metadata.Pairs(RequestIDHeader, id))
	return handler(ctx, req)
}

func (ic *interceptors) streamRequestID(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx, id := ic.startCall(ss.Context())
	_ = ss.SetHeader(metadata.Pairs(RequestIDHeader, id))
	return handler(srv, withContext(ss, ctx))
}

// 2. access log and metrics

func (ic *interceptors) unaryAccessLog(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := handler(ctx, req)
	ic.logCall(ctx, info.FullMethod, start, err)
	return resp, err
}

func (ic *interceptors) streamAccessLog(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	start := time.Now()
	err := handler(srv, ss)
	ic.logCall(ss.Context(), info.FullMethod, start, err)
	return err
}

func (ic *interceptors) logCall(ctx context.Context, method string, start time.Time, err error) {
	elapsed := time.Since(start)
	code := status.Code(err)
	if ic.metrics != nil {
		ic.metrics.observe(method, code, elapsed)
	}
	level := slog.LevelInfo
	switch {
	case code == codes.Internal || code == codes.Unknown || code == codes.DataLoss:
		level = slog.LevelError
	case code == codes.Unavailable:
		level = slog.LevelWarn
	case strings.HasPrefix(method, alwaysPublic[0]):
		level = slog.LevelDebug // health probes would drown everything else
	}
	if !ic.log.Enabled(ctx, level) {
		return
	}
	attrs := []slog.Attr{
		slog.String("method", method),
		slog.String("code", code.String()),
		slog.Float64("duration_ms", float64(elapsed.Microseconds())/1000),
		slog.String("request_id", RequestID(ctx)),
	}
	if c := callFrom(ctx); c != nil && c.principal != nil {
		attrs = append(attrs,
			slog.String("principal", c.principal.ID),
			slog.String("principal_kind", c.principal.Kind),
			slog.String("tenant", c.principal.Tenant))
	}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		attrs = append(attrs, slog.String("peer", p.Addr.String()))
	}
	ic.log.LogAttrs(ctx, level, "grpc call", attrs...)
}

// 3. error mapping

func (ic *interceptors) unaryMapErrors(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	resp, err := handler(ctx, req)
	if err != nil {
		return nil, ic.mapError(ctx, info.FullMethod, err)
	}
	return resp, nil
}

func (ic *interceptors) streamMapErrors(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if err := handler(srv, ss); err != nil {
		return ic.mapError(ss.Context(), info.FullMethod, err)
	}
	return nil
}

// mapError converts err to the caller's status and logs what the caller does not get to see.
func (ic *interceptors) mapError(ctx context.Context, method string, err error) error {
	st := errs.ToStatus(err)
	switch {
	case st.Code() == codes.Internal || st.Code() == codes.Unknown:
		ic.log.LogAttrs(ctx, slog.LevelError, "internal error",
			slog.String("method", method), slog.String("request_id", RequestID(ctx)), slog.String("error", err.Error()))
	default:
		var e *errs.Error
		if errors.As(err, &e) && e.Cause != nil {
			ic.log.LogAttrs(ctx, slog.LevelWarn, "request failed",
				slog.String("method", method), slog.String("request_id", RequestID(ctx)),
				slog.String("code", st.Code().String()), slog.String("error", err.Error()))
		}
	}
	return st.Err()
}

// 4. panic recovery

func (ic *interceptors) recovered(ctx context.Context, method string, r any) error {
	ic.log.LogAttrs(ctx, slog.LevelError, "panic in grpc handler",
		slog.String("method", method), slog.String("request_id", RequestID(ctx)),
		slog.String("panic", fmt.Sprint(r)), slog.String("stack", string(debug.Stack())))
	return errs.Internal(fmt.Errorf("panic: %v", r))
}

func (ic *interceptors) unaryRecover(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	defer func() {
		if r := recover(); r != nil {
			resp, err = nil, ic.recovered(ctx, info.FullMethod, r)
		}
	}()
	return handler(ctx, req)
}

func (ic *interceptors) streamRecover(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = ic.recovered(ss.Context(), info.FullMethod, r)
		}
	}()
	return handler(srv, ss)
}

// 5. authentication

func (ic *interceptors) authenticate(ctx context.Context, method string) (context.Context, error) {
	if ic.isPublic(method) {
		return ctx, nil
	}
	raw, err := bearerToken(ctx)
	if err != nil {
		return nil, err
	}
	if ic.verifier == nil {
		return nil, errs.Unauthenticated(authn.ReasonTokenInvalid, "this server cannot verify access tokens")
	}
	claims, err := ic.verifier.Verify(ctx, raw)
	if err != nil {
		var e *errs.Error
		if errors.As(err, &e) {
			return nil, err
		}
		return nil, errs.Unauthenticated(authn.ReasonTokenInvalid, "access token is invalid").WithCause(err)
	}
	if err := checkSenderConstraint(ctx, claims); err != nil {
		return nil, err
	}
	p := authn.PrincipalFromClaims(claims)
	if p == nil {
		return nil, errs.Unauthenticated(authn.ReasonTokenInvalid, "access token is invalid")
	}
	if c := callFrom(ctx); c != nil {
		c.principal = p
	}
	return authn.WithPrincipal(ctx, p), nil
}

// checkSenderConstraint refuses a sender-constrained token whose sender is not proven: a DPoP-bound
// token (cnf.jkt), since gRPC calls carry no DPoP proof, and a certificate-bound token (cnf x5t#S256)
// not presented over TLS with that client certificate.
func checkSenderConstraint(ctx context.Context, claims *authn.Claims) error {
	if claims.Confirmation != nil && claims.Confirmation.JKT != "" {
		return errs.Unauthenticated(authn.ReasonDPoPUnsupported, "access token is invalid").
			WithCause(errors.New("DPoP-bound token over gRPC, where DPoP proofs are not checked"))
	}
	var state *tls.ConnectionState
	if p, ok := peer.FromContext(ctx); ok {
		if info, ok := p.AuthInfo.(credentials.TLSInfo); ok {
			state = &info.State
		}
	}
	return authn.CheckCertificateBinding(claims, state)
}

// bearerToken returns the token of the single "authorization: Bearer <token>" header.
func bearerToken(ctx context.Context) (string, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	values := md.Get("authorization")
	if len(values) == 0 {
		return "", errs.Unauthenticated(authn.ReasonTokenMissing, "missing bearer token")
	}
	if len(values) > 1 {
		return "", errs.Unauthenticated(authn.ReasonTokenInvalid, "more than one authorization header")
	}
	scheme, token, ok := strings.Cut(strings.TrimSpace(values[0]), " ")
	token = strings.TrimSpace(token)
	if !ok || !strings.EqualFold(scheme, "bearer") || token == "" {
		return "", errs.Unauthenticated(authn.ReasonTokenMissing, "missing bearer token")
	}
	return token, nil
}

func (ic *interceptors) unaryAuthenticate(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	ctx, err := ic.authenticate(ctx, info.FullMethod)
	if err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

// streamAuthenticate authenticates a stream and, unless its method is public, keeps it only while its
// token would still be accepted (guardStream): the stream ends at the token's exp and when a later
// verification refuses the token.
func (ic *interceptors) streamAuthenticate(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx, err := ic.authenticate(ss.Context(), info.FullMethod)
	if err != nil {
		return err
	}
	if ic.isPublic(info.FullMethod) {
		return handler(srv, withContext(ss, ctx))
	}
	return ic.guardStream(ctx, func(ctx context.Context) error { return handler(srv, withContext(ss, ctx)) })
}

// 6. rate limit per principal

// rateLimit refuses a call of a principal over its limit; public calls have no principal and pass.
func (ic *interceptors) rateLimit(ctx context.Context) error {
	p, ok := authn.PrincipalFrom(ctx)
	if !ok {
		return nil
	}
	if ok, wait := ic.limiter.Allow(p.Tenant + "/" + p.ID); !ok {
		return errs.ResourceExhausted(ReasonRateLimited, "too many calls, retry later").WithRetryAfter(wait)
	}
	return nil
}

func (ic *interceptors) unaryRateLimit(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := ic.rateLimit(ctx); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

func (ic *interceptors) streamRateLimit(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if err := ic.rateLimit(ss.Context()); err != nil {
		return err
	}
	return handler(srv, ss)
}
