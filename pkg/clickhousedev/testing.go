package clickhousedev

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// shared is the one server of a test binary, started by the first test that asks for it.
var shared struct {
	once sync.Once
	srv  *Server
	err  error
}

// databases numbers the databases Database creates.
var databases atomic.Int64

// RunTests runs a test binary's tests (call it from TestMain: os.Exit(clickhousedev.RunTests(m)))
// and then stops the shared server, if a test started it.
func RunTests(m *testing.M) int {
	code := m.Run()
	if shared.srv != nil {
		if err := shared.srv.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			if code == 0 {
				code = 1
			}
		}
	}
	return code
}

// SharedServer returns the test binary's server, starting it on first use. Without a ClickHouse
// binary the test fails under CI=true and is skipped otherwise, naming the install command; a
// server that does not start fails the test.
func SharedServer(t testing.TB) *Server {
	t.Helper()
	shared.once.Do(func() {
		shared.srv, shared.err = Start(context.Background(), Config{})
	})
	if shared.err != nil {
		Unavailable(t, shared.err)
	}
	return shared.srv
}

// Unavailable ends a test that needs ClickHouse and has none: a missing binary is a skip outside
// CI and a failure under CI=true; any other error is a failure.
func Unavailable(t testing.TB, err error) {
	t.Helper()
	if errors.Is(err, ErrBinaryNotFound) && os.Getenv("CI") != "true" {
		t.Skipf("clickhousedev: %v (make deps installs it as root)", err)
	}
	t.Fatalf("clickhousedev: ClickHouse is needed for this test (CI=%q): %v", os.Getenv("CI"), err)
}

var unsafeName = regexp.MustCompile(`[^a-z0-9_]+`)

// Database creates a fresh database for the test in the shared server (dropped when the test
// ends) and returns its name and a DSN for it.
func Database(t testing.TB) (name, dsn string) {
	t.Helper()
	srv := SharedServer(t)
	base := strings.Trim(unsafeName.ReplaceAllString(strings.ToLower(t.Name()), "_"), "_")
	if len(base) > 40 {
		base = base[:40]
	}
	name = fmt.Sprintf("t%d_%s", databases.Add(1), base)
	if _, err := srv.Query(context.Background(), "CREATE DATABASE "+name); err != nil {
		t.Fatalf("clickhousedev: create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		if _, err := srv.Query(context.Background(), "DROP DATABASE IF EXISTS "+name); err != nil && srv.PID() != 0 {
			t.Errorf("clickhousedev: drop database %s: %v", name, err)
		}
	})
	return name, srv.DSN(name)
}
