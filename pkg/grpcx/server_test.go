package grpcx_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/oauth2"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/grpcx"
)

// probe is a tiny hand-written gRPC service standing in for a protected platform API.
const probeService = "agentid.test.v1.Probe"

type probeServer interface{}

type probe struct{}

func (probe) whoami(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	p, ok := authn.PrincipalFrom(ctx)
	if !ok {
		return nil, errors.New("no principal in context")
	}
	return wrapperspb.String(fmt.Sprintf("%s@%s kind=%s request=%s", p.ID, p.Tenant, p.Kind, grpcx.RequestID(ctx))), nil
}

func (probe) notFound(context.Context, *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	return nil, errs.NotFound("AGENT_NOT_FOUND", "agent not found").WithMetadata("agent", "tenants/acme/agents/a1")
}

func (probe) internal(context.Context, *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	return nil, fmt.Errorf("load projection: %w", errs.Internal(errors.New("nats: password=hunter2 rejected")))
}

func (probe) panics(context.Context, *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	panic("nil map write in handler")
}

func (probe) public(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	_, ok := authn.PrincipalFrom(ctx)
	return wrapperspb.String(fmt.Sprintf("public authenticated=%v", ok)), nil
}

func unary(name string, fn func(context.Context, *wrapperspb.StringValue) (*wrapperspb.StringValue, error)) grpc.MethodDesc {
	return grpc.MethodDesc{
		MethodName: name,
		Handler: func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
			in := new(wrapperspb.StringValue)
			if err := dec(in); err != nil {
				return nil, err
			}
			info := &grpc.UnaryServerInfo{Server: srv, FullMethod: "/" + probeService + "/" + name}
			return interceptor(ctx, in, info, func(ctx context.Context, req any) (any, error) {
				return fn(ctx, req.(*wrapperspb.StringValue))
			})
		},
	}
}

var probeDesc = grpc.ServiceDesc{
	ServiceName: probeService,
	HandlerType: (*probeServer)(nil),
	Methods: []grpc.MethodDesc{
		unary("Whoami", probe{}.whoami),
		unary("NotFound", probe{}.notFound),
		unary("Internal", probe{}.internal),
		unary("Panic", probe{}.panics),
		unary("Public", probe{}.public),
	},
	Streams: []grpc.StreamDesc{{
		StreamName:    "Watch",
		ServerStreams: true,
		Handler: func(_ any, stream grpc.ServerStream) error {
			if err := stream.RecvMsg(new(wrapperspb.StringValue)); err != nil {
				return err
			}
			p, ok := authn.PrincipalFrom(stream.Context())
			if !ok {
				return errors.New("no principal in stream context")
			}
			for i := range 2 {
				if err := stream.SendMsg(wrapperspb.String(fmt.Sprintf("%s#%d", p.ID, i))); err != nil {
					return err
				}
			}
			return nil
		},
	}},
}

// syncBuffer collects log output written concurrently by server goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) lines(t *testing.T) []map[string]any {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(b.buf.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line is not JSON: %q", line)
		}
		out = append(out, m)
	}
	return out
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// env is a running bufconn server with a real JWKS verifier and an issuer key to mint tokens with.
type env struct {
	srv     *grpc.Server
	lis     *bufconn.Listener
	logs    *syncBuffer
	reg     *prometheus.Registry
	key     *ecdsa.PrivateKey
	issuer  string
	baseURL string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	jwks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/t/acme/jwks.json" {
			http.NotFound(w, r)
			return
		}
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "k1", Algorithm: "ES256", Use: "sig"}}})
	}))
	t.Cleanup(jwks.Close)
	verifier, err := authn.NewJWKSVerifier(authn.JWKSVerifierConfig{IssuerBaseURL: jwks.URL, HTTPClient: jwks.Client()})
	if err != nil {
		t.Fatal(err)
	}

	e := &env{lis: bufconn.Listen(1 << 20), logs: &syncBuffer{}, reg: prometheus.NewRegistry(), key: key,
		issuer: jwks.URL + "/t/acme", baseURL: jwks.URL}
	e.srv = grpcx.NewServer(grpcx.ServerConfig{
		Logger:        grpcx.NewLogger(e.logs, slog.LevelDebug),
		Verifier:      verifier,
		PublicMethods: []string{"/" + probeService + "/Public"},
		Registry:      e.reg,
		Reflection:    true,
	})
	e.srv.RegisterService(&probeDesc, probe{})
	grpcx.MarkServing(e.srv)
	go func() { _ = e.srv.Serve(e.lis) }()
	t.Cleanup(e.srv.Stop)
	return e
}

func (e *env) token(t *testing.T, mut func(*authn.Claims)) string {
	t.Helper()
	now := time.Now()
	c := authn.Claims{
		Issuer: e.issuer, Subject: "svc-registry", Audience: []string{authn.APIAudience},
		Expiry: now.Add(5 * time.Minute), IssuedAt: now, NotBefore: now, ID: "jti-1",
		ClientID: "svc-registry", Tenant: "acme", Roles: []string{"tenant-admin"},
	}
	if mut != nil {
		mut(&c)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: e.key, KeyID: "k1"}},
		(&jose.SignerOptions{}).WithType("at+jwt"))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := jwt.Signed(signer).Claims(c).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func (e *env) dial(t *testing.T, token string) *grpc.ClientConn {
	t.Helper()
	var creds = authn.PerRPCCredentials(oauth2.StaticTokenSource(&oauth2.Token{AccessToken: token}), false)
	if token == "" {
		creds = nil
	}
	conn, err := grpcx.Dial("passthrough:///localhost", creds,
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return e.lis.DialContext(ctx) }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func call(ctx context.Context, conn *grpc.ClientConn, method string, opts ...grpc.CallOption) (string, error) {
	out := new(wrapperspb.StringValue)
	err := conn.Invoke(ctx, "/"+probeService+"/"+method, wrapperspb.String("in"), out, opts...)
	return out.GetValue(), err
}

func errorInfo(err error) *errdetails.ErrorInfo {
	for _, d := range status.Convert(err).Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info
		}
	}
	return nil
}

func TestServerAuthentication(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name       string
		token      string
		method     string
		wantCode   codes.Code
		wantReason string
		wantValue  string
	}{
		{name: "no token", method: "Whoami", wantCode: codes.Unauthenticated, wantReason: authn.ReasonTokenMissing},
		{name: "garbage token", token: "not-a-jwt", method: "Whoami", wantCode: codes.Unauthenticated, wantReason: authn.ReasonTokenInvalid},
		{name: "expired token", token: e.token(t, func(c *authn.Claims) { c.Expiry = time.Now().Add(-time.Hour) }), method: "Whoami",
			wantCode: codes.Unauthenticated, wantReason: authn.ReasonTokenExpired},
		{name: "token for another audience", token: e.token(t, func(c *authn.Claims) { c.Audience = []string{"https://mcp.example"} }), method: "Whoami",
			wantCode: codes.Unauthenticated, wantReason: authn.ReasonTokenAudience},
		{name: "good token", token: e.token(t, nil), method: "Whoami", wantCode: codes.OK, wantValue: "svc-registry@acme kind=human"},
		{name: "DPoP-bound token without a proof", token: e.token(t, func(c *authn.Claims) {
			c.Roles = []string{"platform-admin"}
			c.Confirmation = &authn.Confirmation{JKT: "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}
		}), method: "Whoami", wantCode: codes.Unauthenticated, wantReason: authn.ReasonDPoPUnsupported},
		{name: "certificate-bound token without TLS", token: e.token(t, func(c *authn.Claims) {
			c.Confirmation = &authn.Confirmation{X5TS256: "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2"}
		}), method: "Whoami", wantCode: codes.Unauthenticated, wantReason: authn.ReasonCertificateBinding},
		{name: "public method without token", method: "Public", wantCode: codes.OK, wantValue: "public authenticated=false"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := call(context.Background(), e.dial(t, tt.token), tt.method)
			if status.Code(err) != tt.wantCode {
				t.Fatalf("code = %v (%v), want %v", status.Code(err), err, tt.wantCode)
			}
			if tt.wantReason != "" {
				if info := errorInfo(err); info == nil || info.GetReason() != tt.wantReason {
					t.Fatalf("ErrorInfo = %v, want reason %s", info, tt.wantReason)
				}
			}
			if !strings.HasPrefix(got, tt.wantValue) {
				t.Fatalf("response = %q, want prefix %q", got, tt.wantValue)
			}
		})
	}
}

func TestServerHealthAndReflectionArePublic(t *testing.T) {
	e := newEnv(t)
	conn := e.dial(t, "")
	hc := healthpb.NewHealthClient(conn)
	for _, svc := range []string{"", probeService} {
		resp, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("health %q: %v %v", svc, resp, err)
		}
	}
	grpcx.HealthServer(e.srv).SetServingStatus(probeService, healthpb.HealthCheckResponse_NOT_SERVING)
	if resp, _ := hc.Check(context.Background(), &healthpb.HealthCheckRequest{Service: probeService}); resp.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("HealthServer does not control the registered health service: %v", resp)
	}

	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatalf("reflection without token: %v", err)
	}
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	if !strings.Contains(strings.Join(names, ","), probeService) {
		t.Fatalf("reflection lists %v, want %s", names, probeService)
	}
}

func TestServerErrorMapping(t *testing.T) {
	e := newEnv(t)
	conn := e.dial(t, e.token(t, nil))

	_, err := call(context.Background(), conn, "NotFound")
	if status.Code(err) != codes.NotFound || status.Convert(err).Message() != "agent not found" {
		t.Fatalf("NotFound handler: %v", err)
	}
	info := errorInfo(err)
	if info == nil || info.GetReason() != "AGENT_NOT_FOUND" || info.GetDomain() != errs.Domain || info.GetMetadata()["agent"] != "tenants/acme/agents/a1" {
		t.Fatalf("ErrorInfo = %v", info)
	}
	if fe := errs.FromStatus(err); fe.Kind != errs.KindNotFound || fe.Reason != "AGENT_NOT_FOUND" || errs.Retryable(err) {
		t.Fatalf("client-side FromStatus = %+v", fe)
	}

	ctx := grpcx.WithRequestID(context.Background(), "req-internal-1")
	_, err = call(ctx, conn, "Internal")
	if status.Code(err) != codes.Internal || status.Convert(err).Message() != "internal error" {
		t.Fatalf("Internal handler: %v", err)
	}
	if strings.Contains(fmt.Sprint(status.Convert(err).Proto()), "hunter2") {
		t.Fatal("internal cause leaked to the client")
	}
	var logged bool
	for _, l := range e.logs.lines(t) {
		if l["msg"] == "internal error" && l["request_id"] == "req-internal-1" && strings.Contains(fmt.Sprint(l["error"]), "hunter2") {
			logged = true
		}
	}
	if !logged {
		t.Fatalf("internal cause not logged with the request id:\n%s", e.logs.String())
	}
}

func TestServerSurvivesPanics(t *testing.T) {
	e := newEnv(t)
	conn := e.dial(t, e.token(t, nil))
	for range 3 {
		_, err := call(context.Background(), conn, "Panic")
		if status.Code(err) != codes.Internal || status.Convert(err).Message() != "internal error" {
			t.Fatalf("panicking handler: %v", err)
		}
	}
	if _, err := call(context.Background(), conn, "Whoami"); err != nil {
		t.Fatalf("server did not survive the panic: %v", err)
	}
	var stackLogged bool
	for _, l := range e.logs.lines(t) {
		if l["msg"] == "panic in grpc handler" && strings.Contains(fmt.Sprint(l["stack"]), "probe.panics") {
			stackLogged = true
		}
	}
	if !stackLogged {
		t.Fatalf("panic stack not logged:\n%s", e.logs.String())
	}
}

func TestServerRequestID(t *testing.T) {
	e := newEnv(t)
	conn := e.dial(t, e.token(t, nil))

	t.Run("caller's id is used and echoed", func(t *testing.T) {
		var hdr metadata.MD
		ctx := metadata.AppendToOutgoingContext(context.Background(), grpcx.RequestIDHeader, "req-abc-123")
		got, err := call(ctx, conn, "Whoami", grpc.Header(&hdr))
		if err != nil {
			t.Fatal(err)
		}
		if ids := hdr.Get(grpcx.RequestIDHeader); len(ids) != 1 || ids[0] != "req-abc-123" {
			t.Fatalf("response header = %v", ids)
		}
		if !strings.HasSuffix(got, "request=req-abc-123") {
			t.Fatalf("handler saw %q", got)
		}
	})
	t.Run("context id is forwarded by Dial", func(t *testing.T) {
		var hdr metadata.MD
		got, err := call(grpcx.WithRequestID(context.Background(), "req-from-ctx"), conn, "Whoami", grpc.Header(&hdr))
		if err != nil || !strings.HasSuffix(got, "request=req-from-ctx") || hdr.Get(grpcx.RequestIDHeader)[0] != "req-from-ctx" {
			t.Fatalf("got %q %v %v", got, hdr, err)
		}
	})
	t.Run("missing or malformed id is replaced by a UUIDv7", func(t *testing.T) {
		for _, sent := range []string{"", "has space", strings.Repeat("x", 200)} {
			ctx := context.Background()
			if sent != "" {
				ctx = metadata.AppendToOutgoingContext(ctx, grpcx.RequestIDHeader, sent)
			}
			var hdr metadata.MD
			if _, err := call(ctx, conn, "Whoami", grpc.Header(&hdr)); err != nil {
				t.Fatal(err)
			}
			id, err := uuid.Parse(hdr.Get(grpcx.RequestIDHeader)[0])
			if err != nil || id.Version() != 7 {
				t.Fatalf("sent %q, got id %v (%v), want UUIDv7", sent, hdr.Get(grpcx.RequestIDHeader), err)
			}
		}
	})
	t.Run("errors carry the id too", func(t *testing.T) {
		var hdr metadata.MD
		_, err := call(grpcx.WithRequestID(context.Background(), "req-err"), e.dial(t, ""), "Whoami", grpc.Header(&hdr))
		if status.Code(err) != codes.Unauthenticated || hdr.Get(grpcx.RequestIDHeader)[0] != "req-err" {
			t.Fatalf("got %v, header %v", err, hdr)
		}
	})
}

func TestServerStreams(t *testing.T) {
	e := newEnv(t)
	open := func(conn *grpc.ClientConn) ([]string, error) {
		stream, err := conn.NewStream(context.Background(), &grpc.StreamDesc{StreamName: "Watch", ServerStreams: true}, "/"+probeService+"/Watch")
		if err != nil {
			return nil, err
		}
		if err := stream.SendMsg(wrapperspb.String("in")); err != nil {
			return nil, err
		}
		if err := stream.CloseSend(); err != nil {
			return nil, err
		}
		var got []string
		for {
			m := new(wrapperspb.StringValue)
			if err := stream.RecvMsg(m); err == io.EOF {
				return got, nil
			} else if err != nil {
				return got, err
			}
			got = append(got, m.GetValue())
		}
	}
	if _, err := open(e.dial(t, "")); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("stream without token: %v", err)
	}
	got, err := open(e.dial(t, e.token(t, nil)))
	if err != nil || strings.Join(got, ",") != "svc-registry#0,svc-registry#1" {
		t.Fatalf("stream with token: %v %v", got, err)
	}
}

func TestServerAccessLogAndMetrics(t *testing.T) {
	e := newEnv(t)
	conn := e.dial(t, e.token(t, func(c *authn.Claims) { c.Subject = "svc-monitor" }))
	if _, err := call(grpcx.WithRequestID(context.Background(), "req-log-1"), conn, "Whoami"); err != nil {
		t.Fatal(err)
	}
	_, _ = call(context.Background(), conn, "NotFound")

	var found bool
	for _, l := range e.logs.lines(t) {
		if l["msg"] == "grpc call" && l["request_id"] == "req-log-1" {
			found = true
			if l["method"] != "/"+probeService+"/Whoami" || l["code"] != "OK" || l["principal"] != "svc-monitor" ||
				l["tenant"] != "acme" || l["duration_ms"] == nil {
				t.Fatalf("access log line = %v", l)
			}
			ts, err := time.Parse(time.RFC3339Nano, fmt.Sprint(l["time"]))
			if err != nil || ts.Location() != time.UTC || !strings.HasSuffix(fmt.Sprint(l["time"]), "Z") {
				t.Fatalf("log time %v is not UTC", l["time"])
			}
		}
	}
	if !found {
		t.Fatalf("no access log line for the call:\n%s", e.logs.String())
	}

	families, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]float64{}
	for _, f := range families {
		if f.GetName() != "grpc_server_handled_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			if labels["grpc_service"] == probeService {
				counts[labels["grpc_method"]+"/"+labels["grpc_code"]] += m.GetCounter().GetValue()
			}
		}
	}
	if counts["Whoami/OK"] != 1 || counts["NotFound/NotFound"] != 1 {
		t.Fatalf("handled counters = %v", counts)
	}
}

func TestNewServerWithoutVerifierRejects(t *testing.T) {
	lis := bufconn.Listen(1 << 20)
	srv := grpcx.NewServer(grpcx.ServerConfig{Logger: grpcx.NewLogger(io.Discard, slog.LevelInfo)})
	srv.RegisterService(&probeDesc, probe{})
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	conn, err := grpcx.Dial("passthrough:///localhost", authn.PerRPCCredentials(oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "x"}), false),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	if _, err := call(context.Background(), conn, "Whoami"); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("got %v, want Unauthenticated", err)
	}
	if grpcx.HealthServer(grpc.NewServer()) != nil {
		t.Fatal("HealthServer of a foreign server must be nil")
	}
}
