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
	for _, c := range store.CheckRanges(rows, clusterSpan, checkChunk) {
		out = append(out, CheckRange{Tenant: c.Tenant, Lo: c.Lo, Hi: c.Hi, IDs: len(c.IDs)})
	}
	return out
}
