package cli_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"

	"github.com/agentid/agentid/pkg/errs"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	lifecyclev1 "github.com/agentid/agentid/proto/gen/go/agentid/lifecycle/v1"
)

// incidentServices fakes LifecycleService's incident RPCs and the issuer's approval tokens: incidents
// are listed one per page; refuse (when set) is DecideIncident's answer; every request is remembered.
type incidentServices struct {
	lifecyclev1.UnimplementedLifecycleServiceServer
	issuerv1.UnimplementedIssuerServiceServer

	incidents []*lifecyclev1.Incident
	refuse    error

	mu        sync.Mutex
	lists     []*lifecyclev1.ListIncidentsRequest
	tokens    []*issuerv1.IssueApprovalTokenRequest
	decisions []*lifecyclev1.DecideIncidentRequest
}

func (f *incidentServices) ListIncidents(_ context.Context, req *lifecyclev1.ListIncidentsRequest) (*lifecyclev1.ListIncidentsResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lists = append(f.lists, req)
	var matching []*lifecyclev1.Incident
	for _, inc := range f.incidents {
		if !req.GetOpenOnly() || !inc.GetWorkflow().GetCompleted() {
			matching = append(matching, inc)
		}
	}
	page, next := onePerPage(matching, req.GetPageToken())
	return &lifecyclev1.ListIncidentsResponse{Incidents: page, NextPageToken: next}, nil
}

func (f *incidentServices) IssueApprovalToken(_ context.Context, req *issuerv1.IssueApprovalTokenRequest) (*issuerv1.IssueApprovalTokenResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tokens = append(f.tokens, req)
	return fakeApprovalToken(req), nil
}

func (f *incidentServices) DecideIncident(_ context.Context, req *lifecyclev1.DecideIncidentRequest) (*lifecyclev1.DecideIncidentResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.decisions = append(f.decisions, req)
	if f.refuse != nil {
		return nil, f.refuse
	}
	outcome := "retired"
	if req.GetDecision() == lifecyclev1.IncidentDecision_INCIDENT_DECISION_RESTORE {
		outcome = "restored"
	}
	return &lifecyclev1.DecideIncidentResponse{Incident: &lifecyclev1.Incident{
		Workflow: &lifecyclev1.WorkflowStatus{WorkflowId: "incident/default/" + req.GetAlertId(), Stage: "done", Completed: true},
		Agent:    req.GetAgent(), Alert: "tenants/default/alerts/" + req.GetAlertId(), Outcome: outcome,
	}}, nil
}

func (f *incidentServices) sent() ([]*lifecyclev1.ListIncidentsRequest, []*issuerv1.IssueApprovalTokenRequest, []*lifecyclev1.DecideIncidentRequest) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*lifecyclev1.ListIncidentsRequest(nil), f.lists...), append([]*issuerv1.IssueApprovalTokenRequest(nil), f.tokens...),
		append([]*lifecyclev1.DecideIncidentRequest(nil), f.decisions...)
}

const etlBot = "tenants/default/agents/etl-bot"

// serveIncidents serves f for a session in dir: etl-bot's incident of alert a1 waits for the sponsor
// in run run-7; faq-bot's incident of alert a2 is closed (notified).
func serveIncidents(t *testing.T, dir string, f *incidentServices) {
	t.Helper()
	f.incidents = []*lifecyclev1.Incident{
		{Workflow: &lifecyclev1.WorkflowStatus{WorkflowId: "incident/default/a1", Kind: lifecyclev1.WorkflowKind_WORKFLOW_KIND_INCIDENT, RunId: "run-7", Stage: "decide"},
			Agent: etlBot, Alert: "tenants/default/alerts/a1", Detector: "bulk_export", Severity: "critical",
			Actions: []string{"suspended", "tokens revoked", "notified owner", "escalated to sponsor"}, Decider: "sponsor"},
		{Workflow: &lifecyclev1.WorkflowStatus{WorkflowId: "incident/default/a2", Kind: lifecyclev1.WorkflowKind_WORKFLOW_KIND_INCIDENT, RunId: "run-8", Stage: "done", Completed: true},
			Agent: "tenants/default/agents/faq-bot", Alert: "tenants/default/alerts/a2", Detector: "off_hours", Severity: "medium",
			Actions: []string{"notified owner"}, Outcome: "notified"},
	}
	serveServices(t, dir, func(srv *grpc.Server) {
		lifecyclev1.RegisterLifecycleServiceServer(srv, f)
		issuerv1.RegisterIssuerServiceServer(srv, f)
	})
}

func TestIncidentsListPagesAndFilters(t *testing.T) {
	dir := t.TempDir()
	f := &incidentServices{}
	serveIncidents(t, dir, f)

	code, stdout, stderr := run(t, dir, "incidents", "list", "-o", "json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var got []map[string]any
	if err := json.Unmarshal([]byte(stdout), &got); err != nil || len(got) != 2 || got[0]["alert"] != "tenants/default/alerts/a1" || got[1]["outcome"] != "notified" {
		t.Fatalf("output %s (%v): want both pages' incidents", stdout, err)
	}
	lists, _, _ := f.sent()
	if len(lists) != 2 || lists[0].GetParent() != "tenants/default" || lists[0].GetOpenOnly() || lists[1].GetPageToken() != "1" {
		t.Fatalf("requests = %v, want two pages of tenant default, all incidents", lists)
	}

	code, stdout, stderr = run(t, dir, "incidents", "list", "--open")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	lists, _, _ = f.sent()
	if !lists[len(lists)-1].GetOpenOnly() {
		t.Fatal("--open did not ask for open incidents only")
	}
	for _, want := range []string{"DECIDER", etlBot, "a1", "bulk_export", "critical", "sponsor", "suspended; tokens revoked"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("table does not show %q:\n%s", want, stdout)
		}
	}
	if strings.Contains(stdout, "faq-bot") {
		t.Errorf("--open shows the closed incident:\n%s", stdout)
	}

	code, stdout, _ = run(t, dir, "incidents", "list", "--limit", "1", "-o", "json")
	if err := json.Unmarshal([]byte(stdout), &got); code != 0 || err != nil || len(got) != 1 {
		t.Fatalf("--limit 1: exit %d, %s", code, stdout)
	}
}

func TestIncidentsDecideCarriesTheCallersToken(t *testing.T) {
	restore, retire := issuerv1.ApprovalTokenDecision_APPROVAL_TOKEN_DECISION_RESTORE, issuerv1.ApprovalTokenDecision_APPROVAL_TOKEN_DECISION_RETIRE
	tests := []struct {
		name         string
		args         []string
		wantToken    issuerv1.ApprovalTokenDecision
		wantDecision lifecyclev1.IncidentDecision
		wantComment  string
		wantRequest  string // request id, or its prefix when it ends with "-"
		wantOut      string
	}{
		{"restore by bare id", []string{"incidents", "decide", "etl-bot", "a1", "restore", "--comment", "quarterly report"}, restore,
			lifecyclev1.IncidentDecision_INCIDENT_DECISION_RESTORE, "quarterly report", "incident-", "incident a1 of " + etlBot + ": restored (decided by you at the sponsor step)"},
		{"retire by names", []string{"incidents", "decide", etlBot, "tenants/default/alerts/a1", "RETIRE", "--request-id", "req-9"}, retire,
			lifecyclev1.IncidentDecision_INCIDENT_DECISION_RETIRE, "", "req-9", "retired"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			f := &incidentServices{}
			serveIncidents(t, dir, f)
			code, stdout, stderr := run(t, dir, tt.args...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			if !strings.Contains(stdout, tt.wantOut) {
				t.Fatalf("output %q, want %q", stdout, tt.wantOut)
			}
			_, tokens, decisions := f.sent()
			if len(tokens) != 1 || tokens[0].GetAgent() != etlBot || tokens[0].GetStep() != "sponsor" || tokens[0].GetWorkflowRunId() != "run-7" ||
				tokens[0].GetDecision() != tt.wantToken {
				t.Fatalf("token requests = %v, want one for run-7, the sponsor step and %s", tokens, tt.wantToken)
			}
			if len(decisions) != 1 {
				t.Fatalf("%d decisions sent, want 1", len(decisions))
			}
			d := decisions[0]
			rid := d.GetRequestId()
			ridOK := rid == tt.wantRequest || (strings.HasSuffix(tt.wantRequest, "-") && strings.HasPrefix(rid, tt.wantRequest) && len(rid) > len(tt.wantRequest))
			if d.GetAgent() != etlBot || d.GetAlertId() != "a1" || d.GetDecision() != tt.wantDecision || d.GetComment() != tt.wantComment || !ridOK ||
				d.GetApprovalToken() != "token-for-sponsor-"+tt.wantToken.String() {
				t.Fatalf("decision = %v", d)
			}
		})
	}
}

func TestIncidentsDecideRefusals(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		refuse     error
		wantErr    string
		wantCalls  bool // the token and the decision were sent
		wantListed bool
	}{
		{"not a decision", []string{"incidents", "decide", "etl-bot", "a1", "approve"}, nil, `decision "approve": want restore or retire`, false, false},
		{"too few arguments", []string{"incidents", "decide", "etl-bot", "a1"}, nil, "accepts 3 arg", false, false},
		{"bad agent", []string{"incidents", "decide", "a/b", "a1", "restore"}, nil, "want tenants/{tenant}/agents/{agent} or a bare agent id", false, false},
		{"no open incident for the alert", []string{"incidents", "decide", "etl-bot", "a9", "restore"}, nil, etlBot + " has no open incident for alert a9", false, true},
		{"a closed incident", []string{"incidents", "decide", "faq-bot", "a2", "retire"}, nil, "has no open incident for alert a2", false, true},
		{"the run refuses", []string{"incidents", "decide", "etl-bot", "a1", "restore"},
			errs.FailedPrecondition("APPROVAL_REFUSED", "approval refused: the sponsor step of an incident is decided by [the agent's sponsor security-approver]"),
			"the sponsor step of an incident is decided by", true, true},
		{"limit", []string{"incidents", "list", "--limit", "0"}, nil, "--limit 0: want a positive number of incidents", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			f := &incidentServices{refuse: tt.refuse}
			serveIncidents(t, dir, f)
			code, stdout, stderr := run(t, dir, tt.args...)
			if code != 1 || !strings.Contains(stderr, tt.wantErr) || stdout != "" {
				t.Fatalf("exit %d, stdout %q, stderr %q; want a failure saying %q", code, stdout, stderr, tt.wantErr)
			}
			lists, tokens, decisions := f.sent()
			if tt.wantListed != (len(lists) > 0) {
				t.Errorf("listed incidents: %v, want %v", len(lists) > 0, tt.wantListed)
			}
			if tt.wantCalls != (len(tokens) == 1 && len(decisions) == 1) || (!tt.wantCalls && len(tokens)+len(decisions) > 0) {
				t.Errorf("token requests %v, decisions %v; want sent=%v", tokens, decisions, tt.wantCalls)
			}
		})
	}
}
