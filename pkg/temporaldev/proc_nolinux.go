//go:build unix && !linux

package temporaldev

import "syscall"

func setParentDeathSignal(*syscall.SysProcAttr) {}
