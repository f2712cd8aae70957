// Package clickhousedev runs a ClickHouse server as a child process, for tests and for
// `agentid dev`: Debian's clickhouse-server (18.16 on bookworm) or any later `clickhouse` binary, on
// free loopback ports, with a generated minimal configuration (no interserver port, small caches)
// and its data in a directory of its own.
package clickhousedev

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// BinaryEnv names the environment variable that points at a clickhouse-server (or clickhouse)
// binary to use instead of searching for one.
const BinaryEnv = "AGENTID_CLICKHOUSE_BIN"

// InstallCommand installs the server on Debian and Ubuntu (`make deps` runs it when root).
const InstallCommand = "apt-get install clickhouse-server clickhouse-client"

// DefaultStartTimeout bounds the wait for a started server to answer: generous, since the server
// may share the cores with builds and test suites.
const DefaultStartTimeout = 2 * time.Minute

// ErrBinaryNotFound marks a missing ClickHouse server binary.
var ErrBinaryNotFound = errors.New("clickhousedev: no clickhouse-server binary")

// Config says how to run the server. The zero value runs a server on free loopback ports with its
// data in a temporary directory removed by Stop.
type Config struct {
	// Binary is a clickhouse-server or clickhouse executable; empty means FindBinary.
	Binary string
	// DataDir keeps the server's data; empty uses a temporary directory that Stop removes.
	DataDir string
	// TCPPort (native protocol) and HTTPPort on 127.0.0.1; 0 picks a free port.
	TCPPort, HTTPPort int
	// StartTimeout bounds the wait for the server to answer (default DefaultStartTimeout), at
	// Start and at every Restart.
	StartTimeout time.Duration
	// Output receives the server's log (warnings and errors); the tail is kept for error messages
	// either way.
	Output io.Writer
}

// Server is a running (or halted, see Halt) ClickHouse server.
type Server struct {
	cfg     Config
	binary  string
	args    []string
	ownsDir bool
	log     *tail

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// FindBinary returns the command that runs a ClickHouse server: $AGENTID_CLICKHOUSE_BIN when set,
// else clickhouse-server on PATH or in /usr/sbin or /usr/bin (Debian's package), else a
// `clickhouse` binary run as `clickhouse server`. A missing binary is ErrBinaryNotFound, naming
// InstallCommand.
func FindBinary() (binary string, args []string, err error) {
	withArgs := func(p string) (string, []string, error) {
		if filepath.Base(p) == "clickhouse" {
			return p, []string{"server"}, nil
		}
		return p, nil, nil
	}
	if p := os.Getenv(BinaryEnv); p != "" {
		if !executable(p) {
			return "", nil, fmt.Errorf("%w: $%s=%s is not an executable file", ErrBinaryNotFound, BinaryEnv, p)
		}
		return withArgs(p)
	}
	if p, err := exec.LookPath("clickhouse-server"); err == nil {
		return p, nil, nil
	}
	for _, p := range []string{"/usr/sbin/clickhouse-server", "/usr/bin/clickhouse-server"} {
		if executable(p) {
			return p, nil, nil
		}
	}
	if p, err := exec.LookPath("clickhouse"); err == nil {
		return withArgs(p)
	}
	return "", nil, fmt.Errorf("%w on PATH, in /usr/sbin or /usr/bin, nor in $%s; install it with: %s",
		ErrBinaryNotFound, BinaryEnv, InstallCommand)
}

func executable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// Start writes the configuration, starts the server and waits until it answers queries.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	s := &Server{cfg: cfg, log: &tail{max: 64 << 10}}
	if s.cfg.StartTimeout <= 0 {
		s.cfg.StartTimeout = DefaultStartTimeout
	}
	s.binary = cfg.Binary
	if s.binary == "" {
		bin, args, err := FindBinary()
		if err != nil {
			return nil, err
		}
		s.binary, s.args = bin, args
	} else if filepath.Base(s.binary) == "clickhouse" {
		s.args = []string{"server"}
	}
	if s.cfg.DataDir == "" {
		dir, err := os.MkdirTemp("", "agentid-clickhouse-")
		if err != nil {
			return nil, fmt.Errorf("clickhousedev: data directory: %w", err)
		}
		s.cfg.DataDir, s.ownsDir = dir, true
	}
	// A free port may be taken by another process before the server binds it: pick others.
	pick := cfg.TCPPort == 0 || cfg.HTTPPort == 0
	for attempt := 1; ; attempt++ {
		if err := s.pickPorts(cfg); err != nil {
			s.removeDir()
			return nil, err
		}
		err := s.writeConfig()
		if err == nil {
			err = s.start(ctx)
		}
		if err == nil {
			return s, nil
		}
		if !pick || attempt == 3 || ctx.Err() != nil || !strings.Contains(s.log.String(), "Address already in use") {
			s.removeDir()
			return nil, err
		}
	}
}

// pickPorts sets the ports cfg leaves 0 to free ones.
func (s *Server) pickPorts(cfg Config) error {
	var err error
	s.cfg.TCPPort, s.cfg.HTTPPort = cfg.TCPPort, cfg.HTTPPort
	for _, p := range []*int{&s.cfg.TCPPort, &s.cfg.HTTPPort} {
		if *p == 0 {
			if *p, err = freePort(); err != nil {
				return err
			}
		}
	}
	return nil
}

// configXML is the server's whole configuration: loopback only, no interserver port, caches
// small enough to run beside everything else, UTC, and a passwordless default user for loopback.
// The root element is <yandex>, which both 18.16 and current releases read.
const configXML = `<?xml version="1.0"?>
<yandex>
    <logger>
        <level>warning</level>
        <console>1</console>
    </logger>
    <listen_host>127.0.0.1</listen_host>
    <tcp_port>{{tcp}}</tcp_port>
    <http_port>{{http}}</http_port>
    <path>{{dir}}/data/</path>
    <tmp_path>{{dir}}/tmp/</tmp_path>
    <user_files_path>{{dir}}/user_files/</user_files_path>
    <format_schema_path>{{dir}}/format_schemas/</format_schema_path>
    <timezone>UTC</timezone>
    <mark_cache_size>33554432</mark_cache_size>
    <uncompressed_cache_size>33554432</uncompressed_cache_size>
    <max_concurrent_queries>100</max_concurrent_queries>
    <mlock_executable>false</mlock_executable>
    <users>
        <default>
            <password></password>
            <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <profiles>
        <default>
            <max_memory_usage>1000000000</max_memory_usage>
        </default>
    </profiles>
    <quotas>
        <default></default>
    </quotas>
</yandex>
`

func (s *Server) configPath() string { return filepath.Join(s.cfg.DataDir, "config.xml") }

func (s *Server) writeConfig() error {
	conf := strings.NewReplacer("{{tcp}}", strconv.Itoa(s.cfg.TCPPort), "{{http}}", strconv.Itoa(s.cfg.HTTPPort),
		"{{dir}}", s.cfg.DataDir).Replace(configXML)
	if err := os.WriteFile(s.configPath(), []byte(conf), 0o600); err != nil {
		return fmt.Errorf("clickhousedev: write configuration: %w", err)
	}
	return nil
}

// start runs the process and waits until it answers.
func (s *Server) start(ctx context.Context) error {
	args := append(append([]string{}, s.args...), "--config-file="+s.configPath())
	cmd := exec.Command(s.binary, args...)
	cmd.Dir = s.cfg.DataDir
	var out io.Writer = s.log
	if s.cfg.Output != nil {
		out = io.MultiWriter(s.log, s.cfg.Output)
	}
	cmd.Stdout, cmd.Stderr = out, out
	setProcessGroup(cmd)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("clickhousedev: start %s: %w", s.binary, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	s.mu.Lock()
	s.cmd, s.done = cmd, done
	s.mu.Unlock()
	if err := s.waitReady(ctx, done); err != nil {
		_ = killGroup(cmd.Process)
		<-done
		return err
	}
	return nil
}

// waitReady polls until the HTTP interface answers SELECT 1 and the native port accepts
// connections, the process exits, ctx is done or the start timeout has passed.
func (s *Server) waitReady(ctx context.Context, done <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.StartTimeout)
	defer cancel()
	var last error
	for {
		if last = s.ping(ctx); last == nil {
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("clickhousedev: %s exited at start; its log:\n%s", s.binary, s.log.String())
		case <-ctx.Done():
			return fmt.Errorf("clickhousedev: server on %s does not answer (%v): %w; its log:\n%s", s.Addr(), last, ctx.Err(), s.log.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// ping checks both interfaces once.
func (s *Server) ping(ctx context.Context) error {
	if _, err := s.Query(ctx, "SELECT 1"); err != nil {
		return err
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", s.Addr())
	if err != nil {
		return err
	}
	return c.Close()
}

// Addr is the native protocol's address (127.0.0.1:port), for clickhouse-go and clickhouse-client.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.cfg.TCPPort)) }

// HTTPAddr is the HTTP interface's address (127.0.0.1:port).
func (s *Server) HTTPAddr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.cfg.HTTPPort))
}

// DataDir is the directory holding the server's configuration and data.
func (s *Server) DataDir() string { return s.cfg.DataDir }

// DSN is a clickhouse-go DSN of the default user and database on the native port.
func (s *Server) DSN(database string) string {
	return (&url.URL{Scheme: "clickhouse", User: url.User("default"), Host: s.Addr(), Path: "/" + database}).String()
}

// Query runs one statement through the HTTP interface as the default user and returns its output
// (TabSeparated); a statement the server refuses is an error carrying the server's message.
func (s *Server) Query(ctx context.Context, query string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+s.HTTPAddr()+"/", strings.NewReader(query))
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("clickhousedev: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return "", fmt.Errorf("clickhousedev: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("clickhousedev: %s: %s", resp.Status, bytes.TrimSpace(body))
	}
	return string(body), nil
}

// PID is the process id of the running server (0 when halted).
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil || s.exited() {
		return 0
	}
	return s.cmd.Process.Pid
}

func (s *Server) exited() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// Halt kills the server's process group (SIGKILL, as an outage would) and waits for it to end,
// keeping its data; Restart starts it again. Halting a halted server does nothing.
func (s *Server) Halt() error {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.mu.Unlock()
	if cmd == nil {
		return nil
	}
	if err := killGroup(cmd.Process); err != nil {
		return fmt.Errorf("clickhousedev: kill the server: %w", err)
	}
	<-done
	return nil
}

// Restart starts a halted server again on the same ports with the same data and waits until it
// answers.
func (s *Server) Restart(ctx context.Context) error {
	s.mu.Lock()
	running := s.cmd != nil && !s.exited()
	s.mu.Unlock()
	if running {
		return errors.New("clickhousedev: restart: the server is running; Halt it first")
	}
	return s.start(ctx)
}

// Stop kills the server's process group and removes its data directory when Start created it.
func (s *Server) Stop() error {
	err := s.Halt()
	s.removeDir()
	return err
}

// Shutdown stops the server gracefully (SIGTERM, then SIGKILL after the timeout) keeping its
// data, as `agentid dev` does on exit.
func (s *Server) Shutdown(timeout time.Duration) error {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.mu.Unlock()
	if cmd == nil {
		return nil
	}
	if err := terminateGroup(cmd.Process); err != nil {
		return fmt.Errorf("clickhousedev: stop the server: %w", err)
	}
	select {
	case <-done:
		return nil
	case <-time.After(timeout):
		return s.Halt()
	}
}

func (s *Server) removeDir() {
	if s.ownsDir {
		_ = os.RemoveAll(s.cfg.DataDir)
	}
}

// Log is the tail of the server's log (warnings and errors).
func (s *Server) Log() string { return s.log.String() }

// freePort asks the kernel for a free loopback TCP port.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("clickhousedev: free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// tail keeps the last max bytes written to it.
type tail struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}
