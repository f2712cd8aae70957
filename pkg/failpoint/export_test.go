package failpoint

// SetKill replaces what an "exit" failpoint does, for tests; it returns the restore function.
func SetKill(f func()) (restore func()) {
	old := kill
	kill = f
	return func() { kill = old }
}
