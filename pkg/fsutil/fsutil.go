// Package fsutil writes files so that they survive a crash or power loss: either the old content or
// the new one is on disk, never a truncated mix, and once a call returns the new content is durable.
package fsutil

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// WriteFileAtomic replaces the file at path with data, atomically and durably: it writes a temporary
// file in the same directory, fsyncs it, renames it over path and fsyncs the directory. The file gets
// exactly perm (the umask does not apply). On error path is unchanged and no temporary file is left.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	if base == "" {
		return fmt.Errorf("fsutil: write %q: not a file name", path)
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("fsutil: write %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if err := f.Chmod(perm.Perm()); err != nil {
		return fmt.Errorf("fsutil: write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("fsutil: write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsutil: fsync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("fsutil: write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("fsutil: write %s: %w", path, err)
	}
	if err := SyncDir(dir); err != nil {
		return err
	}
	return nil
}

// SyncDir fsyncs the directory dir, making the creation, rename or removal of its entries durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("fsutil: fsync directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := syncDir(d); err != nil {
		return fmt.Errorf("fsutil: fsync directory %s: %w", dir, err)
	}
	return nil
}

// MkdirAll creates path and any missing parents with perm, as os.MkdirAll does, and fsyncs the parent
// of every directory it creates, so that the new directories survive a crash.
func MkdirAll(path string, perm os.FileMode) error {
	path = filepath.Clean(path)
	var missing []string
	for p := path; ; {
		fi, err := os.Stat(p)
		if err == nil {
			if !fi.IsDir() {
				return fmt.Errorf("fsutil: mkdir %s: %s is not a directory", path, p)
			}
			break
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("fsutil: mkdir %s: %w", path, err)
		}
		missing = append(missing, p)
		parent := filepath.Dir(p)
		if parent == p {
			break
		}
		p = parent
	}
	if len(missing) == 0 {
		return nil
	}
	if err := os.MkdirAll(path, perm); err != nil {
		return fmt.Errorf("fsutil: mkdir %s: %w", path, err)
	}
	// Deepest first: each created directory's entry lives in its parent.
	for _, p := range missing {
		if err := SyncDir(filepath.Dir(p)); err != nil {
			return err
		}
	}
	return nil
}
