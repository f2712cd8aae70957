package server

import (
	"context"

	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/registry/internal/registry"
)

// ListAgents lists a tenant's agents matching the request's filters, in its order_by, one page at a
// time (tokens are bound to the filters and order), with total_size on request. Callers: any role
// of the tenant, the lifecycle worker (its sweeps).
func (s *Server) ListAgents(ctx context.Context, req *registryv1.ListAgentsRequest) (*registryv1.ListAgentsResponse, error) {
	tenant, err := authorizeTenant(ctx, "parent", req.GetParent(), readAgentRoles...)
	if err != nil {
		return nil, err
	}
	q, err := registry.ParseAgentQuery(tenant, req)
	if err != nil {
		return nil, err
	}
	page, err := s.reg.ListAgents(ctx, q)
	if err != nil {
		return nil, err
	}
	return &registryv1.ListAgentsResponse{Agents: page.Agents, NextPageToken: page.NextPageToken, TotalSize: page.TotalSize}, nil
}
