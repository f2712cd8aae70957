package workflowstest

import (
	"cmp"
	"context"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/errs"
	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// ListTenants lists the tenants of the stored agents, sorted by id, one page.
func (r *Registry) ListTenants(_ context.Context, _ *registryv1.ListTenantsRequest) (*registryv1.ListTenantsResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ids []string
	for _, a := range r.agents {
		if !slices.Contains(ids, a.GetTenant()) {
			ids = append(ids, a.GetTenant())
		}
	}
	slices.Sort(ids)
	resp := &registryv1.ListTenantsResponse{}
	for _, id := range ids {
		resp.Tenants = append(resp.Tenants, &registryv1.Tenant{Name: "tenants/" + id, TenantId: id})
	}
	return resp, nil
}

// ListAgents pages through a tenant's stored agents in creation order (then by name); the page token
// is the offset of the next page.
func (r *Registry) ListAgents(_ context.Context, req *registryv1.ListAgentsRequest) (*registryv1.ListAgentsResponse, error) {
	r.mu.Lock()
	var all []*registryv1.Agent
	for _, a := range r.agents {
		if "tenants/"+a.GetTenant() == req.GetParent() {
			all = append(all, proto.Clone(a).(*registryv1.Agent))
		}
	}
	r.mu.Unlock()
	slices.SortFunc(all, func(a, b *registryv1.Agent) int {
		return cmp.Or(a.GetCreateTime().AsTime().Compare(b.GetCreateTime().AsTime()), cmp.Compare(a.GetName(), b.GetName()))
	})
	from := 0
	if t := req.GetPageToken(); t != "" {
		n, err := strconv.Atoi(t)
		if err != nil || n < 0 || n > len(all) {
			return nil, errs.InvalidArgument("page_token", "page_token is not valid")
		}
		from = n
	}
	size := int(req.GetPageSize())
	if size <= 0 {
		size = 50
	}
	to := min(from+size, len(all))
	resp := &registryv1.ListAgentsResponse{Agents: all[from:to]}
	if to < len(all) {
		resp.NextPageToken = strconv.Itoa(to)
	}
	return resp, nil
}

// Monitor is a fake MonitorService answering GetAgentUsage with preset last-active times.
type Monitor struct {
	monitorv1.UnimplementedMonitorServiceServer
	mu         sync.Mutex
	lastActive map[string]time.Time               // by agent resource name
	scopes     map[string][]*monitorv1.UsageCount // by agent resource name (SetScopeUses)
	coverage   map[string]time.Time               // by tenant (SetCoverage)
}

// SetCoverage sets from when the monitor holds tenant's telemetry completely (GetAgentUsage's
// coverage_start_time); the zero time means it holds none. Tenants not set are covered since 1970.
func (m *Monitor) SetCoverage(tenant string, t time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.coverage == nil {
		m.coverage = map[string]time.Time{}
	}
	m.coverage[tenant] = t
}

// SetLastActive sets when the agent with resource name agent was last active.
func (m *Monitor) SetLastActive(agent string, t time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.lastActive == nil {
		m.lastActive = map[string]time.Time{}
	}
	m.lastActive[agent] = t
}

// GetAgentUsage answers with the preset last-active time when it falls in the window (the monitor
// looks no further back than start_time), and nothing else.
func (m *Monitor) GetAgentUsage(_ context.Context, req *monitorv1.GetAgentUsageRequest) (*monitorv1.GetAgentUsageResponse, error) {
	if req.GetAgent() == "" {
		return nil, errs.InvalidArgument("agent", "agent is required")
	}
	if req.GetStartTime() == nil {
		return nil, errs.InvalidArgument("start_time", "start_time is required")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	resp := &monitorv1.GetAgentUsageResponse{CoverageStartTime: timestamppb.New(time.Unix(0, 0))}
	tenant, _, _ := strings.Cut(strings.TrimPrefix(req.GetAgent(), "tenants/"), "/")
	if c, ok := m.coverage[tenant]; ok {
		resp.CoverageStartTime = nil
		if !c.IsZero() {
			resp.CoverageStartTime = timestamppb.New(c)
		}
	}
	if t, ok := m.lastActive[req.GetAgent()]; ok && !t.Before(req.GetStartTime().AsTime()) {
		resp.LastActiveTime = timestamppb.New(t)
		resp.Events = 1
	}
	for _, u := range m.scopes[req.GetAgent()] {
		resp.Scopes = append(resp.Scopes, proto.Clone(u).(*monitorv1.UsageCount))
	}
	return resp, nil
}
