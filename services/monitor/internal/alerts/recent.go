package alerts

import (
	"sync"
	"time"

	"github.com/agentid/agentid/services/monitor/internal/store"
)

// Bounds of the filter of rows already judged.
const (
	// DefaultRecentRowsTTL is how long a judged row's id is remembered.
	DefaultRecentRowsTTL = 10 * time.Minute
	// DefaultRecentRowsMax is the most ids remembered: about 85 MB at most (about 85 bytes per row,
	// BenchmarkRecentRowsMemory; about 100 plus the id's string when the map held the strings).
	DefaultRecentRowsMax = 1_000_000
)

// recentRows remembers the ids of rows detection judged recently, with the TELEMETRY sequence of
// the event they came in, so that a row sent again in another event (a reporter resending a batch
// after the stream's duplicate window: the store skips it) is not counted twice, while the same
// event delivered again (never acknowledged: the monitor stopped before its alerts were out) is
// judged again.
type recentRows struct {
	ttl   time.Duration
	max   int
	now   func() time.Time
	start time.Time // the ages of entries count from here, so a step of the wall clock moves none

	mu    sync.Mutex
	seq   map[store.Key]uint64
	queue []recentEntry // oldest first, from head
	head  int
}

type recentEntry struct {
	key store.Key
	at  time.Duration // since the filter's start, on the monotonic clock where now has one
}

func newRecentRows(ttl time.Duration, maxIDs int, now func() time.Time) *recentRows {
	return &recentRows{ttl: ttl, max: maxIDs, now: now, start: now(), seq: map[store.Key]uint64{}}
}

// fresh returns the rows not judged already in another event (rows without a stream sequence are
// always fresh), and remembers them.
func (r *recentRows) fresh(rows []store.Event) (out []store.Event, skipped int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	r.expire(now)
	out = rows[:0:0]
	for _, row := range rows {
		if row.StreamSeq == 0 {
			out = append(out, row)
			continue
		}
		k := store.KeyOf(row.Tenant, row.EventID)
		if seq, ok := r.seq[k]; ok {
			if seq != row.StreamSeq {
				skipped++
				continue
			}
			out = append(out, row) // the same event again: judged again
			continue
		}
		r.seq[k] = row.StreamSeq
		r.queue = append(r.queue, recentEntry{key: k, at: now.Sub(r.start)})
		out = append(out, row)
	}
	for len(r.seq) > r.max {
		r.pop()
	}
	return out, skipped
}

// expire forgets the ids older than the TTL.
func (r *recentRows) expire(now time.Time) {
	age := now.Sub(r.start)
	for r.head < len(r.queue) && age-r.queue[r.head].at >= r.ttl {
		r.pop()
	}
	if r.head > len(r.queue)/2 && r.head > 1024 {
		r.queue = append(r.queue[:0], r.queue[r.head:]...)
		r.head = 0
	}
}

func (r *recentRows) pop() {
	delete(r.seq, r.queue[r.head].key)
	r.queue[r.head] = recentEntry{}
	r.head++
}
