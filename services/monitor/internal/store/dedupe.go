package store

import (
	"slices"
	"strings"
	"time"
)

// Bounds of the ids a store remembers having inserted (RecentIDs).
const (
	// RecentHorizon is how long an inserted id is remembered: well beyond the TELEMETRY stream's
	// duplicate window (2 minutes), its consumer's ack wait (30 s) and an access reporter's retries
	// of one batch (under a minute by default).
	RecentHorizon = 5 * time.Minute
	// MaxRecentIDs caps the remembered ids (about 100 bytes each); the oldest go first, so at a
	// high rate the window is shorter than RecentHorizon (about 6 s at 50,000 rows/s).
	MaxRecentIDs = 300_000
)

// RecentIDs are the event ids a store inserted within RecentHorizon, at most MaxRecentIDs. The
// zero value is empty; it is not safe for concurrent use.
type RecentIDs struct {
	ids   map[string]struct{}
	order []recentBatch
}

type recentBatch struct {
	at  time.Time
	ids []string
}

// Has reports whether id is remembered.
func (r *RecentIDs) Has(id string) bool {
	_, ok := r.ids[id]
	return ok
}

// Add remembers the ids of rows, inserted at now, and forgets those older than RecentHorizon or
// beyond MaxRecentIDs.
func (r *RecentIDs) Add(now time.Time, rows []Event) {
	if r.ids == nil {
		r.ids = make(map[string]struct{})
	}
	b := recentBatch{at: now, ids: make([]string, len(rows))}
	for i, e := range rows {
		b.ids[i] = e.EventID
		r.ids[e.EventID] = struct{}{}
	}
	r.order = append(r.order, b)
	for len(r.order) > 0 && (now.Sub(r.order[0].at) > RecentHorizon || len(r.ids) > MaxRecentIDs) {
		for _, id := range r.order[0].ids {
			delete(r.ids, id)
		}
		r.order[0] = recentBatch{}
		r.order = r.order[1:]
	}
}

// CheckRange is one check of a batch for stored copies: a tenant's rows with a time (Unix
// milliseconds) in [Lo, Hi] and one of IDs.
type CheckRange struct {
	Tenant string
	Lo, Hi int64
	IDs    []string
}

// CheckRanges splits rows into the checks for stored copies: per tenant, times sorted, a new check
// wherever the next time lies more than span after the check's first or the check names maxIDs
// ids. A store reads the rows of each check's time range once, so a batch that mixes a late event
// with new ones is checked in two narrow ranges instead of one that spans the time between them.
func CheckRanges(rows []Event, span time.Duration, maxIDs int) []CheckRange {
	sorted := slices.Clone(rows)
	slices.SortFunc(sorted, func(a, b Event) int {
		if c := strings.Compare(a.Tenant, b.Tenant); c != 0 {
			return c
		}
		return a.Time.Compare(b.Time)
	})
	spanMS := span.Milliseconds()
	var out []CheckRange
	for _, e := range sorted {
		ms := e.Time.UnixMilli()
		if n := len(out); n == 0 || out[n-1].Tenant != e.Tenant || ms-out[n-1].Lo > spanMS || len(out[n-1].IDs) == maxIDs {
			out = append(out, CheckRange{Tenant: e.Tenant, Lo: ms})
		}
		c := &out[len(out)-1]
		c.Hi = ms
		c.IDs = append(c.IDs, e.EventID)
	}
	return out
}
