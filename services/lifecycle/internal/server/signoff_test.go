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

// signOffCore records what the server asks of the sign-off core and answers with refuse when set.
type signOffCore struct {
	mu     sync.Mutex
	calls  []recordedSignOff
	refuse error
}

type recordedSignOff struct {
	caller string
	so     lifecycle.SignOff
}

func (c *signOffCore) SignOffDeprovisioning(_ context.Context, p *authn.Principal, so lifecycle.SignOff) (lifecycle.Run, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls = append(c.calls, recordedSignOff{caller: p.ID, so: so})
	if c.refuse != nil {
		return lifecycle.Run{}, c.refuse
	}
	return lifecycle.Run{WorkflowID: "deprovision/acme/ag1", RunID: "r1", Kind: lifecycle.KindDeprovision, Stage: "sign_off",
		WaitingFor: "sign-off by security", ApprovalStep: "security"}, nil
}

func (c *signOffCore) recorded() []recordedSignOff {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]recordedSignOff(nil), c.calls...)
}

func serveSignOffs(t *testing.T, core server.SignOffs) lifecyclev1.LifecycleServiceClient {
	t.Helper()
	s := server.New(nil)
	if core != nil {
		s = s.WithSignOffs(core)
	}
	gs := grpcx.NewServer(grpcx.ServerConfig{Logger: slog.New(slog.DiscardHandler), Verifier: testkit.StaticVerifier(callers)})
	lifecyclev1.RegisterLifecycleServiceServer(gs, s)
	return lifecyclev1.NewLifecycleServiceClient(testkit.ServeGRPC(t, gs))
}

// TestSignOffDeprovisioningAuthorization: only owners, security-approvers and tenant-admins of the
// agent's tenant reach the core, as themselves (the caller comes from the verified token); refused
// calls never reach it; bad input names the field.
func TestSignOffDeprovisioningAuthorization(t *testing.T) {
	core := &signOffCore{}
	api := serveSignOffs(t, core)
	const agent = "tenants/acme/agents/ag1"
	req := &lifecyclev1.SignOffDeprovisioningRequest{Agent: agent, Comment: "nothing left", RequestId: "so-1", ApprovalToken: "tok"}
	tests := []struct {
		name       string
		bearer     string
		req        *lifecyclev1.SignOffDeprovisioningRequest
		wantCode   codes.Code
		wantField  string
		wantCaller string
	}{
		{"no bearer token", "", req, codes.Unauthenticated, "", ""},
		{"another tenant's caller", "other", req, codes.NotFound, "", ""},
		{"auditor may not sign off", "auditor", req, codes.PermissionDenied, "", ""},
		{"analyst may not sign off", "analyst", req, codes.PermissionDenied, "", ""},
		{"approver may not sign off", "approver", req, codes.PermissionDenied, "", ""},
		{"bad agent name", "owner", &lifecyclev1.SignOffDeprovisioningRequest{Agent: "agents/ag1", ApprovalToken: "tok"}, codes.InvalidArgument, "agent", ""},
		{"owner signs", "owner", req, codes.OK, "", "olivia@corp"},
		{"security-approver signs", "security", req, codes.OK, "", "sam@corp"},
		{"tenant-admin signs", "admin", req, codes.OK, "", "carol@corp"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := core.recorded()
			resp, err := api.SignOffDeprovisioning(testkit.WithBearer(t.Context(), tt.bearer), tt.req)
			if status.Code(err) != tt.wantCode {
				t.Fatalf("SignOffDeprovisioning: %v, want %v", err, tt.wantCode)
			}
			if tt.wantField != "" && errs.FromStatus(err).Field != tt.wantField {
				t.Fatalf("field = %q, want %q", errs.FromStatus(err).Field, tt.wantField)
			}
			after := core.recorded()
			if tt.wantCaller == "" {
				if len(after) != len(before) {
					t.Fatalf("a refused call reached the core: %+v", after[len(before):])
				}
				return
			}
			if len(after) != len(before)+1 {
				t.Fatalf("core calls = %+v, want one more", after)
			}
			got := after[len(after)-1]
			want := lifecycle.SignOff{Agent: agent, Comment: "nothing left", Token: "tok", RequestID: "so-1"}
			if got.caller != tt.wantCaller || got.so != want {
				t.Fatalf("core got %+v from %s, want %+v from %s", got.so, got.caller, want, tt.wantCaller)
			}
			w := resp.GetWorkflow()
			if w.GetKind() != lifecyclev1.WorkflowKind_WORKFLOW_KIND_DEPROVISION || w.GetRunId() != "r1" || w.GetWorkflowId() != "deprovision/acme/ag1" {
				t.Fatalf("response = %v", resp)
			}
		})
	}
}

// TestSignOffDeprovisioningRefused: a sign-off the run refuses (or a run not waiting for one) is
// FailedPrecondition with the core's reason; a server without sign-offs answers SIGN_OFF_DISABLED
// after authorizing the caller.
func TestSignOffDeprovisioningRefused(t *testing.T) {
	for _, reason := range []string{"APPROVAL_REFUSED", "NOT_WAITING_FOR_SIGN_OFF"} {
		core := &signOffCore{refuse: errs.FailedPrecondition(reason, "refused by the run")}
		_, err := serveSignOffs(t, core).SignOffDeprovisioning(testkit.WithBearer(t.Context(), "security"),
			&lifecyclev1.SignOffDeprovisioningRequest{Agent: "tenants/acme/agents/ag1", ApprovalToken: "tok"})
		if e := errs.FromStatus(err); status.Code(err) != codes.FailedPrecondition || e.Reason != reason {
			t.Fatalf("refused sign-off: %v, want FailedPrecondition %s", err, reason)
		}
	}
	api := serveSignOffs(t, nil)
	req := &lifecyclev1.SignOffDeprovisioningRequest{Agent: "tenants/acme/agents/ag1", ApprovalToken: "tok"}
	_, err := api.SignOffDeprovisioning(testkit.WithBearer(t.Context(), "admin"), req)
	if e := errs.FromStatus(err); status.Code(err) != codes.FailedPrecondition || e.Reason != "SIGN_OFF_DISABLED" {
		t.Fatalf("without sign-offs: %v, want FailedPrecondition SIGN_OFF_DISABLED", err)
	}
	if _, err := api.SignOffDeprovisioning(testkit.WithBearer(t.Context(), "auditor"), req); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("without sign-offs, an auditor: %v, want PermissionDenied", err)
	}
}
