//go:build linux

package app_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentid/agentid/pkg/clickhousedev"
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/service"
	"github.com/agentid/agentid/pkg/testkit"
	"github.com/agentid/agentid/services/monitor/app"
	"github.com/agentid/agentid/services/monitor/internal/ingest"
	"github.com/agentid/agentid/services/monitor/internal/store/clickhouse"
	"github.com/agentid/agentid/services/monitor/internal/store/duckdb"
)

// benchProfileEnv names a file prefix: set, each sub-benchmark writes the CPU profile of its timed
// part (the drain, not the publishing before it) to PREFIX-<engine>-<path>.pprof.
const benchProfileEnv = "AGENTID_BENCH_CPUPROFILE"

// BenchmarkIngest measures sustained ingest through the whole path: a backlog of b.N telemetry
// rows on TELEMETRY (token.requested.batch events of 256 requests and access.recorded events of
// 500 accesses, alternately, as the issuer and the verifier SDK send them under load) drained by
// the monitor's ingest consumer with its real batching into the store, the engine on this
// machine. path=monitor is the whole monitor service (app.New: agents projection, enrichment,
// detection on every stored batch, alert publication); path=consumer is the ingest consumer and
// the store alone. It reports events/s from the start of the consumer, steady-events/s from its
// first acknowledgement, and the CPU per event of this process and of the ClickHouse server.
// The publishing before the timer is not measured. Run with, e.g.,
//
//	go test -run '^$' -bench Ingest -benchtime 400000x -timeout 30m ./services/monitor/app/
//
// The ClickHouse store checks every batch against its stored rows for 5 minutes after its first
// insert (a restarted monitor's redeliveries); a drain shorter than that runs in that mode.
func BenchmarkIngest(b *testing.B) {
	for _, engine := range []string{"duckdb", "clickhouse"} {
		for _, path := range []string{"consumer", "monitor"} {
			b.Run(fmt.Sprintf("engine=%s/path=%s", engine, path), func(b *testing.B) {
				benchIngest(b, engine, path)
			})
		}
	}
}

func benchIngest(b *testing.B, engine, path string) {
	ctx := context.Background()
	var (
		cfg    app.Config
		server *clickhousedev.Server
	)
	switch engine {
	case "duckdb":
		cfg.DuckDBPath = filepath.Join(b.TempDir(), "telemetry.duckdb")
	case "clickhouse":
		srv, err := clickhousedev.Start(ctx, clickhousedev.Config{})
		if err != nil {
			clickhousedev.Unavailable(b, err)
		}
		b.Cleanup(func() { _ = srv.Stop() })
		server, cfg.ClickHouseDSN = srv, srv.DSN("agentid")
	}
	n := testkit.StartNATS(b)
	es := eventstore.New(n.JetStream(b), eventstore.WithSource("agentid/issuer"), eventstore.WithLogger(quiet), eventstore.WithRegisterer(nil))
	if err := es.EnsureStreams(ctx); err != nil {
		b.Fatal(err)
	}
	agents := loadAgents(50)
	registerAgents(b, es, agents)
	gen := newLoadGen(es, agents, 0)
	for i := 0; gen.published() < int64(b.N); i++ {
		if err := gen.publishNext(ctx, i%2 == 0); err != nil {
			b.Fatal(err)
		}
	}
	rows, _, _ := gen.result()
	_, last, _ := position(ctx, es.JetStream())

	tasks, closeStore := ingestTasks(b, path, cfg, es)
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, len(tasks))
	defer func() {
		cancel()
		for range tasks {
			if err := <-done; err != nil {
				b.Errorf("task: %v", err)
			}
		}
		if err := closeStore(); err != nil {
			b.Errorf("close: %v", err)
		}
	}()

	stopProfile := startProfile(b, engine, path)
	cpu, serverCPU := processCPU(b), serverCPUOf(b, server)
	b.ResetTimer()
	start := time.Now()
	for _, task := range tasks {
		go func() { done <- task(runCtx) }()
	}
	var first time.Time
	var firstFloor uint64
	testkit.Eventually(b, 30*time.Minute, "the backlog stored", func() (bool, error) {
		floor, _, err := position(ctx, es.JetStream())
		if err == nil && floor > 0 && first.IsZero() {
			first, firstFloor = time.Now(), floor
		}
		return floor >= last, nil
	})
	end := time.Now()
	b.StopTimer()
	stopProfile()
	b.ReportMetric(float64(rows)/end.Sub(start).Seconds(), "events/s")
	if steady := end.Sub(first); steady > 0 {
		b.ReportMetric(float64(rows-rowsUpTo(firstFloor))/steady.Seconds(), "steady-events/s")
	}
	b.ReportMetric(float64((processCPU(b)-cpu).Nanoseconds())/1e3/float64(rows), "cpu-µs/event")
	if server != nil {
		b.ReportMetric(float64((serverCPUOf(b, server)-serverCPU).Nanoseconds())/1e3/float64(rows), "server-cpu-µs/event")
	}
}

// rowsUpTo is how many rows the first seq events of the load hold (tokens first, then accesses).
func rowsUpTo(seq uint64) int64 {
	s := int64(seq)
	return (s+1)/2*loadTokenBatch + s/2*loadAccessBatch
}

// ingestTasks builds what drains TELEMETRY on path and the function that closes its store.
func ingestTasks(b *testing.B, path string, cfg app.Config, es *eventstore.Store) ([]service.Task, func() error) {
	b.Helper()
	if path == "monitor" {
		a, err := app.New(cfg, app.Deps{Store: es, Logger: quiet, Registerer: prometheus.NewRegistry()})
		if err != nil {
			b.Fatal(err)
		}
		return a.Tasks(), a.Close
	}
	var (
		st interface {
			ingest.Inserter
			Close() error
		}
		err error
	)
	if cfg.ClickHouseDSN != "" {
		st, err = clickhouse.Open(context.Background(), clickhouse.Config{DSN: cfg.ClickHouseDSN, Logger: quiet})
	} else {
		st, err = duckdb.Open(context.Background(), cfg.DuckDBPath)
	}
	if err != nil {
		b.Fatal(err)
	}
	c, err := ingest.NewConsumer(ingest.Config{Source: es, Store: st, Logger: quiet, Registerer: prometheus.NewRegistry()})
	if err != nil {
		b.Fatal(err)
	}
	return []service.Task{c.Run}, st.Close
}

// startProfile starts the CPU profile of the timed part when benchProfileEnv is set.
func startProfile(b *testing.B, engine, path string) (stop func()) {
	prefix := os.Getenv(benchProfileEnv)
	if prefix == "" {
		return func() {}
	}
	f, err := os.Create(fmt.Sprintf("%s-%s-%s.pprof", prefix, engine, path))
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		b.Fatal(err)
	}
	return func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			b.Error(err)
		}
	}
}

// processCPU is the CPU time of this process (NATS, the monitor, DuckDB's threads).
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// serverCPUOf is the CPU time of the ClickHouse server process (0 without one), from /proc.
func serverCPUOf(b *testing.B, srv *clickhousedev.Server) time.Duration {
	if srv == nil {
		return 0
	}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", srv.PID()))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the command name (in parentheses, which may hold spaces): utime and stime are
	// the 14th and 15th fields of the line, in clock ticks (100 per second on Linux).
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+1:]))
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		b.Fatalf("/proc/%d/stat: %q", srv.PID(), raw)
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond
}
