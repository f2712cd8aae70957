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

func TestDevRejectsBadDurabilityFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{name: "unknown sync mode", args: []string{"--nats-sync=sometimes"}, wantErr: `--nats-sync "sometimes": want always or interval`},
		{name: "no grace", args: []string{"--nats-grace=0s"}, wantErr: "--nats-grace 0s: want a positive duration"},
		{name: "lag allowance above a minute", args: []string{"--projection-lag-allowance=2m"}, wantErr: "--projection-lag-allowance: want a duration above 0 and at most 1m0s, got 2m0s"},
		{name: "no lag allowance", args: []string{"--projection-lag-allowance=0s"}, wantErr: "--projection-lag-allowance: want a duration above 0"},
		{name: "negative lag allowance", args: []string{"--projection-lag-allowance=-1s"}, wantErr: "--projection-lag-allowance: want a duration above 0"},
		{name: "lag allowance not a duration", args: []string{"--projection-lag-allowance=soon"}, wantErr: `invalid argument "soon" for "--projection-lag-allowance"`},
		{name: "nonce flag with a value", args: []string{"--dpop-nonce-optional=maybe"}, wantErr: `invalid argument "maybe" for "--dpop-nonce-optional"`},
		{name: "pprof on all interfaces", args: []string{"--pprof-addr=0.0.0.0:6060"}, wantErr: `--pprof-addr "0.0.0.0:6060": not a loopback address`},
		{name: "plaintext gRPC on all interfaces", args: []string{"--grpc-addr=0.0.0.0:7070"}, wantErr: "--grpc-addr 0.0.0.0:7070 is not a loopback address: serving beyond this machine needs TLS"},
		{name: "plaintext HTTP on all interfaces", args: []string{"--http-addr=:8080"}, wantErr: "--http-addr :8080 is not a loopback address"},
		{name: "missing certificate", args: []string{"--tls-cert=/nonexistent/cert.pem", "--tls-key=/nonexistent/key.pem"}, wantErr: "--tls-cert: certificate file /nonexistent/cert.pem"},
		{name: "certificate without key", args: []string{"--tls-cert=/nonexistent/cert.pem"}, wantErr: "--tls-cert /nonexistent/cert.pem needs --tls-key"},
		{name: "missing CA", args: []string{"--ca=/nonexistent/ca.pem"}, wantErr: "--ca: CA file /nonexistent/ca.pem"},
		{name: "incident webhook without secret", args: []string{"--incident-webhook-url=https://hooks.example/x"}, wantErr: "--incident-webhook-url needs --incident-webhook-secret-file"},
		{name: "incident escalation not a duration", args: []string{"--incident-escalation=owner=soon"}, wantErr: `--incident-escalation "owner=soon": owner=soon: want a positive duration`},
		{name: "sweep breaker above 100 percent", args: []string{"--sweep-max-retirement-percent=150"}, wantErr: `--sweep-max-retirement-percent "150": want a percentage from 0 to 100`},
		{name: "negative sweep breaker", args: []string{"--sweep-max-retirements=-3"}, wantErr: `--sweep-max-retirements "-3": want a number of agents, 0 or more`},
		{name: "incident policy lets critical alerts through", args: []string{"--incident-policy=default:critical=notify"}, wantErr: "--incident-policy: incident policy of tenant default: critical alerts must suspend"},
		{name: "duckdb memory limit below the minimum", args: []string{"--duckdb-memory-limit=1048576"}, wantErr: "--duckdb-memory-limit 1048576 is below the minimum of 33554432 bytes (32 MiB)"},
		{name: "negative duckdb memory limit", args: []string{"--duckdb-memory-limit=-5"}, wantErr: "--duckdb-memory-limit -5 is below the minimum"},
		{name: "duckdb memory limit not a number", args: []string{"--duckdb-memory-limit=64MiB"}, wantErr: `invalid argument "64MiB" for "--duckdb-memory-limit"`},
		{name: "duckdb memory limit with clickhouse", args: []string{"--duckdb-memory-limit=134217728", "--clickhouse"}, wantErr: "--duckdb-memory-limit bounds the DuckDB telemetry store: drop it with ClickHouse"},
		{name: "go memory limit below the minimum", args: []string{"--go-memory-limit=1048576"}, wantErr: "--go-memory-limit 1048576 is below the minimum of 134217728 bytes (128 MiB)"},
		{name: "negative go memory limit", args: []string{"--go-memory-limit=-1"}, wantErr: "--go-memory-limit -1 is below the minimum"},
		{name: "go memory limit not a number", args: []string{"--go-memory-limit=512MiB"}, wantErr: `invalid argument "512MiB" for "--go-memory-limit"`},
		{name: "plaintext public URL off loopback", args: []string{"--public-url=http://issuer.example:8080"}, wantErr: `--public-url: authn: issuer URL "http://issuer.example:8080" is plaintext http://`},
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

func TestDevIssuerDefaults(t *testing.T) {
	cfg := dev.DefaultConfig()
	if cfg.ProjectionLagAllowance != 5*time.Second {
		t.Errorf("default --projection-lag-allowance = %s, want 5s (docs/architecture.md)", cfg.ProjectionLagAllowance)
	}
	if cfg.DPoPNonceOptional {
		t.Error("default --dpop-nonce-optional = true, want false: the issuer requires DPoP nonces unless told otherwise")
	}
}
