// Package testkit holds helpers for tests across the repository: real engines started in-process
// or as child processes, cleaned up with the test.
package testkit

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
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

// WithStoreDir puts JetStream's storage in dir instead of a fresh t.TempDir() (for a cluster, each
// server's in a directory of its own under dir).
func WithStoreDir(dir string) NATSOption {
	return func(c *eventstore.EmbeddedConfig) { c.StoreDir = dir }
}

// WithSyncAlways makes the server fsync every write before acknowledging it.
func WithSyncAlways() NATSOption {
	return func(c *eventstore.EmbeddedConfig) { c.SyncAlways = true }
}

// WithMaxStore sets JetStream's storage limit (TestMaxStore by default).
func WithMaxStore(bytes int64) NATSOption {
	return func(c *eventstore.EmbeddedConfig) { c.MaxStore = bytes }
}

// TestMaxStore is the JetStream storage limit of the test servers: far above what a test writes,
// and fixed, so that the streams' reservations (TELEMETRY reserves 10 GiB, a test raises it to 20)
// fit whatever the machine's free disk is at the time; the server's default, 75 % of the free disk,
// made them fail on a fuller disk.
const TestMaxStore = 1 << 40

// StartNATS starts a JetStream server on a free loopback port with file storage and registers its
// shutdown with t.Cleanup.
func StartNATS(t testing.TB, opts ...NATSOption) *NATS {
	t.Helper()
	cfg := eventstore.EmbeddedConfig{Host: "127.0.0.1", ServerName: "testkit", MaxStore: TestMaxStore}
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
	n.Start(t)
}

// Start starts a server that Shutdown stopped again, on the same port and storage.
func (n *NATS) Start(t testing.TB) {
	t.Helper()
	var srv *server.Server
	// The old listener may take a moment to release the port, and another process may hold it a
	// while (an outgoing connection's ephemeral port): wait as long as any other condition.
	if err := Poll(context.Background(), 0, func() (ok bool, err error) {
		srv, err = eventstore.RunEmbeddedServer(n.cfg)
		return err == nil, err
	}); err != nil {
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

// clusterReadyTimeout bounds how long StartNATSCluster and RestartNode wait for the cluster's
// JetStream to be ready.
const clusterReadyTimeout = 30 * time.Second

// NATSCluster is a cluster of embedded nats-servers on loopback, each with JetStream file storage
// in a directory of its own, routed to each other; it is shut down when the test ends.
type NATSCluster struct {
	name  string
	nodes []*NATS
}

// StartNATSCluster starts n clustered JetStream servers (3 for R3 streams) on free loopback ports,
// each with routes to all the others, waits until the cluster is ready (see WaitReady) and registers
// its shutdown with t.Cleanup. WithStoreDir(dir) puts server i's storage in dir/node-<i>.
func StartNATSCluster(t testing.TB, n int, opts ...NATSOption) *NATSCluster {
	t.Helper()
	if n < 1 {
		t.Fatalf("testkit: a cluster needs at least one server, not %d", n)
	}
	base := eventstore.EmbeddedConfig{Host: "127.0.0.1", MaxStore: TestMaxStore}
	for _, o := range opts {
		o(&base)
	}
	dirs := make([]string, n)
	for i := range dirs {
		if base.StoreDir == "" {
			dirs[i] = t.TempDir()
		} else {
			dirs[i] = filepath.Join(base.StoreDir, fmt.Sprintf("node-%d", i))
		}
	}
	c := &NATSCluster{name: "testkit", nodes: make([]*NATS, n)}
	t.Cleanup(c.Shutdown) // after the directories exist, so it runs before they are removed

	var err error
	for range 3 { // a port picked below may be taken by someone else before the server binds it
		if err = c.start(base, dirs); err == nil {
			break
		}
		c.Shutdown()
	}
	if err != nil {
		t.Fatalf("testkit: start nats cluster: %v", err)
	}
	c.WaitReady(t)
	return c
}

// start starts every node of c with routes to each other on freshly picked ports.
func (c *NATSCluster) start(base eventstore.EmbeddedConfig, dirs []string) error {
	ports, err := freePorts(base.Host, len(dirs))
	if err != nil {
		return err
	}
	routes := make([]string, len(ports))
	for i, p := range ports {
		routes[i] = "nats-route://" + net.JoinHostPort(base.Host, strconv.Itoa(p))
	}
	for i := range dirs {
		cfg := base
		cfg.Port = 0
		cfg.StoreDir = dirs[i]
		cfg.ServerName = fmt.Sprintf("%s-%d", c.name, i)
		cfg.Cluster = eventstore.EmbeddedCluster{Name: c.name, Port: ports[i], Routes: routes}
		srv, err := eventstore.RunEmbeddedServer(cfg)
		if err != nil {
			return fmt.Errorf("node %d: %w", i, err)
		}
		cfg.Port = srv.Addr().(*net.TCPAddr).Port // a restart keeps the port so clients reconnect
		c.nodes[i] = &NATS{srv: srv, cfg: cfg}
	}
	return nil
}

// freePorts returns n distinct TCP ports that were free on host.
func freePorts(host string, n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return nil, err
		}
		defer ln.Close() // held until all are picked, so that none is picked twice
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// Size is the number of servers in the cluster, running or stopped.
func (c *NATSCluster) Size() int { return len(c.nodes) }

// Node returns server i (0 <= i < Size()), e.g. for a client that connects to that server
// (Node(i).Conn; it learns the others from the server and fails over to them) or its storage
// directory.
func (c *NATSCluster) Node(i int) *NATS { return c.nodes[i] }

// Server returns the running server i, or nil while it is stopped.
func (c *NATSCluster) Server(i int) *server.Server { return c.nodes[i].Server() }

// URLs lists the client URLs of all servers, comma-separated as nats.Connect takes them.
func (c *NATSCluster) URLs() string {
	urls := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		urls[i] = n.URL()
	}
	return strings.Join(urls, ",")
}

// Conn returns a new client connection to any of the servers, closed when the test ends. It
// reconnects quickly and indefinitely, to whichever server is up.
func (c *NATSCluster) Conn(t testing.TB) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(c.URLs(),
		nats.Name(t.Name()),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(20*time.Millisecond),
		nats.ReconnectJitter(0, 0),
	)
	if err != nil {
		t.Fatalf("testkit: connect to %s: %v", c.URLs(), err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// JetStream returns a JetStream context on a new connection (see Conn).
func (c *NATSCluster) JetStream(t testing.TB) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(c.Conn(t))
	if err != nil {
		t.Fatalf("testkit: jetstream: %v", err)
	}
	return js
}

// MetaLeader returns the index of the server leading the JetStream meta group, -1 if none does.
func (c *NATSCluster) MetaLeader() int {
	for i := range c.nodes {
		if s := c.Server(i); s != nil && s.JetStreamIsLeader() {
			return i
		}
	}
	return -1
}

// StreamLeader returns the index of the server leading stream (of the default account), -1 if none
// does.
func (c *NATSCluster) StreamLeader(stream string) int {
	for i := range c.nodes {
		if s := c.Server(i); s != nil && s.JetStreamIsStreamLeader(server.DEFAULT_GLOBAL_ACCOUNT, stream) {
			return i
		}
	}
	return -1
}

// StopNode shuts server i down, as a crash of its process would: its raft groups hand nothing
// over, so the others elect new leaders where it led.
func (c *NATSCluster) StopNode(t testing.TB, i int) {
	t.Helper()
	c.nodes[i].Shutdown()
}

// RestartNode starts server i again (stopping it first if it runs) on the same ports and storage
// and waits until the cluster is ready again (see WaitReady).
func (c *NATSCluster) RestartNode(t testing.TB, i int) {
	t.Helper()
	c.nodes[i].Restart(t)
	c.WaitReady(t)
}

// WaitReady waits until some running server leads the JetStream meta group and counts every
// running server as a peer, every running server reports JetStream healthy (meta layer, streams and
// consumers current), and every stream has a leader whose last sequence each running replica has
// reached. Call it while nothing is being written.
func (c *NATSCluster) WaitReady(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(clusterReadyTimeout)
	for {
		why := c.notReady()
		if why == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("testkit: nats cluster not ready after %s: %s", clusterReadyTimeout, why)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// notReady says why the cluster is not ready, "" if it is.
func (c *NATSCluster) notReady() string {
	running := 0
	for i := range c.nodes {
		s := c.Server(i)
		if s == nil {
			continue
		}
		running++
		if h := s.Healthz(nil); h.StatusCode != http.StatusOK {
			return fmt.Sprintf("%s: %s %s", s.Name(), h.Status, h.Error)
		}
	}
	l := c.MetaLeader()
	if l < 0 {
		return "no JetStream meta leader"
	}
	if peers := c.Server(l).JetStreamClusterPeers(); len(peers) != running {
		return fmt.Sprintf("meta leader %s sees peers %v of %d running servers", c.Server(l).Name(), peers, running)
	}
	return c.streamsBehind()
}

// streamsBehind says which stream replica is behind its leader, "" if none is. Healthz counts the
// replicas of a restarted server as current before they have learned how far behind they are.
func (c *NATSCluster) streamsBehind() string {
	type replica struct {
		server string
		last   uint64
	}
	replicas := map[string][]replica{} // account > stream -> replicas
	leaders := map[string]replica{}
	for i := range c.nodes {
		s := c.Server(i)
		if s == nil {
			continue
		}
		info, err := s.Jsz(&server.JSzOptions{Accounts: true, Streams: true})
		if err != nil {
			return fmt.Sprintf("%s: jsz: %v", s.Name(), err)
		}
		for _, acc := range info.AccountDetails {
			for _, st := range acc.Streams {
				key, r := acc.Name+" > "+st.Name, replica{s.Name(), st.State.LastSeq}
				replicas[key] = append(replicas[key], r)
				if st.Cluster != nil && st.Cluster.Leader == s.Name() {
					leaders[key] = r
				}
			}
		}
	}
	for key, rs := range replicas {
		l, ok := leaders[key]
		if !ok {
			return fmt.Sprintf("stream %s has no leader", key)
		}
		for _, r := range rs {
			if r.last != l.last {
				return fmt.Sprintf("stream %s on %s at sequence %d, its leader %s at %d", key, r.server, r.last, l.server, l.last)
			}
		}
	}
	return ""
}

// Shutdown stops every server and waits until they have stopped. It is safe to call more than once.
func (c *NATSCluster) Shutdown() {
	var wg sync.WaitGroup
	for _, n := range c.nodes {
		if n != nil {
			wg.Go(n.Shutdown)
		}
	}
	wg.Wait()
}

// StreamMessages is how many messages stream holds now (0 when the stream does not exist): the
// "nothing was written" check of error-path tests.
func StreamMessages(t testing.TB, js jetstream.JetStream, stream string) uint64 {
	t.Helper()
	s, err := js.Stream(context.Background(), stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0
	}
	if err != nil {
		t.Fatalf("testkit: stream %s: %v", stream, err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatalf("testkit: stream %s: %v", stream, err)
	}
	return info.State.Msgs
}
