package server

import (
	"context"

	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/grpcx"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/registry/internal/registry"
)

// RecordRegistry is what the record's RPCs (update, history, submit, expire) need from the core.
type RecordRegistry interface {
	UpdateAgent(ctx context.Context, c registry.UpdateAgent, md eventstore.Metadata) (*registryv1.Agent, []string, error)
	GetAgentHistory(ctx context.Context, tenant, agentID string, size int32, token string) ([]*registryv1.AgentHistoryEntry, string, error)
	SubmitAgent(ctx context.Context, c registry.SubmitAgent, md eventstore.Metadata) (*registryv1.Agent, error)
	ExpireAgent(ctx context.Context, c registry.ExpireAgent, md eventstore.Metadata) (*registryv1.Agent, error)
}

var _ RecordRegistry = (*registry.Service)(nil)

// record returns the core's record commands; a core without them answers FailedPrecondition.
func (s *Server) record() (RecordRegistry, error) {
	r, ok := s.reg.(RecordRegistry)
	if !ok {
		return nil, errs.FailedPrecondition("RECORD_DISABLED", "this registry does not update agents")
	}
	return r, nil
}

// UpdateAgent changes an agent's declared fields named by update_mask, given its current etag.
// Callers: platform-admin, tenant-admin, owner (of the agent); with validate_only also an auditor
// (validateOnlyRoles).
func (s *Server) UpdateAgent(ctx context.Context, req *registryv1.UpdateAgentRequest) (*registryv1.UpdateAgentResponse, error) {
	tenant, id, err := registry.ParseAgentName("agent.name", req.GetAgent().GetName())
	if err != nil {
		return nil, err
	}
	p, err := authorizeManage(ctx, tenant, req.GetValidateOnly())
	if err != nil {
		return nil, err
	}
	r, err := s.record()
	if err != nil {
		return nil, err
	}
	a, changed, err := r.UpdateAgent(ctx, registry.UpdateAgent{
		Tenant: tenant, AgentID: id, Agent: req.GetAgent(), Paths: req.GetUpdateMask().GetPaths(), Etag: req.GetEtag(),
		RequestID: req.GetRequestId(), ValidateOnly: req.GetValidateOnly(), Reason: req.GetReason(), RequireOwner: manageOwnerConstraint(p),
	}, grpcx.EventMetadata(ctx, ""))
	if err != nil {
		return nil, err
	}
	return &registryv1.UpdateAgentResponse{Agent: a, ChangedFields: changed}, nil
}

// GetAgentHistory returns a page of an agent's timeline, oldest first. Callers: any role of the
// agent's tenant, the lifecycle worker.
func (s *Server) GetAgentHistory(ctx context.Context, req *registryv1.GetAgentHistoryRequest) (*registryv1.GetAgentHistoryResponse, error) {
	tenant, id, _, err := authorizeAgent(ctx, "name", req.GetName(), readAgentRoles...)
	if err != nil {
		return nil, err
	}
	r, err := s.record()
	if err != nil {
		return nil, err
	}
	entries, next, err := r.GetAgentHistory(ctx, tenant, id, req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	return &registryv1.GetAgentHistoryResponse{Entries: entries, NextPageToken: next}, nil
}

// SubmitAgent submits a PROPOSED agent: it becomes PENDING and provisioning starts. Callers:
// platform-admin, tenant-admin, owner (of the agent).
func (s *Server) SubmitAgent(ctx context.Context, req *registryv1.SubmitAgentRequest) (*registryv1.SubmitAgentResponse, error) {
	tenant, id, p, err := authorizeAgent(ctx, "name", req.GetName(), manageRoles...)
	if err != nil {
		return nil, err
	}
	r, err := s.record()
	if err != nil {
		return nil, err
	}
	a, err := r.SubmitAgent(ctx, registry.SubmitAgent{
		Tenant: tenant, AgentID: id, Etag: req.GetEtag(), RequestID: req.GetRequestId(), RequireOwner: ownerConstraint(p),
	}, grpcx.EventMetadata(ctx, ""))
	if err != nil {
		return nil, err
	}
	return &registryv1.SubmitAgentResponse{Agent: a}, nil
}

// ExpireAgent records that an agent reached its expire_time: it becomes EXPIRED. Callers: the
// lifecycle worker, platform-admin.
func (s *Server) ExpireAgent(ctx context.Context, req *registryv1.ExpireAgentRequest) (*registryv1.ExpireAgentResponse, error) {
	tenant, id, _, err := authorizeAgent(ctx, "name", req.GetName(), decideRoles...)
	if err != nil {
		return nil, err
	}
	r, err := s.record()
	if err != nil {
		return nil, err
	}
	a, err := r.ExpireAgent(ctx, registry.ExpireAgent{Tenant: tenant, AgentID: id, RequestID: req.GetRequestId()}, grpcx.EventMetadata(ctx, ""))
	if err != nil {
		return nil, err
	}
	return &registryv1.ExpireAgentResponse{Agent: a}, nil
}
