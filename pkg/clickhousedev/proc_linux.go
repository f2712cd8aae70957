//go:build linux

package clickhousedev

import "syscall"

// setParentDeathSignal makes the kernel kill the server when the process that started it dies
// without calling Stop.
func setParentDeathSignal(a *syscall.SysProcAttr) { a.Pdeathsig = syscall.SIGKILL }
