//go:build unix

package eventstore

import (
	"os"
	"syscall"
)

// foreignOwner reports the owner of fi when it is not the process's effective user.
func foreignOwner(fi os.FileInfo) (uid int, foreign bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return int(st.Uid), int(st.Uid) != os.Geteuid()
}
