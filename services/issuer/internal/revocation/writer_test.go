package revocation_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/testkit"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"

	"github.com/agentid/agentid/services/issuer/internal/revocation"
)

func newStore(t *testing.T) *eventstore.Store {
	t.Helper()
	n := testkit.StartNATS(t)
	s := eventstore.New(n.JetStream(t), eventstore.WithSource("agentid/issuer"))
	if err := s.EnsureStreams(t.Context()); err != nil {
		t.Fatal(err)
	}
	return s
}

func revocations(t *testing.T, s *eventstore.Store) uint64 {
	t.Helper()
	return testkit.StreamMessages(t, s.JetStream(), eventstore.StreamRevocations)
}

var admin = eventstore.Metadata{Actor: eventstore.Actor{ID: "alice", Kind: eventstore.ActorHuman}}

func clientRevocation(at time.Time) *issuerv1.TokensRevoked {
	return &issuerv1.TokensRevoked{
		Target:    issuerv1.RevocationTarget_REVOCATION_TARGET_CLIENT,
		Tenant:    "acme",
		ClientId:  "bot",
		NotBefore: timestamppb.New(at),
		Cause:     issuerv1.RevocationCause_REVOCATION_CAUSE_ADMIN,
		Reason:    "leaked",
	}
}

func TestRevokeStoresTheEvent(t *testing.T) {
	s := newStore(t)
	w := &revocation.Writer{Store: s}
	at := time.Now().UTC().Truncate(time.Second)
	got, err := w.Revoke(t.Context(), admin, clientRevocation(at), "req-1")
	if err != nil {
		t.Fatal(err)
	}
	id := revocation.ID("acme", "req-1")
	if got.GetName() != "tenants/acme/revocations/"+id || got.GetSequence() == 0 || got.GetCreateTime() == nil {
		t.Fatalf("revocation = %v", got)
	}
	want := clientRevocation(at)
	want.ExpireTime = timestamppb.New(at.Add(authn.MaxTokenLifetime + revocation.Leeway))
	if !proto.Equal(got.GetEvent(), want) {
		t.Fatalf("event = %v, want %v", got.GetEvent(), want)
	}
	events, _, err := s.Load(t.Context(), "acme", eventstore.AggregateRevocation, id)
	if err != nil || len(events) != 1 {
		t.Fatalf("Load = %d events, %v", len(events), err)
	}
	ev := events[0]
	if ev.Type != eventstore.TypeTokensRevoked || ev.Stream != eventstore.StreamRevocations || ev.Sequence != got.GetSequence() ||
		ev.Metadata.Actor.ID != "alice" || ev.Subject != got.GetName() {
		t.Fatalf("stored event = %+v", ev)
	}
}

func TestRevokeIsIdempotentByRequestID(t *testing.T) {
	s := newStore(t)
	w := &revocation.Writer{Store: s}
	first, err := w.Revoke(t.Context(), admin, clientRevocation(time.Now()), "req-1")
	if err != nil {
		t.Fatal(err)
	}
	// A retry made later carries a later not-before time: it is the same request all the same.
	again, err := w.Revoke(t.Context(), admin, clientRevocation(time.Now().Add(time.Second)), "req-1")
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(first, again) {
		t.Fatalf("retry = %v, want the first revocation %v", again, first)
	}
	other := clientRevocation(time.Now())
	other.ClientId = "other-bot"
	if _, err := w.Revoke(t.Context(), admin, other, "req-1"); !errs.Is(err, errs.KindInvalidArgument) {
		t.Fatalf("reused request id for another client: err = %v, want InvalidArgument", err)
	}
	// The same request id in another tenant is another revocation.
	beta := clientRevocation(time.Now())
	beta.Tenant = "beta"
	if _, err := w.Revoke(t.Context(), admin, beta, "req-1"); err != nil {
		t.Fatal(err)
	}
	if n := revocations(t, s); n != 2 {
		t.Fatalf("REVOCATIONS holds %d events, want 2", n)
	}
}

func TestRevokeRejectsInvalidEvents(t *testing.T) {
	s := newStore(t)
	w := &revocation.Writer{Store: s}
	now := time.Now()
	tests := []struct {
		name      string
		mutate    func(*issuerv1.TokensRevoked)
		requestID string
		wantField string
	}{
		{"no tenant", func(e *issuerv1.TokensRevoked) { e.Tenant = "" }, "", "tenant"},
		{"bad tenant", func(e *issuerv1.TokensRevoked) { e.Tenant = "a.b" }, "", "tenant"},
		{"no target", func(e *issuerv1.TokensRevoked) { e.Target = 0 }, "", "target"},
		{"client target without client", func(e *issuerv1.TokensRevoked) { e.ClientId = "" }, "", "client_id"},
		{"client target with agent", func(e *issuerv1.TokensRevoked) { e.Agent = "tenants/acme/agents/a" }, "", "agent"},
		{"client with space", func(e *issuerv1.TokensRevoked) { e.ClientId = "a b" }, "", "client_id"},
		{"agent of another tenant", func(e *issuerv1.TokensRevoked) {
			e.Target, e.ClientId, e.Agent = issuerv1.RevocationTarget_REVOCATION_TARGET_AGENT, "", "tenants/beta/agents/a"
		}, "", "agent"},
		{"no not_before", func(e *issuerv1.TokensRevoked) { e.NotBefore = nil }, "", "not_before"},
		{"expire before not_before", func(e *issuerv1.TokensRevoked) { e.ExpireTime = timestamppb.New(now.Add(-time.Hour)) }, "", "expire_time"},
		{"token without expire_time", func(e *issuerv1.TokensRevoked) {
			e.Target, e.ClientId, e.TokenId, e.NotBefore = issuerv1.RevocationTarget_REVOCATION_TARGET_TOKEN, "", "jti-1", nil
		}, "", "expire_time"},
		{"token with not_before", func(e *issuerv1.TokensRevoked) {
			e.Target, e.ClientId, e.TokenId = issuerv1.RevocationTarget_REVOCATION_TARGET_TOKEN, "", "jti-1"
		}, "", "not_before"},
		{"no cause", func(e *issuerv1.TokensRevoked) { e.Cause = 0 }, "", "cause"},
		{"reason too long", func(e *issuerv1.TokensRevoked) { e.Reason = strings.Repeat("x", 513) }, "", "reason"},
		{"reason not UTF-8", func(e *issuerv1.TokensRevoked) { e.Reason = "\xff" }, "", "reason"},
		{"request id with newline", func(*issuerv1.TokensRevoked) {}, "a\nb", "request_id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := clientRevocation(now)
			tt.mutate(ev)
			_, err := w.Revoke(t.Context(), admin, ev, tt.requestID)
			var e *errs.Error
			if !errors.As(err, &e) || e.Kind != errs.KindInvalidArgument || e.Field != tt.wantField {
				t.Fatalf("err = %v, want InvalidArgument on %s", err, tt.wantField)
			}
		})
	}
	if _, err := w.Revoke(t.Context(), admin, clientRevocation(now), strings.Repeat("r", 128)); err != nil {
		t.Fatalf("a 128-character request id: %v", err)
	}
	if n := revocations(t, s); n != 1 {
		t.Fatalf("REVOCATIONS holds %d events, want only the valid one", n)
	}
}

func TestRevokeStoreDownIsUnavailable(t *testing.T) {
	n := testkit.StartNATS(t)
	s := eventstore.New(n.JetStream(t))
	if err := s.EnsureStreams(t.Context()); err != nil {
		t.Fatal(err)
	}
	n.Shutdown()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	_, err := (&revocation.Writer{Store: s}).Revoke(ctx, admin, clientRevocation(time.Now()), "")
	if !errs.Is(err, errs.KindUnavailable) {
		t.Fatalf("err = %v, want Unavailable", err)
	}
}
