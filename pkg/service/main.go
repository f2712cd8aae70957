package service

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/failpoint"
	"github.com/agentid/agentid/pkg/grpcx"
	"github.com/agentid/agentid/pkg/natsauth"
	"github.com/agentid/agentid/pkg/observability"
	"github.com/agentid/agentid/pkg/ratelimit"
)

// Flags are the flags every service binary takes.
type Flags struct {
	// NATSURL is the NATS server (or comma-separated cluster URLs).
	NATSURL string
	// GRPCAddr is the gRPC listen address.
	GRPCAddr string
	// HTTPAddr is the HTTP listen address (/metrics, /livez, /readyz; the issuer's OAuth endpoints).
	HTTPAddr string
	// IssuerURL is the issuer's public base URL; API tokens are verified against its per-tenant JWKS.
	IssuerURL string
	// LogLevel is debug, info, warn or error.
	LogLevel string
	// OTLPEndpoint is the host:port of an OTLP/gRPC trace collector (plaintext); empty keeps traces
	// in the process (trace ids still propagate into logs and events).
	OTLPEndpoint string
	// StreamReplicas is the replica count of the event streams this process creates (3 in a NATS
	// cluster, so that an acknowledged event survives the loss of a server).
	StreamReplicas int
	// NATSGrace is how long the NATS connection may be down before the process reports NOT_SERVING.
	NATSGrace time.Duration
	// NATSNkey is the file holding the service's NATS nkey seed (its identity on the event bus, see
	// pkg/natsauth); empty connects without credentials.
	NATSNkey string
	// NATSCA is the CA bundle (PEM) that the NATS server's TLS certificate is verified against.
	NATSCA string
	// SetupStreams creates or updates the event streams and the failed-event bucket, then exits
	// (a one-shot run with the NATS admin identity: the services' identities may only read them).
	SetupStreams bool
	// PprofAddr, when set, serves net/http/pprof on this address (loopback only unless PprofAllowRemote).
	PprofAddr string
	// PprofAllowRemote permits a PprofAddr that is not loopback.
	PprofAllowRemote bool
	// Reflection serves gRPC reflection (off by default: it lists every method to anyone).
	Reflection bool
	// AdminAddr, when set, serves /metrics, the probes and (with AdminPprof) /debug/pprof on a
	// listener of its own, and /metrics no longer on HTTPAddr.
	AdminAddr string
	// AdminPprof serves net/http/pprof on AdminAddr.
	AdminPprof bool
	// RatePerPrincipal is the gRPC calls per second of one authenticated principal (burst twice
	// that); 0 disables.
	RatePerPrincipal float64
	// TLS are the server certificate and key (--tls-cert, --tls-key) of the gRPC and HTTP servers
	// and the CA (--ca) of outgoing connections to other services.
	TLS TLSFiles
}

// Register adds the common flags to fs, with the current field values as defaults.
func (f *Flags) Register(fs *flag.FlagSet) {
	fs.StringVar(&f.NATSURL, "nats-url", f.NATSURL, "NATS server URL(s), comma-separated")
	fs.StringVar(&f.GRPCAddr, "grpc-addr", f.GRPCAddr, "gRPC listen address")
	fs.StringVar(&f.HTTPAddr, "http-addr", f.HTTPAddr, "HTTP listen address (/metrics, /livez, /readyz)")
	fs.StringVar(&f.IssuerURL, "issuer-url", f.IssuerURL, "public base URL of the issuer (API tokens are verified against its JWKS)")
	fs.StringVar(&f.LogLevel, "log-level", f.LogLevel, "debug, info, warn or error")
	fs.StringVar(&f.OTLPEndpoint, "otlp-endpoint", f.OTLPEndpoint, "OTLP/gRPC trace collector host:port (empty: no export)")
	fs.IntVar(&f.StreamReplicas, "stream-replicas", f.StreamReplicas, "replicas of the event streams it creates (3 in a NATS cluster)")
	fs.StringVar(&f.NATSNkey, "nats-nkey", f.NATSNkey, "file with the service's NATS nkey seed, its identity on the event bus (empty: no credentials)")
	fs.StringVar(&f.NATSCA, "nats-ca", f.NATSCA, "CA bundle (PEM) that the NATS server's TLS certificate is verified against")
	fs.BoolVar(&f.SetupStreams, "setup-streams", f.SetupStreams, "create or update the event streams, then exit (run once with the NATS admin identity's --nats-nkey)")
	fs.DurationVar(&f.NATSGrace, "nats-grace", f.NATSGrace, "how long NATS may be unreachable before /readyz and gRPC health report NOT_SERVING")
	fs.StringVar(&f.PprofAddr, "pprof-addr", f.PprofAddr, "serve net/http/pprof on this host:port (empty: off; loopback only unless --pprof-allow-remote)")
	fs.BoolVar(&f.PprofAllowRemote, "pprof-allow-remote", f.PprofAllowRemote, "allow a --pprof-addr that is not loopback")
	fs.BoolVar(&f.Reflection, "reflection", f.Reflection, "serve gRPC reflection (lists every method to anyone who connects)")
	fs.StringVar(&f.AdminAddr, "admin-addr", f.AdminAddr, "serve /metrics, /livez, /readyz (and /debug/pprof with --admin-pprof) on this host:port, and /metrics no longer on --http-addr (empty: /metrics on --http-addr)")
	fs.BoolVar(&f.AdminPprof, "admin-pprof", f.AdminPprof, "serve net/http/pprof on --admin-addr")
	fs.Float64Var(&f.RatePerPrincipal, "rate-per-principal", f.RatePerPrincipal, "gRPC calls per second of one authenticated principal, bursts of twice that; over it: RESOURCE_EXHAUSTED with RetryInfo (0: no limit)")
	fs.StringVar(&f.TLS.CertFile, "tls-cert", f.TLS.CertFile, "server certificate chain (PEM) of the gRPC and HTTP servers, reloaded when it changes (empty: plaintext)")
	fs.StringVar(&f.TLS.KeyFile, "tls-key", f.TLS.KeyFile, "private key (PEM) of --tls-cert")
	fs.StringVar(&f.TLS.CAFile, "ca", f.TLS.CAFile, "CA bundle (PEM) that other services' certificates are verified against (empty: plaintext to loopback only)")
}

// Env is what Main hands a service's build function.
type Env struct {
	// Logger writes JSON logs to stderr.
	Logger *slog.Logger
	// NATS is the connection to the NATS server.
	NATS *nats.Conn
	// JetStream is the JetStream API on NATS.
	JetStream jetstream.JetStream
	// Store is the event store, with the service's name as CloudEvents source.
	Store *eventstore.Store
	// StreamReplicas is the replica count for streams and buckets the service creates itself.
	StreamReplicas int
	// Denylist holds the process's token revocations, kept current from the REVOCATIONS stream; the
	// platform API's verifier checks it, and a service may check it too (the issuer's introspection).
	Denylist *authn.Denylist
	// DenylistReady blocks until Denylist holds every revocation stored before the start (or ctx is
	// done); a component that checks Denylist waits for it before answering.
	DenylistReady func(context.Context) error
	// ClientTLS verifies other services' certificates (--ca) for the component's outgoing gRPC
	// (grpcx.DialTLS) and HTTPS calls; nil means plaintext, to loopback addresses only.
	ClientTLS *tls.Config
}

// DefaultFlags returns the defaults shared by every service binary.
func DefaultFlags(grpcAddr, httpAddr string) Flags {
	return Flags{NATSURL: nats.DefaultURL, GRPCAddr: grpcAddr, HTTPAddr: httpAddr,
		IssuerURL: "http://127.0.0.1:8080", LogLevel: "info", StreamReplicas: 1, NATSGrace: DefaultNATSGrace}
}

// Main runs one service as its own process: it parses flags (fs must already hold the service's own
// flags and the common ones), connects to NATS, builds the component and serves until SIGINT/SIGTERM.
// It returns the exit code.
func Main(name string, fs *flag.FlagSet, f *Flags, build func(ctx context.Context, env *Env) (Component, error)) int {
	if err := fs.Parse(os.Args[1:]); err != nil {
		return 2
	}
	if f.StreamReplicas < 1 || f.StreamReplicas > 5 {
		fmt.Fprintf(os.Stderr, "%s: --stream-replicas %d: want 1 to 5\n", name, f.StreamReplicas)
		return 2
	}
	if f.NATSGrace <= 0 {
		fmt.Fprintf(os.Stderr, "%s: --nats-grace %s: want a positive duration\n", name, f.NATSGrace)
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "%s: unexpected arguments %v\n", name, fs.Args())
		return 2
	}
	if f.AdminPprof && f.AdminAddr == "" {
		fmt.Fprintf(os.Stderr, "%s: --admin-pprof needs --admin-addr\n", name)
		return 2
	}
	if f.AdminAddr != "" && f.AdminAddr == f.HTTPAddr {
		fmt.Fprintf(os.Stderr, "%s: --admin-addr %s: must differ from --http-addr\n", name, f.AdminAddr)
		return 2
	}
	if err := CheckPprofAddr(f.PprofAddr, f.PprofAllowRemote); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		return 2
	}
	if err := failpoint.FromEnv(); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		return 2
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(f.LogLevel)); err != nil {
		fmt.Fprintf(os.Stderr, "%s: --log-level %q: want debug, info, warn or error\n", name, f.LogLevel)
		return 2
	}
	log := grpcx.NewLogger(os.Stderr, lvl).With("service", name)
	if armed := failpoint.Armed(); len(armed) > 0 {
		log.Warn("FAILPOINTS ARMED: this process will fail on purpose (unset "+failpoint.Env+" outside tests)", "failpoints", armed)
	}
	if f.SetupStreams {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		if err := setupStreams(ctx, name, f, log); err != nil {
			log.Error("exiting", "error", err.Error())
			return 1
		}
		return 0
	}
	tlsConfigs, err := LoadTLS(f.TLS, log)
	if err != nil {
		log.Error("exiting", "error", err.Error())
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, name, f, tlsConfigs, log, build); err != nil {
		log.Error("exiting", "error", err.Error())
		return 1
	}
	return 0
}

func run(ctx context.Context, name string, f *Flags, tlsConfigs TLSConfigs, log *slog.Logger, build func(context.Context, *Env) (Component, error)) error {
	shutdownTracing, err := observability.Setup(ctx, observability.TracingConfig{
		ServiceName: "agentid-" + name, OTLPEndpoint: f.OTLPEndpoint, Insecure: true,
	})
	if err != nil {
		return err
	}
	defer func() { _ = shutdownTracing(context.Background()) }()
	// A service may start before NATS (or while its cluster elects leaders): it keeps trying, and is
	// not ready meanwhile, instead of exiting.
	natsOpts, err := natsauth.ClientOptions(f.NATSNkey, f.NATSCA)
	if err != nil {
		return err
	}
	natsOpts = append(natsOpts, natsauth.LogOptions(log)...)
	nc, err := connectNATS(f, append(natsOpts, nats.Name("agentid "+name), nats.MaxReconnects(-1)))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	store := eventstore.New(js, eventstore.WithSource("agentid/"+name), eventstore.WithLogger(log),
		eventstore.WithReplicas(f.StreamReplicas))
	// While the streams are not there yet the process is alive but not ready: answer the probes, so
	// that an orchestrator waits instead of restarting it.
	stopProbes := serveStartupProbes(f.HTTPAddr, tlsConfigs.Server, log)
	err = ensureStreams(ctx, store, log)
	stopProbes()
	if err != nil {
		return fmt.Errorf("streams: %w", err)
	}
	revocations, err := NewRevocations(js, log)
	if err != nil {
		return err
	}
	verifier, err := authn.NewJWKSVerifier(authn.JWKSVerifierConfig{IssuerBaseURL: f.IssuerURL, Revocations: revocations.Denylist,
		HTTPClient: HTTPClient(tlsConfigs.Client)})
	if err != nil {
		return fmt.Errorf("--issuer-url: %w", err)
	}
	comp, err := build(ctx, &Env{Logger: log, NATS: nc, JetStream: js, Store: store, StreamReplicas: f.StreamReplicas,
		Denylist: revocations.Denylist, DenylistReady: revocations.Feed.Ready, ClientTLS: tlsConfigs.Client})
	if err != nil {
		return fmt.Errorf("build %s: %w", name, err)
	}
	if c, ok := comp.(interface{ Close() error }); ok {
		defer c.Close()
	}
	var serverOpts []grpc.ServerOption
	if tlsConfigs.Server != nil {
		serverOpts = append(serverOpts, grpcx.ServerTLS(tlsConfigs.Server, log))
	}
	perPrincipal, err := ratelimit.New(ratelimit.Config{Rate: f.RatePerPrincipal, Burst: int(math.Ceil(2 * f.RatePerPrincipal))})
	if err != nil {
		return fmt.Errorf("--rate-per-principal %v: %w", f.RatePerPrincipal, err)
	}
	srv := grpcx.NewServer(grpcx.ServerConfig{Logger: log, Verifier: verifier, Reflection: f.Reflection,
		PrincipalLimiter: perPrincipal}, serverOpts...)
	tasks := []Task{revocations.Task()}
	profile, _, err := PprofTask(PprofConfig{Addr: f.PprofAddr, AllowRemote: f.PprofAllowRemote, Logger: log})
	if err != nil {
		return err
	}
	if profile != nil {
		tasks = append(tasks, profile)
	}
	return Run(ctx, RunConfig{
		GRPCAddr: f.GRPCAddr, HTTPAddr: f.HTTPAddr, AdminAddr: f.AdminAddr, AdminPprof: f.AdminPprof, TLS: tlsConfigs.Server, Server: srv, Health: grpcx.HealthServer(srv),
		Components: []Component{comp}, Tasks: tasks, Logger: log, NATS: nc, NATSGrace: f.NATSGrace,
		ReadyChecks: []ReadyCheck{revocations.ReadyCheck()},
	})
}

// connectNATS connects to --nats-url. A server that refuses the identity (a wrong or unknown
// --nats-nkey, or none where one is required) fails the start naming the flag and file; an
// unreachable one is retried in the background, the process not ready meanwhile.
func connectNATS(f *Flags, opts []nats.Option) (*nats.Conn, error) {
	nc, err := nats.Connect(f.NATSURL, opts...)
	switch {
	case err == nil:
		return nc, nil
	case errors.Is(err, nats.ErrAuthorization) || strings.Contains(strings.ToLower(err.Error()), "authorization violation"):
		who := "no identity (--nats-nkey is not set)"
		if f.NATSNkey != "" {
			who = "the identity of --nats-nkey " + f.NATSNkey
		}
		return nil, fmt.Errorf("NATS at %s (--nats-url) refused %s: %w", f.NATSURL, who, err)
	}
	// A service may start before NATS (or while its cluster elects leaders): it keeps trying.
	nc, err = nats.Connect(f.NATSURL, append(opts, nats.RetryOnFailedConnect(true))...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s (--nats-url): %w", f.NATSURL, err)
	}
	return nc, nil
}

// setupStreamsTimeout bounds a --setup-streams run, waiting for NATS included.
const setupStreamsTimeout = 5 * time.Minute

// setupStreams is a --setup-streams run: it connects to NATS (waiting for it), creates or updates the
// streams, the failed-event bucket and the registry's checkpoint bucket, and returns.
func setupStreams(ctx context.Context, name string, f *Flags, log *slog.Logger) error {
	ctx, cancel := context.WithTimeout(ctx, setupStreamsTimeout)
	defer cancel()
	natsOpts, err := natsauth.ClientOptions(f.NATSNkey, f.NATSCA)
	if err != nil {
		return err
	}
	natsOpts = append(natsOpts, natsauth.LogOptions(log)...)
	nc, err := connectNATS(f, append(natsOpts, nats.Name("agentid "+name+" setup-streams"), nats.MaxReconnects(-1)))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	store := eventstore.New(js, eventstore.WithSource("agentid/"+name), eventstore.WithLogger(log),
		eventstore.WithReplicas(f.StreamReplicas), eventstore.WithCheckpointBucket(0))
	if err := ensureStreams(ctx, store, log); err != nil {
		return fmt.Errorf("--setup-streams: %w (the NATS identity of --nats-nkey must be allowed to create streams: the admin one)", err)
	}
	log.InfoContext(ctx, "event streams set up")
	return nil
}

// Bounds of the waits of ensureStreams between two attempts.
const (
	ensureStreamsFirstRetry = 500 * time.Millisecond
	ensureStreamsMaxRetry   = 10 * time.Second
)

// ensureStreams creates or checks the streams, retrying while NATS is unreachable or JetStream has
// no leader for a stream yet (a cluster that is starting or lost a node); an operator mistake, such as
// a replica count lower than the existing streams', fails at once.
func ensureStreams(ctx context.Context, store *eventstore.Store, log *slog.Logger) error {
	delay := ensureStreamsFirstRetry
	for {
		err := store.EnsureStreams(ctx)
		if err == nil || !transientJetStreamError(err) {
			return err
		}
		log.WarnContext(ctx, "event streams not available yet; retrying", "retry_in", delay.String(), "error", err.Error())
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		delay = min(2*delay, ensureStreamsMaxRetry)
	}
}

// transientJetStreamError reports whether err may go away by itself: a timeout, no responders, a
// connection being re-established, or JetStream answering that it is temporarily unavailable.
func transientJetStreamError(err error) bool {
	if errors.Is(err, eventstore.ErrWeakerConfig) {
		return false
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.Code == 503 || apiErr.Code == 408
	}
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, nats.ErrConnectionReconnecting) ||
		errors.Is(err, nats.ErrDisconnected) || errors.Is(err, jetstream.ErrJetStreamNotEnabled)
}

// serveStartupProbes answers /livez and /healthz (200) and /readyz (503) on addr (over TLS with
// tlsConfig, if set) until the returned function is called, which releases the address for the real
// server. An empty addr, or one that cannot be bound, serves nothing.
func serveStartupProbes(addr string, tlsConfig *tls.Config, log *slog.Logger) (stop func()) {
	if addr == "" {
		return func() {}
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		log.Warn("cannot answer health probes while starting", "http_addr", addr, "error", err.Error())
		return func() {}
	}
	mux := http.NewServeMux()
	alive := func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	}
	mux.HandleFunc("GET /livez", alive)
	mux.HandleFunc("GET /healthz", alive)
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("not ready: waiting for the event streams (NATS)\n"))
	})
	srv := HTTPLimits{}.server(mux, tlsConfig, log)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if tlsConfig != nil {
			_ = srv.ServeTLS(lis, "", "")
			return
		}
		_ = srv.Serve(lis)
	}()
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	}
}
