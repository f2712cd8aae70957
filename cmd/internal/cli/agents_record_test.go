package cli_test

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// recordRegistry answers the record's RPCs and remembers the update requests.
type recordRegistry struct {
	registryv1.UnimplementedRegistryServiceServer
	mu        sync.Mutex
	updates   []*registryv1.UpdateAgentRequest
	registers []*registryv1.RegisterAgentRequest
}

const recordAgent = "tenants/default/agents/agt_01jrecord0000000000000000"

func (r *recordRegistry) RegisterAgent(_ context.Context, req *registryv1.RegisterAgentRequest) (*registryv1.RegisterAgentResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.registers = append(r.registers, req)
	return &registryv1.RegisterAgentResponse{Agent: req.GetAgent()}, nil
}

func (r *recordRegistry) GetAgent(_ context.Context, req *registryv1.GetAgentRequest) (*registryv1.GetAgentResponse, error) {
	return &registryv1.GetAgentResponse{Agent: &registryv1.Agent{Name: req.GetName(), Etag: "41"}}, nil
}

func (r *recordRegistry) UpdateAgent(_ context.Context, req *registryv1.UpdateAgentRequest) (*registryv1.UpdateAgentResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.updates = append(r.updates, req)
	if req.GetEtag() != "41" {
		return nil, status.Error(codes.Aborted, "the agent has changed since it was read (etag "+req.GetEtag()+", current 41); re-read and retry")
	}
	return &registryv1.UpdateAgentResponse{Agent: req.GetAgent(), ChangedFields: req.GetUpdateMask().GetPaths()}, nil
}

func (r *recordRegistry) GetAgentHistory(_ context.Context, req *registryv1.GetAgentHistoryRequest) (*registryv1.GetAgentHistoryResponse, error) {
	e := func(v uint64, typ, summary string) *registryv1.AgentHistoryEntry {
		return &registryv1.AgentHistoryEntry{Version: v, EventType: typ, Time: timestamppb.Now(), Actor: "bob@corp.example", RequestId: "r", Summary: summary}
	}
	if req.GetPageToken() == "" {
		return &registryv1.GetAgentHistoryResponse{Entries: []*registryv1.AgentHistoryEntry{e(1, "agent.registered", "registered")}, NextPageToken: "p2"}, nil
	}
	return &registryv1.GetAgentHistoryResponse{Entries: []*registryv1.AgentHistoryEntry{e(2, "agent.updated", "updated purpose")}}, nil
}

func (r *recordRegistry) SubmitAgent(_ context.Context, req *registryv1.SubmitAgentRequest) (*registryv1.SubmitAgentResponse, error) {
	return &registryv1.SubmitAgentResponse{Agent: &registryv1.Agent{Name: req.GetName(), State: registryv1.AgentState_AGENT_STATE_PENDING}}, nil
}

func TestAgentsUpdateSendsTheGivenFieldsOnly(t *testing.T) {
	dir := t.TempDir()
	reg := &recordRegistry{}
	serveRegistry(t, dir, reg)
	code, _, stderr := run(t, dir, "agents", "update", recordAgent, "--purpose", "answers billing questions",
		"--label", "team=support", "--scope", "faq.read", "--scope", "ticket.search", "--reason", "review", "--validate-only")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !strings.Contains(stderr, "current etag 41") || !strings.Contains(stderr, "would change") {
		t.Fatalf("stderr %q", stderr)
	}
	reg.mu.Lock()
	req := reg.updates[0]
	reg.mu.Unlock()
	paths := slices.Sorted(slices.Values(req.GetUpdateMask().GetPaths()))
	if !slices.Equal(paths, []string{"labels", "purpose", "scopes"}) || !req.GetValidateOnly() || req.GetReason() != "review" ||
		req.GetAgent().GetLabels()["team"] != "support" || req.GetAgent().GetName() != recordAgent || req.GetRequestId() == "" {
		t.Fatalf("request %v", req)
	}
	code, _, stderr = run(t, dir, "agents", "update", recordAgent, "--etag", "7", "--purpose", "x")
	if code == 0 || !strings.Contains(stderr, "etag 7, current 41") {
		t.Fatalf("stale etag: exit %d, %q", code, stderr)
	}
	if code, _, stderr = run(t, dir, "agents", "update", recordAgent); code == 0 || !strings.Contains(stderr, "nothing to update") {
		t.Fatalf("no flags: exit %d, %q", code, stderr)
	}
	if code, _, stderr = run(t, dir, "agents", "update", recordAgent, "--label", "novalue"); code == 0 || !strings.Contains(stderr, "want key=value") {
		t.Fatalf("bad label: exit %d, %q", code, stderr)
	}
}

func TestAgentsHistoryReadsEveryPage(t *testing.T) {
	dir := t.TempDir()
	serveRegistry(t, dir, &recordRegistry{})
	code, stdout, stderr := run(t, dir, "agents", "history", recordAgent)
	if code != 0 || !strings.Contains(stdout, "agent.registered") || !strings.Contains(stdout, "updated purpose") || !strings.Contains(stdout, "VERSION") {
		t.Fatalf("exit %d\n%s\n%s", code, stdout, stderr)
	}
	code, stdout, _ = run(t, dir, "agents", "submit", recordAgent, "-o", "json")
	if code != 0 || !strings.Contains(stdout, "AGENT_STATE_PENDING") {
		t.Fatalf("submit: exit %d %s", code, stdout)
	}
}

func TestAgentsRegisterRecordFlags(t *testing.T) {
	dir := t.TempDir()
	reg := &recordRegistry{}
	serveRegistry(t, dir, reg)
	args := append(slices.Clone(registerArgs), "--function", "customer-support", "--role", "kb-reader", "--label", "team=support",
		"--dependency", "queue=nats://nats.internal/tickets,ticket queue", "--credential-type", "private-key-jwt-dpop", "--proposed", "--validate-only")
	code, _, stderr := run(t, dir, args...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	reg.mu.Lock()
	req := reg.registers[0]
	reg.mu.Unlock()
	a := req.GetAgent()
	if !req.GetProposed() || !req.GetValidateOnly() || a.GetFunction() != "customer-support" || !slices.Equal(a.GetRoles(), []string{"kb-reader"}) ||
		a.GetLabels()["team"] != "support" || a.GetDependencies()[0].GetDescription() != "ticket queue" || a.GetPublicJwks() == "" ||
		a.GetCredentialType() != registryv1.CredentialType_CREDENTIAL_TYPE_PRIVATE_KEY_JWT_DPOP || a.GetSponsor() != "alice@corp.example" {
		t.Fatalf("request %v", req)
	}
	code, _, stderr = run(t, dir, append(slices.Clone(registerArgs), "--validate-only", "--key-out", dir+"/k.json")...)
	if code == 0 || !strings.Contains(stderr, "omit --key-out") {
		t.Fatalf("validate-only with --key-out: exit %d %q", code, stderr)
	}
}
