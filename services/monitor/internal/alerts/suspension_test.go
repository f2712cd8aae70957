package alerts_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/testkit"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/monitor/internal/agents"
	"github.com/agentid/agentid/services/monitor/internal/alerts"
	"github.com/agentid/agentid/services/monitor/internal/baseline"
	"github.com/agentid/agentid/services/monitor/internal/detect"
	"github.com/agentid/agentid/services/monitor/internal/ingest"
	"github.com/agentid/agentid/services/monitor/internal/store"
)

// lagging holds its runner at every agent.suspended event while a hold is on, so that telemetry
// published after a suspension reaches detection before the projection has applied it.
type lagging struct {
	*agents.Projection
	mu   sync.Mutex
	gate chan struct{} // nil: no hold
}

func (l *lagging) hold() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.gate = make(chan struct{})
}

func (l *lagging) release() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.gate != nil {
		close(l.gate)
		l.gate = nil
	}
}

func (l *lagging) Apply(ctx context.Context, e eventstore.Event) error {
	if e.Type == agents.EventAgentSuspended {
		l.mu.Lock()
		gate := l.gate
		l.mu.Unlock()
		if gate != nil {
			select {
			case <-gate:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	return l.Projection.Apply(ctx, e)
}

// memRows is a telemetry store keeping nothing: detection is what is under test.
type memRows struct{}

func (memRows) Insert(context.Context, []store.Event) error { return nil }

// suspensionWorld is the monitor's detection path on an embedded NATS: the agents projection
// following AGENTS (held at suspensions on request), the ingest consumer, the detection engine, the
// runtime with its catch-up, the publisher and the alert store following ALERTS.
type suspensionWorld struct {
	es      *eventstore.Store
	dir     *agents.Projection
	lag     *lagging
	runner  *eventstore.Runner
	alerts  *alerts.Store
	reg     *prometheus.Registry
	mu      sync.Mutex
	current string          // the agent whose suspension is held
	lagged  map[string]bool // agents seen ACTIVE by a catch-up while their suspension was held
}

func newSuspensionWorld(t *testing.T) *suspensionWorld {
	t.Helper()
	w := &suspensionWorld{es: startStore(t), dir: agents.New(), reg: prometheus.NewRegistry(), lagged: map[string]bool{}}
	w.lag = &lagging{Projection: w.dir}
	w.alerts = runProjection(t, w.es)
	w.runner = w.es.NewRunner(w.lag, eventstore.StreamAgents, []string{eventstore.AggregateTypeSubject(eventstore.AggregateAgent)})
	pub, err := alerts.NewPublisher(w.es, quiet)
	if err != nil {
		t.Fatal(err)
	}
	eng := detect.NewEngine(detect.Config{}, baseline.NewManager(baseline.Config{}))
	lookup := func(tenant, id string, at time.Time) (detect.AgentInfo, bool) {
		info, ok := w.dir.LookupAt(tenant, id, at)
		if !ok {
			return detect.AgentInfo{}, false
		}
		return detect.AgentInfo{Tenant: info.Tenant, Name: info.Name, Owner: info.Owner, State: info.StateName(), StateSince: info.StateSince, Known: true}, true
	}
	catchUp := agents.CatchUp(w.es, w.runner)
	rt, err := alerts.NewRuntime(alerts.RuntimeConfig{
		Detect: func(rows []store.Event) []*monitorv1.Alert { return eng.Process(rows, lookup) },
		CatchUp: func(ctx context.Context) error {
			w.mu.Lock()
			if info, ok := w.dir.Lookup("acme", w.current); ok && info.State == registryv1.AgentState_AGENT_STATE_ACTIVE {
				w.lagged[w.current] = true
			}
			w.mu.Unlock()
			w.lag.release()
			return catchUp(ctx)
		},
		Prepare:   w.runner.Ready,
		Publisher: pub, Logger: quiet, Registerer: w.reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	c, err := ingest.NewConsumer(ingest.Config{Source: w.es, Store: memRows{}, Logger: quiet, Registerer: w.reg, Directory: w.dir,
		Ready: w.runner.Ready, OnStored: rt.OnStored, Concurrency: 1, Linger: -1})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, run := range []func(context.Context) error{w.runner.Run, rt.Run, c.Run} {
		wg.Go(func() {
			if err := run(ctx); err != nil {
				t.Errorf("task: %v", err)
			}
		})
	}
	t.Cleanup(func() {
		w.lag.release()
		cancel()
		wg.Wait()
	})
	return w
}

// agentEvent appends a registry event about agent id and returns it.
func (w *suspensionWorld) agentEvent(t *testing.T, id, typ string, data proto.Message) eventstore.Event {
	t.Helper()
	ev, err := w.es.Append(t.Context(), eventstore.Append{Tenant: "acme", AggregateType: eventstore.AggregateAgent, AggregateID: id,
		ExpectedVersion: eventstore.AnyVersion, IdempotencyKey: uuid.NewString(), Type: typ, Subject: "tenants/acme/agents/" + id, Data: data,
		Metadata: eventstore.Metadata{Actor: eventstore.Actor{ID: "registry", Kind: eventstore.ActorService}}})
	if err != nil {
		t.Fatalf("append %s of %s: %v", typ, id, err)
	}
	return ev
}

// active registers and activates agent id and waits until the projection knows it.
func (w *suspensionWorld) active(t *testing.T, id string) string {
	t.Helper()
	name := "tenants/acme/agents/" + id
	w.agentEvent(t, id, agents.EventAgentRegistered, &registryv1.AgentRegistered{Agent: &registryv1.Agent{Name: name, Owner: "alice@acme.example"}})
	ev := w.agentEvent(t, id, agents.EventAgentActivated, &registryv1.AgentActivated{Name: name})
	w.applied(t, ev)
	return name
}

// applied waits until the projection has applied ev.
func (w *suspensionWorld) applied(t *testing.T, ev eventstore.Event) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), testkit.DefaultWait)
	defer cancel()
	if err := w.runner.WaitFor(ctx, ev.Sequence); err != nil {
		t.Fatal(err)
	}
}

// access publishes an access by agent at time at with outcome.
func (w *suspensionWorld) access(t *testing.T, agent string, at time.Time, outcome monitorv1.AccessOutcome) {
	t.Helper()
	req := &monitorv1.RecordAccessRequest{Parent: "tenants/acme", BatchId: uuid.NewString(), Events: []*monitorv1.AccessEvent{{
		EventId: uuid.NewString(), Time: timestamppb.New(at), Tenant: "acme", Agent: agent, ClientId: "client-of-" + agent,
		Resource: "/orders", Action: "GET", Outcome: outcome,
	}}}
	if _, err := w.es.Publish(t.Context(), "telemetry.acme.access.recorded", ingest.TypeAccessRecorded, "tenants/acme/clients/orders-api", req,
		eventstore.Metadata{Tenant: "acme", Actor: eventstore.Actor{ID: "orders-api", Kind: eventstore.ActorService}}); err != nil {
		t.Fatal(err)
	}
}

// refusedToken publishes a token request of agent that the issuer refused (invalid_client).
func (w *suspensionWorld) refusedToken(t *testing.T, agent string) {
	t.Helper()
	if _, err := w.es.Publish(t.Context(), "telemetry.acme.token.requested", ingest.TypeTokenRequested, "tenants/acme/clients/x", &issuerv1.TokenRequested{
		Tenant: "acme", Agent: agent, ClientId: "client-of-" + agent, Outcome: issuerv1.TokenOutcome_TOKEN_OUTCOME_DENIED, Error: "invalid_client",
	}, eventstore.Metadata{Tenant: "acme", Actor: eventstore.Actor{ID: "issuer", Kind: eventstore.ActorService}}); err != nil {
		t.Fatal(err)
	}
}

// of lists the inactive_agent_activity alerts about agent.
func (w *suspensionWorld) of(t *testing.T, agent string) []*monitorv1.Alert {
	t.Helper()
	list, _, err := w.alerts.List(alerts.Query{Tenant: "acme", Agent: agent, Detector: detect.InactiveAgentActivity})
	if err != nil {
		t.Fatal(err)
	}
	return list
}

// TestSuspendedAgentActivityIsJudgedAtItsTime runs the monitor's detection path on real streams.
// An allowed access made after a suspension and published right after it raises a CRITICAL alert
// every time, although the projection had not applied the suspension when the access reached
// detection (the runner is held there until detection's catch-up). A refused token request of a
// suspended agent raises one LOW alert and no CRITICAL one; an access made before the suspension
// but processed after it raises nothing; after a resume, activity raises nothing, while activity
// from the suspension's interval, processed after the resume, is still CRITICAL.
func TestSuspendedAgentActivityIsJudgedAtItsTime(t *testing.T) {
	w := newSuspensionWorld(t)
	const runs = 20
	for i := range runs {
		id := "lag-" + string(rune('a'+i))
		name := w.active(t, id)
		w.mu.Lock()
		w.current = name
		w.mu.Unlock()
		w.lag.hold()
		susp := w.agentEvent(t, id, agents.EventAgentSuspended, &registryv1.AgentSuspended{Name: name, Cause: "alert:x"})
		w.access(t, name, time.Now(), monitorv1.AccessOutcome_ACCESS_OUTCOME_ALLOWED)
		testkit.Eventually(t, 0, "the CRITICAL alert of "+name, func() (bool, error) {
			list := w.of(t, name)
			return len(list) == 1 && list[0].GetSeverity() == monitorv1.AlertSeverity_ALERT_SEVERITY_CRITICAL, nil
		})
		w.mu.Lock()
		lagged := w.lagged[name]
		w.mu.Unlock()
		if !lagged {
			t.Fatalf("run %d: the projection had applied the suspension (seq %d) before detection's catch-up: the run proves nothing", i, susp.Sequence)
		}
	}
	if n := counter(t, w.reg, "monitor_detection_directory_stale_total"); n != 0 {
		t.Errorf("monitor_detection_directory_stale_total = %v, want 0", n)
	}

	// The rest, with the projection not held, each checked once a sentinel published after it has
	// raised its alert (the consumer handles one event at a time, in order).
	sentinel := w.active(t, "sentinel")
	sentinelSuspended := w.agentEvent(t, "sentinel", agents.EventAgentSuspended, &registryv1.AgentSuspended{Name: sentinel}).Time
	sentinels := 0
	settle := func() {
		t.Helper()
		sentinels++
		w.access(t, sentinel, sentinelSuspended.Add(time.Duration(sentinels)*time.Hour), monitorv1.AccessOutcome_ACCESS_OUTCOME_ALLOWED)
		testkit.Eventually(t, 0, "the sentinel's alerts", func() (bool, error) { return len(w.of(t, sentinel)) == sentinels, nil })
	}

	refused := w.active(t, "refused")
	w.applied(t, w.agentEvent(t, "refused", agents.EventAgentSuspended, &registryv1.AgentSuspended{Name: refused}))
	w.refusedToken(t, refused)
	w.refusedToken(t, refused)
	before := w.active(t, "before")
	madeBefore := time.Now()
	nextMillisecond(t, madeBefore)
	w.applied(t, w.agentEvent(t, "before", agents.EventAgentSuspended, &registryv1.AgentSuspended{Name: before}))
	w.access(t, before, madeBefore, monitorv1.AccessOutcome_ACCESS_OUTCOME_ALLOWED)
	resumed := w.active(t, "resumed")
	suspendedAt := w.agentEvent(t, "resumed", agents.EventAgentSuspended, &registryv1.AgentSuspended{Name: resumed}).Time
	nextMillisecond(t, suspendedAt.Add(time.Millisecond))
	resumedEv := w.agentEvent(t, "resumed", agents.EventAgentResumed, &registryv1.AgentResumed{Name: resumed})
	w.applied(t, resumedEv)
	w.access(t, resumed, resumedEv.Time.Add(time.Millisecond), monitorv1.AccessOutcome_ACCESS_OUTCOME_ALLOWED)
	w.access(t, resumed, resumedEv.Time.Add(2*time.Hour), monitorv1.AccessOutcome_ACCESS_OUTCOME_ALLOWED)
	settle()

	if list := w.of(t, refused); len(list) != 1 || list[0].GetSeverity() != monitorv1.AlertSeverity_ALERT_SEVERITY_LOW {
		t.Errorf("refused token requests of a suspended agent raised %v, want one LOW alert", list)
	}
	if list := w.of(t, before); len(list) != 0 {
		t.Errorf("an access made before the suspension raised %v, want none", list)
	}
	if list := w.of(t, resumed); len(list) != 0 {
		t.Errorf("accesses after the resume raised %v, want none", list)
	}

	// Activity from within the suspension, processed after the resume, is still CRITICAL.
	w.access(t, resumed, suspendedAt.Add(time.Millisecond), monitorv1.AccessOutcome_ACCESS_OUTCOME_ALLOWED)
	settle()
	if list := w.of(t, resumed); len(list) != 1 || list[0].GetSeverity() != monitorv1.AlertSeverity_ALERT_SEVERITY_CRITICAL {
		t.Errorf("an access made while suspended, processed after the resume, raised %v, want one CRITICAL alert", list)
	}
}

// nextMillisecond waits until the clock is in a millisecond after the one of at, so that an event
// stamped from now on is later than at at the projection's precision.
func nextMillisecond(t *testing.T, at time.Time) {
	t.Helper()
	testkit.Eventually(t, 0, "the next millisecond", func() (bool, error) {
		return time.Now().Truncate(time.Millisecond).After(at.Truncate(time.Millisecond)), nil
	})
}

// counter returns the value of the counter name in reg.
func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// TestRuntimeJudgesABatchWhenTheDirectoryCannotCatchUp: a catch-up that fails, or does not finish
// within CatchUpTimeout, is counted and the batch is judged anyway; a consumer stopping during the
// catch-up judges nothing (the batch is redelivered).
func TestRuntimeJudgesABatchWhenTheDirectoryCannotCatchUp(t *testing.T) {
	es := startStore(t)
	pub, err := alerts.NewPublisher(es, quiet)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		catchUp    func(ctx context.Context) error
		stop       bool
		wantJudged bool
		wantStale  float64
	}{
		{"caught up", func(context.Context) error { return nil }, false, true, 0},
		{"failed", func(context.Context) error { return errors.New("nats: no responders") }, false, true, 1},
		{"timed out", func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }, false, true, 1},
		{"consumer stopped", func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }, true, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			judged := false
			rt, err := alerts.NewRuntime(alerts.RuntimeConfig{
				Detect:  func([]store.Event) []*monitorv1.Alert { judged = true; return nil },
				CatchUp: tt.catchUp, CatchUpTimeout: 20 * time.Millisecond,
				Publisher: pub, Logger: quiet, Registerer: reg,
			})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(t.Context())
			if tt.stop {
				cancel()
			}
			defer cancel()
			rt.OnStored(ctx, []store.Event{{EventID: "e1", Tenant: "acme", Kind: store.KindAccess, Time: time.Now()}})
			if judged != tt.wantJudged {
				t.Errorf("judged = %v, want %v", judged, tt.wantJudged)
			}
			if n := counter(t, reg, "monitor_detection_directory_stale_total"); n != tt.wantStale {
				t.Errorf("monitor_detection_directory_stale_total = %v, want %v", n, tt.wantStale)
			}
		})
	}
}
