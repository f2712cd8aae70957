package storetest

import (
	"context"
	"testing"
	"time"

	"github.com/agentid/agentid/services/monitor/internal/store"
)

// CoverageReader is what a store answers about the completeness of its telemetry (the monitor's
// GetAgentUsage.coverage_start_time).
type CoverageReader interface {
	// CoverageStart returns from when the store holds tenant's telemetry completely; ok is false
	// when it holds no row of the tenant.
	CoverageStart(ctx context.Context, tenant string) (time.Time, bool, error)
}

// RunCoverage checks a store's CoverageStart: the start of the UTC hour after the tenant's oldest
// row, per tenant, nothing for a tenant without rows. newStore returns an empty store, closed by
// the test.
func RunCoverage(t *testing.T, newStore func(t *testing.T) store.Store) {
	s := newStore(t)
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	c, ok := s.(CoverageReader)
	if !ok {
		t.Fatalf("%T does not answer CoverageStart", s)
	}
	ctx := context.Background()
	if got, ok, err := c.CoverageStart(ctx, "acme"); err != nil || ok {
		t.Fatalf("empty store: CoverageStart = %v, %v, %v; want nothing", got, ok, err)
	}
	// base is 15:09:26.535; rows of acme a day later, at base and 40 days later, in separate batches
	// and out of order; globex's oldest row is 3 days later.
	other := event("g1", 72*time.Hour)
	other.Tenant, other.Agent = "globex", "tenants/globex/agents/faq"
	insert(t, s, event("a1", 24*time.Hour), other)
	insert(t, s, event("a2", 40*24*time.Hour))
	insert(t, s, event("a3", 0))
	for _, tt := range []struct {
		tenant string
		want   time.Time
		wantOK bool
	}{
		{"acme", time.Date(2031, 3, 14, 16, 0, 0, 0, time.UTC), true},
		{"globex", time.Date(2031, 3, 17, 16, 0, 0, 0, time.UTC), true},
		{"initech", time.Time{}, false},
	} {
		got, ok, err := c.CoverageStart(ctx, tt.tenant)
		if err != nil || ok != tt.wantOK || !got.Equal(tt.want) {
			t.Errorf("CoverageStart(%s) = %v, %v, %v; want %v, %v", tt.tenant, got, ok, err, tt.want, tt.wantOK)
		}
		if ok && got.Location() != time.UTC {
			t.Errorf("CoverageStart(%s) is in %v, want UTC", tt.tenant, got.Location())
		}
	}
}
