package testkit_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentid/agentid/pkg/testkit"
)

// helperEnv makes the test binary act as the child process of these tests: "serve ADDR" answers
// /readyz on ADDR until killed, "exit" ends at once with status 3.
const helperEnv = "TESTKIT_PROCESS_HELPER"

// helperMarkerEnv names the marker file of mode "serve-after-marker": it exits while the file is
// missing and serves once it exists.
const helperMarkerEnv = "TESTKIT_PROCESS_HELPER_MARKER"

// TestProcessHelper is not a test: it is the child process the tests below start.
func TestProcessHelper(t *testing.T) {
	mode, addr, _ := strings.Cut(os.Getenv(helperEnv), " ")
	switch mode {
	case "":
		return
	case "exit":
		fmt.Println("exiting at once")
		os.Exit(3)
	case "serve-after-marker":
		if _, err := os.Stat(os.Getenv(helperMarkerEnv)); err != nil {
			fmt.Println("no marker yet")
			os.Exit(5)
		}
		fallthrough
	case "serve":
		http.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ready")) })
		fmt.Println("serving on", addr)
		if err := http.ListenAndServe(addr, nil); err != nil {
			fmt.Println(err)
			os.Exit(4)
		}
	}
}

func helper(t *testing.T, mode string) (testkit.ProcessConfig, string) {
	addr := fmt.Sprintf("127.0.0.1:%d", testkit.FreePorts(t, 1)[0])
	return testkit.ProcessConfig{
		Name:     "helper",
		Binary:   os.Args[0],
		Args:     []string{"-test.run=^TestProcessHelper$"},
		Env:      []string{helperEnv + "=" + mode + " " + addr},
		ReadyURL: "http://" + addr + "/readyz",
	}, addr
}

func TestProcessKillAndRestart(t *testing.T) {
	cfg, addr := helper(t, "serve")
	p := testkit.StartProcess(t, cfg)
	first := p.Pid()
	if first == 0 || p.Starts() != 1 {
		t.Fatalf("pid %d after %d starts, want a running process started once", first, p.Starts())
	}

	p.Kill(t)
	select {
	case <-p.Exited():
	default:
		t.Fatal("Exited is open after Kill returned")
	}
	if !testkit.KilledBySIGKILL(p.State()) {
		t.Fatalf("the process ended with %v, want SIGKILL", p.State())
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		_ = c.Close()
		t.Fatalf("%s still accepts connections after Kill", addr)
	}

	if d := p.Restart(t); d <= 0 {
		t.Fatalf("restart-to-ready %s, want a positive duration", d)
	}
	if p.Pid() == first || p.Starts() != 2 {
		t.Fatalf("pid %d (was %d) after %d starts, want a new process started twice", p.Pid(), first, p.Starts())
	}
	res, err := http.Get(cfg.ReadyURL)
	if err != nil {
		t.Fatalf("the restarted process does not answer: %v", err)
	}
	_ = res.Body.Close()
	if !strings.Contains(p.Output(), "start 2 of helper") || !strings.Contains(p.Output(), "serving on "+addr) {
		t.Fatalf("output lacks the second start:\n%s", p.Output())
	}

	p.Stop()
	if st := p.State(); st == nil || testkit.KilledBySIGKILL(st) {
		t.Fatalf("Stop ended the process with %v, want SIGTERM", st)
	}
}

func TestProcessEndsBeforeReady(t *testing.T) {
	cfg, _ := helper(t, "exit")
	p := testkit.NewProcess(t, cfg)
	p.Start(t)
	_, err := p.AwaitReady(context.Background())
	if !errors.Is(err, testkit.ErrEndedBeforeReady) || !strings.Contains(err.Error(), "helper ended before it was ready") {
		t.Fatalf("AwaitReady: %v, want that the process ended before it was ready", err)
	}
	if code := p.State().ExitCode(); code != 3 {
		t.Fatalf("exit code %d, want 3", code)
	}
	if !strings.Contains(p.OutputTail(1<<10), "exiting at once") {
		t.Fatalf("output lacks what the process printed:\n%s", p.Output())
	}
}

func TestProcessNotReadyInTime(t *testing.T) {
	cfg, _ := helper(t, "serve")
	cfg.ReadyURL += "-missing" // 404 forever
	cfg.ReadyTimeout = 500 * time.Millisecond
	p := testkit.NewProcess(t, cfg)
	p.Start(t)
	_, err := p.AwaitReady(context.Background())
	if err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("AwaitReady: %v, want a timeout naming the last answer (404)", err)
	}
}

func TestProcessStartUntilReady(t *testing.T) {
	// The helper exits at once while a marker file is missing, and serves once it exists: the
	// first start fails, a later one succeeds.
	cfg, _ := helper(t, "serve-after-marker")
	marker := filepath.Join(t.TempDir(), "marker")
	cfg.Env = append(cfg.Env, helperMarkerEnv+"="+marker)
	p := testkit.NewProcess(t, cfg)
	p.Start(t)
	if _, err := p.AwaitReady(context.Background()); !errors.Is(err, testkit.ErrEndedBeforeReady) {
		t.Fatalf("first start: %v, want it to end before it is ready", err)
	}
	if err := os.WriteFile(marker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	d, starts, err := p.StartUntilReady(context.Background(), 10*time.Millisecond)
	if err != nil || d <= 0 || starts != 1 || p.Starts() != 2 {
		t.Fatalf("StartUntilReady: %s, %d starts, %v (%d starts in all), want ready at the first start", d, starts, err, p.Starts())
	}
	p.Kill(t)

	if err := os.Remove(marker); err != nil {
		t.Fatal(err)
	}
	cfg2, _ := helper(t, "serve-after-marker")
	cfg2.Env = append(cfg2.Env, helperMarkerEnv+"="+marker)
	cfg2.ReadyTimeout = time.Second
	q := testkit.NewProcess(t, cfg2)
	_, starts, err = q.StartUntilReady(context.Background(), 50*time.Millisecond)
	if !errors.Is(err, testkit.ErrEndedBeforeReady) || starts < 2 {
		t.Fatalf("StartUntilReady of a process that always exits: %d starts, %v; want several starts ending before ready", starts, err)
	}
}
