// Package synth generates a realistic, deterministic (seeded) telemetry history of a population of
// agents, and attacks to inject into it, for the detectors' tests and the monitor's benchmarks.
//
// Agents come in classes (same owner team, environment, profile and granted scopes) and share their
// class's resources, networks and users; each agent has its own rate, working hours (shifted by its
// team's time zone), weekly seasonality, day-to-day noise, resource and user preferences (Zipf-like
// weights), log-normal rows and bytes per request and an occasional deny. Every agent-hour is drawn
// from its own random stream, so a history is the same for the same seed whatever window is asked for.
package synth

import (
	"cmp"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"

	"github.com/agentid/agentid/services/monitor/internal/store"
)

// Profile is the kind of work an agent does; it sets its hours, rates, resources and data volumes.
type Profile int

// Profiles.
const (
	// Analytics agents read reports on weekdays in office hours; they are read-only.
	Analytics Profile = iota
	// Support agents act on behalf of users (delegation) in long office hours, also on weekends.
	Support
	// Batch agents run a nightly ETL window with large row counts.
	Batch
	// Service agents run around the clock with a diurnal swing.
	Service
)

// String names the profile.
func (p Profile) String() string {
	switch p {
	case Analytics:
		return "analytics"
	case Support:
		return "support"
	case Batch:
		return "batch"
	case Service:
		return "service"
	}
	return "profile-" + strconv.Itoa(int(p))
}

// Config describes the population.
type Config struct {
	// Seed selects the history; the same seed gives the same agents and events.
	Seed uint64
	// Tenant owns every row (default "acme").
	Tenant string
	// Agents is the number of agents (default 50).
	Agents int
	// ClassSize is the number of agents per class (default 10).
	ClassSize int
}

// Agent is one generated agent and its habits.
type Agent struct {
	// Index is the agent's position in Generator.Agents.
	Index int
	// Name is the agent's resource name (tenants/{tenant}/agents/{id}).
	Name string
	// ClientID is the agent's OAuth client id.
	ClientID string
	// Owner is the owner team.
	Owner string
	// Environment is prod or staging.
	Environment string
	// Profile is the kind of work it does.
	Profile Profile
	// Scopes are the scopes granted to it (sorted); it requests all of them.
	Scopes []string
	// ReadOnly is true for agents that only read.
	ReadOnly bool
	// Resources are the resources it uses, most used first.
	Resources []string
	// Networks are its source networks as /24 prefixes ("10.3.17"), most used first.
	Networks []string
	// Users are the users it acts for (Support agents only), most frequent first.
	Users []string
	// UserResources lists, per user (same index as Users), the indexes into Resources the user's
	// delegations touch.
	UserResources [][]int
	// RowsMedian is the median rows per access.
	RowsMedian float64

	rate      float64
	hours     [24]float64
	weekday   [7]float64
	resCum    []float64
	netCum    []float64
	userCum   []float64
	rowsSigma float64
	bytesRow  float64
	denyP     float64
	tokenP    float64
}

// Generator produces the history of one population.
type Generator struct {
	cfg Config
	// Agents is the population.
	Agents []*Agent
}

var teams = []string{"team-atlas", "team-borealis", "team-cirrus", "team-delta", "team-ember",
	"team-fjord", "team-granite", "team-harbor", "team-iris", "team-juniper"}

var profileScopes = map[Profile][][]string{
	Analytics: {{"reports:read"}, {"reports:read", "warehouse:read"}},
	Support:   {{"customers:read", "tickets:read", "tickets:write"}, {"customers:read", "tickets:read"}},
	Batch:     {{"warehouse:read", "warehouse:write"}},
	Service:   {{"api:read", "api:write"}, {"api:read"}},
}

var profileResources = map[Profile][]string{
	Analytics: {"/reports/sales", "/reports/finance", "/reports/hr", "/reports/ops", "/reports/marketing", "/reports/risk"},
	Support:   {"/tickets", "/customers", "/orders", "/refunds", "/kb/articles"},
	Batch:     {"/warehouse/tables"},
	Service:   {"/api/v1/items", "/api/v1/prices", "/api/v1/stock", "/api/v1/events"},
}

// New builds the population of cfg.
func New(cfg Config) *Generator {
	if cfg.Tenant == "" {
		cfg.Tenant = "acme"
	}
	if cfg.Agents <= 0 {
		cfg.Agents = 50
	}
	if cfg.ClassSize <= 0 {
		cfg.ClassSize = 10
	}
	g := &Generator{cfg: cfg}
	classes := (cfg.Agents + cfg.ClassSize - 1) / cfg.ClassSize
	for c := range classes {
		r := stream(cfg.Seed, 3, uint64(c))
		profile := Profile(c % 4)
		team := c % len(teams)
		tz := r.IntN(4) // hours of shift of the team's working day
		env := "prod"
		if r.Float64() < 0.25 {
			env = "staging"
		}
		scopeSets := profileScopes[profile]
		scopes := slices.Clone(scopeSets[r.IntN(len(scopeSets))])
		// The class's resource pool: specific paths under the profile's roots.
		var pool []string
		roots := profileResources[profile]
		for i := range 12 + r.IntN(24) {
			root := roots[r.IntN(len(roots))]
			pool = append(pool, root+"/"+"c"+strconv.Itoa(c)+"-"+strconv.Itoa(i))
		}
		nets := make([]string, 4)
		for i := range nets {
			nets[i] = "10." + strconv.Itoa(team+1) + "." + strconv.Itoa((c*4+i)%250) + ""
		}
		var users []string
		if profile == Support {
			for i := range 60 {
				users = append(users, "user"+strconv.Itoa(c*100+i)+"@example.com")
			}
		}
		for k := range cfg.ClassSize {
			idx := c*cfg.ClassSize + k
			if idx >= cfg.Agents {
				break
			}
			g.Agents = append(g.Agents, newAgent(cfg, idx, r, profile, teams[team], env, scopes, pool, nets, users, tz))
		}
	}
	return g
}

func newAgent(cfg Config, idx int, r *rand.Rand, p Profile, owner, env string, scopes, pool, nets, users []string, tz int) *Agent {
	a := &Agent{
		Index:       idx,
		Name:        "tenants/" + cfg.Tenant + "/agents/" + p.String() + "-" + pad(idx),
		ClientID:    "client-" + pad(idx),
		Owner:       owner,
		Environment: env,
		Profile:     p,
		Scopes:      scopes,
		ReadOnly:    p == Analytics,
		tokenP:      0.04,
		denyP:       0.001 + 0.01*r.Float64(),
		bytesRow:    150 + 650*r.Float64(),
	}
	noise := math.Exp(0.5 * r.NormFloat64())
	switch p {
	case Analytics:
		a.rate, a.RowsMedian, a.rowsSigma = 8*noise, 200*math.Exp(0.5*r.NormFloat64()), 0.7
		for h := 8; h <= 17; h++ {
			a.hours[h] = 1
		}
		a.hours[8], a.hours[17], a.hours[18] = 0.5, 0.6, 0.15
		a.weekday = [7]float64{1, 1, 1, 1, 0.9, 0.05, 0.05} // Monday first
	case Support:
		a.rate, a.RowsMedian, a.rowsSigma = 12*noise, 5, 0.6
		for h := 7; h <= 19; h++ {
			a.hours[h] = 1
		}
		a.hours[7], a.hours[19], a.hours[20] = 0.4, 0.5, 0.1
		a.weekday = [7]float64{1, 1, 1, 1, 1, 0.4, 0.3}
	case Batch:
		a.rate, a.RowsMedian, a.rowsSigma = 60*noise, 5000*math.Exp(0.5*r.NormFloat64()), 0.5
		a.hours[1], a.hours[2], a.hours[3], a.hours[4] = 0.6, 1, 1, 0.4
		a.weekday = [7]float64{1, 1, 1, 1, 1, 1, 1}
	case Service:
		a.rate, a.RowsMedian, a.rowsSigma = 12*noise, 10, 0.7
		for h := range 24 {
			a.hours[h] = 0.6 + 0.4*math.Sin(float64(h-6)*math.Pi/12)
		}
		a.weekday = [7]float64{1, 1, 1, 1, 1, 0.7, 0.7}
	}
	if p != Service {
		a.hours = shift(a.hours, tz)
	}
	// Each agent uses a random subset of its class's pool, with Zipf-like preferences.
	k := min(len(pool), 4+r.IntN(len(pool)-3))
	perm := r.Perm(len(pool))[:k]
	for _, i := range perm {
		a.Resources = append(a.Resources, pool[i])
	}
	a.resCum = zipf(len(a.Resources), 0.8)
	nn := 1 + r.IntN(2)
	a.Networks = slices.Clone(nets[:nn])
	if nn > 1 && r.IntN(2) == 0 {
		a.Networks[0], a.Networks[1] = a.Networks[1], a.Networks[0]
	}
	a.netCum = zipf(nn, 1.5)
	if len(users) > 0 {
		nu := 15 + r.IntN(25)
		for _, i := range r.Perm(len(users))[:nu] {
			a.Users = append(a.Users, users[i])
			touch := 2 + r.IntN(3)
			a.UserResources = append(a.UserResources, r.Perm(len(a.Resources))[:min(touch, len(a.Resources))])
		}
		a.userCum = zipf(nu, 0.6)
	}
	return a
}

func pad(i int) string {
	s := strconv.Itoa(i)
	for len(s) < 4 {
		s = "0" + s
	}
	return s
}

func shift(h [24]float64, by int) [24]float64 {
	var out [24]float64
	for i := range 24 {
		out[(i+by)%24] = h[i]
	}
	return out
}

// zipf returns the cumulative weights of n items with weight 1/(i+1)^s.
func zipf(n int, s float64) []float64 {
	cum := make([]float64, n)
	total := 0.0
	for i := range n {
		total += 1 / math.Pow(float64(i+1), s)
		cum[i] = total
	}
	for i := range cum {
		cum[i] /= total
	}
	return cum
}

func pick(r *rand.Rand, cum []float64) int {
	x := r.Float64()
	i, _ := slices.BinarySearch(cum, x)
	return min(i, len(cum)-1)
}

// poisson draws a Poisson variate with mean l.
func poisson(r *rand.Rand, l float64) int {
	if l <= 0 {
		return 0
	}
	if l > 30 {
		return max(0, int(math.Round(l+math.Sqrt(l)*r.NormFloat64())))
	}
	limit, k, p := math.Exp(-l), 0, r.Float64()
	for p > limit {
		k++
		p *= r.Float64()
	}
	return k
}

// Tenant is the tenant of every row.
func (g *Generator) Tenant() string { return g.cfg.Tenant }

// Expected is the agent's mean number of requests in the hour starting at t (before day-to-day noise).
func (a *Agent) Expected(t time.Time) float64 {
	t = t.UTC()
	return a.rate * a.hours[t.Hour()] * a.weekday[(int(t.Weekday())+6)%7]
}

// Run emits the history in [from, to) in time order (ties by event id), hour by hour; attacks whose
// time falls in the window are merged in. It stops at the first error emit returns.
func (g *Generator) Run(from, to time.Time, attacks []Attack, emit func(store.Event) error) error {
	from, to = from.UTC().Truncate(time.Hour), to.UTC()
	var batch []store.Event
	for h := from; h.Before(to); h = h.Add(time.Hour) {
		batch = batch[:0]
		for _, a := range g.Agents {
			batch = g.agentHour(batch, a, h)
		}
		for _, at := range attacks {
			if !at.At.Before(h) && at.At.Before(h.Add(time.Hour)) {
				batch = append(batch, g.inject(at)...)
			}
		}
		slices.SortFunc(batch, func(x, y store.Event) int {
			if c := x.Time.Compare(y.Time); c != 0 {
				return c
			}
			return cmp.Compare(x.EventID, y.EventID)
		})
		for _, e := range batch {
			if !e.Time.Before(to) {
				continue
			}
			if err := emit(e); err != nil {
				return err
			}
		}
	}
	return nil
}

// Events returns the history in [from, to) with the attacks merged in, in time order.
func (g *Generator) Events(from, to time.Time, attacks ...Attack) []store.Event {
	var out []store.Event
	_ = g.Run(from, to, attacks, func(e store.Event) error {
		out = append(out, e)
		return nil
	})
	return out
}

// stream returns the random stream of one (purpose, key) pair of the seed; the words are mixed
// (splitmix64) so that neighbouring keys give unrelated streams.
func stream(seed, purpose, key uint64) *rand.Rand {
	return rand.New(rand.NewPCG(mix(seed^mix(purpose)), mix(key^mix(seed+purpose))))
}

func mix(x uint64) uint64 {
	x += 0x9E3779B97F4A7C15
	x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9
	x = (x ^ (x >> 27)) * 0x94D049BB133111EB
	return x ^ (x >> 31)
}

// hourIndex numbers hours since the Unix epoch (the random stream of an agent-hour).
func hourIndex(h time.Time) uint64 { return uint64(h.Unix() / 3600) }

func (g *Generator) agentHour(out []store.Event, a *Agent, h time.Time) []store.Event {
	l := a.Expected(h)
	if l <= 0 {
		return out
	}
	day := h.Truncate(24 * time.Hour)
	dr := stream(g.cfg.Seed, 1, uint64(a.Index)<<32|hourIndex(day))
	l *= math.Exp(0.25 * dr.NormFloat64()) // the agent's busy or quiet day
	r := stream(g.cfg.Seed, 2, uint64(a.Index)<<32|hourIndex(h))
	n := poisson(r, l)
	for i := range n {
		out = append(out, g.request(r, a, h, i))
	}
	return out
}

// request draws one normal request of a in the hour h.
func (g *Generator) request(r *rand.Rand, a *Agent, h time.Time, i int) store.Event {
	t := h.Add(time.Duration(r.Int64N(int64(time.Hour))))
	e := store.Event{
		EventID:     "ev-" + strconv.Itoa(a.Index) + "-" + strconv.FormatUint(hourIndex(h), 36) + "-" + strconv.Itoa(i),
		Time:        t.Truncate(time.Millisecond),
		Tenant:      g.cfg.Tenant,
		Agent:       a.Name,
		Actor:       a.ClientID,
		ClientID:    a.ClientID,
		Owner:       a.Owner,
		AgentKnown:  true,
		Environment: a.Environment,
		Scopes:      a.Scopes,
		LatencyUS:   int64(2000 * math.Exp(0.5*r.NormFloat64())),
	}
	net := a.Networks[pick(r, a.netCum)]
	e.SourceAddress = net + "." + strconv.Itoa(2+r.IntN(250))
	e.SourceNetwork = net + ".0/24"
	if r.Float64() < a.tokenP {
		e.Kind = store.KindTokenRequested
		e.Resource = "https://api.example.com"
		e.Outcome = "issued"
		return e
	}
	e.Kind = store.KindAccess
	e.Outcome = "allowed"
	if r.Float64() < a.denyP {
		e.Outcome = "denied"
	}
	res := pick(r, a.resCum)
	if len(a.Users) > 0 {
		u := pick(r, a.userCum)
		e.OnBehalfOf = a.Users[u]
		ur := a.UserResources[u]
		res = ur[r.IntN(len(ur))]
	}
	e.Resource = a.Resources[res]
	e.Action = "GET"
	if !a.ReadOnly && r.Float64() < 0.2 {
		e.Action = "POST"
	}
	if e.Outcome == "allowed" {
		e.Rows = max(1, int64(math.Round(a.RowsMedian*math.Exp(a.rowsSigma*r.NormFloat64()))))
		e.Bytes = 300 + int64(float64(e.Rows)*a.bytesRow*math.Exp(0.2*r.NormFloat64()))
	}
	return e
}
