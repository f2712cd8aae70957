package admission_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"strconv"
	"testing"

	"github.com/go-jose/go-jose/v4"

	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/grpcx"
	"github.com/agentid/agentid/pkg/testkit"
	policyv1 "github.com/agentid/agentid/proto/gen/go/agentid/policy/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/registry/internal/registry"
)

// TestRegistryWritesNothingWhenPolicyIsDown: an escalating update of an ACTIVE agent while the
// policy service is unreachable is Unavailable and leaves the agent as it was.
func TestRegistryWritesNothingWhenPolicyIsDown(t *testing.T) {
	conn, err := grpcx.Dial("127.0.0.1:1", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	store := eventstore.New(testkit.StartNATS(t).JetStream(t), eventstore.WithSource("agentid/registry"))
	if err := store.EnsureStreams(t.Context()); err != nil {
		t.Fatal(err)
	}
	svc, err := registry.New(registry.Config{Store: store, Logger: quiet, Admission: newAdmission(t, policyv1.NewPolicyServiceClient(conn))})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range svc.Runners() {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = r.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
	}
	md := eventstore.Metadata{Actor: eventstore.Actor{ID: "admin@acme", Kind: eventstore.ActorHuman}}
	ctx := t.Context()
	if err := svc.EnsureTenant(ctx, "acme", "Acme", eventstore.Metadata{Actor: eventstore.Actor{ID: "agentid/dev", Kind: eventstore.ActorService}}); err != nil {
		t.Fatal(err)
	}
	a, err := svc.RegisterAgent(ctx, registry.RegisterAgent{Tenant: "acme", RequestID: "reg-1", Agent: &registryv1.Agent{
		DisplayName: "FAQ bot", Owner: "team:support", Sponsor: "alice@acme.example", Purpose: "Answers questions from the FAQ.",
		Environment:     registryv1.Environment_ENVIRONMENT_DEV,
		Autonomy:        registryv1.Autonomy_AUTONOMY_ASSISTIVE,
		IdentityModel:   registryv1.IdentityModel_IDENTITY_MODEL_AUTONOMOUS,
		TrustBoundary:   registryv1.TrustBoundary_TRUST_BOUNDARY_INTERNAL,
		DataSensitivity: registryv1.DataSensitivity_DATA_SENSITIVITY_PUBLIC,
		Scopes:          []string{"faq.read"},
		PublicJwks:      publicJWKS(t),
	}}, md)
	if err != nil {
		t.Fatal(err)
	}
	a, err = svc.ActivateAgent(ctx, registry.ActivateAgent{Tenant: "acme", AgentID: a.GetAgentId(), DecisionID: "dec-1", ApprovedBy: "policy:auto", RequestID: "act-1",
		Override: registry.RiskTierOverride{Tier: registryv1.RiskTier_RISK_TIER_HIGH, Reason: "public FAQ is customer-facing", Source: "policy-bundle:sha256:x"}}, md)
	if err != nil {
		t.Fatal(err)
	}
	if c := a.GetClassification(); a.GetRiskTier() != registryv1.RiskTier_RISK_TIER_HIGH || c.GetOverrideRiskTier() != registryv1.RiskTier_RISK_TIER_HIGH ||
		c.GetOverrideReason() != "public FAQ is customer-facing" || c.GetOverrideSource() != "policy-bundle:sha256:x" {
		t.Fatalf("activated with an override: risk tier %s, classification %v", a.GetRiskTier(), c)
	}
	_, _, err = svc.UpdateAgent(ctx, registry.UpdateAgent{Tenant: "acme", AgentID: a.GetAgentId(), Etag: a.GetEtag(), RequestID: "upd-1",
		Agent: &registryv1.Agent{Scopes: []string{"faq.read", "faq.search"}}, Paths: []string{"scopes"}}, md)
	if !errs.Is(err, errs.KindUnavailable) {
		t.Fatalf("escalating update with the policy down: err = %v, want Unavailable", err)
	}
	events, version, err := store.Load(ctx, "acme", registry.AggregateAgent, a.GetAgentId())
	if err != nil {
		t.Fatal(err)
	}
	if last := events[len(events)-1]; last.Type != registry.EventAgentActivated || a.GetEtag() != strconv.FormatUint(version, 10) {
		t.Fatalf("the refused update wrote %s (version %d, agent etag %s)", last.Type, version, a.GetEtag())
	}
}

// publicJWKS is a JWK Set of one fresh P-256 public key.
func publicJWKS(t *testing.T) string {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &k.PublicKey, KeyID: "k1", Algorithm: string(jose.ES256), Use: "sig"}}})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
