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

	"github.com/agentid/agentid/pkg/authn"

	"github.com/agentid/agentid/services/issuer/app"
	"github.com/agentid/agentid/services/issuer/internal/credentials"
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
		{name: "publish delay shorter than the JWKS refresh", edit: func(c *app.Config) { c.SigningKeys.PublishDelay = 2 * time.Second },
			wantErr: "--signing-key-publish-delay 2s: want at least 5m0s"},
		{name: "publish delay of the JWKS refresh", edit: func(c *app.Config) { c.SigningKeys.PublishDelay = 5 * time.Minute }},
		{name: "retention shorter than a token", edit: func(c *app.Config) { c.SigningKeys.Retention = time.Minute },
			wantErr: "--signing-key-retention 1m0s: want at least 24h0m35s"},
		{name: "retention of a token, the leeway and the allowance", edit: func(c *app.Config) { c.SigningKeys.Retention = 24*time.Hour + 35*time.Second }},
		{name: "retention without a larger allowance", edit: func(c *app.Config) {
			c.SigningKeys.Retention, c.ProjectionLagAllowance = 24*time.Hour+35*time.Second, 20*time.Second
		}, wantErr: "--signing-key-retention 24h0m35s: want at least 24h0m50s"},
		{name: "default retention with the longest allowance", edit: func(c *app.Config) { c.ProjectionLagAllowance = app.MaxProjectionLagAllowance }},
		{name: "short durations for tests", edit: func(c *app.Config) {
			c.SigningKeys.PublishDelay, c.SigningKeys.Retention, c.UnsafeShortSigningKeyDurations = time.Second, 2*time.Second, true
		}},
		{name: "negative retention for tests", edit: func(c *app.Config) {
			c.SigningKeys.Retention, c.UnsafeShortSigningKeyDurations = -time.Second, true
		}, wantErr: "--signing-key-retention -1s: want a positive duration"},
		{name: "interval within the publish delay", edit: func(c *app.Config) { c.SigningKeys.Interval = 5 * time.Minute },
			wantErr: "--signing-key-rotation-interval 5m0s: must exceed --signing-key-publish-delay 10m0s"},
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

// TestSigningKeyBoundsFollowTheirSources: the signing-key minimums follow the values they are made of
// (pkg/authn's JWKS refresh and leeway, the longest token lifetime and projection-lag allowance), and
// the defaults satisfy them whatever the allowance.
func TestSigningKeyBoundsFollowTheirSources(t *testing.T) {
	if credentials.MinPublishDelay != authn.DefaultJWKSRefreshInterval || credentials.DefaultPublishDelay < credentials.MinPublishDelay {
		t.Errorf("publish delay minimum %s, default %s; want the JWKS refresh %s and at least it", credentials.MinPublishDelay, credentials.DefaultPublishDelay, authn.DefaultJWKSRefreshInterval)
	}
	if credentials.MaxActivationLag != app.MaxProjectionLagAllowance {
		t.Errorf("MaxActivationLag %s, want the longest projection-lag allowance %s", credentials.MaxActivationLag, app.MaxProjectionLagAllowance)
	}
	if got, want := credentials.MinRetention(app.MaxProjectionLagAllowance), authn.MaxTokenLifetime+authn.DefaultLeeway+app.MaxProjectionLagAllowance; got != want || credentials.DefaultRetention < got {
		t.Errorf("MinRetention(max allowance) %s, default retention %s; want %s and at least it", got, credentials.DefaultRetention, want)
	}
}
