package eventstore_test

import (
	"errors"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/agentid/agentid/pkg/eventstore"
)

func TestEnsureStreams(t *testing.T) {
	e := newEnv(t)
	if err := e.store.EnsureStreams(t.Context()); err != nil { // second run updates in place
		t.Fatalf("EnsureStreams again: %v", err)
	}
	tests := []struct {
		stream     string
		subjects   []string
		maxAge     time.Duration
		maxBytes   int64
		duplicates time.Duration
		immutable  bool
	}{
		{eventstore.StreamTenants, []string{"agentid.*.tenant.>"}, 0, -1, 24 * time.Hour, true},
		{eventstore.StreamAgents, []string{"agentid.*.agent.>"}, 0, -1, 24 * time.Hour, true},
		{eventstore.StreamCredentials, []string{"agentid.*.client.>", "agentid.*.signingkey.>"}, 0, -1, 24 * time.Hour, true},
		{eventstore.StreamPolicy, []string{"agentid.*.policy.>"}, 0, -1, 24 * time.Hour, true},
		{eventstore.StreamLifecycle, []string{"agentid.*.lifecycle.>"}, 0, -1, 24 * time.Hour, true},
		{eventstore.StreamTelemetry, []string{"telemetry.>"}, 7 * 24 * time.Hour, 10 << 30, 2 * time.Minute, false},
		{eventstore.StreamAlerts, []string{"alerts.>"}, 30 * 24 * time.Hour, 1 << 30, 2 * time.Minute, false},
		{eventstore.StreamSIEMDeadLetters, []string{"siem.dead.>"}, 90 * 24 * time.Hour, -1, 2 * time.Minute, false},
	}
	for _, tt := range tests {
		t.Run(tt.stream, func(t *testing.T) {
			st, err := e.store.JetStream().Stream(t.Context(), tt.stream)
			if err != nil {
				t.Fatal(err)
			}
			cfg := st.CachedInfo().Config
			if cfg.Storage != jetstream.FileStorage {
				t.Errorf("storage = %v, want file", cfg.Storage)
			}
			if len(cfg.Subjects) != len(tt.subjects) {
				t.Fatalf("subjects = %v, want %v", cfg.Subjects, tt.subjects)
			}
			for i := range tt.subjects {
				if cfg.Subjects[i] != tt.subjects[i] {
					t.Errorf("subjects = %v, want %v", cfg.Subjects, tt.subjects)
				}
			}
			if cfg.MaxAge != tt.maxAge || cfg.MaxBytes != tt.maxBytes || cfg.Duplicates != tt.duplicates {
				t.Errorf("max age/bytes/duplicates = %v/%d/%v, want %v/%d/%v", cfg.MaxAge, cfg.MaxBytes, cfg.Duplicates, tt.maxAge, tt.maxBytes, tt.duplicates)
			}
			if !cfg.AllowDirect || cfg.DenyDelete != tt.immutable || cfg.DenyPurge != tt.immutable {
				t.Errorf("allow direct/deny delete/deny purge = %v/%v/%v", cfg.AllowDirect, cfg.DenyDelete, cfg.DenyPurge)
			}
		})
	}
	if _, err := e.store.JetStream().KeyValue(t.Context(), eventstore.FailedEventsBucket); err != nil {
		t.Errorf("failed-event bucket: %v", err)
	}
}

func TestAppendHeadersRoundTrip(t *testing.T) {
	// A clock in another zone: ce-time must still come out in UTC.
	berlin := time.FixedZone("CET", 3600)
	now := time.Date(2026, 3, 4, 5, 6, 7, 891011121, berlin)
	e := newEnv(t, eventstore.WithClock(func() time.Time { return now }))
	data, err := structpb.NewStruct(map[string]any{"display_name": "Invoice bot", "risk": 3})
	if err != nil {
		t.Fatal(err)
	}
	md := eventstore.Metadata{
		Tenant:        "acme",
		Actor:         eventstore.Actor{ID: "ci-bot", Kind: eventstore.ActorAgent},
		OnBehalfOf:    "alice@corp",
		CorrelationID: "req-42",
		CausationID:   "cmd-7",
		Traceparent:   "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
	}
	a := eventstore.Append{
		Tenant: "acme", AggregateType: "agent", AggregateID: "invoice-bot", ExpectedVersion: 0,
		IdempotencyKey: "req-42", Type: "agent.registered", Subject: "tenants/acme/agents/invoice-bot",
		Data: data, Metadata: md,
	}
	appended := mustAppend(t, e.store, a)

	events, version, err := e.store.Load(t.Context(), "acme", "agent", "invoice-bot")
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != 1 || version != appended.Sequence {
		t.Fatalf("Load = %d events, version %d; want 1, %d", len(events), version, appended.Sequence)
	}
	got := events[0]
	want := eventstore.Event{
		ID: appended.ID, Type: "agent.registered", Source: "agentid/test", Subject: "tenants/acme/agents/invoice-bot",
		Time: now.UTC(), Metadata: md, AggregateType: "agent", AggregateID: "invoice-bot", ExpectedVersion: 0,
		Stream: eventstore.StreamAgents, Sequence: appended.Sequence, DataSchema: "google.protobuf.Struct",
	}
	got.Data, appended.Data = nil, nil
	if !got.Time.Equal(want.Time) || got.Time.Location() != time.UTC {
		t.Errorf("Time = %v (%v), want %v in UTC", got.Time, got.Time.Location(), want.Time)
	}
	got.Time, want.Time = time.Time{}, time.Time{}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("loaded event\n got %+v\nwant %+v", got, want)
	}
	if appended.Time.Location() != time.UTC {
		t.Errorf("appended Time zone = %v, want UTC", appended.Time.Location())
	}

	decoded, err := events[0].Decode()
	if err != nil {
		t.Fatal(err)
	}
	if !protoEqual(decoded, data) {
		t.Errorf("Decode = %v, want %v", decoded, data)
	}
	if _, err := eventstore.DecodeAs[*wrapperspb.StringValue](events[0]); !errors.Is(err, eventstore.ErrSchemaMismatch) {
		t.Errorf("DecodeAs wrong type: err = %v, want ErrSchemaMismatch", err)
	}

	// The raw message carries the CloudEvents binary-mode headers.
	st, err := e.store.JetStream().Stream(t.Context(), eventstore.StreamAgents)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := st.GetMsg(t.Context(), appended.Sequence)
	if err != nil {
		t.Fatal(err)
	}
	if raw.Subject != "agentid.acme.agent.invoice-bot.registered" {
		t.Errorf("subject = %q", raw.Subject)
	}
	for k, v := range map[string]string{
		"ce-specversion": "1.0", "ce-id": appended.ID, "ce-type": "agent.registered", "ce-source": "agentid/test",
		"ce-subject": "tenants/acme/agents/invoice-bot", "ce-time": "2026-03-04T04:06:07.891011121Z",
		"content-type": "application/protobuf", "ce-dataschema": "google.protobuf.Struct", "ce-tenant": "acme",
		"ce-actorid": "ci-bot", "ce-actorkind": "agent", "ce-onbehalfof": "alice@corp", "ce-correlationid": "req-42",
		"ce-causationid": "cmd-7", "ce-traceparent": md.Traceparent, "ce-aggregatetype": "agent",
		"ce-aggregateid": "invoice-bot", "ce-aggregateversion": "0", "Nats-Msg-Id": "acme/agent/invoice-bot/req-42",
	} {
		if got := raw.Header.Get(k); got != v {
			t.Errorf("header %s = %q, want %q", k, got, v)
		}
	}
	if len(raw.Header.Values("ce-id")) != 1 {
		t.Errorf("ce-id values = %v", raw.Header.Values("ce-id"))
	}
	if id := raw.Header.Get("ce-id"); len(id) != 36 || id[14] != '7' {
		t.Errorf("ce-id %q is not a UUIDv7", id)
	}
}

func TestDecodeUnknownSchema(t *testing.T) {
	_, err := eventstore.Event{ID: "x", Type: "agent.registered", DataSchema: "agentid.nope.v1.Nope"}.Decode()
	if !errors.Is(err, eventstore.ErrUnknownSchema) {
		t.Fatalf("err = %v, want ErrUnknownSchema", err)
	}
	if _, err := eventstore.DecodeAs[proto.Message](eventstore.Event{DataSchema: "google.protobuf.StringValue"}); err == nil {
		t.Fatal("DecodeAs[proto.Message] succeeded, want an error")
	}
}

func TestAppendInvalidInput(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name      string
		mutate    func(*eventstore.Append)
		wantField string
	}{
		{"empty tenant", func(a *eventstore.Append) { a.Tenant = "" }, "tenant"},
		{"tenant with dot", func(a *eventstore.Append) { a.Tenant = "ac.me" }, "tenant"},
		{"tenant upper case", func(a *eventstore.Append) { a.Tenant = "Acme" }, "tenant"},
		{"aggregate type wildcard", func(a *eventstore.Append) { a.AggregateType = "*" }, "aggregate_type"},
		{"empty aggregate id", func(a *eventstore.Append) { a.AggregateID = "" }, "aggregate_id"},
		{"aggregate id with dot", func(a *eventstore.Append) { a.AggregateID = "a.b" }, "aggregate_id"},
		{"aggregate id with space", func(a *eventstore.Append) { a.AggregateID = "a b" }, "aggregate_id"},
		{"aggregate id wildcard *", func(a *eventstore.Append) { a.AggregateID = "*" }, "aggregate_id"},
		{"aggregate id wildcard >", func(a *eventstore.Append) { a.AggregateID = "a>" }, "aggregate_id"},
		{"type of another aggregate", func(a *eventstore.Append) { a.Type = "client.registered" }, "type"},
		{"type without event name", func(a *eventstore.Append) { a.Type = "agent." }, "type"},
		{"type with two tokens", func(a *eventstore.Append) { a.Type = "agent.registered.again" }, "type"},
		{"missing idempotency key", func(a *eventstore.Append) { a.IdempotencyKey = "" }, "idempotency_key"},
		{"idempotency key with newline", func(a *eventstore.Append) { a.IdempotencyKey = "a\r\nb" }, "idempotency_key"},
		{"missing subject", func(a *eventstore.Append) { a.Subject = "" }, "subject"},
		{"missing data", func(a *eventstore.Append) { a.Data = nil }, "data"},
		{"other tenant in metadata", func(a *eventstore.Append) { a.Metadata.Tenant = "other" }, "metadata.tenant"},
		{"missing actor", func(a *eventstore.Append) { a.Metadata.Actor = eventstore.Actor{} }, "metadata.actor.id"},
		{"bad actor kind", func(a *eventstore.Append) { a.Metadata.Actor.Kind = "robot" }, "metadata.actor.kind"},
		{"traceparent with newline", func(a *eventstore.Append) { a.Metadata.Traceparent = "x\ny" }, "metadata.traceparent"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := agentAppend("acme", "bot", "registered", 0, "v")
			tt.mutate(&a)
			_, err := e.store.Append(t.Context(), a)
			if !errors.Is(err, eventstore.ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
			var ie *eventstore.InvalidError
			if !errors.As(err, &ie) || ie.Field != tt.wantField {
				t.Fatalf("err = %v, want field %q", err, tt.wantField)
			}
		})
	}
	if n := streamMsgs(t, e, eventstore.StreamAgents); n != 0 {
		t.Errorf("AGENTS holds %d messages after invalid appends, want 0", n)
	}

	loads := []struct {
		name, tenant, aggType, aggID, wantField string
	}{
		{"load bad tenant", "a.b", "agent", "x", "tenant"},
		{"load bad type", "acme", "ag ent", "x", "aggregate_type"},
		{"load wildcard id", "acme", "agent", ">", "aggregate_id"},
	}
	for _, tt := range loads {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := e.store.Load(t.Context(), tt.tenant, tt.aggType, tt.aggID)
			var ie *eventstore.InvalidError
			if !errors.As(err, &ie) || ie.Field != tt.wantField {
				t.Fatalf("err = %v, want InvalidError on %q", err, tt.wantField)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	e := newEnv(t)
	// Aggregates whose subjects share prefixes, in two tenants.
	a1 := mustAppend(t, e.store, agentAppend("acme", "bot", "registered", 0, "a1"))
	b1 := mustAppend(t, e.store, agentAppend("acme", "bot2", "registered", 0, "b1"))
	mustAppend(t, e.store, agentAppend("other", "bot", "registered", 0, "o1"))
	a2 := mustAppend(t, e.store, agentAppend("acme", "bot", "suspended", a1.Sequence, "a2"))
	a3 := mustAppend(t, e.store, agentAppend("acme", "bot", "reactivated", a2.Sequence, "a3"))

	tests := []struct {
		name        string
		tenant, id  string
		wantValues  []string
		wantVersion uint64
	}{
		{"three events in order", "acme", "bot", []string{"a1", "a2", "a3"}, a3.Sequence},
		{"prefix-sharing aggregate kept apart", "acme", "bot2", []string{"b1"}, b1.Sequence},
		{"missing aggregate", "acme", "ghost", nil, 0},
		{"same id in another tenant", "other", "bot", []string{"o1"}, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			events, version, err := e.store.Load(t.Context(), tt.tenant, "agent", tt.id)
			if err != nil {
				t.Fatal(err)
			}
			if version != tt.wantVersion {
				t.Errorf("version = %d, want %d", version, tt.wantVersion)
			}
			var values []string
			for _, ev := range events {
				values = append(values, stringValue(t, ev))
			}
			if len(values) != len(tt.wantValues) {
				t.Fatalf("values = %v, want %v", values, tt.wantValues)
			}
			for i := range values {
				if values[i] != tt.wantValues[i] {
					t.Fatalf("values = %v, want %v", values, tt.wantValues)
				}
			}
		})
	}
}

func TestLoadLargeAggregatePages(t *testing.T) {
	e := newEnv(t)
	var version uint64
	const n = 1300 // more than two direct-get pages
	for i := range n {
		ev := mustAppend(t, e.store, agentAppend("acme", "busy", "updated", version, "v"))
		version = ev.Sequence
		if i%2 == 0 { // interleave another aggregate
			mustAppend(t, e.store, agentAppend("acme", "quiet", "updated", eventstore.AnyVersion, "q"))
		}
	}
	events, got, err := e.store.Load(t.Context(), "acme", "agent", "busy")
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != n || got != version {
		t.Fatalf("Load = %d events, version %d; want %d, %d", len(events), got, n, version)
	}
	for i := 1; i < len(events); i++ {
		if events[i].Sequence <= events[i-1].Sequence || events[i].ExpectedVersion != events[i-1].Sequence {
			t.Fatalf("event %d: seq %d after %d, expected version %d", i, events[i].Sequence, events[i-1].Sequence, events[i].ExpectedVersion)
		}
	}
}

func TestAppendExpectedVersion(t *testing.T) {
	e := newEnv(t)
	first := mustAppend(t, e.store, agentAppend("acme", "bot", "registered", 0, "v1"))
	mustAppend(t, e.store, agentAppend("acme", "other", "registered", 0, "x")) // moves the stream, not "bot"

	tests := []struct {
		name         string
		expected     uint64
		wantConflict bool
		wantActual   uint64
	}{
		{"must not exist but does", 0, true, first.Sequence},
		{"future version", first.Sequence + 10, true, first.Sequence},
		{"stream sequence of another aggregate", first.Sequence + 1, true, first.Sequence},
		{"current version", first.Sequence, false, 0},
		{"any version", eventstore.AnyVersion, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := streamMsgs(t, e, eventstore.StreamAgents)
			ev, err := e.store.Append(t.Context(), agentAppend("acme", "bot", "updated", tt.expected, "v"))
			if !tt.wantConflict {
				if err != nil {
					t.Fatal(err)
				}
				// Keep the next case's "current version" current.
				first = ev
				return
			}
			if !errors.Is(err, eventstore.ErrConflict) {
				t.Fatalf("err = %v, want ErrConflict", err)
			}
			var ce *eventstore.ConflictError
			if !errors.As(err, &ce) || ce.Expected != tt.expected || ce.Actual != tt.wantActual {
				t.Errorf("conflict = %+v, want expected %d actual %d", ce, tt.expected, tt.wantActual)
			}
			if after := streamMsgs(t, e, eventstore.StreamAgents); after != before {
				t.Errorf("stream grew from %d to %d on conflict", before, after)
			}
		})
	}
}

func TestConcurrentConflictingAppends(t *testing.T) {
	e := newEnv(t)
	const writers = 20
	const rounds = 10
	var version uint64
	for round := range rounds {
		var (
			wg        sync.WaitGroup
			mu        sync.Mutex
			winners   []eventstore.Event
			conflicts int
			others    []error
		)
		start := make(chan struct{})
		for range writers {
			a := agentAppend("acme", "contested", "updated", version, "v")
			wg.Go(func() {
				<-start
				ev, err := e.store.Append(t.Context(), a)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					winners = append(winners, ev)
				case errors.Is(err, eventstore.ErrConflict):
					conflicts++
				default:
					others = append(others, err)
				}
			})
		}
		close(start)
		wg.Wait()
		if len(winners) != 1 || conflicts != writers-1 || len(others) != 0 {
			t.Fatalf("round %d: %d winners, %d conflicts, other errors %v; want 1, %d, none", round, len(winners), conflicts, others, writers-1)
		}
		version = winners[0].Sequence
	}
	events, got, err := e.store.Load(t.Context(), "acme", "agent", "contested")
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != rounds || got != version {
		t.Fatalf("Load = %d events at version %d, want %d at %d", len(events), got, rounds, version)
	}
}

func TestAppendIdempotent(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name string
		// moveOn appends another event to the aggregate before the repeat.
		moveOn bool
		// repeat returns the repeated append given the original and the aggregate's current version.
		repeat func(orig eventstore.Append, current uint64) eventstore.Append
	}{
		{"same expected version", false, func(o eventstore.Append, _ uint64) eventstore.Append { return o }},
		{"any version", false, func(o eventstore.Append, _ uint64) eventstore.Append {
			o.ExpectedVersion = eventstore.AnyVersion
			return o
		}},
		{"re-read version", true, func(o eventstore.Append, cur uint64) eventstore.Append {
			o.ExpectedVersion = cur
			return o
		}},
		{"stale version after another event", true, func(o eventstore.Append, _ uint64) eventstore.Append { return o }},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			agent := "bot" + string(rune('a'+i))
			orig := agentAppend("acme", agent, "registered", 0, "first")
			first := mustAppend(t, e.store, orig)
			current := first.Sequence
			if tt.moveOn {
				current = mustAppend(t, e.store, agentAppend("acme", agent, "updated", current, "second")).Sequence
			}
			before := streamMsgs(t, e, eventstore.StreamAgents)

			again := tt.repeat(orig, current)
			again.Data = wrapperspb.String("retried payload")
			got, err := e.store.Append(t.Context(), again)
			if err != nil {
				t.Fatalf("repeat: %v", err)
			}
			if got.ID != first.ID || got.Sequence != first.Sequence || stringValue(t, got) != "first" {
				t.Errorf("repeat returned %s/%d %q, want original %s/%d \"first\"", got.ID, got.Sequence, stringValue(t, got), first.ID, first.Sequence)
			}
			if after := streamMsgs(t, e, eventstore.StreamAgents); after != before {
				t.Errorf("stream grew from %d to %d on a repeat", before, after)
			}
		})
	}

	t.Run("key reused for another event of the aggregate", func(t *testing.T) {
		orig := agentAppend("acme", "keyholder", "registered", 0, "v")
		mustAppend(t, e.store, orig)
		before := streamMsgs(t, e, eventstore.StreamAgents)
		otherType := agentAppend("acme", "keyholder", "suspended", 0, "v")
		otherType.IdempotencyKey = orig.IdempotencyKey
		if _, err := e.store.Append(t.Context(), otherType); !errors.Is(err, eventstore.ErrIdempotencyKeyReused) {
			t.Errorf("%s on %s: err = %v, want ErrIdempotencyKeyReused", otherType.Type, otherType.AggregateID, err)
		}
		if after := streamMsgs(t, e, eventstore.StreamAgents); after != before {
			t.Errorf("stream grew from %d to %d", before, after)
		}
	})

	// Keys are scoped to their aggregate: the same request id from another tenant or for another
	// aggregate is another command, never a repeat (nor a way to block someone else's command).
	t.Run("same key on other aggregates", func(t *testing.T) {
		orig := agentAppend("acme", "holder", "registered", 0, "v")
		first := mustAppend(t, e.store, orig)
		for _, other := range []eventstore.Append{
			agentAppend("acme", "neighbour", "registered", 0, "v"),
			agentAppend("globex", "holder", "registered", 0, "v"),
		} {
			other.IdempotencyKey = orig.IdempotencyKey
			got, err := e.store.Append(t.Context(), other)
			if err != nil {
				t.Fatalf("%s/%s: %v", other.Tenant, other.AggregateID, err)
			}
			if got.Sequence == first.Sequence || got.AggregateID != other.AggregateID || got.Metadata.Tenant != other.Tenant {
				t.Fatalf("%s/%s got the other aggregate's event %+v", other.Tenant, other.AggregateID, got)
			}
		}
	})
}

func TestRestartLosesNothing(t *testing.T) {
	e := newEnv(t)
	live := newAgentList("agents-v1")
	runner := e.store.NewRunner(live, eventstore.StreamAgents, nil)
	run(t, runner)
	var (
		version uint64
		ids     []string
		first   eventstore.Append
	)
	for i := range 5 {
		a := agentAppend("acme", "durable", "updated", version, "v")
		if i == 0 {
			a.Type = "agent.registered"
			first = a
		}
		ev := mustAppend(t, e.store, a)
		version, ids = ev.Sequence, append(ids, ev.ID)
	}

	e.nats.Restart(t)

	ctx := ctxTimeout(t, 10*time.Second)
	var (
		events []eventstore.Event
		got    uint64
		err    error
	)
	for { // the client reconnects on its own
		if events, got, err = e.store.Load(ctx, "acme", "agent", "durable"); err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("Load after restart: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(events) != len(ids) || got != version {
		t.Fatalf("after restart: %d events at version %d, want %d at %d", len(events), got, len(ids), version)
	}
	for i, ev := range events {
		if ev.ID != ids[i] {
			t.Errorf("event %d id = %s, want %s", i, ev.ID, ids[i])
		}
	}
	if _, err := e.store.Append(t.Context(), agentAppend("acme", "durable", "updated", version-1, "stale")); !errors.Is(err, eventstore.ErrConflict) {
		t.Errorf("stale append after restart: err = %v, want ErrConflict", err)
	}
	again, err := e.store.Append(t.Context(), first)
	if err != nil || again.ID != ids[0] {
		t.Errorf("repeated first append after restart = %s, %v; want original %s", again.ID, err, ids[0])
	}
	next := mustAppend(t, e.store, agentAppend("acme", "durable", "updated", version, "after"))
	if next.Sequence <= version || next.ExpectedVersion != version {
		t.Errorf("append after restart: seq %d expected %d, want > %d and %d", next.Sequence, next.ExpectedVersion, version, version)
	}
	// A runner that lived through the restart follows on.
	if err := runner.WaitFor(ctxTimeout(t, 10*time.Second), next.Sequence); err != nil {
		t.Fatal(err)
	}
	if got, _ := live.snapshot(); len(got["acme/durable"]) != len(ids)+1 {
		t.Errorf("runner across restart has %d events, want %d", len(got["acme/durable"]), len(ids)+1)
	}
}

func TestPublish(t *testing.T) {
	e := newEnv(t)
	md := eventstore.Metadata{Tenant: "acme", Actor: eventstore.Actor{ID: "bot", Kind: eventstore.ActorAgent}}
	ev, err := e.store.Publish(t.Context(), "telemetry.acme.token", "telemetry.token_issued", "tenants/acme/agents/bot", wrapperspb.String("t"), md)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Stream != eventstore.StreamTelemetry || ev.Sequence != 1 || ev.ExpectedVersion != eventstore.AnyVersion {
		t.Errorf("published %s/%d (expected version %d)", ev.Stream, ev.Sequence, ev.ExpectedVersion)
	}
	st, err := e.store.JetStream().Stream(t.Context(), eventstore.StreamTelemetry)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := st.GetMsg(t.Context(), ev.Sequence)
	if err != nil {
		t.Fatal(err)
	}
	back, err := eventstore.EventFromRaw(eventstore.StreamTelemetry, raw.Sequence, raw.Subject, raw.Header, raw.Data)
	if err != nil {
		t.Fatal(err)
	}
	if back.ID != ev.ID || back.Metadata != md || back.AggregateType != "" || raw.Header.Get("Nats-Msg-Id") != ev.ID {
		t.Errorf("stored %+v, headers %v", back, raw.Header)
	}

	tests := []struct {
		name      string
		subject   string
		typ       string
		md        eventstore.Metadata
		wantField string
	}{
		{"aggregate subject", "agentid.acme.agent.bot.registered", "agent.registered", md, "subject"},
		{"wildcard subject", "telemetry.acme.*", "x", md, "subject"},
		{"empty token", "telemetry..token", "x", md, "subject"},
		{"other tenant's subject", "telemetry.other.token", "x", md, "subject"},
		{"missing tenant", "telemetry.acme.token", "x", eventstore.Metadata{}, "metadata.tenant"},
		{"missing type", "telemetry.acme.token", "", md, "type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.store.Publish(t.Context(), tt.subject, tt.typ, "", wrapperspb.String("t"), tt.md)
			var ie *eventstore.InvalidError
			if !errors.As(err, &ie) || ie.Field != tt.wantField {
				t.Fatalf("err = %v, want InvalidError on %q", err, tt.wantField)
			}
		})
	}
	if n := streamMsgs(t, e, eventstore.StreamTelemetry); n != 1 {
		t.Errorf("TELEMETRY holds %d messages, want 1", n)
	}
}
