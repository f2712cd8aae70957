package e2e_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/temporaldev"
	"github.com/agentid/agentid/pkg/testkit"
)

// metricSum scrapes the platform's /metrics and sums the samples of one metric whose labels contain
// every given label pair (`name="value"`).
func metricSum(ctx context.Context, httpURL, metric string, labels ...string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, httpURL+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("/metrics: HTTP %d", res.StatusCode)
	}
	var sum float64
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		name, rest, _ := strings.Cut(line, " ")
		labelSet := ""
		if i := strings.IndexByte(name, '{'); i >= 0 {
			name, labelSet = name[:i], name[i:]
		}
		if name != metric {
			continue
		}
		match := true
		for _, l := range labels {
			match = match && strings.Contains(labelSet, l)
		}
		if !match {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return 0, fmt.Errorf("/metrics: %q: %w", line, err)
		}
		sum += v
	}
	return sum, sc.Err()
}

// telemetryDrops is how many token telemetry events the issuer counted as not published (dropped
// from a full buffer or failed to publish).
func telemetryDrops(t *testing.T, ctx context.Context, httpURL string) int {
	t.Helper()
	var total float64
	for _, m := range []string{"issuer_telemetry_dropped_total", "issuer_telemetry_publish_failures_total"} {
		v, err := metricSum(ctx, httpURL, m)
		if err != nil {
			t.Fatal(err)
		}
		total += v
	}
	return int(total)
}

// readyz returns the HTTP status of the platform's /readyz.
func readyz(ctx context.Context, httpURL string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, httpURL+"/readyz", nil)
	if err != nil {
		return 0, err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	res.Body.Close()
	return res.StatusCode, nil
}

// TestFaultNATSRestartMidStream runs `agentid dev` on an external JetStream server (fsync always) and
// takes that server down in the middle of the workload, after the first agent is active: readiness
// drops, calls fail meanwhile, and once NATS is back the workload completes with every invariant
// intact — telemetry exactly one row per issued token minus the drops the issuer counted.
func TestFaultNATSRestartMidStream(t *testing.T) {
	agentidBin, _ := buildBinaries(t)
	n := testkit.StartNATS(t, testkit.WithSyncAlways())
	e := newFaultEnv(t, agentidBin, "--nats-url", n.URL(), "--nats-grace", "1s")
	e.natsURL = n.URL()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	e.start()
	tg := e.target(ctx)
	before := snapshotStreams(t, ctx, n.URL())

	w := newFaultWorkload(t, "nats-restart")
	var downFor time.Duration
	w.after = func(step string) {
		if step != "active-a" {
			return
		}
		down := time.Now()
		n.Shutdown()
		testkit.Eventually(t, 0, "/readyz to report NOT ready while NATS is down", func() (bool, error) {
			code, err := readyz(ctx, e.p.HTTPURL)
			return code == http.StatusServiceUnavailable, err
		})
		n.Start(t)
		downFor = time.Since(down)
		testkit.Eventually(t, 0, "/readyz to report ready once NATS is back", func() (bool, error) {
			code, err := readyz(ctx, e.p.HTTPURL)
			return code == http.StatusOK, err
		})
	}
	if err := w.run(ctx, t, tg); err != nil {
		t.Fatalf("workload across a NATS restart: %v\n%s", err, e.p.Output())
	}
	t.Logf("NATS was down for %s in the middle of the workload", downFor.Round(time.Millisecond))
	before.check(t, ctx, e.target(ctx), w, false, telemetryDrops(t, ctx, e.p.HTTPURL))
}

// oldDeliveryCap is how many deliveries the lifecycle consumer used to allow an agent event before it
// gave up on it for good (into a failed-event log nobody read): about 20 minutes of Temporal being
// unreachable with the default back-off.
const oldDeliveryCap = 10

// TestFaultTemporalDownLongerThanTheOldRetryBudget runs `agentid dev` on an external Temporal dev
// server that is down when an agent registers, and stays down for more deliveries of the agent event
// than the consumer used to allow (with short back-off delays, so it takes seconds, not 20 minutes).
// Once Temporal is back the agent is provisioned: nothing was given up, nothing is in the failed-event
// log, and the invariants hold.
func TestFaultTemporalDownLongerThanTheOldRetryBudget(t *testing.T) {
	agentidBin, _ := buildBinaries(t)
	bin, err := temporaldev.EnsureBinary(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	tcfg := temporaldev.Config{Binary: bin, Port: freePorts(t, 1)[0], UIPort: -1, DBFile: filepath.Join(t.TempDir(), "temporal.db")}
	srv, err := temporaldev.Start(t.Context(), tcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop() })
	e := newFaultEnv(t, agentidBin, "--temporal-address", srv.HostPort(), "--event-retry-backoff", "50ms,100ms,200ms",
		"--workflow-start-timeout", "500ms")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	e.start()
	tg := e.target(ctx)
	before := snapshotStreams(t, ctx, e.p.NATSURL)
	if err := srv.Stop(); err != nil {
		t.Fatalf("stop Temporal: %v", err)
	}

	w := newFaultWorkload(t, "temporal-down")
	done := make(chan error, 1)
	go func() { done <- w.run(ctx, t, tg) }()
	redeliveries := func() (float64, error) {
		return metricSum(ctx, e.p.HTTPURL, "agentid_eventstore_consumer_redeliveries_total", `consumer="lifecycle-agent-events"`)
	}
	testkit.Eventually(t, 0, fmt.Sprintf("more than %d deliveries of the agent event while Temporal is down", oldDeliveryCap), func() (bool, error) {
		n, err := redeliveries()
		return n > oldDeliveryCap, fmt.Errorf("%v redeliveries (%v)", n, err)
	})
	n, _ := redeliveries()
	t.Logf("Temporal down: the agent event was redelivered %v times (the old cap was %d deliveries)", n, oldDeliveryCap)

	if srv, err = temporaldev.Start(t.Context(), tcfg); err != nil {
		t.Fatalf("start Temporal again: %v", err)
	}
	t.Cleanup(func() { _ = srv.Stop() })
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("workload after Temporal came back: %v\n%s", err, e.p.Output())
		}
	case <-ctx.Done():
		t.Fatal("the workload did not finish")
	}
	js := natsJS(t, e.p.NATSURL)
	if kv, err := js.KeyValue(ctx, eventstore.FailedEventsBucket); err == nil {
		if keys, err := kv.ListKeys(ctx); err == nil {
			for k := range keys.Keys() {
				t.Errorf("failed-event log holds %s: an event was given up on", k)
			}
		}
	}
	before.check(t, ctx, e.target(ctx), w, false, telemetryDrops(t, ctx, e.p.HTTPURL))
}
