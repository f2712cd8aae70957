package app_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/grpcx"
	"github.com/agentid/agentid/pkg/names"
	"github.com/agentid/agentid/pkg/testkit"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/registry/app"
	"github.com/agentid/agentid/services/registry/internal/registry"
)

// lockedBuffer collects log output of several goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// seedAgents publishes the registrations of n agents of tenant acme (and the activation of every
// second one) straight into the AGENTS stream, asynchronously in windows: the fast way to a large
// stream. The events are those the registry appends.
func seedAgents(t *testing.T, n *testkit.NATS, count int) {
	t.Helper()
	js, err := jetstream.New(n.Conn(t), jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		t.Fatal(err)
	}
	jwks := replicaAgent(t, "x").GetPublicJwks()
	envs := []registryv1.Environment{registryv1.Environment_ENVIRONMENT_DEV, registryv1.Environment_ENVIRONMENT_STAGING, registryv1.Environment_ENVIRONMENT_PROD}
	tiers := []registryv1.RiskTier{registryv1.RiskTier_RISK_TIER_LOW, registryv1.RiskTier_RISK_TIER_MODERATE, registryv1.RiskTier_RISK_TIER_HIGH}
	t0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	sent := 0
	flush := func() {
		select {
		case <-js.PublishAsyncComplete():
		case <-time.After(5 * time.Minute):
			t.Fatal("the seed was not acknowledged")
		}
	}
	publish := func(id string, version uint64, ch registry.Change, at time.Time) {
		if sent++; sent%4000 == 0 {
			flush() // one window of acknowledgements at a time
		}
		data, err := proto.MarshalOptions{Deterministic: true}.Marshal(ch.Data)
		if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimPrefix(ch.Type, "agent.")
		h := nats.Header{}
		for k, v := range map[string]string{
			eventstore.HeaderSpecVersion: eventstore.SpecVersion, eventstore.HeaderID: uuid.NewString(), eventstore.HeaderType: ch.Type,
			eventstore.HeaderSource: "agentid/registry", eventstore.HeaderSubject: registry.AgentName("acme", id),
			eventstore.HeaderTime: at.Format(time.RFC3339Nano), eventstore.HeaderContentType: eventstore.ContentTypeProtobuf,
			eventstore.HeaderDataSchema: string(ch.Data.ProtoReflect().Descriptor().FullName()), eventstore.HeaderTenant: "acme",
			eventstore.HeaderActorID: "seed", eventstore.HeaderActorKind: string(eventstore.ActorService),
			eventstore.HeaderAggregateType: registry.AggregateAgent, eventstore.HeaderAggregateID: id,
			eventstore.HeaderAggregateVersion: strconv.FormatUint(version, 10),
		} {
			h.Set(k, v)
		}
		msg := &nats.Msg{Subject: eventstore.EventSubject("acme", registry.AggregateAgent, id, name), Header: h, Data: data}
		if _, err := js.PublishMsgAsync(msg); err != nil {
			t.Fatal(err)
		}
	}
	for i := range count {
		id := names.DeriveAgentID("acme", "seed-"+strconv.Itoa(i))
		a := &registryv1.Agent{
			Name: registry.AgentName("acme", id), AgentId: id, Tenant: "acme",
			DisplayName: fmt.Sprintf("bot %d", i%13), Owner: fmt.Sprintf("team:t%d", i%50), Sponsor: fmt.Sprintf("s%d@corp.example", i%7),
			Environment: envs[i%3], RiskTier: tiers[(i/2)%3], DataSensitivity: registryv1.DataSensitivity_DATA_SENSITIVITY_INTERNAL,
			Scopes: []string{"faq.read", fmt.Sprintf("x%d.write", i%4)}, PublicJwks: jwks,
			Labels: map[string]string{"app": fmt.Sprintf("a%d", i%6)},
		}
		if i%5 != 0 {
			a.ExpireTime = timestamppb.New(t0.Add(time.Duration(i%17) * 24 * time.Hour))
		}
		at := t0.Add(time.Duration(i) * time.Second)
		publish(id, 0, registry.AgentRegistered(a), at)
		if i%2 == 0 {
			publish(id, 1, registry.AgentActivated(a.Name, "d", "policy:auto"), at) // version: any earlier sequence
		}
	}
	flush()
}

// startRegistry builds a registry over n logging into logs, runs it and waits until it is ready;
// it returns the client, the time to ready and the function that stops it (waiting for its tasks,
// which write a last checkpoint).
func startRegistry(t testing.TB, n *testkit.NATS, logs *lockedBuffer) (registryv1.RegistryServiceClient, time.Duration, func()) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	store := eventstore.New(n.JetStream(t), eventstore.WithSource("agentid/registry"), eventstore.WithLogger(log))
	start := time.Now()
	a, err := app.New(app.Config{}, app.Deps{Store: store, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, task := range a.Tasks() {
		wg.Go(func() {
			if err := task(ctx); err != nil {
				t.Errorf("registry task: %v", err)
			}
		})
	}
	rctx, rcancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer rcancel()
	if err := a.Ready(rctx); err != nil {
		cancel()
		t.Fatal(err)
	}
	took := time.Since(start)
	srv := grpcx.NewServer(grpcx.ServerConfig{Logger: log, Verifier: testkit.StaticVerifier(map[string]*authn.Claims{
		"admin": {Subject: "ops", Tenant: authn.SystemTenant, Roles: []string{"platform-admin"}},
	})})
	a.RegisterGRPC(srv)
	client := registryv1.NewRegistryServiceClient(testkit.ServeGRPC(t, srv))
	if err := a.EnsureTenant(t.Context(), "acme", "Acme"); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			wg.Wait()
		}
	}
	t.Cleanup(stop)
	return client, took, stop
}

// listing is every page of a listing, as agent ids, with its total_size.
func listing(t *testing.T, c registryv1.RegistryServiceClient, req *registryv1.ListAgentsRequest) ([]string, int64) {
	t.Helper()
	ctx := testkit.WithBearer(t.Context(), "admin")
	req = proto.CloneOf(req)
	req.Parent, req.ShowTotalSize = "tenants/acme", true
	var ids []string
	var total int64
	for {
		resp, err := c.ListAgents(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		total = resp.GetTotalSize()
		for _, a := range resp.GetAgents() {
			ids = append(ids, a.GetAgentId())
		}
		if resp.GetNextPageToken() == "" {
			return ids, total
		}
		req.PageToken = resp.GetNextPageToken()
	}
}

func rss(t *testing.T) uint64 {
	runtime.GC()
	debug.FreeOSMemory()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// A restarted registry restores its read models from the checkpoints in the CHECKPOINTS bucket and
// follows the stream from there: it lists what a full rebuild lists. With AGENTID_SCALE=1000000 it
// reports (asserting no time) the time to ready with and without a checkpoint, RSS per agent and
// filtered List page latencies over gRPC.
func TestRestartFromCheckpoint(t *testing.T) {
	count := 3000
	if n, _ := strconv.Atoi(os.Getenv("AGENTID_SCALE")); n > 0 {
		count = n
	}
	n := testkit.StartNATS(t)
	store := eventstore.New(n.JetStream(t))
	if err := store.EnsureStreams(t.Context()); err != nil {
		t.Fatal(err)
	}
	s := time.Now()
	seedAgents(t, n, count)
	t.Logf("seeded %d agents (%d events) in %s", count, count+(count+1)/2, time.Since(s))

	base := rss(t)
	var logs1 lockedBuffer
	c1, took, stop1 := startRegistry(t, n, &logs1)
	t.Logf("start without checkpoint → ready: %s", took)
	if !strings.Contains(logs1.String(), "no checkpoint; rebuilding") {
		t.Fatalf("the first start did not rebuild:\n%s", logs1.String())
	}
	mixes := []*registryv1.ListAgentsRequest{
		{PageSize: 500},
		{PageSize: 500, Environments: []registryv1.Environment{registryv1.Environment_ENVIRONMENT_PROD}, OrderBy: "display_name desc"},
		{PageSize: 500, Owner: "team:t3", LabelSelectors: []string{"app=a3"}, OrderBy: "expire_time"},
		{PageSize: 500, States: []registryv1.AgentState{registryv1.AgentState_AGENT_STATE_ACTIVE}, ExpireBefore: timestamppb.New(time.Date(2026, 3, 6, 0, 0, 0, 0, time.UTC)), OrderBy: "name desc"},
	}
	if count > 10_000 {
		mixes = mixes[2:] // whole listings of a million agents are not the point
	}
	want := make([][]string, len(mixes))
	wantTotal := make([]int64, len(mixes))
	for i, m := range mixes {
		want[i], wantTotal[i] = listing(t, c1, m)
	}
	if wantTotal[0] == 0 {
		t.Fatal("nothing listed")
	}
	stop1() // waits for the checkpoint being written and writes the last one
	after1 := rss(t)
	t.Logf("RSS: %d MiB before, %d MiB with the first registry", base>>20, after1>>20)

	var logs2 lockedBuffer
	c2, took, _ := startRegistry(t, n, &logs2)
	t.Logf("restart with checkpoint → ready: %s", took)
	for _, l := range strings.Split(logs2.String(), "\n") {
		if strings.Contains(l, "checkpoint") {
			t.Log(l)
		}
	}
	if !strings.Contains(logs2.String(), "projection restored from checkpoint") || !strings.Contains(logs2.String(), registry.AgentsProjectionName) {
		t.Fatalf("the restart did not restore the agents read model from its checkpoint:\n%s", logs2.String())
	}
	for i, m := range mixes {
		got, total := listing(t, c2, m)
		if !slices.Equal(got, want[i]) || total != wantTotal[i] {
			t.Fatalf("mix %d: the restored registry lists %d agents (total %d), the rebuilt one %d (total %d)", i, len(got), total, len(want[i]), wantTotal[i])
		}
	}
	if count <= 10_000 {
		return
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	t.Logf("after the restart: RSS %d MiB (with the embedded NATS server and its caches), Go heap %d MiB", rss(t)>>20, ms.HeapAlloc>>20)
	inactive := timestamppb.New(time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC))
	bench := []struct {
		name string
		req  *registryv1.ListAgentsRequest
	}{
		{"no filter", &registryv1.ListAgentsRequest{}},
		{"owner", &registryv1.ListAgentsRequest{Owner: "team:t3"}},
		{"labels app=a1,!team", &registryv1.ListAgentsRequest{LabelSelectors: []string{"app=a1", "!team"}}},
		{"env=prod,total", &registryv1.ListAgentsRequest{Environments: []registryv1.Environment{registryv1.Environment_ENVIRONMENT_PROD}, ShowTotalSize: true}},
		{"tier high+state active,total", &registryv1.ListAgentsRequest{RiskTiers: []registryv1.RiskTier{registryv1.RiskTier_RISK_TIER_HIGH}, States: []registryv1.AgentState{registryv1.AgentState_AGENT_STATE_ACTIVE}, ShowTotalSize: true}},
		{"expire before,order expire desc", &registryv1.ListAgentsRequest{ExpireBefore: timestamppb.New(time.Date(2026, 3, 6, 0, 0, 0, 0, time.UTC)), OrderBy: "expire_time desc"}},
		{"inactive since+scope,total", &registryv1.ListAgentsRequest{InactiveSince: inactive, Scope: "x2.write", ShowTotalSize: true}},
		{"display_name desc", &registryv1.ListAgentsRequest{OrderBy: "display_name desc"}},
	}
	ctx := testkit.WithBearer(t.Context(), "admin")
	for _, b := range bench {
		req := b.req
		req.Parent, req.PageSize = "tenants/acme", 50
		var lat []time.Duration
		for range 200 {
			s := time.Now()
			resp, err := c2.ListAgents(ctx, req)
			lat = append(lat, time.Since(s))
			if err != nil {
				t.Fatal(err)
			}
			req.PageToken = resp.GetNextPageToken()
		}
		slices.Sort(lat)
		t.Logf("gRPC List %-34s page 50: p50 %v p99 %v", b.name, lat[len(lat)/2], lat[len(lat)*99/100])
	}
}
