//go:build unix

package clickhousedev

import (
	"errors"
	"os"
	"os/exec"
	"syscall"
)

// setProcessGroup puts the server into a process group of its own, so that Stop reaches every
// process it forked and a terminal's Ctrl-C reaches only the parent.
func setProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	setParentDeathSignal(cmd.SysProcAttr)
}

// killGroup sends SIGKILL to the server's process group.
func killGroup(p *os.Process) error {
	err := syscall.Kill(-p.Pid, syscall.SIGKILL)
	if errors.Is(err, syscall.ESRCH) {
		return nil
	}
	return err
}

// terminateGroup asks the server's process group to shut down (SIGTERM).
func terminateGroup(p *os.Process) error {
	err := syscall.Kill(-p.Pid, syscall.SIGTERM)
	if errors.Is(err, syscall.ESRCH) {
		return nil
	}
	return err
}
