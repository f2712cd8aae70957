package dev

import (
	"bytes"
	"log/slog"
	"math"
	"runtime/debug"
	"strings"
	"testing"
)

// keepGoMemoryLimit puts the test process's memory limit back whatever a test does.
func keepGoMemoryLimit(t *testing.T) {
	t.Helper()
	before := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(before) })
}

func TestGoMemoryLimitIsSetForRunAndPutBack(t *testing.T) {
	keepGoMemoryLimit(t)
	debug.SetMemoryLimit(math.MaxInt64)
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))

	restore := applyGoMemoryLimit(300<<20, goMemLimitFromFlag, log)
	if got := debug.SetMemoryLimit(-1); got != 300<<20 {
		t.Fatalf("limit while serving = %d, want %d", got, 300<<20)
	}
	if want := "bytes=314572800 mib=300 source=--go-memory-limit"; !strings.Contains(logs.String(), want) {
		t.Fatalf("log %q does not say %q", logs.String(), want)
	}
	restore()
	if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 {
		t.Fatalf("limit after Run = %d, want none again", got)
	}

	// A limit replacing the runtime's own says which it replaced.
	debug.SetMemoryLimit(1 << 30)
	logs.Reset()
	restore = applyGoMemoryLimit(DefaultGoMemoryLimit, goMemLimitFromDefault, log)
	if !strings.Contains(logs.String(), "source=default replaces_bytes=1073741824") {
		t.Fatalf("log %q does not name the replaced limit", logs.String())
	}
	restore()
	if got := debug.SetMemoryLimit(-1); got != 1<<30 {
		t.Fatalf("limit after Run = %d, want the previous %d back", got, 1<<30)
	}
}

func TestGoMemoryLimitZeroLeavesTheRuntimesOwn(t *testing.T) {
	keepGoMemoryLimit(t)
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	for _, tt := range []struct {
		runtime int64
		wantLog string
	}{
		{runtime: math.MaxInt64, wantLog: `level=INFO msg="Go memory limit: none" source=$GOMEMLIMIT`},
		{runtime: 200 << 20, wantLog: `level=INFO msg="Go memory limit" bytes=209715200 mib=200 source=$GOMEMLIMIT`},
		{runtime: 64 << 20, wantLog: `level=WARN msg="Go memory limit below the minimum --go-memory-limit`},
	} {
		debug.SetMemoryLimit(tt.runtime)
		logs.Reset()
		applyGoMemoryLimit(0, goMemLimitFromEnv, log)()
		if got := debug.SetMemoryLimit(-1); got != tt.runtime {
			t.Fatalf("limit 0 changed the runtime's limit from %d to %d", tt.runtime, got)
		}
		if !strings.Contains(logs.String(), tt.wantLog) {
			t.Fatalf("runtime limit %d: log %q does not say %q", tt.runtime, logs.String(), tt.wantLog)
		}
	}
}

func TestGoMemoryLimitPrecedence(t *testing.T) {
	if got := DefaultConfig().GoMemoryLimit; got != DefaultGoMemoryLimit {
		t.Fatalf("DefaultConfig().GoMemoryLimit = %d, want %d", got, DefaultGoMemoryLimit)
	}
	for _, tt := range []struct {
		env        string
		flag       int64
		given      bool
		wantLimit  int64
		wantSource string
	}{
		{env: "", flag: DefaultGoMemoryLimit, wantLimit: DefaultGoMemoryLimit, wantSource: goMemLimitFromDefault},
		{env: "", flag: 1 << 30, given: true, wantLimit: 1 << 30, wantSource: goMemLimitFromFlag},
		{env: "", flag: 0, given: true, wantLimit: 0, wantSource: goMemLimitFromFlag},
		{env: "1GiB", flag: DefaultGoMemoryLimit, wantLimit: 0, wantSource: goMemLimitFromEnv},
		{env: "off", flag: DefaultGoMemoryLimit, wantLimit: 0, wantSource: goMemLimitFromEnv},
		{env: "1GiB", flag: 256 << 20, given: true, wantLimit: 256 << 20, wantSource: goMemLimitFromFlag},
	} {
		t.Setenv(goMemLimitEnv, tt.env)
		limit, source := resolveGoMemoryLimit(tt.flag, tt.given)
		if limit != tt.wantLimit || source != tt.wantSource {
			t.Errorf("GOMEMLIMIT=%q, flag %d (given %v): limit %d from %s, want %d from %s", tt.env, tt.flag, tt.given, limit, source, tt.wantLimit, tt.wantSource)
		}
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
