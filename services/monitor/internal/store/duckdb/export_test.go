package duckdb

import "github.com/agentid/agentid/services/monitor/internal/store"

// CheckRange is one duplicate check of a batch, for tests.
type CheckRange struct {
	Tenant string
	Lo, Hi int64
	IDs    int
}

// CheckClusters exposes the duplicate checks Insert runs for a batch.
func CheckClusters(rows []store.Event) []CheckRange {
	var out []CheckRange
	for _, c := range checkClusters(rows) {
		out = append(out, CheckRange{Tenant: c.tenant, Lo: c.lo, Hi: c.hi, IDs: len(c.ids)})
	}
	return out
}
