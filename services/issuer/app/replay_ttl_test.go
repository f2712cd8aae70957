package app_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/testkit"
)

// A spent assertion id is kept until the assertion could no longer be accepted (its exp plus the
// leeway, plus a margin for clock skew), not for the bucket's whole TTL: memory for used ids is
// bounded by the assertion lifetime the clients actually use.
func TestSpentAssertionIDLivesAsLongAsTheAssertion(t *testing.T) {
	n := testkit.StartNATS(t)
	r := startReplica(t, n, "")
	c := newTestClient(t, "acme", "agent-ttl")
	c.register(t, r, "orders.read")
	assertion := c.assertion(t, r)
	if got := postForm(t, r.tokenURL("acme"), tokenForm(assertion)); got.status != http.StatusOK {
		t.Fatalf("token: %v", got.body)
	}
	if got := postForm(t, r.tokenURL("acme"), tokenForm(assertion)); got.status != http.StatusUnauthorized {
		t.Fatalf("replayed assertion: %d %v", got.status, got.body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testkit.DefaultWait)
	defer cancel()
	stream, err := n.JetStream(t).Stream(ctx, "KV_issuer-jti")
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := stream.GetMsg(ctx, info.State.LastSeq)
	if err != nil {
		t.Fatal(err)
	}
	ttl, err := time.ParseDuration(msg.Header.Get("Nats-TTL"))
	// exp is authn.AssertionLifetime ahead; + 30 s leeway + 1 min margin + rounding.
	if max := authn.AssertionLifetime + 30*time.Second + time.Minute + 2*time.Second; err != nil || ttl < authn.AssertionLifetime || ttl > max {
		t.Fatalf("record lifetime %q (%v), want between %v and %v", msg.Header.Get("Nats-TTL"), err, authn.AssertionLifetime, max)
	}
}
