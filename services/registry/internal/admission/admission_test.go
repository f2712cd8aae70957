package admission_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/grpcx"
	"github.com/agentid/agentid/pkg/testkit"
	policyv1 "github.com/agentid/agentid/proto/gen/go/agentid/policy/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	policyapp "github.com/agentid/agentid/services/policy/app"
	"github.com/agentid/agentid/services/registry/internal/admission"
	"github.com/agentid/agentid/services/registry/internal/registry"
)

var quiet = slog.New(slog.DiscardHandler)

// bundle decides by the agent's scopes: a refund scope is denied, a write scope needs the owner and
// security, anything else is allowed; agents of team:payments are raised to HIGH.
const bundle = `package agentid.admission

scopes := object.get(input.agent, "scopes", [])

decision := {"outcome": "deny", "reasons": ["refunds are not for agents", "ask finance"], "required_approvals": []} if {
	"payments.refund.create" in scopes
} else := {"outcome": "require_approval", "reasons": ["write access"], "required_approvals": ["owner", "security"]} if {
	some s in scopes
	endswith(s, ".write")
} else := {"outcome": "allow", "reasons": ["read only"], "required_approvals": []}

risk_tier_override := {"tier": "HIGH", "reason": "payments agents are high risk"} if input.agent.owner == "team:payments"
`

// principals: the registry calls as a platform service identity whose decisions are recorded.
var principals = map[string]*authn.Claims{
	"registry": {Subject: "registry", ClientID: "registry", Tenant: authn.SystemTenant, Roles: []string{string(authn.RoleRegistryService)}},
}

type policyEnv struct {
	client policyv1.PolicyServiceClient
	store  *eventstore.Store
	app    *policyapp.App
}

// startPolicy runs the real policy service with bundle, in-process over bufconn, on its own NATS.
func startPolicy(t *testing.T) *policyEnv {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "admission.rego"), []byte(bundle), 0o600); err != nil {
		t.Fatal(err)
	}
	store := eventstore.New(testkit.StartNATS(t).JetStream(t), eventstore.WithSource("agentid/policy"))
	if err := store.EnsureStreams(t.Context()); err != nil {
		t.Fatal(err)
	}
	a, err := policyapp.New(policyapp.Config{BundleDir: dir}, policyapp.Deps{Store: store, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	srv := grpcx.NewServer(grpcx.ServerConfig{Logger: quiet, Verifier: testkit.StaticVerifier(principals)})
	a.RegisterGRPC(srv)
	return &policyEnv{client: policyv1.NewPolicyServiceClient(testkit.ServeGRPC(t, srv)), store: store, app: a}
}

func newAdmission(t *testing.T, p admission.Policy) *admission.Admission {
	t.Helper()
	a, err := admission.New(admission.Config{Policy: p, Timeout: 2 * time.Second, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func activeAgent(owner string, scopes ...string) *registryv1.Agent {
	return &registryv1.Agent{
		Name: "tenants/acme/agents/bot", AgentId: "bot", Tenant: "acme", Owner: owner, Sponsor: "alice@acme.example",
		Environment:     registryv1.Environment_ENVIRONMENT_PROD,
		DataSensitivity: registryv1.DataSensitivity_DATA_SENSITIVITY_INTERNAL,
		RiskTier:        registryv1.RiskTier_RISK_TIER_MODERATE,
		Scopes:          scopes,
		State:           registryv1.AgentState_AGENT_STATE_ACTIVE,
		Etag:            "7",
		Classification: &registryv1.Classification{
			Function: "support", Environment: registryv1.Environment_ENVIRONMENT_PROD,
			DerivedRiskTier: registryv1.RiskTier_RISK_TIER_MODERATE, Rule: "no HIGH or LOW rule applies → MODERATE",
		},
	}
}

func TestAdmitUpdate(t *testing.T) {
	p := startPolicy(t)
	adm := newAdmission(t, p.client)
	ctx := registry.WithUpdateRequestID(testkit.WithBearer(t.Context(), "registry"), "upd-1")
	tests := []struct {
		name       string
		after      *registryv1.Agent
		wantKind   errs.Kind
		wantReason string
		wantInMsg  []string
		wantMeta   map[string]string
		wantTier   registryv1.RiskTier // of the returned classification; UNSPECIFIED: nil
	}{
		{name: "allow without override", after: activeAgent("team:support", "kb.read", "kb.search")},
		{name: "allow with override", after: activeAgent("team:payments", "kb.read", "ledger.read"), wantTier: registryv1.RiskTier_RISK_TIER_HIGH},
		{name: "deny", after: activeAgent("team:support", "kb.read", "payments.refund.create"),
			wantKind: errs.KindPermissionDenied, wantReason: "POLICY_DENIED",
			wantInMsg: []string{"policy denied this change", "refunds are not for agents", "ask finance"}},
		{name: "require approval", after: activeAgent("team:support", "kb.read", "kb.write"),
			wantKind: errs.KindFailedPrecondition, wantReason: "APPROVAL_REQUIRED",
			wantInMsg: []string{"approval by owner, security", "write access"},
			wantMeta:  map[string]string{"required_approvals": "owner,security"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := activeAgent(tt.after.GetOwner(), "kb.read")
			ctx := ctx
			if tt.name != "allow without override" {
				ctx = registry.WithUpdateRequestID(ctx, "upd-"+tt.name)
			}
			cls, err := adm.AdmitUpdate(ctx, "acme", before, tt.after)
			if tt.wantReason != "" {
				var e *errs.Error
				if !errors.As(err, &e) || e.Kind != tt.wantKind || e.Reason != tt.wantReason {
					t.Fatalf("err = %v, want %s %s", err, tt.wantKind, tt.wantReason)
				}
				for _, s := range tt.wantInMsg {
					if !strings.Contains(e.Message, s) {
						t.Errorf("message %q does not say %q", e.Message, s)
					}
				}
				for k, v := range tt.wantMeta {
					if e.Metadata[k] != v {
						t.Errorf("metadata %s = %q, want %q", k, e.Metadata[k], v)
					}
				}
				if e.Metadata["decision_id"] == "" {
					t.Error("the error names no decision_id")
				}
				if cls != nil {
					t.Errorf("classification %v returned with an error", cls)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.wantTier == registryv1.RiskTier_RISK_TIER_UNSPECIFIED {
				if cls != nil {
					t.Fatalf("classification = %v, want nil (no override)", cls)
				}
				return
			}
			if cls.GetOverrideRiskTier() != tt.wantTier || cls.GetOverrideReason() != "payments agents are high risk" ||
				cls.GetOverrideSource() != admission.OverrideSourcePrefix+p.app.BundleVersion() {
				t.Errorf("override = %s %q %q, want %s from bundle %s", cls.GetOverrideRiskTier(), cls.GetOverrideReason(),
					cls.GetOverrideSource(), tt.wantTier, p.app.BundleVersion())
			}
			if cls.GetDerivedRiskTier() != registryv1.RiskTier_RISK_TIER_MODERATE || cls.GetFunction() != "support" {
				t.Errorf("the derived classification was not kept: %v", cls)
			}
			if tt.after.GetClassification().GetOverrideRiskTier() != registryv1.RiskTier_RISK_TIER_UNSPECIFIED {
				t.Error("AdmitUpdate modified its input's classification")
			}
		})
	}

	// The update's request id reused for another change of the same version is refused.
	_, err := adm.AdmitUpdate(ctx, "acme", activeAgent("team:support", "kb.read"), activeAgent("team:support", "kb.read", "kb.list"))
	var e *errs.Error
	if !errors.As(err, &e) || e.Kind != errs.KindInvalidArgument || e.Field != "request_id" {
		t.Fatalf("request id reused for another change: err = %v, want InvalidArgument on request_id", err)
	}

	// Every decision was recorded on POLICY under a request id derived from the update's.
	want, err := admission.RequestID(ctx, "acme", activeAgent("team:support", "kb.read"), activeAgent("team:support", "kb.read", "kb.search"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(want, admission.RequestIDPrefix) || len(want) > 128 {
		t.Fatalf("request id %q", want)
	}
	events, _, err := p.store.Load(t.Context(), "acme", eventstore.AggregatePolicy, "admission-"+sha128(want))
	if err != nil || len(events) != 1 {
		t.Fatalf("decision record of %s: %d events, %v", want, len(events), err)
	}
}

func TestRequestIDIsDerivedFromTheUpdate(t *testing.T) {
	before, after := activeAgent("team:support", "kb.read"), activeAgent("team:support", "kb.read", "kb.search")
	id := func(ctx context.Context, before, after *registryv1.Agent) string {
		t.Helper()
		s, err := admission.RequestID(ctx, "acme", before, after)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	ctx := registry.WithUpdateRequestID(t.Context(), "upd-1")
	base := id(ctx, before, after)
	if id(registry.WithUpdateRequestID(t.Context(), "upd-1"), before, after) != base {
		t.Error("the same update does not get the same request id")
	}
	if id(registry.WithUpdateRequestID(t.Context(), "upd-2"), before, after) == base {
		t.Error("another update request id gets the same request id")
	}
	later := activeAgent("team:support", "kb.read")
	later.Etag = "8"
	if id(ctx, later, after) == base {
		t.Error("the same update request id on a later version gets the same request id")
	}
	// Without an update request id, the change itself decides.
	plain := id(t.Context(), before, after)
	if plain == base || id(t.Context(), before, after) != plain || id(t.Context(), before, activeAgent("team:support", "kb.read", "kb.list")) == plain {
		t.Error("request ids without an update request id do not follow the change")
	}
}

func TestPolicyDownIsUnavailable(t *testing.T) {
	conn, err := grpcx.Dial("127.0.0.1:1", nil) // nothing listens on port 1
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	adm := newAdmission(t, policyv1.NewPolicyServiceClient(conn))
	cls, err := adm.AdmitUpdate(t.Context(), "acme", activeAgent("team:support", "kb.read"), activeAgent("team:support", "kb.read", "kb.search"))
	var e *errs.Error
	if !errors.As(err, &e) || e.Kind != errs.KindUnavailable || e.Reason != "POLICY_UNAVAILABLE" || cls != nil || !errs.Retryable(err) {
		t.Fatalf("AdmitUpdate = %v, %v; want retryable Unavailable POLICY_UNAVAILABLE", cls, err)
	}
}

// hangingPolicy never answers before its context ends.
type hangingPolicy struct{ calls sync.WaitGroup }

func (h *hangingPolicy) EvaluateAdmission(ctx context.Context, _ *policyv1.EvaluateAdmissionRequest, _ ...grpc.CallOption) (*policyv1.EvaluateAdmissionResponse, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

func TestPolicyTimeoutIsUnavailable(t *testing.T) {
	adm, err := admission.New(admission.Config{Policy: &hangingPolicy{}, Timeout: 50 * time.Millisecond, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	_, err = adm.AdmitUpdate(t.Context(), "acme", activeAgent("team:support", "kb.read"), activeAgent("team:support", "kb.read", "kb.search"))
	if !errs.Is(err, errs.KindUnavailable) || !errs.Retryable(err) {
		t.Fatalf("err = %v, want a retryable Unavailable", err)
	}
}

func TestNewNeedsAPolicy(t *testing.T) {
	if _, err := admission.New(admission.Config{}); err == nil {
		t.Error("New without a policy client succeeded")
	}
	if _, err := admission.New(admission.Config{Policy: &hangingPolicy{}, Timeout: -time.Second}); err == nil {
		t.Error("New with a negative timeout succeeded")
	}
}

// sha128 is the first 128 bits of the SHA-256 of s in hex, as the policy names decision records.
func sha128(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:16])
}
