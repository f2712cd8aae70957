package alerts

import (
	"context"
	"sync"
	"time"
)

// CoverageReader is what a telemetry store answers about the completeness of its rows; a store
// that implements it gives GetAgentUsage its coverage_start_time (docs/deprovisioning.md).
type CoverageReader interface {
	// CoverageStart returns from when the store holds tenant's telemetry completely; ok is false
	// when it holds no row of the tenant.
	CoverageStart(ctx context.Context, tenant string) (time.Time, bool, error)
}

// coverageTTL is how long a tenant's coverage start is reused: a sweep asks once per agent, the
// store reads the tenant's rows for it.
const coverageTTL = time.Minute

// coverageCache remembers each tenant's coverage start for coverageTTL.
type coverageCache struct {
	mu      sync.Mutex
	tenants map[string]coverageEntry
}

type coverageEntry struct {
	start, read time.Time
	ok          bool
}

// start returns tenant's coverage start from an (an answer younger than coverageTTL is reused);
// a store that is no CoverageReader has none (ok false), which callers take for "nothing known".
func (c *coverageCache) start(ctx context.Context, an any, tenant string, now time.Time) (time.Time, bool, error) {
	cr, ok := an.(CoverageReader)
	if !ok {
		return time.Time{}, false, nil
	}
	c.mu.Lock()
	e, hit := c.tenants[tenant]
	c.mu.Unlock()
	if hit && now.Sub(e.read) < coverageTTL && !now.Before(e.read) {
		return e.start, e.ok, nil
	}
	start, ok, err := cr.CoverageStart(ctx, tenant)
	if err != nil {
		return time.Time{}, false, err
	}
	c.mu.Lock()
	if c.tenants == nil {
		c.tenants = map[string]coverageEntry{}
	}
	c.tenants[tenant] = coverageEntry{start: start, read: now, ok: ok}
	c.mu.Unlock()
	return start, ok, nil
}
