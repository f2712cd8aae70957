package alerts

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
	"github.com/agentid/agentid/services/monitor/internal/store"
)

// Detectors are the detector names an alert may carry (docs/detection.md).
var Detectors = []string{
	"volume_spike", "off_hours", "new_resource", "new_scope", "bulk_export", "deny_spike",
	"new_source_network", "delegation_outside_pattern", "inactive_agent_activity", "unknown_agent",
}

// readRoles may read alerts, baselines and usage (MonitorService's comments).
var readRoles = []authn.Role{
	authn.RolePlatformAdmin, authn.RoleTenantAdmin, authn.RoleAuditor, authn.RoleAnalyst, authn.RoleLifecycleWorker,
}

// Limits of the queries.
const (
	// MaxActivityWindow bounds GetBaseline's activity window (hourly points).
	MaxActivityWindow = 92 * 24 * time.Hour
	// MaxUsageWindow bounds GetAgentUsage's window.
	MaxUsageWindow = 2 * 366 * 24 * time.Hour
	// maxFilterLen bounds the agent filter of ListAlerts.
	maxFilterLen = 256
)

// Baselines returns an agent's current baseline as the API shows it (its own, or its class's when
// fromClass); ok is false when there is none.
type Baselines interface {
	BaselineOf(tenant, agent string) (b *monitorv1.Baseline, ok bool)
}

// TenantKnownFunc reports whether tenant exists as far as the monitor knows.
type TenantKnownFunc func(ctx context.Context, tenant string) (bool, error)

// ReaderConfig configures a Reader.
type ReaderConfig struct {
	// Alerts holds the alerts; required.
	Alerts *Store
	// Analytics answers the activity and usage reads; required.
	Analytics store.Analytics
	// Baselines gives agents' baselines; nil answers GetBaseline with Unavailable.
	Baselines Baselines
	// TenantKnown decides whether a tenant a cross-tenant caller (platform-admin, lifecycle-worker)
	// names exists; required.
	TenantKnown TenantKnownFunc
	// Now defaults to time.Now.
	Now func() time.Time
}

// Reader answers MonitorService's alert, baseline and usage queries for authorized callers:
// platform-admin, and tenant-admin, auditor, analyst of the tenant, and the lifecycle worker. A
// tenant the caller is not of is NotFound, as is a tenant the monitor does not know.
type Reader struct {
	cfg      ReaderConfig
	coverage coverageCache
}

// NewReader returns a Reader.
func NewReader(cfg ReaderConfig) (*Reader, error) {
	if cfg.Alerts == nil || cfg.Analytics == nil || cfg.TenantKnown == nil {
		return nil, fmt.Errorf("alerts: ReaderConfig.Alerts, Analytics and TenantKnown are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Reader{cfg: cfg}, nil
}

// authorize checks the caller may read tenant's alerts and that the tenant exists.
func (r *Reader) authorize(ctx context.Context, tenant string) error {
	p, _ := authn.PrincipalFrom(ctx)
	if err := p.Authorize(tenant, readRoles...); err != nil {
		return err
	}
	if p.Tenant == tenant {
		return nil
	}
	known, err := r.cfg.TenantKnown(ctx, tenant)
	if err != nil {
		return errs.Unavailable("TENANTS_UNAVAILABLE", "the monitor cannot tell which tenants exist right now", err)
	}
	if !known && !r.cfg.Alerts.HasTenant(tenant) {
		return errs.NotFound("TENANT_NOT_FOUND", "tenant not found").WithMetadata("tenant", tenant)
	}
	return nil
}

// parseParent returns the tenant of a `tenants/{tenant}` parent.
func parseParent(parent string) (string, error) {
	tenant, ok := strings.CutPrefix(parent, "tenants/")
	switch {
	case parent == "":
		return "", errs.InvalidArgument("parent", "parent is required (tenants/{tenant})")
	case !ok || !authn.ValidTenant(tenant):
		return "", errs.InvalidArgument("parent", "parent must be tenants/{tenant}")
	}
	return tenant, nil
}

// parseAgent returns the tenant of an agent resource name `tenants/{tenant}/agents/{agent}`.
func parseAgent(field, name string) (string, error) {
	parts := strings.Split(name, "/")
	switch {
	case name == "":
		return "", errs.InvalidArgument(field, field+" is required (tenants/{tenant}/agents/{agent})")
	case len(parts) != 4 || parts[0] != "tenants" || parts[2] != "agents" || !authn.ValidTenant(parts[1]) || parts[3] == "" || len(name) > maxFilterLen:
		return "", errs.InvalidArgument(field, field+" must be tenants/{tenant}/agents/{agent}")
	}
	return parts[1], nil
}

// timeField converts an optional timestamp, naming field when it is invalid.
func timeField(field string, ts *timestamppb.Timestamp) (time.Time, error) {
	if ts == nil {
		return time.Time{}, nil
	}
	if err := ts.CheckValid(); err != nil {
		return time.Time{}, errs.InvalidArgument(field, field+" is not a valid timestamp")
	}
	return ts.AsTime(), nil
}

// List answers ListAlerts.
func (r *Reader) List(ctx context.Context, req *monitorv1.ListAlertsRequest) (*monitorv1.ListAlertsResponse, error) {
	tenant, err := parseParent(req.GetParent())
	if err != nil {
		return nil, err
	}
	if a := req.GetAgent(); a != "" {
		// A registered agent is named by its resource name in the parent; an unknown (ghost) one by
		// the name or client id as seen, which has no slash.
		if strings.Contains(a, "/") {
			if t, err := parseAgent("agent", a); err != nil || t != tenant {
				return nil, errs.InvalidArgument("agent", fmt.Sprintf("agent must be %s/agents/{agent} or the client id of an unknown agent", req.GetParent()))
			}
		} else if len(a) > maxFilterLen {
			return nil, errs.InvalidArgument("agent", fmt.Sprintf("agent must be at most %d characters", maxFilterLen))
		}
	}
	if d := req.GetDetector(); d != "" && !slices.Contains(Detectors, d) {
		return nil, errs.InvalidArgument("detector", "detector must be one of "+strings.Join(Detectors, ", "))
	}
	if _, ok := monitorv1.AlertSeverity_name[int32(req.GetMinSeverity())]; !ok {
		return nil, errs.InvalidArgument("min_severity", "min_severity is not a known severity")
	}
	start, err := timeField("start_time", req.GetStartTime())
	if err != nil {
		return nil, err
	}
	if req.GetPageSize() < 0 {
		return nil, errs.InvalidArgument("page_size", "page_size must not be negative")
	}
	if err := r.authorize(ctx, tenant); err != nil {
		return nil, err
	}
	list, next, err := r.cfg.Alerts.List(Query{
		Tenant: tenant, Agent: req.GetAgent(), Detector: req.GetDetector(), MinSeverity: req.GetMinSeverity(),
		Start: start, PageSize: int(req.GetPageSize()), PageToken: req.GetPageToken(),
	})
	if err != nil {
		return nil, err
	}
	return &monitorv1.ListAlertsResponse{Alerts: list, NextPageToken: next}, nil
}

// Get answers GetAlert.
func (r *Reader) Get(ctx context.Context, req *monitorv1.GetAlertRequest) (*monitorv1.GetAlertResponse, error) {
	parts := strings.Split(req.GetName(), "/")
	switch {
	case req.GetName() == "":
		return nil, errs.InvalidArgument("name", "name is required (tenants/{tenant}/alerts/{alert_id})")
	case len(parts) != 4 || parts[0] != "tenants" || parts[2] != "alerts" || !authn.ValidTenant(parts[1]) || parts[3] == "" || len(parts[3]) > 64:
		return nil, errs.InvalidArgument("name", "name must be tenants/{tenant}/alerts/{alert_id}")
	}
	if err := r.authorize(ctx, parts[1]); err != nil {
		return nil, err
	}
	a, ok := r.cfg.Alerts.Get(parts[1], parts[3])
	if !ok {
		return nil, errs.NotFound("ALERT_NOT_FOUND", "alert not found").WithMetadata("name", req.GetName())
	}
	return &monitorv1.GetAlertResponse{Alert: a}, nil
}

// window validates [start, end) (end defaulting to now), at most max long.
func (r *Reader) window(startField, endField string, start, end *timestamppb.Timestamp, limit time.Duration) (time.Time, time.Time, error) {
	from, err := timeField(startField, start)
	if err != nil {
		return time.Time{}, time.Time{}, err
	}
	to, err := timeField(endField, end)
	if err != nil {
		return time.Time{}, time.Time{}, err
	}
	if to.IsZero() {
		to = r.cfg.Now()
	}
	switch {
	case !from.Before(to):
		return time.Time{}, time.Time{}, errs.InvalidArgument(startField, startField+" must be before "+endField)
	case to.Sub(from) > limit:
		return time.Time{}, time.Time{}, errs.InvalidArgument(startField, fmt.Sprintf("the window from %s to %s must be at most %s", startField, endField, limit))
	}
	return from, to, nil
}

// Baseline answers GetBaseline.
func (r *Reader) Baseline(ctx context.Context, req *monitorv1.GetBaselineRequest) (*monitorv1.GetBaselineResponse, error) {
	tenant, err := parseAgent("agent", req.GetAgent())
	if err != nil {
		return nil, err
	}
	var from, to time.Time
	if req.GetActivityStart() != nil {
		if from, to, err = r.window("activity_start", "activity_end", req.GetActivityStart(), req.GetActivityEnd(), MaxActivityWindow); err != nil {
			return nil, err
		}
	} else if req.GetActivityEnd() != nil {
		return nil, errs.InvalidArgument("activity_start", "activity_start is required with activity_end")
	}
	if err := r.authorize(ctx, tenant); err != nil {
		return nil, err
	}
	if r.cfg.Baselines == nil {
		return nil, errs.Unavailable("BASELINES_UNAVAILABLE", "baselines are not computed by this monitor", nil)
	}
	b, ok := r.cfg.Baselines.BaselineOf(tenant, req.GetAgent())
	if !ok {
		return nil, errs.NotFound("BASELINE_NOT_FOUND", "no baseline for this agent or its class yet").WithMetadata("agent", req.GetAgent())
	}
	resp := &monitorv1.GetBaselineResponse{Baseline: b}
	if !from.IsZero() {
		hours, err := r.cfg.Analytics.Hourly(ctx, store.Window{Tenant: tenant, Agent: req.GetAgent(), From: from, To: to})
		if err != nil {
			return nil, errs.Unavailable("TELEMETRY_UNAVAILABLE", "the telemetry store did not answer", err)
		}
		for _, h := range hours {
			resp.Activity = append(resp.Activity, &monitorv1.HourlyActivity{
				Hour: timestamppb.New(h.Hour), Requests: h.Requests, Denied: h.Denied, Rows: h.Rows, Bytes: h.Bytes,
			})
		}
	}
	return resp, nil
}

// Usage answers GetAgentUsage. Events counts the agent's requests (access and token rows) in the
// window; coverage_start_time is the store's CoverageStart of the tenant (empty when the store holds
// none of its rows or cannot say).
func (r *Reader) Usage(ctx context.Context, req *monitorv1.GetAgentUsageRequest) (*monitorv1.GetAgentUsageResponse, error) {
	tenant, err := parseAgent("agent", req.GetAgent())
	if err != nil {
		return nil, err
	}
	if req.GetStartTime() == nil {
		return nil, errs.InvalidArgument("start_time", "start_time is required")
	}
	from, to, err := r.window("start_time", "end_time", req.GetStartTime(), req.GetEndTime(), MaxUsageWindow)
	if err != nil {
		return nil, err
	}
	if err := r.authorize(ctx, tenant); err != nil {
		return nil, err
	}
	unavailable := func(err error) error {
		return errs.Unavailable("TELEMETRY_UNAVAILABLE", "the telemetry store did not answer", err)
	}
	w := store.Window{Tenant: tenant, Agent: req.GetAgent(), From: from, To: to}
	resp := &monitorv1.GetAgentUsageResponse{}
	if start, ok, err := r.coverage.start(ctx, r.cfg.Analytics, tenant, r.cfg.Now()); err != nil {
		return nil, unavailable(err)
	} else if ok {
		resp.CoverageStartTime = timestamppb.New(start)
	}
	last, err := r.cfg.Analytics.LastActive(ctx, store.Window{Tenant: tenant, Agent: req.GetAgent(), From: from, To: later(to, r.cfg.Now())})
	if err != nil {
		return nil, unavailable(err)
	}
	if t, ok := last[req.GetAgent()]; ok && !t.IsZero() {
		resp.LastActiveTime = timestamppb.New(t)
	}
	hours, err := r.cfg.Analytics.Hourly(ctx, w)
	if err != nil {
		return nil, unavailable(err)
	}
	for _, h := range hours {
		resp.Events += h.Requests
	}
	for _, d := range []struct {
		dim store.Dimension
		out *[]*monitorv1.UsageCount
	}{{store.DimScope, &resp.Scopes}, {store.DimResource, &resp.Resources}} {
		usage, err := r.cfg.Analytics.Usage(ctx, w, d.dim)
		if err != nil {
			return nil, unavailable(err)
		}
		for _, u := range usage {
			if u.Agent != req.GetAgent() {
				continue
			}
			*d.out = append(*d.out, &monitorv1.UsageCount{Value: u.Value, Count: u.Count, LastSeen: timestamppb.New(u.LastSeen)})
		}
	}
	return resp, nil
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
