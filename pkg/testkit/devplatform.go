package testkit

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// RepoRoot returns the repository root: the nearest directory above the working directory that
// holds go.work.
func RepoRoot(t testing.TB) string {
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
			t.Fatal("testkit: go.work not found above the test directory")
		}
		dir = parent
	}
}

// BuildCommands builds the given main packages (e.g. "./cmd/agentid") from the repository root into a
// temporary directory and returns it.
func BuildCommands(t testing.TB, pkgs ...string) string {
	t.Helper()
	out := t.TempDir()
	cmd := exec.Command("go", append([]string{"build", "-o", out + string(filepath.Separator)}, pkgs...)...)
	cmd.Dir = RepoRoot(t)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("testkit: go build %v: %v\n%s", pkgs, err, b)
	}
	return out
}

// FreePorts reserves n distinct free loopback ports.
func FreePorts(t testing.TB, n int) []int {
	t.Helper()
	var ls []net.Listener
	var ports []int
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

// DevPlatform is one running `agentid dev` process, driven from outside like a user would.
type DevPlatform struct {
	// DataDir is its --data-dir.
	DataDir string
	// GRPCAddr is the gRPC address of all five services.
	GRPCAddr string
	// HTTPURL is the base URL of the OAuth endpoints.
	HTTPURL string
	// NATSURL is the embedded NATS server.
	NATSURL string
	// Ready is how long the process took to print that it is ready.
	Ready time.Duration
	// Ports are the gRPC, HTTP, NATS, Temporal and Temporal UI ports, for a restart on the same ones.
	Ports []int

	cmd     *exec.Cmd
	exited  chan struct{} // closed once the process has ended and waitErr is set
	waitErr error
	mu      sync.Mutex
	output  strings.Builder
}

// StartDev runs `agentid dev` (the binary at agentid) on dataDir and the given ports — gRPC, HTTP,
// NATS, Temporal, Temporal UI; nil picks free ones — and waits until it prints that it is ready.
// The process is interrupted (as Ctrl-C does) when the test ends.
func StartDev(t testing.TB, agentid, dataDir string, ports []int) *DevPlatform {
	t.Helper()
	return StartDevWith(t, agentid, dataDir, DevOptions{Ports: ports})
}

// DevOptions are the less common settings of StartDevWith.
type DevOptions struct {
	// Ports are the gRPC, HTTP, NATS, Temporal and Temporal UI ports; nil picks free ones.
	Ports []int
	// Env is added to the process's environment (e.g. AGENTID_FAILPOINTS=...).
	Env []string
	// Args are added to the command line after the defaults.
	Args []string
}

// devReadyTimeout bounds the start of `agentid dev`, which builds nothing but may share the cores
// with a test suite.
const devReadyTimeout = 4 * time.Minute

// StartDevWith is StartDev with options. Ports picked by FreePorts are free only until they are
// bound again: another process may take one in between (an outgoing connection's ephemeral port, a
// parallel test's listener). A start that fails because a port is taken is repeated, on fresh ports
// when the caller named none, on the same ones (a restart, whose clients reconnect there) otherwise,
// until devReadyTimeout has passed.
func StartDevWith(t testing.TB, agentid, dataDir string, o DevOptions) *DevPlatform {
	t.Helper()
	deadline := time.Now().Add(devReadyTimeout)
	for attempt := 1; ; attempt++ {
		ports := o.Ports
		if ports == nil {
			ports = FreePorts(t, 5)
		}
		p, err := startDev(t, agentid, dataDir, o, ports, time.Until(deadline))
		if err == nil {
			return p
		}
		if !errors.Is(err, errPortTaken) || attempt == maxDevStarts || time.Now().After(deadline) {
			t.Fatal(err)
		}
		t.Logf("%v; starting agentid dev again", err)
		time.Sleep(200 * time.Millisecond) // a pause between two starts, not a wait for a condition
	}
}

// maxDevStarts bounds the starts of StartDevWith: a port taken that often is no race.
const maxDevStarts = 5

// errPortTaken is startDev's error when agentid dev exited because one of its ports was taken.
var errPortTaken = errors.New("a port of agentid dev is taken")

// startDev starts agentid dev once on ports and waits at most timeout until it prints that it is
// ready.
func startDev(t testing.TB, agentid, dataDir string, o DevOptions, ports []int, timeout time.Duration) (*DevPlatform, error) {
	t.Helper()
	p := &DevPlatform{
		DataDir:  dataDir,
		GRPCAddr: fmt.Sprintf("127.0.0.1:%d", ports[0]),
		HTTPURL:  fmt.Sprintf("http://127.0.0.1:%d", ports[1]),
		NATSURL:  fmt.Sprintf("nats://127.0.0.1:%d", ports[2]),
		Ports:    append([]int(nil), ports...),
		exited:   make(chan struct{}),
	}
	args := append([]string{"dev",
		"--data-dir", dataDir,
		"--grpc-addr", p.GRPCAddr,
		"--http-addr", strings.TrimPrefix(p.HTTPURL, "http://"),
		"--nats-port", fmt.Sprint(ports[2]),
		"--temporal-port", fmt.Sprint(ports[3]),
		"--temporal-ui-port", fmt.Sprint(ports[4]),
	}, o.Args...)
	p.cmd = exec.Command(agentid, args...)
	p.cmd.Env = append(os.Environ(), o.Env...)
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("testkit: agentid dev: %w", err)
	}
	p.cmd.Stderr = devOutput{p}
	ready := make(chan struct{})
	start := time.Now()
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("testkit: start agentid dev: %w", err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		var once sync.Once
		for sc.Scan() {
			line := sc.Text()
			_, _ = devOutput{p}.Write([]byte(line + "\n"))
			if strings.Contains(line, "agentid is ready") {
				once.Do(func() { close(ready) })
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
		p.waitErr = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() { p.Stop(t) })
	select {
	case <-ready:
		p.Ready = time.Since(start)
		return p, nil
	case <-p.exited:
		if strings.Contains(p.Output(), "address already in use") {
			return nil, fmt.Errorf("testkit: agentid dev on ports %v exited before it was ready (%v): %w; output:\n%s", ports, p.waitErr, errPortTaken, p.Output())
		}
		return nil, fmt.Errorf("testkit: agentid dev exited before it was ready (%v); output:\n%s", p.waitErr, p.Output())
	case <-time.After(timeout):
		return nil, fmt.Errorf("testkit: agentid dev did not become ready in %s; output:\n%s", timeout.Round(time.Second), p.Output())
	}
}

// Stop interrupts the process and waits for a clean exit, failing the test otherwise. Stopping twice,
// or stopping a process that has already ended, is fine.
func (p *DevPlatform) Stop(t testing.TB) {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.exited:
		if p.waitErr != nil {
			t.Errorf("agentid dev did not exit cleanly on interrupt: %v\n%s", p.waitErr, p.Output())
		}
	case <-time.After(30 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.exited
		t.Errorf("agentid dev did not stop within 30s of an interrupt")
	}
}

// Kill ends the process with SIGKILL, as `kill -9` does (its Temporal child, in a process group of its
// own, is stopped by the kernel's parent-death signal), and waits until it is gone.
func (p *DevPlatform) Kill(t testing.TB) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	p.WaitExit(t, time.Minute)
}

// WaitExit waits until the process has ended (killed by a failpoint, say), failing the test after
// timeout, and returns how it ended.
func (p *DevPlatform) WaitExit(t testing.TB, timeout time.Duration) *os.ProcessState {
	t.Helper()
	select {
	case <-p.exited:
		return p.cmd.ProcessState
	case <-time.After(timeout):
		t.Fatalf("agentid dev still runs %s later; output:\n%s", timeout, p.Output())
		return nil
	}
}

// Exited is closed once the process has ended.
func (p *DevPlatform) Exited() <-chan struct{} { return p.exited }

// ExitedCleanly reports whether the process has stopped with exit code 0.
func (p *DevPlatform) ExitedCleanly() bool {
	select {
	case <-p.exited:
		return p.cmd.ProcessState != nil && p.cmd.ProcessState.Success()
	default:
		return false
	}
}

// Pid is the process id.
func (p *DevPlatform) Pid() int { return p.cmd.Process.Pid }

// Issuer is the issuer identifier of a tenant.
func (p *DevPlatform) Issuer(tenant string) string { return p.HTTPURL + "/t/" + tenant }

// Output is everything the process printed so far (stdout and stderr).
func (p *DevPlatform) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.output.String()
}

type devOutput struct{ p *DevPlatform }

func (w devOutput) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	return w.p.output.Write(b)
}
