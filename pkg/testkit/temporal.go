package testkit

import (
	"context"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/agentid/agentid/pkg/temporaldev"
)

// StartTemporal runs a headless, in-memory Temporal development server on free loopback ports with the
// agentid namespace and search attributes, and stops it when the test ends. A missing `temporal`
// binary that cannot be built fails the test (never skips it), naming the command that builds it.
func StartTemporal(t testing.TB) *temporaldev.Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute) // first use builds the CLI
	defer cancel()
	bin, err := temporaldev.EnsureBinary(ctx)
	if err != nil {
		t.Fatalf("testkit: the temporal CLI is needed for this test (CI=%q): %v\nbuild it from the repository root with: %s",
			os.Getenv("CI"), err, temporaldev.BuildCommand)
	}
	var logs serverLog
	srv, err := temporaldev.Start(ctx, temporaldev.Config{Binary: bin, UIPort: -1, Stderr: &logs})
	if err != nil {
		t.Fatalf("testkit: start the Temporal dev server: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() { // the server's warnings and errors up to now, to explain the failure
			t.Logf("testkit: Temporal dev server log (warnings and errors):\n%s", logs.String())
		}
		if err := srv.Stop(); err != nil {
			t.Errorf("testkit: stop the Temporal dev server: %v", err)
		}
	})
	return srv
}

// serverLog keeps the last 64 KiB the server wrote to stderr.
type serverLog struct {
	mu  sync.Mutex
	buf []byte
}

func (l *serverLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	if over := len(l.buf) - 64<<10; over > 0 {
		l.buf = append(l.buf[:0], l.buf[over:]...)
	}
	return len(p), nil
}

func (l *serverLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.buf)
}
