package testkit_test

import (
	"fmt"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentid/agentid/pkg/testkit"
)

func TestStartNATSFileStorageSurvivesRestart(t *testing.T) {
	n := testkit.StartNATS(t)
	if !strings.HasPrefix(n.URL(), "nats://127.0.0.1:") {
		t.Fatalf("URL() = %q, want a loopback URL", n.URL())
	}
	js := n.JetStream(t)
	ctx := t.Context()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := js.Publish(ctx, "t.x", []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	url := n.URL()

	n.Restart(t)

	if n.URL() != url {
		t.Errorf("URL after restart = %q, want %q", n.URL(), url)
	}
	// The old connection reconnects by itself; wait for the stream to be back.
	var msgs uint64
	deadline := time.Now().Add(testkit.DefaultWait)
	for time.Now().Before(deadline) {
		s, err := js.Stream(ctx, "T")
		if err == nil {
			msgs = s.CachedInfo().State.Msgs
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if msgs != 3 {
		t.Fatalf("messages after restart = %d, want 3", msgs)
	}
	m, err := n.JetStream(t).Stream(ctx, "T")
	if err != nil {
		t.Fatal(err)
	}
	if got := m.CachedInfo().Config.Storage; got != jetstream.FileStorage {
		t.Errorf("storage = %v, want file", got)
	}
}

func TestStartNATSWithStoreDir(t *testing.T) {
	dir := t.TempDir()
	n := testkit.StartNATS(t, testkit.WithStoreDir(dir), testkit.WithSyncAlways())
	if n.StoreDir() != dir {
		t.Errorf("StoreDir() = %q, want %q", n.StoreDir(), dir)
	}
	if !n.Server().JetStreamEnabled() {
		t.Error("JetStream not enabled")
	}
	n.Shutdown()
	n.Shutdown() // idempotent
}

// serverMessages is the number of messages server s stores, over all its stream replicas.
func serverMessages(t *testing.T, s *server.Server) uint64 {
	t.Helper()
	info, err := s.Jsz(nil)
	if err != nil {
		t.Fatal(err)
	}
	return info.Messages
}

func TestStartNATSCluster(t *testing.T) {
	dir := t.TempDir()
	c := testkit.StartNATSCluster(t, 3, testkit.WithStoreDir(dir))
	if c.Size() != 3 {
		t.Fatalf("Size() = %d, want 3", c.Size())
	}
	urls := strings.Split(c.URLs(), ",")
	if len(urls) != 3 || len(slices.Compact(slices.Sorted(slices.Values(urls)))) != 3 {
		t.Fatalf("URLs() = %q, want 3 distinct URLs", c.URLs())
	}
	names := map[string]bool{}
	for i, u := range urls {
		if !strings.HasPrefix(u, "nats://127.0.0.1:") || u != c.Node(i).URL() {
			t.Errorf("URL %d = %q, want Node(%d).URL() %q on loopback", i, u, i, c.Node(i).URL())
		}
		if want := filepath.Join(dir, fmt.Sprintf("node-%d", i)); c.Node(i).StoreDir() != want {
			t.Errorf("node %d store = %q, want %q", i, c.Node(i).StoreDir(), want)
		}
		s := c.Server(i)
		if !s.JetStreamIsClustered() || !s.JetStreamIsCurrent() || s.ClusterName() != "testkit" || s.NumRemotes() != 2 {
			t.Errorf("server %d: clustered %v, current %v, cluster %q, %d remotes; want clustered, current, testkit, 2",
				i, s.JetStreamIsClustered(), s.JetStreamIsCurrent(), s.ClusterName(), s.NumRemotes())
		}
		names[s.Name()] = true
	}
	if len(names) != 3 {
		t.Errorf("server names %v, want 3 distinct", names)
	}
	if c.MetaLeader() < 0 {
		t.Fatal("no meta leader")
	}

	ctx := t.Context()
	js := c.JetStream(t)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}, Storage: jetstream.FileStorage, Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := js.Publish(ctx, "t.x", []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	leader := c.StreamLeader("T")
	if leader < 0 {
		t.Fatal("stream T has no leader")
	}
	follower := (leader + 1) % 3
	url := c.Node(follower).URL()
	// A client of the leader: js may be connected to the follower, and a request written as its
	// connection breaks is lost.
	leaderJS := c.Node(leader).JetStream(t)

	c.StopNode(t, follower)
	if c.Server(follower) != nil {
		t.Errorf("Server(%d) = running after StopNode", follower)
	}
	// Two of three keep the quorum.
	if _, err := leaderJS.Publish(ctx, "t.x", []byte{3}); err != nil {
		t.Fatalf("publish with a follower down: %v", err)
	}

	c.RestartNode(t, follower)

	if c.Node(follower).URL() != url {
		t.Errorf("URL after restart = %q, want %q", c.Node(follower).URL(), url)
	}
	// The restarted server is current again: it holds what it stored before and what it missed.
	if got := serverMessages(t, c.Server(follower)); got != 4 {
		t.Errorf("restarted server stores %d messages, want 4", got)
	}
	nc := c.Node(follower).Conn(t)
	if !strings.HasSuffix(nc.ConnectedUrl(), strings.TrimPrefix(url, "nats://")) {
		t.Errorf("Node(%d).Conn connected to %s, want %s", follower, nc.ConnectedUrl(), url)
	}

	c.Shutdown()
	c.Shutdown() // idempotent
	for i := range c.Size() {
		if c.Server(i) != nil {
			t.Errorf("server %d still running after Shutdown", i)
		}
	}
}

func TestStartNATSClusterRefusesNoServers(t *testing.T) {
	ft := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		testkit.StartNATSCluster(ft, 0)
	}()
	<-done
	if !ft.failed {
		t.Error("StartNATSCluster(0) did not fail the test")
	}
}

// fatalRecorder records Fatalf instead of failing the test it wraps.
type fatalRecorder struct {
	testing.TB
	failed bool
}

func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.failed = true
	runtime.Goexit()
}
