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
)

// coveredAnalytics answers like analytics and, per tenant, a coverage start; reads counts them.
type coveredAnalytics struct {
	analytics
	starts map[string]time.Time
	fail   bool
	reads  *int
}

func (a coveredAnalytics) CoverageStart(_ context.Context, tenant string) (time.Time, bool, error) {
	*a.reads++
	if a.fail {
		return time.Time{}, false, errors.New("connection refused")
	}
	s, ok := a.starts[tenant]
	return s, ok, nil
}

func TestUsageAnswersTheStoresCoverage(t *testing.T) {
	start := t0.Add(-30 * 24 * time.Hour)
	tests := []struct {
		name     string
		an       any
		want     time.Time
		wantCode errs.Kind
	}{
		{name: "covered", an: coveredAnalytics{starts: map[string]time.Time{"acme": start}, reads: new(int)}, want: start},
		{name: "no row of the tenant", an: coveredAnalytics{starts: map[string]time.Time{"globex": start}, reads: new(int)}},
		{name: "a store that cannot say", an: analytics{}},
		{name: "store down", an: coveredAnalytics{fail: true, reads: new(int)}, wantCode: errs.KindUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now := t0.Add(time.Hour)
			r := newCoverageReader(t, tt.an, func() time.Time { return now })
			ctx := as("acme", authn.RoleAnalyst)
			req := &monitorv1.GetAgentUsageRequest{Agent: "tenants/acme/agents/etl", StartTime: timestamppb.New(t0.Add(-90 * 24 * time.Hour))}
			u, err := r.Usage(ctx, req)
			if tt.wantCode != 0 {
				if errs.KindOf(err) != tt.wantCode {
					t.Fatalf("Usage: %v, want %v", err, tt.wantCode)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := time.Time{}
			if u.GetCoverageStartTime() != nil {
				got = u.GetCoverageStartTime().AsTime()
			}
			if !got.Equal(tt.want) {
				t.Fatalf("coverage_start_time = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestCoverageIsReadOncePerMinute(t *testing.T) {
	reads := new(int)
	start := t0.Add(-time.Hour)
	an := coveredAnalytics{starts: map[string]time.Time{"acme": start}, reads: reads}
	now := t0
	r := newCoverageReader(t, an, func() time.Time { return now })
	ctx := as("acme", authn.RoleAnalyst)
	req := &monitorv1.GetAgentUsageRequest{Agent: "tenants/acme/agents/etl", StartTime: timestamppb.New(t0.Add(-time.Hour))}
	for range 3 {
		if _, err := r.Usage(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
	if *reads != 1 {
		t.Fatalf("coverage read %d times within a minute, want 1", *reads)
	}
	now = now.Add(time.Minute)
	if _, err := r.Usage(ctx, req); err != nil {
		t.Fatal(err)
	}
	if *reads != 2 {
		t.Fatalf("coverage read %d times after a minute, want 2", *reads)
	}
}

func newCoverageReader(t *testing.T, an any, now func() time.Time) *alerts.Reader {
	t.Helper()
	cfg := alerts.ReaderConfig{
		Alerts: alerts.NewStore(0),
		TenantKnown: func(ctx context.Context, tenant string) (bool, error) {
			return tenant == "acme", nil
		},
		Now: now,
	}
	switch a := an.(type) {
	case coveredAnalytics:
		cfg.Analytics = a
	case analytics:
		cfg.Analytics = a
	}
	r, err := alerts.NewReader(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}
