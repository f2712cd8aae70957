package loadtest_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/agentid/agentid/loadtest/internal/tokenload"
)

// TestTokenloadAgainstAgentidDev runs the generator briefly against a real `agentid dev` and checks
// what it counted, never how fast it was.
func TestTokenloadAgainstAgentidDev(t *testing.T) {
	p := startDev(t)
	var stdout, stderr bytes.Buffer
	args := []string{"--data-dir", p.dataDir, "--server", p.grpcAddr, "--tenant", "default",
		"--agents", "3", "--concurrency", "2", "--requests", "200", "--duration", "5m", "-o", "json",
		"--pid", fmt.Sprint(p.cmd.Process.Pid)}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if code := tokenload.Main(ctx, args, &stdout, &stderr); code != 0 {
		t.Fatalf("tokenload exited %d\nstderr:\n%s\nagentid output:\n%s", code, stderr.String(), p.output())
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
	if rep.Target.TokenURL != p.httpURL+"/t/default/oauth2/token" {
		t.Errorf("token URL = %s, want the default tenant's token endpoint on %s", rep.Target.TokenURL, p.httpURL)
	}
	if len(rep.Processes) != 1 || rep.Processes[0].Name != "agentid" || rep.Processes[0].StartRSSKiB <= 0 ||
		rep.Processes[0].EndRSSKiB <= 0 || rep.Processes[0].PeakRSSKiB < rep.Processes[0].EndRSSKiB {
		t.Errorf("processes = %+v, want agentid's RSS before and after, and a peak at least the last", rep.Processes)
	}
	if !strings.Contains(stderr.String(), "provisioned 3 agents") {
		t.Errorf("progress output lacks the provisioning line:\n%s", stderr.String())
	}
}

// devProcess is one `agentid dev` started by the test.
type devProcess struct {
	cmd      *exec.Cmd
	dataDir  string
	grpcAddr string
	httpURL  string
	mu       sync.Mutex
	out      bytes.Buffer
}

func (p *devProcess) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

func (p *devProcess) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

// startDev builds ./cmd/agentid, runs `agentid dev` on free loopback ports with a fresh data dir,
// waits for its ready line and stops it with SIGINT when the test ends.
func startDev(t *testing.T) *devProcess {
	t.Helper()
	root := repoRoot(t)
	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", bin+"/", "./cmd/agentid")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/agentid: %v\n%s", err, out)
	}
	ports := freePorts(t, 5)
	p := &devProcess{
		dataDir:  t.TempDir(),
		grpcAddr: fmt.Sprintf("127.0.0.1:%d", ports[0]),
		httpURL:  fmt.Sprintf("http://127.0.0.1:%d", ports[1]),
	}
	p.cmd = exec.Command(filepath.Join(bin, "agentid"), "dev",
		"--data-dir", p.dataDir,
		"--grpc-addr", p.grpcAddr,
		"--http-addr", strings.TrimPrefix(p.httpURL, "http://"),
		"--nats-port", fmt.Sprint(ports[2]),
		"--temporal-port", fmt.Sprint(ports[3]),
		"--temporal-ui-port", fmt.Sprint(ports[4]))
	p.cmd.Dir = root // so that agentid finds .bin/temporal
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	p.cmd.Stderr = p
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start agentid dev: %v", err)
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		var once sync.Once
		for sc.Scan() {
			_, _ = p.Write([]byte(sc.Text() + "\n"))
			if strings.Contains(sc.Text(), "agentid is ready") {
				once.Do(func() { close(ready) })
			}
		}
	}()
	exited := make(chan error, 1)
	go func() { exited <- p.cmd.Wait() }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(os.Interrupt)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("agentid dev did not exit cleanly on SIGINT: %v\n%s", err, p.output())
			}
		case <-time.After(30 * time.Second):
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-exited
			t.Errorf("agentid dev did not stop within 30s of SIGINT; killed its process group")
		}
	})
	select {
	case <-ready:
	case err := <-exited:
		exited <- err
		t.Fatalf("agentid dev exited before it was ready: %v\n%s", err, p.output())
	case <-time.After(4 * time.Minute):
		t.Fatalf("agentid dev was not ready within 4 minutes:\n%s", p.output())
	}
	return p
}

// repoRoot is the directory above the test holding go.work.
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.work above the test directory")
		}
		dir = parent
	}
}

// freePorts returns n distinct loopback ports that were free a moment ago.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	var ls []net.Listener
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		_ = l.Close()
	}
	return ports
}
