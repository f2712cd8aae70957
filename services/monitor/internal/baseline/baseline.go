// Package baseline learns each agent's normal behaviour, and its class's, from the telemetry store's
// aggregates (store.Analytics) over a sliding window, and keeps it current in memory between full
// recomputations.
//
// A Baseline holds the requests per hour of the week (median and MAD over the weeks of the window,
// hours without activity counted as zero), the hours of the day the agent is active in, the sets of
// resources, scopes, source networks and on-behalf-of users it used (with counts, capped at
// Config.MaxValues values per dimension: the most used are kept and the set is marked saturated), the
// median and MAD of rows and bytes per access, the largest rows and bytes returned in one hour, and the
// deny rate. Incremental updates (Manager.Observe) add new values to the sets, learn which resources
// each on-behalf-of user's delegations touch, and count requests and denies; hour-of-week statistics
// and active hours change only at the next recomputation.
//
// An agent's class is its owner team, environment and sorted granted scopes. An agent with less than
// Config.MinDays days or Config.MinRequests requests of history is judged against its class's baseline
// (pooled from every member's history) while it builds its own.
package baseline

import (
	"cmp"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/agentid/agentid/services/monitor/internal/store"
)

// Defaults of Config.
const (
	DefaultWindow      = 28 * 24 * time.Hour
	DefaultMinDays     = 7
	DefaultMinRequests = 200
	DefaultMaxValues   = 256
	DefaultMaxPairs    = 4096
)

// HoursPerWeek is the number of hour-of-week slots (0 = Monday 00:00 UTC).
const HoursPerWeek = 168

// HourOfWeek returns t's hour of the week, 0 (Monday 00:00 UTC) to 167.
func HourOfWeek(t time.Time) int {
	t = t.UTC()
	return (int(t.Weekday())+6)%7*24 + t.Hour()
}

// AgentClass is what puts agents into one class: the same owner team, environment and granted scopes.
type AgentClass struct {
	// Owner is the owner team.
	Owner string
	// Environment is the environment tag.
	Environment string
	// Scopes are the granted scopes, in any order.
	Scopes []string
}

// Key returns the class key: owner, environment and the sorted, distinct scopes, separated by "|".
func (c AgentClass) Key() string {
	if c.Owner == "" && c.Environment == "" && len(c.Scopes) == 0 {
		return ""
	}
	s := slices.Clone(c.Scopes)
	slices.Sort(s)
	s = slices.Compact(s)
	return c.Owner + "|" + c.Environment + "|" + strings.Join(s, ",")
}

// HourStats is the baseline of one hour of the week.
type HourStats struct {
	// Median and MAD of the requests in that hour over the samples.
	Median, MAD float64
	// Max is the most requests in that hour in any sample.
	Max float64
	// Samples is the number of hours (weeks, or member-weeks for a class) observed.
	Samples int
}

// Seen is how often, and when last, a value was used.
type Seen struct {
	// Count is the number of rows with the value.
	Count int64
	// LastSeen is the time of the latest one.
	LastSeen time.Time
}

// values is a capped set of values with counts.
type values struct {
	m         map[string]Seen
	saturated bool
}

// Baseline is one agent's (or one class's) learned behaviour. The exported fields are fixed at
// recomputation; the sets and counters are read through methods and safe for concurrent use.
type Baseline struct {
	// Tenant, and Agent (empty for a class baseline).
	Tenant, Agent string
	// ClassKey is the class the agent belonged to at recomputation (empty if unknown).
	ClassKey string
	// ComputeTime is when the baseline was recomputed.
	ComputeTime time.Time
	// WindowStart and WindowEnd bound the history it was learned from.
	WindowStart, WindowEnd time.Time
	// Days is the length of history it covers (from the first active hour in the window).
	Days float64
	// Members is the number of agents pooled in a class baseline (1 for an agent).
	Members int
	// HourOfWeek holds the requests-per-hour statistics by hour of the week.
	HourOfWeek [HoursPerWeek]HourStats
	// HourOfDay counts the requests in each hour of the day (UTC) in the window.
	HourOfDay [24]int64
	// Accesses counts the access rows the rows and bytes statistics come from.
	Accesses int64
	// RowsMedian, RowsMAD, BytesMedian and BytesMAD describe rows and bytes per access.
	RowsMedian, RowsMAD, BytesMedian, BytesMAD float64
	// MaxHourRows and MaxHourBytes are the most rows and bytes returned in any one hour of the window.
	MaxHourRows, MaxHourBytes int64

	mu                     sync.RWMutex
	requests, denied       int64
	dims                   map[store.Dimension]*values
	pairs                  map[string]map[string]struct{} // on-behalf-of user -> resources touched (observed)
	pairObs                map[string]int64               // observed delegated requests per user
	npairs, maxValues, max int
}

func newBaseline(tenant, agent string, maxValues, maxPairs int) *Baseline {
	b := &Baseline{Tenant: tenant, Agent: agent, Members: 1, maxValues: maxValues, max: maxPairs,
		dims:  map[store.Dimension]*values{},
		pairs: map[string]map[string]struct{}{}, pairObs: map[string]int64{}}
	for _, d := range Dimensions {
		b.dims[d] = &values{m: map[string]Seen{}}
	}
	return b
}

// Dimensions are the value sets a baseline keeps.
var Dimensions = []store.Dimension{store.DimResource, store.DimScope, store.DimSourceNetwork, store.DimOnBehalfOf}

// Requests returns the requests counted (window plus observed since).
func (b *Baseline) Requests() int64 {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.requests
}

// DenyRate returns the share of requests refused (0 when there were none).
func (b *Baseline) DenyRate() float64 {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.requests == 0 {
		return 0
	}
	return float64(b.denied) / float64(b.requests)
}

// ActiveHour reports whether the agent made requests in hour h (0..23, UTC) of the day in the window.
func (b *Baseline) ActiveHour(h int) bool { return h >= 0 && h < 24 && b.HourOfDay[h] > 0 }

// Known reports whether v was seen in dimension dim, and whether the set is saturated (the agent used
// more distinct values than the cap, so an unknown value proves nothing).
func (b *Baseline) Known(dim store.Dimension, v string) (known, saturated bool) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	d := b.dims[dim]
	if d == nil {
		return false, true
	}
	_, known = d.m[v]
	return known, d.saturated
}

// Len returns the number of values kept in dimension dim.
func (b *Baseline) Len(dim store.Dimension) int {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if d := b.dims[dim]; d != nil {
		return len(d.m)
	}
	return 0
}

// Values returns the values of dimension dim, most used first (then by value).
func (b *Baseline) Values(dim store.Dimension) []store.Usage {
	b.mu.RLock()
	defer b.mu.RUnlock()
	d := b.dims[dim]
	if d == nil {
		return nil
	}
	out := make([]store.Usage, 0, len(d.m))
	for v, s := range d.m {
		out = append(out, store.Usage{Agent: b.Agent, Value: v, Count: s.Count, LastSeen: s.LastSeen})
	}
	sortUsage(out)
	return out
}

// UserTouched reports whether the on-behalf-of user's observed delegations touched resource, and
// whether enough of the user's delegations (at least minObs) were observed to judge.
func (b *Baseline) UserTouched(user, resource string, minObs int64) (touched, judged bool) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.pairObs[user] < minObs {
		return false, false
	}
	_, touched = b.pairs[user][resource]
	return touched, true
}

func sortUsage(u []store.Usage) {
	slices.SortFunc(u, func(a, b store.Usage) int {
		if c := cmp.Compare(b.Count, a.Count); c != 0 {
			return c
		}
		return cmp.Compare(a.Value, b.Value)
	})
}

// add counts one use of v in dim at t (caller holds b.mu for writing).
func (b *Baseline) add(dim store.Dimension, v string, t time.Time) {
	d := b.dims[dim]
	if v == "" || d == nil {
		return
	}
	s, ok := d.m[v]
	if !ok && len(d.m) >= b.maxValues {
		d.saturated = true
		return
	}
	s.Count++
	if t.After(s.LastSeen) {
		s.LastSeen = t
	}
	d.m[v] = s
}

// observe adds one request row (caller holds b.mu for writing).
func (b *Baseline) observe(e *store.Event) {
	b.requests++
	if Denied(e.Outcome) {
		b.denied++
	}
	b.add(store.DimResource, e.Resource, e.Time)
	b.add(store.DimSourceNetwork, e.SourceNetwork, e.Time)
	b.add(store.DimOnBehalfOf, e.OnBehalfOf, e.Time)
	for _, s := range e.Scopes {
		b.add(store.DimScope, s, e.Time)
	}
	if e.OnBehalfOf != "" && e.Resource != "" && e.Kind == store.KindAccess {
		b.addPair(e.OnBehalfOf, e.Resource)
	}
}

func (b *Baseline) addPair(user, resource string) {
	rs, ok := b.pairs[user]
	if !ok {
		if b.npairs >= b.max {
			return
		}
		rs = map[string]struct{}{}
		b.pairs[user] = rs
	}
	if _, ok := rs[resource]; !ok {
		if b.npairs >= b.max {
			return
		}
		rs[resource] = struct{}{}
		b.npairs++
	}
	b.pairObs[user]++
}

// IsRequest reports whether a row is a request of its agent (kinds access and token.requested).
func IsRequest(kind string) bool { return kind == store.KindAccess || kind == store.KindTokenRequested }

// Denied reports whether a request's outcome is a refusal: not one of store.AllowedOutcomes.
func Denied(outcome string) bool { return !slices.Contains(store.AllowedOutcomes, outcome) }

// young reports whether the agent has too little history of its own.
func (b *Baseline) young(minDays float64, minRequests int64) bool {
	return b.Days < minDays || b.Requests() < minRequests
}

// clonePairs copies the observed delegation pairs of old into b (learned knowledge survives a
// recomputation, which cannot see them in the aggregates).
func (b *Baseline) clonePairs(old *Baseline) {
	old.mu.RLock()
	defer old.mu.RUnlock()
	for u, rs := range old.pairs {
		b.pairs[u] = maps.Clone(rs)
		b.npairs += len(rs)
	}
	maps.Copy(b.pairObs, old.pairObs)
}
