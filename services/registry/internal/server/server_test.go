package server_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"

	"github.com/go-jose/go-jose/v4"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/grpcx"
	"github.com/agentid/agentid/pkg/testkit"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/registry/internal/registry"
	"github.com/agentid/agentid/services/registry/internal/server"
)

func claims(tenant, sub string, roles ...string) *authn.Claims {
	return &authn.Claims{Subject: sub, ClientID: sub, Tenant: tenant, Roles: roles, Audience: []string{authn.APIAudience}}
}

// The test tokens.
const (
	platformAdmin = "platform-admin"   // system platform-admin (the lifecycle service)
	acmeAdmin     = "acme-admin"       // tenant-admin of acme
	acmeOwner     = "acme-owner"       // owner team:support in acme
	acmeOwner2    = "acme-owner-2"     // owner team:payments in acme
	acmeAuditor   = "acme-auditor"     // auditor of acme
	acmeSecurity  = "acme-security"    // security-approver of acme
	acmeApprover  = "acme-approver"    // approver of acme
	acmeSub       = "acme-subscriber"  // event subscriber of acme
	acmeNoRole    = "acme-no-role"     // acme token without roles
	acmePlatform  = "acme-platform"    // platform-admin role, but of tenant acme
	globexAdmin   = "globex-admin"     // tenant-admin of globex
	worker        = "worker"           // the lifecycle worker: lifecycle-worker role of system
	acmeWorker    = "acme-worker"      // lifecycle-worker role, but of tenant acme
	systemAdmin   = "system-admin"     // tenant-admin of tenant system
	systemOwner   = "system-owner"     // owner of tenant system
	noToken       = ""                 // no authorization header
	badToken      = "not-a-real-token" // rejected by the verifier
)

var verifier = testkit.StaticVerifier(map[string]*authn.Claims{
	platformAdmin: claims(authn.SystemTenant, "lifecycle", "platform-admin"),
	acmeAdmin:     claims("acme", "admin@acme.example", "tenant-admin"),
	acmeOwner:     claims("acme", "team:support", "owner"),
	acmeOwner2:    claims("acme", "team:payments", "owner"),
	acmeAuditor:   claims("acme", "audit@acme.example", "auditor"),
	acmeSecurity:  claims("acme", "sec@acme.example", "security-approver"),
	acmeApprover:  claims("acme", "appr@acme.example", "approver"),
	acmeSub:       claims("acme", "siem@acme.example", "subscriber"),
	acmeNoRole:    claims("acme", "nobody@acme.example"),
	acmePlatform:  claims("acme", "root@acme.example", "platform-admin"),
	globexAdmin:   claims("globex", "admin@globex.example", "tenant-admin"),
	worker:        claims(authn.SystemTenant, "lifecycle-worker", "lifecycle-worker"),
	acmeWorker:    claims("acme", "fake-worker", "lifecycle-worker"),
	systemAdmin:   claims(authn.SystemTenant, "sam", "tenant-admin"),
	systemOwner:   claims(authn.SystemTenant, "team:platform", "owner"),
})

// harness is the RegistryService over bufconn with a real event store on embedded NATS.
type harness struct {
	client registryv1.RegistryServiceClient
	store  *eventstore.Store
}

func newHarness(t *testing.T) *harness {
	t.Helper()
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

	srv := grpcx.NewServer(grpcx.ServerConfig{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Verifier: verifier})
	registryv1.RegisterRegistryServiceServer(srv, server.New(svc))
	conn := testkit.ServeGRPC(t, srv)
	return &harness{client: registryv1.NewRegistryServiceClient(conn), store: store}
}

func (h *harness) createTenant(t *testing.T, id string) {
	t.Helper()
	if _, err := h.client.CreateTenant(testkit.WithBearer(t.Context(), platformAdmin), &registryv1.CreateTenantRequest{TenantId: id, DisplayName: id}); err != nil {
		t.Fatalf("create tenant %s: %v", id, err)
	}
}

func jwks(t *testing.T) string {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &k.PublicKey, KeyID: "k1", Algorithm: "ES256", Use: "sig"}}})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// agentInput is a valid registration owned by team:support.
func agentInput(t *testing.T) *registryv1.Agent {
	return &registryv1.Agent{
		DisplayName:     "Refund assistant",
		Owner:           "team:support",
		Sponsor:         "alice@corp.example",
		Purpose:         "Drafts refund decisions for support agents.",
		Environment:     registryv1.Environment_ENVIRONMENT_PROD,
		Autonomy:        registryv1.Autonomy_AUTONOMY_ASSISTIVE,
		IdentityModel:   registryv1.IdentityModel_IDENTITY_MODEL_DELEGATED,
		TrustBoundary:   registryv1.TrustBoundary_TRUST_BOUNDARY_INTERNAL,
		DataSensitivity: registryv1.DataSensitivity_DATA_SENSITIVITY_CONFIDENTIAL,
		Scopes:          []string{"order.read", "refund.create.limited"},
		PublicJwks:      jwks(t),
	}
}

func (h *harness) register(t *testing.T, token, requestID string) *registryv1.Agent {
	t.Helper()
	resp, err := h.client.RegisterAgent(testkit.WithBearer(t.Context(), token), &registryv1.RegisterAgentRequest{Parent: "tenants/acme", Agent: agentInput(t), RequestId: requestID})
	if err != nil {
		t.Fatalf("register: %v", err)
	}
	return resp.GetAgent()
}

func wantCode(t *testing.T, err error, code codes.Code) {
	t.Helper()
	if got := status.Code(err); got != code {
		t.Fatalf("got %s (%v), want %s", got, err, code)
	}
}

func TestAgentFlow(t *testing.T) {
	h := newHarness(t)
	h.createTenant(t, "acme")
	ctx := t.Context()

	a := h.register(t, acmeOwner, "flow-1")
	if a.GetState() != registryv1.AgentState_AGENT_STATE_PENDING || a.GetRiskTier() != registryv1.RiskTier_RISK_TIER_HIGH || a.GetTenant() != "acme" {
		t.Fatalf("registered %v", a)
	}

	got, err := h.client.GetAgent(testkit.WithBearer(ctx, acmeAuditor), &registryv1.GetAgentRequest{Name: a.GetName()})
	if err != nil || got.GetAgent().GetAgentId() != a.GetAgentId() {
		t.Fatalf("get: %v %v", got, err)
	}
	list, err := h.client.ListAgents(testkit.WithBearer(ctx, acmeAdmin), &registryv1.ListAgentsRequest{Parent: "tenants/acme"})
	if err != nil || len(list.GetAgents()) != 1 || list.GetAgents()[0].GetName() != a.GetName() {
		t.Fatalf("list: %v %v", list, err)
	}

	act, err := h.client.ActivateAgent(testkit.WithBearer(ctx, platformAdmin), &registryv1.ActivateAgentRequest{
		Name: a.GetName(), DecisionId: "dec-1", ApprovedBy: "alice@acme.example", Etag: a.GetEtag(), RequestId: "act-1"})
	if err != nil || act.GetAgent().GetState() != registryv1.AgentState_AGENT_STATE_ACTIVE {
		t.Fatalf("activate: %v %v", act, err)
	}
	_, err = h.client.RetireAgent(testkit.WithBearer(ctx, acmeOwner), &registryv1.RetireAgentRequest{Name: a.GetName(), Reason: "replaced", Etag: a.GetEtag()})
	wantCode(t, err, codes.Aborted) // stale etag: the agent changed since it was registered

	ret, err := h.client.RetireAgent(testkit.WithBearer(ctx, acmeOwner), &registryv1.RetireAgentRequest{
		Name: a.GetName(), Reason: "replaced by v2", Ticket: "CHG-9", Etag: act.GetAgent().GetEtag(), RequestId: "ret-1"})
	if err != nil || ret.GetAgent().GetState() != registryv1.AgentState_AGENT_STATE_RETIRING {
		t.Fatalf("retire: %v %v", ret, err)
	}
	_, err = h.client.ActivateAgent(testkit.WithBearer(ctx, platformAdmin), &registryv1.ActivateAgentRequest{Name: a.GetName(), DecisionId: "dec-2", ApprovedBy: "x"})
	wantCode(t, err, codes.FailedPrecondition)

	done, err := h.client.CompleteRetirement(testkit.WithBearer(ctx, platformAdmin), &registryv1.CompleteRetirementRequest{Name: a.GetName(), RequestId: "done-1"})
	if err != nil || done.GetAgent().GetState() != registryv1.AgentState_AGENT_STATE_RETIRED {
		t.Fatalf("complete: %v %v", done, err)
	}
	final, err := h.client.GetAgent(testkit.WithBearer(ctx, acmeOwner2), &registryv1.GetAgentRequest{Name: a.GetName()})
	if err != nil || final.GetAgent().GetState() != registryv1.AgentState_AGENT_STATE_RETIRED || final.GetAgent().GetStateReason() != "replaced by v2" {
		t.Fatalf("final: %v %v", final, err)
	}

	// A second agent is rejected.
	b := h.register(t, acmeAdmin, "flow-2")
	rej, err := h.client.RejectAgent(testkit.WithBearer(ctx, platformAdmin), &registryv1.RejectAgentRequest{Name: b.GetName(), DecisionId: "dec-3", Reason: "scope too broad"})
	if err != nil || rej.GetAgent().GetState() != registryv1.AgentState_AGENT_STATE_REJECTED {
		t.Fatalf("reject: %v %v", rej, err)
	}

	// Tenants.
	tn, err := h.client.GetTenant(testkit.WithBearer(ctx, acmeAuditor), &registryv1.GetTenantRequest{Name: "tenants/acme"})
	if err != nil || tn.GetTenant().GetTenantId() != "acme" {
		t.Fatalf("get tenant: %v %v", tn, err)
	}
	// An event subscriber reads its tenant (it sees tenant.created anyway), and no agents.
	if tn, err := h.client.GetTenant(testkit.WithBearer(ctx, acmeSub), &registryv1.GetTenantRequest{Name: "tenants/acme"}); err != nil || tn.GetTenant().GetTenantId() != "acme" {
		t.Fatalf("get tenant as subscriber: %v %v", tn, err)
	}
	_, err = h.client.ListAgents(testkit.WithBearer(ctx, acmeSub), &registryv1.ListAgentsRequest{Parent: "tenants/acme"})
	wantCode(t, err, codes.PermissionDenied)
	ts, err := h.client.ListTenants(testkit.WithBearer(ctx, platformAdmin), &registryv1.ListTenantsRequest{})
	if err != nil || len(ts.GetTenants()) != 1 {
		t.Fatalf("list tenants: %v %v", ts, err)
	}
	_, err = h.client.CreateTenant(testkit.WithBearer(ctx, platformAdmin), &registryv1.CreateTenantRequest{TenantId: "acme"})
	wantCode(t, err, codes.AlreadyExists)
}

func TestAuthorization(t *testing.T) {
	h := newHarness(t)
	h.createTenant(t, "acme")
	h.createTenant(t, "globex")
	a := h.register(t, acmeOwner, "authz-1")
	ctx := t.Context()
	name := a.GetName()

	register := func(agent *registryv1.Agent, parent string) func(context.Context) error {
		return func(ctx context.Context) error {
			_, err := h.client.RegisterAgent(ctx, &registryv1.RegisterAgentRequest{Parent: parent, Agent: agent})
			return err
		}
	}
	otherOwner := agentInput(t)
	otherOwner.Owner = "team:payments"
	getAgent := func(ctx context.Context) error {
		_, err := h.client.GetAgent(ctx, &registryv1.GetAgentRequest{Name: name})
		return err
	}
	listAgents := func(ctx context.Context) error {
		_, err := h.client.ListAgents(ctx, &registryv1.ListAgentsRequest{Parent: "tenants/acme"})
		return err
	}
	activate := func(ctx context.Context) error {
		_, err := h.client.ActivateAgent(ctx, &registryv1.ActivateAgentRequest{Name: name, DecisionId: "d", ApprovedBy: "x"})
		return err
	}
	reject := func(ctx context.Context) error {
		_, err := h.client.RejectAgent(ctx, &registryv1.RejectAgentRequest{Name: name, DecisionId: "d"})
		return err
	}
	retire := func(ctx context.Context) error {
		_, err := h.client.RetireAgent(ctx, &registryv1.RetireAgentRequest{Name: name, Reason: "r"})
		return err
	}
	complete := func(ctx context.Context) error {
		_, err := h.client.CompleteRetirement(ctx, &registryv1.CompleteRetirementRequest{Name: name})
		return err
	}
	createTenant := func(ctx context.Context) error {
		_, err := h.client.CreateTenant(ctx, &registryv1.CreateTenantRequest{TenantId: "initech"})
		return err
	}
	listTenants := func(ctx context.Context) error {
		_, err := h.client.ListTenants(ctx, &registryv1.ListTenantsRequest{})
		return err
	}
	getTenant := func(ctx context.Context) error {
		_, err := h.client.GetTenant(ctx, &registryv1.GetTenantRequest{Name: "tenants/acme"})
		return err
	}

	tests := []struct {
		name  string
		token string
		call  func(context.Context) error
		want  codes.Code
	}{
		{"no token", noToken, getAgent, codes.Unauthenticated},
		{"bad token", badToken, getAgent, codes.Unauthenticated},
		{"no token register", noToken, register(agentInput(t), "tenants/acme"), codes.Unauthenticated},

		{"cross-tenant get agent", globexAdmin, getAgent, codes.NotFound},
		{"cross-tenant list agents", globexAdmin, listAgents, codes.NotFound},
		{"cross-tenant get tenant", globexAdmin, getTenant, codes.NotFound},
		{"cross-tenant retire", globexAdmin, retire, codes.NotFound},
		{"cross-tenant register", globexAdmin, register(agentInput(t), "tenants/acme"), codes.NotFound},
		{"cross-tenant activate by tenant platform-admin", acmePlatform, func(ctx context.Context) error {
			_, err := h.client.ActivateAgent(ctx, &registryv1.ActivateAgentRequest{Name: "tenants/globex/agents/" + registry.NewAgentID(), DecisionId: "d", ApprovedBy: "x"})
			return err
		}, codes.NotFound},

		{"no role get agent", acmeNoRole, getAgent, codes.PermissionDenied},
		{"auditor registers", acmeAuditor, register(agentInput(t), "tenants/acme"), codes.PermissionDenied},
		{"owner registers for another owner", acmeOwner2, register(agentInput(t), "tenants/acme"), codes.PermissionDenied},
		{"owner retires another owner's agent", acmeOwner2, retire, codes.PermissionDenied},
		{"auditor retires", acmeAuditor, retire, codes.PermissionDenied},
		{"tenant-admin activates", acmeAdmin, activate, codes.PermissionDenied},
		{"owner activates", acmeOwner, activate, codes.PermissionDenied},
		{"tenant-admin rejects", acmeAdmin, reject, codes.PermissionDenied},
		{"tenant-admin completes retirement", acmeAdmin, complete, codes.PermissionDenied},
		{"tenant-admin creates tenant", acmeAdmin, createTenant, codes.PermissionDenied},
		{"tenant platform-admin creates tenant", acmePlatform, createTenant, codes.PermissionDenied},
		{"tenant-admin lists tenants", acmeAdmin, listTenants, codes.PermissionDenied},

		{"auditor gets agent", acmeAuditor, getAgent, codes.OK},
		{"other owner reads agent", acmeOwner2, getAgent, codes.OK},
		{"platform-admin lists acme", platformAdmin, listAgents, codes.OK},
		{"auditor gets own tenant", acmeAuditor, getTenant, codes.OK},
		{"platform-admin gets tenant", platformAdmin, getTenant, codes.OK},

		{"platform-admin registers in system", platformAdmin, register(agentInput(t), "tenants/system"), codes.InvalidArgument},
		{"malformed parent", acmeAdmin, register(agentInput(t), "acme"), codes.InvalidArgument},
		{"malformed name", acmeAdmin, func(ctx context.Context) error {
			_, err := h.client.GetAgent(ctx, &registryv1.GetAgentRequest{Name: "tenants/acme/agents/../x"})
			return err
		}, codes.InvalidArgument},
		{"unknown agent", acmeAdmin, func(ctx context.Context) error {
			_, err := h.client.GetAgent(ctx, &registryv1.GetAgentRequest{Name: "tenants/acme/agents/" + registry.NewAgentID()})
			return err
		}, codes.NotFound},
		{"register in unknown tenant", platformAdmin, register(agentInput(t), "tenants/initech"), codes.NotFound},
	}
	agentsBefore, tenantsBefore := testkit.StreamMessages(t, h.store.JetStream(), eventstore.StreamAgents), testkit.StreamMessages(t, h.store.JetStream(), eventstore.StreamTenants)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantCode(t, tt.call(testkit.WithBearer(ctx, tt.token)), tt.want)
		})
	}
	if a, tn := testkit.StreamMessages(t, h.store.JetStream(), eventstore.StreamAgents), testkit.StreamMessages(t, h.store.JetStream(), eventstore.StreamTenants); a != agentsBefore || tn != tenantsBefore {
		t.Fatalf("refused calls wrote events: AGENTS %d→%d, TENANTS %d→%d", agentsBefore, a, tenantsBefore, tn)
	}
}

func TestInvalidArgumentNamesTheField(t *testing.T) {
	h := newHarness(t)
	h.createTenant(t, "acme")
	tests := []struct {
		name  string
		edit  func(*registryv1.Agent)
		field string
	}{
		{"owner", func(a *registryv1.Agent) { a.Owner = "" }, "agent.owner"},
		{"admin scope", func(a *registryv1.Agent) { a.Scopes = []string{"billing.admin"} }, "agent.scopes"},
		{"private key", func(a *registryv1.Agent) {
			k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			b, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: k, KeyID: "k"}}})
			a.PublicJwks = string(b)
		}, "agent.public_jwks"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := agentInput(t)
			tt.edit(in)
			_, err := h.client.RegisterAgent(testkit.WithBearer(t.Context(), acmeAdmin), &registryv1.RegisterAgentRequest{Parent: "tenants/acme", Agent: in})
			wantCode(t, err, codes.InvalidArgument)
			if f := errs.FromStatus(err).Field; f != tt.field {
				t.Fatalf("field %q, want %q", f, tt.field)
			}
		})
	}
	_, err := h.client.ListAgents(testkit.WithBearer(t.Context(), acmeAdmin), &registryv1.ListAgentsRequest{Parent: "tenants/acme", PageToken: "garbage!"})
	wantCode(t, err, codes.InvalidArgument)
	if f := errs.FromStatus(err).Field; f != "page_token" {
		t.Fatalf("field %q, want page_token", f)
	}
	_, err = h.client.CreateTenant(testkit.WithBearer(t.Context(), platformAdmin), &registryv1.CreateTenantRequest{TenantId: "system"})
	wantCode(t, err, codes.InvalidArgument)
	if f := errs.FromStatus(err).Field; f != "tenant_id" {
		t.Fatalf("field %q, want tenant_id", f)
	}
}

func TestRegisterAgentIdempotentOverGRPC(t *testing.T) {
	h := newHarness(t)
	h.createTenant(t, "acme")
	before := testkit.StreamMessages(t, h.store.JetStream(), eventstore.StreamAgents)
	in := agentInput(t)
	register := func() *registryv1.Agent {
		t.Helper()
		resp, err := h.client.RegisterAgent(testkit.WithBearer(t.Context(), acmeOwner), &registryv1.RegisterAgentRequest{Parent: "tenants/acme", Agent: in, RequestId: "same-request"})
		if err != nil {
			t.Fatalf("register: %v", err)
		}
		return resp.GetAgent()
	}
	first := register()
	second := register()
	if first.GetName() != second.GetName() || first.GetEtag() != second.GetEtag() {
		t.Fatalf("repeat returned %s@%s, first %s@%s", second.GetName(), second.GetEtag(), first.GetName(), first.GetEtag())
	}
	if after := testkit.StreamMessages(t, h.store.JetStream(), eventstore.StreamAgents); after != before+1 {
		t.Fatalf("AGENTS grew by %d, want 1", after-before)
	}
	list, err := h.client.ListAgents(testkit.WithBearer(t.Context(), acmeAdmin), &registryv1.ListAgentsRequest{Parent: "tenants/acme"})
	if err != nil || len(list.GetAgents()) != 1 {
		t.Fatalf("list after repeat: %v %v", list, err)
	}
}

// TestActivateRetireRace runs ActivateAgent and RetireAgent concurrently on pending agents: whatever
// the interleaving, the history is a valid path of the state machine and the responses agree with it.
func TestActivateRetireRace(t *testing.T) {
	h := newHarness(t)
	h.createTenant(t, "acme")
	ctx := t.Context()
	for round := range 12 {
		a := h.register(t, acmeAdmin, fmt.Sprintf("race-%d", round))
		var (
			wg             sync.WaitGroup
			actErr, retErr error
			act, ret       *registryv1.Agent
		)
		wg.Go(func() {
			resp, err := h.client.ActivateAgent(testkit.WithBearer(ctx, platformAdmin), &registryv1.ActivateAgentRequest{Name: a.GetName(), DecisionId: "d", ApprovedBy: "policy:auto"})
			act, actErr = resp.GetAgent(), err
		})
		wg.Go(func() {
			resp, err := h.client.RetireAgent(testkit.WithBearer(ctx, acmeAdmin), &registryv1.RetireAgentRequest{Name: a.GetName(), Reason: "cancelled"})
			ret, retErr = resp.GetAgent(), err
		})
		wg.Wait()
		if retErr != nil {
			t.Fatalf("round %d: retire failed: %v (retire is allowed from PENDING and ACTIVE)", round, retErr)
		}
		if ret.GetState() != registryv1.AgentState_AGENT_STATE_RETIRING {
			t.Fatalf("round %d: retire answered %s", round, ret.GetState())
		}
		evs, _, err := h.store.Load(ctx, "acme", registry.AggregateAgent, a.GetAgentId())
		if err != nil {
			t.Fatal(err)
		}
		types := make([]string, len(evs))
		for i, e := range evs {
			types[i] = e.Type
		}
		switch {
		case actErr == nil:
			if act.GetState() != registryv1.AgentState_AGENT_STATE_ACTIVE {
				t.Fatalf("round %d: activate answered %s", round, act.GetState())
			}
			if fmt.Sprint(types) != fmt.Sprint([]string{registry.EventAgentRegistered, registry.EventAgentActivated, registry.EventAgentRetirementRequested}) {
				t.Fatalf("round %d: activation succeeded but history is %v", round, types)
			}
		case status.Code(actErr) == codes.FailedPrecondition:
			if fmt.Sprint(types) != fmt.Sprint([]string{registry.EventAgentRegistered, registry.EventAgentRetirementRequested}) {
				t.Fatalf("round %d: activation refused but history is %v", round, types)
			}
		default:
			t.Fatalf("round %d: activate: %v", round, actErr)
		}
		got, err := h.client.GetAgent(testkit.WithBearer(ctx, acmeAdmin), &registryv1.GetAgentRequest{Name: a.GetName()})
		if err != nil || got.GetAgent().GetState() != registryv1.AgentState_AGENT_STATE_RETIRING || got.GetAgent().GetEtag() != fmt.Sprint(evs[len(evs)-1].Sequence) {
			t.Fatalf("round %d: read model %v %v", round, got, err)
		}
	}
}
