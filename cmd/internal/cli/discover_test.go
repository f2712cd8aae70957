package cli_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"

	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// discoveryFake is a DiscoveryService that says owned only the client ids in owned, pages platform
// findings one per page and records adoptions.
type discoveryFake struct {
	registryv1.UnimplementedDiscoveryServiceServer
	owned    map[string]string
	platform []*registryv1.Finding

	mu       sync.Mutex
	resolved []*registryv1.Identifier
	adopts   []*registryv1.AdoptFindingRequest
}

func (f *discoveryFake) ResolveIdentifiers(_ context.Context, req *registryv1.ResolveIdentifiersRequest) (*registryv1.ResolveIdentifiersResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	res := &registryv1.ResolveIdentifiersResponse{}
	for _, id := range req.GetIdentifiers() {
		f.resolved = append(f.resolved, id)
		res.Resolutions = append(res.Resolutions, &registryv1.Resolution{Identifier: id, Agent: f.owned[id.GetValue()]})
	}
	return res, nil
}

func (f *discoveryFake) ListPlatformFindings(_ context.Context, req *registryv1.ListPlatformFindingsRequest) (*registryv1.ListPlatformFindingsResponse, error) {
	page, next := onePerPage(f.platform, req.GetPageToken())
	return &registryv1.ListPlatformFindingsResponse{Findings: page, NextPageToken: next}, nil
}

func (f *discoveryFake) AdoptFinding(_ context.Context, req *registryv1.AdoptFindingRequest) (*registryv1.AdoptFindingResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.adopts = append(f.adopts, req)
	return &registryv1.AdoptFindingResponse{Agent: &registryv1.Agent{Name: "tenants/default/agents/agt_new", State: registryv1.AgentState_AGENT_STATE_PROPOSED,
		Owner: req.GetOwner(), Sponsor: req.GetSponsor()}, Finding: req.GetFinding()}, nil
}

// plantedTree writes a small tree with a registered client id, a ghost client id and secrets.
func plantedTree(t *testing.T) (dir string, secrets []string) {
	t.Helper()
	dir = t.TempDir()
	secrets = []string{"AKIAQ3EGVXJ5PLANTD01", "ghp_Pl4ntedGitHubToken0123456789abcdefABCD", "cs_Pl4ntedClientSecret9876"}
	files := map[string]string{
		"svc/.env":        "CLIENT_ID=known-client\nAWS_ACCESS_KEY_ID=" + secrets[0] + "\n",
		"ghost/.env":      "OAUTH_CLIENT_ID=ghost-client-7\nOAUTH_CLIENT_SECRET=" + secrets[2] + "\nGITHUB_TOKEN=" + secrets[1] + "\n",
		"ghost/README.md": "nothing to see\n",
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
	return dir, secrets
}

func serveDiscovery(t *testing.T, dir string, f *discoveryFake) {
	t.Helper()
	serveServices(t, dir, func(s *grpc.Server) { registryv1.RegisterDiscoveryServiceServer(s, f) })
}

func TestDiscoverCodeNeverPrintsASecret(t *testing.T) {
	cfg := t.TempDir()
	fake := &discoveryFake{owned: map[string]string{"known-client": "tenants/default/agents/agt_known"}}
	serveDiscovery(t, cfg, fake)
	tree, secrets := plantedTree(t)
	for _, format := range []string{"table", "json", "sarif"} {
		t.Run(format, func(t *testing.T) {
			code, stdout, stderr := run(t, cfg, "discover", "code", tree, "-o", format)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			for _, s := range secrets {
				if strings.Contains(stdout, s[4:]) || strings.Contains(stderr, s[4:]) {
					t.Errorf("%s output shows secret %.4s… beyond its prefix", format, s)
				}
			}
			if !strings.Contains(stderr, "scanned 3 files") {
				t.Errorf("stderr %q does not summarise the scan", stderr)
			}
			switch format {
			case "table":
				if !strings.Contains(stdout, "tenants/default/agents/agt_known") || !strings.Contains(stdout, "ghost-client-7") || !strings.Contains(stdout, "(ghost)") {
					t.Errorf("table:\n%s", stdout)
				}
			case "json":
				var doc struct {
					Findings []map[string]any `json:"findings"`
				}
				if err := json.Unmarshal([]byte(stdout), &doc); err != nil {
					t.Fatal(err)
				}
				owned := 0
				for _, f := range doc.Findings {
					if f["ownedBy"] == "tenants/default/agents/agt_known" {
						owned++
						if f["file"] != "svc/.env" {
							t.Errorf("owned finding in %v", f["file"])
						}
					}
				}
				if len(doc.Findings) != 5 || owned != 2 {
					t.Errorf("%d findings, %d owned; want 5 and 2 (the svc/.env client id and its key)", len(doc.Findings), owned)
				}
			case "sarif":
				var log struct {
					Version string `json:"version"`
					Runs    []struct {
						Results []struct {
							RuleID string `json:"ruleId"`
						} `json:"results"`
					} `json:"runs"`
				}
				if err := json.Unmarshal([]byte(stdout), &log); err != nil {
					t.Fatal(err)
				}
				if log.Version != "2.1.0" || len(log.Runs) != 1 || len(log.Runs[0].Results) != 5 {
					t.Errorf("sarif: %+v", log)
				}
			}
		})
	}
	// Only identifiers travel: no secret reaches the server.
	fake.mu.Lock()
	defer fake.mu.Unlock()
	for _, id := range fake.resolved {
		for _, s := range secrets {
			if strings.Contains(id.GetValue(), s) {
				t.Errorf("secret %.4s… sent to the server as %v", s, id.GetKind())
			}
		}
	}
}

func TestDiscoverGhostsOnlyAndFailOnGhost(t *testing.T) {
	cfg := t.TempDir()
	serveDiscovery(t, cfg, &discoveryFake{owned: map[string]string{"known-client": "tenants/default/agents/agt_known"}})
	tree, _ := plantedTree(t)
	code, stdout, stderr := run(t, cfg, "discover", "code", tree, "--ghosts-only", "--fail-on-ghost")
	if code != 1 || !strings.Contains(stderr, "ghost findings present") {
		t.Fatalf("exit %d, stderr %q; want a failure for the ghosts", code, stderr)
	}
	if strings.Contains(stdout, "svc/.env") || !strings.Contains(stdout, "ghost/.env") {
		t.Errorf("--ghosts-only table:\n%s", stdout)
	}
}

func TestDiscoverOfflineAndBadInput(t *testing.T) {
	cfg := t.TempDir()
	tree, _ := plantedTree(t)
	code, stdout, stderr := run(t, cfg, "discover", "code", tree, "--offline", "-o", "json")
	if code != 0 || !strings.Contains(stdout, `"ghost": true`) {
		t.Fatalf("offline scan: exit %d, stderr %q", code, stderr)
	}
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"yaml output", []string{"discover", "code", tree, "-o", "yaml"}, `-o "yaml": want table, json or sarif`},
		{"missing directory", []string{"discover", "code", filepath.Join(tree, "none"), "--offline"}, "none"},
		{"log format", []string{"discover", "logs", "x.log", "--format", "apache"}, `--format "apache": want nginx or envoy`},
		{"sarif for logs", []string{"discover", "logs", "x.log", "--format", "nginx", "-o", "sarif"}, "-o sarif is for code findings"},
		{"sarif for platform", []string{"discover", "platform", "-o", "sarif"}, "-o sarif is for code findings"},
		{"adopt without owner", []string{"discover", "adopt", "fnd-1", "--sponsor", "a@b"}, "--owner is required"},
		{"adopt without sponsor", []string{"discover", "adopt", "fnd-1", "--owner", "team:x"}, "--sponsor is required"},
		{"adopt from a missing scan", []string{"discover", "adopt", "fnd-1", "--owner", "team:x", "--sponsor", "a@b", "--from", filepath.Join(tree, "none.json")}, "--from"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := run(t, cfg, tt.args...)
			if code != 1 || !strings.Contains(stderr, tt.wantErr) || stdout != "" {
				t.Fatalf("exit %d stdout %q stderr %q; want a failure saying %q", code, stdout, stderr, tt.wantErr)
			}
		})
	}
}

func TestDiscoverLogs(t *testing.T) {
	cfg := t.TempDir()
	fake := &discoveryFake{owned: map[string]string{"known-client": "tenants/default/agents/agt_known"}}
	serveDiscovery(t, cfg, fake)
	apiKey := "key_live_Pl4ntedGatewayApiKey77"
	log := filepath.Join(t.TempDir(), "access.log")
	lines := `10.0.0.1 - - [30/Nov/2026:08:15:02 +0000] "GET /v1/a HTTP/1.1" 200 1 "-" "ua" "known-client" "-"
10.0.0.2 - - [30/Nov/2026:08:15:03 +0000] "GET /v1/b HTTP/1.1" 200 1 "-" "ua" "shadow-bot" "` + apiKey + `"
broken line
`
	if err := os.WriteFile(log, []byte(lines), 0o600); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := run(t, cfg, "discover", "logs", log, "--format", "nginx", "-o", "json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !strings.Contains(stderr, "3 lines: 2 parsed, 1 malformed") {
		t.Errorf("stderr %q", stderr)
	}
	if strings.Contains(stdout, apiKey[4:]) {
		t.Error("output shows the API key")
	}
	var doc struct {
		Findings []map[string]any `json:"findings"`
	}
	if err := json.Unmarshal([]byte(stdout), &doc); err != nil {
		t.Fatal(err)
	}
	ghosts := 0
	for _, f := range doc.Findings {
		if f["ghost"] == true {
			ghosts++
		}
	}
	if len(doc.Findings) != 3 || ghosts != 2 {
		t.Errorf("%d findings, %d ghosts; want 3 and 2:\n%s", len(doc.Findings), ghosts, stdout)
	}
	fake.mu.Lock()
	defer fake.mu.Unlock()
	for _, id := range fake.resolved {
		if strings.Contains(id.GetValue(), apiKey) {
			t.Error("the API key was sent to the server")
		}
	}
}

func TestDiscoverPlatformAndAdopt(t *testing.T) {
	cfg := t.TempDir()
	fake := &discoveryFake{owned: map[string]string{"known-client": "tenants/default/agents/agt_known"}, platform: []*registryv1.Finding{
		{Id: "fnd-a", Source: registryv1.FindingSource_FINDING_SOURCE_PLATFORM, Kind: registryv1.FindingKind_FINDING_KIND_ISSUER_CLIENT, RuleId: "platform.issuer-client-unregistered", Ghost: true, RedactedValue: "tenants/default/clients/legacy"},
		{Id: "fnd-b", Source: registryv1.FindingSource_FINDING_SOURCE_PLATFORM, Kind: registryv1.FindingKind_FINDING_KIND_INACTIVE_AGENT, RuleId: "platform.inactive-agent", Agent: "tenants/default/agents/agt_old", OwnedBy: "tenants/default/agents/agt_old"},
	}}
	serveDiscovery(t, cfg, fake)
	code, stdout, stderr := run(t, cfg, "discover", "platform", "--inactive-days", "30")
	if code != 0 || !strings.Contains(stdout, "fnd-a") || !strings.Contains(stdout, "fnd-b") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}

	// A code finding is adopted from the scan's JSON output.
	tree, _ := plantedTree(t)
	code, scan, stderr := run(t, cfg, "discover", "code", tree, "-o", "json", "--ghosts-only")
	if code != 0 {
		t.Fatalf("scan: %s", stderr)
	}
	scanFile := filepath.Join(t.TempDir(), "scan.json")
	if err := os.WriteFile(scanFile, []byte(scan), 0o600); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Findings []struct {
			ID     string `json:"id"`
			RuleID string `json:"ruleId"`
		} `json:"findings"`
	}
	if err := json.Unmarshal([]byte(scan), &doc); err != nil {
		t.Fatal(err)
	}
	id := ""
	for _, f := range doc.Findings {
		if f.RuleID == "oauth.client-id" {
			id = f.ID
		}
	}
	jwks := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(jwks, []byte(`{"keys":[]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr = run(t, cfg, "discover", "adopt", id, "--from", scanFile, "--owner", "team:support", "--sponsor", "alice@corp.example",
		"--jwks-file", jwks, "--environment", "staging")
	if code != 0 || !strings.Contains(stdout, "adopted "+id+" as tenants/default/agents/agt_new (proposed)") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	code, _, stderr = run(t, cfg, "discover", "adopt", "fnd-a", "--owner", "team:support", "--sponsor", "alice@corp.example")
	if code != 0 {
		t.Fatalf("adopt platform finding: %s", stderr)
	}
	fake.mu.Lock()
	defer fake.mu.Unlock()
	if len(fake.adopts) != 2 {
		t.Fatalf("%d adoptions", len(fake.adopts))
	}
	a := fake.adopts[0]
	if a.GetFinding().GetId() != id || a.GetFinding().GetRedactedValue() != "ghost-client-7" || a.GetOwner() != "team:support" ||
		a.GetAgent().GetEnvironment() != registryv1.Environment_ENVIRONMENT_STAGING || a.GetAgent().GetPublicJwks() != `{"keys":[]}` || a.GetParent() != "tenants/default" {
		t.Errorf("adopt request = %v", a)
	}
	if b := fake.adopts[1]; b.GetFindingId() != "fnd-a" || b.GetFinding() != nil {
		t.Errorf("platform adopt request = %v", b)
	}
}
