package main

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
)

func TestServesAndRefusesWithoutToken(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, config{issuer: "http://127.0.0.1:1", audience: "https://files.example", listen: "127.0.0.1:0"},
			slog.New(slog.DiscardHandler), pw)
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "listening on ")
	if !ok {
		t.Fatalf("first line %q, want listening on ADDR", line)
	}
	resp, err := http.Get("http://" + addr + "/files/hello.txt")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
		t.Errorf("status %d challenge %q, want 401 with a Bearer challenge", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("run: %v", err)
	}
}

func TestRefusesAnIncompleteConfiguration(t *testing.T) {
	for name, cfg := range map[string]config{
		"no audience":                  {issuer: "http://127.0.0.1:1"},
		"introspection without a file": {audience: "https://files.example", introspect: true},
		"monitor without a file":       {audience: "https://files.example", monitor: "127.0.0.1:1"},
	} {
		if err := run(t.Context(), cfg, slog.New(slog.DiscardHandler), io.Discard); err == nil {
			t.Errorf("%s: run accepted the configuration", name)
		}
	}
}
