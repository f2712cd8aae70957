package testkit

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// ProcessConfig says how to run a Process.
type ProcessConfig struct {
	// Name identifies the process in messages and logs (e.g. "registry-a").
	Name string
	// Binary is the executable's path.
	Binary string
	// Args are its arguments; every start uses the same ones.
	Args []string
	// Env is added to the test's environment.
	Env []string
	// Dir is the working directory (default: the test's).
	Dir string
	// ReadyURL is polled with GET until it answers 200 (a service's /readyz, nats-server's /healthz);
	// empty: the process counts as ready once it has started.
	ReadyURL string
	// ReadyTimeout bounds each wait for readiness (default ProcessReadyTimeout).
	ReadyTimeout time.Duration
}

// ProcessReadyTimeout is how long WaitReady waits by default: generous, since the process may share
// the cores with builds and test suites.
const ProcessReadyTimeout = 3 * time.Minute

// processOutputKeep is how much of a process's combined output a Process keeps (the most recent).
const processOutputKeep = 1 << 20

// Process is a child process that a test starts, kills with SIGKILL (as `kill -9` does) and starts
// again with the same command line, for fault injection across real processes. It is stopped when the
// test ends; when the test has failed, the tail of its output is logged.
type Process struct {
	cfg ProcessConfig

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{} // of the current run: closed once it has ended and state is set
	state   *os.ProcessState
	output  tailBuffer
	starts  int
	started time.Time
}

// NewProcess prepares a process without starting it; Start runs it.
func NewProcess(t testing.TB, cfg ProcessConfig) *Process {
	t.Helper()
	if cfg.Name == "" {
		cfg.Name = filepath.Base(cfg.Binary)
	}
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = ProcessReadyTimeout
	}
	p := &Process{cfg: cfg, output: tailBuffer{max: processOutputKeep}}
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("testkit: output of %s (last 32 KiB):\n%s", cfg.Name, p.OutputTail(32<<10))
		}
	})
	return p
}

// StartProcess starts a process and waits until it is ready (see ProcessConfig.ReadyURL).
func StartProcess(t testing.TB, cfg ProcessConfig) *Process {
	t.Helper()
	p := NewProcess(t, cfg)
	p.Start(t)
	p.WaitReady(t)
	return p
}

// Name is the process's name from its configuration.
func (p *Process) Name() string { return p.cfg.Name }

// Start runs the process (once more, after a kill) without waiting for readiness. Starting a process
// that still runs fails the test.
func (p *Process) Start(t testing.TB) {
	t.Helper()
	if err := p.start(); err != nil {
		t.Fatal(err)
	}
}

func (p *Process) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		select {
		case <-p.exited:
		default:
			return fmt.Errorf("testkit: start %s: it is still running (pid %d)", p.cfg.Name, p.cmd.Process.Pid)
		}
	}
	cmd := exec.Command(p.cfg.Binary, p.cfg.Args...)
	cmd.Dir = p.cfg.Dir
	cmd.Env = append(os.Environ(), p.cfg.Env...)
	cmd.SysProcAttr = processAttributes()
	cmd.Stdout = &p.output
	cmd.Stderr = &p.output
	p.starts++
	fmt.Fprintf(&p.output, "=== testkit: start %d of %s\n", p.starts, p.cfg.Name)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("testkit: start %s (%s): %w", p.cfg.Name, p.cfg.Binary, err)
	}
	exited := make(chan struct{})
	p.cmd, p.exited, p.state, p.started = cmd, exited, nil, time.Now()
	go func() {
		_ = cmd.Wait()
		p.mu.Lock()
		p.state = cmd.ProcessState
		p.mu.Unlock()
		fmt.Fprintf(&p.output, "=== testkit: %s ended: %v\n", p.cfg.Name, cmd.ProcessState)
		close(exited)
	}()
	return nil
}

// WaitReady waits until the running process is ready and returns how long it took since its start;
// the process ending first or the ready timeout passing fails the test with its output.
func (p *Process) WaitReady(t testing.TB) time.Duration {
	t.Helper()
	d, err := p.AwaitReady(contextOf(t))
	if err != nil {
		t.Fatalf("%v; output of %s (last 16 KiB):\n%s", err, p.cfg.Name, p.OutputTail(16<<10))
	}
	return d
}

// AwaitReady is WaitReady returning an error instead of failing the test.
func (p *Process) AwaitReady(ctx context.Context) (time.Duration, error) {
	p.mu.Lock()
	exited, started := p.exited, p.started
	p.mu.Unlock()
	if exited == nil {
		return 0, fmt.Errorf("testkit: %s was never started", p.cfg.Name)
	}
	if p.cfg.ReadyURL == "" {
		return time.Since(started), nil
	}
	client := &http.Client{Timeout: 2 * time.Second}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { // an ended process will never be ready: stop polling at once
		select {
		case <-exited:
			cancel()
		case <-ctx.Done():
		}
	}()
	err := Poll(ctx, p.cfg.ReadyTimeout, func() (bool, error) {
		res, err := client.Get(p.cfg.ReadyURL)
		if err != nil {
			return false, err
		}
		_ = res.Body.Close()
		return res.StatusCode == http.StatusOK, fmt.Errorf("GET %s: %s", p.cfg.ReadyURL, res.Status)
	})
	if err != nil {
		select {
		case <-exited:
			return 0, fmt.Errorf("testkit: %s %w: %v", p.cfg.Name, ErrEndedBeforeReady, p.State())
		default:
		}
		return 0, fmt.Errorf("testkit: %s is not ready: %w", p.cfg.Name, err)
	}
	return time.Since(started), nil
}

// ErrEndedBeforeReady is AwaitReady's error when the process ended before it was ready.
var ErrEndedBeforeReady = errors.New("ended before it was ready")

// StartUntilReady starts the process and, as an orchestrator's restart policy does (compose's
// `restart: unless-stopped`), starts it again after pause whenever it ends before it is ready, until
// it is ready or ReadyTimeout has passed since the first start. It returns the time from the first
// start to readiness and how many starts that took.
func (p *Process) StartUntilReady(ctx context.Context, pause time.Duration) (time.Duration, int, error) {
	began := time.Now()
	ctx, cancel := context.WithTimeout(ctx, p.cfg.ReadyTimeout)
	defer cancel()
	var ended error // the last start that ended before it was ready
	for starts := 1; ; starts++ {
		if err := p.start(); err != nil {
			return 0, starts, err
		}
		_, err := p.AwaitReady(ctx)
		if err == nil {
			return time.Since(began), starts, nil
		}
		if !errors.Is(err, ErrEndedBeforeReady) {
			if ended != nil && ctx.Err() != nil {
				err = fmt.Errorf("testkit: %s not ready after %s and %d starts; the last to end: %w", p.cfg.Name, p.cfg.ReadyTimeout, starts, ended)
			}
			return 0, starts, err
		}
		ended = err
		select {
		case <-ctx.Done():
			return 0, starts, fmt.Errorf("testkit: %s not ready after %s and %d starts; the last: %w", p.cfg.Name, p.cfg.ReadyTimeout, starts, err)
		case <-time.After(pause):
		}
	}
}

// Kill ends the process with SIGKILL, as `kill -9` does, and waits until it is gone (its listening
// ports are closed by then). Killing a process that has already ended does nothing.
func (p *Process) Kill(t testing.TB) {
	t.Helper()
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.mu.Unlock()
	if cmd == nil {
		t.Fatalf("testkit: kill %s: it was never started", p.cfg.Name)
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-exited:
	case <-time.After(time.Minute):
		t.Fatalf("testkit: %s (pid %d) still runs a minute after SIGKILL", p.cfg.Name, cmd.Process.Pid)
	}
}

// Restart starts the process again (after Kill, or after it ended on its own) and waits until it is
// ready; it returns the time from the start to readiness.
func (p *Process) Restart(t testing.TB) time.Duration {
	t.Helper()
	p.Start(t)
	return p.WaitReady(t)
}

// Stop ends the process as an orchestrator does: SIGTERM, then SIGKILL if it still runs after ten
// seconds. Stopping a process that has ended, or was never started, does nothing.
func (p *Process) Stop() {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	select {
	case <-exited:
		return
	default:
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-exited
	}
}

// Exited is closed once the current run of the process has ended (nil before the first start).
func (p *Process) Exited() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exited
}

// State is how the last run ended; nil while it runs or before the first start.
func (p *Process) State() *os.ProcessState {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state
}

// Pid is the process id of the current run (0 before the first start).
func (p *Process) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Starts is how many times the process has been started.
func (p *Process) Starts() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.starts
}

// Output is what the process printed (stdout and stderr, every run, the most recent MiB).
func (p *Process) Output() string { return p.output.String() }

// OutputTail is the last n bytes of Output.
func (p *Process) OutputTail(n int) string {
	s := p.output.String()
	if len(s) > n {
		s = s[len(s)-n:]
		if i := strings.IndexByte(s, '\n'); i >= 0 {
			s = s[i+1:]
		}
	}
	return s
}

// KilledBySIGKILL reports whether a process ended by SIGKILL.
func KilledBySIGKILL(st *os.ProcessState) bool {
	if st == nil {
		return false
	}
	ws, ok := st.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// tailBuffer keeps (at least) the last max bytes written to it; it is safe for concurrent use.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - b.max; over > b.max { // trim in halves: amortised, not on every write
		b.buf = append(b.buf[:0], b.buf[over:]...)
	}
	return len(p), nil
}

// String returns the last max bytes.
func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf[max(0, len(b.buf)-b.max):])
}

// BuildNATSServer builds the nats-server binary of the version pkg/go.mod requires (from the module
// cache) into a temporary directory and returns its path, for clusters of real nats-server processes.
func BuildNATSServer(t testing.TB) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "nats-server")
	cmd := exec.Command("go", "build", "-o", out, "github.com/nats-io/nats-server/v2")
	cmd.Dir = filepath.Join(RepoRoot(t), "pkg")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("testkit: go build nats-server: %v\n%s", err, b)
	}
	return out
}
