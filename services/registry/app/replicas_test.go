package app_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"strconv"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/grpcx"
	"github.com/agentid/agentid/pkg/testkit"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/registry/app"
)

// registryReplica is one registry instance with its own read models and gRPC server.
type registryReplica struct {
	app    *app.App
	client registryv1.RegistryServiceClient
}

// newRegistryReplica builds a registry over n's JetStream and serves it; its read models fill only
// once run is called.
func newRegistryReplica(t *testing.T, n *testkit.NATS, cfg app.Config) *registryReplica {
	t.Helper()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	store := eventstore.New(n.JetStream(t), eventstore.WithSource("agentid/registry"), eventstore.WithLogger(quiet))
	if err := store.EnsureStreams(t.Context()); err != nil {
		t.Fatal(err)
	}
	a, err := app.New(cfg, app.Deps{Store: store, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	srv := grpcx.NewServer(grpcx.ServerConfig{
		Logger: quiet,
		Verifier: testkit.StaticVerifier(map[string]*authn.Claims{
			"admin": {Subject: "ops", Tenant: authn.SystemTenant, Roles: []string{"platform-admin"}},
		}),
	})
	a.RegisterGRPC(srv)
	return &registryReplica{app: a, client: registryv1.NewRegistryServiceClient(testkit.ServeGRPC(t, srv))}
}

// run starts the replica's read models until the test ends and waits until they have caught up.
func (r *registryReplica) run(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, task := range r.app.Tasks() {
		wg.Go(func() {
			if err := task(ctx); err != nil {
				t.Errorf("registry task: %v", err)
			}
		})
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
	rctx, rcancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer rcancel()
	if err := r.app.Ready(rctx); err != nil {
		t.Fatal(err)
	}
}

func replicaAgent(t *testing.T, name string) *registryv1.Agent {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	jwks, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &k.PublicKey, KeyID: "k1", Algorithm: "ES256", Use: "sig"}}})
	if err != nil {
		t.Fatal(err)
	}
	return &registryv1.Agent{
		DisplayName:     name,
		Owner:           "team:support",
		Sponsor:         "alice@corp.example",
		Purpose:         "Answers customer questions from the public FAQ.",
		Environment:     registryv1.Environment_ENVIRONMENT_DEV,
		Autonomy:        registryv1.Autonomy_AUTONOMY_ASSISTIVE,
		IdentityModel:   registryv1.IdentityModel_IDENTITY_MODEL_AUTONOMOUS,
		TrustBoundary:   registryv1.TrustBoundary_TRUST_BOUNDARY_INTERNAL,
		DataSensitivity: registryv1.DataSensitivity_DATA_SENSITIVITY_PUBLIC,
		Scopes:          []string{"faq.read"},
		PublicJwks:      string(jwks),
	}
}

func etagVersion(t *testing.T, a *registryv1.Agent) uint64 {
	t.Helper()
	v, err := strconv.ParseUint(a.GetEtag(), 10, 64)
	if err != nil || v == 0 {
		t.Fatalf("etag %q is not an aggregate version", a.GetEtag())
	}
	return v
}

// TestGetAgentMinVersionReadsOwnWritesAcrossReplicas writes on one registry replica and reads on
// another with the etag the write returned as min_version.
func TestGetAgentMinVersionReadsOwnWritesAcrossReplicas(t *testing.T) {
	n := testkit.StartNATS(t)
	writer := newRegistryReplica(t, n, app.Config{})
	writer.run(t)
	reader := newRegistryReplica(t, n, app.Config{MaxReadWait: 200 * time.Millisecond})
	ctx := testkit.WithBearer(context.Background(), "admin")

	if _, err := writer.client.CreateTenant(ctx, &registryv1.CreateTenantRequest{TenantId: "acme", RequestId: "t1"}); err != nil {
		t.Fatal(err)
	}
	reg, err := writer.client.RegisterAgent(ctx, &registryv1.RegisterAgentRequest{Parent: "tenants/acme", Agent: replicaAgent(t, "faq"), RequestId: "r1"})
	if err != nil {
		t.Fatal(err)
	}
	agent := reg.GetAgent()
	version := etagVersion(t, agent)

	// The reader's read models are not running yet: without min_version it answers from what it
	// has (nothing); with it, it waits up to its cap and then says to retry, naming the version.
	if _, err := reader.client.GetAgent(ctx, &registryv1.GetAgentRequest{Name: agent.GetName()}); status.Code(err) != codes.NotFound {
		t.Fatalf("stale read without min_version: %v, want NotFound", err)
	}
	_, err = reader.client.GetAgent(ctx, &registryv1.GetAgentRequest{Name: agent.GetName(), MinVersion: version})
	wantLagging(t, err, version)
	// The caller's deadline bounds the wait too (the cap of an idle replica is 5s). The replica
	// answers after nine tenths of the time left: the deadline is long enough that the tenth left for
	// the answer to reach the caller holds on a loaded machine.
	idle := newRegistryReplica(t, n, app.Config{})
	dctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	_, err = idle.client.GetAgent(dctx, &registryv1.GetAgentRequest{Name: agent.GetName(), MinVersion: version})
	cancel()
	wantLagging(t, err, version)

	// A version no event has yet is refused at once, naming min_version, whatever its size.
	for _, beyond := range []uint64{version + 1000, math.MaxUint64} {
		dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, err = writer.client.GetAgent(dctx, &registryv1.GetAgentRequest{Name: agent.GetName(), MinVersion: beyond})
		waited := dctx.Err()
		cancel()
		if status.Code(err) != codes.InvalidArgument || waited != nil {
			t.Fatalf("GetAgent(min_version %d) = %v (deadline %v), want InvalidArgument at once", beyond, err, waited)
		}
		if e := errs.FromStatus(err); e.Field != "min_version" {
			t.Fatalf("GetAgent(min_version %d): field %q, want min_version", beyond, e.Field)
		}
	}

	// A read that waits is answered once the read model catches up.
	type result struct {
		agent *registryv1.Agent
		err   error
	}
	done := make(chan result, 1)
	go func() {
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		resp, err := reader.client.GetAgent(wctx, &registryv1.GetAgentRequest{Name: agent.GetName(), MinVersion: version})
		done <- result{resp.GetAgent(), err}
	}()
	reader.run(t)
	if got := <-done; got.err != nil && status.Code(got.err) != codes.Unavailable {
		t.Fatalf("waiting read: %v", got.err)
	} else if got.err == nil && got.agent.GetEtag() != agent.GetEtag() {
		t.Fatalf("waiting read answered etag %q, want %q", got.agent.GetEtag(), agent.GetEtag())
	}

	// Every write on the writer is visible on the reader at the version it returned.
	for i := range 10 {
		reg, err := writer.client.RegisterAgent(ctx, &registryv1.RegisterAgentRequest{
			Parent: "tenants/acme", Agent: replicaAgent(t, fmt.Sprintf("bot-%d", i)), RequestId: fmt.Sprintf("reg-%d", i),
		})
		if err != nil {
			t.Fatal(err)
		}
		ret, err := writer.client.RetireAgent(ctx, &registryv1.RetireAgentRequest{
			Name: reg.GetAgent().GetName(), Reason: "replaced", RequestId: fmt.Sprintf("retire-%d", i),
		})
		if err != nil {
			t.Fatal(err)
		}
		got := readAtLeast(t, reader, ctx, ret.GetAgent())
		if got.GetState() != registryv1.AgentState_AGENT_STATE_RETIRING || got.GetEtag() != ret.GetAgent().GetEtag() {
			t.Fatalf("read on the other replica: state %s etag %s, want RETIRING at %s", got.GetState(), got.GetEtag(), ret.GetAgent().GetEtag())
		}
	}
}

// readAtLeast reads a on r with its etag as min_version, retrying as the Unavailable answer's
// RetryInfo says, for up to 20 seconds.
func readAtLeast(t *testing.T, r *registryReplica, ctx context.Context, a *registryv1.Agent) *registryv1.Agent {
	t.Helper()
	deadline := time.Now().Add(testkit.DefaultWait)
	for {
		resp, err := r.client.GetAgent(ctx, &registryv1.GetAgentRequest{Name: a.GetName(), MinVersion: etagVersion(t, a)})
		if err == nil {
			return resp.GetAgent()
		}
		if status.Code(err) != codes.Unavailable || time.Now().After(deadline) {
			t.Fatalf("GetAgent %s at version %s: %v", a.GetName(), a.GetEtag(), err)
		}
		time.Sleep(retryDelay(t, err))
	}
}

// wantLagging checks an Unavailable READ_MODEL_LAGGING answer naming version, with a RetryInfo.
func wantLagging(t *testing.T, err error, version uint64) {
	t.Helper()
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("got %v, want Unavailable", err)
	}
	e := errs.FromStatus(err)
	if e.Reason != "READ_MODEL_LAGGING" || e.Metadata["min_version"] != strconv.FormatUint(version, 10) || e.Metadata["applied_version"] == "" {
		t.Fatalf("got reason %q metadata %v, want READ_MODEL_LAGGING naming min_version %d", e.Reason, e.Metadata, version)
	}
	if retryDelay(t, err) <= 0 {
		t.Fatal("no retry delay")
	}
}

// retryDelay is the delay of the google.rpc.RetryInfo of err.
func retryDelay(t *testing.T, err error) time.Duration {
	t.Helper()
	for _, d := range status.Convert(err).Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			return ri.GetRetryDelay().AsDuration()
		}
	}
	t.Fatalf("%v carries no RetryInfo", err)
	return 0
}
