//go:build unix

package eventstore_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentid/agentid/pkg/eventstore"
)

// TestDirCheckpointsRefusesOpenDirectory: an existing checkpoint directory that others may write
// to is refused, naming the directory and what is wrong with it; a new one is created private.
func TestDirCheckpointsRefusesOpenDirectory(t *testing.T) {
	tests := []struct {
		name    string
		mode    os.FileMode
		wantErr string
	}{
		{name: "private", mode: 0o700},
		{name: "readable by others", mode: 0o755},
		{name: "group-writable", mode: 0o770, wantErr: "writable by group or others"},
		{name: "world-writable", mode: 0o707, wantErr: "writable by group or others"},
		{name: "sticky world-writable", mode: 0o777 | os.ModeSticky, wantErr: "writable by group or others"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "ckpt")
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(dir, tt.mode); err != nil {
				t.Fatal(err)
			}
			_, err := eventstore.NewDirCheckpoints(dir)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("NewDirCheckpoints(%#o): %v", tt.mode, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), dir) {
				t.Fatalf("NewDirCheckpoints(%#o) = %v, want an error naming %s and %q", tt.mode, err, dir, tt.wantErr)
			}
		})
	}

	t.Run("created private", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "new", "ckpt")
		if _, err := eventstore.NewDirCheckpoints(dir); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(dir)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			t.Fatalf("a new checkpoint directory has mode %#o", fi.Mode().Perm())
		}
	})

	t.Run("foreign owner", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("giving a directory to another user needs root")
		}
		dir := filepath.Join(t.TempDir(), "ckpt")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(dir, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		if _, err := eventstore.NewDirCheckpoints(dir); err == nil || !strings.Contains(err.Error(), "owned by uid 65534") {
			t.Fatalf("a directory owned by another user: %v", err)
		}
	})
}

// TestDirCheckpointsRefusesForeignFiles: a checkpoint file that is not a regular file, that others
// may write to, or that another user owns is refused by Get (the error names the file and what is
// wrong with it); a private or merely readable one is read.
func TestDirCheckpointsRefusesForeignFiles(t *testing.T) {
	const name = "proj-v1"
	tests := []struct {
		name    string
		setup   func(t *testing.T, file string)
		wantErr string
	}{
		{name: "as written"},
		{name: "readable by others", setup: chmod(0o644)},
		{name: "group-writable", setup: chmod(0o664), wantErr: "writable by group or others"},
		{name: "world-writable", setup: chmod(0o646), wantErr: "writable by group or others"},
		{name: "symbolic link", setup: func(t *testing.T, file string) {
			target := filepath.Join(t.TempDir(), "elsewhere")
			if err := os.Rename(file, target); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(target, file); err != nil {
				t.Fatal(err)
			}
		}, wantErr: "not a regular file"},
		{name: "directory", setup: func(t *testing.T, file string) {
			if err := os.Remove(file); err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(file, 0o700); err != nil {
				t.Fatal(err)
			}
		}, wantErr: "not a regular file"},
		{name: "foreign owner", setup: func(t *testing.T, file string) {
			if os.Geteuid() != 0 {
				// CI runs as root: there this case must run, never be skipped.
				if os.Getenv("CI") == "true" {
					t.Fatal("giving a file to another user needs root, and CI=true runs every case")
				}
				t.Skip("giving a file to another user needs root")
			}
			if err := os.Chown(file, 65534, 65534); err != nil {
				t.Fatal(err)
			}
		}, wantErr: "owned by uid 65534"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			store, err := eventstore.NewDirCheckpoints(dir)
			if err != nil {
				t.Fatal(err)
			}
			if err := store.Put(t.Context(), name, strings.NewReader("state")); err != nil {
				t.Fatal(err)
			}
			files, err := filepath.Glob(filepath.Join(dir, "*.ckpt"))
			if err != nil || len(files) != 1 {
				t.Fatalf("checkpoint files %v (%v), want one", files, err)
			}
			if tt.setup != nil {
				tt.setup(t, files[0])
			}
			rc, err := store.Get(t.Context(), name)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Get: %v", err)
				}
				rc.Close()
				return
			}
			if err == nil {
				rc.Close()
				t.Fatalf("Get of a checkpoint file (%s) succeeded, want %q", tt.name, tt.wantErr)
			}
			if errors.Is(err, eventstore.ErrNoCheckpoint) || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), files[0]) {
				t.Fatalf("Get = %v, want an error naming %s and %q", err, files[0], tt.wantErr)
			}
		})
	}
}

func chmod(mode os.FileMode) func(t *testing.T, file string) {
	return func(t *testing.T, file string) {
		if err := os.Chmod(file, mode); err != nil {
			t.Fatal(err)
		}
	}
}
