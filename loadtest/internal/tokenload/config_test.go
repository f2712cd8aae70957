package tokenload_test

import (
	"errors"
	"flag"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/agentid/agentid/loadtest/internal/tokenload"
)

func TestParseFlagsDefaults(t *testing.T) {
	got, err := tokenload.ParseFlags(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if want := tokenload.DefaultConfig(); !reflect.DeepEqual(got, want) {
		t.Errorf("ParseFlags(nil) = %+v, want the defaults %+v", got, want)
	}
	if got.Duration != 20*time.Second || got.Agents != 20 || got.Server != "127.0.0.1:7070" || got.Tenant != "default" {
		t.Errorf("defaults = %+v, want 20s, 20 agents, 127.0.0.1:7070, tenant default", got)
	}
}

func TestParseFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want func(c *tokenload.Config)
	}{
		{"requests caps time at RequestsTimeCap", []string{"--requests", "200"}, func(c *tokenload.Config) {
			c.Requests, c.Duration = 200, tokenload.RequestsTimeCap
		}},
		{"requests with explicit duration", []string{"--requests", "200", "--duration", "5s"}, func(c *tokenload.Config) {
			c.Requests, c.Duration = 200, 5*time.Second
		}},
		{"presign caps time at MaxPresignDuration", []string{"--requests", "200", "--presign"}, func(c *tokenload.Config) {
			c.Requests, c.Duration, c.Presign = 200, tokenload.MaxPresignDuration, true
		}},
		{"repeated and comma-separated pids", []string{"--pid", "10", "--pid", "11,12"}, func(c *tokenload.Config) {
			c.PIDs = []int{10, 11, 12}
		}},
		{"everything", []string{"-data-dir", "/tmp/d", "--server", "[::1]:7071", "--tenant", "acme", "--agents", "3",
			"--concurrency", "16", "--duration", "1m", "--rate", "250.5", "-o", "json", "--register-parallelism", "2"},
			func(c *tokenload.Config) {
				c.DataDir, c.Server, c.Tenant, c.Agents, c.Concurrency = "/tmp/d", "[::1]:7071", "acme", 3, 16
				c.Duration, c.Rate, c.Output, c.RegisterParallelism = time.Minute, 250.5, "json", 2
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tokenload.ParseFlags(tc.args, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			want := tokenload.DefaultConfig()
			tc.want(&want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got  %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestParseFlagsErrorsNameTheFlag(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantErr []string
	}{
		{"remote server", []string{"--server", "10.1.2.3:7070"}, []string{"--server", "not a loopback address"}},
		{"server by name", []string{"--server", "example.com:7070"}, []string{"--server", "not a loopback"}},
		{"server without port", []string{"--server", "127.0.0.1"}, []string{"--server", "host:port"}},
		{"no agents", []string{"--agents", "0"}, []string{"--agents", "between 1 and 1000"}},
		{"too many agents", []string{"--agents", "5000"}, []string{"--agents"}},
		{"zero concurrency", []string{"--concurrency", "0"}, []string{"--concurrency", "between 1 and 1024, got 0"}},
		{"unbounded duration", []string{"--duration", "0s"}, []string{"--duration", "more than 0"}},
		{"too long", []string{"--duration", "2h"}, []string{"--duration", "at most 1h0m0s"}},
		{"negative requests", []string{"--requests", "-1"}, []string{"--requests"}},
		{"too many requests", []string{"--requests", "20000000"}, []string{"--requests", "10000000"}},
		{"negative rate", []string{"--rate", "-5"}, []string{"--rate"}},
		{"presign without requests", []string{"--presign"}, []string{"--presign", "needs --requests"}},
		{"presign longer than assertions live", []string{"--presign", "--requests", "10", "--duration", "2m"}, []string{"--presign", "at most 45s"}},
		{"output", []string{"-o", "yaml"}, []string{"-o: want text or json", `"yaml"`}},
		{"tenant", []string{"--tenant", "Default"}, []string{"--tenant", "not a tenant id"}},
		{"pid", []string{"--pid", "0"}, []string{"--pid", "process id"}},
		{"pid not a number", []string{"--pid", "agentid"}, []string{"-pid", "not a process id"}},
		{"data dir", []string{"--data-dir", ""}, []string{"--data-dir", "required"}},
		{"several at once", []string{"--agents", "0", "--concurrency", "0"}, []string{"--agents", "--concurrency"}},
		{"unknown flag", []string{"--workers", "3"}, []string{"workers"}},
		{"positional argument", []string{"run"}, []string{"unexpected arguments"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tokenload.ParseFlags(tc.args, io.Discard)
			if err == nil {
				t.Fatalf("ParseFlags(%q) succeeded, want an error", tc.args)
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestParseFlagsHelp(t *testing.T) {
	var out strings.Builder
	if _, err := tokenload.ParseFlags([]string{"-h"}, &out); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("err = %v, want flag.ErrHelp", err)
	}
	for _, f := range []string{"-data-dir", "-server", "-ca", "-agents", "-concurrency", "-duration", "-requests", "-rate", "-pid", "-o"} {
		if !strings.Contains(out.String(), f) {
			t.Errorf("usage does not mention %s", f)
		}
	}
}

func TestLoopbackChecks(t *testing.T) {
	for _, ok := range []string{"127.0.0.1:7070", "127.9.9.9:1", "localhost:8080", "[::1]:7070"} {
		if err := tokenload.CheckLoopbackAddr(ok); err != nil {
			t.Errorf("CheckLoopbackAddr(%q) = %v, want nil", ok, err)
		}
	}
	for _, bad := range []string{"192.168.1.1:7070", "10.0.0.1:1", "0.0.0.0:7070", "[::]:7070", "agentid:7070", "127.0.0.1:0", "127.0.0.1:x"} {
		if err := tokenload.CheckLoopbackAddr(bad); err == nil {
			t.Errorf("CheckLoopbackAddr(%q) = nil, want an error", bad)
		}
	}
	for _, ok := range []string{"http://127.0.0.1:8080/t/default", "https://localhost/t/x", "http://[::1]:8080/t/a"} {
		if err := tokenload.CheckLoopbackURL(ok); err != nil {
			t.Errorf("CheckLoopbackURL(%q) = %v, want nil", ok, err)
		}
	}
	for _, bad := range []string{"http://172.16.0.1:8080/t/default", "https://issuer.example.com/t/x", "ftp://127.0.0.1/x", "127.0.0.1:8080"} {
		if err := tokenload.CheckLoopbackURL(bad); err == nil {
			t.Errorf("CheckLoopbackURL(%q) = nil, want an error", bad)
		}
	}
}

func TestTenantIssuer(t *testing.T) {
	got, err := tokenload.TenantIssuer("http://127.0.0.1:8080/t/system", "default")
	if err != nil || got != "http://127.0.0.1:8080/t/default" {
		t.Errorf("TenantIssuer = %q, %v; want http://127.0.0.1:8080/t/default", got, err)
	}
	if _, err := tokenload.TenantIssuer("http://127.0.0.1:8080/", "default"); err == nil {
		t.Error("TenantIssuer of an issuer without /t/ succeeded")
	}
}
