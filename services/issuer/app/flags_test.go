package app_test

import (
	"flag"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/agentid/agentid/services/issuer/app"
)

func TestFlags(t *testing.T) {
	tests := []struct {
		name         string
		args         []string
		wantLag      time.Duration
		wantOptional bool
		wantErr      string
	}{
		{name: "defaults", wantLag: 5 * time.Second},
		{name: "set", args: []string{"--projection-lag-allowance=750ms", "--dpop-nonce-optional"}, wantLag: 750 * time.Millisecond, wantOptional: true},
		{name: "at most", args: []string{"--projection-lag-allowance=1m"}, wantLag: time.Minute},
		{name: "nonce required explicitly", args: []string{"--dpop-nonce-optional=false"}, wantLag: 5 * time.Second},
		{name: "above a minute", args: []string{"--projection-lag-allowance=61s"}, wantErr: `invalid value "61s" for flag -projection-lag-allowance: want a duration above 0 and at most 1m0s`},
		{name: "zero", args: []string{"--projection-lag-allowance=0"}, wantErr: `invalid value "0" for flag -projection-lag-allowance: want a duration above 0`},
		{name: "negative", args: []string{"--projection-lag-allowance=-5s"}, wantErr: "flag -projection-lag-allowance: want a duration above 0"},
		{name: "not a duration", args: []string{"--projection-lag-allowance=5"}, wantErr: `flag -projection-lag-allowance: not a duration (e.g. 5s): "5"`},
		{name: "nonce flag not a boolean", args: []string{"--dpop-nonce-optional=sometimes"}, wantErr: "-dpop-nonce-optional"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("issuer", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			f := app.DefaultFlags()
			f.Register(fs)
			err := fs.Parse(tt.args)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Parse(%q) = %v, want an error containing %q", tt.args, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			cfg := app.Config{PublicURL: "http://127.0.0.1:8080", KEK: testKEK}
			f.Apply(&cfg)
			if cfg.ProjectionLagAllowance != tt.wantLag || cfg.DPoPNonceOptional != tt.wantOptional {
				t.Fatalf("config: allowance %s, nonce optional %v; want %s, %v", cfg.ProjectionLagAllowance, cfg.DPoPNonceOptional, tt.wantLag, tt.wantOptional)
			}
			if err := cfg.Validate(); err != nil {
				t.Fatalf("a configuration the flags accept does not validate: %v", err)
			}
		})
	}
}

// TestSigningKeyFlagBounds: the issuer binary's signing-key flags below their safe minimums are
// refused when the configuration is validated (at start), naming the flag; the defaults pass.
func TestSigningKeyFlagBounds(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{name: "defaults"},
		{name: "defaults with the longest allowance", args: []string{"--projection-lag-allowance=1m"}},
		{name: "publish delay below the JWKS refresh", args: []string{"--signing-key-publish-delay=4m59s"},
			wantErr: "--signing-key-publish-delay 4m59s: want at least 5m0s"},
		{name: "retention of a minute", args: []string{"--signing-key-retention=1m"},
			wantErr: "--signing-key-retention 1m0s: want at least 24h0m35s"},
		{name: "retention below the longest allowance", args: []string{"--signing-key-retention=24h1m", "--projection-lag-allowance=1m"},
			wantErr: "--signing-key-retention 24h1m0s: want at least 24h1m30s"},
		{name: "the smallest values", args: []string{"--signing-key-publish-delay=5m", "--signing-key-retention=24h0m35s"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("issuer", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			f := app.DefaultFlags()
			f.Register(fs)
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			cfg := app.Config{PublicURL: "http://127.0.0.1:8080", KEK: testKEK}
			f.Apply(&cfg)
			err := cfg.Validate()
			if (err != nil) != (tt.wantErr != "") || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("Validate = %v, want error mentioning %q", err, tt.wantErr)
			}
		})
	}
}
