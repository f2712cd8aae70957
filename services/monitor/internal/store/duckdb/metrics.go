package duckdb

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Descriptions of the store's memory, as DuckDB accounts for it (duckdb_memory()): by tag, what
// its buffer manager holds in memory and what it spilled to the temporary directory. Memory DuckDB
// does not account for (its allocator's, the code's) is in the process's resident set only.
var (
	memoryDesc = prometheus.NewDesc("monitor_duckdb_memory_bytes",
		"Memory the DuckDB telemetry store's buffer manager holds, by tag (duckdb_memory()).", []string{"tag"}, nil)
	temporaryDesc = prometheus.NewDesc("monitor_duckdb_temporary_storage_bytes",
		"Bytes the DuckDB telemetry store spilled to its temporary directory, by tag (duckdb_memory()).", []string{"tag"}, nil)
	memoryLimitDesc = prometheus.NewDesc("monitor_duckdb_memory_limit_bytes",
		"The DuckDB telemetry store's memory limit (its buffer pool's bound).", nil, nil)
)

// collectTimeout bounds one scrape's query (duckdb_memory() reads counters and takes no table
// lock); a scrape that times out or fails reports none of the store's metrics.
const collectTimeout = 2 * time.Second

// Collector returns a collector of the store's memory (monitor_duckdb_memory_bytes,
// monitor_duckdb_temporary_storage_bytes by tag, and monitor_duckdb_memory_limit_bytes for a
// database file), read at each scrape. A scrape whose query fails reports none of them rather than stale or zero values.
func (s *Store) Collector() prometheus.Collector { return memoryCollector{s} }

type memoryCollector struct{ s *Store }

func (c memoryCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- memoryDesc
	ch <- temporaryDesc
	ch <- memoryLimitDesc
}

func (c memoryCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), collectTimeout)
	defer cancel()
	mem, err := c.s.Memory(ctx)
	if err != nil {
		c.s.log.Warn("duckdb: memory metrics", "err", err)
		return
	}
	for _, m := range mem.Tags {
		ch <- prometheus.MustNewConstMetric(memoryDesc, prometheus.GaugeValue, float64(m.Bytes), m.Tag)
		ch <- prometheus.MustNewConstMetric(temporaryDesc, prometheus.GaugeValue, float64(m.TemporaryBytes), m.Tag)
	}
	if mem.LimitBytes > 0 { // a store in memory has none
		ch <- prometheus.MustNewConstMetric(memoryLimitDesc, prometheus.GaugeValue, float64(mem.LimitBytes))
	}
}

// TagMemory is what DuckDB's buffer manager holds for one tag.
type TagMemory struct {
	Tag            string
	Bytes          int64
	TemporaryBytes int64
}

// Memory is the store's memory as DuckDB accounts for it.
type Memory struct {
	Tags       []TagMemory
	LimitBytes int64 // the memory limit Open set (0: none, a store in memory)
}

// Memory reads duckdb_memory(), with the memory limit Open set.
func (s *Store) Memory(ctx context.Context) (Memory, error) {
	var m Memory
	rows, err := s.db.QueryContext(ctx, `SELECT tag, memory_usage_bytes, temporary_storage_bytes FROM duckdb_memory() ORDER BY tag`)
	if err != nil {
		return Memory{}, err
	}
	defer rows.Close()
	for rows.Next() {
		var t TagMemory
		if err := rows.Scan(&t.Tag, &t.Bytes, &t.TemporaryBytes); err != nil {
			return Memory{}, err
		}
		m.Tags = append(m.Tags, t)
	}
	if err := rows.Err(); err != nil {
		return Memory{}, err
	}
	m.LimitBytes = s.memoryLimit
	return m, nil
}

// MemoryLimit is the bound Open set on the buffer pool, in bytes (0: none, a store in memory).
func (s *Store) MemoryLimit() int64 { return s.memoryLimit }
