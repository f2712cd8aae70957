//go:build !unix

package clickhousedev

import (
	"os"
	"os/exec"
)

func setProcessGroup(*exec.Cmd) {}

func killGroup(p *os.Process) error { return p.Kill() }

func terminateGroup(p *os.Process) error { return p.Kill() }
