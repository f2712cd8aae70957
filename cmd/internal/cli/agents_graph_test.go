package cli_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

const graphAgent = "tenants/default/agents/agt_graph"

// graphServices answers GetAgent, GetClient and GetAgentUsage for agt_graph; clientErr and usageErr,
// when set, are returned instead.
type graphServices struct {
	registryv1.UnimplementedRegistryServiceServer
	issuerv1.UnimplementedIssuerServiceServer
	monitorv1.UnimplementedMonitorServiceServer
	mu         sync.Mutex
	clientErr  error
	usageErr   error
	usageAsked []*monitorv1.GetAgentUsageRequest
	clientsOf  []string
}

func (s *graphServices) GetAgent(_ context.Context, req *registryv1.GetAgentRequest) (*registryv1.GetAgentResponse, error) {
	if req.GetName() != graphAgent {
		return nil, status.Error(codes.NotFound, "agent "+req.GetName()+" not found")
	}
	return &registryv1.GetAgentResponse{Agent: &registryv1.Agent{
		Name: graphAgent, AgentId: "agt_graph", Tenant: "default", DisplayName: "Graph bot", Owner: "team:ops", Sponsor: "bob@corp.example",
		Scopes: []string{"tickets.read"}, Roles: []string{"triage"}, State: registryv1.AgentState_AGENT_STATE_ACTIVE,
		Dependencies: []*registryv1.Dependency{{Kind: "queue", Uri: "nats://mq/tickets"}, {Kind: "storage", Uri: "s3://bucket/graph/"}},
	}}, nil
}

func (s *graphServices) GetClient(_ context.Context, req *issuerv1.GetClientRequest) (*issuerv1.GetClientResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clientsOf = append(s.clientsOf, req.GetName())
	if s.clientErr != nil {
		return nil, s.clientErr
	}
	return &issuerv1.GetClientResponse{Client: &issuerv1.Client{Name: req.GetName(), ClientId: "agt_graph", State: issuerv1.ClientState_CLIENT_STATE_ACTIVE,
		Scopes: []string{"tickets.read"}}}, nil
}

func (s *graphServices) GetAgentUsage(_ context.Context, req *monitorv1.GetAgentUsageRequest) (*monitorv1.GetAgentUsageResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.usageAsked = append(s.usageAsked, req)
	if s.usageErr != nil {
		return nil, s.usageErr
	}
	return &monitorv1.GetAgentUsageResponse{Events: 9, Resources: []*monitorv1.UsageCount{{Value: "https://tickets.example/api", Count: 9, LastSeen: timestamppb.Now()}}}, nil
}

func serveGraph(t *testing.T, dir string, s *graphServices) {
	t.Helper()
	serveServices(t, dir, func(srv *grpc.Server) {
		registryv1.RegisterRegistryServiceServer(srv, s)
		issuerv1.RegisterIssuerServiceServer(srv, s)
		monitorv1.RegisterMonitorServiceServer(srv, s)
	})
}

func TestAgentsGraphComposesRegistryIssuerAndMonitor(t *testing.T) {
	dir := t.TempDir()
	s := &graphServices{}
	serveGraph(t, dir, s)

	code, stdout, stderr := run(t, dir, "agents", "graph", "agt_graph", "--since", "7d")
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	var got struct {
		Schema  string   `json:"schema"`
		Sources []string `json:"sources"`
		Nodes   []struct {
			ID   string `json:"id"`
			Kind string `json:"kind"`
		} `json:"nodes"`
		Notes []string `json:"notes"`
	}
	if err := json.Unmarshal([]byte(stdout), &got); err != nil {
		t.Fatalf("stdout is not JSON (%v): %s", err, stdout)
	}
	kinds := map[string]bool{}
	for _, n := range got.Nodes {
		kinds[n.Kind] = true
	}
	for _, k := range []string{"agent", "owner", "sponsor", "client", "scope", "role", "dependency", "resource_seen"} {
		if !kinds[k] {
			t.Errorf("no %s node in %s", k, stdout)
		}
	}
	if got.Schema != "agentid.dev/asset-graph/v1" || strings.Join(got.Sources, ",") != "registry,issuer,monitor" || len(got.Notes) != 0 || stderr != "" {
		t.Fatalf("schema %q, sources %v, notes %v, stderr %q", got.Schema, got.Sources, got.Notes, stderr)
	}
	if len(s.clientsOf) != 1 || s.clientsOf[0] != "tenants/default/clients/agt_graph" {
		t.Fatalf("GetClient asked for %v", s.clientsOf)
	}
	u := s.usageAsked[0]
	if window := u.GetEndTime().AsTime().Sub(u.GetStartTime().AsTime()); u.GetAgent() != graphAgent || window < 7*24*time.Hour-time.Hour || window > 7*24*time.Hour+time.Hour {
		t.Fatalf("GetAgentUsage %v: want the agent over 7 days", u)
	}
}

func TestAgentsGraphFormatsAndDegradation(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		clientErr  error
		usageErr   error
		wantPrefix string
		wantOut    []string
		notOut     []string
		wantStderr string
		wantUsage  bool
	}{
		{"mermaid", []string{"--format", "mermaid"}, nil, nil, "flowchart LR\n",
			[]string{`"dependency: queue: nats://mq/tickets"`, `"client: agt_graph"`, "resource_seen"}, nil, "", true},
		{"dot without usage", []string{"--format", "dot", "--no-usage"}, nil, nil, "digraph asset_graph {\n",
			[]string{`label="dependency: storage: s3://bucket/graph/"`}, []string{"resource_seen"}, "", false},
		{"issuer refuses: client omitted with a note", []string{"--format", "mermaid"}, status.Error(codes.PermissionDenied, "GetClient needs tenant-admin"), nil, "flowchart LR\n",
			[]string{"owner: team:ops"}, []string{"client: agt_graph"}, "note: issuer client omitted: PermissionDenied: GetClient needs tenant-admin\n", true},
		{"monitor down: usage omitted with a note", []string{"--format", "dot"}, nil, status.Error(codes.Unavailable, "monitor restarting"), "digraph",
			[]string{"client: agt_graph"}, []string{"resource_seen"}, "note: resources seen omitted: Unavailable: monitor restarting\n", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s := &graphServices{clientErr: tt.clientErr, usageErr: tt.usageErr}
			serveGraph(t, dir, s)
			code, stdout, stderr := run(t, dir, append([]string{"agents", "graph", graphAgent}, tt.args...)...)
			if code != 0 {
				t.Fatalf("exit %d, stderr %q", code, stderr)
			}
			if !strings.HasPrefix(stdout, tt.wantPrefix) || stderr != tt.wantStderr {
				t.Fatalf("stdout %q, stderr %q", stdout, stderr)
			}
			for _, w := range tt.wantOut {
				if !strings.Contains(stdout, w) {
					t.Errorf("output does not hold %q:\n%s", w, stdout)
				}
			}
			for _, w := range tt.notOut {
				if strings.Contains(stdout, w) {
					t.Errorf("output holds %q:\n%s", w, stdout)
				}
			}
			if asked := len(s.usageAsked) > 0; asked != tt.wantUsage {
				t.Errorf("monitor asked %v, want %v", asked, tt.wantUsage)
			}
		})
	}
}

func TestAgentsGraphRefusals(t *testing.T) {
	dir := t.TempDir()
	serveGraph(t, dir, &graphServices{})
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"unknown format", []string{"agents", "graph", "agt_graph", "--format", "svg"}, `--format "svg": want json, dot or mermaid`},
		{"bad window", []string{"agents", "graph", "agt_graph", "--since", "soon"}, `--since "soon": want an RFC 3339 time`},
		{"unknown agent", []string{"agents", "graph", "agt_nobody"}, "NotFound: agent tenants/default/agents/agt_nobody not found"},
		{"no agent", []string{"agents", "graph"}, "accepts 1 arg"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := run(t, dir, tt.args...)
			if code != 1 || stdout != "" || !strings.Contains(stderr, tt.wantErr) {
				t.Fatalf("exit %d, stdout %q, stderr %q: want %q", code, stdout, stderr, tt.wantErr)
			}
		})
	}
}
