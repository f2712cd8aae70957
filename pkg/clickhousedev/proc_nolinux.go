//go:build unix && !linux

package clickhousedev

import "syscall"

func setParentDeathSignal(*syscall.SysProcAttr) {}
