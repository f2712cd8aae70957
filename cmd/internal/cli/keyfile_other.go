//go:build !unix

package cli

import (
	"errors"
	"os"
)

// ownedPrivateFile checks that fi (from Lstat of path) is a regular file, not a link.
func ownedPrivateFile(_ string, fi os.FileInfo) error {
	if !fi.Mode().IsRegular() {
		return errors.New("it is not a regular file (a symbolic link?)")
	}
	return nil
}
