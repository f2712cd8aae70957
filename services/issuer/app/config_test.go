package app_test

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentid/agentid/services/issuer/app"
)

func TestConfigValidate(t *testing.T) {
	good := func() app.Config {
		return app.Config{PublicURL: "http://127.0.0.1:8080", KEK: testKEK}
	}
	tests := []struct {
		name    string
		edit    func(c *app.Config)
		wantErr string
	}{
		{name: "ok"},
		{name: "https with path", edit: func(c *app.Config) { c.PublicURL = "https://auth.example.com/agentid" }},
		{name: "no public URL", edit: func(c *app.Config) { c.PublicURL = "" }, wantErr: "PublicURL"},
		{name: "relative public URL", edit: func(c *app.Config) { c.PublicURL = "/t" }, wantErr: "PublicURL"},
		{name: "public URL with query", edit: func(c *app.Config) { c.PublicURL = "http://x/?a=1" }, wantErr: "PublicURL"},
		{name: "no KEK", edit: func(c *app.Config) { c.KEK = nil }, wantErr: "KEK"},
		{name: "short KEK", edit: func(c *app.Config) { c.KEK = make([]byte, 16) }, wantErr: "KEK"},
		{name: "TTL above a day", edit: func(c *app.Config) { c.DefaultTokenTTL = 25 * time.Hour }, wantErr: "DefaultTokenTTL"},
		{name: "sub-second TTL", edit: func(c *app.Config) { c.DefaultTokenTTL = time.Millisecond }, wantErr: "DefaultTokenTTL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good()
			if tt.edit != nil {
				tt.edit(&c)
			}
			err := c.Validate()
			if (err != nil) != (tt.wantErr != "") || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("Validate = %v, want error mentioning %q", err, tt.wantErr)
			}
		})
	}
	if _, err := app.New(good(), app.Deps{}); err == nil {
		t.Fatal("New without a store succeeded")
	}
}

func TestLoadKEKFile(t *testing.T) {
	key := bytes.Repeat([]byte{0xab}, 32)
	dir := t.TempDir()
	write := func(name string, data []byte, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name    string
		path    string
		wantErr string
	}{
		{name: "raw", path: write("raw", key, 0o600)},
		{name: "hex", path: write("hex", []byte(hex.EncodeToString(key)+"\n"), 0o600)},
		{name: "base64", path: write("b64", []byte(base64.StdEncoding.EncodeToString(key)), 0o400)},
		{name: "too short", path: write("short", []byte("abcd"), 0o600), wantErr: "32 bytes"},
		{name: "world readable", path: write("open", key, 0o644), wantErr: "chmod 600"},
		{name: "missing", path: filepath.Join(dir, "nope"), wantErr: "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := app.LoadKEKFile(tt.path)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || !bytes.Equal(got, key) {
				t.Fatalf("LoadKEKFile = %x, %v", got, err)
			}
		})
	}
}
