package synth

import (
	"cmp"
	"context"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/agentid/agentid/services/monitor/internal/store"
)

// Memory is an in-memory store.Analytics over the rows added to it, with the stores' semantics, for
// tests and benchmarks that need baselines without an engine. It keeps a compact copy of each row.
type Memory struct {
	mu      sync.RWMutex
	strs    []string
	ids     map[string]int32
	sets    [][]int32
	setIDs  map[string]int32
	agents  map[[2]int32][]row // (tenant, agent) -> rows in insertion order
	tenants map[int32]bool
}

type row struct {
	ms                  int64
	rows, bytes         int64
	resource, net, user int32
	scopes              int32 // index into Memory.sets
	request, access     bool
	denied              bool
	usesScopes          bool // store.UsesScopes: Usage of DimScope counts its scopes
	activity            bool // store.IsActivity: LastActive counts it
}

var _ store.Analytics = (*Memory)(nil)

// NewMemory returns an empty Memory.
func NewMemory() *Memory {
	return &Memory{ids: map[string]int32{"": 0}, strs: []string{""}, sets: [][]int32{nil}, setIDs: map[string]int32{"": 0}, agents: map[[2]int32][]row{}, tenants: map[int32]bool{}}
}

func (m *Memory) intern(s string) int32 {
	if id, ok := m.ids[s]; ok {
		return id
	}
	id := int32(len(m.strs))
	m.strs = append(m.strs, s)
	m.ids[s] = id
	return id
}

func (m *Memory) internSet(scopes []string) int32 {
	key := strings.Join(scopes, "\x00")
	if id, ok := m.setIDs[key]; ok {
		return id
	}
	set := make([]int32, len(scopes))
	for i, s := range scopes {
		set[i] = m.intern(s)
	}
	id := int32(len(m.sets))
	m.sets = append(m.sets, set)
	m.setIDs[key] = id
	return id
}

// Denied reports whether a request row's outcome is a refusal: not one of store.AllowedOutcomes.
func Denied(outcome string) bool { return !slices.Contains(store.AllowedOutcomes, outcome) }

// Add adds rows.
func (m *Memory) Add(events ...store.Event) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, e := range events {
		t := m.intern(e.Tenant)
		m.tenants[t] = true
		if e.Agent == "" {
			continue
		}
		r := row{
			ms:       e.Time.UnixMilli(),
			rows:     e.Rows,
			bytes:    e.Bytes,
			resource: m.intern(e.Resource),
			net:      m.intern(e.SourceNetwork),
			user:     m.intern(e.OnBehalfOf),
			request:  e.Kind == store.KindAccess || e.Kind == store.KindTokenRequested,
			access:   e.Kind == store.KindAccess,
		}
		r.denied = r.request && Denied(e.Outcome)
		r.usesScopes = store.UsesScopes(e.Kind, e.Outcome)
		r.activity = store.IsActivity(e.Kind, e.Outcome)
		r.scopes = m.internSet(e.Scopes)
		k := [2]int32{t, m.intern(e.Agent)}
		m.agents[k] = append(m.agents[k], r)
	}
}

// each calls f with each agent of w's tenant (or w's agent), in agent order, and its rows.
func (m *Memory) each(w store.Window, f func(agent string, rows []row)) error {
	if err := store.CheckWindow(w, false); err != nil {
		return err
	}
	t, ok := m.ids[w.Tenant]
	if !ok {
		return nil
	}
	var keys [][2]int32
	for k := range m.agents {
		if k[0] == t && (w.Agent == "" || m.strs[k[1]] == w.Agent) {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, func(a, b [2]int32) int { return cmp.Compare(m.strs[a[1]], m.strs[b[1]]) })
	for _, k := range keys {
		f(m.strs[k[1]], m.agents[k])
	}
	return nil
}

func in(w store.Window, ms int64) bool {
	from, to := w.Millis()
	return ms >= from && ms < to
}

// Hourly implements store.Analytics.
func (m *Memory) Hourly(_ context.Context, w store.Window) ([]store.Hourly, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	var out []store.Hourly
	err := m.each(w, func(agent string, rows []row) {
		hours := map[int64]*store.Hourly{}
		for _, r := range rows {
			if !r.request || !in(w, r.ms) {
				continue
			}
			hk := r.ms / 3600000
			h := hours[hk]
			if h == nil {
				h = &store.Hourly{Tenant: w.Tenant, Agent: agent, Hour: time.UnixMilli(hk * 3600000).UTC()}
				hours[hk] = h
			}
			h.Requests++
			if r.denied {
				h.Denied++
			}
			h.Rows += r.rows
			h.Bytes += r.bytes
		}
		keys := make([]int64, 0, len(hours))
		for k := range hours {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			out = append(out, *hours[k])
		}
	})
	return out, err
}

// Usage implements store.Analytics.
func (m *Memory) Usage(_ context.Context, w store.Window, dim store.Dimension) ([]store.Usage, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	var out []store.Usage
	err := m.each(w, func(agent string, rows []row) {
		type acc struct {
			n    int64
			last int64
		}
		vals := map[int32]*acc{}
		add := func(v int32, ms int64) {
			if v == 0 {
				return
			}
			a := vals[v]
			if a == nil {
				a = &acc{}
				vals[v] = a
			}
			a.n++
			a.last = max(a.last, ms)
		}
		for _, r := range rows {
			if !in(w, r.ms) {
				continue
			}
			switch dim {
			case store.DimResource:
				add(r.resource, r.ms)
			case store.DimSourceNetwork:
				add(r.net, r.ms)
			case store.DimOnBehalfOf:
				add(r.user, r.ms)
			case store.DimScope:
				if !r.usesScopes {
					continue
				}
				for _, s := range m.sets[r.scopes] {
					add(s, r.ms)
				}
			}
		}
		start := len(out)
		for v, a := range vals {
			out = append(out, store.Usage{Agent: agent, Value: m.strs[v], Count: a.n, LastSeen: time.UnixMilli(a.last).UTC()})
		}
		slices.SortFunc(out[start:], func(a, b store.Usage) int {
			if c := cmp.Compare(b.Count, a.Count); c != 0 {
				return c
			}
			return cmp.Compare(a.Value, b.Value)
		})
	})
	return out, err
}

// Quantiles implements store.Analytics (medians by the midpoint of the two middle values for an even
// count).
func (m *Memory) Quantiles(_ context.Context, w store.Window) ([]store.Spread, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	var out []store.Spread
	err := m.each(w, func(agent string, rows []row) {
		var rs, bs []float64
		for _, r := range rows {
			if r.access && in(w, r.ms) {
				rs = append(rs, float64(r.rows))
				bs = append(bs, float64(r.bytes))
			}
		}
		if len(rs) == 0 {
			return
		}
		sp := store.Spread{Agent: agent, Accesses: int64(len(rs))}
		sp.RowsMedian, sp.RowsMAD = store.MedianMAD(rs)
		sp.BytesMedian, sp.BytesMAD = store.MedianMAD(bs)
		out = append(out, sp)
	})
	return out, err
}

// LastActive implements store.Analytics.
func (m *Memory) LastActive(_ context.Context, w store.Window) (map[string]time.Time, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := map[string]time.Time{}
	if err := store.CheckWindow(w, true); err != nil {
		return nil, err
	}
	w.From = time.Unix(0, 0)
	err := m.each(w, func(agent string, rows []row) {
		last := int64(-1 << 62)
		for _, r := range rows {
			if r.activity && r.ms <= w.To.UnixMilli() {
				last = max(last, r.ms)
			}
		}
		if last > -1<<62 {
			out[agent] = time.UnixMilli(last).UTC()
		}
	})
	return out, err
}

// Tenants implements store.Analytics.
func (m *Memory) Tenants(context.Context) ([]string, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	var out []string
	for t := range m.tenants {
		out = append(out, m.strs[t])
	}
	slices.Sort(out)
	return out, nil
}

// Prune drops the rows before t (a sliding window's start), returning how many were dropped.
func (m *Memory) Prune(t time.Time) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	ms, n := t.UnixMilli(), 0
	for k, rows := range m.agents {
		i := 0
		for i < len(rows) && rows[i].ms < ms {
			i++
		}
		if i > 0 {
			n += i
			m.agents[k] = slices.Clone(rows[i:])
		}
	}
	return n
}
