// Package service is the contract between a service's wiring (services/<svc>/app) and the processes that
// run it: the service's own binary (Main) and the all-in-one `agentid dev` (Run with all five components).
package service

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// Task is a long-running part of a component (a projection, a consumer, a worker). It returns when ctx
// is done; any other return ends the process.
type Task func(ctx context.Context) error

// Component is what every service's app package builds: gRPC services to register and tasks to run.
type Component interface {
	// Name is the service name used in logs and health ("registry", "issuer", ...).
	Name() string
	// RegisterGRPC registers the component's gRPC services on s.
	RegisterGRPC(s *grpc.Server)
	// Tasks lists the long-running parts to run under the process's errgroup.
	Tasks() []Task
}

// HTTPComponent is a Component that also serves plain HTTP (the issuer's OAuth endpoints).
type HTTPComponent interface {
	Component
	// HTTPHandler serves the component's HTTP endpoints; it is mounted at the root of the HTTP address.
	HTTPHandler() http.Handler
}

// HealthSetter is the part of the gRPC health server that Run needs.
type HealthSetter interface {
	SetServingStatus(service string, status healthpb.HealthCheckResponse_ServingStatus)
}

// RunConfig says what to run and where.
type RunConfig struct {
	// GRPCAddr is the listen address of the one gRPC server that hosts every component.
	GRPCAddr string
	// HTTPAddr is the listen address for HTTP components, /metrics (unless AdminAddr is set), /livez
	// (alias /healthz) and /readyz; empty disables HTTP.
	HTTPAddr string
	// AdminAddr, when set, is a second HTTP listener for operators: /metrics, /livez, /healthz,
	// /readyz and, with AdminPprof, /debug/pprof/. /metrics is then not served on HTTPAddr.
	AdminAddr string
	// AdminPprof serves net/http/pprof on AdminAddr.
	AdminPprof bool
	// HTTPLimits are the timeouts and header limit of the HTTP servers; zero fields take the
	// defaults of DefaultHTTPLimits.
	HTTPLimits HTTPLimits
	// TLS, if set, makes the HTTP server serve TLS with it (tlsx.NewServerConfig); the gRPC server
	// gets its TLS when it is built (grpcx.ServerTLS). Failed handshakes are logged with the peer.
	TLS *tls.Config
	// Server is the gRPC server (built with grpcx.NewServer).
	Server *grpc.Server
	// Health, if set, follows readiness: the overall status ("") is SERVING only while the process is
	// ready; each component's name and the gRPC services it registered are SERVING while that
	// component is ready (see Readier) and NATS is reachable; everything is NOT_SERVING on shutdown.
	Health HealthSetter
	// Components to run. Those that implement Readier keep the process NOT_SERVING until ready.
	Components []Component
	// Tasks are extra long-running tasks (engines, bootstrap) run beside the components'.
	Tasks []Task
	// ReadyChecks are extra readiness conditions of the process, beside the components'.
	ReadyChecks []ReadyCheck
	// NATS, if set, is the connection the components depend on: while it has been disconnected for
	// longer than NATSGrace the process reports NOT_SERVING, and SERVING again once it reconnects.
	NATS *nats.Conn
	// NATSGrace is how long NATS may be disconnected before readiness drops (default DefaultNATSGrace).
	NATSGrace time.Duration
	// Logger for lifecycle messages.
	Logger *slog.Logger
	// ShutdownTimeout bounds the graceful stop (default 10s).
	ShutdownTimeout time.Duration
	// OnListening is called once both listeners are bound, with their actual addresses (the process
	// is not necessarily ready yet).
	OnListening func(grpcAddr, httpAddr string)
	// OnAdminListening is called with the admin listener's actual address once it is bound.
	OnAdminListening func(adminAddr string)
	// OnReady is called once, the first time the process is ready (every Readier and ReadyCheck has
	// returned and NATS is connected).
	OnReady func()
}

// Run registers the components, binds the listeners, runs every task and serves until ctx is done or a
// task fails; it then stops the servers gracefully and returns the first error (nil on a clean stop).
// Health (gRPC and /readyz) follows readiness as RunConfig.Health describes; /livez answers 200 while
// the process runs.
func Run(ctx context.Context, cfg RunConfig) error {
	if cfg.Server == nil {
		return errors.New("service: RunConfig.Server is required")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	timeout := cfg.ShutdownTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	grace := cfg.NATSGrace
	if grace <= 0 {
		grace = DefaultNATSGrace
	}
	for _, rc := range cfg.ReadyChecks {
		if rc.Name == "" || rc.Ready == nil {
			return errors.New("service: a ReadyCheck needs a Name and a Ready function")
		}
	}

	if cfg.AdminPprof && cfg.AdminAddr == "" {
		return errors.New("service: AdminPprof needs an AdminAddr (--admin-pprof needs --admin-addr)")
	}
	ready := newReadiness(cfg.Health, log, cfg.OnReady)
	live := func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write([]byte("ok\n"))
	}
	probes := func(mux *http.ServeMux) {
		mux.HandleFunc("GET /livez", live)
		mux.HandleFunc("GET /healthz", live) // the older name of /livez
		mux.HandleFunc("GET /readyz", ready.serveReadyz)
	}
	mux := http.NewServeMux()
	probes(mux)
	var adminMux *http.ServeMux
	if cfg.AdminAddr != "" {
		adminMux = http.NewServeMux()
		probes(adminMux)
		adminMux.Handle("GET /metrics", promhttp.Handler())
		if cfg.AdminPprof {
			adminMux.Handle("/debug/pprof/", PprofHandler())
		}
	} else {
		mux.Handle("GET /metrics", promhttp.Handler())
	}
	var tasks []Task
	var waits []ReadyCheck
	seen := serviceNames(cfg.Server)
	for _, c := range cfg.Components {
		c.RegisterGRPC(cfg.Server)
		now := serviceNames(cfg.Server)
		var own []string
		for n := range now {
			if !seen[n] {
				own = append(own, n)
			}
		}
		seen = now
		rd, waitsForIt := c.(Readier)
		ready.addComponent(c.Name(), own, waitsForIt)
		if waitsForIt {
			waits = append(waits, ReadyCheck{Name: c.Name(), Ready: rd.Ready})
		}
		if hc, ok := c.(HTTPComponent); ok {
			mux.Handle("/", hc.HTTPHandler())
		}
		tasks = append(tasks, c.Tasks()...)
	}
	tasks = append(tasks, cfg.Tasks...)
	for _, rc := range cfg.ReadyChecks {
		ready.addCheck(rc.Name)
		waits = append(waits, rc)
	}
	var common []string
	for n := range seen {
		if !ready.owned(n) {
			common = append(common, n)
		}
	}
	ready.setCommon(common)
	ready.publish() // NOT_SERVING everywhere until the waits below pass (or SERVING if nothing waits)

	grpcLis, err := net.Listen("tcp", cfg.GRPCAddr)
	if err != nil {
		return fmt.Errorf("listen gRPC on %s: %w", cfg.GRPCAddr, err)
	}
	var httpLis net.Listener
	httpAddr := ""
	if cfg.HTTPAddr != "" {
		httpLis, err = net.Listen("tcp", cfg.HTTPAddr)
		if err != nil {
			_ = grpcLis.Close()
			return fmt.Errorf("listen HTTP on %s: %w", cfg.HTTPAddr, err)
		}
		httpAddr = httpLis.Addr().String()
	}
	var adminLis net.Listener
	if adminMux != nil {
		adminLis, err = net.Listen("tcp", cfg.AdminAddr)
		if err != nil {
			_ = grpcLis.Close()
			if httpLis != nil {
				_ = httpLis.Close()
			}
			return fmt.Errorf("listen admin HTTP on %s (--admin-addr): %w", cfg.AdminAddr, err)
		}
	}
	httpSrv := cfg.HTTPLimits.server(mux, cfg.TLS, log)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := cfg.Server.Serve(grpcLis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("gRPC server: %w", err)
		}
		return nil
	})
	if httpLis != nil {
		g.Go(func() error {
			serve := func() error { return httpSrv.Serve(httpLis) }
			if cfg.TLS != nil {
				serve = func() error { return httpSrv.ServeTLS(httpLis, "", "") }
			}
			if err := serve(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("HTTP server: %w", err)
			}
			return nil
		})
	}
	var adminSrv *http.Server
	if adminLis != nil {
		// Profiles stream for as long as they were asked to: a longer write timeout than the API's.
		adminLimits := cfg.HTTPLimits
		adminLimits.WriteTimeout = max(adminLimits.WriteTimeout, adminWriteTimeout)
		adminSrv = adminLimits.server(adminMux, cfg.TLS, log)
		g.Go(func() error {
			serve := func() error { return adminSrv.Serve(adminLis) }
			if cfg.TLS != nil {
				serve = func() error { return adminSrv.ServeTLS(adminLis, "", "") }
			}
			if err := serve(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("admin HTTP server: %w", err)
			}
			return nil
		})
		log.Info("admin listener", "admin", adminLis.Addr().String(), "pprof", cfg.AdminPprof)
		if cfg.OnAdminListening != nil {
			cfg.OnAdminListening(adminLis.Addr().String())
		}
	}
	for _, t := range tasks {
		g.Go(func() error {
			if err := t(gctx); err != nil && gctx.Err() == nil {
				return err
			}
			return nil
		})
	}
	log.Info("listening", "grpc", grpcLis.Addr().String(), "http", httpAddr)
	if cfg.OnListening != nil {
		cfg.OnListening(grpcLis.Addr().String(), httpAddr)
	}
	for _, w := range waits {
		g.Go(func() error {
			ready.await(gctx, w.Name, w.Ready)
			return nil
		})
	}
	if cfg.NATS != nil {
		g.Go(func() error {
			ready.watchNATS(gctx, cfg.NATS, grace)
			return nil
		})
	}
	g.Go(func() error {
		<-gctx.Done()
		ready.stop()
		stopGRPC(cfg.Server, timeout)
		sctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		_ = httpSrv.Shutdown(sctx)
		if adminSrv != nil {
			_ = adminSrv.Shutdown(sctx)
		}
		return nil
	})
	return g.Wait()
}

// serviceNames is the set of gRPC services registered on s.
func serviceNames(s *grpc.Server) map[string]bool {
	out := map[string]bool{}
	for n := range s.GetServiceInfo() {
		out[n] = true
	}
	return out
}

// stopGRPC stops gracefully, forcing the stop after timeout (long-lived streams such as event tails).
func stopGRPC(s *grpc.Server, timeout time.Duration) {
	done := make(chan struct{})
	go func() {
		s.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(timeout):
		s.Stop()
	}
}

// adminWriteTimeout is the shortest write timeout of the admin listener (CPU profiles take seconds).
const adminWriteTimeout = 5 * time.Minute

// HTTPLimits bound how long a client may hold an HTTP connection and how much header it may send: a
// client that trickles its request (slowloris) is cut off by ReadHeaderTimeout or ReadTimeout.
type HTTPLimits struct {
	// ReadHeaderTimeout bounds reading the request headers.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading the whole request, body included.
	ReadTimeout time.Duration
	// WriteTimeout bounds the time from the end of the request headers to the end of the response.
	WriteTimeout time.Duration
	// IdleTimeout closes a keep-alive connection idle for this long.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds the request line and headers.
	MaxHeaderBytes int
}

// DefaultHTTPLimits are the limits of zero HTTPLimits fields.
func DefaultHTTPLimits() HTTPLimits {
	return HTTPLimits{ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10}
}

// withDefaults fills the zero fields from DefaultHTTPLimits.
func (l HTTPLimits) withDefaults() HTTPLimits {
	d := DefaultHTTPLimits()
	for _, f := range []struct{ v, d *time.Duration }{
		{&l.ReadHeaderTimeout, &d.ReadHeaderTimeout}, {&l.ReadTimeout, &d.ReadTimeout},
		{&l.WriteTimeout, &d.WriteTimeout}, {&l.IdleTimeout, &d.IdleTimeout},
	} {
		if *f.v <= 0 {
			*f.v = *f.d
		}
	}
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = d.MaxHeaderBytes
	}
	return l
}

// server is an http.Server with the limits.
func (l HTTPLimits) server(h http.Handler, tlsConfig *tls.Config, log *slog.Logger) *http.Server {
	l = l.withDefaults()
	return &http.Server{Handler: h, TLSConfig: tlsConfig,
		ReadHeaderTimeout: l.ReadHeaderTimeout, ReadTimeout: l.ReadTimeout, WriteTimeout: l.WriteTimeout,
		IdleTimeout: l.IdleTimeout, MaxHeaderBytes: l.MaxHeaderBytes,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
}
