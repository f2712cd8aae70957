package cli_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/oauth2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/agentid/agentid/cmd/internal/manifest"
	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/grpcx"
	"github.com/agentid/agentid/pkg/testkit"
	policyv1 "github.com/agentid/agentid/proto/gen/go/agentid/policy/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	policyapp "github.com/agentid/agentid/services/policy/app"
	registryapp "github.com/agentid/agentid/services/registry/app"
)

// aacKey is a public JWK Set the test manifests register (its private half was thrown away).
const aacKey = `{"keys":[{"use":"sig","kty":"EC","kid":"k1","crv":"P-256","alg":"ES256","x":"hCSaRSVl16UrX7T6l3mjJ9O5DBsopdqi_P9PyrtlL5Q","y":"Nueb0XNyurJjvm4X0mAVuT14qb4R7UcRvVM-zvM76kM"}]}`

// aacManifest is a manifest named NAME in environment ENV with the given extra spec lines.
func aacManifest(name, env, sensitivity, extra string) string {
	return `apiVersion: agentid.dev/v1
kind: Agent
metadata:
  name: ` + name + `
  labels:
    team: support
spec:
  displayName: ` + name + `
  owner: team:support
  sponsor: alice@corp.example
  purpose: Answers questions.
  environment: ` + env + `
  autonomy: assistive
  identityModel: autonomous
  trustBoundary: internal
  dataSensitivity: ` + sensitivity + `
  function: customer-support
  scopes: [faq.read]
  publicKeys:
    jwksFile: key.json
  expires: 30d
` + extra
}

// aacPlatform is the real registry and policy service in-process on one gRPC server, with a
// session whose identity is the pipeline's (tenant-admin of acme).
type aacPlatform struct {
	configDir string
	reg       registryv1.RegistryServiceClient
	ctx       context.Context
}

func startAACPlatform(t *testing.T) *aacPlatform {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	n := testkit.StartNATS(t)
	store := eventstore.New(n.JetStream(t), eventstore.WithSource("agentid/registry"), eventstore.WithLogger(log))
	if err := store.EnsureStreams(t.Context()); err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// The registry asks the policy service (on the same server) to admit escalating updates, as a
	// platform service identity.
	policyConn, err := grpcx.Dial(lis.Addr().String(), authn.PerRPCCredentials(oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "registry-token"}), false))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = policyConn.Close() })
	reg, err := registryapp.New(registryapp.Config{}, registryapp.Deps{Store: store, Logger: log, Policy: policyv1.NewPolicyServiceClient(policyConn)})
	if err != nil {
		t.Fatal(err)
	}
	pol, err := policyapp.New(policyapp.Config{}, policyapp.Deps{Store: store, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, task := range reg.Tasks() {
		wg.Go(func() { _ = task(runCtx) })
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
	rctx, rcancel := context.WithTimeout(t.Context(), testkit.DefaultWait)
	defer rcancel()
	if err := reg.Ready(rctx); err != nil {
		t.Fatal(err)
	}
	if err := reg.EnsureTenant(t.Context(), "acme", "Acme"); err != nil {
		t.Fatal(err)
	}

	srv := grpcx.NewServer(grpcx.ServerConfig{
		Logger: log,
		Verifier: testkit.StaticVerifier(map[string]*authn.Claims{
			"test-token":     {Subject: "ci-pipeline", ClientID: "ci-pipeline", Tenant: "acme", Roles: []string{"tenant-admin"}},
			"auditor-token":  {Subject: "ci-plan", ClientID: "ci-plan", Tenant: "acme", Roles: []string{"auditor"}},
			"registry-token": {Subject: "registry", ClientID: "registry", Tenant: authn.SystemTenant, Roles: []string{string(authn.RoleRegistryService)}},
		}),
	})
	reg.RegisterGRPC(srv)
	pol.RegisterGRPC(srv)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	tokens := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"access_token":"test-token","token_type":"Bearer","expires_in":300}`))
	}))
	t.Cleanup(tokens.Close)

	dir := t.TempDir()
	cred, err := authn.NewCredential("acme", "ci-pipeline", tokens.URL+"/t/acme")
	if err != nil {
		t.Fatal(err)
	}
	credPath := filepath.Join(dir, "pipeline.json")
	if err := authn.WriteCredentialFile(credPath, cred); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(map[string]string{"server": lis.Addr().String(), "tenant": "acme", "credential_file": credPath})
	if err := os.WriteFile(filepath.Join(dir, "session.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &aacPlatform{configDir: dir, reg: registryv1.NewRegistryServiceClient(conn), ctx: testkit.WithBearer(t.Context(), "test-token")}
}

// get returns the agent of manifest name in acme, nil when there is none.
func (p *aacPlatform) get(t *testing.T, name string) *registryv1.Agent {
	t.Helper()
	res, err := p.reg.GetAgent(p.ctx, &registryv1.GetAgentRequest{Name: manifest.AgentName("acme", name)})
	if status.Code(err) == codes.NotFound {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return res.GetAgent()
}

// planJSON is the part of `plan -o json` the tests read.
type planJSON struct {
	Set     string `json:"set"`
	Entries []struct {
		Action  string `json:"action"`
		Name    string `json:"name"`
		Agent   string `json:"agent"`
		Changes []struct {
			Path string `json:"path"`
		} `json:"changes"`
		Server *struct {
			OK       bool   `json:"ok"`
			Error    string `json:"error"`
			RiskTier string `json:"riskTier"`
		} `json:"server"`
		Policy *struct {
			Outcome string   `json:"outcome"`
			Reasons []string `json:"reasons"`
		} `json:"policy"`
		Result string `json:"result"`
	} `json:"entries"`
	Summary struct {
		Create, Update, Noop, Prune, Refused, Failed int
	} `json:"summary"`
}

func parsePlan(t *testing.T, out string) planJSON {
	t.Helper()
	var p planJSON
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		t.Fatalf("plan output is not JSON: %v\n%s", err, out)
	}
	return p
}

// actions renders a plan's entries as "name=action" in order.
func (p planJSON) actions() string {
	var out []string
	for _, e := range p.Entries {
		out = append(out, e.Name+"="+e.Action)
	}
	return strings.Join(out, ",")
}

func writeManifests(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if content == "" {
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestAgentsAsCodePlanApplyPrune(t *testing.T) {
	p := startAACPlatform(t)
	dir := filepath.Join(t.TempDir(), "support")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeManifests(t, dir, map[string]string{
		"key.json":    aacKey,
		"faq.yaml":    aacManifest("faq-dev", "dev", "internal", "") + "---\n" + aacManifest("faq-prod", "prod", "pii", ""),
		"triage.yaml": aacManifest("triage-dev", "dev", "internal", ""),
	})

	// plan: three creations, decided by the registry and the policy, nothing written.
	code, out, errOut := run(t, p.configDir, "plan", "-f", dir, "-o", "json")
	if code != 0 {
		t.Fatalf("plan: exit %d, stderr %q, stdout %s", code, errOut, out)
	}
	plan := parsePlan(t, out)
	if plan.Set != "support" || plan.actions() != "faq-dev=create,faq-prod=create,triage-dev=create" {
		t.Fatalf("plan set %q actions %s", plan.Set, plan.actions())
	}
	for _, e := range plan.Entries {
		if e.Server == nil || !e.Server.OK || e.Server.RiskTier == "" || e.Policy == nil || e.Policy.Outcome == "" {
			t.Fatalf("entry %s has no registry or policy verdict: %+v %+v", e.Name, e.Server, e.Policy)
		}
	}
	if o := plan.Entries[1].Policy.Outcome; o != "require_approval" {
		t.Errorf("policy on a production PII agent: %s, want require_approval", o)
	}
	for _, name := range []string{"faq-dev", "faq-prod", "triage-dev"} {
		if p.get(t, name) != nil {
			t.Fatalf("plan registered %s", name)
		}
	}

	// apply creates them, managed and labelled, with the pipeline as the actor.
	code, out, errOut = run(t, p.configDir, "apply", "-f", dir)
	if code != 0 || !strings.Contains(out, "applied set support: 3 created, 0 updated, 0 unchanged, 0 retired, 0 failed") {
		t.Fatalf("apply: exit %d, stdout %s, stderr %q", code, out, errOut)
	}
	faq := p.get(t, "faq-dev")
	if faq == nil || faq.GetState() != registryv1.AgentState_AGENT_STATE_PENDING || faq.GetAgentId() != manifest.AgentID("acme", "faq-dev") {
		t.Fatalf("faq-dev after apply: %v", faq)
	}
	for k, v := range map[string]string{"team": "support", manifest.LabelManagedBy: "agentctl", manifest.LabelSource: "support", manifest.LabelName: "faq-dev"} {
		if faq.GetLabels()[k] != v {
			t.Errorf("label %s=%q, want %q", k, faq.GetLabels()[k], v)
		}
	}
	hist, err := p.reg.GetAgentHistory(p.ctx, &registryv1.GetAgentHistoryRequest{Name: faq.GetName()})
	if err != nil {
		t.Fatal(err)
	}
	if len(hist.GetEntries()) != 1 || hist.GetEntries()[0].GetActor() != "ci-pipeline" || hist.GetEntries()[0].GetRequestId() != manifest.CreateRequestID("faq-dev") {
		t.Fatalf("history of faq-dev: %v", hist.GetEntries())
	}
	etags := map[string]string{}
	for _, name := range []string{"faq-dev", "faq-prod", "triage-dev"} {
		etags[name] = p.get(t, name).GetEtag()
	}

	// A second apply changes nothing; plan shows no change.
	code, out, errOut = run(t, p.configDir, "apply", "-f", dir)
	if code != 0 || !strings.Contains(out, "applied set support: 0 created, 0 updated, 3 unchanged, 0 retired, 0 failed") {
		t.Fatalf("second apply: exit %d, stdout %s, stderr %q", code, out, errOut)
	}
	for name, etag := range etags {
		if got := p.get(t, name).GetEtag(); got != etag {
			t.Errorf("the second apply changed %s (etag %s → %s)", name, etag, got)
		}
	}
	code, out, _ = run(t, p.configDir, "plan", "-f", dir, "-o", "json")
	if plan = parsePlan(t, out); code != 0 || plan.actions() != "faq-dev=no-op,faq-prod=no-op,triage-dev=no-op" {
		t.Fatalf("plan after apply: exit %d, %s", code, plan.actions())
	}

	// A changed manifest is an update of exactly the changed fields, recorded with the reason.
	writeManifests(t, dir, map[string]string{"triage.yaml": strings.Replace(strings.Replace(aacManifest("triage-dev", "dev", "internal", ""),
		"scopes: [faq.read]", "scopes: [faq.read, tickets.read]", 1), "Answers questions.", "Sorts incoming tickets.", 1)})
	code, out, _ = run(t, p.configDir, "plan", "-f", dir, "-o", "json")
	plan = parsePlan(t, out)
	if code != 0 || plan.actions() != "faq-dev=no-op,faq-prod=no-op,triage-dev=update" {
		t.Fatalf("plan of a change: exit %d, %s", code, plan.actions())
	}
	if e := plan.Entries[2]; len(e.Changes) != 2 || e.Changes[0].Path != "purpose" || e.Changes[1].Path != "scopes" || !e.Server.OK {
		t.Fatalf("update entry %+v", e)
	}
	code, out, errOut = run(t, p.configDir, "apply", "-f", dir, "--reason", "commit 1234abc")
	if code != 0 || !strings.Contains(out, "0 created, 1 updated, 2 unchanged") {
		t.Fatalf("apply of a change: exit %d, stdout %s, stderr %q", code, out, errOut)
	}
	triage := p.get(t, "triage-dev")
	if triage.GetPurpose() != "Sorts incoming tickets." || strings.Join(triage.GetScopes(), ",") != "faq.read,tickets.read" {
		t.Fatalf("triage-dev after the update: %v", triage)
	}
	hist, err = p.reg.GetAgentHistory(p.ctx, &registryv1.GetAgentHistoryRequest{Name: triage.GetName()})
	if err != nil {
		t.Fatal(err)
	}
	last := hist.GetEntries()[len(hist.GetEntries())-1]
	if last.GetEventType() != "agent.updated" || last.GetActor() != "ci-pipeline" || strings.Join(last.GetChangedFields(), ",") != "purpose,scopes" {
		t.Fatalf("last history entry of triage-dev: %v", last)
	}
	if code, out, _ := run(t, p.configDir, "apply", "-f", dir); code != 0 || !strings.Contains(out, "0 created, 0 updated, 3 unchanged") {
		t.Fatalf("apply after the update: exit %d, %s", code, out)
	}

	// A manifest removed: plan --prune shows it, apply without --prune leaves it, apply --prune retires it.
	writeManifests(t, dir, map[string]string{"triage.yaml": ""})
	code, out, _ = run(t, p.configDir, "plan", "-f", dir, "--prune", "-o", "json")
	if plan = parsePlan(t, out); code != 0 || plan.actions() != "faq-dev=no-op,faq-prod=no-op,triage-dev=prune" {
		t.Fatalf("plan --prune: exit %d, %s", code, plan.actions())
	}
	if code, _, _ := run(t, p.configDir, "apply", "-f", dir); code != 0 || p.get(t, "triage-dev").GetState() != registryv1.AgentState_AGENT_STATE_PENDING {
		t.Fatalf("apply without --prune: exit %d, state %s", code, p.get(t, "triage-dev").GetState())
	}
	code, out, errOut = run(t, p.configDir, "apply", "-f", dir, "--prune")
	if code != 0 || !strings.Contains(out, "0 created, 0 updated, 2 unchanged, 1 retired, 0 failed") {
		t.Fatalf("apply --prune: exit %d, stdout %s, stderr %q", code, out, errOut)
	}
	if st := p.get(t, "triage-dev").GetState(); st != registryv1.AgentState_AGENT_STATE_RETIRING && st != registryv1.AgentState_AGENT_STATE_RETIRED {
		t.Fatalf("pruned agent is %s", st)
	}
	if code, out, _ := run(t, p.configDir, "apply", "-f", dir, "--prune"); code != 0 || !strings.Contains(out, "0 created, 0 updated, 2 unchanged, 0 retired, 0 failed") {
		t.Fatalf("apply --prune again: exit %d, %s", code, out)
	}
	// Declaring the retired agent again is refused: it is not brought back.
	writeManifests(t, dir, map[string]string{"triage.yaml": aacManifest("triage-dev", "dev", "internal", "")})
	code, out, _ = run(t, p.configDir, "plan", "-f", dir)
	if code != 2 || !strings.Contains(out, "is not brought back") {
		t.Fatalf("plan of a retired agent: exit %d, %s", code, out)
	}
}

func TestAgentsAsCodePolicyDenyBlocksPlanAndApply(t *testing.T) {
	p := startAACPlatform(t)
	dir := filepath.Join(t.TempDir(), "payments")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// An autonomous, public-facing production agent touching PHI: the registry accepts the record,
	// the default admission policy denies it.
	denied := strings.NewReplacer("autonomy: assistive", "autonomy: autonomous", "trustBoundary: internal", "trustBoundary: public").
		Replace(aacManifest("claims-bot", "prod", "phi", ""))
	writeManifests(t, dir, map[string]string{"key.json": aacKey, "a.yaml": aacManifest("ok-bot", "dev", "internal", ""), "b.yaml": denied})

	code, out, errOut := run(t, p.configDir, "plan", "-f", dir)
	if code != 2 {
		t.Fatalf("plan with a denied agent: exit %d, want 2; stdout %s, stderr %q", code, out, errOut)
	}
	if !strings.Contains(out, "policy: deny") || !strings.Contains(out, "may not handle PHI data") || !strings.Contains(errOut, "1 change(s) of set payments would be refused") {
		t.Fatalf("plan output does not show the denial:\n%s\n%s", out, errOut)
	}
	code, out, _ = run(t, p.configDir, "plan", "-f", dir, "-o", "json")
	plan := parsePlan(t, out)
	if code != 2 || plan.Summary.Refused != 1 || plan.Entries[1].Policy.Outcome != "deny" || !plan.Entries[1].Server.OK {
		t.Fatalf("plan -o json: exit %d %+v", code, plan)
	}
	// apply refuses the whole set: not even the allowed agent is registered.
	code, _, errOut = run(t, p.configDir, "apply", "-f", dir)
	if code != 1 || !strings.Contains(errOut, "nothing was applied") {
		t.Fatalf("apply with a denied agent: exit %d, stderr %q", code, errOut)
	}
	if p.get(t, "ok-bot") != nil || p.get(t, "claims-bot") != nil {
		t.Fatal("apply registered agents of a refused set")
	}
}

func TestAgentsAsCodeRegistryRefusalBlocksPlanAndApply(t *testing.T) {
	p := startAACPlatform(t)
	dir := filepath.Join(t.TempDir(), "hooks")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// A dependency URI carrying a credential: valid offline, refused by the registry.
	leaky := aacManifest("hook-bot", "dev", "internal", "  dependencies:\n    - kind: webhook\n      uri: https://hooks.example/in?token=s3cr3t\n")
	writeManifests(t, dir, map[string]string{"key.json": aacKey, "a.yaml": aacManifest("ok-bot", "dev", "internal", ""), "b.yaml": leaky})
	if code, _, errOut := run(t, p.configDir, "validate", "-f", dir); code != 0 {
		t.Fatalf("validate: exit %d %s", code, errOut)
	}
	code, out, errOut := run(t, p.configDir, "plan", "-f", dir)
	if code != 2 || !strings.Contains(out, "registry: InvalidArgument: agent.dependencies") {
		t.Fatalf("plan with a refused agent: exit %d\n%s\n%s", code, out, errOut)
	}
	code, _, errOut = run(t, p.configDir, "apply", "-f", dir)
	if code != 1 || !strings.Contains(errOut, "nothing was applied") || p.get(t, "ok-bot") != nil {
		t.Fatalf("apply with a refused agent: exit %d %s", code, errOut)
	}
}

func TestAgentsAsCodeRefusesAgentsItDoesNotManage(t *testing.T) {
	p := startAACPlatform(t)
	dir := filepath.Join(t.TempDir(), "support")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeManifests(t, dir, map[string]string{"key.json": aacKey, "a.yaml": aacManifest("faq-dev", "dev", "internal", "")})
	// Another set applies the same name first.
	if code, out, errOut := run(t, p.configDir, "apply", "-f", dir, "--set", "other"); code != 0 {
		t.Fatalf("apply --set other: exit %d %s %s", code, out, errOut)
	}
	code, out, _ := run(t, p.configDir, "plan", "-f", dir)
	if code != 2 || !strings.Contains(out, `managed by the manifest set "other", not "support"`) {
		t.Fatalf("plan over another set's agent: exit %d\n%s", code, out)
	}
	code, _, errOut := run(t, p.configDir, "apply", "-f", dir, "--prune")
	if code != 1 || !strings.Contains(errOut, "nothing was applied") {
		t.Fatalf("apply over another set's agent: exit %d %s", code, errOut)
	}
	if a := p.get(t, "faq-dev"); a.GetLabels()[manifest.LabelSource] != "other" {
		t.Fatalf("the other set's agent was taken over: %v", a.GetLabels())
	}
}
