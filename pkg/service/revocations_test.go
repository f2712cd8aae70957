package service_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/service"
	"github.com/agentid/agentid/pkg/testkit"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
)

func TestRevocationsFeedTheAPIDenylistAndGateReadiness(t *testing.T) {
	n := testkit.StartNATS(t)
	js := n.JetStream(t)
	rev, err := service.NewRevocations(js, quiet)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rev.Task()(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("revocations task: %v", err)
		}
	})
	check := rev.ReadyCheck()
	if check.Name != "revocations" || rev.Feed.Caught() {
		t.Fatalf("check %q, caught %v before the stream exists; want \"revocations\", false", check.Name, rev.Feed.Caught())
	}

	store := eventstore.New(js, eventstore.WithSource("agentid/test"))
	if err := store.EnsureStreams(t.Context()); err != nil {
		t.Fatal(err)
	}
	readyCtx, readyCancel := context.WithTimeout(t.Context(), testkit.DefaultWait)
	defer readyCancel()
	if err := check.Ready(readyCtx); err != nil {
		t.Fatal(err)
	}

	now := time.Now()
	if _, err := store.Append(t.Context(), eventstore.Append{
		Tenant: "acme", AggregateType: eventstore.AggregateRevocation, AggregateID: "r1", IdempotencyKey: "r1",
		Type: eventstore.TypeTokensRevoked, Subject: "tenants/acme/revocations/r1",
		Data: &issuerv1.TokensRevoked{
			Target: issuerv1.RevocationTarget_REVOCATION_TARGET_CLIENT, Tenant: "acme", ClientId: "admin-cli",
			NotBefore: timestamppb.New(now), ExpireTime: timestamppb.New(now.Add(authn.MaxTokenLifetime)),
		},
		Metadata: eventstore.Metadata{Actor: eventstore.Actor{ID: "admin", Kind: eventstore.ActorHuman}},
	}); err != nil {
		t.Fatal(err)
	}
	token := &authn.Claims{Tenant: "acme", ClientID: "admin-cli", Subject: "admin-cli", IssuedAt: now.Add(-time.Minute)}
	testkit.Eventually(t, 0, "the API denylist refusing the revoked client's token", func() (bool, error) {
		return rev.Denylist.Check(token, "") != nil, nil
	})
	testkit.Eventually(t, 0, "agentid_revocations_applied_total = 1", func() (bool, error) {
		return metricValue(t, "agentid_revocations_applied_total") == 1, nil
	})
	if got := metricValue(t, "agentid_revocations_caught_up"); got != 1 {
		t.Errorf("agentid_revocations_caught_up = %v, want 1", got)
	}
	if got := metricValue(t, "agentid_revocations_last_contact_seconds"); got < 0 || got > 60 {
		t.Errorf("agentid_revocations_last_contact_seconds = %v, want the age of a recent contact", got)
	}
}

// metricValue reads a gauge or counter without labels from the default registry (-1 if absent).
func metricValue(t *testing.T, name string) float64 {
	t.Helper()
	families, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name || len(f.GetMetric()) == 0 {
			continue
		}
		m := f.GetMetric()[0]
		if m.GetCounter() != nil {
			return m.GetCounter().GetValue()
		}
		return m.GetGauge().GetValue()
	}
	return -1
}
