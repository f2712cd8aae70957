package baseline

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/services/monitor/internal/store"
)

// Config tunes a Manager; zero values take the defaults.
type Config struct {
	// Window is the history a recomputation learns from (default 28 days).
	Window time.Duration
	// MinDays and MinRequests: an agent with less history of its own uses its class baseline
	// (defaults 7 days, 200 requests).
	MinDays     int
	MinRequests int64
	// MaxValues caps each value set of a baseline (default 256, the most used kept); a set that hit
	// the cap is saturated and new-value detectors ignore it.
	MaxValues int
	// MaxPairs caps the (on-behalf-of user, resource) pairs learned per agent (default 4096).
	MaxPairs int
	// Classify, if set, tells a recomputation each agent's class; classes given to Get are remembered
	// too, so without it class baselines appear from the recomputation after the engine first saw
	// the agents.
	Classify func(tenant, agent string) (AgentClass, bool)
	// Now is the clock of ComputeTime (default time.Now).
	Now func() time.Time
}

// Manager keeps the baselines of every tenant's agents and classes. It is safe for concurrent use.
// Memory is bounded per agent (168 hour slots, four value sets of at most MaxValues values, at most
// MaxPairs delegation pairs) and grows with the number of agents that have telemetry in the window.
type Manager struct {
	cfg Config

	mu      sync.RWMutex
	tenants map[string]*tenantBaselines
}

type tenantBaselines struct {
	agents  map[string]*Baseline
	classes map[string]*Baseline
	// classOf remembers each agent's class key (from Classify or Get).
	classOf map[string]string
}

// NewManager returns a Manager without baselines.
func NewManager(cfg Config) *Manager {
	if cfg.Window <= 0 {
		cfg.Window = DefaultWindow
	}
	if cfg.MinDays <= 0 {
		cfg.MinDays = DefaultMinDays
	}
	if cfg.MinRequests <= 0 {
		cfg.MinRequests = DefaultMinRequests
	}
	if cfg.MaxValues <= 0 {
		cfg.MaxValues = DefaultMaxValues
	}
	if cfg.MaxPairs <= 0 {
		cfg.MaxPairs = DefaultMaxPairs
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Manager{cfg: cfg, tenants: map[string]*tenantBaselines{}}
}

func (m *Manager) tenant(t string) *tenantBaselines {
	tb := m.tenants[t]
	if tb == nil {
		tb = &tenantBaselines{agents: map[string]*Baseline{}, classes: map[string]*Baseline{}, classOf: map[string]string{}}
		m.tenants[t] = tb
	}
	return tb
}

// RecomputeAll recomputes every tenant the store has rows for, as of asOf.
func (m *Manager) RecomputeAll(ctx context.Context, an store.Analytics, asOf time.Time) error {
	tenants, err := an.Tenants(ctx)
	if err != nil {
		return fmt.Errorf("baseline: list tenants: %w", err)
	}
	for _, t := range tenants {
		if err := m.Recompute(ctx, an, t, asOf); err != nil {
			return err
		}
	}
	return nil
}

// Recompute replaces the tenant's baselines by ones learned from the window [asOf-Window, asOf). On
// an error the previous baselines stay.
func (m *Manager) Recompute(ctx context.Context, an store.Analytics, tenant string, asOf time.Time) error {
	return m.RecomputeAcked(ctx, an, tenant, asOf, 0)
}

// RecomputeAcked is Recompute learning only from rows whose stream sequence is below
// beforeStreamSeq (0: every row): one past the ingest consumer's ack floor on TELEMETRY, so that rows
// stored but not yet judged (a crash before their alerts were published) are judged, once
// redelivered, against the baseline they would have met instead of one that already learned them.
func (m *Manager) RecomputeAcked(ctx context.Context, an store.Analytics, tenant string, asOf time.Time, beforeStreamSeq uint64) error {
	if tenant == "" {
		return errs.InvalidArgument("tenant", "tenant is required")
	}
	asOf = asOf.UTC()
	w := store.Window{Tenant: tenant, From: asOf.Add(-m.cfg.Window), To: asOf, BeforeStreamSeq: beforeStreamSeq}
	hourly, err := an.Hourly(ctx, w)
	if err != nil {
		return fmt.Errorf("baseline: hourly aggregates of %s: %w", tenant, err)
	}
	usage := map[store.Dimension][]store.Usage{}
	for _, d := range Dimensions {
		if usage[d], err = an.Usage(ctx, w, d); err != nil {
			return fmt.Errorf("baseline: %s usage of %s: %w", d, tenant, err)
		}
	}
	spreads, err := an.Quantiles(ctx, w)
	if err != nil {
		return fmt.Errorf("baseline: quantiles of %s: %w", tenant, err)
	}
	now := m.cfg.Now().UTC()
	agents := map[string]*Baseline{}
	get := func(agent string) *Baseline {
		b := agents[agent]
		if b == nil {
			b = newBaseline(tenant, agent, m.cfg.MaxValues, m.cfg.MaxPairs)
			b.ComputeTime, b.WindowStart, b.WindowEnd = now, w.From, w.To
			agents[agent] = b
		}
		return b
	}
	// Hour-of-week samples per agent; kept for pooling into class baselines.
	samples := map[string]*[HoursPerWeek][]float64{}
	for i := 0; i < len(hourly); {
		j := i
		for j < len(hourly) && hourly[j].Agent == hourly[i].Agent {
			j++
		}
		b := get(hourly[i].Agent)
		samples[b.Agent] = hourOfWeek(b, hourly[i:j], w.To)
		i = j
	}
	for d, us := range usage {
		for _, u := range us {
			b := get(u.Agent)
			vs := b.dims[d]
			if len(vs.m) >= m.cfg.MaxValues {
				vs.saturated = true
				continue
			}
			vs.m[u.Value] = Seen{Count: u.Count, LastSeen: u.LastSeen.UTC()}
		}
	}
	for _, s := range spreads {
		b := get(s.Agent)
		b.Accesses, b.RowsMedian, b.RowsMAD, b.BytesMedian, b.BytesMAD = s.Accesses, s.RowsMedian, s.RowsMAD, s.BytesMedian, s.BytesMAD
	}

	m.mu.RLock()
	old := m.tenants[tenant]
	classOf := map[string]string{}
	if old != nil {
		for a, k := range old.classOf {
			classOf[a] = k
		}
	}
	m.mu.RUnlock()
	if m.cfg.Classify != nil {
		for a := range agents {
			if c, ok := m.cfg.Classify(tenant, a); ok {
				if k := c.Key(); k != "" {
					classOf[a] = k
				}
			}
		}
	}
	members := map[string][]*Baseline{}
	for a, b := range agents {
		if old != nil {
			if ob := old.agents[a]; ob != nil {
				b.clonePairs(ob)
			}
		}
		if k := classOf[a]; k != "" {
			b.ClassKey = k
			members[k] = append(members[k], b)
		}
	}
	classes := map[string]*Baseline{}
	for k, ms := range members {
		slices.SortFunc(ms, func(a, b *Baseline) int { return strings.Compare(a.Agent, b.Agent) })
		classes[k] = m.pool(tenant, k, ms, samples)
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	tb := m.tenant(tenant)
	// Classes learned from Get while this recomputation ran are kept.
	for a, k := range tb.classOf {
		if _, ok := classOf[a]; !ok {
			classOf[a] = k
		}
	}
	tb.agents, tb.classes, tb.classOf = agents, classes, classOf
	return nil
}

// hourOfWeek fills b's hourly statistics from its hourly rows (ordered by hour) up to end and
// returns the per-slot samples.
func hourOfWeek(b *Baseline, rows []store.Hourly, end time.Time) *[HoursPerWeek][]float64 {
	first := rows[0].Hour.UTC().Truncate(time.Hour)
	counts := make(map[int64]int64, len(rows))
	for _, h := range rows {
		counts[h.Hour.Unix()/3600] += h.Requests
		b.requests += h.Requests
		b.denied += h.Denied
		b.HourOfDay[h.Hour.UTC().Hour()] += h.Requests
		b.MaxHourRows = max(b.MaxHourRows, h.Rows)
		b.MaxHourBytes = max(b.MaxHourBytes, h.Bytes)
	}
	b.Days = end.Sub(first).Hours() / 24
	var s [HoursPerWeek][]float64
	for t := first; t.Before(end); t = t.Add(time.Hour) {
		how := HourOfWeek(t)
		s[how] = append(s[how], float64(counts[t.Unix()/3600]))
	}
	for how := range s {
		b.HourOfWeek[how] = stats(slices.Clone(s[how]))
	}
	return &s
}

func stats(xs []float64) HourStats {
	hi := 0.0
	for _, x := range xs {
		hi = max(hi, x)
	}
	med, mad := store.MedianMAD(xs)
	return HourStats{Median: med, MAD: mad, Max: hi, Samples: len(xs)}
}

// pool builds the class baseline of members: hour-of-week statistics over every member-week, hours
// and counters summed, value sets united (the most used kept), rows and bytes statistics as the
// median of the members' (the typical member), the hourly maxima as the members' largest.
func (m *Manager) pool(tenant, key string, members []*Baseline, samples map[string]*[HoursPerWeek][]float64) *Baseline {
	c := newBaseline(tenant, "", m.cfg.MaxValues, m.cfg.MaxPairs)
	c.ClassKey, c.Members = key, len(members)
	var rm, rmad, bm, bmad []float64
	var pooled [HoursPerWeek][]float64
	union := map[store.Dimension]map[string]Seen{}
	for _, d := range Dimensions {
		union[d] = map[string]Seen{}
	}
	for _, b := range members {
		c.ComputeTime, c.WindowStart, c.WindowEnd = b.ComputeTime, b.WindowStart, b.WindowEnd
		c.Days = max(c.Days, b.Days)
		for h := range c.HourOfDay {
			c.HourOfDay[h] += b.HourOfDay[h]
		}
		c.requests += b.requests
		c.denied += b.denied
		c.MaxHourRows = max(c.MaxHourRows, b.MaxHourRows)
		c.MaxHourBytes = max(c.MaxHourBytes, b.MaxHourBytes)
		if b.Accesses > 0 {
			c.Accesses += b.Accesses
			rm, rmad = append(rm, b.RowsMedian), append(rmad, b.RowsMAD)
			bm, bmad = append(bm, b.BytesMedian), append(bmad, b.BytesMAD)
		}
		if s := samples[b.Agent]; s != nil {
			for how := range s {
				pooled[how] = append(pooled[how], s[how]...)
			}
		}
		for _, d := range Dimensions {
			if b.dims[d].saturated {
				c.dims[d].saturated = true
			}
			for v, s := range b.dims[d].m {
				u := union[d][v]
				u.Count += s.Count
				if s.LastSeen.After(u.LastSeen) {
					u.LastSeen = s.LastSeen
				}
				union[d][v] = u
			}
		}
	}
	for how := range pooled {
		c.HourOfWeek[how] = stats(pooled[how])
	}
	c.RowsMedian, c.RowsMAD = median(rm), median(rmad)
	c.BytesMedian, c.BytesMAD = median(bm), median(bmad)
	for _, d := range Dimensions {
		us := make([]store.Usage, 0, len(union[d]))
		for v, s := range union[d] {
			us = append(us, store.Usage{Value: v, Count: s.Count, LastSeen: s.LastSeen})
		}
		sortUsage(us)
		if len(us) > m.cfg.MaxValues {
			us, c.dims[d].saturated = us[:m.cfg.MaxValues], true
		}
		for _, u := range us {
			c.dims[d].m[u.Value] = Seen{Count: u.Count, LastSeen: u.LastSeen}
		}
	}
	return c
}

func median(xs []float64) float64 {
	m, _ := store.MedianMAD(xs)
	return m
}

// Get returns the baseline to judge the agent by: its own, or its class's (fromClass true) when its
// own history is shorter than MinDays or MinRequests (or it has none). When there is no class
// baseline a young agent's own baseline is returned; nil when there is neither. The class given is
// remembered for the next recomputation.
func (m *Manager) Get(tenant, agent string, class AgentClass) (b *Baseline, fromClass bool) {
	key := class.Key()
	m.mu.RLock()
	tb := m.tenants[tenant]
	var own, cls *Baseline
	remembered := false
	if tb != nil {
		own = tb.agents[agent]
		if key != "" {
			cls = tb.classes[key]
			remembered = tb.classOf[agent] == key
		}
	}
	m.mu.RUnlock()
	if key != "" && !remembered {
		m.mu.Lock()
		m.tenant(tenant).classOf[agent] = key
		m.mu.Unlock()
	}
	switch {
	case own != nil && !own.young(float64(m.cfg.MinDays), m.cfg.MinRequests):
		return own, false
	case cls != nil:
		return cls, true
	}
	return own, false
}

// Forget drops what the manager knows of an agent (a deleted agent).
func (m *Manager) Forget(tenant, agent string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if tb := m.tenants[tenant]; tb != nil {
		delete(tb.agents, agent)
		delete(tb.classOf, agent)
	}
}

// Observe updates the baselines of the rows' agents with their requests (rows of kinds access and
// token.requested): new values join the sets, delegation pairs are learned, requests and denies
// counted. Rows of agents without a baseline of their own wait for the next recomputation.
func (m *Manager) Observe(rows []store.Event) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	var last *Baseline
	for i := range rows {
		e := &rows[i]
		if e.Agent == "" || !IsRequest(e.Kind) {
			continue
		}
		if last == nil || last.Agent != e.Agent || last.Tenant != e.Tenant {
			tb := m.tenants[e.Tenant]
			if tb == nil {
				continue
			}
			if last = tb.agents[e.Agent]; last == nil {
				continue
			}
		}
		last.mu.Lock()
		last.observe(e)
		last.mu.Unlock()
	}
}
