//go:build windows

package fsutil

import "os"

// syncDir is a no-op: Windows cannot fsync a directory, and NTFS journals renames.
func syncDir(*os.File) error { return nil }
