package dev

import (
	"log/slog"
	"math"
	"runtime/debug"
	"testing"
)

func TestGoMemoryLimitIsSetForRunAndPutBack(t *testing.T) {
	before := debug.SetMemoryLimit(-1)
	log := slog.New(slog.DiscardHandler)

	restore := applyGoMemoryLimit(300<<20, log)
	if got := debug.SetMemoryLimit(-1); got != 300<<20 {
		restore()
		t.Fatalf("limit while serving = %d, want %d", got, 300<<20)
	}
	restore()
	if got := debug.SetMemoryLimit(-1); got != before {
		t.Fatalf("limit after Run = %d, want the previous %d back", got, before)
	}

	// 0 leaves the runtime's own limit alone.
	debug.SetMemoryLimit(200 << 20)
	t.Cleanup(func() { debug.SetMemoryLimit(before) })
	applyGoMemoryLimit(0, log)()
	if got := debug.SetMemoryLimit(-1); got != 200<<20 {
		t.Fatalf("limit 0 changed the runtime's limit to %d", got)
	}
}

func TestGoMemoryLimitDefaultGivesWayToGOMEMLIMIT(t *testing.T) {
	t.Setenv(goMemLimitEnv, "")
	if got := goMemoryLimitDefault(); got != DefaultGoMemoryLimit {
		t.Fatalf("default without $GOMEMLIMIT = %d, want %d", got, DefaultGoMemoryLimit)
	}
	if got := DefaultConfig().GoMemoryLimit; got != DefaultGoMemoryLimit {
		t.Fatalf("DefaultConfig().GoMemoryLimit = %d, want %d", got, DefaultGoMemoryLimit)
	}
	t.Setenv(goMemLimitEnv, "1GiB")
	if got := goMemoryLimitDefault(); got != 0 {
		t.Fatalf("default with $GOMEMLIMIT set = %d, want 0 (the runtime's own)", got)
	}
}

func TestCheckGoMemoryLimit(t *testing.T) {
	for _, limit := range []int64{0, MinGoMemoryLimit, DefaultGoMemoryLimit, math.MaxInt64} {
		if err := checkGoMemoryLimit(limit); err != nil {
			t.Errorf("checkGoMemoryLimit(%d) = %v, want nil", limit, err)
		}
	}
	for _, limit := range []int64{-1, 1, MinGoMemoryLimit - 1} {
		if err := checkGoMemoryLimit(limit); err == nil {
			t.Errorf("checkGoMemoryLimit(%d) = nil, want an error", limit)
		}
	}
}
