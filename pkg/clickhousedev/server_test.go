package clickhousedev_test

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/agentid/agentid/pkg/clickhousedev"
)

func TestMain(m *testing.M) { os.Exit(clickhousedev.RunTests(m)) }

func TestSharedServerAnswersAndDatabasesAreSeparate(t *testing.T) {
	ctx := context.Background()
	a, dsn := clickhousedev.Database(t)
	b, _ := clickhousedev.Database(t)
	if a == b {
		t.Fatalf("two databases named %s", a)
	}
	if !strings.HasPrefix(dsn, "clickhouse://default@127.0.0.1:") || !strings.HasSuffix(dsn, "/"+a) {
		t.Errorf("dsn = %s", dsn)
	}
	srv := clickhousedev.SharedServer(t)
	if _, err := srv.Query(ctx, "CREATE TABLE "+a+".x (n UInt8) ENGINE = Memory"); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Query(ctx, "SELECT count() FROM "+b+".x"); err == nil {
		t.Errorf("a table of %s is visible in %s", a, b)
	}
	if _, err := srv.Query(ctx, "SELEKT 1"); err == nil || !strings.Contains(err.Error(), "Syntax error") {
		t.Errorf("a bad statement: err = %v, want the server's syntax error", err)
	}
}

func TestHaltKeepsDataAndRestartServesIt(t *testing.T) {
	ctx := context.Background()
	srv, err := clickhousedev.Start(ctx, clickhousedev.Config{})
	if err != nil {
		clickhousedev.Unavailable(t, err)
	}
	defer srv.Stop()
	dir := srv.DataDir()
	for _, q := range []string{"CREATE TABLE default.k (n UInt32) ENGINE = MergeTree() ORDER BY n", "INSERT INTO default.k VALUES (1), (2), (3)"} {
		if _, err := srv.Query(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	pid := srv.PID()
	if err := srv.Halt(); err != nil {
		t.Fatal(err)
	}
	if srv.PID() != 0 {
		t.Fatal("halted server still has a process")
	}
	if _, err := srv.Query(ctx, "SELECT 1"); err == nil {
		t.Fatal("a halted server answers")
	}
	if err := srv.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if srv.PID() == pid || srv.PID() == 0 {
		t.Errorf("pid after restart %d (before %d)", srv.PID(), pid)
	}
	if out, err := srv.Query(ctx, "SELECT sum(n) FROM default.k"); err != nil || strings.TrimSpace(out) != "6" {
		t.Errorf("after restart: %q, %v; want 6", out, err)
	}
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("data directory %s left behind: %v", dir, err)
	}
}

func TestMissingBinaryIsNamed(t *testing.T) {
	t.Setenv(clickhousedev.BinaryEnv, "/nonexistent/clickhouse-server")
	_, _, err := clickhousedev.FindBinary()
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/clickhouse-server") {
		t.Fatalf("err = %v", err)
	}
	if _, err := clickhousedev.Start(context.Background(), clickhousedev.Config{}); err == nil {
		t.Fatal("started without a binary")
	}
}
