package oauth_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/agentid/agentid/pkg/ratelimit"

	"github.com/agentid/agentid/services/issuer/internal/oauth"
)

const (
	attackerAddr = "203.0.113.66:40000"
	victimAddr   = "198.51.100.7:51000"
)

// newLimitedCore is newCore with the client limiters the issuer binary builds: a rate so low that
// no bucket refills during the test, so exactly the burst passes.
func newLimitedCore(t *testing.T, burst int) *coreFixture {
	t.Helper()
	limiter := func() *ratelimit.Limiter {
		l, err := ratelimit.New(ratelimit.Config{Rate: 0.001, Burst: burst})
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	return newCoreWith(t, func(cfg *oauth.Config) {
		cfg.ClientLimiter, cfg.AttemptLimiter = limiter(), limiter()
	})
}

// forgedAssertion names the fixture's client but is signed by a key the issuer does not know.
func forgedAssertion(t *testing.T, kid string) string {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: k, KeyID: kid}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	s, err := jwt.Signed(signer).Claims(jwt.Claims{
		Issuer: clientID, Subject: clientID, Audience: jwt.Audience{issuer},
		IssuedAt: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(time.Minute)), ID: rand.Text(),
	}).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (f *coreFixture) tokenFrom(t *testing.T, addr, assertion string) *oauth.Error {
	t.Helper()
	_, oerr := f.srv.Token(context.Background(), tenant, oauth.Request{
		ContentType: oauth.FormContentType, RemoteAddr: addr, Method: http.MethodPost,
		Body: strings.NewReader(form(assertion, "scope", "orders.read")),
	})
	return oerr
}

// TestForgedAssertionsDoNotDrainTheClientsBudget: one address flooding assertions that name a
// client but are not signed by it (a wrong key, the client's own kid, no valid signature) is
// refused 429 once its own budget is spent, and the client itself, from its own address, still
// gets tokens, introspects and revokes.
func TestForgedAssertionsDoNotDrainTheClientsBudget(t *testing.T) {
	const burst = 3
	f := newLimitedCore(t, burst)
	forged := []string{forgedAssertion(t, f.kid), forgedAssertion(t, "unknown-kid"), "e30.e30.e30"}
	limited := 0
	for i := range 5 * burst {
		oerr := f.tokenFrom(t, attackerAddr, forged[i%len(forged)])
		switch {
		case oerr == nil:
			t.Fatal("a forged assertion got a token")
		case oerr.Code == oauth.ErrSlowDown:
			limited++
		case oerr.Code != oauth.ErrInvalidClient:
			t.Fatalf("forged assertion %d: %s %s, want invalid_client or slow_down", i, oerr.Code, oerr.Description)
		}
	}
	// The attacker's address is limited (parsed assertions naming the client from that address)…
	if limited == 0 {
		t.Fatal("a flood of forged assertions from one address was never limited")
	}
	// …from another port of the same address too: the port is not part of the source.
	if oerr := f.tokenFrom(t, "203.0.113.66:40001", forged[0]); oerr == nil || oerr.Code != oauth.ErrSlowDown {
		t.Fatalf("forged assertion from another port of the flooding address: %v, want slow_down", oerr)
	}
	// The client's own budget is untouched: a burst of valid requests from its address passes.
	for i := range burst {
		if oerr := f.tokenFrom(t, victimAddr, f.assertion(t, issuer, time.Minute)); oerr != nil {
			t.Fatalf("the client's own request %d after the flood: %s %s (%v)", i, oerr.Code, oerr.Description, oerr.Cause)
		}
	}
	// Its verified budget is still enforced: one request more than the burst is refused.
	if oerr := f.tokenFrom(t, victimAddr, f.assertion(t, issuer, time.Minute)); oerr == nil || oerr.Code != oauth.ErrSlowDown {
		t.Fatalf("request over the client's burst: %v, want slow_down", oerr)
	}
}

// TestForgedAssertionsDoNotLockTheClientOutOfIntrospection: the flood reaches the introspection
// endpoint's client authentication the same way.
func TestForgedAssertionsDoNotLockTheClientOutOfIntrospection(t *testing.T) {
	f := newLimitedCore(t, 2)
	introspect := func(addr, assertion string) *oauth.Error {
		_, oerr := f.srv.Introspect(context.Background(), tenant, oauth.Request{
			ContentType: oauth.FormContentType, RemoteAddr: addr, Method: http.MethodPost,
			Body: strings.NewReader(url.Values{"token": {"x"}, "client_assertion_type": {oauth.ClientAssertionTypeJWT},
				"client_assertion": {assertion}}.Encode()),
		})
		return oerr
	}
	for range 10 {
		_ = introspect(attackerAddr, forgedAssertion(t, f.kid))
	}
	if oerr := introspect(attackerAddr, forgedAssertion(t, f.kid)); oerr == nil || oerr.Code != oauth.ErrSlowDown {
		t.Fatalf("forged introspection over the attacker's budget: %v, want slow_down", oerr)
	}
	if oerr := introspect(victimAddr, f.assertion(t, issuer, time.Minute)); oerr != nil {
		t.Fatalf("the client's own introspection after the flood: %s %s (%v)", oerr.Code, oerr.Description, oerr.Cause)
	}
}
