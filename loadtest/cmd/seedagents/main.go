// Command seedagents writes many ACTIVE agents straight into the AGENTS stream of a stopped
// platform, to measure restarts and read models at scale: see docs/loadtest.md.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/agentid/agentid/loadtest/internal/seed"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := seed.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
