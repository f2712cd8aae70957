package authn_test

import (
	"context"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
)

// replaceKeys makes the fake issuer publish exactly keys for tenant.
func (fi *fakeIssuer) replaceKeys(tenant string, keys ...signingKey) {
	fi.mu.Lock()
	defer fi.mu.Unlock()
	fi.keys[tenant] = fi.keys[tenant][:0]
	for _, k := range keys {
		fi.keys[tenant] = append(fi.keys[tenant], k.public())
	}
}

type cacheFixture struct {
	fi   *fakeIssuer
	key  signingKey
	clk  *clock
	deny *authn.Denylist
	v    *authn.JWKSVerifier
}

func newCacheFixture(t *testing.T, size int) *cacheFixture {
	t.Helper()
	f := &cacheFixture{fi: newFakeIssuer(t), key: newES256(t, "acme-1"), clk: &clock{now: baseTime}}
	f.fi.publish("acme", f.key)
	f.deny = authn.NewDenylist(authn.DenylistConfig{Now: f.clk.Now})
	v, err := authn.NewJWKSVerifier(authn.JWKSVerifierConfig{
		IssuerBaseURL:      f.fi.srv.URL,
		HTTPClient:         f.fi.srv.Client(),
		MinRefreshInterval: 10 * time.Second,
		RefreshInterval:    5 * time.Minute,
		Leeway:             30 * time.Second,
		Now:                f.clk.Now,
		Revocations:        f.deny,
		VerifiedCacheSize:  size,
	})
	if err != nil {
		t.Fatal(err)
	}
	f.v = v
	return f
}

// token mints a token valid from baseTime-1m for one hour, with an act claim and a DPoP binding so
// that every kind of field is copied.
func (f *cacheFixture) token(t *testing.T, jti string) string {
	t.Helper()
	c := validClaims(f.fi, "acme")
	c.ID, c.Expiry = jti, baseTime.Add(time.Hour)
	c.Agent = "tenants/acme/agents/a1"
	c.Act = map[string]any{"sub": "user-1", "act": map[string]any{"sub": "svc"}, "chain": []any{"x", map[string]any{"y": "z"}}}
	c.Confirmation = &authn.Confirmation{JKT: "thumbprint"}
	return mint(t, f.key, "at+jwt", c)
}

func wantReason(t *testing.T, err error, reason string) {
	t.Helper()
	if err == nil {
		t.Fatalf("token accepted, want %s", reason)
	}
	if e := errs.FromStatus(err); e.Kind != errs.KindUnauthenticated || e.Reason != reason {
		t.Fatalf("got %v, want Unauthenticated/%s", err, reason)
	}
}

func TestVerifiedCacheHitReturnsEqualClaimsThatCallersCannotChange(t *testing.T) {
	f := newCacheFixture(t, 0)
	ctx := context.Background()
	tok := f.token(t, "jti-1")
	first, err := f.v.Verify(ctx, tok)
	if err != nil {
		t.Fatal(err)
	}
	if got := f.v.CachedTokens(); got != 1 {
		t.Fatalf("cached tokens = %d, want 1", got)
	}
	want, err := f.v.Verify(ctx, tok)
	if err != nil {
		t.Fatalf("cached token: %v", err)
	}
	if !reflect.DeepEqual(first, want) {
		t.Fatalf("cached claims differ:\n got %+v\nwant %+v", want, first)
	}

	// Every mutable part of a returned copy is changed; the next answer is as before.
	want.Audience[0], want.Roles[0] = "changed", "changed"
	want.Act["sub"] = "mallory"
	want.Act["act"].(map[string]any)["sub"] = "mallory"
	want.Act["chain"].([]any)[1].(map[string]any)["y"] = "mallory"
	want.Confirmation.JKT = "other"
	again, err := f.v.Verify(ctx, tok)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(first, again) {
		t.Fatalf("a caller changed the cached claims:\n got %+v\nwant %+v", again, first)
	}
}

func TestVerifiedCacheRechecksEveryRequest(t *testing.T) {
	revoke := func(ev *issuerv1.TokensRevoked) func(t *testing.T, f *cacheFixture) {
		return func(t *testing.T, f *cacheFixture) {
			ev.Tenant = "acme"
			if ev.ExpireTime == nil {
				ev.ExpireTime = timestamppb.New(baseTime.Add(2 * time.Hour))
			}
			if err := f.deny.Apply(ev, 1); err != nil {
				t.Fatal(err)
			}
		}
	}
	notBefore := timestamppb.New(baseTime)
	tests := []struct {
		name       string
		after      func(t *testing.T, f *cacheFixture) // happens after the token was verified and cached
		wantReason string                              // "" means still accepted
	}{
		{name: "nothing changed", after: func(*testing.T, *cacheFixture) {}},
		{name: "revoked by jti", after: revoke(&issuerv1.TokensRevoked{Target: issuerv1.RevocationTarget_REVOCATION_TARGET_TOKEN, TokenId: "jti-1"}), wantReason: authn.ReasonTokenRevoked},
		{name: "revoked by client", after: revoke(&issuerv1.TokensRevoked{Target: issuerv1.RevocationTarget_REVOCATION_TARGET_CLIENT, ClientId: "svc-lifecycle", NotBefore: notBefore}), wantReason: authn.ReasonTokenRevoked},
		{name: "revoked by agent", after: revoke(&issuerv1.TokensRevoked{Target: issuerv1.RevocationTarget_REVOCATION_TARGET_AGENT, Agent: "tenants/acme/agents/a1", NotBefore: notBefore}), wantReason: authn.ReasonTokenRevoked},
		{name: "revoked by signing key", after: revoke(&issuerv1.TokensRevoked{Target: issuerv1.RevocationTarget_REVOCATION_TARGET_KEY, KeyId: "acme-1"}), wantReason: authn.ReasonTokenRevoked},
		{name: "expired within the leeway", after: func(t *testing.T, f *cacheFixture) { f.clk.Advance(time.Hour + 20*time.Second) }},
		{name: "expired beyond the leeway", after: func(t *testing.T, f *cacheFixture) { f.clk.Advance(time.Hour + 31*time.Second) }, wantReason: authn.ReasonTokenExpired},
		{name: "JWKS refetched with the same key", after: func(t *testing.T, f *cacheFixture) { f.clk.Advance(6 * time.Minute) }},
		{name: "key removed from the JWKS", after: func(t *testing.T, f *cacheFixture) {
			f.fi.replaceKeys("acme", newES256(t, "acme-2"))
			f.clk.Advance(6 * time.Minute)
		}, wantReason: authn.ReasonTokenKeyUnknown},
		{name: "key replaced under the same kid", after: func(t *testing.T, f *cacheFixture) {
			f.fi.replaceKeys("acme", newES256(t, "acme-1"))
			f.clk.Advance(6 * time.Minute)
		}, wantReason: authn.ReasonTokenInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newCacheFixture(t, 0)
			ctx := context.Background()
			tok := f.token(t, "jti-1")
			if _, err := f.v.Verify(ctx, tok); err != nil {
				t.Fatal(err)
			}
			if got := f.v.CachedTokens(); got != 1 {
				t.Fatalf("cached tokens = %d, want 1", got)
			}
			tt.after(t, f)
			c, err := f.v.Verify(ctx, tok)
			if tt.wantReason == "" {
				if err != nil || c.ID != "jti-1" {
					t.Fatalf("Verify = %v, %v; want the token accepted", c, err)
				}
				return
			}
			wantReason(t, err, tt.wantReason)
			if tt.wantReason != authn.ReasonTokenRevoked && f.v.CachedTokens() != 0 {
				t.Fatalf("refused token is still cached (%d entries)", f.v.CachedTokens())
			}
		})
	}
}

func TestVerifiedCacheStaysBoundedUnderAFloodOfDistinctTokens(t *testing.T) {
	const size = 64
	f := newCacheFixture(t, size)
	ctx := context.Background()
	for i := range 1000 {
		if _, err := f.v.Verify(ctx, f.token(t, fmt.Sprintf("flood-%d", i))); err != nil {
			t.Fatal(err)
		}
		if got := f.v.CachedTokens(); got > size {
			t.Fatalf("after %d tokens the cache holds %d, more than its size %d", i+1, got, size)
		}
	}
	if got := f.v.CachedTokens(); got < size/2 {
		t.Fatalf("cache holds %d tokens after a flood, want it used (about %d)", got, size)
	}
	// Once every cached token has expired, the next insertions sweep them.
	f.clk.Advance(2 * time.Hour)
	c := validClaims(f.fi, "acme")
	c.IssuedAt, c.NotBefore, c.Expiry = f.clk.Now(), f.clk.Now(), f.clk.Now().Add(time.Hour)
	for i := range 16 * 4 {
		c.ID = fmt.Sprintf("later-%d", i)
		if _, err := f.v.Verify(ctx, mint(t, f.key, "at+jwt", c)); err != nil {
			t.Fatal(err)
		}
	}
	if got := f.v.CachedTokens(); got > size {
		t.Fatalf("cache holds %d, more than its size %d", got, size)
	}
}

func TestVerifiedCacheDisabled(t *testing.T) {
	f := newCacheFixture(t, -1)
	tok := f.token(t, "jti-1")
	for range 2 {
		if _, err := f.v.Verify(context.Background(), tok); err != nil {
			t.Fatal(err)
		}
	}
	if got := f.v.CachedTokens(); got != 0 {
		t.Fatalf("disabled cache holds %d tokens", got)
	}
	if err := f.deny.Apply(&issuerv1.TokensRevoked{Target: issuerv1.RevocationTarget_REVOCATION_TARGET_TOKEN, Tenant: "acme",
		TokenId: "jti-1", ExpireTime: timestamppb.New(baseTime.Add(2 * time.Hour))}, 1); err != nil {
		t.Fatal(err)
	}
	_, err := f.v.Verify(context.Background(), tok)
	wantReason(t, err, authn.ReasonTokenRevoked)
}

func TestVerifiedCacheConcurrentUse(t *testing.T) {
	f := newCacheFixture(t, 8) // smaller than the token set: hits, misses and evictions interleave
	ctx := context.Background()
	tokens := make([]string, 24)
	for i := range tokens {
		tokens[i] = f.token(t, fmt.Sprintf("jti-%d", i))
	}
	revoked := "jti-0"
	if err := f.deny.Apply(&issuerv1.TokensRevoked{Target: issuerv1.RevocationTarget_REVOCATION_TARGET_TOKEN, Tenant: "acme",
		TokenId: revoked, ExpireTime: timestamppb.New(baseTime.Add(2 * time.Hour))}, 1); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	failures := make(chan string, 64)
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				n := (g*7 + i) % len(tokens)
				c, err := f.v.Verify(ctx, tokens[n])
				jti := fmt.Sprintf("jti-%d", n)
				switch {
				case jti == revoked && err == nil:
					failures <- "revoked token accepted"
					return
				case jti != revoked && (err != nil || c.ID != jti):
					failures <- fmt.Sprintf("token %s: %v, %v", jti, c, err)
					return
				case err == nil:
					c.Audience[0], c.Act["sub"] = "changed", "changed" // callers own their copy
				}
			}
		})
	}
	wg.Wait()
	close(failures)
	for msg := range failures {
		t.Error(msg)
	}
	if got := f.v.CachedTokens(); got > 8 {
		t.Fatalf("cache holds %d tokens, more than its size 8", got)
	}
}
