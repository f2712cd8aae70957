package discovery_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/agentid/agentid/pkg/authn"
	pkgdiscovery "github.com/agentid/agentid/pkg/discovery"
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/grpcx"
	"github.com/agentid/agentid/pkg/names"
	"github.com/agentid/agentid/pkg/testkit"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/registry/internal/discovery"
	"github.com/agentid/agentid/services/registry/internal/registry"
	"github.com/agentid/agentid/services/registry/internal/server"
)

// The test tokens.
const (
	acmeAdmin   = "acme-admin"   // tenant-admin of acme
	acmeOwner   = "acme-owner"   // owner team:support in acme
	acmeAnalyst = "acme-analyst" // analyst of acme
	acmeNoRole  = "acme-no-role" // acme token without roles
	globexAdmin = "globex-admin" // tenant-admin of globex
	sysAdmin    = "platform"     // platform-admin of the system tenant
)

func claims(tenant, sub string, roles ...string) *authn.Claims {
	return &authn.Claims{Subject: sub, ClientID: sub, Tenant: tenant, Roles: roles, Audience: []string{authn.APIAudience}}
}

var verifier = testkit.StaticVerifier(map[string]*authn.Claims{
	acmeAdmin:   claims("acme", "admin@acme.example", "tenant-admin"),
	acmeOwner:   claims("acme", "team:support", "owner"),
	acmeAnalyst: claims("acme", "analyst@acme.example", "analyst"),
	acmeNoRole:  claims("acme", "nobody@acme.example"),
	globexAdmin: claims("globex", "admin@globex.example", "tenant-admin"),
	sysAdmin:    claims(authn.SystemTenant, "lifecycle", "platform-admin"),
})

// harness is the RegistryService and DiscoveryService over bufconn on a real event store.
type harness struct {
	reg    registryv1.RegistryServiceClient
	disco  registryv1.DiscoveryServiceClient
	store  *eventstore.Store
	runner *eventstore.Runner
}

func newHarness(t *testing.T, now func() time.Time) *harness {
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
	clients := discovery.NewClientProjection()
	clientRunner := store.NewRunner(clients, eventstore.StreamCredentials, []string{eventstore.AggregateTypeSubject(eventstore.AggregateClient)})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, r := range append(svc.Runners(), clientRunner) {
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
	if err := clientRunner.Ready(rctx); err != nil {
		t.Fatal(err)
	}
	regSrv := server.New(svc)
	disco, err := discovery.New(discovery.Config{Registry: regSrv, Keys: svc.Agents().KeyHolder, Clients: clients, Now: now,
		Index: registry.PlatformIndex{Agents: svc.Agents(), Directories: svc.Directories()}})
	if err != nil {
		t.Fatal(err)
	}
	srv := grpcx.NewServer(grpcx.ServerConfig{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Verifier: verifier})
	registryv1.RegisterRegistryServiceServer(srv, regSrv)
	registryv1.RegisterDiscoveryServiceServer(srv, disco)
	conn := testkit.ServeGRPC(t, srv)
	h := &harness{reg: registryv1.NewRegistryServiceClient(conn), disco: registryv1.NewDiscoveryServiceClient(conn), store: store, runner: clientRunner}
	for _, tenant := range []string{"acme", "globex"} {
		if _, err := h.reg.CreateTenant(testkit.WithBearer(t.Context(), sysAdmin), &registryv1.CreateTenantRequest{TenantId: tenant, DisplayName: tenant}); err != nil {
			t.Fatalf("create tenant %s: %v", tenant, err)
		}
	}
	return h
}

func as(t *testing.T, token string) context.Context { return testkit.WithBearer(t.Context(), token) }

// newKey returns a P-256 key as PKCS#8 PEM and its public JWK Set.
func newKey(t *testing.T) (string, string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	set, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &k.PublicKey, KeyID: "k1", Algorithm: "ES256", Use: "sig"}}})
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})), string(set)
}

// register registers an agent of team:support in acme with request id rid and the given keys.
func (h *harness) register(t *testing.T, rid, jwks string) *registryv1.Agent {
	t.Helper()
	res, err := h.reg.RegisterAgent(as(t, acmeAdmin), &registryv1.RegisterAgentRequest{Parent: "tenants/acme", RequestId: rid, Agent: &registryv1.Agent{
		DisplayName: "Refund assistant", Owner: "team:support", Sponsor: "alice@acme.example",
		Purpose: "Drafts refund decisions.", Environment: registryv1.Environment_ENVIRONMENT_PROD,
		Autonomy: registryv1.Autonomy_AUTONOMY_ASSISTIVE, IdentityModel: registryv1.IdentityModel_IDENTITY_MODEL_DELEGATED,
		TrustBoundary: registryv1.TrustBoundary_TRUST_BOUNDARY_INTERNAL, DataSensitivity: registryv1.DataSensitivity_DATA_SENSITIVITY_CONFIDENTIAL,
		Scopes: []string{"order.read"}, PublicJwks: jwks,
	}})
	if err != nil {
		t.Fatalf("register: %v", err)
	}
	return res.GetAgent()
}

// createClient appends an issuer client.created event (as the issuer would) and waits until the
// discovery read model applied it.
func (h *harness) createClient(t *testing.T, tenant, clientID, agent string, disabled bool) {
	t.Helper()
	st := issuerv1.ClientState_CLIENT_STATE_ACTIVE
	if disabled {
		st = issuerv1.ClientState_CLIENT_STATE_DISABLED
	}
	name := "tenants/" + tenant + "/clients/" + clientID
	ev, err := h.store.Append(t.Context(), eventstore.Append{
		Tenant: tenant, AggregateType: eventstore.AggregateClient, AggregateID: clientID, ExpectedVersion: eventstore.AnyVersion,
		IdempotencyKey: "CreateClient/" + tenant + "/" + clientID, Type: "client.created", Subject: name,
		Data:     &issuerv1.ClientCreated{Client: &issuerv1.Client{Name: name, ClientId: clientID, Tenant: tenant, Agent: agent, State: st}},
		Metadata: eventstore.Metadata{Actor: eventstore.Actor{ID: "agentid/issuer", Kind: eventstore.ActorService}},
	})
	if err != nil {
		t.Fatalf("append client.created: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), testkit.DefaultWait)
	defer cancel()
	if err := h.runner.WaitFor(ctx, ev.Sequence); err != nil {
		t.Fatal(err)
	}
}

func wantCode(t *testing.T, err error, code codes.Code, msgPart string) {
	t.Helper()
	if got := status.Code(err); got != code {
		t.Fatalf("got %s (%v), want %s", got, err, code)
	}
	if msgPart != "" && !strings.Contains(status.Convert(err).Message(), msgPart) {
		t.Fatalf("message %q does not name %q", status.Convert(err).Message(), msgPart)
	}
}

func TestCodeScanResolvesRegisteredAgents(t *testing.T) {
	h := newHarness(t, nil)
	keyPEM, jwks := newKey(t)
	a := h.register(t, "r1", jwks)
	otherPEM, _ := newKey(t)
	h.createClient(t, "acme", "svc-legacy", a.GetName(), false) // an issuer client made for the agent

	dir := t.TempDir()
	files := map[string]string{
		"registered/config.yaml": "client_id: " + a.GetAgentId() + "\ntoken_url: https://idp.acme.net/oauth2/token\n",
		"registered/key.pem":     keyPEM,
		"legacy/.env":            "CLIENT_ID=svc-legacy\n",
		"ghost/.env":             "CLIENT_ID=ghost-client-7\nCLIENT_SECRET=cs_Gh0stSecretValue42\n",
		"ghost/key.pem":          otherPEM,
		"ghost/agent.yaml":       "agentId: " + names.DeriveAgentID("acme", "never-registered") + "\n",
	}
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	fs, _, err := pkgdiscovery.ScanCode(t.Context(), dir, pkgdiscovery.CodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	res, err := h.disco.ResolveIdentifiers(as(t, acmeAnalyst), &registryv1.ResolveIdentifiersRequest{Parent: "tenants/acme", Identifiers: pkgdiscovery.Identifiers(fs)})
	if err != nil {
		t.Fatal(err)
	}
	pkgdiscovery.ApplyResolutions(fs, res.GetResolutions())
	for _, f := range fs {
		wantOwned := strings.HasPrefix(f.GetFile(), "registered/") || strings.HasPrefix(f.GetFile(), "legacy/")
		if wantOwned != (f.GetOwnedBy() == a.GetName()) || wantOwned == f.GetGhost() {
			t.Errorf("%s %s: owned_by %q ghost %v, want owned %v", f.GetFile(), f.GetRuleId(), f.GetOwnedBy(), f.GetGhost(), wantOwned)
		}
	}
	if len(fs) != 9 { // the agent id as client_id is both a client id and an agent id reference
		t.Errorf("%d findings, want 9: %v", len(fs), fs)
	}
	// Another tenant's admin learns nothing about acme's agents.
	_, err = h.disco.ResolveIdentifiers(as(t, globexAdmin), &registryv1.ResolveIdentifiersRequest{Parent: "tenants/acme", Identifiers: pkgdiscovery.Identifiers(fs)})
	if status.Code(err) != codes.PermissionDenied && status.Code(err) != codes.NotFound {
		t.Errorf("cross-tenant resolve: %v, want PermissionDenied or NotFound", err)
	}
	res, err = h.disco.ResolveIdentifiers(as(t, globexAdmin), &registryv1.ResolveIdentifiersRequest{Parent: "tenants/globex",
		Identifiers: []*registryv1.Identifier{{Kind: registryv1.IdentifierKind_IDENTIFIER_KIND_AGENT_ID, Value: a.GetAgentId()}}})
	if err != nil || res.GetResolutions()[0].GetAgent() != "" {
		t.Errorf("acme's agent resolved in globex: %v %v", res, err)
	}
}

func TestResolveIdentifiersRefusesBadInput(t *testing.T) {
	h := newHarness(t, nil)
	id := func(k registryv1.IdentifierKind, v string) *registryv1.Identifier {
		return &registryv1.Identifier{Kind: k, Value: v}
	}
	many := make([]*registryv1.Identifier, pkgdiscovery.MaxIdentifiers+1)
	for i := range many {
		many[i] = id(registryv1.IdentifierKind_IDENTIFIER_KIND_CLIENT_ID, "c")
	}
	tests := []struct {
		name  string
		token string
		req   *registryv1.ResolveIdentifiersRequest
		code  codes.Code
		field string
	}{
		{"a raw secret instead of its fingerprint", acmeAdmin, &registryv1.ResolveIdentifiersRequest{Parent: "tenants/acme",
			Identifiers: []*registryv1.Identifier{id(registryv1.IdentifierKind_IDENTIFIER_KIND_SECRET_FINGERPRINT, "sk-proj-abcdefabcdefabcdef")}}, codes.InvalidArgument, "identifiers[0].value"},
		{"no kind", acmeAdmin, &registryv1.ResolveIdentifiersRequest{Parent: "tenants/acme",
			Identifiers: []*registryv1.Identifier{id(0, "x")}}, codes.InvalidArgument, "identifiers[0].kind"},
		{"empty value", acmeAdmin, &registryv1.ResolveIdentifiersRequest{Parent: "tenants/acme",
			Identifiers: []*registryv1.Identifier{id(registryv1.IdentifierKind_IDENTIFIER_KIND_CLIENT_ID, "")}}, codes.InvalidArgument, "identifiers[0].value"},
		{"too many", acmeAdmin, &registryv1.ResolveIdentifiersRequest{Parent: "tenants/acme", Identifiers: many}, codes.InvalidArgument, "identifiers"},
		{"bad parent", acmeAdmin, &registryv1.ResolveIdentifiersRequest{Parent: "acme"}, codes.InvalidArgument, "tenants/{tenant}"},
		{"no role", acmeNoRole, &registryv1.ResolveIdentifiersRequest{Parent: "tenants/acme"}, codes.PermissionDenied, ""},
		{"no token", "", &registryv1.ResolveIdentifiersRequest{Parent: "tenants/acme"}, codes.Unauthenticated, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := h.disco.ResolveIdentifiers(as(t, tt.token), tt.req)
			wantCode(t, err, tt.code, tt.field)
		})
	}
}

func TestScanLogs(t *testing.T) {
	h := newHarness(t, nil)
	_, jwks := newKey(t)
	a := h.register(t, "r1", jwks)
	apiKey := "key_live_Pl4ntedGatewayApiKey77"
	lines := []string{
		`10.0.0.12 - - [30/Nov/2026:08:15:02 +0000] "GET /v1/invoices?page=2 HTTP/1.1" 200 5123 "-" "python-requests/2.32.3" "` + a.GetAgentId() + `" "-"`,
		`10.0.0.31 - - [30/Nov/2026:08:16:40 +0000] "GET /v1/customers/42 HTTP/1.1" 200 901 "-" "curl/8.5.0" "shadow-bot" "-"`,
		`10.0.0.31 - - [30/Nov/2026:08:17:40 +0000] "GET /v1/customers/43 HTTP/1.1" 200 901 "-" "curl/8.5.0" "shadow-bot" "` + apiKey + `"`,
		`garbage`,
	}
	res, err := h.disco.ScanLogs(as(t, acmeAnalyst), &registryv1.ScanLogsRequest{Parent: "tenants/acme", Format: registryv1.LogFormat_LOG_FORMAT_NGINX, Lines: lines, SourceName: "gw-1"})
	if err != nil {
		t.Fatal(err)
	}
	if res.GetLinesParsed() != 3 || res.GetLinesMalformed() != 1 {
		t.Errorf("parsed %d malformed %d, want 3 and 1", res.GetLinesParsed(), res.GetLinesMalformed())
	}
	got := map[string]*registryv1.Finding{}
	for _, f := range res.GetFindings() {
		got[f.GetRedactedValue()] = f
	}
	if f := got[a.GetAgentId()]; f == nil || f.GetGhost() || f.GetOwnedBy() != a.GetName() {
		t.Errorf("the registered agent's client id: %v, want owned by %s", f, a.GetName())
	}
	if f := got["shadow-bot"]; f == nil || !f.GetGhost() || f.GetCount() != 2 {
		t.Errorf("shadow-bot: %v, want a ghost seen twice", f)
	}
	if f := got["key_…"]; f == nil || !f.GetGhost() || f.GetKind() != registryv1.FindingKind_FINDING_KIND_GATEWAY_API_KEY {
		t.Errorf("API key: %v, want a ghost API key finding", f)
	}
	b, err := protojson.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), apiKey[4:]) {
		t.Error("the response shows the API key beyond its prefix")
	}

	_, err = h.disco.ScanLogs(as(t, acmeAnalyst), &registryv1.ScanLogsRequest{Parent: "tenants/acme", Lines: lines})
	wantCode(t, err, codes.InvalidArgument, "format")
	_, err = h.disco.ScanLogs(as(t, acmeOwner), &registryv1.ScanLogsRequest{Parent: "tenants/acme", Format: registryv1.LogFormat_LOG_FORMAT_ENVOY})
	wantCode(t, err, codes.PermissionDenied, "")
	_, err = h.disco.ScanLogs(as(t, acmeAnalyst), &registryv1.ScanLogsRequest{Parent: "tenants/acme", Format: registryv1.LogFormat_LOG_FORMAT_ENVOY, Lines: make([]string, 10_001)})
	wantCode(t, err, codes.InvalidArgument, "lines")
}

func TestListPlatformFindings(t *testing.T) {
	later := time.Now().Add(100 * 24 * time.Hour)
	h := newHarness(t, func() time.Time { return later })
	_, jwks := newKey(t)
	a := h.register(t, "r1", jwks)
	h.createClient(t, "acme", a.GetAgentId(), a.GetName(), false) // the agent's own client: fine
	h.createClient(t, "acme", "legacy-bot", "", false)            // no registry entry: ghost
	h.createClient(t, "acme", "old-bot", "", true)                // disabled: not reported
	h.createClient(t, "globex", "globex-bot", "", false)          // another tenant's

	res, err := h.disco.ListPlatformFindings(as(t, acmeAnalyst), &registryv1.ListPlatformFindingsRequest{Parent: "tenants/acme", InactiveDays: 30})
	if err != nil {
		t.Fatal(err)
	}
	var rules []string
	for _, f := range res.GetFindings() {
		rules = append(rules, f.GetRuleId()+" "+f.GetRedactedValue())
	}
	want := []string{
		"platform.issuer-client-unregistered tenants/acme/clients/legacy-bot",
		"platform.inactive-agent " + a.GetName(),
	}
	if strings.Join(rules, "\n") != strings.Join(want, "\n") {
		t.Errorf("findings:\n%s\nwant:\n%s", strings.Join(rules, "\n"), strings.Join(want, "\n"))
	}
	// 200 days: nothing is inactive yet; one page of one finding.
	res, err = h.disco.ListPlatformFindings(as(t, acmeAnalyst), &registryv1.ListPlatformFindingsRequest{Parent: "tenants/acme", InactiveDays: 200, PageSize: 1})
	if err != nil || len(res.GetFindings()) != 1 || res.GetNextPageToken() != "" {
		t.Errorf("200 days: %v %v, want only the client", res, err)
	}
	_, err = h.disco.ListPlatformFindings(as(t, acmeAnalyst), &registryv1.ListPlatformFindingsRequest{Parent: "tenants/acme", InactiveDays: -1})
	wantCode(t, err, codes.InvalidArgument, "inactive_days")
	_, err = h.disco.ListPlatformFindings(as(t, acmeAnalyst), &registryv1.ListPlatformFindingsRequest{Parent: "tenants/acme", PageToken: "x"})
	wantCode(t, err, codes.InvalidArgument, "page_token")
	_, err = h.disco.ListPlatformFindings(as(t, globexAdmin), &registryv1.ListPlatformFindingsRequest{Parent: "tenants/acme"})
	if c := status.Code(err); c != codes.PermissionDenied && c != codes.NotFound {
		t.Errorf("cross-tenant list: %v", err)
	}
}

func TestAdoptFinding(t *testing.T) {
	h := newHarness(t, nil)
	_, jwks := newKey(t)
	owned := h.register(t, "r1", jwks)
	h.createClient(t, "acme", "legacy-bot", "", false)

	code := func(value string) *registryv1.Finding {
		fs := pkgdiscovery.ScanContent("svc/.env", []byte("CLIENT_ID="+value+"\n"))
		if len(fs) == 0 || fs[0].GetRuleId() != "oauth.client-id" {
			t.Fatalf("scan: %v", fs)
		}
		return fs[0]
	}
	ghost := code("ghost-client-7")
	template := &registryv1.Agent{PublicJwks: jwks, Environment: registryv1.Environment_ENVIRONMENT_STAGING, Scopes: []string{"ticket.read"}}
	adopt := func(token string, f *registryv1.Finding, id string) (*registryv1.AdoptFindingResponse, error) {
		return h.disco.AdoptFinding(as(t, token), &registryv1.AdoptFindingRequest{Parent: "tenants/acme", FindingId: id, Finding: f,
			Owner: "team:support", Sponsor: "alice@acme.example", Agent: template})
	}
	first, err := adopt(acmeAdmin, ghost, ghost.GetId())
	if err != nil {
		t.Fatal(err)
	}
	a := first.GetAgent()
	if a.GetState() != registryv1.AgentState_AGENT_STATE_PROPOSED || a.GetOwner() != "team:support" || a.GetSponsor() != "alice@acme.example" ||
		a.GetLabels()[discovery.LabelFinding] != ghost.GetId() || a.GetEnvironment() != registryv1.Environment_ENVIRONMENT_STAGING || a.GetDisplayName() != "ghost-client-7" {
		t.Errorf("adopted agent = %v", a)
	}
	again, err := adopt(acmeAdmin, ghost, ghost.GetId())
	if err != nil {
		t.Fatal(err)
	}
	if again.GetAgent().GetAgentId() != a.GetAgentId() {
		t.Errorf("adopting again made agent %s, want %s", again.GetAgent().GetAgentId(), a.GetAgentId())
	}
	list, err := h.reg.ListAgents(as(t, acmeAdmin), &registryv1.ListAgentsRequest{Parent: "tenants/acme"})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(list.GetAgents()); n != 2 {
		t.Errorf("%d agents after adopting twice, want 2 (the registered one and one adopted)", n)
	}

	// A platform finding is adopted by id alone.
	pf, err := h.disco.ListPlatformFindings(as(t, acmeAdmin), &registryv1.ListPlatformFindingsRequest{Parent: "tenants/acme"})
	if err != nil || len(pf.GetFindings()) != 1 {
		t.Fatalf("platform findings: %v %v", pf, err)
	}
	res, err := adopt(acmeAdmin, nil, pf.GetFindings()[0].GetId())
	if err != nil {
		t.Fatal(err)
	}
	if res.GetAgent().GetState() != registryv1.AgentState_AGENT_STATE_PROPOSED || res.GetAgent().GetDisplayName() != "legacy-bot" {
		t.Errorf("adopted platform finding = %v", res.GetAgent())
	}

	tampered := code("another-ghost")
	tampered.File = "elsewhere/.env"
	ownedFinding := code(owned.GetAgentId())
	ownedFinding.Ghost = true // the client's claim is not trusted
	tests := []struct {
		name  string
		token string
		f     *registryv1.Finding
		id    string
		code  codes.Code
		part  string
	}{
		{"an owned finding", acmeAdmin, ownedFinding, ownedFinding.GetId(), codes.FailedPrecondition, "owned by " + owned.GetName()},
		{"content that does not match the id", acmeAdmin, tampered, tampered.GetId(), codes.InvalidArgument, "finding.id"},
		{"ids that differ", acmeAdmin, ghost, "fnd-00000000000000000000", codes.InvalidArgument, "finding.id"},
		{"unknown platform finding", acmeAdmin, nil, "fnd-00000000000000000000", codes.NotFound, "fnd-00000000000000000000"},
		{"no finding id", acmeAdmin, ghost, "", codes.InvalidArgument, "finding_id"},
		{"an analyst", acmeAnalyst, ghost, ghost.GetId(), codes.PermissionDenied, ""},
		{"another tenant", globexAdmin, ghost, ghost.GetId(), codes.PermissionDenied, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := adopt(tt.token, tt.f, tt.id)
			if tt.code == codes.PermissionDenied && status.Code(err) == codes.NotFound {
				return
			}
			wantCode(t, err, tt.code, tt.part)
		})
	}
	_, err = h.disco.AdoptFinding(as(t, acmeAdmin), &registryv1.AdoptFindingRequest{Parent: "tenants/acme", FindingId: ghost.GetId(), Finding: ghost, Sponsor: "alice@acme.example"})
	wantCode(t, err, codes.InvalidArgument, "owner: is required")
	// An owner adopts only for itself (RegisterAgent's rule applies).
	other := code("x-ghost")
	_, err = h.disco.AdoptFinding(as(t, acmeOwner), &registryv1.AdoptFindingRequest{Parent: "tenants/acme", FindingId: other.GetId(), Finding: other,
		Owner: "team:payments", Sponsor: "alice@acme.example", Agent: template})
	wantCode(t, err, codes.PermissionDenied, "")
}
