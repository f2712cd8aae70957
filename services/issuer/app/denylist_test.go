package app_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/testkit"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"

	"github.com/agentid/agentid/services/issuer/app"
)

// A process hands the issuer its own denylist: introspection checks that one, the issuer runs no feed
// of its own, and the OAuth endpoints answer 503 until the given readiness says the denylist has
// caught up.
func TestIssuerUsesTheProcessDenylist(t *testing.T) {
	n := testkit.StartNATS(t)
	deny := authn.NewDenylist(authn.DenylistConfig{})
	feed, err := authn.NewRevocationFeed(authn.RevocationFeedConfig{JetStream: n.JetStream(t), Denylist: deny, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	runTask(t, feed.Run)

	asked, release := make(chan struct{}), make(chan struct{})
	var askedOnce sync.Once
	ready := func(ctx context.Context) error {
		askedOnce.Do(func() { close(asked) })
		select {
		case <-release:
			return feed.Ready(ctx)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	r := launchReplicaWithDeps(t, n, "", nil, func(d *app.Deps) { d.Denylist, d.DenylistReady = deny, ready })

	select {
	case <-asked: // the projections have caught up; only the denylist is missing
	case <-time.After(testkit.DefaultWait):
		t.Fatal("the issuer never asked whether the denylist has caught up")
	}
	resp := postForm(t, r.tokenURL("acme"), tokenForm("not-checked-yet"))
	wantOAuthError(t, resp, http.StatusServiceUnavailable, "temporarily_unavailable")
	notYet, cancel := context.WithCancel(context.Background())
	cancel()
	if r.app.Ready(notYet) == nil {
		t.Fatal("the issuer is ready before the process's denylist has caught up")
	}
	close(release)
	r.waitReady(t)

	if got := revocationMetricNames(t, r.reg); len(got) != 0 {
		t.Errorf("the issuer exports %v with a shared denylist, want none: it runs no feed of its own", got)
	}

	bot := newTestClient(t, "acme", "bot")
	bot.registerService(t, r)
	token, claims := accessToken(t, r, bot)
	if !active(t, r, bot, token) {
		t.Fatal("a fresh token is inactive")
	}
	// A revocation that only the given denylist knows (it is on no stream) is honoured.
	if err := deny.Apply(&issuerv1.TokensRevoked{
		Target: issuerv1.RevocationTarget_REVOCATION_TARGET_TOKEN, Tenant: "acme", TokenId: claims.ID,
		ExpireTime: timestamppb.New(claims.Expiry),
	}, 0); err != nil {
		t.Fatal(err)
	}
	if active(t, r, bot, token) {
		t.Fatal("introspection calls a token active that the process's denylist revokes")
	}

	// A revocation stored on the stream reaches introspection through the process's feed.
	second, _ := accessToken(t, r, bot)
	if _, err := r.admin(t).RevokeTokens(as("acme-admin"), &issuerv1.RevokeTokensRequest{
		Parent: "tenants/acme", Target: &issuerv1.RevokeTokensRequest_Token{Token: second},
	}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "introspection refuses the token revoked on the stream", func() bool { return !active(t, r, bot, second) })
}

// Without a shared denylist the issuer runs its own feed and exports its progress.
func TestIssuerOwnFeedExportsRevocationMetrics(t *testing.T) {
	r := startIssuer(t)
	if got := metricValue(t, r.reg, "agentid_revocations_caught_up"); got != 1 {
		t.Fatalf("agentid_revocations_caught_up = %v once ready, want 1", got)
	}
	bot := newTestClient(t, "acme", "bot")
	bot.registerService(t, r)
	token, _ := accessToken(t, r, bot)
	if _, err := r.admin(t).RevokeTokens(as("acme-admin"), &issuerv1.RevokeTokensRequest{
		Parent: "tenants/acme", Target: &issuerv1.RevokeTokensRequest_Token{Token: token},
	}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "agentid_revocations_applied_total = 1", func() bool {
		return metricValue(t, r.reg, "agentid_revocations_applied_total") == 1
	})
	if got := metricValue(t, r.reg, "agentid_revocations_entries"); got != 1 {
		t.Errorf("agentid_revocations_entries = %v, want 1", got)
	}
	if got := metricValue(t, r.reg, "agentid_revocations_position"); got < 1 {
		t.Errorf("agentid_revocations_position = %v, want the revocation's sequence", got)
	}
	if active(t, r, bot, token) {
		t.Fatal("introspection calls a revoked token active")
	}
}

func TestNewNeedsTheDenylistsReadiness(t *testing.T) {
	store := eventstore.New(testkit.StartNATS(t).JetStream(t))
	cfg := app.Config{PublicURL: "http://127.0.0.1:8080", KEK: testKEK}
	deny := authn.NewDenylist(authn.DenylistConfig{})
	for _, deps := range []app.Deps{
		{Store: store, Registerer: prometheus.NewRegistry(), Denylist: deny},
		{Store: store, Registerer: prometheus.NewRegistry(), DenylistReady: func(context.Context) error { return nil }},
	} {
		if _, err := app.New(cfg, deps); err == nil || !strings.Contains(err.Error(), "Deps.Denylist and Deps.DenylistReady") {
			t.Errorf("New with Denylist %v and DenylistReady %v: %v, want an error naming both", deps.Denylist != nil, deps.DenylistReady != nil, err)
		}
	}
}

// runTask runs task until the test ends.
func runTask(t testing.TB, task func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- task(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("task: %v", err)
		}
	})
}

// metricValue reads a gauge or counter without labels from reg (-1 if absent).
func metricValue(t testing.TB, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	families, err := reg.Gather()
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

// revocationMetricNames lists the agentid_revocations_* families of reg.
func revocationMetricNames(t testing.TB, reg *prometheus.Registry) []string {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range families {
		if strings.HasPrefix(f.GetName(), "agentid_revocations_") {
			names = append(names, f.GetName())
		}
	}
	return names
}
