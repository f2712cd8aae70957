package dev

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/agentid/agentid/pkg/clickhousedev"
	"github.com/agentid/agentid/pkg/fsutil"
)

// startClickHouse runs the local ClickHouse server of --clickhouse: data in <data-dir>/clickhouse
// (kept across restarts), free loopback ports, its log in <data-dir>/logs/clickhouse.log. stop
// shuts it down and closes the log.
func startClickHouse(ctx context.Context, cfg Config) (srv *clickhousedev.Server, stop func(), err error) {
	dir := filepath.Join(cfg.DataDir, "clickhouse")
	if err := fsutil.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, err
	}
	logFile, err := os.OpenFile(filepath.Join(cfg.DataDir, "logs", "clickhouse.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, nil, err
	}
	srv, err = clickhousedev.Start(ctx, clickhousedev.Config{DataDir: dir, Output: logFile})
	if err != nil {
		_ = logFile.Close()
		return nil, nil, fmt.Errorf("--clickhouse: %w", err)
	}
	return srv, func() {
		_ = srv.Shutdown(10 * time.Second)
		_ = logFile.Close()
	}, nil
}
