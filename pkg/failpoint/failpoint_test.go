package failpoint_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentid/agentid/pkg/failpoint"
)

const seam = failpoint.AppendBeforeReply

func TestOffIsNil(t *testing.T) {
	if err := failpoint.Set(""); err != nil {
		t.Fatal(err)
	}
	if err := failpoint.Inject(t.Context(), seam); err != nil {
		t.Fatalf("Inject with nothing armed = %v", err)
	}
}

func TestActions(t *testing.T) {
	t.Run("error", func(t *testing.T) {
		disable, err := failpoint.Enable(seam, "error")
		if err != nil {
			t.Fatal(err)
		}
		defer disable()
		if err := failpoint.Inject(t.Context(), seam); !errors.Is(err, failpoint.ErrInjected) || !strings.Contains(err.Error(), seam) {
			t.Fatalf("Inject = %v, want ErrInjected naming %s", err, seam)
		}
		if err := failpoint.Inject(t.Context(), failpoint.WorkflowBeforeStart); err != nil {
			t.Fatalf("another seam fired: %v", err)
		}
	})
	t.Run("count limits the hits", func(t *testing.T) {
		disable, err := failpoint.Enable(seam, "2*error")
		if err != nil {
			t.Fatal(err)
		}
		defer disable()
		var fired int
		for range 5 {
			if failpoint.Inject(t.Context(), seam) != nil {
				fired++
			}
		}
		if fired != 2 {
			t.Fatalf("2*error fired %d times", fired)
		}
	})
	t.Run("panic", func(t *testing.T) {
		disable, err := failpoint.Enable(seam, "panic")
		if err != nil {
			t.Fatal(err)
		}
		defer disable()
		defer func() {
			if recover() == nil {
				t.Fatal("panic failpoint did not panic")
			}
		}()
		_ = failpoint.Inject(t.Context(), seam)
	})
	t.Run("pause ends with the context", func(t *testing.T) {
		disable, err := failpoint.Enable(seam, "pause(1h)")
		if err != nil {
			t.Fatal(err)
		}
		defer disable()
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- failpoint.Inject(ctx, seam) }()
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("pause returned %v", err)
			}
		case <-time.After(time.Minute):
			t.Fatal("pause ignored its context")
		}
	})
	t.Run("exit kills", func(t *testing.T) {
		killed := false
		defer failpoint.SetKill(func() { killed = true })()
		disable, err := failpoint.Enable(seam, "1*exit")
		if err != nil {
			t.Fatal(err)
		}
		defer disable()
		_ = failpoint.Inject(t.Context(), seam)
		if !killed {
			t.Fatal("exit did not kill")
		}
	})
	t.Run("disable", func(t *testing.T) {
		disable, err := failpoint.Enable(seam, "error")
		if err != nil {
			t.Fatal(err)
		}
		disable()
		if err := failpoint.Inject(t.Context(), seam); err != nil {
			t.Fatalf("disabled failpoint fired: %v", err)
		}
	})
}

func TestArmedListsWhatIsArmed(t *testing.T) {
	if err := failpoint.Set(seam + "=1*exit;" + failpoint.WorkflowAfterStart + "=pause(2s)"); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = failpoint.Set("") }()
	got := strings.Join(failpoint.Armed(), " ")
	if want := seam + "=1*exit " + failpoint.WorkflowAfterStart + "=pause(2s)"; got != want {
		t.Fatalf("Armed() = %q, want %q", got, want)
	}
	_ = failpoint.Set("")
	if len(failpoint.Armed()) != 0 {
		t.Fatalf("Armed() after disarming = %v", failpoint.Armed())
	}
}

func TestBadSpecsAreRefused(t *testing.T) {
	for _, spec := range []string{
		"nosuch/seam=error", seam, seam + "=explode", seam + "=pause(soon)", seam + "=pause(-1s)", seam + "=0*error", seam + "=x*error",
	} {
		if err := failpoint.Set(spec); err == nil {
			t.Errorf("Set(%q) accepted", spec)
		}
	}
	t.Setenv(failpoint.Env, "typo=error")
	if err := failpoint.FromEnv(); err == nil || !strings.Contains(err.Error(), failpoint.Env) || !strings.Contains(err.Error(), "typo") {
		t.Fatalf("FromEnv = %v, want an error naming the variable and the failpoint", err)
	}
}

// TestExitIsKillNine runs this test binary as a child with an exit failpoint armed from the
// environment and checks that it died of SIGKILL.
func TestExitIsKillNine(t *testing.T) {
	if os.Getenv("FAILPOINT_CHILD") == "1" {
		if err := failpoint.FromEnv(); err != nil {
			os.Exit(3)
		}
		_ = failpoint.Inject(context.Background(), seam)
		os.Exit(0) // not reached when the failpoint fires
	}
	cmd := exec.Command(os.Args[0], "-test.run", "^TestExitIsKillNine$")
	cmd.Env = append(os.Environ(), "FAILPOINT_CHILD=1", failpoint.Env+"="+seam+"=exit")
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("child = %v, want killed", err)
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child ended with %v, want SIGKILL", ee)
	}
}

func BenchmarkInjectOff(b *testing.B) {
	_ = failpoint.Set("")
	ctx := context.Background()
	for b.Loop() {
		_ = failpoint.Inject(ctx, seam)
	}
}
