package app_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/go-jose/go-jose/v4"

	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/testkit"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// BenchmarkRegisterSyncAlways registers agents over gRPC, 32 at a time, against a NATS server that
// fsyncs every write before acknowledging it (each registration: an idempotent append with its
// expected version, and the wait for the read model to apply it).
//
//	go test -run '^$' -bench BenchmarkRegisterSyncAlways -benchtime 20000x ./services/registry/app/
func BenchmarkRegisterSyncAlways(b *testing.B) {
	n := testkit.StartNATS(b, testkit.WithSyncAlways())
	store := eventstore.New(n.JetStream(b))
	if err := store.EnsureStreams(b.Context()); err != nil {
		b.Fatal(err)
	}
	var logs lockedBuffer
	c, _, _ := startRegistry(b, n, &logs)
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	jwks, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &k.PublicKey, KeyID: "k1", Algorithm: "ES256", Use: "sig"}}})
	if err != nil {
		b.Fatal(err)
	}
	ctx := testkit.WithBearer(b.Context(), "admin")
	var seq atomic.Int64
	b.SetParallelism(max(1, 32/testkitProcs()))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := strconv.FormatInt(seq.Add(1), 10)
			_, err := c.RegisterAgent(ctx, &registryv1.RegisterAgentRequest{Parent: "tenants/acme", RequestId: "bench-" + i, Agent: &registryv1.Agent{
				DisplayName: "bench " + i, Owner: "team:support", Sponsor: "alice@corp.example", Purpose: "Benchmark.",
				Environment: registryv1.Environment_ENVIRONMENT_DEV, Autonomy: registryv1.Autonomy_AUTONOMY_ASSISTIVE,
				IdentityModel: registryv1.IdentityModel_IDENTITY_MODEL_AUTONOMOUS, TrustBoundary: registryv1.TrustBoundary_TRUST_BOUNDARY_INTERNAL,
				DataSensitivity: registryv1.DataSensitivity_DATA_SENSITIVITY_PUBLIC, Scopes: []string{"faq.read"}, PublicJwks: string(jwks),
			}})
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "registrations/s")
}

func testkitProcs() int { return runtime.GOMAXPROCS(0) }
