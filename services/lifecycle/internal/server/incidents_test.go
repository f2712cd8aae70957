package server_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/grpcx"
	"github.com/agentid/agentid/pkg/testkit"
	lifecyclev1 "github.com/agentid/agentid/proto/gen/go/agentid/lifecycle/v1"
	"github.com/agentid/agentid/services/lifecycle/internal/lifecycle"
	"github.com/agentid/agentid/services/lifecycle/internal/server"
)

// callers maps test bearer tokens to principals.
var callers = map[string]*authn.Claims{
	"owner":    {Subject: "olivia@corp", Tenant: "acme", Roles: []string{"owner"}},
	"approver": {Subject: "alice@corp", Tenant: "acme", Roles: []string{"approver"}},
	"security": {Subject: "sam@corp", Tenant: "acme", Roles: []string{"security-approver"}},
	"admin":    {Subject: "carol@corp", Tenant: "acme", Roles: []string{"tenant-admin"}},
	"auditor":  {Subject: "audrey@corp", Tenant: "acme", Roles: []string{"auditor"}},
	"analyst":  {Subject: "ann@corp", Tenant: "acme", Roles: []string{"analyst"}},
	"other":    {Subject: "oscar@other", Tenant: "other", Roles: []string{"tenant-admin", "security-approver"}},
}

// incidentsCore records what the server asks of the incident core.
type incidentsCore struct {
	mu        sync.Mutex
	lists     []string // tenant/open
	decisions []recordedDecision
}

type recordedDecision struct {
	caller string
	d      lifecycle.Decision
}

func (c *incidentsCore) List(_ context.Context, tenant string, openOnly bool, pageSize int, pageToken string) ([]lifecycle.Incident, string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	open := "all"
	if openOnly {
		open = "open"
	}
	c.lists = append(c.lists, tenant+"/"+open)
	return []lifecycle.Incident{{
		Run:   lifecycle.Run{WorkflowID: "incident/" + tenant + "/a1", RunID: "r1", Kind: lifecycle.KindIncident, Stage: "decide"},
		Agent: "tenants/" + tenant + "/agents/ag1", Alert: "tenants/" + tenant + "/alerts/a1", Detector: "bulk_export", Severity: "critical",
		Actions: []string{"suspended", "tokens revoked"}, Decider: "owner",
	}}, "next", nil
}

func (c *incidentsCore) Decide(_ context.Context, p *authn.Principal, d lifecycle.Decision) (lifecycle.Incident, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.decisions = append(c.decisions, recordedDecision{caller: p.ID, d: d})
	outcome := "retired"
	if d.Restore {
		outcome = "restored"
	}
	return lifecycle.Incident{Run: lifecycle.Run{WorkflowID: "incident/acme/" + d.AlertID, Stage: "done", Completed: true},
		Agent: d.Agent, Outcome: outcome}, nil
}

func (c *incidentsCore) calls() ([]string, []recordedDecision) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.lists...), append([]recordedDecision(nil), c.decisions...)
}

func serve(t *testing.T, incidents server.Incidents) lifecyclev1.LifecycleServiceClient {
	t.Helper()
	s := server.New(nil)
	if incidents != nil {
		s = s.WithIncidents(incidents)
	}
	gs := grpcx.NewServer(grpcx.ServerConfig{Logger: slog.New(slog.DiscardHandler), Verifier: testkit.StaticVerifier(callers)})
	lifecyclev1.RegisterLifecycleServiceServer(gs, s)
	return lifecyclev1.NewLifecycleServiceClient(testkit.ServeGRPC(t, gs))
}

func TestListIncidentsAuthorization(t *testing.T) {
	core := &incidentsCore{}
	api := serve(t, core)
	tests := []struct {
		name      string
		bearer    string
		req       *lifecyclev1.ListIncidentsRequest
		wantCode  codes.Code
		wantField string
		wantCall  string
	}{
		{"no bearer token", "", &lifecyclev1.ListIncidentsRequest{Parent: "tenants/acme"}, codes.Unauthenticated, "", ""},
		{"another tenant's caller", "other", &lifecyclev1.ListIncidentsRequest{Parent: "tenants/acme"}, codes.NotFound, "", ""},
		{"bad parent", "auditor", &lifecyclev1.ListIncidentsRequest{Parent: "acme"}, codes.InvalidArgument, "parent", ""},
		{"bad tenant id", "auditor", &lifecyclev1.ListIncidentsRequest{Parent: "tenants/ACME!"}, codes.InvalidArgument, "parent", ""},
		{"auditor reads all", "auditor", &lifecyclev1.ListIncidentsRequest{Parent: "tenants/acme"}, codes.OK, "", "acme/all"},
		{"analyst reads open ones", "analyst", &lifecyclev1.ListIncidentsRequest{Parent: "tenants/acme", OpenOnly: true}, codes.OK, "", "acme/open"},
		{"owner reads", "owner", &lifecyclev1.ListIncidentsRequest{Parent: "tenants/acme"}, codes.OK, "", "acme/all"},
		{"the other tenant reads its own", "other", &lifecyclev1.ListIncidentsRequest{Parent: "tenants/other"}, codes.OK, "", "other/all"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before, _ := core.calls()
			resp, err := api.ListIncidents(testkit.WithBearer(t.Context(), tt.bearer), tt.req)
			if status.Code(err) != tt.wantCode {
				t.Fatalf("ListIncidents: %v, want %v", err, tt.wantCode)
			}
			if tt.wantField != "" && errs.FromStatus(err).Field != tt.wantField {
				t.Fatalf("field = %q, want %q", errs.FromStatus(err).Field, tt.wantField)
			}
			after, _ := core.calls()
			if tt.wantCall == "" {
				if len(after) != len(before) {
					t.Fatalf("a refused call reached the core: %v", after[len(before):])
				}
				return
			}
			if len(after) != len(before)+1 || after[len(after)-1] != tt.wantCall {
				t.Fatalf("core calls = %v, want %s", after[len(before):], tt.wantCall)
			}
			inc := resp.GetIncidents()
			if len(inc) != 1 || resp.GetNextPageToken() != "next" || inc[0].GetWorkflow().GetKind() != lifecyclev1.WorkflowKind_WORKFLOW_KIND_INCIDENT ||
				inc[0].GetDecider() != "owner" || inc[0].GetSeverity() != "critical" || len(inc[0].GetActions()) != 2 {
				t.Fatalf("response = %v", resp)
			}
		})
	}
}

func TestDecideIncidentAuthorization(t *testing.T) {
	core := &incidentsCore{}
	api := serve(t, core)
	const agent = "tenants/acme/agents/ag1"
	req := func(d lifecyclev1.IncidentDecision) *lifecyclev1.DecideIncidentRequest {
		return &lifecyclev1.DecideIncidentRequest{Agent: agent, AlertId: "a1", Decision: d, Comment: "checked", ApprovalToken: "tok", RequestId: "req-1"}
	}
	restore, retire := lifecyclev1.IncidentDecision_INCIDENT_DECISION_RESTORE, lifecyclev1.IncidentDecision_INCIDENT_DECISION_RETIRE
	tests := []struct {
		name        string
		bearer      string
		req         *lifecyclev1.DecideIncidentRequest
		wantCode    codes.Code
		wantField   string
		wantCaller  string
		wantRestore bool
	}{
		{"no bearer token", "", req(restore), codes.Unauthenticated, "", "", false},
		{"another tenant's caller", "other", req(restore), codes.NotFound, "", "", false},
		{"auditor may not decide", "auditor", req(restore), codes.PermissionDenied, "", "", false},
		{"analyst may not decide", "analyst", req(retire), codes.PermissionDenied, "", "", false},
		{"bad agent name", "owner", &lifecyclev1.DecideIncidentRequest{Agent: "agents/ag1", AlertId: "a1", Decision: restore}, codes.InvalidArgument, "agent", "", false},
		{"no decision", "owner", req(lifecyclev1.IncidentDecision_INCIDENT_DECISION_UNSPECIFIED), codes.InvalidArgument, "decision", "", false},
		{"owner restores", "owner", req(restore), codes.OK, "", "olivia@corp", true},
		{"approver retires", "approver", req(retire), codes.OK, "", "alice@corp", false},
		{"security-approver restores", "security", req(restore), codes.OK, "", "sam@corp", true},
		{"tenant-admin retires", "admin", req(retire), codes.OK, "", "carol@corp", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, before := core.calls()
			resp, err := api.DecideIncident(testkit.WithBearer(t.Context(), tt.bearer), tt.req)
			if status.Code(err) != tt.wantCode {
				t.Fatalf("DecideIncident: %v, want %v", err, tt.wantCode)
			}
			if tt.wantField != "" && errs.FromStatus(err).Field != tt.wantField {
				t.Fatalf("field = %q, want %q", errs.FromStatus(err).Field, tt.wantField)
			}
			_, after := core.calls()
			if tt.wantCaller == "" {
				if len(after) != len(before) {
					t.Fatalf("a refused call reached the core: %+v", after[len(before):])
				}
				return
			}
			if len(after) != len(before)+1 {
				t.Fatalf("core decisions = %+v, want one more", after)
			}
			got := after[len(after)-1]
			want := lifecycle.Decision{Agent: agent, AlertID: "a1", Restore: tt.wantRestore, Comment: "checked", Token: "tok", RequestID: "req-1"}
			if got.caller != tt.wantCaller || got.d != want {
				t.Fatalf("core got %+v from %s, want %+v from %s (the caller from the verified bearer token)", got.d, got.caller, want, tt.wantCaller)
			}
			if resp.GetIncident().GetAgent() != agent || resp.GetIncident().GetWorkflow().GetKind() != lifecyclev1.WorkflowKind_WORKFLOW_KIND_INCIDENT {
				t.Fatalf("response = %v", resp)
			}
		})
	}
}

// TestIncidentsDisabled: a server without incident response answers FailedPrecondition, after
// authorizing the caller.
func TestIncidentsDisabled(t *testing.T) {
	api := serve(t, nil)
	ctx := testkit.WithBearer(t.Context(), "admin")
	_, err := api.ListIncidents(ctx, &lifecyclev1.ListIncidentsRequest{Parent: "tenants/acme"})
	if e := errs.FromStatus(err); status.Code(err) != codes.FailedPrecondition || e.Reason != "INCIDENTS_DISABLED" {
		t.Fatalf("ListIncidents: %v, want FailedPrecondition INCIDENTS_DISABLED", err)
	}
	_, err = api.DecideIncident(ctx, &lifecyclev1.DecideIncidentRequest{Agent: "tenants/acme/agents/ag1", AlertId: "a1",
		Decision: lifecyclev1.IncidentDecision_INCIDENT_DECISION_RETIRE, ApprovalToken: "tok"})
	if e := errs.FromStatus(err); status.Code(err) != codes.FailedPrecondition || e.Reason != "INCIDENTS_DISABLED" {
		t.Fatalf("DecideIncident: %v, want FailedPrecondition INCIDENTS_DISABLED", err)
	}
	if _, err := serve(t, nil).ListIncidents(t.Context(), &lifecyclev1.ListIncidentsRequest{Parent: "tenants/acme"}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("ListIncidents without a bearer token: %v, want Unauthenticated", err)
	}
}
