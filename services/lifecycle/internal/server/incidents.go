package server

import (
	"context"
	"strings"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
	lifecyclev1 "github.com/agentid/agentid/proto/gen/go/agentid/lifecycle/v1"
	"github.com/agentid/agentid/services/lifecycle/internal/lifecycle"
)

// Incidents is the incident core the server calls (lifecycle.Incidents).
type Incidents interface {
	List(ctx context.Context, tenant string, openOnly bool, pageSize int, pageToken string) ([]lifecycle.Incident, string, error)
	Decide(ctx context.Context, p *authn.Principal, d lifecycle.Decision) (lifecycle.Incident, error)
}

// WithIncidents makes s serve ListIncidents and DecideIncident with i and returns s.
func (s *Server) WithIncidents(i Incidents) *Server {
	s.incidents = i
	return s
}

// decideRoles may call DecideIncident (the run then decides who may decide which step). A sponsor
// decides the sponsor step (and the owner step as the owner's delegate) only while holding one of
// them in the agent's tenant, usually owner: the run checks that the caller is the agent's sponsor,
// this gate only that the caller holds a role that may decide at all (docs/incidents.md).
var decideRoles = []authn.Role{authn.RoleOwner, authn.RoleApprover, authn.RoleSecurityApprover, authn.RoleTenantAdmin}

// ListIncidents lists the tenant's incident runs. Callers: any role of the tenant.
func (s *Server) ListIncidents(ctx context.Context, req *lifecyclev1.ListIncidentsRequest) (*lifecyclev1.ListIncidentsResponse, error) {
	p, ok := authn.PrincipalFrom(ctx)
	if !ok {
		return nil, errs.Unauthenticated("UNAUTHENTICATED", "authentication required")
	}
	tenant, found := strings.CutPrefix(req.GetParent(), "tenants/")
	if !found || !authn.ValidTenant(tenant) {
		return nil, errs.InvalidArgument("parent", "must be tenants/{tenant}")
	}
	if err := p.Authorize(tenant, anyRole...); err != nil {
		return nil, err
	}
	if s.incidents == nil {
		return nil, errs.FailedPrecondition("INCIDENTS_DISABLED", "this lifecycle service does not run incident response")
	}
	list, next, err := s.incidents.List(ctx, tenant, req.GetOpenOnly(), int(req.GetPageSize()), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	resp := &lifecyclev1.ListIncidentsResponse{NextPageToken: next}
	for _, inc := range list {
		resp.Incidents = append(resp.Incidents, incidentProto(inc))
	}
	return resp, nil
}

// DecideIncident forwards the caller's decision, with the caller's approval token, to the incident
// run. Callers: owner, approver, security-approver, tenant-admin (the run decides who may decide
// which step).
func (s *Server) DecideIncident(ctx context.Context, req *lifecyclev1.DecideIncidentRequest) (*lifecyclev1.DecideIncidentResponse, error) {
	p, err := authorize(ctx, req.GetAgent(), decideRoles)
	if err != nil {
		return nil, err
	}
	var restore bool
	switch req.GetDecision() {
	case lifecyclev1.IncidentDecision_INCIDENT_DECISION_RESTORE:
		restore = true
	case lifecyclev1.IncidentDecision_INCIDENT_DECISION_RETIRE:
	default:
		return nil, errs.InvalidArgument("decision", "must be INCIDENT_DECISION_RESTORE or INCIDENT_DECISION_RETIRE")
	}
	if s.incidents == nil {
		return nil, errs.FailedPrecondition("INCIDENTS_DISABLED", "this lifecycle service does not run incident response")
	}
	inc, err := s.incidents.Decide(ctx, p, lifecycle.Decision{
		Agent: req.GetAgent(), AlertID: req.GetAlertId(), Restore: restore, Comment: req.GetComment(),
		Token: req.GetApprovalToken(), RequestID: req.GetRequestId(),
	})
	if err != nil {
		return nil, err
	}
	return &lifecyclev1.DecideIncidentResponse{Incident: incidentProto(inc)}, nil
}

func incidentProto(inc lifecycle.Incident) *lifecyclev1.Incident {
	w := toProto(inc.Run)
	w.Kind = lifecyclev1.WorkflowKind_WORKFLOW_KIND_INCIDENT
	return &lifecyclev1.Incident{
		Workflow: w, Agent: inc.Agent, Alert: inc.Alert, Detector: inc.Detector, Severity: inc.Severity,
		Actions: inc.Actions, Decider: inc.Decider, Outcome: inc.Outcome,
	}
}
