//go:build linux

package temporaldev

import "syscall"

// setParentDeathSignal makes the kernel stop the server when the process that started it dies
// without calling Stop.
func setParentDeathSignal(a *syscall.SysProcAttr) { a.Pdeathsig = syscall.SIGTERM }
