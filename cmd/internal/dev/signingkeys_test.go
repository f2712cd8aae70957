package dev_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentid/agentid/cmd/internal/dev"
)

func TestDevRejectsBadSigningKeyFlags(t *testing.T) {
	dir := t.TempDir()
	open := filepath.Join(dir, "open.key")
	if err := os.WriteFile(open, []byte(strings.Repeat("ab", 32)), 0o644); err != nil {
		t.Fatal(err)
	}
	short := filepath.Join(dir, "short.key")
	if err := os.WriteFile(short, []byte("abcd"), 0o600); err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(dir, "good.key")
	if err := os.WriteFile(good, []byte(strings.Repeat("cd", 32)), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{name: "no publish delay", args: []string{"--signing-key-publish-delay=0s"}, wantErr: "--signing-key-publish-delay 0s: want a positive duration"},
		{name: "negative retention", args: []string{"--signing-key-retention=-1s"}, wantErr: "--signing-key-retention -1s: want a positive duration"},
		{name: "negative interval", args: []string{"--signing-key-rotation-interval=-1h"}, wantErr: "--signing-key-rotation-interval -1h0m0s: want 0"},
		{name: "interval within the publish delay", args: []string{"--signing-key-publish-delay=10m", "--signing-key-rotation-interval=5m"}, wantErr: "--signing-key-rotation-interval 5m0s: must exceed --signing-key-publish-delay 10m0s"},
		{name: "publish delay not a duration", args: []string{"--signing-key-publish-delay=soon"}, wantErr: `invalid argument "soon" for "--signing-key-publish-delay"`},
		{name: "no check interval", args: []string{"--signing-key-check-interval=0s"}, wantErr: "--signing-key-check-interval 0s: want a positive duration"},
		{name: "publish delay below the JWKS refresh", args: []string{"--signing-key-publish-delay=3s"}, wantErr: "--signing-key-publish-delay 3s: want at least 5m0s"},
		{name: "retention below a token's lifetime", args: []string{"--signing-key-retention=1m"}, wantErr: "--signing-key-retention 1m0s: want at least 24h0m35s"},
		{name: "retention below the allowance", args: []string{"--signing-key-retention=24h0m35s", "--projection-lag-allowance=1m"},
			wantErr: "--signing-key-retention 24h0m35s: want at least 24h1m30s"},
		// With the test-only flag, short durations pass the signing-key checks: the start fails on the
		// next check (the incident policy) instead.
		{name: "short durations for tests", args: []string{"--signing-key-unsafe-short-durations", "--signing-key-publish-delay=3s",
			"--signing-key-retention=7s", "--incident-policy=default:critical=notify"}, wantErr: "--incident-policy: incident policy of tenant default"},
		{name: "short durations for tests, still positive", args: []string{"--signing-key-unsafe-short-durations", "--signing-key-retention=0s"},
			wantErr: "--signing-key-retention 0s: want a positive duration"},
		{name: "empty KEK id", args: []string{"--kek-id="}, wantErr: `--kek-id "": want a non-empty id`},
		{name: "old KEK without a file", args: []string{"--old-kek-file=kek-1="}, wantErr: `--old-kek-file "kek-1=": want [KEK_ID=]FILE`},
		{name: "old KEK missing", args: []string{"--old-kek-file=/nonexistent/kek-1.key"}, wantErr: "--old-kek-file /nonexistent/kek-1.key:"},
		{name: "old KEK readable by others", args: []string{"--old-kek-file=" + open}, wantErr: "--old-kek-file " + open + ": issuer: key-encryption key file " + open + " has mode"},
		{name: "old KEK too short", args: []string{"--old-kek-file=" + short}, wantErr: "--old-kek-file " + short + ":"},
		{name: "old KEK with the current id", args: []string{"--old-kek-file=" + dev.DefaultKEKID + "=" + good}, wantErr: `key-encryption key id "dev-kek.key" is also given by --kek-id`},
		{name: "old KEK given twice", args: []string{"--old-kek-file=k1=" + good, "--old-kek-file=k1=" + good}, wantErr: `key-encryption key id "k1" is also given by --old-kek-file k1=`},
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

func TestDevSigningKeyDefaultsAreTheIssuers(t *testing.T) {
	f := dev.DefaultConfig().SigningKeys
	rot := f.Issuer.SigningKeys
	if rot.PublishDelay != 10*time.Minute || rot.Retention != 24*time.Hour+90*time.Second || rot.Interval != 0 || f.UnsafeShortDurations {
		t.Errorf("defaults publish delay %s, retention %s, interval %s, unsafe short durations %v; want the issuer's 10m, 24h1m30s, 0, false (docs/rotation.md)",
			rot.PublishDelay, rot.Retention, rot.Interval, f.UnsafeShortDurations)
	}
	if f.KEKID != "dev-kek.key" {
		t.Errorf("default --kek-id %q, want dev-kek.key: keys sealed by earlier versions carry that id", f.KEKID)
	}
}
