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

// rotationCore is a lifecycle core that also serves rotations; it records the decisions it gets.
type rotationCore struct {
	mu      sync.Mutex
	callers []string
	got     []lifecycle.RotationDecision
	refuse  error
}

func (c *rotationCore) AgentRuns(context.Context, string) ([]lifecycle.Run, error) { return nil, nil }

func (c *rotationCore) SubmitApproval(context.Context, *authn.Principal, lifecycle.Approval) (lifecycle.Run, error) {
	return lifecycle.Run{}, errs.FailedPrecondition("UNUSED", "not used here")
}

func (c *rotationCore) DecideRotation(_ context.Context, p *authn.Principal, d lifecycle.RotationDecision) (lifecycle.Run, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.callers, c.got = append(c.callers, p.ID), append(c.got, d)
	if c.refuse != nil {
		return lifecycle.Run{}, c.refuse
	}
	return lifecycle.Run{WorkflowID: "rotation/acme/ag1/tp", RunID: "r1", Stage: "rotation-add"}, nil
}

func (c *rotationCore) GetRotation(_ context.Context, agent, thumbprint string) (lifecycle.Run, bool, error) {
	if thumbprint != "tp" {
		return lifecycle.Run{}, false, nil
	}
	return lifecycle.Run{WorkflowID: "rotation/acme/ag1/tp", RunID: "r1", Stage: "rotation-approval", WaitingFor: "approval by owner", ApprovalStep: "owner"}, true, nil
}

func (c *rotationCore) calls() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.got)
}

func serveLifecycle(t *testing.T, core server.Lifecycle) lifecyclev1.LifecycleServiceClient {
	t.Helper()
	gs := grpcx.NewServer(grpcx.ServerConfig{Logger: slog.New(slog.DiscardHandler), Verifier: testkit.StaticVerifier(callers)})
	lifecyclev1.RegisterLifecycleServiceServer(gs, server.New(core))
	return lifecyclev1.NewLifecycleServiceClient(testkit.ServeGRPC(t, gs))
}

// TestDecideRotationAuthorization: owners, approvers and tenant-admins of the agent's tenant reach
// the core as themselves with the request's token; others are refused before it; a refusal of the run
// keeps its reason.
func TestDecideRotationAuthorization(t *testing.T) {
	core := &rotationCore{}
	api := serveLifecycle(t, core)
	req := &lifecyclev1.DecideRotationRequest{Agent: "tenants/acme/agents/ag1", Thumbprint: "tp", ApprovalToken: "tok", Comment: "planned", RequestId: "d-1"}
	tests := []struct {
		name, bearer string
		wantCode     codes.Code
		wantCaller   string
	}{
		{"no bearer token", "", codes.Unauthenticated, ""},
		{"another tenant's caller", "other", codes.NotFound, ""},
		{"auditor may not decide", "auditor", codes.PermissionDenied, ""},
		{"security-approver may not decide", "security", codes.PermissionDenied, ""},
		{"owner decides", "owner", codes.OK, "olivia@corp"},
		{"approver decides (the run allows reject only)", "approver", codes.OK, "alice@corp"},
		{"tenant-admin decides", "admin", codes.OK, "carol@corp"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := core.calls()
			resp, err := api.DecideRotation(testkit.WithBearer(t.Context(), tt.bearer), req)
			if status.Code(err) != tt.wantCode {
				t.Fatalf("DecideRotation: %v, want %v", err, tt.wantCode)
			}
			if tt.wantCaller == "" {
				if core.calls() != before {
					t.Fatal("a refused call reached the core")
				}
				return
			}
			core.mu.Lock()
			caller, got := core.callers[len(core.callers)-1], core.got[len(core.got)-1]
			core.mu.Unlock()
			want := lifecycle.RotationDecision{Agent: req.Agent, Thumbprint: "tp", Token: "tok", Comment: "planned", RequestID: "d-1"}
			if caller != tt.wantCaller || got != want || resp.GetWorkflow().GetRunId() != "r1" {
				t.Fatalf("core got %+v from %s (response %v), want %+v from %s", got, caller, resp, want, tt.wantCaller)
			}
		})
	}
	core.refuse = errs.FailedPrecondition("APPROVAL_REFUSED", "the approval token is for run r0")
	if _, err := api.DecideRotation(testkit.WithBearer(t.Context(), "owner"), req); errs.FromStatus(err).Reason != "APPROVAL_REFUSED" {
		t.Fatalf("a refused decision: %v, want APPROVAL_REFUSED", err)
	}
}

// TestGetRotation: any role of the tenant sees the run and the step it waits for; an unknown key is
// NotFound; a core without rotations answers ROTATION_DECISIONS_DISABLED.
func TestGetRotation(t *testing.T) {
	api := serveLifecycle(t, &rotationCore{})
	resp, err := api.GetRotation(testkit.WithBearer(t.Context(), "auditor"), &lifecyclev1.GetRotationRequest{Agent: "tenants/acme/agents/ag1", Thumbprint: "tp"})
	if err != nil || resp.GetWorkflow().GetApprovalStep() != "owner" || resp.GetWorkflow().GetRunId() != "r1" || resp.GetWorkflow().GetWaitingFor() != "approval by owner" {
		t.Fatalf("GetRotation = %v, %v", resp, err)
	}
	if _, err := api.GetRotation(testkit.WithBearer(t.Context(), "auditor"), &lifecyclev1.GetRotationRequest{Agent: "tenants/acme/agents/ag1", Thumbprint: "nope"}); status.Code(err) != codes.NotFound {
		t.Fatalf("unknown key: %v, want NotFound", err)
	}
	_, err = serveSignOffs(t, nil).DecideRotation(testkit.WithBearer(t.Context(), "owner"),
		&lifecyclev1.DecideRotationRequest{Agent: "tenants/acme/agents/ag1", Thumbprint: "tp", ApprovalToken: "tok"})
	if errs.FromStatus(err).Reason != "ROTATION_DECISIONS_DISABLED" {
		t.Fatalf("no rotation core: %v, want ROTATION_DECISIONS_DISABLED", err)
	}
}
