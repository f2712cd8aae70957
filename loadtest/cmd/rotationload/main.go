// Command rotationload runs token load across a signing-key rotation of a running `agentid dev` and
// verifies every issued token with pkg/authn's JWKS verifier: see docs/rotation.md.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/agentid/agentid/loadtest/internal/rotationload"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := rotationload.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
