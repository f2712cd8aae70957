package seed_test

import (
	"bytes"
	"context"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentid/agentid/loadtest/internal/seed"
	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/testkit"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

const tenant = "acme"

// platform is a JetStream server with the platform's streams, a tenant and the lifecycle's work
// consumer, as a platform that has run once and been stopped leaves them.
type platform struct {
	nats  *testkit.NATS
	js    jetstream.JetStream
	store *eventstore.Store
}

func newPlatform(t *testing.T) platform {
	t.Helper()
	n := testkit.StartNATS(t)
	js := n.JetStream(t)
	store := eventstore.New(js, eventstore.WithSource("agentid/registry"), eventstore.WithRegisterer(nil))
	ctx := t.Context()
	if err := store.EnsureStreams(ctx); err != nil {
		t.Fatalf("EnsureStreams: %v", err)
	}
	if _, err := store.Append(ctx, eventstore.Append{
		Tenant: tenant, AggregateType: eventstore.AggregateTenant, AggregateID: tenant, Type: "tenant.created",
		IdempotencyKey: "create", Subject: "tenants/" + tenant,
		Data:     &registryv1.TenantCreated{Tenant: &registryv1.Tenant{Name: "tenants/" + tenant, TenantId: tenant, DisplayName: "Acme"}},
		Metadata: eventstore.Metadata{Actor: eventstore.Actor{ID: "test", Kind: eventstore.ActorService}},
	}); err != nil {
		t.Fatalf("create tenant: %v", err)
	}
	// The lifecycle's consumer (services/lifecycle: AgentEventsConsumer, AgentEventSubjects, Consume).
	if _, err := js.CreateOrUpdateConsumer(ctx, eventstore.StreamAgents, jetstream.ConsumerConfig{
		Durable: seed.LifecycleConsumer,
		FilterSubjects: []string{
			eventstore.SubjectRoot + ".*.agent.*.registered",
			eventstore.SubjectRoot + ".*.agent.*.retirement_requested",
		},
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
		MaxDeliver:    -1,
	}); err != nil {
		t.Fatalf("create consumer: %v", err)
	}
	return platform{nats: n, js: js, store: store}
}

func (p platform) streamMsgs(t *testing.T) uint64 {
	t.Helper()
	s, err := p.js.Stream(t.Context(), eventstore.StreamAgents)
	if err != nil {
		t.Fatalf("stream: %v", err)
	}
	return s.CachedInfo().State.Msgs
}

func (p platform) consumerInfo(t *testing.T) *jetstream.ConsumerInfo {
	t.Helper()
	c, err := p.js.Consumer(t.Context(), eventstore.StreamAgents, seed.LifecycleConsumer)
	if err != nil {
		t.Fatalf("consumer: %v", err)
	}
	info, err := c.Info(t.Context())
	if err != nil {
		t.Fatalf("consumer info: %v", err)
	}
	return info
}

func seedStore(p platform) *eventstore.Store {
	return eventstore.New(p.js, eventstore.WithSource(seed.Source), eventstore.WithRegisterer(nil))
}

func TestSeedWritesRegisteredThenActivatedAgentsOnce(t *testing.T) {
	p := newPlatform(t)
	ctx := t.Context()
	const first, count = 5, 40
	var last seed.Progress
	done, err := seed.Seed(ctx, seed.Config{Store: seedStore(p), Tenant: tenant, First: first, Count: count, Concurrency: 8,
		OnProgress: func(pr seed.Progress) { last = pr }})
	if err != nil || done != count {
		t.Fatalf("Seed = %d, %v; want %d, nil", done, err, count)
	}
	if last.Done != count || last.Total != count {
		t.Errorf("last progress = %+v, want %d of %d", last, count, count)
	}
	if got := p.streamMsgs(t); got != 2*count {
		t.Fatalf("AGENTS holds %d events, want %d", got, 2*count)
	}

	idRE := regexp.MustCompile(`^agt_[0-9a-hjkmnp-tv-z]{26}$`)
	seen := map[string]bool{}
	var jwks string
	for i := first; i < first+count; i++ {
		id := seed.AgentID(tenant, i)
		if !idRE.MatchString(id) || seen[id] {
			t.Fatalf("AgentID(%d) = %q: not a fresh agent id", i, id)
		}
		seen[id] = true
		events, version, err := p.store.Load(ctx, tenant, eventstore.AggregateAgent, id)
		if err != nil {
			t.Fatalf("Load %s: %v", id, err)
		}
		if len(events) != 2 || events[0].Type != seed.EventAgentRegistered || events[1].Type != seed.EventAgentActivated {
			t.Fatalf("agent %d: events %v, want registered then activated", i, eventTypes(events))
		}
		reg, act := events[0], events[1]
		if reg.ExpectedVersion != 0 || act.ExpectedVersion != reg.Sequence || version != act.Sequence {
			t.Errorf("agent %d: versions %d→%d, %d→%d (aggregate %d): want 0→reg, reg→act", i, reg.ExpectedVersion, reg.Sequence, act.ExpectedVersion, act.Sequence, version)
		}
		name := "tenants/" + tenant + "/agents/" + id
		for _, e := range events {
			if e.Subject != name || e.Source != seed.Source || e.Metadata.Tenant != tenant || e.Metadata.Actor.ID == "" || e.Metadata.CausationID == "" {
				t.Errorf("agent %d: event %s envelope %+v", i, e.Type, e)
			}
		}
		a, err := eventstore.DecodeAs[*registryv1.AgentRegistered](reg)
		if err != nil {
			t.Fatalf("decode registration: %v", err)
		}
		ag := a.GetAgent()
		if ag.GetName() != name || ag.GetAgentId() != id || ag.GetTenant() != tenant || ag.GetOwner() == "" || ag.GetSponsor() != seed.Sponsor || ag.GetPurpose() == "" ||
			ag.GetDisplayName() == "" || ag.GetRiskTier() != registryv1.RiskTier_RISK_TIER_LOW ||
			ag.GetEnvironment() != registryv1.Environment_ENVIRONMENT_DEV || len(ag.GetScopes()) != 1 || ag.GetScopes()[0] != seed.Scope {
			t.Errorf("agent %d: registered %v", i, ag)
		}
		if _, err := authn.ParsePublicJWKS(ag.GetPublicJwks(), 5); err != nil {
			t.Errorf("agent %d: public JWKS: %v", i, err)
		}
		if jwks == "" {
			jwks = ag.GetPublicJwks()
		} else if ag.GetPublicJwks() != jwks {
			t.Errorf("agent %d: JWKS differs from the first agent's; one shared key is expected", i)
		}
		d, err := eventstore.DecodeAs[*registryv1.AgentActivated](act)
		if err != nil {
			t.Fatalf("decode activation: %v", err)
		}
		if d.GetName() != name || d.GetDecisionId() == "" || d.GetApprovedBy() == "" {
			t.Errorf("agent %d: activated %v", i, d)
		}
	}

	// A rerun over an overlapping range writes only the new agents.
	done, err = seed.Seed(ctx, seed.Config{Store: seedStore(p), Tenant: tenant, First: first + count/2, Count: count, Concurrency: 8})
	if err != nil || done != count {
		t.Fatalf("rerun: Seed = %d, %v; want %d, nil", done, err, count)
	}
	if got, want := p.streamMsgs(t), uint64(2*(count+count/2)); got != want {
		t.Fatalf("after the rerun AGENTS holds %d events, want %d", got, want)
	}
}

func eventTypes(events []eventstore.Event) []string {
	out := make([]string, len(events))
	for i, e := range events {
		out[i] = e.Type
	}
	return out
}

func TestSeedRejectsBadConfig(t *testing.T) {
	p := newPlatform(t)
	tests := []struct {
		name string
		cfg  seed.Config
		want string
	}{
		{"no store", seed.Config{Tenant: tenant, Count: 1}, "Store"},
		{"no tenant", seed.Config{Store: seedStore(p), Count: 1}, "Tenant"},
		{"no agents", seed.Config{Store: seedStore(p), Tenant: tenant}, "Count"},
		{"negative first", seed.Config{Store: seedStore(p), Tenant: tenant, Count: 1, First: -1}, "First"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := seed.Seed(t.Context(), tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Seed = %v, want an error naming %s", err, tt.want)
			}
		})
	}
	if got := p.streamMsgs(t); got != 0 {
		t.Fatalf("AGENTS holds %d events after refused runs, want 0", got)
	}
}

func TestMarkHandledAcknowledgesSeededDeliveriesOnly(t *testing.T) {
	p := newPlatform(t)
	ctx := t.Context()
	const count = 30
	if _, err := seed.Seed(ctx, seed.Config{Store: seedStore(p), Tenant: tenant, Count: count}); err != nil {
		t.Fatalf("Seed: %v", err)
	}
	res, err := seed.MarkHandled(ctx, p.js, eventstore.StreamAgents, seed.LifecycleConsumer)
	if err != nil || res.Acked != count {
		t.Fatalf("MarkHandled = %+v, %v; want %d acknowledged (one registration per agent)", res, err, count)
	}
	if info := p.consumerInfo(t); info.NumPending != 0 || info.NumAckPending != 0 || info.AckFloor.Stream != info.Delivered.Stream {
		t.Fatalf("consumer after MarkHandled: pending %d, ack pending %d, ack floor %d, delivered %d; want all handled",
			info.NumPending, info.NumAckPending, info.AckFloor.Stream, info.Delivered.Stream)
	}

	// An event the platform wrote is the platform's to handle: given back, never acknowledged.
	reg, _ := seed.Appends(tenant, 1000, "{}")
	reg.IdempotencyKey = "real"
	foreign, err := p.store.Append(ctx, reg)
	if err != nil {
		t.Fatalf("append a real registration: %v", err)
	}
	if _, err := seed.Seed(ctx, seed.Config{Store: seedStore(p), Tenant: tenant, First: count, Count: 3}); err != nil {
		t.Fatalf("Seed: %v", err)
	}
	_, err = seed.MarkHandled(ctx, p.js, eventstore.StreamAgents, seed.LifecycleConsumer)
	if !errors.Is(err, seed.ErrForeignEvent) {
		t.Fatalf("MarkHandled with a real event pending = %v, want ErrForeignEvent", err)
	}
	cons, err := p.js.Consumer(ctx, eventstore.StreamAgents, seed.LifecycleConsumer)
	if err != nil {
		t.Fatalf("consumer: %v", err)
	}
	deadline := time.Now().Add(testkit.DefaultWait)
	for {
		msg, err := cons.Next(jetstream.FetchMaxWait(time.Second))
		if err == nil {
			md, _ := msg.Metadata()
			if md.Sequence.Stream == foreign.Sequence {
				break // still there for the platform
			}
			_ = msg.Nak()
		}
		if time.Now().After(deadline) {
			t.Fatalf("the real registration (seq %d) is not redelivered: it was acknowledged", foreign.Sequence)
		}
	}
}

func TestMarkHandledRefusesAMissingOrBusyConsumer(t *testing.T) {
	p := newPlatform(t)
	ctx := t.Context()
	_, err := seed.MarkHandled(ctx, p.js, eventstore.StreamAgents, "no-such-consumer")
	if err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("MarkHandled on a missing consumer = %v, want 'does not exist'", err)
	}

	cons, err := p.js.Consumer(ctx, eventstore.StreamAgents, seed.LifecycleConsumer)
	if err != nil {
		t.Fatalf("consumer: %v", err)
	}
	pullCtx, stop := context.WithCancel(ctx)
	defer stop()
	go func() { // a running platform: a pull request that waits for events
		for pullCtx.Err() == nil {
			b, err := cons.Fetch(1, jetstream.FetchMaxWait(2*time.Second))
			if err == nil {
				for range b.Messages() {
				}
			}
		}
	}()
	deadline := time.Now().Add(testkit.DefaultWait)
	for p.consumerInfo(t).NumWaiting == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the pull request never showed as waiting")
		}
		time.Sleep(10 * time.Millisecond)
	}
	_, err = seed.MarkHandled(ctx, p.js, eventstore.StreamAgents, seed.LifecycleConsumer)
	if !errors.Is(err, seed.ErrConsumerInUse) {
		t.Fatalf("MarkHandled while a process pulls = %v, want ErrConsumerInUse", err)
	}
}

func TestMainSeedsAndHandsOff(t *testing.T) {
	p := newPlatform(t)
	var stdout, stderr bytes.Buffer
	code := seed.Main(t.Context(), []string{"--nats-url", p.nats.URL(), "--tenant", tenant, "--agents", "25", "--concurrency", "4"}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d, stderr %s", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), "seeded 25 agents in tenant acme") || !strings.Contains(stdout.String(), "25 seeded events acknowledged") {
		t.Errorf("stdout = %q", stdout.String())
	}
	if !strings.Contains(stderr.String(), "25/25 agents") {
		t.Errorf("stderr has no final progress: %q", stderr.String())
	}
	if info := p.consumerInfo(t); info.NumPending != 0 || info.NumAckPending != 0 {
		t.Errorf("consumer pending %d, ack pending %d after the run; want 0", info.NumPending, info.NumAckPending)
	}

	stdout.Reset()
	stderr.Reset()
	code = seed.Main(t.Context(), []string{"--nats-url", p.nats.URL(), "--tenant", "other", "--agents", "5"}, &stdout, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "--tenant other") {
		t.Fatalf("unknown tenant: exit %d, stderr %q; want 1 naming --tenant", code, stderr.String())
	}
	if got := p.streamMsgs(t); got != 50 {
		t.Fatalf("AGENTS holds %d events, want 50 (nothing written for the unknown tenant)", got)
	}
}

func TestMainRejectsBadFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"not loopback", []string{"--nats-url", "nats://10.1.2.3:4222"}, "--nats-url"},
		{"not a nats url", []string{"--nats-url", "http://127.0.0.1:4222"}, "--nats-url"},
		{"bad tenant", []string{"--tenant", "Acme"}, "--tenant"},
		{"no agents", []string{"--agents", "0"}, "--agents"},
		{"negative first", []string{"--first", "-1"}, "--first"},
		{"no concurrency", []string{"--concurrency", "0"}, "--concurrency"},
		{"stray argument", []string{"extra"}, "unexpected"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := seed.Main(t.Context(), tt.args, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), tt.want) {
				t.Fatalf("exit %d, stderr %q; want 2 naming %s", code, stderr.String(), tt.want)
			}
		})
	}
}
