// Package server adapts telemetry queries and access recording to gRPC
// (agentid.monitor.v1.MonitorService).
package server

import (
	"context"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/grpcx"
	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
	"github.com/agentid/agentid/services/monitor/internal/access"
	"github.com/agentid/agentid/services/monitor/internal/alerts"
	"github.com/agentid/agentid/services/monitor/internal/store"
	"github.com/agentid/agentid/services/monitor/internal/telemetry"
)

var _ monitorv1.MonitorServiceServer = (*Server)(nil)

// Server implements monitorv1.MonitorServiceServer.
type Server struct {
	monitorv1.UnimplementedMonitorServiceServer
	telemetry *telemetry.Service
	access    *access.Recorder
	alerts    *alerts.Reader
}

// New returns a Server answering telemetry queries with svc, recording access batches with rec and
// answering the alert, baseline and usage queries with reader (nil: Unimplemented).
func New(svc *telemetry.Service, rec *access.Recorder, reader *alerts.Reader) *Server {
	return &Server{telemetry: svc, access: rec, alerts: reader}
}

// ListAlerts lists a tenant's alerts, newest first.
func (s *Server) ListAlerts(ctx context.Context, req *monitorv1.ListAlertsRequest) (*monitorv1.ListAlertsResponse, error) {
	if s.alerts == nil {
		return s.UnimplementedMonitorServiceServer.ListAlerts(ctx, req)
	}
	return s.alerts.List(ctx, req)
}

// GetAlert returns one alert with its evidence.
func (s *Server) GetAlert(ctx context.Context, req *monitorv1.GetAlertRequest) (*monitorv1.GetAlertResponse, error) {
	if s.alerts == nil {
		return s.UnimplementedMonitorServiceServer.GetAlert(ctx, req)
	}
	return s.alerts.Get(ctx, req)
}

// GetBaseline returns an agent's baseline and, when asked, its hourly activity.
func (s *Server) GetBaseline(ctx context.Context, req *monitorv1.GetBaselineRequest) (*monitorv1.GetBaselineResponse, error) {
	if s.alerts == nil {
		return s.UnimplementedMonitorServiceServer.GetBaseline(ctx, req)
	}
	return s.alerts.Baseline(ctx, req)
}

// GetAgentUsage summarises an agent's activity in a window.
func (s *Server) GetAgentUsage(ctx context.Context, req *monitorv1.GetAgentUsageRequest) (*monitorv1.GetAgentUsageResponse, error) {
	if s.alerts == nil {
		return s.UnimplementedMonitorServiceServer.GetAgentUsage(ctx, req)
	}
	return s.alerts.Usage(ctx, req)
}

// RecordAccess stores a batch of a resource server's access decisions.
func (s *Server) RecordAccess(ctx context.Context, req *monitorv1.RecordAccessRequest) (*monitorv1.RecordAccessResponse, error) {
	n, err := s.access.Record(ctx, grpcx.EventMetadata(ctx, ""), req)
	if err != nil {
		return nil, err
	}
	return &monitorv1.RecordAccessResponse{Accepted: int32(n)}, nil
}

// ListTelemetryEvents lists a tenant's telemetry, newest first.
func (s *Server) ListTelemetryEvents(ctx context.Context, req *monitorv1.ListTelemetryEventsRequest) (*monitorv1.ListTelemetryEventsResponse, error) {
	var start time.Time
	if ts := req.GetStartTime(); ts != nil {
		if err := ts.CheckValid(); err != nil {
			return nil, errs.InvalidArgument("start_time", "start_time is not a valid timestamp")
		}
		start = ts.AsTime()
	}
	events, next, err := s.telemetry.List(ctx, telemetry.ListRequest{
		Parent: req.GetParent(), Agent: req.GetAgent(), Kind: req.GetKind(), StartTime: start,
		PageSize: int(req.GetPageSize()), PageToken: req.GetPageToken(),
	})
	if err != nil {
		return nil, err
	}
	resp := &monitorv1.ListTelemetryEventsResponse{Events: make([]*monitorv1.TelemetryEvent, len(events)), NextPageToken: next}
	for i, e := range events {
		resp.Events[i] = toProto(e)
	}
	return resp, nil
}

func toProto(e store.Event) *monitorv1.TelemetryEvent {
	return &monitorv1.TelemetryEvent{
		EventId:     e.EventID,
		Time:        timestamppb.New(e.Time),
		Tenant:      e.Tenant,
		Agent:       e.Agent,
		Kind:        e.Kind,
		Outcome:     e.Outcome,
		Actor:       e.Actor,
		OnBehalfOf:  e.OnBehalfOf,
		Environment: e.Environment,
		Scopes:      e.Scopes,
		RequestId:   e.RequestID,
		DetailJson:  e.Detail,
	}
}
