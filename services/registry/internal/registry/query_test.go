package registry_test

import (
	"context"

	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/registry/internal/registry"
)

// listAgents lists one page of tenant's agents in registration order, without filters.
func listAgents(ctx context.Context, svc *registry.Service, tenant string, size int32, token string) ([]*registryv1.Agent, string, error) {
	q, err := registry.ParseAgentQuery(tenant, &registryv1.ListAgentsRequest{PageSize: size, PageToken: token})
	if err != nil {
		return nil, "", err
	}
	page, err := svc.ListAgents(ctx, q)
	return page.Agents, page.NextPageToken, err
}
