package eventstore_test

import (
	"errors"
	"testing"

	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/agentid/agentid/pkg/eventstore"
)

func revocationAppend(id string) eventstore.Append {
	return eventstore.Append{
		Tenant:          "acme",
		AggregateType:   eventstore.AggregateRevocation,
		AggregateID:     id,
		ExpectedVersion: 0,
		IdempotencyKey:  newKey(),
		Type:            eventstore.TypeTokensRevoked,
		Subject:         "tenants/acme/revocations/" + id,
		Data:            wrapperspb.String("revoked"),
		Metadata:        alice,
	}
}

// The revocation aggregate's event keeps its contracted type tokens.revoked and lands on the
// REVOCATIONS stream under agentid.<tenant>.revocation.<id>.tokens.revoked.
func TestAppendTokensRevoked(t *testing.T) {
	e := newEnv(t)
	ev := mustAppend(t, e.store, revocationAppend("r1"))
	if ev.Type != eventstore.TypeTokensRevoked || ev.Stream != eventstore.StreamRevocations {
		t.Fatalf("appended %s to %s, want %s to %s", ev.Type, ev.Stream, eventstore.TypeTokensRevoked, eventstore.StreamRevocations)
	}
	st, err := e.store.JetStream().Stream(t.Context(), eventstore.StreamRevocations)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := st.GetMsg(t.Context(), ev.Sequence)
	if err != nil {
		t.Fatal(err)
	}
	if want := eventstore.EventSubject("acme", eventstore.AggregateRevocation, "r1", eventstore.TypeTokensRevoked); msg.Subject != want {
		t.Errorf("subject = %s, want %s", msg.Subject, want)
	}
	events, version, err := e.store.Load(t.Context(), "acme", eventstore.AggregateRevocation, "r1")
	if err != nil || version != ev.Sequence || len(events) != 1 || events[0].Type != eventstore.TypeTokensRevoked {
		t.Fatalf("Load = %d events at version %d, %v; want the one event at %d", len(events), version, err, ev.Sequence)
	}

	tests := []struct {
		name   string
		mutate func(*eventstore.Append)
	}{
		{"tokens.revoked on another aggregate", func(a *eventstore.Append) {
			a.AggregateType, a.Subject = eventstore.AggregateAgent, "tenants/acme/agents/r2"
		}},
		{"another two-token type on the revocation aggregate", func(a *eventstore.Append) { a.Type = "tokens.other" }},
		{"revocation type with two tokens", func(a *eventstore.Append) { a.Type = "revocation.tokens.revoked" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := revocationAppend("r2")
			tt.mutate(&a)
			_, err := e.store.Append(t.Context(), a)
			var ie *eventstore.InvalidError
			if !errors.As(err, &ie) || ie.Field != "type" {
				t.Fatalf("err = %v, want InvalidError on type", err)
			}
		})
	}
	if n := streamMsgs(t, e, eventstore.StreamRevocations); n != 1 {
		t.Errorf("REVOCATIONS holds %d messages, want 1", n)
	}
}
