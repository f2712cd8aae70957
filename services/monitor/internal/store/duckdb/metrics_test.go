//go:build unix

package duckdb_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/agentid/agentid/services/monitor/internal/store"
	"github.com/agentid/agentid/services/monitor/internal/store/duckdb"
)

// TestMemoryLimit checks the buffer pool's bound of a database file: the default, a chosen one, and
// a limit below the minimum refused before anything is created.
func TestMemoryLimit(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct {
		name  string
		opts  []duckdb.Option
		want  string
		bytes int64
	}{
		{"default", nil, "64.0 MiB", 64 << 20},
		{"zero keeps the default", []duckdb.Option{duckdb.WithMemoryLimit(0)}, "64.0 MiB", 64 << 20},
		{"chosen", []duckdb.Option{duckdb.WithMemoryLimit(300 << 20)}, "300.0 MiB", 300 << 20},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, err := duckdb.Open(ctx, filepath.Join(t.TempDir(), "telemetry.duckdb"), tt.opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			var limit string
			if err := s.DB().QueryRowContext(ctx, `SELECT current_setting('memory_limit')`).Scan(&limit); err != nil || limit != tt.want {
				t.Fatalf("memory_limit = %q, %v; want %s", limit, err, tt.want)
			}
			m, err := s.Memory(ctx)
			if err != nil || m.LimitBytes != tt.bytes {
				t.Fatalf("Memory() limit = %d, %v; want %d", m.LimitBytes, err, tt.bytes)
			}
		})
	}
	for _, limit := range []int64{-1, 1, duckdb.MinMemoryLimit - 1} {
		path := filepath.Join(t.TempDir(), "telemetry.duckdb")
		s, err := duckdb.Open(ctx, path, duckdb.WithMemoryLimit(limit))
		if err == nil {
			_ = s.Close()
			t.Fatalf("limit %d accepted", limit)
		}
		if !strings.Contains(err.Error(), fmt.Sprintf("memory limit of %d bytes is below the minimum", limit)) {
			t.Fatalf("limit %d: %v", limit, err)
		}
		if files, _ := filepath.Glob(path + "*"); len(files) != 0 {
			t.Fatalf("limit %d refused but %v created", limit, files)
		}
	}
	mem, err := duckdb.Open(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	if m, err := mem.Memory(ctx); err != nil || m.LimitBytes != 0 || mem.MemoryLimit() != 0 {
		t.Fatalf("in-memory store: limit %d, %v; want none", m.LimitBytes, err)
	}
	if n := testutil.CollectAndCount(mem.Collector(), "monitor_duckdb_memory_limit_bytes"); n != 0 {
		t.Fatalf("in-memory store: %d limit metrics, want none", n)
	}
	if n := testutil.CollectAndCount(mem.Collector(), "monitor_duckdb_memory_bytes"); n == 0 {
		t.Fatal("in-memory store: no memory metrics")
	}
}

// TestMemoryCollector checks the store's memory metrics: the limit, the rows a checkpoint has not
// written yet counted under IN_MEMORY_TABLE, and nothing at all (neither stale nor zero values)
// once the store is closed.
func TestMemoryCollector(t *testing.T) {
	ctx := context.Background()
	s, err := duckdb.Open(ctx, filepath.Join(t.TempDir(), "telemetry.duckdb"), duckdb.WithMemoryLimit(48<<20))
	if err != nil {
		t.Fatal(err)
	}
	events := make([]store.Event, 5000)
	for i := range events {
		events[i] = benchEvent(i)
	}
	if err := s.Insert(ctx, events); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(s.Collector()); err != nil {
		t.Fatal(err)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP monitor_duckdb_memory_limit_bytes The DuckDB telemetry store's memory limit (its buffer pool's bound).
# TYPE monitor_duckdb_memory_limit_bytes gauge
monitor_duckdb_memory_limit_bytes 5.0331648e+07
`), "monitor_duckdb_memory_limit_bytes"); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var inMemory float64
	for _, mf := range mfs {
		if mf.GetName() != "monitor_duckdb_memory_bytes" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == "IN_MEMORY_TABLE" {
				inMemory = m.GetGauge().GetValue()
			}
		}
	}
	if inMemory <= 0 {
		t.Fatalf("IN_MEMORY_TABLE = %v after 5,000 rows not checkpointed, want more than 0", inMemory)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	done := make(chan int, 1)
	go func() { done <- testutil.CollectAndCount(s.Collector()) }()
	select {
	case n := <-done:
		if n != 0 {
			t.Fatalf("a closed store reported %d metrics, want none", n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("collecting a closed store did not return")
	}
}
