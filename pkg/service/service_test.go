package service_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/agentid/agentid/pkg/grpcx"
	"github.com/agentid/agentid/pkg/service"
	"github.com/agentid/agentid/pkg/testkit"
)

// waitTimeout bounds every poll; generous, since the machine may be busy.
const waitTimeout = 30 * time.Second

var quiet = slog.New(slog.DiscardHandler)

// component is a service.Component with one empty gRPC service of its own and no tasks.
type component struct {
	name    string
	grpcSvc string
}

func (c *component) Name() string { return c.name }

func (c *component) RegisterGRPC(s *grpc.Server) {
	s.RegisterService(&grpc.ServiceDesc{ServiceName: c.grpcSvc, HandlerType: (*any)(nil)}, struct{}{})
}

func (c *component) Tasks() []service.Task { return nil }

// gatedComponent is ready once release is closed; its Ready fails failures times first.
type gatedComponent struct {
	component
	release  chan struct{}
	failures atomic.Int32
	calls    atomic.Int32
}

func (c *gatedComponent) Ready(ctx context.Context) error {
	c.calls.Add(1)
	if c.failures.Add(-1) >= 0 {
		return errors.New("projection store unavailable")
	}
	select {
	case <-c.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// running is a service.Run in progress.
type running struct {
	health   healthpb.HealthClient
	hs       *health.Server
	httpBase string
	onReady  atomic.Int32
	done     chan error
	cancel   context.CancelFunc
}

func start(t *testing.T, cfg service.RunConfig) *running {
	t.Helper()
	r := &running{hs: health.NewServer(), done: make(chan error, 1)}
	cfg.Server = grpcx.NewServer(grpcx.ServerConfig{Logger: quiet, Health: r.hs})
	cfg.Health = r.hs
	cfg.GRPCAddr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Logger = quiet
	cfg.OnReady = func() { r.onReady.Add(1) }
	addrs := make(chan [2]string, 1)
	cfg.OnListening = func(g, h string) { addrs <- [2]string{g, h} }
	ctx, cancel := context.WithCancel(t.Context())
	r.cancel = cancel
	go func() { r.done <- service.Run(ctx, cfg) }()
	var a [2]string
	select {
	case a = <-addrs:
	case err := <-r.done:
		t.Fatalf("Run returned before listening: %v", err)
	case <-time.After(waitTimeout):
		t.Fatal("Run did not listen")
	}
	t.Cleanup(func() {
		cancel()
		<-r.done
	})
	conn, err := grpc.NewClient(a[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	r.health = healthpb.NewHealthClient(conn)
	r.httpBase = "http://" + a[1]
	return r
}

// status asks the gRPC health service about name.
func (r *running) status(t *testing.T, name string) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	resp, err := r.health.Check(ctx, &healthpb.HealthCheckRequest{Service: name})
	if err != nil {
		t.Fatalf("health check %q: %v", name, err)
	}
	return resp.GetStatus()
}

// get answers the status code and body of GET path.
func (r *running) get(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := http.Get(r.httpBase + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// eventually polls check until it returns nil, failing the test with its last error at the deadline.
func eventually(t *testing.T, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still %v after %s", what, err, waitTimeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// want checks the health of several names and /readyz at once.
func (r *running) want(t *testing.T, statuses map[string]healthpb.HealthCheckResponse_ServingStatus, readyz int, bodyHas string) error {
	t.Helper()
	for name, st := range statuses {
		if got := r.status(t, name); got != st {
			return fmt.Errorf("health %q = %v, want %v", name, got, st)
		}
	}
	code, body := r.get(t, "/readyz")
	if code != readyz || !strings.Contains(body, bodyHas) {
		return fmt.Errorf("/readyz = %d %q, want %d containing %q", code, body, readyz, bodyHas)
	}
	return nil
}

const (
	serving    = healthpb.HealthCheckResponse_SERVING
	notServing = healthpb.HealthCheckResponse_NOT_SERVING
)

func TestReadinessWaitsForEveryReadier(t *testing.T) {
	slow := &gatedComponent{component: component{name: "slow", grpcSvc: "test.v1.SlowService"}, release: make(chan struct{})}
	slow.failures.Store(1) // a failing Ready is asked again, not fatal
	fast := &component{name: "fast", grpcSvc: "test.v1.FastService"}
	check := make(chan struct{})
	r := start(t, service.RunConfig{
		Components: []service.Component{slow, fast},
		ReadyChecks: []service.ReadyCheck{{Name: "bootstrap", Ready: func(ctx context.Context) error {
			select {
			case <-check:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}}},
	})

	for _, path := range []string{"/livez", "/healthz"} {
		if code, body := r.get(t, path); code != http.StatusOK || body != "ok\n" {
			t.Fatalf("GET %s = %d %q while starting, want 200 ok", path, code, body)
		}
	}
	// The retry after the failing first Ready is what shows the component is still being waited for.
	eventually(t, "slow's Ready asked again after failing", func() error {
		if n := slow.calls.Load(); n < 2 {
			return fmt.Errorf("%d calls", n)
		}
		return nil
	})
	if err := r.want(t, map[string]healthpb.HealthCheckResponse_ServingStatus{
		"": notServing, "slow": notServing, "test.v1.SlowService": notServing,
		"fast": serving, "test.v1.FastService": serving,
	}, http.StatusServiceUnavailable, "waiting for slow, bootstrap"); err != nil {
		t.Fatal(err)
	}

	close(slow.release)
	eventually(t, "slow ready, bootstrap pending", func() error {
		return r.want(t, map[string]healthpb.HealthCheckResponse_ServingStatus{
			"": notServing, "slow": serving, "test.v1.SlowService": serving,
		}, http.StatusServiceUnavailable, "waiting for bootstrap")
	})
	if n := r.onReady.Load(); n != 0 {
		t.Fatalf("OnReady called %d times before the bootstrap check passed", n)
	}

	close(check)
	eventually(t, "everything ready", func() error {
		return r.want(t, map[string]healthpb.HealthCheckResponse_ServingStatus{
			"": serving, "slow": serving, "fast": serving, healthpb.Health_ServiceDesc.ServiceName: serving,
		}, http.StatusOK, "ready")
	})
	eventually(t, "OnReady called", func() error {
		if n := r.onReady.Load(); n != 1 {
			return fmt.Errorf("OnReady called %d times, want 1", n)
		}
		return nil
	})

	r.cancel()
	if err := <-r.done; err != nil {
		t.Fatalf("Run after cancel = %v, want nil", err)
	}
	r.done <- nil // for the cleanup
	resp, err := r.hs.Check(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil || resp.GetStatus() != notServing {
		t.Fatalf("overall health after shutdown = %v (%v), want NOT_SERVING", resp.GetStatus(), err)
	}
}

func TestReadinessFollowsTheNATSConnection(t *testing.T) {
	n := testkit.StartNATS(t)
	nc := n.Conn(t)
	const grace = 300 * time.Millisecond
	r := start(t, service.RunConfig{
		Components: []service.Component{&component{name: "registry", grpcSvc: "test.v1.RegistryService"}},
		NATS:       nc, NATSGrace: grace,
	})
	ready := map[string]healthpb.HealthCheckResponse_ServingStatus{"": serving, "registry": serving, "test.v1.RegistryService": serving}
	down := map[string]healthpb.HealthCheckResponse_ServingStatus{"": notServing, "registry": notServing, "test.v1.RegistryService": notServing}
	eventually(t, "ready with NATS up", func() error { return r.want(t, ready, http.StatusOK, "ready") })

	stopped := time.Now()
	n.Shutdown()
	eventually(t, "not ready with NATS down", func() error {
		return r.want(t, down, http.StatusServiceUnavailable, "NATS disconnected")
	})
	if took := time.Since(stopped); took < grace {
		t.Fatalf("readiness dropped %s after NATS stopped, before the %s grace period", took, grace)
	}
	if code, _ := r.get(t, "/livez"); code != http.StatusOK {
		t.Fatalf("/livez = %d while NATS is down, want 200: the process is alive", code)
	}

	n.Restart(t)
	eventually(t, "ready again after NATS returned", func() error { return r.want(t, ready, http.StatusOK, "ready") })
	if got := r.onReady.Load(); got != 1 {
		t.Fatalf("OnReady called %d times, want once (not again after NATS returned)", got)
	}
}

func TestRunRejectsAnUnnamedReadyCheck(t *testing.T) {
	err := service.Run(t.Context(), service.RunConfig{
		Server:      grpc.NewServer(),
		GRPCAddr:    "127.0.0.1:0",
		ReadyChecks: []service.ReadyCheck{{Ready: func(context.Context) error { return nil }}},
		Logger:      quiet,
	})
	if err == nil || !strings.Contains(err.Error(), "ReadyCheck") {
		t.Fatalf("Run = %v, want an error about the ReadyCheck", err)
	}
}
