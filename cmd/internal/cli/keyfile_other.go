//go:build !unix

package cli

import (
	"errors"
	"os"
)

// readOwnedPrivateFile reads path only if it is a regular file, not a link.
func readOwnedPrivateFile(path string) ([]byte, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, errors.New("it is not a regular file (a symbolic link?)")
	}
	return os.ReadFile(path)
}
