package e2e_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// procCPU is the CPU time (user + system) a process has used so far, from /proc/<pid>/stat; 0 when it
// cannot be read.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// Fields after the parenthesised command name: state is the 1st, utime the 12th, stime the 13th.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / 100 // USER_HZ
}

// devCPU is the CPU time of `agentid dev` (pid) and of its child processes (the Temporal dev server).
type devCPU struct{ agentid, temporal time.Duration }

func sampleDevCPU(pid int) devCPU {
	s := devCPU{agentid: procCPU(pid)}
	for _, c := range childrenOf(pid) {
		s.temporal += procCPU(c)
	}
	return s
}

// perRun renders the CPU used between s and later per run of n.
func (s devCPU) perRun(later devCPU, n int) string {
	per := func(d time.Duration) string { return (d / time.Duration(n)).Round(100 * time.Microsecond).String() }
	return fmt.Sprintf("CPU per teardown: agentid %s, Temporal %s (agentid %s, Temporal %s in all)",
		per(later.agentid-s.agentid), per(later.temporal-s.temporal),
		(later.agentid - s.agentid).Round(time.Millisecond), (later.temporal - s.temporal).Round(time.Millisecond))
}

// deprovProfileDir is where TestDeprovisioningLatency writes a CPU profile of agentid during the burst
// (AGENTID_E2E_DEPROVISION_PROFILE, a directory; empty: no profile).
func deprovProfileDir() string { return os.Getenv("AGENTID_E2E_DEPROVISION_PROFILE") }

// profileDev fetches a CPU profile of seconds from `agentid dev`'s pprof listener into dir/name; it
// runs in the background and reports on done.
func profileDev(t *testing.T, ctx context.Context, addr, dir, name string, seconds int) <-chan error {
	done := make(chan error, 1)
	go func() {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, seconds), nil)
		if err != nil {
			done <- err
			return
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- err
			return
		}
		defer res.Body.Close()
		if res.StatusCode != http.StatusOK {
			done <- fmt.Errorf("pprof: %s", res.Status)
			return
		}
		b, err := io.ReadAll(res.Body)
		if err == nil {
			err = os.WriteFile(filepath.Join(dir, name), b, 0o644)
		}
		done <- err
	}()
	return done
}
