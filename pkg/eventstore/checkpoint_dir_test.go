//go:build unix

package eventstore_test

import (
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
