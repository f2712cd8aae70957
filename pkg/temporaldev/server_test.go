package temporaldev_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"

	"github.com/agentid/agentid/pkg/temporaldev"
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
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
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
