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
