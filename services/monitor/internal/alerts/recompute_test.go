package alerts_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentid/agentid/pkg/testkit"
	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
	"github.com/agentid/agentid/services/monitor/internal/alerts"
	"github.com/agentid/agentid/services/monitor/internal/store"
)

// gauge returns the value of a metric with the given labels in reg (ok false when absent).
func gauge(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if labels[l.GetName()] != l.GetValue() {
					continue metrics
				}
			}
			if m.GetGauge() != nil {
				return m.GetGauge().GetValue(), true
			}
			return m.GetCounter().GetValue(), true
		}
	}
	return 0, false
}

func runRuntime(t *testing.T, rt *alerts.Runtime) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rt.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

// TestRecomputationFailuresAreRetried: the store is down at start (tenants not listed, then one
// tenant failing): the runtime is not ready, retries with backoff and becomes ready once every
// tenant is recomputed; the failures are counted and the baseline age exported per tenant.
func TestRecomputationFailuresAreRetried(t *testing.T) {
	es := startStore(t)
	pub, _ := alerts.NewPublisher(es, quiet)
	reg := prometheus.NewRegistry()
	var listed, globex atomic.Int32
	var mu sync.Mutex
	var befores []uint64
	rt, err := alerts.NewRuntime(alerts.RuntimeConfig{
		Detect: func([]store.Event) []*monitorv1.Alert { return nil },
		Tenants: func(context.Context) ([]string, error) {
			if listed.Add(1) <= 2 {
				return nil, errors.New("clickhouse: connection refused")
			}
			return []string{"acme", "globex"}, nil
		},
		Recompute: func(_ context.Context, tenant string, _ time.Time, before uint64) error {
			mu.Lock()
			befores = append(befores, before)
			mu.Unlock()
			if tenant == "globex" && globex.Add(1) <= 2 {
				return errors.New("clickhouse: timeout")
			}
			return nil
		},
		AckFloor:       func(context.Context) (uint64, error) { return 41, nil },
		RecomputeRetry: 10 * time.Millisecond, RecomputeEvery: time.Hour,
		Publisher: pub, Logger: quiet, Registerer: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	runRuntime(t, rt)
	select {
	case <-rt.Ready():
	case <-time.After(testkit.DefaultWait):
		t.Fatal("not ready after the store came back")
	}
	if n, _ := gauge(t, reg, "monitor_baseline_recompute_failures_total", nil); n != 4 {
		t.Errorf("monitor_baseline_recompute_failures_total = %v, want 4 (two rounds unlisted, globex twice)", n)
	}
	if globex.Load() != 3 {
		t.Errorf("globex recomputed %d times, want 3", globex.Load())
	}
	for _, tenant := range []string{"acme", "globex"} {
		if age, ok := gauge(t, reg, "monitor_baseline_age_seconds", map[string]string{"tenant": tenant}); !ok || age < 0 || age > 60 {
			t.Errorf("monitor_baseline_age_seconds{tenant=%s} = %v (%v), want a fresh age", tenant, age, ok)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for _, b := range befores {
		if b != 42 {
			t.Fatalf("recomputed before stream sequence %d, want 42 (one past the ack floor)", b)
		}
	}
}

// TestDetectionDoesNotWaitForeverForBaselines: with the store down for good, a batch waits at most
// ReadyTimeout, is then judged (the detectors without baselines still run) and counted; later
// batches do not wait; an unreadable ack floor fails the round (nothing learned past it).
func TestDetectionDoesNotWaitForeverForBaselines(t *testing.T) {
	es := startStore(t)
	pub, _ := alerts.NewPublisher(es, quiet)
	reg := prometheus.NewRegistry()
	var judged, recomputed atomic.Int32
	rt, err := alerts.NewRuntime(alerts.RuntimeConfig{
		Detect:         func(rows []store.Event) []*monitorv1.Alert { judged.Add(int32(len(rows))); return nil },
		Tenants:        func(context.Context) ([]string, error) { return []string{"acme"}, nil },
		Recompute:      func(context.Context, string, time.Time, uint64) error { recomputed.Add(1); return nil },
		AckFloor:       func(context.Context) (uint64, error) { return 0, errors.New("nats: timeout") },
		RecomputeRetry: 10 * time.Millisecond, ReadyTimeout: 50 * time.Millisecond,
		Publisher: pub, Logger: quiet, Registerer: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	runRuntime(t, rt)
	rows := []store.Event{{EventID: "e1", Tenant: "acme", Agent: "tenants/acme/agents/a", Kind: store.KindAccess, Time: time.Now()}}
	rt.OnStored(t.Context(), rows)
	if judged.Load() != 1 {
		t.Fatalf("judged %d rows, want 1 after the ready timeout", judged.Load())
	}
	rt.OnStored(t.Context(), rows)
	if n, _ := gauge(t, reg, "monitor_detection_before_baselines_total", nil); n != 2 || judged.Load() != 2 {
		t.Fatalf("monitor_detection_before_baselines_total = %v, judged %d; want 2 and 2", n, judged.Load())
	}
	testkit.Eventually(t, 0, "retried rounds counted", func() (bool, error) {
		n, _ := gauge(t, reg, "monitor_baseline_recompute_failures_total", nil)
		return n >= 2, nil
	})
	if recomputed.Load() != 0 {
		t.Fatal("recomputed although the ack floor could not be read")
	}
	select {
	case <-rt.Ready():
		t.Fatal("ready without a recomputation")
	default:
	}
}
