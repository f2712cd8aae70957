package grpcx_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/grpcx"
	"github.com/agentid/agentid/pkg/testkit"
	"github.com/agentid/agentid/pkg/tlsx"
	"github.com/agentid/agentid/pkg/tlsx/tlsxtest"
)

// tokenSpy remembers the authorization headers a server received.
type tokenSpy struct {
	mu   sync.Mutex
	seen []string
}

func (s *tokenSpy) intercept(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	s.mu.Lock()
	s.seen = append(s.seen, md.Get("authorization")...)
	s.mu.Unlock()
	return h(ctx, req)
}

func (s *tokenSpy) tokens() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.seen...)
}

// tlsServer serves grpcx with health on 127.0.0.1, over TLS when cfg is set; a certificate for
// "registry.example" lets clients dial that name (through a dialer to the real address).
func tlsServer(t *testing.T, cfg *tls.Config, logs *syncBuffer) (string, *tokenSpy) {
	t.Helper()
	spy := &tokenSpy{}
	log := grpcx.NewLogger(logs, slog.LevelDebug)
	opts := []grpc.ServerOption{grpc.ChainUnaryInterceptor(spy.intercept)}
	if cfg != nil {
		opts = append(opts, grpcx.ServerTLS(cfg, log))
	}
	srv := grpcx.NewServer(grpcx.ServerConfig{Logger: log}, opts...)
	grpcx.MarkServing(srv)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String(), spy
}

// to dials addr whatever the target names.
func to(addr string) grpc.DialOption {
	return grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	})
}

func check(conn *grpc.ClientConn) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	return err
}

func TestBearerRefusedOverPlaintextToRemote(t *testing.T) {
	addr, spy := tlsServer(t, nil, &syncBuffer{})
	ts := oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "secret-token"})
	const remote = "passthrough:///registry.example:7071"

	// grpcx.Dial refuses at once, naming the target.
	if conn, err := grpcx.Dial(remote, authn.PerRPCCredentials(ts, false), to(addr)); err == nil {
		_ = conn.Close()
		t.Fatal("grpcx.Dial accepted bearer credentials in plaintext to a remote target")
	} else if !strings.Contains(err.Error(), remote) || !strings.Contains(err.Error(), "plaintext") {
		t.Fatalf("err = %v, want it to name %s and plaintext", err, remote)
	}

	// BearerCredentials for a remote target on a plaintext connection built by hand: refused too.
	conn, err := grpc.NewClient(remote, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(authn.BearerCredentials(remote, ts)), to(addr))
	if err == nil {
		err = check(conn)
		_ = conn.Close()
	}
	if err == nil {
		t.Fatal("BearerCredentials sent a token in plaintext to a remote target")
	}
	if got := spy.tokens(); len(got) != 0 {
		t.Fatalf("the server received %v", got)
	}

	// To loopback, plaintext is allowed (agentid dev).
	conn, err = grpcx.Dial(addr, authn.BearerCredentials(addr, ts))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := check(conn); err != nil {
		t.Fatal(err)
	}
	if got := spy.tokens(); len(got) != 1 || got[0] != "Bearer secret-token" {
		t.Fatalf("the server received %v, want the token once", got)
	}
}

func TestDialTLSSendsBearerToRemote(t *testing.T) {
	dir := t.TempDir()
	ca := tlsxtest.NewCA(t, "test CA")
	certFile, keyFile := ca.WritePair(t, dir, "registry", "registry", "registry.example")
	srvCfg, err := tlsx.NewServerConfig(tlsx.ServerOptions{CertFile: certFile, KeyFile: keyFile})
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	addr, spy := tlsServer(t, srvCfg, logs)
	ts := oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "secret-token"})
	const remote = "passthrough:///registry.example:7071"

	good, err := tlsx.NewClientConfig(tlsx.ClientOptions{CAFile: ca.WriteCA(t, dir, "ca.crt")})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpcx.DialTLS(remote, good, authn.BearerCredentials(remote, ts), to(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := check(conn); err != nil {
		t.Fatalf("over TLS: %v", err)
	}
	if got := spy.tokens(); len(got) != 1 || got[0] != "Bearer secret-token" {
		t.Fatalf("the server received %v, want the token once", got)
	}

	// A client that does not trust the server's CA fails, and the server logs the peer.
	other, err := tlsx.NewClientConfig(tlsx.ClientOptions{CAFile: tlsxtest.NewCA(t, "other CA").WriteCA(t, dir, "other.crt")})
	if err != nil {
		t.Fatal(err)
	}
	bad, err := grpcx.DialTLS(remote, other, authn.BearerCredentials(remote, ts), to(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	if err := check(bad); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("untrusted server: err = %v, want a certificate error", err)
	}
	testkit.Eventually(t, 0, "the handshake failure with its peer in the server log", func() (bool, error) {
		out := logs.String()
		return strings.Contains(out, "gRPC TLS handshake failed") && strings.Contains(out, `"peer":"127.0.0.1:`),
			fmt.Errorf("server log:\n%s", out)
	})
	if got := spy.tokens(); len(got) != 1 {
		t.Fatalf("the server received %d tokens, want 1 (none from the failed handshake)", len(got))
	}
}

// A token bound to a client certificate (cnf x5t#S256) is accepted over mTLS with that certificate
// only.
func TestCertificateBoundTokenNeedsItsCertificate(t *testing.T) {
	e := newEnv(t)
	verifier, err := authn.NewJWKSVerifier(authn.JWKSVerifierConfig{IssuerBaseURL: e.baseURL})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ca := tlsxtest.NewCA(t, "test CA")
	caFile := ca.WriteCA(t, dir, "ca.crt")
	certFile, keyFile := ca.WritePair(t, dir, "registry", "registry", "registry.example")
	srvCfg, err := tlsx.NewServerConfig(tlsx.ServerOptions{CertFile: certFile, KeyFile: keyFile, ClientCAFile: caFile})
	if err != nil {
		t.Fatal(err)
	}
	log := grpcx.NewLogger(&syncBuffer{}, slog.LevelDebug)
	srv := grpcx.NewServer(grpcx.ServerConfig{Logger: log, Verifier: verifier}, grpcx.ServerTLS(srvCfg, log))
	srv.RegisterService(&probeDesc, probe{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)

	clientCert := func(name string) (*tls.Config, string) {
		c, k := ca.WritePair(t, dir, name, name)
		cfg, err := tlsx.NewClientConfig(tlsx.ClientOptions{CAFile: caFile, CertFile: c, KeyFile: k})
		if err != nil {
			t.Fatal(err)
		}
		pair, err := tls.LoadX509KeyPair(c, k)
		if err != nil {
			t.Fatal(err)
		}
		return cfg, authn.CertificateThumbprint(pair.Leaf)
	}
	agentCfg, agentThumb := clientCert("agent")
	otherCfg, _ := clientCert("other")
	bound := e.token(t, func(c *authn.Claims) { c.Confirmation = &authn.Confirmation{X5TS256: agentThumb} })

	const remote = "passthrough:///registry.example:7071"
	tests := []struct {
		name       string
		cfg        *tls.Config
		wantReason string
	}{
		{name: "the bound certificate", cfg: agentCfg},
		{name: "another certificate", cfg: otherCfg, wantReason: authn.ReasonCertificateBinding},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := oauth2.StaticTokenSource(&oauth2.Token{AccessToken: bound})
			conn, err := grpcx.DialTLS(remote, tt.cfg, authn.BearerCredentials(remote, ts), to(lis.Addr().String()))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			got, err := call(ctx, conn, "Whoami")
			if tt.wantReason == "" {
				if err != nil || !strings.HasPrefix(got, "svc-registry@acme") {
					t.Fatalf("got %q, %v; want the call to succeed", got, err)
				}
				return
			}
			if info := errorInfo(err); status.Code(err) != codes.Unauthenticated || info == nil || info.GetReason() != tt.wantReason {
				t.Fatalf("err = %v, want Unauthenticated %s", err, tt.wantReason)
			}
		})
	}
}
