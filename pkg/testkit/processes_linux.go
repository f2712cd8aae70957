//go:build linux

package testkit

import "syscall"

// processAttributes puts a Process in a process group of its own (a Ctrl-C of the test run does not
// reach it; Stop and Kill do) and makes the kernel kill it when the test binary dies without cleaning
// up (a test timeout panics past t.Cleanup).
func processAttributes() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
