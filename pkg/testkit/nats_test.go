package testkit_test

import (
	"strings"
	"testing"
	"time"

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
	deadline := time.Now().Add(10 * time.Second)
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
