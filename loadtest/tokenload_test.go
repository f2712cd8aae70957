package loadtest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentid/agentid/loadtest/internal/tokenload"
	"github.com/agentid/agentid/pkg/testkit"
)

// TestTokenloadAgainstAgentidDev runs the generator briefly against a real `agentid dev` and checks
// what it counted, never how fast it was.
func TestTokenloadAgainstAgentidDev(t *testing.T) {
	p := startDev(t)
	var stdout, stderr bytes.Buffer
	args := []string{"--data-dir", p.DataDir, "--server", p.GRPCAddr, "--tenant", "default",
		"--agents", "3", "--concurrency", "2", "--requests", "200", "--duration", "5m", "-o", "json",
		"--pid", fmt.Sprint(p.Pid())}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if code := tokenload.Main(ctx, args, &stdout, &stderr); code != 0 {
		t.Fatalf("tokenload exited %d\nstderr:\n%s\nagentid output:\n%s", code, stderr.String(), p.Output())
	}
	var rep tokenload.Report
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("report is not JSON: %v\n%s", err, stdout.String())
	}
	t.Logf("report:\n%s", stdout.String())

	tok := rep.Tokens
	if tok.Requests != 200 || tok.OK != 200 || tok.ErrorCount != 0 || len(tok.Errors) != 0 {
		t.Errorf("requests %d, ok %d, errors %d %v; want exactly 200 requests, all ok", tok.Requests, tok.OK, tok.ErrorCount, tok.Errors)
	}
	if l := tok.Latency; l.Count != 200 || !(0 < l.Min && l.Min <= l.P50 && l.P50 <= l.P90 && l.P90 <= l.P99 && l.P99 <= l.Max) {
		t.Errorf("latency %+v: want 200 samples with 0 < min <= p50 <= p90 <= p99 <= max", l)
	}
	if tok.TokensPerSecond <= 0 || tok.ElapsedSeconds <= 0 {
		t.Errorf("throughput %v tokens/s over %vs, want both positive", tok.TokensPerSecond, tok.ElapsedSeconds)
	}
	prov := rep.Provisioning
	if prov.Agents != 3 || prov.RegisterToActive.Count != 3 || prov.RegisterToToken.Count != 3 {
		t.Errorf("provisioning %+v: want all 3 agents provisioned", prov)
	}
	if a, k := prov.RegisterToActive, prov.RegisterToToken; !(0 < a.Min && a.P50 <= a.P99 && a.P99 <= a.Max && a.Max <= k.Max) {
		t.Errorf("register→active %+v, register→token %+v: want ordered, and no token before activation", a, k)
	}
	if rep.Target.TokenURL != p.HTTPURL+"/t/default/oauth2/token" {
		t.Errorf("token URL = %s, want the default tenant's token endpoint on %s", rep.Target.TokenURL, p.HTTPURL)
	}
	if len(rep.Processes) != 1 || rep.Processes[0].Name != "agentid" || rep.Processes[0].StartRSSKiB <= 0 ||
		rep.Processes[0].EndRSSKiB <= 0 || rep.Processes[0].PeakRSSKiB < rep.Processes[0].EndRSSKiB {
		t.Errorf("processes = %+v, want agentid's RSS before and after, and a peak at least the last", rep.Processes)
	}
	if !strings.Contains(stderr.String(), "provisioned 3 agents") {
		t.Errorf("progress output lacks the provisioning line:\n%s", stderr.String())
	}
}

// startDev builds ./cmd/agentid and runs `agentid dev` on free loopback ports with a fresh data dir
// until the test ends.
func startDev(t *testing.T) *testkit.DevPlatform {
	t.Helper()
	bin := testkit.BuildCommands(t, "./cmd/agentid")
	return testkit.StartDev(t, filepath.Join(bin, "agentid"), t.TempDir(), nil)
}
