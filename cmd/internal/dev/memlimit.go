package dev

import (
	"fmt"
	"log/slog"
	"math"
	"os"
	"runtime/debug"
)

const (
	// DefaultGoMemoryLimit is the soft limit on the Go runtime's memory (heap, stacks, runtime
	// structures; not DuckDB's, which --duckdb-memory-limit bounds) that `agentid dev` sets unless
	// --go-memory-limit or $GOMEMLIMIT says otherwise. Under it the collector runs earlier instead of
	// letting the heap double its live size (GOGC=100) and returns freed pages to the system, so the
	// process's resident memory levels off once its bounded state (token index, replay log, judged
	// rows, stream buffers: about 300 MB at 1,000 tokens/s) has filled (docs/performance.md, "Memory
	// over an hour").
	DefaultGoMemoryLimit int64 = 512 << 20
	// MinGoMemoryLimit is the smallest --go-memory-limit accepted: below it the platform's own
	// bounded state would leave the collector running all the time.
	MinGoMemoryLimit int64 = 128 << 20
	// goMemLimitEnv is the Go runtime's own setting; when it is set and --go-memory-limit is not,
	// the runtime's value stands.
	goMemLimitEnv = "GOMEMLIMIT"
)

// checkGoMemoryLimit validates --go-memory-limit: 0 leaves the runtime's limit as it is
// ($GOMEMLIMIT, or none), anything else is at least MinGoMemoryLimit.
func checkGoMemoryLimit(limit int64) error {
	if limit == 0 {
		return nil
	}
	if limit < MinGoMemoryLimit {
		return fmt.Errorf("--go-memory-limit %d is below the minimum of %d bytes (%d MiB); 0 leaves the Go runtime's own limit ($%s, or none)", limit, MinGoMemoryLimit, MinGoMemoryLimit>>20, goMemLimitEnv)
	}
	return nil
}

// applyGoMemoryLimit sets the Go runtime's soft memory limit for the life of Run and returns what
// puts the previous one back. A limit of 0 changes nothing.
func applyGoMemoryLimit(limit int64, log *slog.Logger) (restore func()) {
	if limit == 0 {
		if cur := debug.SetMemoryLimit(-1); cur != math.MaxInt64 {
			log.Info("Go memory limit", "bytes", cur, "source", "$"+goMemLimitEnv)
		}
		return func() {}
	}
	prev := debug.SetMemoryLimit(limit)
	log.Info("Go memory limit", "bytes", limit, "source", "--go-memory-limit")
	return func() { debug.SetMemoryLimit(prev) }
}

// goMemoryLimitDefault is the flag's default: DefaultGoMemoryLimit, or 0 (the runtime's own) when
// $GOMEMLIMIT is set.
func goMemoryLimitDefault() int64 {
	if os.Getenv(goMemLimitEnv) != "" {
		return 0
	}
	return DefaultGoMemoryLimit
}
