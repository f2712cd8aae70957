package dev_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentid/agentid/cmd/internal/dev"
)

func TestDevRejectsBadDurabilityFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{name: "unknown sync mode", args: []string{"--nats-sync=sometimes"}, wantErr: `--nats-sync "sometimes": want always or interval`},
		{name: "no grace", args: []string{"--nats-grace=0s"}, wantErr: "--nats-grace 0s: want a positive duration"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dataDir := filepath.Join(t.TempDir(), "data")
			var stdout, stderr bytes.Buffer
			code := dev.Execute(append([]string{"dev", "--data-dir", dataDir}, tt.args...), &stdout, &stderr)
			if code == 0 || !strings.Contains(stderr.String(), tt.wantErr) {
				t.Fatalf("exit %d, stderr %q; want a failure naming %q", code, stderr.String(), tt.wantErr)
			}
			if _, err := os.Stat(dataDir); !os.IsNotExist(err) {
				t.Fatalf("data dir created before the flags were checked (%v)", err)
			}
		})
	}
}

func TestDevDefaultsToSyncAlways(t *testing.T) {
	if got := dev.DefaultConfig().NATSSync; got != dev.NATSSyncAlways {
		t.Fatalf("default --nats-sync = %q, want %q: dev must fsync before acknowledging", got, dev.NATSSyncAlways)
	}
}
