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
	// StartTimeout bounds the wait for the frontend to answer (default DefaultStartTimeout).
	StartTimeout time.Duration
}

// Server is a running development server.
type Server struct {
	hostPort  string
	uiURL     string
	namespace string
	cmd       *exec.Cmd
	stderr    *tailBuffer
	done      chan struct{}
	waitErr   error
	stopOnce  sync.Once
	stopErr   error
	stopping  chan struct{}
}

// HostPort is the frontend's gRPC address (ip:port) for client.Options.HostPort.
func (s *Server) HostPort() string { return s.hostPort }

// UIURL is the Web UI's base URL, or "" when the UI is disabled.
func (s *Server) UIURL() string { return s.uiURL }

// Namespace is the namespace created at start.
func (s *Server) Namespace() string { return s.namespace }

// Wait blocks until the server process exits and returns nil when it was stopped through Stop.
func (s *Server) Wait() error {
	<-s.done
	select {
	case <-s.stopping:
		return nil
	default:
	}
	if s.waitErr != nil {
		return fmt.Errorf("temporaldev: server exited: %w%s", s.waitErr, s.stderr.suffix())
	}
	return fmt.Errorf("temporaldev: server exited unexpectedly%s", s.stderr.suffix())
}

// Stop terminates the server's process group (SIGTERM, then SIGKILL after a grace period) and waits
// for it to exit. It is safe to call more than once.
func (s *Server) Stop() error {
	s.stopOnce.Do(func() {
		close(s.stopping)
		select {
		case <-s.done:
			return
		default:
		}
		if err := terminate(s.cmd.Process); err != nil {
			s.stopErr = fmt.Errorf("temporaldev: stop server: %w", err)
		}
		select {
		case <-s.done:
		case <-time.After(stopTimeout):
			_ = kill(s.cmd.Process)
			<-s.done
		}
	})
	return s.stopErr
}

// Start runs `temporal server start-dev` as a child process in its own process group and returns once
// the frontend answers health checks and the namespace exists. The process runs until Stop is called
// (ctx only bounds the start); Stop it when done.
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
	const attempts = 3 // free ports picked here may be taken before the child binds them
	var lastErr error
	for range attempts {
		s, err := start(ctx, cfg)
		if err == nil {
			return s, nil
		}
		lastErr = err
		if !errors.Is(err, errAddrInUse) || ctx.Err() != nil {
			break
		}
	}
	return nil, lastErr
}

var errAddrInUse = errors.New("address already in use")

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
		stderr:    &tailBuffer{max: 8 << 10},
		done:      make(chan struct{}),
		stopping:  make(chan struct{}),
	}
	if uiPort >= 0 {
		s.uiURL = "http://" + net.JoinHostPort(cfg.IP, strconv.Itoa(uiPort))
	}
	s.cmd = exec.Command(cfg.Binary, args...)
	s.cmd.Stdout = orDiscard(cfg.Stdout)
	s.cmd.Stderr = io.MultiWriter(orDiscard(cfg.Stderr), s.stderr)
	s.cmd.Env = os.Environ()
	setProcessGroup(s.cmd)
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("temporaldev: start %s: %w", cfg.Binary, err)
	}
	go func() {
		s.waitErr = s.cmd.Wait()
		close(s.done)
	}()

	rctx, cancel := context.WithTimeout(ctx, cfg.StartTimeout)
	defer cancel()
	if err := s.waitReady(rctx); err != nil {
		_ = s.Stop()
		if strings.Contains(s.stderr.String(), "address already in use") {
			return nil, fmt.Errorf("temporaldev: %w: a port of the dev server (%s, UI %d) is taken%s", errAddrInUse, s.hostPort, uiPort, s.stderr.suffix())
		}
		return nil, err
	}
	return s, nil
}

// waitReady polls the frontend until it is healthy and the namespace is described.
func (s *Server) waitReady(ctx context.Context) error {
	quiet := sdklog.NewStructuredLogger(slog.New(slog.DiscardHandler))
	var lastErr error
	delay := 50 * time.Millisecond
	for {
		select {
		case <-s.done:
			return fmt.Errorf("temporaldev: server exited during start-up: %v%s", s.waitErr, s.stderr.suffix())
		default:
		}
		lastErr = s.probe(ctx, quiet)
		if lastErr == nil {
			return nil
		}
		select {
		case <-s.done:
			return fmt.Errorf("temporaldev: server exited during start-up: %v%s", s.waitErr, s.stderr.suffix())
		case <-ctx.Done():
			return fmt.Errorf("temporaldev: server at %s not ready: %w (last error: %v)%s", s.hostPort, ctx.Err(), lastErr, s.stderr.suffix())
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
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

func (t *tailBuffer) suffix() string {
	s := strings.TrimSpace(t.String())
	if s == "" {
		return ""
	}
	return "\nserver stderr (tail):\n" + lastLines(s, 30)
}
