package detect_test

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
	"github.com/agentid/agentid/services/monitor/internal/baseline"
	"github.com/agentid/agentid/services/monitor/internal/detect"
	"github.com/agentid/agentid/services/monitor/internal/store"
	"github.com/agentid/agentid/services/monitor/internal/synth"
)

// start is a Monday; histories begin here.
var start = time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)

const day = 24 * time.Hour

// world is a synthetic population with its baselines, an engine and a registry view.
type world struct {
	g      *synth.Generator
	an     store.Analytics
	add    func([]store.Event)
	mgr    *baseline.Manager
	eng    *detect.Engine
	byName map[string]*synth.Agent
	state  map[string]string // agent name -> state other than ACTIVE
}

func classOf(a *synth.Agent) baseline.AgentClass {
	return baseline.AgentClass{Owner: a.Owner, Environment: a.Environment, Scopes: a.Scopes}
}

// newWorld builds a population whose history is stored with add and read back through an.
func newWorld(cfg synth.Config, an store.Analytics, add func([]store.Event)) *world {
	w := &world{g: synth.New(cfg), an: an, add: add, byName: map[string]*synth.Agent{}, state: map[string]string{}}
	for _, a := range w.g.Agents {
		w.byName[a.Name] = a
		w.byName[a.ClientID] = a
	}
	w.mgr = baseline.NewManager(baseline.Config{Classify: func(_, agent string) (baseline.AgentClass, bool) {
		a, ok := w.byName[agent]
		if !ok {
			return baseline.AgentClass{}, false
		}
		return classOf(a), true
	}})
	w.eng = detect.NewEngine(detect.Config{Now: func() time.Time { return start }}, w.mgr)
	return w
}

// lookup is the registry's view: every agent ACTIVE at any time, but those in state.
func (w *world) lookup(tenant, id string, _ time.Time) (detect.AgentInfo, bool) {
	a, ok := w.byName[id]
	if !ok || tenant != w.g.Tenant() {
		return detect.AgentInfo{}, false
	}
	st := "ACTIVE"
	if s, ok := w.state[a.Name]; ok {
		st = s
	}
	return detect.AgentInfo{Tenant: tenant, Name: a.Name, Owner: a.Owner, Sponsor: "sponsor@example.com",
		Environment: a.Environment, RiskTier: "high", State: st, Known: true, Scopes: a.Scopes}, true
}

// load stores the history in [from, to) in batches.
func (w *world) load(t testing.TB, from, to time.Time) int {
	t.Helper()
	var batch []store.Event
	n := 0
	err := w.g.Run(from, to, nil, func(e store.Event) error {
		batch = append(batch, e)
		if len(batch) == 5000 {
			w.add(batch)
			n += len(batch)
			batch = nil
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	w.add(batch)
	return n + len(batch)
}

func (w *world) recompute(t testing.TB, asOf time.Time) {
	t.Helper()
	if err := w.mgr.Recompute(context.Background(), w.an, w.g.Tenant(), asOf); err != nil {
		t.Fatalf("Recompute: %v", err)
	}
}

// replay runs [from, to) (with attacks) through the engine in batches of at most one minute, as
// the ingest consumer delivers them, stores them, observes them, and returns the alerts.
func (w *world) replay(t testing.TB, from, to time.Time, attacks ...synth.Attack) (alerts []*monitorv1.Alert, rows int) {
	t.Helper()
	var batch, pending []store.Event
	flush := func() {
		alerts = append(alerts, w.eng.Process(batch, w.lookup)...)
		w.mgr.Observe(batch)
		rows += len(batch)
		// The store is written in larger batches than detection runs on (only later
		// recomputations read it).
		if pending = append(pending, batch...); len(pending) >= 20000 {
			w.add(pending)
			pending = nil
		}
		batch = nil
	}
	err := w.g.Run(from, to, attacks, func(e store.Event) error {
		if len(batch) > 0 && e.Time.Truncate(time.Minute) != batch[0].Time.Truncate(time.Minute) {
			flush()
		}
		batch = append(batch, e)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	flush()
	w.add(pending)
	return alerts, rows
}

func countBy(alerts []*monitorv1.Alert) map[string]int {
	m := map[string]int{}
	for _, a := range alerts {
		m[a.GetDetector()]++
	}
	return m
}

func summary(m map[string]int) string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	var b strings.Builder
	for _, k := range ks {
		fmt.Fprintf(&b, "%s=%d ", k, m[k])
	}
	return b.String()
}

func memWorld(cfg synth.Config) *world {
	mem := synth.NewMemory()
	return newWorld(cfg, mem, func(rows []store.Event) { mem.Add(rows...) })
}
