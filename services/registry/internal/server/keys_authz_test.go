package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/grpcx"
	"github.com/agentid/agentid/pkg/names"
	"github.com/agentid/agentid/pkg/testkit"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/registry/internal/registry"
	"github.com/agentid/agentid/services/registry/internal/server"
)

// Registration request ids of the key authorization test's agents (ids derived from them).
const (
	keysAgentA = "keys-authz-a" // owned by team:support
	keysAgentB = "keys-authz-b" // owned by team:support
	keysAgentC = "keys-authz-c" // owned by team:payments
)

// Tokens of the agents themselves, and one of agent A acting on behalf of a user.
const (
	agentAToken     = "agent-a"
	agentBToken     = "agent-b"
	agentADelegated = "agent-a-for-alice"
)

// agentClaims are the claims of an agent's own token (client credentials, no roles).
func agentClaims(tenant, requestID string) *authn.Claims {
	id := names.DeriveAgentID(tenant, requestID)
	return &authn.Claims{Subject: id, ClientID: id, Tenant: tenant, Agent: "tenants/" + tenant + "/agents/" + id, Audience: []string{authn.APIAudience}}
}

// newKeysHarness is newHarness with a verifier that also knows the agents' own tokens.
func newKeysHarness(t *testing.T) *harness {
	t.Helper()
	delegated := agentClaims("acme", keysAgentA)
	delegated.Subject, delegated.Act = "alice@acme.example", map[string]any{"sub": delegated.ClientID}
	v := testkit.StaticVerifier(map[string]*authn.Claims{
		platformAdmin:   claims(authn.SystemTenant, "lifecycle", "platform-admin"),
		acmeAdmin:       claims("acme", "admin@acme.example", "tenant-admin"),
		acmeOwner:       claims("acme", "team:support", "owner"),
		acmeOwner2:      claims("acme", "team:payments", "owner"),
		acmeAuditor:     claims("acme", "audit@acme.example", "auditor"),
		acmeApprover:    claims("acme", "appr@acme.example", "approver"),
		globexAdmin:     claims("globex", "admin@globex.example", "tenant-admin"),
		worker:          claims(authn.SystemTenant, "lifecycle-worker", "lifecycle-worker"),
		agentAToken:     agentClaims("acme", keysAgentA),
		agentBToken:     agentClaims("acme", keysAgentB),
		agentADelegated: delegated,
	})
	n := testkit.StartNATS(t)
	store := eventstore.New(n.JetStream(t), eventstore.WithSource("agentid/registry"))
	if err := store.EnsureStreams(t.Context()); err != nil {
		t.Fatal(err)
	}
	svc, err := registry.New(registry.Config{Store: store})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, r := range svc.Runners() {
		wg.Go(func() {
			if err := r.Run(ctx); err != nil {
				t.Errorf("runner: %v", err)
			}
		})
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
	rctx, rcancel := context.WithTimeout(t.Context(), testkit.DefaultWait)
	defer rcancel()
	if err := svc.Ready(rctx); err != nil {
		t.Fatal(err)
	}
	srv := grpcx.NewServer(grpcx.ServerConfig{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Verifier: v})
	registryv1.RegisterRegistryServiceServer(srv, server.New(svc))
	return &harness{client: registryv1.NewRegistryServiceClient(testkit.ServeGRPC(t, srv)), store: store}
}

// nextKeys counts the keys nextKey made, for their kids.
var nextKeys atomic.Int64

// nextKey is a fresh public key as one JWK with a kid of its own (what AddAgentKey takes).
func nextKey(t *testing.T) string {
	t.Helper()
	var set struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal([]byte(jwks(t)), &set); err != nil || len(set.Keys) != 1 {
		t.Fatalf("key set: %v", err)
	}
	set.Keys[0]["kid"] = fmt.Sprintf("next-%d", nextKeys.Add(1))
	b, err := json.Marshal(set.Keys[0])
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestAgentKeyAuthorization: an agent may add a key to itself (with its own token, not on behalf of
// a user, and only with a proof signed by a key it holds now), never to another agent, and may not remove keys; an owner may change the keys of its own
// agents only; admins and the lifecycle worker may change any agent's keys of their tenant; another
// tenant's admin finds nothing. Refused calls write nothing.
func TestAgentKeyAuthorization(t *testing.T) {
	h := newKeysHarness(t)
	h.createTenant(t, "acme")
	h.createTenant(t, "globex")
	ctx := t.Context()
	// Agent A is registered with a key whose private half the test holds (it signs key proofs).
	aKey, err := authn.NewSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	aPub, err := authn.PublicJWKSOf(aKey)
	if err != nil {
		t.Fatal(err)
	}
	inA := agentInput(t)
	inA.PublicJwks = string(aPub)
	regA, err := h.client.RegisterAgent(testkit.WithBearer(ctx, acmeOwner), &registryv1.RegisterAgentRequest{Parent: "tenants/acme", Agent: inA, RequestId: keysAgentA})
	if err != nil {
		t.Fatal(err)
	}
	a := h.activate(t, regA.GetAgent())
	b := h.activate(t, h.register(t, acmeOwner, keysAgentB))
	in := agentInput(t)
	in.Owner = "team:payments"
	resp, err := h.client.RegisterAgent(testkit.WithBearer(ctx, acmeOwner2), &registryv1.RegisterAgentRequest{Parent: "tenants/acme", Agent: in, RequestId: keysAgentC})
	if err != nil {
		t.Fatal(err)
	}
	c := h.activate(t, resp.GetAgent()) // keys are added to ACTIVE agents only
	for rid, got := range map[string]*registryv1.Agent{keysAgentA: a, keysAgentB: b, keysAgentC: c} {
		if want := names.DeriveAgentID("acme", rid); got.GetAgentId() != want {
			t.Fatalf("agent of %s has id %s, want %s (the tokens name it)", rid, got.GetAgentId(), want)
		}
	}

	add := func(token string, agent *registryv1.Agent) (*registryv1.AddAgentKeyResponse, error) {
		return h.client.AddAgentKey(testkit.WithBearer(ctx, token), &registryv1.AddAgentKeyRequest{Name: agent.GetName(), PublicJwk: nextKey(t)})
	}
	remove := func(token string, agent *registryv1.Agent, thumbprint string) error {
		_, err := h.client.RemoveAgentKey(testkit.WithBearer(ctx, token), &registryv1.RemoveAgentKeyRequest{Name: agent.GetName(), Thumbprint: thumbprint, Reason: "test"})
		return err
	}
	written := func() uint64 { return testkit.StreamMessages(t, h.store.JetStream(), eventstore.StreamAgents) }

	refusedAdds := []struct {
		name  string
		token string
		agent *registryv1.Agent
		want  codes.Code
	}{
		{"an agent to another agent", agentAToken, b, codes.PermissionDenied},
		{"an agent on behalf of a user, to itself", agentADelegated, a, codes.PermissionDenied},
		{"an owner of other agents", acmeOwner2, a, codes.PermissionDenied},
		{"the owner of the agent's neighbours, to another owner's agent", acmeOwner, c, codes.PermissionDenied},
		{"an auditor", acmeAuditor, a, codes.PermissionDenied},
		{"an approver", acmeApprover, a, codes.PermissionDenied},
		{"another tenant's admin", globexAdmin, a, codes.NotFound},
		{"no token", noToken, a, codes.Unauthenticated},
	}
	before := written()
	for _, tt := range refusedAdds {
		t.Run("add refused: "+tt.name, func(t *testing.T) {
			_, err := add(tt.token, tt.agent)
			wantCode(t, err, tt.want)
		})
	}
	if after := written(); after != before {
		t.Fatalf("refused key additions wrote %d events", after-before)
	}

	// The agent itself adds its next key only with a proof signed by a key it holds now, over the
	// agent, the new key, the request id and a fresh time: its token alone is not enough.
	selfPriv, err := authn.NewSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	selfJWK := selfPriv.Public()
	selfKeyJSON, err := json.Marshal(selfJWK)
	if err != nil {
		t.Fatal(err)
	}
	selfKey := string(selfKeyJSON)
	selfTP, err := authn.Thumbprint(selfJWK)
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := authn.NewSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	const rid = "self-add-1"
	now := time.Now()
	proof := func(key jose.JSONWebKey, agent, tp, requestID string, at time.Time) string {
		p, err := authn.SignKeyProof(key, authn.KeyProofClaims{Agent: agent, NewKeyThumbprint: tp, RequestID: requestID, IssuedAt: at.Unix()})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	selfAdd := func(proof, requestID string) (*registryv1.AddAgentKeyResponse, error) {
		c := testkit.WithBearer(ctx, agentAToken)
		if proof != "" {
			c = metadata.AppendToOutgoingContext(c, authn.KeyProofMetadata, proof)
		}
		return h.client.AddAgentKey(c, &registryv1.AddAgentKeyRequest{Name: a.GetName(), PublicJwk: selfKey, RequestId: requestID})
	}
	before = written()
	for _, tt := range []struct{ name, proof, rid string }{
		{"no proof (a stolen token)", "", rid},
		{"no request id", proof(aKey, a.GetName(), selfTP, rid, now), ""},
		{"signed by a key the agent does not hold", proof(stranger, a.GetName(), selfTP, rid, now), rid},
		{"signed by the new key itself", proof(selfPriv, a.GetName(), selfTP, rid, now), rid},
		{"for another agent", proof(aKey, b.GetName(), selfTP, rid, now), rid},
		{"for another key", proof(aKey, a.GetName(), "another-thumbprint", rid, now), rid},
		{"for another request", proof(aKey, a.GetName(), selfTP, "other-request", now), rid},
		{"stale", proof(aKey, a.GetName(), selfTP, rid, now.Add(-authn.KeyProofLifetime-time.Minute)), rid},
		{"from the future", proof(aKey, a.GetName(), selfTP, rid, now.Add(10*time.Minute)), rid},
		{"not a JWS", "not-a-jws", rid},
	} {
		t.Run("self add refused: "+tt.name, func(t *testing.T) {
			_, err := selfAdd(tt.proof, tt.rid)
			wantCode(t, err, codes.PermissionDenied)
		})
	}
	if after := written(); after != before {
		t.Fatalf("refused self additions wrote %d events", after-before)
	}
	good := proof(aKey, a.GetName(), selfTP, rid, now)
	res, err := selfAdd(good, rid)
	if err != nil {
		t.Fatalf("the agent adding its own key with a proof: %v", err)
	}
	// The same proof again repeats the same request: answered alike, nothing more written.
	before = written()
	if again, err := selfAdd(good, rid); err != nil || again.GetKey().GetThumbprint() != selfTP {
		t.Fatalf("the repeated request: %v, %v", again, err)
	}
	if after := written(); after != before {
		t.Fatalf("the repeated request wrote %d events", after-before)
	}
	if len(res.GetAgent().GetKeys()) != 2 || res.GetKey().GetThumbprint() == "" || res.GetKey().GetAddTime() == nil {
		t.Fatalf("after the agent's own addition: keys %v, added %v", res.GetAgent().GetKeys(), res.GetKey())
	}
	old := res.GetAgent().GetKeys()[0].GetThumbprint()

	// Removal: never by the agent (the rotation run or a person removes keys), nor by another owner.
	before = written()
	for _, tt := range []struct {
		name, token string
		want        codes.Code
	}{
		{"the agent itself", agentAToken, codes.PermissionDenied},
		{"another agent", agentBToken, codes.PermissionDenied},
		{"an owner of other agents", acmeOwner2, codes.PermissionDenied},
		{"another tenant's admin", globexAdmin, codes.NotFound},
	} {
		t.Run("remove refused: "+tt.name, func(t *testing.T) { wantCode(t, remove(tt.token, a, old), tt.want) })
	}
	if after := written(); after != before {
		t.Fatalf("refused key removals wrote %d events", after-before)
	}

	// Allowed: the lifecycle worker removes the old key (what the rotation run does); owners and
	// admins change the keys of the agents they may.
	if err := remove(worker, a, old); err != nil {
		t.Fatalf("the lifecycle worker removing the old key: %v", err)
	}
	for _, tt := range []struct {
		name, token string
		agent       *registryv1.Agent
	}{
		{"its owner", acmeOwner, b},
		{"the owner of the other agent, to its own", acmeOwner2, c},
		{"a tenant-admin", acmeAdmin, c},
		{"the lifecycle worker", worker, a},
	} {
		t.Run("add and remove allowed: "+tt.name, func(t *testing.T) {
			res, err := add(tt.token, tt.agent)
			if err != nil {
				t.Fatalf("add: %v", err)
			}
			if err := remove(tt.token, tt.agent, res.GetKey().GetThumbprint()); err != nil {
				t.Fatalf("remove: %v", err)
			}
		})
	}
}
