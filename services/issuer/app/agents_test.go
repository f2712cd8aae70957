package app_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/testkit"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"

	"github.com/agentid/agentid/services/issuer/internal/revocation"
)

// agentEvent appends a registry event of the agent tenants/{tenant}/agents/{agentID} to the AGENTS
// stream, as the registry does; the event type is its idempotency key.
func agentEvent(t testing.TB, r *replica, tenant, agentID, typ string, msg proto.Message) eventstore.Event {
	t.Helper()
	e, err := r.store.Append(context.Background(), eventstore.Append{
		Tenant: tenant, AggregateType: eventstore.AggregateAgent, AggregateID: agentID,
		ExpectedVersion: eventstore.AnyVersion, IdempotencyKey: typ, Type: typ,
		Subject: "tenants/" + tenant + "/agents/" + agentID, Data: msg,
		Metadata: eventstore.Metadata{Actor: eventstore.Actor{ID: "registry", Kind: eventstore.ActorService}},
	})
	if err != nil {
		t.Fatalf("append %s: %v", typ, err)
	}
	return e
}

// agentName is the resource name of c's agent.
func (c *testClient) agentName() string { return "tenants/" + c.tenant + "/agents/" + c.id }

// registerAgent records that c's agent was registered (PENDING), as the registry does.
func (c *testClient) registerAgent(t testing.TB, r *replica) {
	t.Helper()
	agentEvent(t, r, c.tenant, c.id, "agent.registered", &registryv1.AgentRegistered{Agent: &registryv1.Agent{Name: c.agentName()}})
}

// activate records that c's agent was registered and approved (ACTIVE), as the registry does: the
// issuer issues tokens to an agent's client only while the agent is ACTIVE. Repeating it changes
// nothing.
func (c *testClient) activate(t testing.TB, r *replica) {
	t.Helper()
	c.registerAgent(t, r)
	agentEvent(t, r, c.tenant, c.id, "agent.activated", &registryv1.AgentActivated{Name: c.agentName()})
}

// revocations returns the tokens.revoked events of tenant on the REVOCATIONS stream, oldest first,
// with their event ids. It is called once per round of waitRevocations' polling loop, so it keeps
// nothing: its connection is closed and its consumer deleted on return.
func revocations(t testing.TB, n *testkit.NATS, tenant string) ([]*issuerv1.TokensRevoked, []eventstore.Event) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testkit.DefaultWait)
	defer cancel()
	nc, err := nats.Connect(n.URL(), nats.Name(t.Name()+" revocations"))
	if err != nil {
		t.Fatalf("connect to %s: %v", n.URL(), err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	filter := eventstore.SubjectRoot + "." + tenant + "." + eventstore.AggregateRevocation + ".>"
	st, err := js.Stream(ctx, eventstore.StreamRevocations)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		t.Fatal(err)
	}
	var want uint64
	for _, c := range info.State.Subjects {
		want += c
	}
	if want == 0 {
		return nil, nil
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		info := cons.CachedInfo()
		if info == nil {
			return // no consumer was created on the server
		}
		if err := st.DeleteConsumer(ctx, info.Name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			t.Errorf("delete the revocations reader: %v", err)
		}
	}()
	var (
		msgs   []*issuerv1.TokensRevoked
		events []eventstore.Event
	)
	for uint64(len(msgs)) < want {
		m, err := cons.Next(jetstream.FetchMaxWait(testkit.DefaultWait))
		if err != nil {
			t.Fatalf("revocation %d of %d: %v", len(msgs)+1, want, err)
		}
		e, err := eventstore.EventFromMsg(m)
		if err != nil {
			t.Fatal(err)
		}
		msg, err := eventstore.DecodeAs[*issuerv1.TokensRevoked](e)
		if err != nil {
			t.Fatal(err)
		}
		msgs, events = append(msgs, msg), append(events, e)
	}
	return msgs, events
}

// waitRevocations waits until tenant has n revocations and returns them.
func waitRevocations(t testing.TB, n *testkit.NATS, tenant string, count int) []*issuerv1.TokensRevoked {
	t.Helper()
	var got []*issuerv1.TokensRevoked
	testkit.Eventually(t, 0, "revocations", func() (bool, error) {
		got, _ = revocations(t, n, tenant)
		return len(got) >= count, nil
	})
	if len(got) != count {
		t.Fatalf("%d revocations, want %d: %v", len(got), count, got)
	}
	return got
}

func TestTokenOnlyWhileTheAgentIsActive(t *testing.T) {
	n := testkit.StartNATS(t)
	r := startReplica(t, n, "")
	c := newTestClient(t, "acme", "agt-lifecycle")
	if err := r.app.EnsureClient(context.Background(), c.tenant, &issuerv1.Client{
		ClientId: c.id, Agent: c.agentName(), Environment: "prod", PublicJwks: c.jwks(t), Scopes: []string{"x"},
		Resources: []string{agentResource},
	}); err != nil {
		t.Fatal(err)
	}

	// Unknown to the registry, then PENDING: refused.
	refused := func(when string) {
		t.Helper()
		resp := postForm(t, r.tokenURL(c.tenant), tokenForm(c.assertion(t, r)))
		wantOAuthError(t, resp, http.StatusUnauthorized, "invalid_client")
		if d := resp.str("error_description"); d != "client authentication failed" {
			t.Fatalf("%s: error_description %q", when, d)
		}
	}
	refused("agent unknown")
	c.registerAgent(t, r)
	refused("agent PENDING")

	// Activated, then at once a token: issued, however far the projection lags.
	agentEvent(t, r, c.tenant, c.id, "agent.activated", &registryv1.AgentActivated{Name: c.agentName()})
	requestToken(t, r, c)

	// Retirement requested: refused once the projection has applied it, and the agent's tokens are
	// revoked from the event's time plus the projection-lag allowance.
	retire := agentEvent(t, r, c.tenant, c.id, "agent.retirement_requested", &registryv1.AgentRetirementRequested{Name: c.agentName(), Reason: "done"})
	testkit.Eventually(t, 0, "refusal after retirement", func() (bool, error) {
		resp := postForm(t, r.tokenURL(c.tenant), tokenForm(c.assertion(t, r)))
		return resp.status == http.StatusUnauthorized && resp.str("error") == "invalid_client", nil
	})
	refused("agent RETIRING")
	got := waitRevocations(t, n, c.tenant, 1)[0]
	if got.GetTarget() != issuerv1.RevocationTarget_REVOCATION_TARGET_AGENT || got.GetAgent() != c.agentName() ||
		got.GetCause() != issuerv1.RevocationCause_REVOCATION_CAUSE_AGENT_STATE || got.GetSourceEventId() != retire.ID ||
		!got.GetNotBefore().AsTime().Equal(retire.Time.Add(revocation.DefaultProjectionLagAllowance)) {
		t.Fatalf("revocation = %v, want the agent's tokens up to %s + %s (event %s)", got, retire.Time, revocation.DefaultProjectionLagAllowance, retire.ID)
	}
}

func TestClientsWithoutAgentAreNotChecked(t *testing.T) {
	r := startIssuer(t)
	c := newTestClient(t, "acme", "staff-1")
	if err := r.app.EnsureClient(context.Background(), c.tenant, &issuerv1.Client{
		ClientId: c.id, PublicJwks: c.jwks(t), Roles: []string{"auditor"},
	}); err != nil {
		t.Fatal(err)
	}
	requestToken(t, r, c) // no registry events at all
}

func TestDisabledClientIsRevokedOnce(t *testing.T) {
	n := testkit.StartNATS(t)
	r := startReplica(t, n, "")
	c := newTestClient(t, "acme", "agt-disabled")
	c.register(t, r, "x")
	if _, err := r.admin(t).DisableClient(as("acme-admin"), &issuerv1.DisableClientRequest{
		Name: "tenants/acme/clients/" + c.id, Reason: "compromised", RequestId: "disable-1",
	}); err != nil {
		t.Fatal(err)
	}
	events, _, err := r.store.Load(context.Background(), c.tenant, eventstore.AggregateClient, c.id)
	if err != nil || len(events) != 2 || events[1].Type != "client.disabled" {
		t.Fatalf("client events %v (%v), want created and disabled", events, err)
	}
	disabled := events[1]
	msg, err := eventstore.DecodeAs[*issuerv1.ClientDisabled](disabled)
	if err != nil {
		t.Fatal(err)
	}
	got := waitRevocations(t, n, c.tenant, 1)[0]
	if got.GetTarget() != issuerv1.RevocationTarget_REVOCATION_TARGET_CLIENT || got.GetClientId() != c.id ||
		got.GetCause() != issuerv1.RevocationCause_REVOCATION_CAUSE_CLIENT_DISABLED || got.GetSourceEventId() != disabled.ID ||
		!got.GetNotBefore().AsTime().Equal(msg.GetRevokeTime().AsTime().Add(revocation.DefaultProjectionLagAllowance)) ||
		!got.GetExpireTime().AsTime().Equal(revocation.ExpireTime(got.GetNotBefore().AsTime())) {
		t.Fatalf("revocation = %v, want client %s's tokens up to %s + %s", got, c.id, msg.GetRevokeTime().AsTime(), revocation.DefaultProjectionLagAllowance)
	}

	// Every event delivered again: the consumer is recreated from the stream's start by another
	// replica. Still one revocation.
	ctx, cancel := context.WithTimeout(context.Background(), testkit.DefaultWait)
	defer cancel()
	js := n.JetStream(t)
	if err := js.DeleteConsumer(ctx, eventstore.StreamCredentials, revocation.ClientsConsumer); err != nil {
		t.Fatal(err)
	}
	startReplica(t, n, "")
	testkit.Eventually(t, 0, "the recreated consumer handling every event", func() (bool, error) {
		cons, err := js.Consumer(ctx, eventstore.StreamCredentials, revocation.ClientsConsumer)
		if err != nil {
			return false, err
		}
		info, err := cons.Info(ctx)
		if err != nil {
			return false, err
		}
		return info.Delivered.Stream > 0 && info.NumPending == 0 && info.NumAckPending == 0, nil
	})
	if all, _ := revocations(t, n, c.tenant); len(all) != 1 {
		t.Fatalf("%d revocations after redelivery, want 1: %v", len(all), all)
	}
}

func TestReactorSkipsEventsTooOldToMatter(t *testing.T) {
	n := testkit.StartNATS(t)
	old := time.Now().Add(-48 * time.Hour)
	// Events recorded two days ago (the store's clock says so): no token of that time is still valid.
	store := eventstore.New(n.JetStream(t), eventstore.WithSource("agentid/registry"), eventstore.WithClock(func() time.Time { return old }))
	if err := store.EnsureStreams(context.Background()); err != nil {
		t.Fatal(err)
	}
	past := &replica{store: store}
	c := newTestClient(t, "acme", "agt-old")
	c.activate(t, past)
	agentEvent(t, past, c.tenant, c.id, "agent.retirement_requested", &registryv1.AgentRetirementRequested{Name: c.agentName()})

	r := startReplica(t, n, "")
	// A fresh retirement after the old one shows the reactor has passed the old event.
	fresh := newTestClient(t, "acme", "agt-new")
	fresh.activate(t, r)
	agentEvent(t, r, fresh.tenant, fresh.id, "agent.retirement_requested", &registryv1.AgentRetirementRequested{Name: fresh.agentName()})
	got := waitRevocations(t, n, "acme", 1)[0]
	if got.GetAgent() != fresh.agentName() {
		t.Fatalf("revocation of %s, want only %s's", got.GetAgent(), fresh.agentName())
	}
}
