package eventstore_test

import (
	"errors"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/natsauth"
)

// TestGroupCommitWithPlatformIdentities: the registry's NATS identity may publish atomic batches
// (no permission beyond its appends), and on a stream set up before atomic publish existed, which
// it may not update, its EnsureStreams still succeeds (after the refused update request times out)
// and its appends are stored one by one.
func TestGroupCommitWithPlatformIdentities(t *testing.T) {
	dir := t.TempDir()
	seeds := filepath.Join(dir, "seeds")
	users, err := natsauth.LoadOrCreateUsers(seeds)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := eventstore.RunEmbeddedServer(eventstore.EmbeddedConfig{
		Host: "127.0.0.1", StoreDir: filepath.Join(dir, "js"), NkeyUsers: natsauth.NkeyUsers(users), SyncAlways: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	url := "nats://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(srv.Addr().(*net.TCPAddr).Port))
	var (
		mu         sync.Mutex
		violations []string
	)
	connect := func(id natsauth.Identity, opts ...eventstore.Option) *eventstore.Store {
		copts, err := natsauth.ClientOptions(natsauth.SeedPath(seeds, string(id)), "")
		if err != nil {
			t.Fatal(err)
		}
		copts = append(copts, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrPermissionViolation) {
				mu.Lock()
				violations = append(violations, err.Error())
				mu.Unlock()
			}
		}))
		nc, err := nats.Connect(url, copts...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		return eventstore.New(js, append([]eventstore.Option{eventstore.WithLogger(slog.New(slog.DiscardHandler)), eventstore.WithRegisterer(nil)}, opts...)...)
	}
	admin := connect(natsauth.Admin)
	if err := admin.EnsureStreams(t.Context()); err != nil {
		t.Fatal(err)
	}
	// AGENTS as an earlier version set it up.
	st, err := admin.JetStream().Stream(t.Context(), eventstore.StreamAgents)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	cfg.AllowAtomicPublish = false
	if _, err := admin.JetStream().UpdateStream(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}

	registry := connect(natsauth.Registry, eventstore.WithGroupCommit(eventstore.GroupCommit{}))
	if err := registry.EnsureStreams(t.Context()); err != nil {
		t.Fatalf("registry EnsureStreams on a stream without atomic publish: %v", err)
	}
	appendBatch := func(agents ...string) {
		t.Helper()
		appends := make([]eventstore.Append, len(agents))
		for i, a := range agents {
			appends[i] = agentAppend("acme", a, "registered", 0, a)
		}
		for _, r := range appendPaused(t, registry, appends) {
			if r.err != nil {
				t.Fatalf("append to %s as the registry: %v", r.a.AggregateID, r.err)
			}
			checkStored(t, registry, r.ev)
		}
	}
	appendBatch("a1", "a2", "a3")

	// Once set up again, the registry's batches are stored as batches.
	if err := admin.EnsureStreams(t.Context()); err != nil {
		t.Fatal(err)
	}
	registry = connect(natsauth.Registry, eventstore.WithGroupCommit(eventstore.GroupCommit{}))
	appendBatch("b1", "b2", "b3")
	for seq := uint64(4); seq <= 6; seq++ {
		if batchIDOf(t, admin.JetStream(), seq) == "" {
			t.Fatalf("AGENTS/%d was not stored by an atomic batch", seq)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	// The one refused request: the registry's EnsureStreams trying to allow atomic publish.
	if len(violations) != 1 || !strings.Contains(violations[0], `"$JS.API.STREAM.UPDATE.AGENTS"`) {
		t.Fatalf("permission violations: %v, want only the registry's refused stream update", violations)
	}
}
