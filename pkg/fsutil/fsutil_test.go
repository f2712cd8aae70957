//go:build unix

package fsutil_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/agentid/agentid/pkg/fsutil"
)

// entries lists the names in dir, failing the test on error.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, de := range des {
		names = append(names, de.Name())
	}
	return names
}

func TestWriteFileAtomic(t *testing.T) {
	old := syscall.Umask(0o077) // a restrictive umask must not change the requested mode
	t.Cleanup(func() { syscall.Umask(old) })

	tests := []struct {
		name     string
		existing []byte // nil: no file before
		data     []byte
		perm     os.FileMode
	}{
		{name: "new secret", data: []byte("0123abcd\n"), perm: 0o600},
		{name: "replaces content and mode", existing: []byte("a much longer old content that must not survive"), data: []byte("new"), perm: 0o600},
		{name: "empty file", data: []byte{}, perm: 0o600},
		{name: "readable mode is exact", data: []byte("public"), perm: 0o644},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "kek.key")
			if tt.existing != nil {
				if err := os.WriteFile(path, tt.existing, 0o666); err != nil {
					t.Fatal(err)
				}
			}
			if err := fsutil.WriteFileAtomic(path, tt.data, tt.perm); err != nil {
				t.Fatalf("WriteFileAtomic: %v", err)
			}
			got, err := os.ReadFile(path)
			if err != nil || !bytes.Equal(got, tt.data) {
				t.Fatalf("content = %q (%v), want %q", got, err, tt.data)
			}
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != tt.perm {
				t.Fatalf("mode = %v, want %v", fi.Mode().Perm(), tt.perm)
			}
			if names := entries(t, dir); len(names) != 1 || names[0] != "kek.key" {
				t.Fatalf("directory holds %v, want only kek.key (no temporary file left)", names)
			}
		})
	}
}

func TestWriteFileAtomicFailsWithoutTrace(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(t *testing.T, dir string) string // returns the path to write
		wantErr string
	}{
		{
			name:    "missing directory",
			setup:   func(t *testing.T, dir string) string { return filepath.Join(dir, "nope", "cred.json") },
			wantErr: "cred.json",
		},
		{
			name: "path is a directory",
			setup: func(t *testing.T, dir string) string {
				p := filepath.Join(dir, "taken")
				if err := os.MkdirAll(filepath.Join(p, "child"), 0o700); err != nil {
					t.Fatal(err)
				}
				return p
			},
			wantErr: "taken",
		},
		{
			name:    "no file name",
			setup:   func(t *testing.T, dir string) string { return dir + string(filepath.Separator) },
			wantErr: "not a file name",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := tt.setup(t, dir)
			before := entries(t, dir)
			err := fsutil.WriteFileAtomic(path, []byte("secret"), 0o600)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want an error naming %q", err, tt.wantErr)
			}
			if after := entries(t, dir); strings.Join(after, ",") != strings.Join(before, ",") {
				t.Fatalf("directory changed on error: %v → %v", before, after)
			}
		})
	}
}

func TestMkdirAll(t *testing.T) {
	root := t.TempDir()
	deep := filepath.Join(root, "a", "b", "credentials")
	if err := fsutil.MkdirAll(deep, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Join(root, "a"), filepath.Join(root, "a", "b"), deep} {
		fi, err := os.Stat(p)
		if err != nil || !fi.IsDir() {
			t.Fatalf("%s: %v, want a directory", p, err)
		}
	}
	if err := fsutil.MkdirAll(deep, 0o700); err != nil {
		t.Fatalf("existing directory: %v", err)
	}
	file := filepath.Join(root, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := fsutil.MkdirAll(filepath.Join(file, "sub"), 0o700); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Fatalf("under a file: err = %v, want a not-a-directory error", err)
	}
}

func TestSyncDirNamesMissingDirectory(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "gone")
	if err := fsutil.SyncDir(missing); err == nil || !strings.Contains(err.Error(), missing) {
		t.Fatalf("err = %v, want an error naming %s", err, missing)
	}
}
