package alerts_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
	"github.com/agentid/agentid/services/monitor/internal/alerts"
	"github.com/agentid/agentid/services/monitor/internal/store"
)

// analytics answers the reads from fixed rows of tenants/acme/agents/etl.
type analytics struct{ down bool }

func (a analytics) err() error {
	if a.down {
		return errors.New("connection refused")
	}
	return nil
}

func (a analytics) Hourly(_ context.Context, w store.Window) ([]store.Hourly, error) {
	return []store.Hourly{{Tenant: w.Tenant, Agent: w.Agent, Hour: w.From.Truncate(time.Hour), Requests: 7, Denied: 1}}, a.err()
}

func (a analytics) Usage(_ context.Context, w store.Window, dim store.Dimension) ([]store.Usage, error) {
	return []store.Usage{{Agent: w.Agent, Value: string(dim) + "-1", Count: 3, LastSeen: w.From}}, a.err()
}

func (a analytics) Quantiles(context.Context, store.Window) ([]store.Spread, error) {
	return nil, a.err()
}

func (a analytics) LastActive(_ context.Context, w store.Window) (map[string]time.Time, error) {
	return map[string]time.Time{w.Agent: t0}, a.err()
}

func (a analytics) Tenants(context.Context) ([]string, error) { return []string{"acme"}, a.err() }

func reader(t *testing.T, an analytics) *alerts.Reader {
	t.Helper()
	s := alerts.NewStore(0)
	s.Put(alert("acme", "a1", "tenants/acme/agents/etl", "bulk_export", crit, 1))
	r, err := alerts.NewReader(alerts.ReaderConfig{
		Alerts: s, Analytics: an,
		TenantKnown: func(ctx context.Context, tenant string) (bool, error) {
			ts, err := an.Tenants(ctx)
			return len(ts) > 0 && ts[0] == tenant, err
		},
		Baselines: baselines{},
		Now:       func() time.Time { return t0.Add(time.Hour) },
	})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

type baselines struct{}

func (baselines) BaselineOf(tenant, agent string) (*monitorv1.Baseline, bool) {
	if agent != "tenants/acme/agents/etl" {
		return nil, false
	}
	return &monitorv1.Baseline{Agent: agent, Events: 500}, true
}

func as(tenant string, roles ...authn.Role) context.Context {
	return authn.WithPrincipal(context.Background(), &authn.Principal{ID: "p", Kind: authn.KindHuman, Tenant: tenant, Roles: roles})
}

func TestReaderValidatesAndAuthorizes(t *testing.T) {
	r := reader(t, analytics{})
	admin := as(authn.SystemTenant, authn.RolePlatformAdmin)
	ts := func(d time.Duration) *timestamppb.Timestamp { return timestamppb.New(t0.Add(d)) }
	tests := []struct {
		name      string
		ctx       context.Context
		call      func(context.Context) error
		wantKind  errs.Kind
		wantField string
	}{
		{"list ok", admin, func(ctx context.Context) error {
			_, err := r.List(ctx, &monitorv1.ListAlertsRequest{Parent: "tenants/acme"})
			return err
		}, 0, ""},
		{"list without parent", admin, func(ctx context.Context) error {
			_, err := r.List(ctx, &monitorv1.ListAlertsRequest{})
			return err
		}, errs.KindInvalidArgument, "parent"},
		{"list agent of another tenant", admin, func(ctx context.Context) error {
			_, err := r.List(ctx, &monitorv1.ListAlertsRequest{Parent: "tenants/acme", Agent: "tenants/globex/agents/x"})
			return err
		}, errs.KindInvalidArgument, "agent"},
		{"list unknown detector", admin, func(ctx context.Context) error {
			_, err := r.List(ctx, &monitorv1.ListAlertsRequest{Parent: "tenants/acme", Detector: "sql_injection"})
			return err
		}, errs.KindInvalidArgument, "detector"},
		{"list unknown severity", admin, func(ctx context.Context) error {
			_, err := r.List(ctx, &monitorv1.ListAlertsRequest{Parent: "tenants/acme", MinSeverity: 9})
			return err
		}, errs.KindInvalidArgument, "min_severity"},
		{"list bad start", admin, func(ctx context.Context) error {
			_, err := r.List(ctx, &monitorv1.ListAlertsRequest{Parent: "tenants/acme", StartTime: &timestamppb.Timestamp{Nanos: -1}})
			return err
		}, errs.KindInvalidArgument, "start_time"},
		{"list unknown tenant", admin, func(ctx context.Context) error {
			_, err := r.List(ctx, &monitorv1.ListAlertsRequest{Parent: "tenants/initech"})
			return err
		}, errs.KindNotFound, ""},
		{"list by another tenant's analyst", as("globex", authn.RoleAnalyst), func(ctx context.Context) error {
			_, err := r.List(ctx, &monitorv1.ListAlertsRequest{Parent: "tenants/acme"})
			return err
		}, errs.KindNotFound, ""},
		{"list by an owner", as("acme", authn.RoleOwner), func(ctx context.Context) error {
			_, err := r.List(ctx, &monitorv1.ListAlertsRequest{Parent: "tenants/acme"})
			return err
		}, errs.KindPermissionDenied, ""},
		{"get malformed name", admin, func(ctx context.Context) error {
			_, err := r.Get(ctx, &monitorv1.GetAlertRequest{Name: "tenants/acme/agents/a1"})
			return err
		}, errs.KindInvalidArgument, "name"},
		{"get unknown alert", as("acme", authn.RoleAuditor), func(ctx context.Context) error {
			_, err := r.Get(ctx, &monitorv1.GetAlertRequest{Name: "tenants/acme/alerts/zz"})
			return err
		}, errs.KindNotFound, ""},
		{"baseline without agent", admin, func(ctx context.Context) error {
			_, err := r.Baseline(ctx, &monitorv1.GetBaselineRequest{})
			return err
		}, errs.KindInvalidArgument, "agent"},
		{"baseline window backwards", admin, func(ctx context.Context) error {
			_, err := r.Baseline(ctx, &monitorv1.GetBaselineRequest{Agent: "tenants/acme/agents/etl", ActivityStart: ts(time.Hour), ActivityEnd: ts(0)})
			return err
		}, errs.KindInvalidArgument, "activity_start"},
		{"baseline window too long", admin, func(ctx context.Context) error {
			_, err := r.Baseline(ctx, &monitorv1.GetBaselineRequest{Agent: "tenants/acme/agents/etl", ActivityStart: ts(-100 * 24 * time.Hour)})
			return err
		}, errs.KindInvalidArgument, "activity_start"},
		{"baseline end without start", admin, func(ctx context.Context) error {
			_, err := r.Baseline(ctx, &monitorv1.GetBaselineRequest{Agent: "tenants/acme/agents/etl", ActivityEnd: ts(0)})
			return err
		}, errs.KindInvalidArgument, "activity_start"},
		{"baseline of an agent without one", admin, func(ctx context.Context) error {
			_, err := r.Baseline(ctx, &monitorv1.GetBaselineRequest{Agent: "tenants/acme/agents/new"})
			return err
		}, errs.KindNotFound, ""},
		{"usage without start", admin, func(ctx context.Context) error {
			_, err := r.Usage(ctx, &monitorv1.GetAgentUsageRequest{Agent: "tenants/acme/agents/etl"})
			return err
		}, errs.KindInvalidArgument, "start_time"},
		{"usage by the lifecycle worker", as(authn.SystemTenant, authn.RoleLifecycleWorker), func(ctx context.Context) error {
			_, err := r.Usage(ctx, &monitorv1.GetAgentUsageRequest{Agent: "tenants/acme/agents/etl", StartTime: ts(0)})
			return err
		}, 0, ""},
		{"usage of an unknown tenant by the lifecycle worker", as(authn.SystemTenant, authn.RoleLifecycleWorker), func(ctx context.Context) error {
			_, err := r.Usage(ctx, &monitorv1.GetAgentUsageRequest{Agent: "tenants/initech/agents/etl", StartTime: ts(0)})
			return err
		}, errs.KindNotFound, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call(tt.ctx)
			if tt.wantKind == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if errs.KindOf(err) != tt.wantKind {
				t.Fatalf("err = %v, want kind %v", err, tt.wantKind)
			}
			if f := errs.FromStatus(err).Field; tt.wantField != "" && f != tt.wantField {
				t.Fatalf("field = %q, want %q", f, tt.wantField)
			}
		})
	}
}

func TestReaderAnswersBaselineAndUsage(t *testing.T) {
	r := reader(t, analytics{})
	ctx := as("acme", authn.RoleAnalyst)
	b, err := r.Baseline(ctx, &monitorv1.GetBaselineRequest{Agent: "tenants/acme/agents/etl", ActivityStart: timestamppb.New(t0)})
	if err != nil {
		t.Fatal(err)
	}
	if b.GetBaseline().GetEvents() != 500 || len(b.GetActivity()) != 1 || b.GetActivity()[0].GetRequests() != 7 || b.GetActivity()[0].GetDenied() != 1 {
		t.Fatalf("baseline response = %v", b)
	}
	u, err := r.Usage(ctx, &monitorv1.GetAgentUsageRequest{Agent: "tenants/acme/agents/etl", StartTime: timestamppb.New(t0)})
	if err != nil {
		t.Fatal(err)
	}
	if !u.GetLastActiveTime().AsTime().Equal(t0) || u.GetEvents() != 7 || len(u.GetScopes()) != 1 || u.GetScopes()[0].GetValue() != "scope-1" ||
		len(u.GetResources()) != 1 || u.GetResources()[0].GetValue() != "resource-1" {
		t.Fatalf("usage = %v", u)
	}

	down := reader(t, analytics{down: true})
	if _, err := down.Usage(ctx, &monitorv1.GetAgentUsageRequest{Agent: "tenants/acme/agents/etl", StartTime: timestamppb.New(t0)}); errs.KindOf(err) != errs.KindUnavailable {
		t.Fatalf("usage with the store down: %v, want Unavailable", err)
	}
}
