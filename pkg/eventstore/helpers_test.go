package eventstore_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/testkit"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

var alice = eventstore.Metadata{
	Actor:         eventstore.Actor{ID: "alice@corp", Kind: eventstore.ActorHuman},
	CorrelationID: "req-1",
}

type env struct {
	nats  *testkit.NATS
	store *eventstore.Store
}

// newEnv starts a JetStream server and a store with its streams.
func newEnv(t *testing.T, opts ...eventstore.Option) *env {
	t.Helper()
	n := testkit.StartNATS(t)
	s := eventstore.New(n.JetStream(t), append([]eventstore.Option{eventstore.WithSource("agentid/test"), eventstore.WithLogger(quiet)}, opts...)...)
	if err := s.EnsureStreams(t.Context()); err != nil {
		t.Fatal(err)
	}
	return &env{nats: n, store: s}
}

var keySeq atomic.Uint64

// unique returns base with a suffix no other call in this process returns: a consumer or
// projection name whose metrics (process-wide, see metrics.go) start from zero in every run of a
// test, -count=N included.
func unique(base string) string { return fmt.Sprintf("%s-%d", base, keySeq.Add(1)) }

func newKey() string { return fmt.Sprintf("key-%d", keySeq.Add(1)) }

// agentAppend is a valid append of an agent event; tests change what they need.
func agentAppend(tenant, agent, event string, expected uint64, value string) eventstore.Append {
	return eventstore.Append{
		Tenant:          tenant,
		AggregateType:   "agent",
		AggregateID:     agent,
		ExpectedVersion: expected,
		IdempotencyKey:  newKey(),
		Type:            "agent." + event,
		Subject:         "tenants/" + tenant + "/agents/" + agent,
		Data:            wrapperspb.String(value),
		Metadata:        alice,
	}
}

func mustAppend(t *testing.T, s *eventstore.Store, a eventstore.Append) eventstore.Event {
	t.Helper()
	ev, err := s.Append(t.Context(), a)
	if err != nil {
		t.Fatalf("Append(%s %s/%s): %v", a.Type, a.Tenant, a.AggregateID, err)
	}
	return ev
}

func streamMsgs(t *testing.T, e *env, stream string) uint64 {
	t.Helper()
	return testkit.StreamMessages(t, e.store.JetStream(), stream)
}

func stringValue(t *testing.T, ev eventstore.Event) string {
	t.Helper()
	v, err := eventstore.DecodeAs[*wrapperspb.StringValue](ev)
	if err != nil {
		t.Fatal(err)
	}
	return v.GetValue()
}

// ctxTimeout is a context for a wait that must end; its deadline is never shorter than
// testkit.DefaultWait, so that a machine busy with other work does not fail the test.
func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), max(d, testkit.DefaultWait))
	t.Cleanup(cancel)
	return ctx
}

func protoEqual(a, b proto.Message) bool { return proto.Equal(a, b) }
