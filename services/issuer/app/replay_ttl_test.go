package app_test

import (
	"context"
	"encoding/binary"
	"net/http"
	"testing"
	"time"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/natsauth"
	"github.com/agentid/agentid/pkg/testkit"
)

// A spent assertion id is kept until the assertion could no longer be accepted (its exp plus the
// leeway, plus a margin for clock skew), not for the log's whole TTL: memory for used ids is bounded
// by the assertion lifetime the clients actually use.
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
	stream, err := n.JetStream(t).Stream(ctx, natsauth.IssuerReplayStream)
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
	// A record: format 1, an 8-byte record id, then 16-byte keys each followed by the big-endian Unix ms it is kept until.
	if len(msg.Data) != 1+8+24 || msg.Data[0] != 1 {
		t.Fatalf("the last record is %d bytes (format %v), want one entry of format 1", len(msg.Data), msg.Data[:min(1, len(msg.Data))])
	}
	until := time.UnixMilli(int64(binary.BigEndian.Uint64(msg.Data[1+8+16:])))
	ttl := until.Sub(msg.Time)
	// exp is authn.AssertionLifetime ahead; + 30 s leeway + 1 min margin + rounding.
	if max := authn.AssertionLifetime + 30*time.Second + time.Minute + 2*time.Second; ttl < authn.AssertionLifetime || ttl > max {
		t.Fatalf("record lifetime %v, want between %v and %v", ttl, authn.AssertionLifetime, max)
	}
}
