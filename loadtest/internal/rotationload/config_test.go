package rotationload_test

import (
	"io"
	"strings"
	"testing"

	"github.com/agentid/agentid/loadtest/internal/rotationload"
)

func TestParseFlagsNamesTheBadFlag(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{name: "defaults", args: nil},
		{name: "remote server", args: []string{"--server", "10.0.0.1:7070"}, wantErr: "--server:"},
		{name: "no clients", args: []string{"--clients", "0"}, wantErr: "--clients: must be between 1"},
		{name: "no workers", args: []string{"--concurrency", "0"}, wantErr: "--concurrency: must be between 1"},
		{name: "rotation after the end", args: []string{"--duration", "10s", "--rotate-after", "10s"}, wantErr: "--rotate-after:"},
		{name: "token lifetime in fractions", args: []string{"--token-ttl", "2500ms"}, wantErr: "--token-ttl: must be whole seconds"},
		{name: "token lifetime too short to re-verify", args: []string{"--token-ttl", "1s"}, wantErr: "--token-ttl:"},
		{name: "no JWKS refresh", args: []string{"--jwks-refresh", "0s"}, wantErr: "--jwks-refresh: must be a positive duration"},
		{name: "unknown format", args: []string{"-o", "yaml"}, wantErr: "--o: want text or json"},
		{name: "positional argument", args: []string{"extra"}, wantErr: "unexpected arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := rotationload.ParseFlags(tt.args, io.Discard)
			if tt.wantErr == "" {
				if err != nil || cfg != rotationload.DefaultConfig() {
					t.Fatalf("ParseFlags() = %+v, %v; want the defaults", cfg, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("ParseFlags(%q) error = %v, want one containing %q", tt.args, err, tt.wantErr)
			}
		})
	}
}
