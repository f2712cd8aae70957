package lifecycle_test

import (
	"context"
	"log/slog"
	"testing"

	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"google.golang.org/grpc"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/lifecycle/internal/lifecycle"
)

// downTemporal answers every call as an unreachable Temporal: a decision that passes the directory
// check fails on it with Unavailable.
type downTemporal struct{}

var errTemporalDown = serviceerror.NewUnavailable("temporal down")

func (downTemporal) ExecuteWorkflow(context.Context, client.StartWorkflowOptions, any, ...any) (client.WorkflowRun, error) {
	return nil, errTemporalDown
}
func (downTemporal) GetWorkflow(context.Context, string, string) client.WorkflowRun { return nil }
func (downTemporal) DescribeWorkflowExecution(context.Context, string, string) (*workflowservice.DescribeWorkflowExecutionResponse, error) {
	return nil, errTemporalDown
}
func (downTemporal) QueryWorkflow(context.Context, string, string, string, ...any) (converter.EncodedValue, error) {
	return nil, errTemporalDown
}
func (downTemporal) UpdateWorkflow(context.Context, client.UpdateWorkflowOptions) (client.WorkflowUpdateHandle, error) {
	return nil, errTemporalDown
}
func (downTemporal) ListWorkflow(context.Context, *workflowservice.ListWorkflowExecutionsRequest) (*workflowservice.ListWorkflowExecutionsResponse, error) {
	return nil, errTemporalDown
}

// directoryRegistry serves tenant acme's directory, or fails every read with err, and agents owned
// by owner and sponsored by sponsor (NotFound when both are empty), or fails GetAgent with agentErr.
type directoryRegistry struct {
	registryv1.RegistryServiceClient
	principals     []*registryv1.Principal
	err            error
	owner, sponsor string
	agentErr       error
}

func (r directoryRegistry) GetAgent(_ context.Context, in *registryv1.GetAgentRequest, _ ...grpc.CallOption) (*registryv1.GetAgentResponse, error) {
	switch {
	case r.agentErr != nil:
		return nil, errs.ToStatus(r.agentErr).Err()
	case r.owner == "" && r.sponsor == "":
		return nil, errs.ToStatus(errs.NotFound("agent", in.GetName())).Err()
	}
	return &registryv1.GetAgentResponse{Agent: &registryv1.Agent{Name: in.GetName(), Owner: r.owner, Sponsor: r.sponsor}}, nil
}

func (r directoryRegistry) ListPrincipals(_ context.Context, in *registryv1.ListPrincipalsRequest, _ ...grpc.CallOption) (*registryv1.ListPrincipalsResponse, error) {
	if r.err != nil {
		return nil, errs.ToStatus(r.err).Err()
	}
	resp := &registryv1.ListPrincipalsResponse{}
	for _, p := range r.principals {
		if in.GetStatus() == registryv1.PrincipalStatus_PRINCIPAL_STATUS_UNSPECIFIED || p.GetStatus() == in.GetStatus() {
			resp.Principals = append(resp.Principals, p)
		}
	}
	return resp, nil
}

// TestDecisionsOfDepartedOwnersAreRefused: an owner or sponsor whom the tenant's directory does not
// list as ACTIVE (departed, or unknown) has every lifecycle decision (provisioning approval, review,
// incident, rotation, deprovisioning sign-off) refused with CALLER_NOT_ACTIVE before anything reaches a run, whatever other
// roles it holds (an approver who is the agent's owner or sponsor is checked too); a registry that
// cannot be asked refuses it as Unavailable, one that refuses the query as malformed as
// FailedPrecondition DIRECTORY_UNCHECKABLE; an ACTIVE owner, a tenant without a directory and an
// approver who is neither the agent's owner nor its sponsor pass the check (and here meet an
// unreachable Temporal).
func TestDecisionsOfDepartedOwnersAreRefused(t *testing.T) {
	const agent = "tenants/acme/agents/a1"
	directory := []*registryv1.Principal{
		{Id: "alice@acme.example", Status: registryv1.PrincipalStatus_PRINCIPAL_STATUS_ACTIVE},
		{Id: "bob@acme.example", Status: registryv1.PrincipalStatus_PRINCIPAL_STATUS_DEPARTED},
	}
	owner := func(id string, roles ...authn.Role) *authn.Principal {
		return &authn.Principal{ID: id, Tenant: "acme", Kind: authn.KindHuman, Roles: append([]authn.Role{authn.RoleOwner}, roles...)}
	}
	decide := map[string]func(reg registryv1.RegistryServiceClient, p *authn.Principal) error{
		"approval": func(reg registryv1.RegistryServiceClient, p *authn.Principal) error {
			svc := newDirectoryService(t, reg)
			_, err := svc.SubmitApproval(t.Context(), p, lifecycle.Approval{Agent: agent, Approve: true, Token: "tok"})
			return err
		},
		"rotation": func(reg registryv1.RegistryServiceClient, p *authn.Principal) error {
			svc := newDirectoryService(t, reg)
			_, err := svc.DecideRotation(t.Context(), p, lifecycle.RotationDecision{Agent: agent, Thumbprint: "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs", Token: "tok"})
			return err
		},
		"incident": func(reg registryv1.RegistryServiceClient, p *authn.Principal) error {
			inc, err := lifecycle.NewIncidents(lifecycle.IncidentsConfig{Service: newDirectoryService(t, reg), Temporal: downTemporal{}})
			if err != nil {
				t.Fatal(err)
			}
			_, err = inc.Decide(t.Context(), p, lifecycle.Decision{Agent: agent, AlertID: "alert-1", Restore: true, Token: "tok"})
			return err
		},
		"sign-off": func(reg registryv1.RegistryServiceClient, p *authn.Principal) error {
			svc := newDirectoryService(t, reg)
			_, err := svc.SignOffDeprovisioning(t.Context(), p, lifecycle.SignOff{Agent: agent, Token: "tok"})
			return err
		},
		"review": func(reg registryv1.RegistryServiceClient, p *authn.Principal) error {
			rv, err := lifecycle.NewReviews(downTemporal{}, "", lifecycle.ReviewConfig{})
			if err != nil {
				t.Fatal(err)
			}
			_, err = rv.WithRegistry(reg).Decide(t.Context(), p, lifecycle.ReviewDecisionInput{Agent: agent, Campaign: "q3-2025", Certify: true, Token: "tok"})
			return err
		},
	}
	for _, tc := range []struct {
		name       string
		reg        directoryRegistry
		p          *authn.Principal
		wantReason string // "" : the check passes
		wantKind   errs.Kind
	}{
		{"departed owner", directoryRegistry{principals: directory}, owner("bob@acme.example"), lifecycle.ReasonCallerNotActive, errs.KindPermissionDenied},
		{"unknown owner", directoryRegistry{principals: directory}, owner("mallory@acme.example"), lifecycle.ReasonCallerNotActive, errs.KindPermissionDenied},
		{"directory unreadable", directoryRegistry{err: errs.Unavailable("DOWN", "registry down", nil)}, owner("alice@acme.example"), "DIRECTORY_UNAVAILABLE", errs.KindUnavailable},
		{"directory query refused", directoryRegistry{err: errs.InvalidArgument("parent", "malformed")}, owner("alice@acme.example"),
			lifecycle.ReasonDirectoryUncheckable, errs.KindFailedPrecondition},
		{"active owner", directoryRegistry{principals: directory}, owner("alice@acme.example"), "", errs.KindUnavailable},
		{"no directory", directoryRegistry{}, owner("bob@acme.example"), "", errs.KindUnavailable},
		{"departed owner with an approver role", directoryRegistry{principals: directory, owner: "bob@acme.example", sponsor: "alice@acme.example"},
			owner("bob@acme.example", authn.RoleSecurityApprover), lifecycle.ReasonCallerNotActive, errs.KindPermissionDenied},
		{"departed sponsor with an admin role", directoryRegistry{principals: directory, owner: "alice@acme.example", sponsor: "bob@acme.example"},
			owner("bob@acme.example", authn.RoleTenantAdmin), lifecycle.ReasonCallerNotActive, errs.KindPermissionDenied},
		{"approver, agent unreadable", directoryRegistry{principals: directory, agentErr: errs.Unavailable("DOWN", "registry down", nil)},
			owner("bob@acme.example", authn.RoleApprover), "DIRECTORY_UNAVAILABLE", errs.KindUnavailable},
		{"departed approver, not the owner nor the sponsor", directoryRegistry{principals: directory, owner: "alice@acme.example"},
			owner("bob@acme.example", authn.RoleSecurityApprover), "", errs.KindUnavailable},
		{"approver, agent unknown to the registry", directoryRegistry{principals: directory},
			owner("bob@acme.example", authn.RoleApprover), "", errs.KindUnavailable},
	} {
		for kind, fn := range decide {
			t.Run(tc.name+"/"+kind, func(t *testing.T) {
				err := fn(tc.reg, tc.p)
				e := errs.FromStatus(err)
				switch {
				case err == nil:
					t.Fatal("decision accepted, want an error")
				case tc.wantReason != "" && (e.Kind != tc.wantKind || e.Reason != tc.wantReason):
					t.Fatalf("error %v (%v %s), want %v %s", err, e.Kind, e.Reason, tc.wantKind, tc.wantReason)
				case tc.wantReason == "" && (e.Reason == lifecycle.ReasonCallerNotActive || e.Reason == "DIRECTORY_UNAVAILABLE"):
					t.Fatalf("error %v: the directory check refused a caller it must pass", err)
				}
			})
		}
	}
}

func newDirectoryService(t *testing.T, reg registryv1.RegistryServiceClient) *lifecycle.Service {
	t.Helper()
	svc, err := lifecycle.New(lifecycle.Config{Temporal: downTemporal{}, Registry: reg, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return svc
}
