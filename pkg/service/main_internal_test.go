package service

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/testkit"
)

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestServiceStartsBeforeNATS: a service whose NATS is not up yet keeps trying to create its streams
// (logging why) instead of exiting, and goes on once NATS is there.
func TestServiceStartsBeforeNATS(t *testing.T) {
	port := testkit.FreePorts(t, 1)[0]
	url := "nats://127.0.0.1:" + strconv.Itoa(port)
	nc, err := nats.Connect(url, nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatalf("connect with retry on failed connect: %v", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithDefaultTimeout(500*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	store := eventstore.New(js, eventstore.WithLogger(log))
	done := make(chan error, 1)
	go func() { done <- ensureStreams(t.Context(), store, log) }()

	testkit.Eventually(t, 0, "a retry while NATS is down", func() (bool, error) {
		select {
		case err := <-done:
			t.Fatalf("ensureStreams returned %v while NATS is down", err)
		default:
		}
		return strings.Contains(logs.String(), "event streams not available yet; retrying"), nil
	})
	srv, err := eventstore.RunEmbeddedServer(eventstore.EmbeddedConfig{Port: port, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("ensureStreams after NATS came up: %v", err)
		}
	case <-time.After(testkit.DefaultWait):
		t.Fatal("ensureStreams did not finish once NATS was up")
	}
	if _, err := js.Stream(t.Context(), eventstore.StreamAgents); err != nil {
		t.Fatalf("stream AGENTS after start: %v", err)
	}
}

func TestTransientJetStreamErrors(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"timeout", context.DeadlineExceeded, true},
		{"no responders", nats.ErrNoResponders, true},
		{"reconnecting", nats.ErrConnectionReconnecting, true},
		{"temporarily unavailable", &jetstream.APIError{Code: 503, ErrorCode: 10008}, true},
		{"weaker replicas: an operator mistake", &eventstore.WeakerConfigError{Stream: "AGENTS", Setting: "replicas"}, false},
		{"bad request", &jetstream.APIError{Code: 400, ErrorCode: 10058}, false},
		{"anything else", errors.New("subjects overlap"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := transientJetStreamError(tt.err); got != tt.want {
				t.Fatalf("transientJetStreamError(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

// TestStartupProbes: while the streams are awaited the process answers alive and not ready, and
// releases the address for the real server afterwards.
func TestStartupProbes(t *testing.T) {
	addr := "127.0.0.1:" + strconv.Itoa(testkit.FreePorts(t, 1)[0])
	stop := serveStartupProbes(addr, nil, slog.New(slog.DiscardHandler))
	for path, want := range map[string]int{"/livez": 200, "/healthz": 200, "/readyz": 503} {
		res, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != want {
			t.Errorf("GET %s = %d, want %d", path, res.StatusCode, want)
		}
	}
	stop()
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("the address is still taken after the startup probes stopped: %v", err)
	}
	lis.Close()
}
