package app_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/eventstore"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/monitor/internal/ingest"
)

// Batch sizes of the load: the issuer's token telemetry batch (telemetry.DefaultMaxBatch) and the
// verifier SDK's access batch (authn.DefaultAccessBatchSize), both full, as under load.
const (
	loadTokenBatch  = 256
	loadAccessBatch = 500
	loadTenant      = "acme"
)

// totals are the request rows published for one agent, as agent_hourly sums them.
type totals struct {
	Requests, Denied, Rows, Bytes int64
}

func (t *totals) add(o totals) {
	t.Requests += o.Requests
	t.Denied += o.Denied
	t.Rows += o.Rows
	t.Bytes += o.Bytes
}

// loadAgents are the registered agents the load is about (known agents: their rows count in the
// hourly aggregates).
func loadAgents(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("tenants/%s/agents/load-%02d", loadTenant, i)
	}
	return out
}

// registerAgents appends the registration and activation of each agent to AGENTS, as the registry
// would, so that the monitor knows them.
func registerAgents(t testing.TB, es *eventstore.Store, names []string) {
	t.Helper()
	md := eventstore.Metadata{Actor: eventstore.Actor{ID: "registry", Kind: eventstore.ActorService}}
	for _, name := range names {
		id := name[len("tenants/"+loadTenant+"/agents/"):]
		for i, ap := range []eventstore.Append{
			{Type: "agent.registered", Data: &registryv1.AgentRegistered{Agent: &registryv1.Agent{Name: name, Owner: "olga@acme.example",
				Sponsor: "sponsor@acme.example", Environment: registryv1.Environment_ENVIRONMENT_PROD,
				RiskTier: registryv1.RiskTier_RISK_TIER_LOW, Scopes: []string{"reports.read"}}}},
			{Type: "agent.activated", ExpectedVersion: eventstore.AnyVersion, Data: &registryv1.AgentActivated{Name: name}},
		} {
			ap.Tenant, ap.AggregateType, ap.AggregateID, ap.Subject, ap.Metadata = loadTenant, eventstore.AggregateAgent, id, name, md
			ap.IdempotencyKey = fmt.Sprintf("%s-%d", id, i)
			if _, err := es.Append(context.Background(), ap); err != nil {
				t.Fatalf("append %s of %s: %v", ap.Type, name, err)
			}
		}
	}
}

// loadGen publishes telemetry on TELEMETRY as the issuer and resource servers do under load:
// token.requested.batch events of loadTokenBatch requests and access.recorded events of
// loadAccessBatch accesses, alternately, at a steady rate of rows per second (or as fast as it
// can when the rate is 0 or out of reach). Every event is published synchronously (stored by
// JetStream) before it is counted; a failed publish is retried under the same id, which the
// stream's duplicate window makes idempotent.
type loadGen struct {
	es     *eventstore.Store
	agents []string
	rate   int

	mu         sync.Mutex
	n          int64 // rows published
	messages   int64
	perAgent   map[string]*totals
	publishing time.Duration // time spent in publish calls
	err        error
}

func newLoadGen(es *eventstore.Store, agents []string, rate int) *loadGen {
	g := &loadGen{es: es, agents: agents, rate: rate, perAgent: map[string]*totals{}}
	for _, a := range agents {
		g.perAgent[a] = &totals{}
	}
	return g
}

// run publishes until stop is closed (after the event in progress) or ctx ends.
func (g *loadGen) run(ctx context.Context, stop <-chan struct{}) {
	start := time.Now()
	tick := time.NewTicker(10 * time.Millisecond) // pacing of the load, not a synchronisation
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		default:
		}
		for g.rate > 0 && g.published() >= int64(float64(g.rate)*time.Since(start).Seconds()) {
			select {
			case <-stop:
				return
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
		if err := g.publishNext(ctx, i%2 == 0); err != nil {
			g.mu.Lock()
			g.err = err
			g.mu.Unlock()
			return
		}
	}
}

// publishNext publishes one batch of token requests or of accesses.
func (g *loadGen) publishNext(ctx context.Context, tokens bool) error {
	base := g.published()
	now := time.Now().UTC()
	sums := map[string]totals{}
	var (
		subject, typ string
		msg          proto.Message
		rows         int
	)
	id := uuid.NewString()
	if tokens {
		reqs := make([]*issuerv1.TokenRequested, loadTokenBatch)
		for i := range reqs {
			n := base + int64(i)
			agent := g.agents[n%int64(len(g.agents))]
			r := &issuerv1.TokenRequested{
				Tenant: loadTenant, ClientId: agent[len("tenants/"+loadTenant+"/agents/"):], Agent: agent, GrantType: "client_credentials",
				Outcome: issuerv1.TokenOutcome_TOKEN_OUTCOME_ISSUED, Scopes: []string{"reports.read"}, Audiences: []string{"https://reports.acme.example"},
				TokenId: uuid.NewString(), Environment: "prod", RequestId: "req-" + strconv.FormatInt(n, 10), RemoteAddr: "10.1.2.3",
				Time: timestamppb.New(now),
			}
			s := totals{Requests: 1}
			if n%20 == 0 {
				r.Outcome, r.Error, r.TokenId = issuerv1.TokenOutcome_TOKEN_OUTCOME_DENIED, "invalid_scope", ""
				s.Denied = 1
			}
			reqs[i] = r
			t := sums[agent]
			t.add(s)
			sums[agent] = t
		}
		subject, typ, msg, rows = "telemetry."+loadTenant+".token.requested", ingest.TypeTokenRequestedBatch, &issuerv1.TokenRequestedBatch{Requests: reqs}, len(reqs)
	} else {
		events := make([]*monitorv1.AccessEvent, loadAccessBatch)
		for i := range events {
			n := base + int64(i)
			agent := g.agents[n%int64(len(g.agents))]
			e := &monitorv1.AccessEvent{
				EventId: uuid.NewString(), Time: timestamppb.New(now), Tenant: loadTenant, Agent: agent,
				ClientId: agent[len("tenants/"+loadTenant+"/agents/"):], Environment: "prod", Resource: fmt.Sprintf("/reports/%d", n%20),
				Action: "GET", Scopes: []string{"reports.read"}, Outcome: monitorv1.AccessOutcome_ACCESS_OUTCOME_ALLOWED, Status: 200,
				ResponseBytes: 100 + n%1000, Rows: n % 50, Latency: durationpb.New(time.Duration(n%5000) * time.Microsecond),
				SourceAddress: fmt.Sprintf("10.1.%d.%d", n/256%4, n%256), RequestId: "req-" + strconv.FormatInt(n, 10),
			}
			s := totals{Requests: 1, Rows: e.Rows, Bytes: e.ResponseBytes}
			if n%10 == 0 {
				e.Outcome, e.Reason, e.Status = monitorv1.AccessOutcome_ACCESS_OUTCOME_DENIED, "INSUFFICIENT_SCOPE", 403
				s.Denied = 1
			}
			events[i] = e
			t := sums[agent]
			t.add(s)
			sums[agent] = t
		}
		subject, typ, msg, rows = "telemetry."+loadTenant+".access.recorded", "access.recorded",
			&monitorv1.RecordAccessRequest{Parent: "tenants/" + loadTenant, BatchId: id, Events: events}, len(events)
	}
	md := eventstore.Metadata{Tenant: loadTenant, Actor: eventstore.Actor{ID: "reports-api", Kind: eventstore.ActorService}}
	began := time.Now()
	for {
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := g.es.PublishWithID(pctx, id, subject, typ, "tenants/"+loadTenant, msg, md)
		cancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return fmt.Errorf("publish %s %s: %w (it may or may not be stored)", typ, id, err)
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.publishing += time.Since(began)
	g.n += int64(rows)
	g.messages++
	for a, s := range sums {
		g.perAgent[a].add(s)
	}
	return nil
}

func (g *loadGen) published() int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.n
}

// result returns the rows published, per agent, and the publisher's error.
func (g *loadGen) result() (int64, map[string]totals, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := map[string]totals{}
	for a, s := range g.perAgent {
		out[a] = *s
	}
	return g.n, out, g.err
}

// sumTotals adds up per-agent totals.
func sumTotals(m map[string]totals) totals {
	var all totals
	for _, s := range m {
		all.add(s)
	}
	return all
}

// position is the ingest consumer's ack floor on TELEMETRY and the stream's last sequence.
func position(ctx context.Context, js jetstream.JetStream) (ackFloor, last uint64, err error) {
	s, err := js.Stream(ctx, eventstore.StreamTelemetry)
	if err != nil {
		return 0, 0, err
	}
	si, err := s.Info(ctx)
	if err != nil {
		return 0, 0, err
	}
	c, err := js.Consumer(ctx, eventstore.StreamTelemetry, ingest.ConsumerName)
	if err != nil {
		return 0, si.State.LastSeq, err
	}
	ci, err := c.Info(ctx)
	if err != nil {
		return 0, si.State.LastSeq, err
	}
	return ci.AckFloor.Stream, si.State.LastSeq, nil
}

// envInt reads a positive integer setting of a measurement run, or def.
func envInt(t testing.TB, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		t.Fatalf("$%s=%q: want a positive integer", name, v)
	}
	return n
}
