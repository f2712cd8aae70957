//go:build !linux

package testkit

import "syscall"

// processAttributes puts a Process in a process group of its own (a Ctrl-C of the test run does not
// reach it; Stop and Kill do).
func processAttributes() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }
