//go:build unix

package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
)

// maxKeyFileBytes bounds what readOwnedPrivateFile reads.
const maxKeyFileBytes = 64 << 10

// readOwnedPrivateFile reads path only if it is a regular file (a symbolic link is refused when the
// file is opened, so it cannot be swapped in after a check), owned by the current user and closed to
// group and others.
func readOwnedPrivateFile(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if errors.Is(err, syscall.ELOOP) {
		return nil, errors.New("it is a symbolic link, not a regular file")
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, errors.New("it is not a regular file")
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("its mode %#o lets group or others read it", fi.Mode().Perm())
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil, errors.New("its owner cannot be read")
	}
	if int(st.Uid) != os.Getuid() {
		return nil, fmt.Errorf("it belongs to user %d, not to you", st.Uid)
	}
	return io.ReadAll(io.LimitReader(f, maxKeyFileBytes))
}
