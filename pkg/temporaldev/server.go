// Package temporaldev runs the official `temporal` CLI's development server as a supervised child
// process, for `agentid dev` and for tests. The CLI is pinned in tools/temporal/go.mod and built
// into <repo>/.bin/temporal on first use (see EnsureBinary).
package temporaldev

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"
)

// Defaults of Config.
const (
	DefaultIP           = "127.0.0.1"
	DefaultNamespace    = "agentid"
	DefaultLogLevel     = "warn"
	DefaultStartTimeout = 2 * time.Minute
	stopTimeout         = 15 * time.Second
)

// DefaultSearchAttributes are the custom search attributes registered in the namespace
// (docs/architecture.md, "Temporal").
var DefaultSearchAttributes = map[string]string{
	"AgentId":  "Keyword",
	"Tenant":   "Keyword",
	"RiskTier": "Keyword",
	"Stage":    "Keyword",
}

// DefaultDynamicConfig tunes the single-node server for low latency: one task queue partition, so a
// task never waits to be forwarded to the partition a poller happens to poll.
var DefaultDynamicConfig = map[string]string{
	"matching.numTaskqueueReadPartitions":  "1",
	"matching.numTaskqueueWritePartitions": "1",
}

// Config says how to run the development server. The zero value runs an in-memory server on free
// loopback ports with the UI enabled.
type Config struct {
	// Binary is the `temporal` CLI; empty means EnsureBinary ($AGENTID_TEMPORAL_BIN or <repo>/.bin/temporal).
	Binary string
	// IP is the address the frontend and UI bind to (default 127.0.0.1).
	IP string
	// Port is the frontend gRPC port; 0 picks a free port.
	Port int
	// UIPort is the Web UI port; 0 picks a free port, -1 disables the UI.
	UIPort int
	// DBFile is the SQLite file that keeps state across restarts; empty keeps everything in memory.
	DBFile string
	// Namespace is created at start (default agentid).
	Namespace string
	// SearchAttributes maps names to types (Keyword, Text, Int, ...) registered in the namespace
	// (default DefaultSearchAttributes).
	SearchAttributes map[string]string
	// DynamicConfig sets server dynamic configuration, key to JSON value (default
	// DefaultDynamicConfig; an empty non-nil map sets nothing).
	DynamicConfig map[string]string
	// LogLevel of the server: debug, info, warn, error or never (default warn).
	LogLevel string
	// Stdout and Stderr receive the server's output (default: discarded; the tail of stderr is kept
	// for error messages either way).
	Stdout, Stderr io.Writer
	// StartTimeout bounds the wait for the frontend to answer (default DefaultStartTimeout), at start
	// and at every restart by Supervise.
	StartTimeout time.Duration
	// Logger receives Supervise's messages (default slog.Default()).
	Logger *slog.Logger
}

// Server is a running development server.
type Server struct {
	hostPort  string
	uiURL     string
	namespace string
	binary    string
	args      []string
	cfg       Config
	log       *slog.Logger

	mu       sync.Mutex
	proc     *process // the current child; replaced by Supervise after a crash
	restarts atomic.Int64

	stopOnce sync.Once
	stopErr  error
	stopping chan struct{}
}

// process is one run of the child.
type process struct {
	cmd     *exec.Cmd
	stderr  *tailBuffer
	started time.Time
	done    chan struct{}
	waitErr error
}

// HostPort is the frontend's gRPC address (ip:port) for client.Options.HostPort.
func (s *Server) HostPort() string { return s.hostPort }

// UIURL is the Web UI's base URL, or "" when the UI is disabled.
func (s *Server) UIURL() string { return s.uiURL }

// Namespace is the namespace created at start.
func (s *Server) Namespace() string { return s.namespace }

// PID is the process id of the current server process (it changes when Supervise restarts it).
func (s *Server) PID() int { return s.current().cmd.Process.Pid }

// Restarts is how many times Supervise has restarted the server after its process died.
func (s *Server) Restarts() int { return int(s.restarts.Load()) }

func (s *Server) current() *process {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proc
}

// Wait blocks until the current server process exits and returns nil when it was stopped through Stop.
func (s *Server) Wait() error {
	p := s.current()
	<-p.done
	select {
	case <-s.stopping:
		return nil
	default:
	}
	return p.exitError()
}

// exitError describes how the process ended; call it after done is closed.
func (p *process) exitError() error {
	if p.waitErr != nil {
		return fmt.Errorf("temporaldev: server exited: %w%s", p.waitErr, p.stderr.suffix())
	}
	return fmt.Errorf("temporaldev: server exited unexpectedly%s", p.stderr.suffix())
}

// exitStatus is the process's exit status as the OS reports it ("exit status 1", "signal: killed");
// call it after done is closed.
func (p *process) exitStatus() string {
	if p.cmd.ProcessState != nil {
		return p.cmd.ProcessState.String()
	}
	if p.waitErr != nil {
		return p.waitErr.Error()
	}
	return "unknown"
}

// terminate stops the process group (SIGTERM, then SIGKILL after a grace period) and waits for it.
func (p *process) terminate() error {
	select {
	case <-p.done:
		return nil
	default:
	}
	err := terminate(p.cmd.Process)
	select {
	case <-p.done:
	case <-time.After(stopTimeout):
		_ = kill(p.cmd.Process)
		<-p.done
	}
	return err
}

// Stop terminates the server's process group (SIGTERM, then SIGKILL after a grace period) and waits
// for it to exit; Supervise then returns without restarting it. It is safe to call more than once.
func (s *Server) Stop() error {
	s.stopOnce.Do(func() {
		s.mu.Lock()
		close(s.stopping) // under mu: Supervise starts no process after this
		p := s.proc
		s.mu.Unlock()
		if err := p.terminate(); err != nil {
			s.stopErr = fmt.Errorf("temporaldev: stop server: %w", err)
		}
	})
	return s.stopErr
}

// Supervise restarts the server whenever its process dies without Stop, on the same ports and with the
// same database file, until ctx is done or Stop is called; it then returns nil, leaving the server to
// Stop. Every death is logged at Error level with the exit status and the tail of the server's stderr;
// restarts back off exponentially (RestartBackoff up to MaxRestartBackoff) while the server keeps dying
// soon after start. Use it as a long-running task beside Start.
func (s *Server) Supervise(ctx context.Context) error {
	delay := RestartBackoff
	for {
		p := s.current()
		select {
		case <-ctx.Done():
			return nil
		case <-s.stopping:
			return nil
		case <-p.done:
		}
		select {
		case <-s.stopping:
			return nil
		default:
		}
		lived := time.Since(p.started)
		if lived > stableAfter {
			delay = RestartBackoff
		}
		s.log.Error("temporal dev server died; restarting it",
			"exit", p.exitStatus(), "pid", p.cmd.Process.Pid, "lived", lived.Round(time.Millisecond).String(),
			"restarts", s.Restarts(), "retry_in", delay.String(), "stderr", stderrSummary(p.stderr.String()))
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-s.stopping:
				return nil
			case <-time.After(delay):
			}
			delay = min(2*delay, MaxRestartBackoff)
			err := s.restart(ctx)
			if err == nil {
				n := s.restarts.Add(1)
				s.log.Warn("temporal dev server restarted", "pid", s.PID(), "address", s.hostPort, "restarts", n)
				break
			}
			if errors.Is(err, errStopping) || ctx.Err() != nil {
				return nil
			}
			s.log.Error("temporal dev server restart failed; retrying", "error", err.Error(), "retry_in", delay.String())
		}
	}
}

// Restart back-off of Supervise.
const (
	// RestartBackoff is the pause before the first restart after the server died.
	RestartBackoff = 200 * time.Millisecond
	// MaxRestartBackoff bounds the pause between restarts of a server that keeps dying.
	MaxRestartBackoff = 30 * time.Second
	// stableAfter is how long a process must have lived for the back-off to start over.
	stableAfter = time.Minute
)

var errStopping = errors.New("temporaldev: server is stopping")

// restart launches a new process with the same arguments and waits until it serves; a process that
// does not become ready is terminated.
func (s *Server) restart(ctx context.Context) error {
	p, err := s.launch()
	if err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, s.cfg.StartTimeout)
	defer cancel()
	if err := s.waitReady(rctx, p); err != nil {
		_ = p.terminate()
		return err
	}
	return nil
}

// launch starts a child with the server's arguments and makes it the current process, unless Stop
// has been called.
func (s *Server) launch() (*process, error) {
	p := &process{stderr: &tailBuffer{max: stderrKept}, done: make(chan struct{})}
	p.cmd = exec.Command(s.binary, s.args...)
	p.cmd.Stdout = orDiscard(s.cfg.Stdout)
	p.cmd.Stderr = io.MultiWriter(orDiscard(s.cfg.Stderr), p.stderr)
	p.cmd.Env = os.Environ()
	setProcessGroup(p.cmd)
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.stopping:
		return nil, errStopping
	default:
	}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("temporaldev: start %s: %w", s.binary, err)
	}
	p.started = time.Now()
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.done)
	}()
	s.proc = p
	return p, nil
}

// Start runs `temporal server start-dev` as a child process in its own process group and returns once
// the frontend answers health checks and the namespace exists. The process runs until Stop is called
// (ctx only bounds the start); Stop it when done. Run Supervise beside it to restart a process that dies.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Binary == "" {
		bin, err := EnsureBinary(ctx)
		if err != nil {
			return nil, err
		}
		cfg.Binary = bin
	} else if err := checkExecutable(cfg.Binary); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBinaryNotFound, err)
	}
	if cfg.DBFile != "" {
		if err := os.MkdirAll(filepath.Dir(cfg.DBFile), 0o755); err != nil {
			return nil, fmt.Errorf("temporaldev: directory of db file: %w", err)
		}
	}
	var lastErr error
	for attempt := 1; attempt <= startAttempts; attempt++ {
		s, err := start(ctx, cfg)
		if err == nil {
			return s, nil
		}
		lastErr = err
		if !retryable(err) || ctx.Err() != nil {
			break
		}
		if attempt < startAttempts {
			cfg.Logger.Warn("temporal dev server failed to start; retrying",
				"attempt", attempt, "of", startAttempts, "error", err.Error())
		}
	}
	return nil, lastErr
}

// startAttempts bounds how often Start launches the server. A free port is only free until someone
// binds it: the ports picked here, and the ones the CLI picks itself for its internal services (their
// gRPC and membership listeners, the HTTP and metrics ports), can be taken by another process before
// the child binds them. The CLI then logs the failed listener and crashes, which another attempt on
// other ports cures. A server that fails for any other reason fails the same way each time.
const startAttempts = 3

var errExitedDuringStartUp = errors.New("server exited during start-up")

// retryable reports whether a failed start may succeed on other ports: the process died before it
// served (a taken port, whether picked here or by the CLI, ends it so). A start that timed out, or
// that the context ended, is not retried.
func retryable(err error) bool {
	return errors.Is(err, errExitedDuringStartUp)
}

func start(ctx context.Context, cfg Config) (*Server, error) {
	port, err := pickPort(cfg.IP, cfg.Port, "port")
	if err != nil {
		return nil, err
	}
	uiPort := cfg.UIPort
	if uiPort >= 0 {
		if uiPort, err = pickPort(cfg.IP, cfg.UIPort, "UI port"); err != nil {
			return nil, err
		}
	}
	args := []string{"server", "start-dev",
		"--ip", cfg.IP, "--port", strconv.Itoa(port),
		"--namespace", cfg.Namespace, "--log-level", cfg.LogLevel,
	}
	if uiPort < 0 {
		args = append(args, "--headless")
	} else {
		args = append(args, "--ui-port", strconv.Itoa(uiPort))
	}
	if cfg.DBFile != "" {
		args = append(args, "--db-filename", cfg.DBFile)
	}
	for _, k := range slices.Sorted(maps.Keys(cfg.DynamicConfig)) {
		args = append(args, "--dynamic-config-value", k+"="+cfg.DynamicConfig[k])
	}
	for _, k := range slices.Sorted(maps.Keys(cfg.SearchAttributes)) {
		args = append(args, "--search-attribute", k+"="+cfg.SearchAttributes[k])
	}

	s := &Server{
		hostPort:  net.JoinHostPort(cfg.IP, strconv.Itoa(port)),
		namespace: cfg.Namespace,
		binary:    cfg.Binary,
		args:      args,
		cfg:       cfg,
		log:       cfg.Logger,
		stopping:  make(chan struct{}),
	}
	if uiPort >= 0 {
		s.uiURL = "http://" + net.JoinHostPort(cfg.IP, strconv.Itoa(uiPort))
	}
	p, err := s.launch()
	if err != nil {
		return nil, err
	}

	rctx, cancel := context.WithTimeout(ctx, cfg.StartTimeout)
	defer cancel()
	if err := s.waitReady(rctx, p); err != nil {
		_ = s.Stop()
		return nil, err
	}
	return s, nil
}

// waitReady polls the frontend until it is healthy and the namespace is described, failing early
// when process p exits.
func (s *Server) waitReady(ctx context.Context, p *process) error {
	quiet := sdklog.NewStructuredLogger(slog.New(slog.DiscardHandler))
	var lastErr error
	delay := 50 * time.Millisecond
	for {
		select {
		case <-p.done:
			return fmt.Errorf("temporaldev: %w: %v%s", errExitedDuringStartUp, p.waitErr, p.stderr.suffix())
		default:
		}
		lastErr = s.probe(ctx, quiet)
		if lastErr == nil {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("temporaldev: %w: %v%s", errExitedDuringStartUp, p.waitErr, p.stderr.suffix())
		case <-ctx.Done():
			return fmt.Errorf("temporaldev: server at %s not ready: %w (last error: %v)%s", s.hostPort, ctx.Err(), lastErr, p.stderr.suffix())
		case <-time.After(delay):
		}
		delay = min(2*delay, time.Second)
	}
}

func (s *Server) probe(ctx context.Context, logger sdklog.Logger) error {
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := client.DialContext(pctx, client.Options{HostPort: s.hostPort, Namespace: s.namespace, Logger: logger})
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.CheckHealth(pctx, &client.CheckHealthRequest{}); err != nil {
		return err
	}
	nc, err := client.NewNamespaceClient(client.Options{HostPort: s.hostPort, Logger: logger})
	if err != nil {
		return err
	}
	defer nc.Close()
	_, err = nc.Describe(pctx, s.namespace)
	return err
}

func (c Config) withDefaults() Config {
	if c.IP == "" {
		c.IP = DefaultIP
	}
	if c.Namespace == "" {
		c.Namespace = DefaultNamespace
	}
	if c.SearchAttributes == nil {
		c.SearchAttributes = maps.Clone(DefaultSearchAttributes)
	}
	if c.DynamicConfig == nil {
		c.DynamicConfig = maps.Clone(DefaultDynamicConfig)
	}
	if c.LogLevel == "" {
		c.LogLevel = DefaultLogLevel
	}
	if c.StartTimeout <= 0 {
		c.StartTimeout = DefaultStartTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

func (c Config) validate() error {
	switch {
	case c.Port < 0 || c.Port > 65535:
		return fmt.Errorf("temporaldev: port %d out of range", c.Port)
	case c.UIPort < -1 || c.UIPort > 65535:
		return fmt.Errorf("temporaldev: UI port %d out of range (-1 disables the UI)", c.UIPort)
	case c.Port != 0 && c.Port == c.UIPort:
		return fmt.Errorf("temporaldev: port and UI port are both %d", c.Port)
	case net.ParseIP(c.IP) == nil && c.IP != "localhost":
		return fmt.Errorf("temporaldev: IP %q is not an IP address", c.IP)
	}
	for k := range c.SearchAttributes {
		if k == "" || strings.ContainsAny(k, "= ") {
			return fmt.Errorf("temporaldev: bad search attribute name %q", k)
		}
	}
	for k := range c.DynamicConfig {
		if k == "" || strings.ContainsAny(k, "= ") {
			return fmt.Errorf("temporaldev: bad dynamic config key %q", k)
		}
	}
	return nil
}

// pickPort returns port when it is free on ip, a free port when port is 0, and an error naming what
// holds it otherwise.
func pickPort(ip string, port int, what string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
	if err != nil {
		if port == 0 {
			return 0, fmt.Errorf("temporaldev: no free %s on %s: %w", what, ip, err)
		}
		return 0, fmt.Errorf("temporaldev: %s %d on %s is already in use (is another Temporal server running?): %w", what, port, ip, err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func orDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}

// stderrKept is how much of a process's stderr is kept for error messages: enough for the log lines
// before a crash and the goroutine trace after them (a panic's trace alone is often over 10 KiB).
const stderrKept = 64 << 10

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > t.max { // trimmed at twice max: one copy per max bytes written
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf[max(0, len(t.buf)-t.max):])
}

func (t *tailBuffer) suffix() string {
	if s := stderrSummary(t.String()); s != "" {
		return "\n" + s
	}
	return ""
}

// stderrSummary is what of a server's stderr goes into errors and logs. After a crash (a panic or a
// runtime's fatal error) it is the lines logged just before it, which say why (a listener that
// failed), and the crash's first lines, which say where; the bottom of the trace says nothing new.
// Otherwise it is the last 30 lines.
func stderrSummary(s string) string {
	s = "\n" + strings.TrimSpace(s)
	if s == "\n" {
		return ""
	}
	i := strings.Index(s, "\npanic: ")
	if i < 0 {
		i = strings.Index(s, "\nfatal error: ")
	}
	if i >= 0 {
		out := ""
		if before := strings.TrimSpace(s[:i]); before != "" {
			out = "server stderr (before the crash):\n" + lastLines(before, 10) + "\n"
		}
		return out + "server stderr (the crash):\n" + firstLines(s[i+1:], 12)
	}
	return "server stderr (tail):\n" + lastLines(s[1:], 30)
}

func firstLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, "\n")
}
