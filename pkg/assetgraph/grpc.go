package assetgraph

import (
	"context"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// RegistryAgents is an AgentSource over the registry's gRPC API (GetAgent).
func RegistryAgents(c registryv1.RegistryServiceClient) AgentSource { return registryAgents{c} }

type registryAgents struct {
	c registryv1.RegistryServiceClient
}

func (r registryAgents) Agent(ctx context.Context, name string) (*registryv1.Agent, error) {
	resp, err := r.c.GetAgent(ctx, &registryv1.GetAgentRequest{Name: name})
	if err != nil {
		return nil, err
	}
	return resp.GetAgent(), nil
}

// IssuerClients is a ClientSource over the issuer's gRPC API (GetClient).
func IssuerClients(c issuerv1.IssuerServiceClient) ClientSource { return issuerClients{c} }

type issuerClients struct{ c issuerv1.IssuerServiceClient }

func (i issuerClients) Client(ctx context.Context, name string) (*issuerv1.Client, error) {
	resp, err := i.c.GetClient(ctx, &issuerv1.GetClientRequest{Name: name})
	if err != nil {
		return nil, err
	}
	return resp.GetClient(), nil
}

// MonitorUsage is a UsageSource over the monitor's gRPC API (GetAgentUsage).
func MonitorUsage(c monitorv1.MonitorServiceClient) UsageSource { return monitorUsage{c} }

type monitorUsage struct {
	c monitorv1.MonitorServiceClient
}

func (m monitorUsage) Usage(ctx context.Context, agent string, start, end time.Time) (*monitorv1.GetAgentUsageResponse, error) {
	return m.c.GetAgentUsage(ctx, &monitorv1.GetAgentUsageRequest{Agent: agent, StartTime: timestamppb.New(start), EndTime: timestamppb.New(end)})
}
