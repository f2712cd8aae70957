// Package testkit holds helpers for tests across the repository: real engines started in-process
// or as child processes, cleaned up with the test.
package testkit

import (
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentid/agentid/pkg/eventstore"
)

// NATS is an embedded nats-server with JetStream file storage, shut down when the test ends.
type NATS struct {
	mu  sync.Mutex
	srv *server.Server
	cfg eventstore.EmbeddedConfig
}

// NATSOption configures StartNATS.
type NATSOption func(*eventstore.EmbeddedConfig)

// WithStoreDir puts JetStream's storage in dir instead of a fresh t.TempDir().
func WithStoreDir(dir string) NATSOption {
	return func(c *eventstore.EmbeddedConfig) { c.StoreDir = dir }
}

// WithSyncAlways makes the server fsync every write before acknowledging it.
func WithSyncAlways() NATSOption {
	return func(c *eventstore.EmbeddedConfig) { c.SyncAlways = true }
}

// StartNATS starts a JetStream server on a free loopback port with file storage and registers its
// shutdown with t.Cleanup.
func StartNATS(t testing.TB, opts ...NATSOption) *NATS {
	t.Helper()
	cfg := eventstore.EmbeddedConfig{Host: "127.0.0.1", ServerName: "testkit"}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.StoreDir == "" {
		cfg.StoreDir = t.TempDir()
	}
	srv, err := eventstore.RunEmbeddedServer(cfg)
	if err != nil {
		t.Fatalf("testkit: start nats: %v", err)
	}
	cfg.Port = srv.Addr().(*net.TCPAddr).Port // a restart keeps the port so clients reconnect
	n := &NATS{srv: srv, cfg: cfg}
	t.Cleanup(n.Shutdown)
	return n
}

// Server returns the running server.
func (n *NATS) Server() *server.Server {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.srv
}

// URL is the client URL, nats://127.0.0.1:<port>.
func (n *NATS) URL() string {
	return "nats://" + net.JoinHostPort(n.cfg.Host, strconv.Itoa(n.cfg.Port))
}

// StoreDir is the JetStream storage directory.
func (n *NATS) StoreDir() string { return n.cfg.StoreDir }

// Conn returns a new client connection, closed when the test ends. It reconnects quickly and
// indefinitely, so it survives Restart.
func (n *NATS) Conn(t testing.TB) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(n.URL(),
		nats.Name(t.Name()),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(20*time.Millisecond),
		nats.ReconnectJitter(0, 0),
	)
	if err != nil {
		t.Fatalf("testkit: connect to %s: %v", n.URL(), err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// JetStream returns a JetStream context on a new connection (see Conn).
func (n *NATS) JetStream(t testing.TB) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(n.Conn(t))
	if err != nil {
		t.Fatalf("testkit: jetstream: %v", err)
	}
	return js
}

// Restart shuts the server down and starts it again on the same port and storage, as a process
// restart would; connections from Conn reconnect on their own.
func (n *NATS) Restart(t testing.TB) {
	t.Helper()
	n.Shutdown()
	var (
		srv *server.Server
		err error
	)
	for range 50 { // the old listener may take a moment to release the port
		if srv, err = eventstore.RunEmbeddedServer(n.cfg); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("testkit: restart nats: %v", err)
	}
	n.mu.Lock()
	n.srv = srv
	n.mu.Unlock()
}

// Shutdown stops the server and waits until it has stopped. It is safe to call more than once.
func (n *NATS) Shutdown() {
	n.mu.Lock()
	srv := n.srv
	n.srv = nil
	n.mu.Unlock()
	if srv != nil {
		srv.Shutdown()
		srv.WaitForShutdown()
	}
}
