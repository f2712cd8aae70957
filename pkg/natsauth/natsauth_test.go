package natsauth_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/agentid/agentid/pkg/eventsapi"
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/natsauth"
	"github.com/agentid/agentid/pkg/testkit"
)

// bus is an embedded server that accepts only the platform's identities and the subscribers of
// tenants acme and beta, with the streams set up by the admin identity.
type bus struct {
	url   string
	seeds string // directory of the seed files
}

func startBus(t *testing.T) *bus {
	t.Helper()
	dir := t.TempDir()
	seeds := filepath.Join(dir, "seeds")
	users, err := natsauth.LoadOrCreateUsers(seeds, "acme", "beta")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := eventstore.RunEmbeddedServer(eventstore.EmbeddedConfig{
		Host: "127.0.0.1", StoreDir: filepath.Join(dir, "js"), NkeyUsers: natsauth.NkeyUsers(users),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	b := &bus{url: "nats://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(srv.Addr().(*net.TCPAddr).Port)), seeds: seeds}
	admin := eventstore.New(b.connect(t, string(natsauth.Admin)).js, eventstore.WithSource("agentid/admin"),
		eventstore.WithRegisterer(nil), eventstore.WithLogger(slog.New(slog.DiscardHandler)), eventstore.WithCheckpointBucket(0))
	if err := admin.EnsureStreams(t.Context()); err != nil {
		t.Fatalf("admin: EnsureStreams: %v", err)
	}
	return b
}

// client is a connection as one identity that records the permission violations the server reports.
type client struct {
	nc         *nats.Conn
	js         jetstream.JetStream
	mu         sync.Mutex
	violations []string
}

func (b *bus) connect(t *testing.T, name string) *client {
	t.Helper()
	opts, err := natsauth.ClientOptions(natsauth.SeedPath(b.seeds, name), "")
	if err != nil {
		t.Fatal(err)
	}
	c := &client{}
	opts = append(opts, nats.Name(name), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		if errors.Is(err, nats.ErrPermissionViolation) {
			c.mu.Lock()
			c.violations = append(c.violations, err.Error())
			c.mu.Unlock()
		}
	}))
	nc, err := nats.Connect(b.url, opts...)
	if err != nil {
		t.Fatalf("connect as %s: %v", name, err)
	}
	t.Cleanup(nc.Close)
	c.nc = nc
	if c.js, err = jetstream.New(nc, jetstream.WithDefaultTimeout(5*time.Second)); err != nil {
		t.Fatal(err)
	}
	return c
}

func (b *bus) store(t *testing.T, name string) *eventstore.Store {
	t.Helper()
	return eventstore.New(b.connect(t, name).js, eventstore.WithSource("agentid/"+name),
		eventstore.WithRegisterer(nil), eventstore.WithLogger(slog.New(slog.DiscardHandler)))
}

// violated reports whether the server has reported a permission violation naming subject.
func (c *client) violated(subject string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, v := range c.violations {
		if strings.Contains(v, `"`+subject+`"`) {
			return true
		}
	}
	return false
}

// denied runs op, waits for the server to report a permission violation on subject, and then
// requires op to fail (it is cancelled once the violation is seen: a refused request gets no answer).
func (c *client) denied(t *testing.T, what, subject string, op func(ctx context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- op(ctx) }()
	testkit.Eventually(t, 0, what+": the permission violation on "+subject, func() (bool, error) {
		select {
		case err := <-done:
			if err == nil {
				t.Fatalf("%s: succeeded, want it refused", what)
			}
			done <- err
		default:
		}
		return c.violated(subject), nil
	})
	cancel()
	if err := <-done; err == nil {
		t.Fatalf("%s: succeeded, want it refused", what)
	}
}

func appendAgent(ctx context.Context, s *eventstore.Store, tenant, id string) (eventstore.Event, error) {
	return s.Append(ctx, eventstore.Append{
		Tenant: tenant, AggregateType: eventstore.AggregateAgent, AggregateID: id, ExpectedVersion: 0, IdempotencyKey: "register-" + id,
		Type: "agent.registered", Subject: "tenants/" + tenant + "/agents/" + id, Data: structpb.NewStringValue(id),
		Metadata: eventstore.Metadata{Actor: eventstore.Actor{ID: "alice", Kind: eventstore.ActorHuman}},
	})
}

func TestAnonymousNATSConnectRefused(t *testing.T) {
	b := startBus(t)
	tests := []struct {
		name string
		opts func(t *testing.T) []nats.Option
	}{
		{"anonymous", func(*testing.T) []nats.Option { return nil }},
		{"unknown nkey", func(t *testing.T) []nats.Option {
			opts, err := natsauth.ClientOptions(writeSeed(t), "")
			if err != nil {
				t.Fatal(err)
			}
			return opts
		}},
		{"user and password", func(*testing.T) []nats.Option { return []nats.Option{nats.UserInfo("admin", "admin")} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nc, err := nats.Connect(b.url, append(tt.opts(t), nats.NoReconnect())...)
			if err == nil {
				nc.Close()
				t.Fatal("connected, want the connection refused")
			}
			if !errors.Is(err, nats.ErrAuthorization) && !strings.Contains(strings.ToLower(err.Error()), "authorization") {
				t.Fatalf("err = %v, want an authorization violation", err)
			}
		})
	}
}

// writeSeed writes a fresh nkey seed the server does not know.
func writeSeed(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "stranger.nk")
	if _, err := natsauth.LoadOrCreateSeedFile(p); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestServicesStartWithReadOnlyStreamPermissions: a service's EnsureStreams on streams that are
// already set up only reads them, so services without stream create/update permissions start.
func TestServicesStartWithReadOnlyStreamPermissions(t *testing.T) {
	b := startBus(t)
	for _, id := range natsauth.ServiceIdentities {
		t.Run(string(id), func(t *testing.T) {
			c := b.connect(t, string(id))
			s := eventstore.New(c.js, eventstore.WithRegisterer(nil), eventstore.WithLogger(slog.New(slog.DiscardHandler)))
			if err := s.EnsureStreams(t.Context()); err != nil {
				t.Fatalf("EnsureStreams as %s: %v", id, err)
			}
			if vs := c.violations; len(vs) > 0 {
				t.Fatalf("EnsureStreams as %s caused permission violations: %v", id, vs)
			}
		})
	}
}

func TestIdentityPermissions(t *testing.T) {
	b := startBus(t)
	ctx := t.Context()
	// Events to read, appended by their owners.
	registry := b.store(t, string(natsauth.Registry))
	if _, err := appendAgent(ctx, registry, "acme", "agt-1"); err != nil {
		t.Fatalf("registry appends an agent event: %v", err)
	}

	t.Run("allowed", func(t *testing.T) {
		tests := []struct {
			id natsauth.Identity
			op func(ctx context.Context, c *client, s *eventstore.Store) error
		}{
			{natsauth.Registry, func(ctx context.Context, _ *client, s *eventstore.Store) error {
				_, _, err := s.Load(ctx, "acme", eventstore.AggregateAgent, "agt-1")
				return err
			}},
			{natsauth.Registry, func(ctx context.Context, c *client, _ *eventstore.Store) error {
				// The events API it serves reads one tenant's subjects of every aggregate stream.
				for _, stream := range eventsapi.AggregateStreams {
					cons, err := c.js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{"agentid.acme.>"}})
					if err != nil {
						return fmt.Errorf("%s: %w", stream, err)
					}
					it, err := cons.Messages()
					if err != nil {
						return fmt.Errorf("%s: %w", stream, err)
					}
					it.Stop()
				}
				return nil
			}},
			{natsauth.Lifecycle, func(ctx context.Context, _ *client, s *eventstore.Store) error {
				_, err := s.Append(ctx, eventstore.Append{Tenant: "acme", AggregateType: eventstore.AggregateLifecycle, Subject: "tenants/acme/agents/agt-1",
					AggregateID: "run-1", IdempotencyKey: "evidence-1", Type: "lifecycle.evidence_recorded", Data: structpb.NewStringValue("x"),
					Metadata: eventstore.Metadata{Actor: eventstore.Actor{ID: "lifecycle-worker", Kind: eventstore.ActorService}}})
				return err
			}},
			{natsauth.Issuer, func(ctx context.Context, c *client, _ *eventstore.Store) error {
				kv, err := c.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: natsauth.IssuerReplayBucket, History: 1, TTL: time.Minute})
				if err != nil {
					return err
				}
				if _, err = kv.Create(ctx, "jti-1", []byte("used")); err != nil {
					return err
				}
				// Its replay log: create the stream, append a record and read it back.
				if _, err := c.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: natsauth.IssuerReplayStream,
					Subjects: []string{natsauth.IssuerReplaySubject}, MaxAge: time.Minute, DenyDelete: true, DenyPurge: true}); err != nil {
					return err
				}
				if _, err := c.js.Publish(ctx, natsauth.IssuerReplaySubject, []byte{1}); err != nil {
					return err
				}
				cons, err := c.js.OrderedConsumer(ctx, natsauth.IssuerReplayStream, jetstream.OrderedConsumerConfig{})
				if err != nil {
					return err
				}
				_, err = cons.Next(jetstream.FetchMaxWait(testkit.DefaultWait))
				return err
			}},
			{natsauth.Monitor, func(ctx context.Context, c *client, _ *eventstore.Store) error {
				if _, err := c.js.Publish(ctx, "telemetry.acme.access.recorded", []byte("x")); err != nil {
					return err
				}
				_, err := c.js.Publish(ctx, "alerts.acme.bulk_export", []byte("x"))
				return err
			}},
			{natsauth.Admin, func(ctx context.Context, _ *client, s *eventstore.Store) error {
				_, err := s.ListFailedEvents(ctx, eventstore.FailedEventFilter{})
				return err
			}},
			{natsauth.Verifier, func(ctx context.Context, c *client, _ *eventstore.Store) error {
				cons, err := c.js.OrderedConsumer(ctx, eventstore.StreamRevocations, jetstream.OrderedConsumerConfig{
					FilterSubjects: []string{"agentid.*.revocation.>"}})
				if err != nil {
					return err
				}
				_, err = cons.Info(ctx)
				return err
			}},
		}
		for _, tt := range tests {
			t.Run(string(tt.id), func(t *testing.T) {
				c := b.connect(t, string(tt.id))
				s := eventstore.New(c.js, eventstore.WithRegisterer(nil), eventstore.WithLogger(slog.New(slog.DiscardHandler)))
				if err := tt.op(ctx, c, s); err != nil {
					t.Fatalf("%s: %v", tt.id, err)
				}
			})
		}
	})

	t.Run("forbidden", func(t *testing.T) {
		publish := func(subject string) func(ctx context.Context, c *client) error {
			return func(ctx context.Context, c *client) error {
				_, err := c.js.Publish(ctx, subject, []byte("forged"))
				return err
			}
		}
		request := func(subject string) func(ctx context.Context, c *client) error {
			return func(ctx context.Context, c *client) error {
				_, err := c.nc.RequestWithContext(ctx, subject, nil)
				return err
			}
		}
		tests := []struct {
			name    string
			id      natsauth.Identity
			subject string
			op      func(ctx context.Context, c *client) error
		}{
			{"lifecycle publishes client.created", natsauth.Lifecycle, "agentid.system.client.evil.created", nil},
			{"monitor publishes to AGENTS", natsauth.Monitor, "agentid.acme.agent.agt-1.activated", nil},
			{"issuer publishes an alert", natsauth.Issuer, "alerts.acme.bulk_export", nil},
			{"policy publishes a tenant event", natsauth.Policy, "agentid.acme.tenant.acme.created", nil},
			{"registry publishes a revocation", natsauth.Registry, "agentid.acme.revocation.r1.tokens.revoked", nil},
			{"admin publishes an event", natsauth.Admin, "agentid.acme.agent.agt-1.activated", nil},
			{"verifier publishes a revocation", natsauth.Verifier, "agentid.acme.revocation.r1.tokens.revoked", nil},
			{"registry appends to the issuer's replay log", natsauth.Registry, natsauth.IssuerReplaySubject, nil},
			{"monitor appends to the issuer's replay log", natsauth.Monitor, natsauth.IssuerReplaySubject, nil},
			{"monitor reads CREDENTIALS", natsauth.Monitor, "$JS.API.DIRECT.GET.CREDENTIALS", request("$JS.API.DIRECT.GET.CREDENTIALS")},
			{"lifecycle creates a stream", natsauth.Lifecycle, "$JS.API.STREAM.CREATE.EVIL", func(ctx context.Context, c *client) error {
				_, err := c.js.CreateStream(ctx, jetstream.StreamConfig{Name: "EVIL", Subjects: []string{"evil.>"}})
				return err
			}},
			{"issuer updates AGENTS", natsauth.Issuer, "$JS.API.STREAM.UPDATE.AGENTS", func(ctx context.Context, c *client) error {
				_, err := c.js.UpdateStream(ctx, jetstream.StreamConfig{Name: eventstore.StreamAgents, Subjects: []string{">"}})
				return err
			}},
			{"registry subscribes to another's inbox", natsauth.Registry, "_INBOX.>", func(ctx context.Context, c *client) error {
				sub, err := c.nc.SubscribeSync("_INBOX.>")
				if err != nil {
					return err
				}
				_, err = sub.NextMsgWithContext(ctx)
				return err
			}},
		}
		for _, id := range natsauth.PlatformIdentities {
			for _, s := range []string{eventstore.StreamAgents, "KV_" + natsauth.IssuerReplayBucket, natsauth.IssuerReplayStream, "KV_" + eventstore.FailedEventsBucket} {
				tests = append(tests,
					struct {
						name    string
						id      natsauth.Identity
						subject string
						op      func(ctx context.Context, c *client) error
					}{string(id) + " purges " + s, id, "$JS.API.STREAM.PURGE." + s, request("$JS.API.STREAM.PURGE." + s)},
					struct {
						name    string
						id      natsauth.Identity
						subject string
						op      func(ctx context.Context, c *client) error
					}{string(id) + " deletes " + s, id, "$JS.API.STREAM.DELETE." + s, request("$JS.API.STREAM.DELETE." + s)},
				)
			}
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				c := b.connect(t, string(tt.id))
				op := tt.op
				if op == nil {
					op = publish(tt.subject)
				}
				c.denied(t, tt.name, tt.subject, func(ctx context.Context) error { return op(ctx, c) })
			})
		}
	})

	// Nothing the forbidden operations tried reached a stream.
	admin := b.connect(t, string(natsauth.Admin))
	for _, s := range []string{eventstore.StreamAgents, eventstore.StreamCredentials, eventstore.StreamTenants, eventstore.StreamRevocations} {
		st, err := admin.js.Stream(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		want := uint64(0)
		if s == eventstore.StreamAgents {
			want = 1
		}
		if got := st.CachedInfo().State.Msgs; got != want {
			t.Errorf("stream %s holds %d messages, want %d", s, got, want)
		}
	}
}

func TestTenantSubscriberSeesOnlyItsTenant(t *testing.T) {
	b := startBus(t)
	ctx := t.Context()
	registry := b.store(t, string(natsauth.Registry))
	var acme []string
	for i, tenant := range []string{"acme", "beta", "acme", "beta", "acme"} {
		ev, err := appendAgent(ctx, registry, tenant, "agt-"+strconv.Itoa(i))
		if err != nil {
			t.Fatal(err)
		}
		if tenant == "acme" {
			acme = append(acme, ev.ID)
		}
	}
	// A work consumer of a service, on every tenant's events.
	lifecycle := b.connect(t, string(natsauth.Lifecycle))
	if _, err := lifecycle.js.CreateOrUpdateConsumer(ctx, eventstore.StreamAgents, jetstream.ConsumerConfig{
		Durable: "lifecycle-agent-events", AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
		t.Fatal(err)
	}

	sub := b.connect(t, natsauth.SubscriberPrefix+"acme")
	name := natsauth.SubscriberConsumer("acme")
	t.Run("reads its tenant's events", func(t *testing.T) {
		cons, err := sub.js.CreateOrUpdateConsumer(ctx, eventstore.StreamAgents, jetstream.ConsumerConfig{
			Durable: name, FilterSubject: "agentid.acme.>", AckPolicy: jetstream.AckExplicitPolicy})
		if err != nil {
			t.Fatalf("create its consumer: %v", err)
		}
		var got []string
		testkit.Eventually(t, 0, "acme's events", func() (bool, error) {
			batch, err := cons.FetchNoWait(10)
			if err != nil {
				return false, err
			}
			for m := range batch.Messages() {
				ev, err := eventstore.EventFromMsg(m)
				if err != nil {
					return false, err
				}
				if ev.Metadata.Tenant != "acme" {
					t.Fatalf("the acme subscriber received an event of tenant %q", ev.Metadata.Tenant)
				}
				got = append(got, ev.ID)
				if err := m.Ack(); err != nil {
					return false, err
				}
			}
			return len(got) >= len(acme), batch.Error()
		})
		if strings.Join(got, ",") != strings.Join(acme, ",") {
			t.Fatalf("events = %v, want %v", got, acme)
		}
	})
	consumerWith := func(cfg jetstream.ConsumerConfig) func(ctx context.Context) error {
		return func(ctx context.Context) error {
			_, err := sub.js.CreateOrUpdateConsumer(ctx, eventstore.StreamAgents, cfg)
			return err
		}
	}
	tests := []struct {
		name    string
		subject string
		op      func(ctx context.Context) error
	}{
		{"a consumer on beta's events", "$JS.API.CONSUMER.CREATE.AGENTS." + name + ".agentid.beta.>",
			consumerWith(jetstream.ConsumerConfig{Durable: name, FilterSubject: "agentid.beta.>"})},
		{"a consumer on every tenant's events", "$JS.API.CONSUMER.CREATE.AGENTS." + name + ".agentid.*.>",
			consumerWith(jetstream.ConsumerConfig{Durable: name, FilterSubject: "agentid.*.>"})},
		{"an unfiltered consumer", "$JS.API.CONSUMER.CREATE.AGENTS." + name,
			consumerWith(jetstream.ConsumerConfig{Durable: name})},
		{"a consumer with two filters", "$JS.API.CONSUMER.CREATE.AGENTS." + name,
			consumerWith(jetstream.ConsumerConfig{Durable: name, FilterSubjects: []string{"agentid.acme.>", "agentid.beta.>"}})},
		{"a consumer of another name", "$JS.API.CONSUMER.CREATE.AGENTS.other.agentid.acme.>",
			consumerWith(jetstream.ConsumerConfig{Durable: "other", FilterSubject: "agentid.acme.>"})},
		{"pull from a service's consumer", "$JS.API.CONSUMER.MSG.NEXT.AGENTS.lifecycle-agent-events", func(ctx context.Context) error {
			_, err := sub.nc.RequestWithContext(ctx, "$JS.API.CONSUMER.MSG.NEXT.AGENTS.lifecycle-agent-events", []byte(`{"batch":1}`))
			return err
		}},
		{"a direct get", "$JS.API.DIRECT.GET.AGENTS", func(ctx context.Context) error {
			_, err := sub.nc.RequestWithContext(ctx, "$JS.API.DIRECT.GET.AGENTS", []byte(`{"seq":2}`))
			return err
		}},
		{"subscribe to beta's events", "agentid.beta.>", func(ctx context.Context) error {
			s, err := sub.nc.SubscribeSync("agentid.beta.>")
			if err != nil {
				return err
			}
			_, err = s.NextMsgWithContext(ctx)
			return err
		}},
		// No identity subscribes to event subjects: a literal subscription is what makes a push
		// consumer of another stream deliver there (and the capturing stream store it).
		{"subscribe to its own event subjects", "agentid.acme.client.c1.created", func(ctx context.Context) error {
			s, err := sub.nc.SubscribeSync("agentid.acme.client.c1.created")
			if err != nil {
				return err
			}
			_, err = s.NextMsgWithContext(ctx)
			return err
		}},
		{"publish an event", "agentid.acme.agent.agt-9.registered", func(ctx context.Context) error {
			_, err := sub.js.Publish(ctx, "agentid.acme.agent.agt-9.registered", []byte("forged"))
			return err
		}},
	}
	for _, tt := range tests {
		t.Run("cannot "+tt.name, func(t *testing.T) {
			sub.denied(t, tt.name, tt.subject, tt.op)
		})
	}
}

func TestServerConfigParses(t *testing.T) {
	users, err := natsauth.LoadOrCreateUsers(filepath.Join(t.TempDir(), "seeds"), "acme")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := natsauth.WriteServerConfigFile(filepath.Join(dir, "users.conf"), users); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(conf, []byte("listen: 127.0.0.1:-1\ninclude users.conf\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatalf("the generated configuration does not parse: %v", err)
	}
	if len(opts.Nkeys) != len(users) {
		t.Fatalf("%d nkey users parsed, want %d", len(opts.Nkeys), len(users))
	}
	for i, u := range users {
		got := opts.Nkeys[i]
		if got.Nkey != u.PublicKey {
			t.Fatalf("user %d: nkey %s, want %s", i, got.Nkey, u.PublicKey)
		}
		if strings.Join(got.Permissions.Publish.Allow, " ") != strings.Join(u.Permissions.Publish.Allow, " ") ||
			strings.Join(got.Permissions.Publish.Deny, " ") != strings.Join(u.Permissions.Publish.Deny, " ") ||
			strings.Join(got.Permissions.Subscribe.Allow, " ") != strings.Join(u.Permissions.Subscribe.Allow, " ") {
			t.Fatalf("user %s: parsed permissions %+v, want %+v", u.Name, got.Permissions, u.Permissions)
		}
	}
}

func TestSeedFiles(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "sub", "issuer.nk")
	pub, err := natsauth.LoadOrCreateSeedFile(p)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", fi.Mode().Perm())
	}
	again, err := natsauth.LoadOrCreateSeedFile(p)
	if err != nil || again != pub {
		t.Fatalf("second load: %s, %v; want the same key %s", again, err, pub)
	}
	if err := os.Chmod(p, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := natsauth.ClientOptions(p, ""); err == nil || !strings.Contains(err.Error(), "--nats-nkey") || !strings.Contains(err.Error(), p) {
		t.Fatalf("a seed readable by others: err = %v, want one naming --nats-nkey and the file", err)
	}
	garbage := filepath.Join(dir, "garbage.nk")
	if err := os.WriteFile(garbage, []byte("not a seed\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := natsauth.ClientOptions(garbage, ""); err == nil || !strings.Contains(err.Error(), garbage) {
		t.Fatalf("a file without a seed: err = %v, want one naming the file", err)
	}
	if _, err := natsauth.ClientOptions("", filepath.Join(dir, "missing-ca.pem")); err == nil || !strings.Contains(err.Error(), "--nats-ca") {
		t.Fatalf("a missing CA: err = %v, want one naming --nats-ca", err)
	}
	if _, err := natsauth.SubscriberPermissions("Bad.Tenant", pub); err == nil {
		t.Fatal("a tenant with a dot was accepted")
	}
	if _, err := natsauth.Permissions("nobody", pub); err == nil {
		t.Fatal("an unknown identity was accepted")
	}
}

// TestDurableConsumersOnlyTheirOwner: an identity that reads AGENTS cannot fetch from, acknowledge
// or re-create the issuer's revocation reactor consumer; the issuer can.
func TestDurableConsumersOnlyTheirOwner(t *testing.T) {
	b := startBus(t)
	ctx := t.Context()
	registry := b.store(t, string(natsauth.Registry))
	for _, id := range []string{"agt-1", "agt-2"} {
		if _, err := appendAgent(ctx, registry, "acme", id); err != nil {
			t.Fatal(err)
		}
	}
	const name = "issuer-revocation-reactor-agents"
	issuer := b.connect(t, string(natsauth.Issuer))
	cons, err := issuer.js.CreateOrUpdateConsumer(ctx, eventstore.StreamAgents, jetstream.ConsumerConfig{
		Durable: name, FilterSubject: "agentid.*.agent.>", AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Hour})
	if err != nil {
		t.Fatalf("the issuer creates its consumer: %v", err)
	}
	// The issuer holds the first event unacknowledged: others try to acknowledge it.
	var held jetstream.Msg
	testkit.Eventually(t, 0, "the issuer fetches an event", func() (bool, error) {
		batch, err := cons.FetchNoWait(1)
		if err != nil {
			return false, err
		}
		for m := range batch.Messages() {
			held = m
		}
		return held != nil, batch.Error()
	})
	ackPending := func() int {
		info, err := cons.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.NumAckPending
	}
	request := func(c *client, subject string, body []byte) func(ctx context.Context) error {
		return func(ctx context.Context) error {
			_, err := c.nc.RequestWithContext(ctx, subject, body)
			return err
		}
	}
	for _, id := range []natsauth.Identity{natsauth.Lifecycle, natsauth.Registry, natsauth.Admin} {
		t.Run(string(id), func(t *testing.T) {
			c := b.connect(t, string(id))
			tests := []struct {
				name, subject string
				op            func(ctx context.Context) error
			}{
				{"fetch", "$JS.API.CONSUMER.MSG.NEXT.AGENTS." + name,
					request(c, "$JS.API.CONSUMER.MSG.NEXT.AGENTS."+name, []byte(`{"batch":1}`))},
				{"ack", held.Reply(), request(c, held.Reply(), []byte("+ACK"))},
				{"re-create with another filter", "$JS.API.CONSUMER.CREATE.AGENTS." + name + ".agentid.none.>", func(ctx context.Context) error {
					_, err := c.js.CreateOrUpdateConsumer(ctx, eventstore.StreamAgents, jetstream.ConsumerConfig{
						Durable: name, FilterSubject: "agentid.none.>", AckPolicy: jetstream.AckExplicitPolicy})
					return err
				}},
				{"re-create with two filters", "$JS.API.CONSUMER.CREATE.AGENTS." + name, func(ctx context.Context) error {
					_, err := c.js.CreateOrUpdateConsumer(ctx, eventstore.StreamAgents, jetstream.ConsumerConfig{
						Durable: name, FilterSubjects: []string{"agentid.none.>", "agentid.nobody.>"}, AckPolicy: jetstream.AckExplicitPolicy})
					return err
				}},
				{"re-create by the legacy durable subject", "$JS.API.CONSUMER.DURABLE.CREATE.AGENTS." + name,
					request(c, "$JS.API.CONSUMER.DURABLE.CREATE.AGENTS."+name,
						[]byte(`{"stream_name":"AGENTS","config":{"durable_name":"`+name+`","ack_policy":"explicit"}}`))},
			}
			for _, tt := range tests {
				t.Run("cannot "+tt.name, func(t *testing.T) { c.denied(t, tt.name, tt.subject, tt.op) })
			}
			// Refused requests left the consumer as the issuer made it.
			if n := ackPending(); n != 1 {
				t.Fatalf("the consumer has %d acknowledgements pending, want the issuer's 1", n)
			}
			info, err := cons.Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if f := info.Config.FilterSubject; f != "agentid.*.agent.>" || len(info.Config.FilterSubjects) > 0 {
				t.Fatalf("the consumer's filter is %q %v, want the issuer's", f, info.Config.FilterSubjects)
			}
		})
	}
	t.Run("the issuer acknowledges and fetches", func(t *testing.T) {
		if err := held.DoubleAck(ctx); err != nil {
			t.Fatalf("the issuer acknowledges: %v", err)
		}
		if n := ackPending(); n != 0 {
			t.Fatalf("%d acknowledgements pending after the issuer's, want 0", n)
		}
		batch, err := cons.Fetch(1, jetstream.FetchMaxWait(testkit.DefaultWait))
		if err != nil {
			t.Fatal(err)
		}
		var n int
		for m := range batch.Messages() {
			n++
			if err := m.DoubleAck(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if n != 1 || batch.Error() != nil {
			t.Fatalf("the issuer fetched %d events (%v), want the second", n, batch.Error())
		}
	})
}

// TestPushConsumerDoesNotFeedAnotherStream: a subscriber's push consumer on AGENTS that delivers to
// a subject CREDENTIALS captures does not deliver (no subscription names that subject: streams
// listen on wildcards, and no identity may subscribe to an event subject), so CREDENTIALS stores
// nothing.
func TestPushConsumerDoesNotFeedAnotherStream(t *testing.T) {
	b := startBus(t)
	ctx := t.Context()
	registry := b.store(t, string(natsauth.Registry))
	if _, err := appendAgent(ctx, registry, "acme", "agt-1"); err != nil {
		t.Fatal(err)
	}
	sub := b.connect(t, natsauth.SubscriberPrefix+"acme")
	cons, err := sub.js.CreateOrUpdateConsumer(ctx, eventstore.StreamAgents, jetstream.ConsumerConfig{
		Durable: natsauth.SubscriberConsumer("acme"), FilterSubject: "agentid.acme.>",
		DeliverSubject: "agentid.beta.client.x.client.created", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatalf("create the push consumer: %v", err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.PushBound || info.Delivered.Consumer != 0 || info.NumPending != 1 {
		t.Fatalf("push consumer: bound %v, delivered %d, pending %d; want unbound, none delivered, 1 pending",
			info.PushBound, info.Delivered.Consumer, info.NumPending)
	}
	admin := b.connect(t, string(natsauth.Admin))
	st, err := admin.js.Stream(ctx, eventstore.StreamCredentials)
	if err != nil {
		t.Fatal(err)
	}
	if n := st.CachedInfo().State.Msgs; n != 0 {
		t.Fatalf("CREDENTIALS holds %d messages, want 0", n)
	}
}

// TestLifecycleConsumesAlerts: the lifecycle service reads the alerts the monitor publishes through
// its durable consumer lifecycle-incident-alerts (each alert starts an incident run), and may not
// publish alerts itself.
func TestLifecycleConsumesAlerts(t *testing.T) {
	b := startBus(t)
	ctx := t.Context()
	monitor := b.store(t, string(natsauth.Monitor))
	ev, err := monitor.PublishWithID(ctx, "0190d1c0-0000-7000-8000-000000000001", "alerts.acme.bulk_export", "alert.raised",
		"tenants/acme/alerts/0190d1c0-0000-7000-8000-000000000001", &structpb.Struct{},
		eventstore.Metadata{Tenant: "acme", Actor: eventstore.Actor{ID: "monitor", Kind: eventstore.ActorService}})
	if err != nil {
		t.Fatalf("the monitor publishes an alert: %v", err)
	}
	lifecycle := b.connect(t, string(natsauth.Lifecycle))
	cons, err := lifecycle.js.CreateOrUpdateConsumer(ctx, eventstore.StreamAlerts, jetstream.ConsumerConfig{
		Durable: "lifecycle-incident-alerts", FilterSubject: "alerts.>", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatalf("the lifecycle creates its consumer on ALERTS: %v", err)
	}
	var got string
	testkit.Eventually(t, 0, "the lifecycle fetches the alert", func() (bool, error) {
		batch, err := cons.FetchNoWait(1)
		if err != nil {
			return false, err
		}
		for m := range batch.Messages() {
			e, err := eventstore.EventFromMsg(m)
			if err != nil {
				return false, err
			}
			got = e.ID
			if err := m.DoubleAck(ctx); err != nil {
				return false, err
			}
		}
		return got != "", batch.Error()
	})
	if got != ev.ID {
		t.Fatalf("fetched alert %s, want %s", got, ev.ID)
	}
	lifecycle.denied(t, "publish an alert", "alerts.acme.bulk_export", func(ctx context.Context) error {
		_, err := lifecycle.js.Publish(ctx, "alerts.acme.bulk_export", []byte("x"))
		return err
	})
}
