// Command provisionload measures the provisioning throughput of a running `agentid dev`: see
// docs/performance.md ("Provisioning").
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/agentid/agentid/loadtest/internal/provisionload"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := provisionload.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
