package dev

import (
	"fmt"
	"log/slog"
	"math"
	"os"
	"runtime/debug"
)

const (
	// DefaultGoMemoryLimit is the soft limit on the process's Go memory (heap, stacks, runtime
	// structures) that `agentid dev` sets unless --go-memory-limit or $GOMEMLIMIT says otherwise.
	// It covers neither DuckDB's buffer pool (--duckdb-memory-limit) nor the Temporal dev server
	// and ClickHouse, which are child processes. Without it the Go heap levels off at about twice
	// its live size (GOGC=100); under it the collector runs earlier once the heap nears the limit,
	// so the Go side levels off near the limit instead, and the resident memory no longer follows
	// the bounded state that fills after the first minutes of load (the judged-row filter, the
	// replay log, stream buffers: about 330 MB live at 1,000 tokens/s; docs/performance.md,
	// "Memory over an hour"). It is soft: a live heap above it is not refused, the collector then
	// works harder, up to about half the CPU.
	DefaultGoMemoryLimit int64 = 512 << 20
	// MinGoMemoryLimit is the smallest --go-memory-limit accepted: `agentid dev` holds about
	// 120 MiB of Go heap before any load (the token index is made at its size at start), so a
	// lower limit would keep the collector running from the start. Limits under about 1.5× the
	// live heap at a given load cost collector CPU; docs/deploy.md, "Go's memory".
	MinGoMemoryLimit int64 = 128 << 20
	// goMemLimitEnv is the Go runtime's own setting, read by the runtime at start. When it is set
	// and --go-memory-limit is not given, the runtime's value stands.
	goMemLimitEnv = "GOMEMLIMIT"
)

// Where the Go memory limit of a Run comes from (logged at start).
const (
	goMemLimitFromConfig  = "config"
	goMemLimitFromDefault = "default"
	goMemLimitFromFlag    = "--go-memory-limit"
	goMemLimitFromEnv     = "$" + goMemLimitEnv
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

// resolveGoMemoryLimit is the command's choice: the flag when given, else the runtime's own when
// $GOMEMLIMIT is set, else DefaultGoMemoryLimit.
func resolveGoMemoryLimit(flag int64, flagGiven bool) (limit int64, source string) {
	switch {
	case flagGiven:
		return flag, goMemLimitFromFlag
	case os.Getenv(goMemLimitEnv) != "":
		return 0, goMemLimitFromEnv
	default:
		return DefaultGoMemoryLimit, goMemLimitFromDefault
	}
}

// applyGoMemoryLimit sets the Go runtime's soft memory limit for the life of Run, logs the limit
// in force and where it comes from, and returns what puts the previous one back. A limit of 0
// changes nothing. The limit is process-wide, like the runtime's: two Runs in one process would
// share it.
func applyGoMemoryLimit(limit int64, source string, log *slog.Logger) (restore func()) {
	if source == "" {
		source = goMemLimitFromConfig
	}
	prev := debug.SetMemoryLimit(-1)
	if limit == 0 {
		switch {
		case prev == math.MaxInt64:
			log.Info("Go memory limit: none", "source", source)
		case prev < MinGoMemoryLimit:
			log.Warn("Go memory limit below the minimum --go-memory-limit: the collector may run all the time", "bytes", prev, "mib", prev>>20, "minimum_bytes", MinGoMemoryLimit, "source", source)
		default:
			log.Info("Go memory limit", "bytes", prev, "mib", prev>>20, "source", source)
		}
		return func() {}
	}
	debug.SetMemoryLimit(limit)
	attrs := []any{"bytes", limit, "mib", limit >> 20, "source", source}
	if prev != math.MaxInt64 {
		attrs = append(attrs, "replaces_bytes", prev)
	}
	log.Info("Go memory limit", attrs...)
	return func() { debug.SetMemoryLimit(prev) }
}
