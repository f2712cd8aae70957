//go:build unix

package cli

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// ownedPrivateFile checks that fi (from Lstat of path) is a regular file, not a link, owned by the
// current user and closed to group and others.
func ownedPrivateFile(path string, fi os.FileInfo) error {
	if !fi.Mode().IsRegular() {
		return errors.New("it is not a regular file (a symbolic link?)")
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("its mode %#o lets group or others read it", fi.Mode().Perm())
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return errors.New("its owner cannot be read")
	}
	if int(st.Uid) != os.Getuid() {
		return fmt.Errorf("it belongs to user %d, not to you", st.Uid)
	}
	return nil
}
