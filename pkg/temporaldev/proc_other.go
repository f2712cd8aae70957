//go:build !unix

package temporaldev

import (
	"context"
	"os"
	"os/exec"
)

func setProcessGroup(*exec.Cmd) {}

func terminate(p *os.Process) error { return p.Kill() }

func kill(p *os.Process) error { return p.Kill() }

func lockFile(context.Context, string) (func(), error) { return func() {}, nil }
