package alerts

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/agentid/agentid/services/monitor/internal/store"
)

// BenchmarkRecentRowsMemory reports the heap the filter of judged rows holds per row when full
// (DefaultRecentRowsMax's comment follows from it):
// go test -run - -bench RecentRowsMemory ./services/monitor/internal/alerts/
func BenchmarkRecentRowsMemory(b *testing.B) {
	const n = 1_000_000
	now := time.Date(2026, 11, 30, 3, 0, 0, 0, time.UTC)
	batches := make([][]store.Event, n/1000)
	for i := range batches {
		batches[i] = make([]store.Event, 1000)
		for j := range batches[i] {
			batches[i][j] = store.Event{Tenant: fmt.Sprintf("tenant-%d", j%10), StreamSeq: uint64(i + 1),
				EventID: fmt.Sprintf("0b9c6e2a-4f1d-4c8e-9a7b-%012d", i*1000+j)}
		}
	}
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		r := newRecentRows(time.Hour, n, func() time.Time { return now })
		for _, rows := range batches {
			r.fresh(rows)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "heap-B/row")
		runtime.KeepAlive(r)
	}
}
