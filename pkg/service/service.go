// Package service is the contract between a service's wiring (services/<svc>/app) and the processes that
// run it: the service's own binary (Main) and the all-in-one `agentid dev` (Run with all five components).
package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

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
	// HTTPAddr is the listen address for HTTP components, /metrics and /healthz; empty disables HTTP.
	HTTPAddr string
	// Server is the gRPC server (built with grpcx.NewServer).
	Server *grpc.Server
	// Health, if set, is marked SERVING once listeners are up and NOT_SERVING on shutdown.
	Health HealthSetter
	// Components to run.
	Components []Component
	// Tasks are extra long-running tasks (engines, bootstrap) run beside the components'.
	Tasks []Task
	// Logger for lifecycle messages.
	Logger *slog.Logger
	// ShutdownTimeout bounds the graceful stop (default 10s).
	ShutdownTimeout time.Duration
	// OnReady is called once both listeners are bound, with their actual addresses.
	OnReady func(grpcAddr, httpAddr string)
}

// Run registers the components, binds the listeners, runs every task and serves until ctx is done or a
// task fails; it then stops the servers gracefully and returns the first error (nil on a clean stop).
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

	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.Handler())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	var tasks []Task
	for _, c := range cfg.Components {
		c.RegisterGRPC(cfg.Server)
		if hc, ok := c.(HTTPComponent); ok {
			mux.Handle("/", hc.HTTPHandler())
		}
		tasks = append(tasks, c.Tasks()...)
	}
	tasks = append(tasks, cfg.Tasks...)

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
	httpSrv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := cfg.Server.Serve(grpcLis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("gRPC server: %w", err)
		}
		return nil
	})
	if httpLis != nil {
		g.Go(func() error {
			if err := httpSrv.Serve(httpLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("HTTP server: %w", err)
			}
			return nil
		})
	}
	for _, t := range tasks {
		g.Go(func() error {
			if err := t(gctx); err != nil && gctx.Err() == nil {
				return err
			}
			return nil
		})
	}
	if cfg.Health != nil {
		cfg.Health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	}
	log.Info("serving", "grpc", grpcLis.Addr().String(), "http", httpAddr)
	if cfg.OnReady != nil {
		cfg.OnReady(grpcLis.Addr().String(), httpAddr)
	}
	g.Go(func() error {
		<-gctx.Done()
		if cfg.Health != nil {
			cfg.Health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
		}
		stopGRPC(cfg.Server, timeout)
		sctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		_ = httpSrv.Shutdown(sctx)
		return nil
	})
	return g.Wait()
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
