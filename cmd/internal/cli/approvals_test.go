package cli_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/errs"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	lifecyclev1 "github.com/agentid/agentid/proto/gen/go/agentid/lifecycle/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// approvalServices fakes the registry, lifecycle and issuer services an approval goes through: runs
// maps an agent to its provisioning run, refuse (when set) is SubmitApproval's answer, and every
// token request and submission is remembered.
type approvalServices struct {
	registryv1.UnimplementedRegistryServiceServer
	lifecyclev1.UnimplementedLifecycleServiceServer
	issuerv1.UnimplementedIssuerServiceServer

	agents []*registryv1.Agent
	runs   map[string]*lifecyclev1.WorkflowStatus
	refuse error

	mu          sync.Mutex
	tokens      []*issuerv1.IssueApprovalTokenRequest
	submissions []*lifecyclev1.SubmitApprovalRequest
}

func (f *approvalServices) ListAgents(context.Context, *registryv1.ListAgentsRequest) (*registryv1.ListAgentsResponse, error) {
	return &registryv1.ListAgentsResponse{Agents: f.agents}, nil
}

func (f *approvalServices) GetAgentWorkflows(_ context.Context, req *lifecyclev1.GetAgentWorkflowsRequest) (*lifecyclev1.GetAgentWorkflowsResponse, error) {
	w, ok := f.runs[req.GetAgent()]
	if !ok {
		return nil, errs.NotFound("WORKFLOW_NOT_FOUND", "the agent has no provisioning workflow")
	}
	return &lifecyclev1.GetAgentWorkflowsResponse{Workflows: []*lifecyclev1.WorkflowStatus{w}}, nil
}

func (f *approvalServices) IssueApprovalToken(_ context.Context, req *issuerv1.IssueApprovalTokenRequest) (*issuerv1.IssueApprovalTokenResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tokens = append(f.tokens, req)
	return &issuerv1.IssueApprovalTokenResponse{
		Token: "token-for-" + req.GetStep() + "-" + req.GetDecision().String(), TokenId: "jti-1",
		ExpireTime: timestamppb.New(time.Now().Add(5 * time.Minute)),
	}, nil
}

func (f *approvalServices) SubmitApproval(_ context.Context, req *lifecyclev1.SubmitApprovalRequest) (*lifecyclev1.SubmitApprovalResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.submissions = append(f.submissions, req)
	if f.refuse != nil {
		return nil, f.refuse
	}
	w := f.runs[req.GetAgent()]
	return &lifecyclev1.SubmitApprovalResponse{Workflow: &lifecyclev1.WorkflowStatus{
		WorkflowId: w.GetWorkflowId(), Kind: w.GetKind(), Stage: "approval", WaitingFor: "approval by compliance", RunId: w.GetRunId(),
	}}, nil
}

func (f *approvalServices) sent() ([]*issuerv1.IssueApprovalTokenRequest, []*lifecyclev1.SubmitApprovalRequest) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*issuerv1.IssueApprovalTokenRequest(nil), f.tokens...), append([]*lifecyclev1.SubmitApprovalRequest(nil), f.submissions...)
}

const claimsBot = "tenants/default/agents/claims-bot"

// serveApprovals serves f for a session in dir: claims-bot waits for the security step of run run-1,
// faq-bot is PENDING before its policy decision, and old-bot is ACTIVE.
func serveApprovals(t *testing.T, dir string, f *approvalServices) {
	t.Helper()
	f.agents = []*registryv1.Agent{
		{Name: claimsBot, DisplayName: "Claims bot", Owner: "olivia", State: registryv1.AgentState_AGENT_STATE_PENDING},
		{Name: "tenants/default/agents/faq-bot", DisplayName: "FAQ bot", State: registryv1.AgentState_AGENT_STATE_PENDING},
		{Name: "tenants/default/agents/old-bot", DisplayName: "Old bot", State: registryv1.AgentState_AGENT_STATE_ACTIVE},
	}
	f.runs = map[string]*lifecyclev1.WorkflowStatus{
		claimsBot: {WorkflowId: "provision/default/claims-bot", Kind: lifecyclev1.WorkflowKind_WORKFLOW_KIND_PROVISION,
			Stage: "approval", WaitingFor: "approval by security", RunId: "run-1", ApprovalStep: "security"},
		"tenants/default/agents/faq-bot": {WorkflowId: "provision/default/faq-bot", Kind: lifecyclev1.WorkflowKind_WORKFLOW_KIND_PROVISION,
			Stage: "policy", RunId: "run-2"},
		"tenants/default/agents/old-bot": {WorkflowId: "provision/default/old-bot", Kind: lifecyclev1.WorkflowKind_WORKFLOW_KIND_PROVISION,
			Stage: "done", Completed: true, Result: "activated", RunId: "run-3"},
	}
	serveServices(t, dir, func(srv *grpc.Server) {
		registryv1.RegisterRegistryServiceServer(srv, f)
		lifecyclev1.RegisterLifecycleServiceServer(srv, f)
		issuerv1.RegisterIssuerServiceServer(srv, f)
	})
}

func TestApprovalDecisionsCarryTheCallersToken(t *testing.T) {
	approve, reject := issuerv1.ApprovalTokenDecision_APPROVAL_TOKEN_DECISION_APPROVE, issuerv1.ApprovalTokenDecision_APPROVAL_TOKEN_DECISION_REJECT
	tests := []struct {
		name         string
		args         []string
		wantDecision issuerv1.ApprovalTokenDecision
		wantComment  string
		wantRequest  string // request id, or its prefix when it ends with "-"
	}{
		{"approvals approve", []string{"approvals", "approve", "claims-bot", "--comment", "reviewed"}, approve, "reviewed", "approval-"},
		{"approvals approve with the step", []string{"approvals", "approve", claimsBot, "--step", "security", "--request-id", "req-7"}, approve, "", "req-7"},
		{"approvals reject", []string{"approvals", "reject", "claims-bot", "--comment", "writes to prod"}, reject, "writes to prod", "approval-"},
		{"agents approve (alias)", []string{"agents", "approve", "claims-bot"}, approve, "", "approval-"},
		{"agents approve --decision reject", []string{"agents", "approve", "claims-bot", "--decision", "reject", "--comment", "no"}, reject, "no", "approval-"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			f := &approvalServices{}
			serveApprovals(t, dir, f)
			code, stdout, stderr := run(t, dir, append(tt.args, "-o", "json")...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			tokens, subs := f.sent()
			if len(tokens) != 1 || tokens[0].GetAgent() != claimsBot || tokens[0].GetStep() != "security" ||
				tokens[0].GetWorkflowRunId() != "run-1" || tokens[0].GetDecision() != tt.wantDecision {
				t.Fatalf("token requests = %v, want one for the security step of run-1, %v", tokens, tt.wantDecision)
			}
			wantToken := "token-for-security-" + tt.wantDecision.String()
			if len(subs) != 1 || subs[0].GetApprovalToken() != wantToken || subs[0].GetAgent() != claimsBot || subs[0].GetComment() != tt.wantComment {
				t.Fatalf("submissions = %v, want one with %s", subs, wantToken)
			}
			if id := subs[0].GetRequestId(); !(id == tt.wantRequest || strings.HasSuffix(tt.wantRequest, "-") && strings.HasPrefix(id, tt.wantRequest) && len(id) > len(tt.wantRequest)) {
				t.Fatalf("request id %q, want %q", id, tt.wantRequest)
			}
			var w struct {
				WaitingFor string `json:"waitingFor"`
			}
			if err := json.Unmarshal([]byte(stdout), &w); err != nil || w.WaitingFor != "approval by compliance" {
				t.Fatalf("stdout %q: %v, want the run after the approval", stdout, err)
			}
		})
	}
}

func TestApprovalRefusalsSayWhy(t *testing.T) {
	refused := errs.FailedPrecondition("APPROVAL_REFUSED", "approval refused: rita registered the agent and cannot approve it")
	tests := []struct {
		name       string
		args       []string
		refuse     error
		wantErr    []string
		wantTokens int // token requests made
	}{
		{"the run refuses", []string{"approvals", "approve", "claims-bot"}, refused,
			[]string{"FailedPrecondition", "rita registered the agent and cannot approve it", "(APPROVAL_REFUSED)"}, 1},
		{"another step than the run waits for", []string{"approvals", "approve", "claims-bot", "--step", "owner"}, nil,
			[]string{"--step owner: the provisioning run of " + claimsBot + " waits for the security step"}, 0},
		{"a run before its approvals", []string{"approvals", "approve", "faq-bot"}, nil,
			[]string{"is not waiting for an approval (stage policy)"}, 0},
		{"a finished run", []string{"approvals", "reject", "old-bot", "--comment", "late"}, nil,
			[]string{"has finished (activated): there is nothing to approve"}, 0},
		{"a token for another step", []string{"approvals", "token", "claims-bot", "--step", "compliance"}, nil,
			[]string{"waits for the security step"}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			f := &approvalServices{refuse: tt.refuse}
			serveApprovals(t, dir, f)
			code, stdout, stderr := run(t, dir, tt.args...)
			if code != 1 || stdout != "" {
				t.Fatalf("exit %d, stdout %q: want 1 and nothing printed", code, stdout)
			}
			for _, want := range tt.wantErr {
				if !strings.Contains(stderr, want) {
					t.Fatalf("stderr %q does not say %q", stderr, want)
				}
			}
			if tokens, _ := f.sent(); len(tokens) != tt.wantTokens {
				t.Fatalf("token requests = %d, want %d", len(tokens), tt.wantTokens)
			}
		})
	}
}

func TestApprovalsTokenPrintsTheSignalInput(t *testing.T) {
	dir := t.TempDir()
	f := &approvalServices{}
	serveApprovals(t, dir, f)
	code, stdout, stderr := run(t, dir, "approvals", "token", "claims-bot", "--step", "security", "--decision", "reject", "--comment", "too broad")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var input map[string]string
	if err := json.Unmarshal([]byte(stdout), &input); err != nil {
		t.Fatalf("stdout %q is not the signal's JSON input: %v", stdout, err)
	}
	if len(input) != 2 || input["token"] != "token-for-security-APPROVAL_TOKEN_DECISION_REJECT" || input["comment"] != "too broad" {
		t.Fatalf("signal input = %v", input)
	}
	for _, want := range []string{`signal "approval"`, "provision/default/claims-bot", "run-1"} {
		if !strings.Contains(stderr, want) {
			t.Fatalf("stderr %q does not say %q", stderr, want)
		}
	}
	if _, subs := f.sent(); len(subs) != 0 {
		t.Fatalf("approvals token submitted %v: it only prints the token", subs)
	}
}

func TestApprovalsListShowsRunsWaitingForApproval(t *testing.T) {
	dir := t.TempDir()
	serveApprovals(t, dir, &approvalServices{})
	code, stdout, stderr := run(t, dir, "approvals", "list", "-o", "json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var got []map[string]string
	if err := json.Unmarshal([]byte(stdout), &got); err != nil {
		t.Fatalf("stdout %q: %v", stdout, err)
	}
	if len(got) != 1 || got[0]["agent"] != claimsBot || got[0]["runId"] != "run-1" || got[0]["step"] != "security" ||
		got[0]["workflowId"] != "provision/default/claims-bot" || got[0]["owner"] != "olivia" {
		t.Fatalf("approvals list = %v, want claims-bot at the security step of run-1 only", got)
	}
	code, stdout, stderr = run(t, dir, "approvals", "list")
	if code != 0 || !strings.Contains(stdout, "STEP") || !strings.Contains(stdout, "security") || strings.Contains(stdout, "faq-bot") {
		t.Fatalf("table: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}
