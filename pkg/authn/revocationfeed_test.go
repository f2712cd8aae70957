package authn_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/testkit"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
)

func TestRevocationNamesMatchTheEventStore(t *testing.T) {
	checks := []struct{ name, got, want string }{
		{"stream", authn.RevocationStream, eventstore.StreamRevocations},
		{"event type", authn.RevokedEventType, eventstore.TypeTokensRevoked},
		{"all-tenant subject", authn.RevocationSubject(""), eventstore.AggregateTypeSubject(eventstore.AggregateRevocation)},
		{"tenant subject", authn.RevocationSubject("acme"), eventstore.SubjectRoot + ".acme." + eventstore.AggregateRevocation + ".>"},
		{"type header", "ce-type", eventstore.HeaderType},
		{"schema header", "ce-dataschema", eventstore.HeaderDataSchema},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: authn has %q, eventstore %q", c.name, c.got, c.want)
		}
	}
}

// revocationEnv is an embedded NATS server with the platform's streams and a store to append to.
type revocationEnv struct {
	nats  *testkit.NATS
	js    jetstream.JetStream
	store *eventstore.Store
}

func newRevocationEnv(t *testing.T) *revocationEnv {
	t.Helper()
	n := testkit.StartNATS(t)
	js := n.JetStream(t)
	store := eventstore.New(js, eventstore.WithSource("agentid/test"))
	if err := store.EnsureStreams(t.Context()); err != nil {
		t.Fatal(err)
	}
	return &revocationEnv{nats: n, js: js, store: store}
}

// revoke appends ev as the issuer does and returns its stream sequence.
func (e *revocationEnv) revoke(t *testing.T, ev *issuerv1.TokensRevoked) uint64 {
	t.Helper()
	id := uuid.Must(uuid.NewV7()).String()
	stored, err := e.store.Append(t.Context(), eventstore.Append{
		Tenant: ev.GetTenant(), AggregateType: eventstore.AggregateRevocation, AggregateID: id,
		ExpectedVersion: 0, IdempotencyKey: id, Type: eventstore.TypeTokensRevoked,
		Subject: "tenants/" + ev.GetTenant() + "/revocations/" + id, Data: ev,
		Metadata: eventstore.Metadata{Actor: eventstore.Actor{ID: "admin", Kind: eventstore.ActorHuman}},
	})
	if err != nil {
		t.Fatalf("append revocation: %v", err)
	}
	return stored.Sequence
}

type feedOptions struct {
	tenant  string
	now     func() time.Time
	contact time.Duration
}

// startFeed runs a feed over a new Denylist until the test ends.
func (e *revocationEnv) startFeed(t *testing.T, js jetstream.JetStream, o feedOptions) *authn.RevocationFeed {
	t.Helper()
	deny := authn.NewDenylist(authn.DenylistConfig{})
	feed, err := authn.NewRevocationFeed(authn.RevocationFeedConfig{
		JetStream: js, Denylist: deny, Tenant: o.tenant, Now: o.now, ContactInterval: o.contact,
		RetryInterval: 20 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- feed.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("feed.Run: %v", err)
		}
	})
	return feed
}

func waitReady(t *testing.T, feed *authn.RevocationFeed) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), testkit.DefaultWait)
	defer cancel()
	if err := feed.Ready(ctx); err != nil {
		t.Fatal(err)
	}
}

// liveRevocation revokes value (target) of tenant as of now.
func liveRevocation(tenant string, target issuerv1.RevocationTarget, value string) *issuerv1.TokensRevoked {
	now := time.Now()
	ev := revocation(target, value, now)
	ev.Tenant = tenant
	return ev
}

func refusedEventually(t *testing.T, d *authn.Denylist, c *authn.Claims, what string) {
	t.Helper()
	testkit.Eventually(t, 0, what, func() (bool, error) {
		err := d.Check(c, "")
		return err != nil, nil
	})
	isRevoked(t, d.Check(c, ""))
}

func TestRevocationFeedCatchesUpThenFollows(t *testing.T) {
	env := newRevocationEnv(t)
	client := issuerv1.RevocationTarget_REVOCATION_TARGET_CLIENT
	token := issuerv1.RevocationTarget_REVOCATION_TARGET_TOKEN
	var last uint64
	for i := range 50 {
		last = env.revoke(t, liveRevocation("acme", token, fmt.Sprintf("old-%d", i)))
	}
	env.revoke(t, liveRevocation("acme", client, "client-1"))
	last = env.revoke(t, liveRevocation("globex", client, "client-9"))

	feed := env.startFeed(t, env.js, feedOptions{})
	waitReady(t, feed)
	// Ready means every revocation stored before the start has been applied.
	d := feed.Denylist()
	if st := feed.Stats(); st.Position < last || st.Entries != 52 || st.Applied != 52 || !st.Caught {
		t.Fatalf("after catch-up: %+v, want position >= %d, 52 entries and applied, caught", st, last)
	}
	issued := time.Now().Add(-time.Minute)
	for i := range 50 {
		isRevoked(t, d.Check(&authn.Claims{Tenant: "acme", ID: fmt.Sprintf("old-%d", i)}, ""))
	}
	isRevoked(t, d.Check(&authn.Claims{Tenant: "acme", ClientID: "client-1", IssuedAt: issued}, ""))
	isRevoked(t, d.Check(&authn.Claims{Tenant: "globex", ClientID: "client-9", IssuedAt: issued}, ""))

	// New revocations are applied as they are appended.
	env.revoke(t, liveRevocation("acme", issuerv1.RevocationTarget_REVOCATION_TARGET_AGENT, "tenants/acme/agents/a7"))
	refusedEventually(t, d, &authn.Claims{Tenant: "acme", Agent: "tenants/acme/agents/a7", IssuedAt: issued}, "a new agent revocation")
	if st := feed.Stats(); st.Pending != 0 || st.Rejected != 0 {
		t.Errorf("stats after following: %+v, want nothing pending or rejected", st)
	}
}

func TestRevocationFeedEmptyStreamIsReadyAtOnce(t *testing.T) {
	env := newRevocationEnv(t)
	feed := env.startFeed(t, env.js, feedOptions{})
	waitReady(t, feed)
	if feed.Denylist().Len() != 0 {
		t.Errorf("Len = %d, want 0", feed.Denylist().Len())
	}
}

func TestRevocationFeedWaitsForTheStream(t *testing.T) {
	n := testkit.StartNATS(t)
	js := n.JetStream(t)
	env := &revocationEnv{nats: n, js: js, store: eventstore.New(js, eventstore.WithSource("agentid/test"))}
	feed := env.startFeed(t, js, feedOptions{})
	if feed.Caught() {
		t.Fatal("feed caught up before the REVOCATIONS stream exists")
	}
	if err := env.store.EnsureStreams(t.Context()); err != nil {
		t.Fatal(err)
	}
	env.revoke(t, liveRevocation("acme", issuerv1.RevocationTarget_REVOCATION_TARGET_TOKEN, "jti-late"))
	waitReady(t, feed)
	refusedEventually(t, feed.Denylist(), &authn.Claims{Tenant: "acme", ID: "jti-late"}, "a revocation appended once the stream exists")
}

func TestRevocationFeedRestartForgetsNothing(t *testing.T) {
	env := newRevocationEnv(t)
	first := env.startFeed(t, env.js, feedOptions{})
	waitReady(t, first)
	token := issuerv1.RevocationTarget_REVOCATION_TARGET_TOKEN
	for i := range 20 {
		env.revoke(t, liveRevocation("acme", token, fmt.Sprintf("jti-%d", i)))
	}
	refusedEventually(t, first.Denylist(), &authn.Claims{Tenant: "acme", ID: "jti-19"}, "the first feed's last revocation")

	// A process restart: a new feed over a new Denylist, on a new connection.
	second := env.startFeed(t, env.nats.JetStream(t), feedOptions{})
	waitReady(t, second)
	for i := range 20 {
		isRevoked(t, second.Denylist().Check(&authn.Claims{Tenant: "acme", ID: fmt.Sprintf("jti-%d", i)}, ""))
	}
	if got, want := second.Denylist().Len(), first.Denylist().Len(); got != want {
		t.Errorf("restarted feed holds %d entries, the running one %d", got, want)
	}
}

func TestRevocationFeedSurvivesNATSRestart(t *testing.T) {
	env := newRevocationEnv(t)
	feed := env.startFeed(t, env.nats.JetStream(t), feedOptions{})
	waitReady(t, feed)
	token := issuerv1.RevocationTarget_REVOCATION_TARGET_TOKEN
	env.revoke(t, liveRevocation("acme", token, "before"))
	refusedEventually(t, feed.Denylist(), &authn.Claims{Tenant: "acme", ID: "before"}, "the revocation before the NATS restart")
	applied := feed.Stats().Applied

	env.nats.Restart(t)
	var seq uint64
	testkit.Eventually(t, 0, "an append after the NATS restart", func() (bool, error) {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		ev := liveRevocation("acme", token, "after")
		stored, err := env.store.Append(ctx, eventstore.Append{
			Tenant: "acme", AggregateType: eventstore.AggregateRevocation, AggregateID: "r-after",
			ExpectedVersion: eventstore.AnyVersion, IdempotencyKey: "after", Type: eventstore.TypeTokensRevoked,
			Subject: "tenants/acme/revocations/r-after", Data: ev,
			Metadata: eventstore.Metadata{Actor: eventstore.Actor{ID: "admin", Kind: eventstore.ActorHuman}},
		})
		seq = stored.Sequence
		return err == nil, err
	})
	refusedEventually(t, feed.Denylist(), &authn.Claims{Tenant: "acme", ID: "after"}, "the revocation after the NATS restart")
	// Resumed after its position: the event before the restart was not delivered again.
	if st := feed.Stats(); st.Applied != applied+1 || st.Position != seq {
		t.Errorf("after the restart: applied %d (was %d), position %d; want one more applied and position %d", st.Applied, applied, st.Position, seq)
	}
}

func TestRevocationFeedSkipsWhatCanNoLongerMatter(t *testing.T) {
	env := newRevocationEnv(t)
	// A revocation whose expire_time has passed: stored, read at catch-up, not kept.
	stale := revocation(issuerv1.RevocationTarget_REVOCATION_TARGET_CLIENT, "client-old", time.Now().Add(-48*time.Hour))
	env.revoke(t, stale)
	live := env.revoke(t, liveRevocation("acme", issuerv1.RevocationTarget_REVOCATION_TARGET_CLIENT, "client-new"))

	feed := env.startFeed(t, env.js, feedOptions{})
	waitReady(t, feed)
	if st := feed.Stats(); st.Applied != 2 || st.Entries != 1 || st.Position != live {
		t.Errorf("stats %+v, want 2 applied, 1 entry kept, position %d", st, live)
	}

	// Events stored before the lookback are not read at all: a feed whose clock is past them by more
	// than the lookback starts after them and is ready at once.
	future := time.Now().Add(authn.DefaultRevocationLookback + time.Hour)
	late := env.startFeed(t, env.js, feedOptions{now: func() time.Time { return future }})
	waitReady(t, late)
	if st := late.Stats(); st.Applied != 0 || st.Entries != 0 {
		t.Errorf("feed starting after every event: %+v, want nothing applied", st)
	}
}

func TestRevocationFeedOneTenant(t *testing.T) {
	env := newRevocationEnv(t)
	client := issuerv1.RevocationTarget_REVOCATION_TARGET_CLIENT
	env.revoke(t, liveRevocation("globex", client, "client-1"))
	feed := env.startFeed(t, env.js, feedOptions{tenant: "acme"})
	waitReady(t, feed)
	env.revoke(t, liveRevocation("globex", client, "client-2"))
	env.revoke(t, liveRevocation("acme", client, "client-3"))
	issued := time.Now().Add(-time.Minute)
	refusedEventually(t, feed.Denylist(), &authn.Claims{Tenant: "acme", ClientID: "client-3", IssuedAt: issued}, "acme's revocation")
	if st := feed.Stats(); st.Applied != 1 || st.Entries != 1 {
		t.Errorf("one-tenant feed: %+v, want only acme's revocation applied", st)
	}
}

func TestRevocationFeedRejectsForeignAndMalformedEvents(t *testing.T) {
	env := newRevocationEnv(t)
	feed := env.startFeed(t, env.js, feedOptions{})
	waitReady(t, feed)

	publish := func(subject, typ, schema string, data []byte) {
		t.Helper()
		m := nats.NewMsg(subject)
		m.Header.Set(eventstore.HeaderSpecVersion, eventstore.SpecVersion)
		m.Header.Set(eventstore.HeaderType, typ)
		m.Header.Set(eventstore.HeaderDataSchema, schema)
		m.Data = data
		if _, err := env.js.PublishMsg(t.Context(), m); err != nil {
			t.Fatal(err)
		}
	}
	schema := string((&issuerv1.TokensRevoked{}).ProtoReflect().Descriptor().FullName())
	// On acme's subject, claiming globex: a writer of one tenant must not revoke another's tokens.
	foreign, err := proto.Marshal(liveRevocation("globex", issuerv1.RevocationTarget_REVOCATION_TARGET_TENANT, ""))
	if err != nil {
		t.Fatal(err)
	}
	publish("agentid.acme.revocation.r1.tokens.revoked", authn.RevokedEventType, schema, foreign)
	publish("agentid.acme.revocation.r2.tokens.revoked", authn.RevokedEventType, schema, []byte{0xff, 0xff})
	publish("agentid.acme.revocation.r3.tokens.revoked", "tokens.other", schema, foreign)
	publish("agentid.acme.revocation.r4.tokens.revoked", authn.RevokedEventType, "agentid.issuer.v1.Other", foreign)
	// A well-formed one after them is still applied.
	env.revoke(t, liveRevocation("acme", issuerv1.RevocationTarget_REVOCATION_TARGET_TOKEN, "jti-ok"))
	refusedEventually(t, feed.Denylist(), &authn.Claims{Tenant: "acme", ID: "jti-ok"}, "the valid revocation after malformed ones")
	if st := feed.Stats(); st.Rejected != 4 || st.Entries != 1 {
		t.Errorf("stats %+v, want 4 rejected and 1 entry", st)
	}
	if err := feed.Denylist().Check(&authn.Claims{Tenant: "globex", IssuedAt: time.Now().Add(-time.Minute)}, ""); err != nil {
		t.Errorf("globex token refused by an event on acme's subject: %v", err)
	}
}

func TestNewRevocationFeedValidatesConfig(t *testing.T) {
	env := newRevocationEnv(t)
	deny := authn.NewDenylist(authn.DenylistConfig{})
	for _, tc := range []struct {
		name string
		cfg  authn.RevocationFeedConfig
	}{
		{"no JetStream", authn.RevocationFeedConfig{Denylist: deny}},
		{"no Denylist", authn.RevocationFeedConfig{JetStream: env.js}},
		{"bad tenant", authn.RevocationFeedConfig{JetStream: env.js, Denylist: deny, Tenant: "a.>"}},
	} {
		if _, err := authn.NewRevocationFeed(tc.cfg); err == nil {
			t.Errorf("%s: NewRevocationFeed succeeded", tc.name)
		}
	}
	// Ready honours its context while the feed has not caught up.
	feed, err := authn.NewRevocationFeed(authn.RevocationFeedConfig{JetStream: env.js, Denylist: deny})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := feed.Ready(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Ready on a feed that never ran: %v, want context.Canceled", err)
	}
}

func TestRevocationFeedContactAdvancesWhileIdle(t *testing.T) {
	env := newRevocationEnv(t)
	feed := env.startFeed(t, env.nats.JetStream(t), feedOptions{contact: 50 * time.Millisecond})
	waitReady(t, feed)
	first := feed.LastContact()
	if first.IsZero() {
		t.Fatal("a caught-up feed has no last contact")
	}
	// No revocation is appended: only the polls of the idle consumer can move the contact forward.
	testkit.Eventually(t, 0, "the idle feed's last contact to advance", func() (bool, error) {
		return feed.LastContact().After(first), nil
	})
	if err := feed.Fresh(time.Minute); err != nil {
		t.Errorf("Fresh of an idle, connected feed: %v", err)
	}
	if st := feed.Stats(); st.Position != 0 || st.LastContact.IsZero() {
		t.Errorf("stats position %d, last contact %v; want 0 and a time", st.Position, st.LastContact)
	}
}

func TestRevocationFeedGoesStaleWithoutNATSAndRecovers(t *testing.T) {
	env := newRevocationEnv(t)
	feed := env.startFeed(t, env.nats.JetStream(t), feedOptions{contact: 50 * time.Millisecond})
	waitReady(t, feed)
	const maxAge = 500 * time.Millisecond
	ready := feed.ReadinessHandler(maxAge)
	readyz := func() (int, string) {
		rec := httptest.NewRecorder()
		ready.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
		return rec.Code, rec.Body.String()
	}
	testkit.Eventually(t, 0, "a fresh feed", func() (bool, error) { return feed.Fresh(maxAge) == nil, nil })
	if code, body := readyz(); code != http.StatusOK {
		t.Fatalf("readyz of a fresh feed: %d %q, want 200", code, body)
	}

	env.nats.Shutdown()
	// Caught stays true (it latched), but the feed must not look current once NATS is gone.
	testkit.Eventually(t, 0, "Fresh to fail after NATS stopped", func() (bool, error) {
		return feed.Fresh(maxAge) != nil, nil
	})
	if err := feed.Fresh(maxAge); !strings.Contains(err.Error(), "stale") {
		t.Errorf("Fresh after NATS stopped: %v, want a staleness error", err)
	}
	if code, body := readyz(); code != http.StatusServiceUnavailable || !strings.Contains(body, "stale") {
		t.Errorf("readyz without NATS: %d %q, want 503 naming the staleness", code, body)
	}
	if !feed.Caught() {
		t.Error("Caught turned false: it reports the first catch-up only")
	}

	env.nats.Start(t)
	testkit.Eventually(t, 0, "Fresh to pass again after NATS restarted", func() (bool, error) {
		return feed.Fresh(maxAge) == nil, nil
	})
	// And the feed is really current: a revocation appended now is applied.
	token := issuerv1.RevocationTarget_REVOCATION_TARGET_TOKEN
	testkit.Eventually(t, 0, "an append after the NATS restart", func() (bool, error) {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		_, err := env.store.Append(ctx, eventstore.Append{
			Tenant: "acme", AggregateType: eventstore.AggregateRevocation, AggregateID: "r-back",
			ExpectedVersion: eventstore.AnyVersion, IdempotencyKey: "back", Type: eventstore.TypeTokensRevoked,
			Subject: "tenants/acme/revocations/r-back", Data: liveRevocation("acme", token, "back"),
			Metadata: eventstore.Metadata{Actor: eventstore.Actor{ID: "admin", Kind: eventstore.ActorHuman}},
		})
		return err == nil, err
	})
	refusedEventually(t, feed.Denylist(), &authn.Claims{Tenant: "acme", ID: "back"}, "the revocation after the restart")
	if code, body := readyz(); code != http.StatusOK {
		t.Errorf("readyz after the restart: %d %q, want 200", code, body)
	}
}

func TestRevocationFeedNotFreshBeforeCatchingUp(t *testing.T) {
	n := testkit.StartNATS(t) // no streams: the feed cannot subscribe
	deny := authn.NewDenylist(authn.DenylistConfig{})
	feed, err := authn.NewRevocationFeed(authn.RevocationFeedConfig{JetStream: n.JetStream(t), Denylist: deny})
	if err != nil {
		t.Fatal(err)
	}
	if err := feed.Fresh(time.Hour); err == nil || !strings.Contains(err.Error(), "not caught up") {
		t.Errorf("Fresh of a feed that never ran: %v, want not caught up", err)
	}
}
