package temporaldev_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"

	"github.com/agentid/agentid/pkg/temporaldev"
	"github.com/agentid/agentid/pkg/testkit"
)

func binary(t *testing.T) string {
	t.Helper()
	bin, err := temporaldev.EnsureBinary(t.Context())
	if err != nil {
		t.Fatalf("the temporal CLI is needed (%s): %v", temporaldev.BuildCommand, err)
	}
	return bin
}

func start(t *testing.T, cfg temporaldev.Config) *temporaldev.Server {
	t.Helper()
	srv, err := temporaldev.Start(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop() })
	return srv
}

func dial(t *testing.T, srv *temporaldev.Server) client.Client {
	t.Helper()
	c, err := client.Dial(client.Options{
		HostPort: srv.HostPort(), Namespace: srv.Namespace(),
		Logger: sdklog.NewStructuredLogger(slog.New(slog.DiscardHandler)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func TestEnsureBinary(t *testing.T) {
	tests := []struct {
		name    string
		env     string
		wantErr bool
	}{
		{name: "repository binary"},
		{name: "explicit binary", env: "repo"},
		{name: "explicit binary missing", env: "/nonexistent/temporal", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := ""
			t.Setenv(temporaldev.BinaryEnv, "") // the repository's .bin/temporal, found from the working directory
			if tt.env == "repo" {
				want = binary(t)
				t.Setenv(temporaldev.BinaryEnv, want)
			} else if tt.env != "" {
				t.Setenv(temporaldev.BinaryEnv, tt.env)
			}
			got, err := temporaldev.EnsureBinary(t.Context())
			if tt.wantErr {
				if !errors.Is(err, temporaldev.ErrBinaryNotFound) || !strings.Contains(err.Error(), tt.env) {
					t.Fatalf("err = %v, want ErrBinaryNotFound naming %s", err, tt.env)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if want != "" && got != want {
				t.Fatalf("EnsureBinary() = %s, want %s", got, want)
			}
			if filepath.Base(got) != "temporal" {
				t.Fatalf("EnsureBinary() = %s, want a temporal binary", got)
			}
			if tt.env == "" && !strings.HasSuffix(got, filepath.Join(".bin", "temporal")) {
				t.Fatalf("EnsureBinary() = %s, want <repo>/.bin/temporal", got)
			}
		})
	}
}

func TestStartHeadlessServesNamespaceAndStops(t *testing.T) {
	srv := start(t, temporaldev.Config{Binary: binary(t), UIPort: -1})
	if srv.UIURL() != "" {
		t.Fatalf("UIURL() = %q for a headless server", srv.UIURL())
	}
	if !strings.HasPrefix(srv.HostPort(), "127.0.0.1:") {
		t.Fatalf("HostPort() = %q, want loopback", srv.HostPort())
	}
	c := dial(t, srv)
	if _, err := c.CheckHealth(t.Context(), &client.CheckHealthRequest{}); err != nil {
		t.Fatal(err)
	}
	if err := srv.Stop(); err != nil {
		t.Fatalf("Stop() = %v", err)
	}
	if err := srv.Wait(); err != nil {
		t.Fatalf("Wait() after Stop = %v", err)
	}
	if conn, err := net.DialTimeout("tcp", srv.HostPort(), time.Second); err == nil {
		conn.Close()
		t.Fatalf("frontend %s still accepts connections after Stop", srv.HostPort())
	}
	if err := srv.Stop(); err != nil {
		t.Fatalf("second Stop() = %v", err)
	}
}

func TestStartWithUI(t *testing.T) {
	srv := start(t, temporaldev.Config{Binary: binary(t)})
	if !strings.HasPrefix(srv.UIURL(), "http://127.0.0.1:") {
		t.Fatalf("UIURL() = %q", srv.UIURL())
	}
	var resp *http.Response
	var err error
	for deadline := time.Now().Add(testkit.DefaultWait); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if resp, err = http.Get(srv.UIURL()); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("UI at %s: %v", srv.UIURL(), err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("UI at %s answered %s", srv.UIURL(), resp.Status)
	}
}

func TestStartFailsClearly(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	takenPort := taken.Addr().(*net.TCPAddr).Port

	tests := []struct {
		name    string
		cfg     temporaldev.Config
		wantErr string
		wantIs  error
	}{
		{"missing binary", temporaldev.Config{Binary: "/nonexistent/temporal", UIPort: -1}, "/nonexistent/temporal", temporaldev.ErrBinaryNotFound},
		{"port taken", temporaldev.Config{Binary: binary(t), Port: takenPort, UIPort: -1}, "port " + strconv.Itoa(takenPort) + " on 127.0.0.1 is already in use", nil},
		{"UI port taken", temporaldev.Config{Binary: binary(t), UIPort: takenPort}, "UI port " + strconv.Itoa(takenPort), nil},
		{"bad port", temporaldev.Config{Binary: binary(t), Port: 70000}, "out of range", nil},
		{"bad IP", temporaldev.Config{Binary: binary(t), IP: "not-an-ip"}, "not an IP address", nil},
		{"bad dynamic config key", temporaldev.Config{Binary: binary(t), DynamicConfig: map[string]string{"a=b": "1"}}, "bad dynamic config key", nil},
		{"bad search attribute", temporaldev.Config{Binary: binary(t), SearchAttributes: map[string]string{"": "Keyword"}}, "bad search attribute name", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, err := temporaldev.Start(t.Context(), tt.cfg)
			if err == nil {
				_ = srv.Stop()
				t.Fatal("Start succeeded")
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want it to mention %q", err, tt.wantErr)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Fatalf("err = %v, want errors.Is %v", err, tt.wantIs)
			}
		})
	}
}

func TestDBFileKeepsWorkflowsAcrossRestarts(t *testing.T) {
	cfg := temporaldev.Config{Binary: binary(t), UIPort: -1, DBFile: filepath.Join(t.TempDir(), "temporal", "dev.db")}
	srv := start(t, cfg)
	c := dial(t, srv)
	run, err := c.ExecuteWorkflow(t.Context(), client.StartWorkflowOptions{ID: "persisted", TaskQueue: "nobody-polls"}, "SomeWorkflow")
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}

	srv2 := start(t, cfg)
	c2 := dial(t, srv2)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	desc, err := c2.DescribeWorkflowExecution(ctx, "persisted", run.GetRunID())
	if err != nil {
		t.Fatalf("workflow lost across restart: %v", err)
	}
	if got := desc.GetWorkflowExecutionInfo().GetStatus(); got != enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING {
		t.Fatalf("status after restart = %v, want running", got)
	}
}

// records keeps the log records a test's logger receives.
type records struct {
	mu   sync.Mutex
	list []slog.Record
}

func (r *records) Enabled(context.Context, slog.Level) bool { return true }
func (r *records) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.list = append(r.list, rec.Clone())
	return nil
}
func (r *records) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *records) WithGroup(string) slog.Handler      { return r }

// errorWith returns the first Error record whose attribute key holds a value containing want.
func (r *records) errorWith(key, want string) (slog.Record, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rec := range r.list {
		if rec.Level != slog.LevelError {
			continue
		}
		found := false
		rec.Attrs(func(a slog.Attr) bool {
			found = a.Key == key && strings.Contains(a.Value.String(), want)
			return !found
		})
		if found {
			return rec, true
		}
	}
	return slog.Record{}, false
}

func TestSuperviseRestartsAKilledServer(t *testing.T) {
	logs := &records{}
	cfg := temporaldev.Config{Binary: binary(t), UIPort: -1, DBFile: filepath.Join(t.TempDir(), "temporal.db"),
		Logger: slog.New(logs)}
	srv := start(t, cfg)
	c := dial(t, srv)
	run, err := c.ExecuteWorkflow(t.Context(), client.StartWorkflowOptions{ID: "survives-a-crash", TaskQueue: "nobody-polls"}, "SomeWorkflow")
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(t.Context())
	supervised := make(chan error, 1)
	go func() { supervised <- srv.Supervise(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-supervised
	})

	oldPID := srv.PID()
	proc, err := os.FindProcess(oldPID)
	if err != nil {
		t.Fatal(err)
	}
	if err := proc.Kill(); err != nil { // SIGKILL: no chance to clean up
		t.Fatal(err)
	}

	nsClient, err := client.NewNamespaceClient(client.Options{HostPort: srv.HostPort(),
		Logger: sdklog.NewStructuredLogger(slog.New(slog.DiscardHandler))})
	if err != nil {
		t.Fatal(err)
	}
	defer nsClient.Close()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		dctx, dcancel := context.WithTimeout(t.Context(), 5*time.Second)
		_, err := nsClient.Describe(dctx, srv.Namespace())
		dcancel()
		if err == nil && srv.Restarts() == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("server not back after kill -9: describe namespace: %v, restarts %d", err, srv.Restarts())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if srv.PID() == oldPID {
		t.Fatalf("PID still %d after the restart", oldPID)
	}
	if rec, ok := logs.errorWith("exit", "killed"); !ok {
		t.Fatal("no Error log naming the exit status of the killed server")
	} else if !strings.Contains(rec.Message, "died") {
		t.Fatalf("error log %q does not say the server died", rec.Message)
	}

	// Same database file: the workflow started before the crash is still there.
	dctx, dcancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer dcancel()
	desc, err := c.DescribeWorkflowExecution(dctx, "survives-a-crash", run.GetRunID())
	if err != nil {
		t.Fatalf("workflow lost across the restart: %v", err)
	}
	if got := desc.GetWorkflowExecutionInfo().GetStatus(); got != enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING {
		t.Fatalf("status after restart = %v, want running", got)
	}

	// Stop ends supervision: no restart after a deliberate stop.
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-supervised:
		if err != nil {
			t.Fatalf("Supervise after Stop = %v, want nil", err)
		}
		supervised <- nil // for the cleanup
	case <-time.After(time.Minute):
		t.Fatal("Supervise did not return after Stop")
	}
	if n := srv.Restarts(); n != 1 {
		t.Fatalf("Restarts() = %d after Stop, want 1", n)
	}
}

// crashingCLI writes a stand-in for the CLI that crashes the way the CLI does when a port it picked
// for an internal service is taken before it binds it: it logs the failed listener, then panics with
// a long goroutine trace. The first crashes runs crash; later runs exec the real CLI. runs counts
// the runs.
func crashingCLI(t *testing.T, crashes int) (script string, runs func() int) {
	t.Helper()
	dir := t.TempDir()
	script = filepath.Join(dir, "temporal")
	body := `#!/bin/sh
runs="` + filepath.Join(dir, "runs") + `"
echo x >> "$runs"
if [ "$(wc -l < "$runs")" -le ` + strconv.Itoa(crashes) + ` ]; then
  echo 'time=2026-11-30T18:00:00Z level=ERROR msg="Failed to start ringpop listener" error="listen tcp 127.0.0.1:41234: bind: address already in use"' >&2
  echo 'panic: runtime error: invalid memory address or nil pointer dereference' >&2
  i=0
  while [ $i -lt 400 ]; do
    echo "go.temporal.io/server/common/membership/ringpop.frame$i(0x0)" >&2
    echo "	/root/go/pkg/mod/go.temporal.io/server/common/membership/ringpop/factory.go:$i +0x1b9" >&2
    i=$((i+1))
  done
  exit 2
fi
exec "` + binary(t) + `" "$@"
`
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	return script, func() int {
		b, _ := os.ReadFile(filepath.Join(dir, "runs"))
		return strings.Count(string(b), "x")
	}
}

func TestStartRetriesAServerThatCrashesDuringStartUp(t *testing.T) {
	var logs strings.Builder
	var mu sync.Mutex
	logger := slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, nil))
	script, runs := crashingCLI(t, 1)
	srv := start(t, temporaldev.Config{Binary: script, UIPort: -1, Logger: logger})
	if _, err := dial(t, srv).CheckHealth(t.Context(), &client.CheckHealthRequest{}); err != nil {
		t.Fatalf("the server started after a crash does not answer: %v", err)
	}
	mu.Lock()
	got := logs.String()
	mu.Unlock()
	retries := strings.Count(got, "failed to start; retrying")
	if retries < 1 || retries != runs()-1 || !strings.Contains(got, "Failed to start ringpop listener") {
		t.Fatalf("%d runs, %d retries logged, want a retry per failed run naming the cause:\n%s", runs(), retries, got)
	}
}

func TestStartGivesUpOnAServerThatKeepsCrashingAndSaysWhy(t *testing.T) {
	script, runs := crashingCLI(t, 100)
	_, err := temporaldev.Start(t.Context(), temporaldev.Config{Binary: script, UIPort: -1,
		Logger: slog.New(slog.DiscardHandler)})
	if err == nil {
		t.Fatal("Start succeeded with a server that always crashes")
	}
	if n := runs(); n != 3 {
		t.Errorf("the server ran %d times, want 3 attempts", n)
	}
	for _, want := range []string{
		"server exited during start-up: exit status 2",
		"Failed to start ringpop listener", // the cause, logged before the long trace
		"panic: runtime error",
		"ringpop.frame0(", // the first frames of the trace, not its bottom
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %q:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), "ringpop.frame399(") {
		t.Errorf("error repeats the bottom of the trace:\n%v", err)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *strings.Builder
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
