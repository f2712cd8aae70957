package service_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/agentid/agentid/pkg/service"
)

func TestCheckPprofAddr(t *testing.T) {
	tests := []struct {
		name        string
		addr        string
		allowRemote bool
		wantErr     bool
	}{
		{name: "off", addr: ""},
		{name: "ipv4 loopback", addr: "127.0.0.1:6060"},
		{name: "ipv6 loopback", addr: "[::1]:6060"},
		{name: "localhost", addr: "localhost:6060"},
		{name: "all interfaces refused", addr: ":6060", wantErr: true},
		{name: "remote refused", addr: "10.0.0.1:6060", wantErr: true},
		{name: "remote allowed explicitly", addr: "0.0.0.0:6060", allowRemote: true},
		{name: "not host:port", addr: "127.0.0.1", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := service.CheckPprofAddr(tt.addr, tt.allowRemote)
			if (err != nil) != tt.wantErr {
				t.Fatalf("CheckPprofAddr(%q, %v) = %v, wantErr %v", tt.addr, tt.allowRemote, err, tt.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), "--pprof-addr") {
				t.Fatalf("error %q does not name the flag", err)
			}
		})
	}
}

func TestPprofTaskServesUntilCancelled(t *testing.T) {
	if task, addr, err := service.PprofTask(service.PprofConfig{}); task != nil || addr != nil || err != nil {
		t.Fatalf("disabled: task %v addr %v err %v, want nothing", task != nil, addr, err)
	}
	if _, _, err := service.PprofTask(service.PprofConfig{Addr: "0.0.0.0:0"}); err == nil {
		t.Fatal("a non-loopback address was accepted without AllowRemote")
	}
	task, addr, err := service.PprofTask(service.PprofConfig{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- task(ctx) }()
	resp, err := http.Get("http://" + addr.String() + "/debug/pprof/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK || len(body) == 0 {
		t.Fatalf("GET cmdline: %d %q", resp.StatusCode, body)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("task ended with %v", err)
	}
	if _, err := http.Get("http://" + addr.String() + "/debug/pprof/cmdline"); err == nil {
		t.Fatal("still serving after the task ended")
	}
}
