package authn_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
)

// denyClock is a settable clock for Denylist tests.
type denyClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *denyClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *denyClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

var revBase = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// revocation builds a TokensRevoked of target in tenant "acme" for value, with not_before nb and
// expire_time nb + MaxTokenLifetime (exp for TOKEN).
func revocation(target issuerv1.RevocationTarget, value string, nb time.Time) *issuerv1.TokensRevoked {
	ev := &issuerv1.TokensRevoked{
		Target:     target,
		Tenant:     "acme",
		NotBefore:  timestamppb.New(nb),
		ExpireTime: timestamppb.New(nb.Add(authn.MaxTokenLifetime)),
		Cause:      issuerv1.RevocationCause_REVOCATION_CAUSE_ADMIN,
	}
	switch target {
	case issuerv1.RevocationTarget_REVOCATION_TARGET_TOKEN:
		ev.TokenId, ev.NotBefore, ev.ExpireTime = value, nil, timestamppb.New(nb.Add(15*time.Minute))
	case issuerv1.RevocationTarget_REVOCATION_TARGET_CLIENT:
		ev.ClientId = value
	case issuerv1.RevocationTarget_REVOCATION_TARGET_AGENT:
		ev.Agent = value
	case issuerv1.RevocationTarget_REVOCATION_TARGET_SUBJECT:
		ev.Subject = value
	case issuerv1.RevocationTarget_REVOCATION_TARGET_KEY:
		ev.KeyId, ev.NotBefore = value, nil
	case issuerv1.RevocationTarget_REVOCATION_TARGET_TENANT:
	}
	return ev
}

// tokenClaims are the claims of a token of tenant "acme" issued at iat.
func tokenClaims(iat time.Time) *authn.Claims {
	return &authn.Claims{
		Tenant: "acme", ID: "jti-1", ClientID: "client-1", Subject: "client-1",
		Agent: "tenants/acme/agents/a1", IssuedAt: iat, Expiry: iat.Add(15 * time.Minute),
	}
}

func isRevoked(t *testing.T, err error) bool {
	t.Helper()
	if err == nil {
		return false
	}
	var e *errs.Error
	if !errors.As(err, &e) || e.Kind != errs.KindUnauthenticated || e.Reason != authn.ReasonTokenRevoked {
		t.Fatalf("Check error = %v, want Unauthenticated %s", err, authn.ReasonTokenRevoked)
	}
	return true
}

func TestDenylistTargets(t *testing.T) {
	nb := revBase
	tok := func(mut func(c *authn.Claims)) *authn.Claims {
		c := tokenClaims(nb)
		if mut != nil {
			mut(c)
		}
		return c
	}
	const (
		token   = issuerv1.RevocationTarget_REVOCATION_TARGET_TOKEN
		client  = issuerv1.RevocationTarget_REVOCATION_TARGET_CLIENT
		agent   = issuerv1.RevocationTarget_REVOCATION_TARGET_AGENT
		subject = issuerv1.RevocationTarget_REVOCATION_TARGET_SUBJECT
		tenant  = issuerv1.RevocationTarget_REVOCATION_TARGET_TENANT
		key     = issuerv1.RevocationTarget_REVOCATION_TARGET_KEY
	)
	otherTenant := func(c *authn.Claims) { c.Tenant = "other" }
	later := func(c *authn.Claims) { c.IssuedAt = nb.Add(time.Second) }
	earlier := func(c *authn.Claims) { c.IssuedAt = nb.Add(-time.Hour) }
	tests := []struct {
		name   string
		ev     *issuerv1.TokensRevoked
		claims *authn.Claims
		kid    string
		want   bool
	}{
		{name: "token by jti", ev: revocation(token, "jti-1", nb), claims: tok(nil), want: true},
		{name: "token: another jti", ev: revocation(token, "jti-2", nb), claims: tok(nil), want: false},
		{name: "token: same jti in another tenant", ev: revocation(token, "jti-1", nb), claims: tok(otherTenant), want: false},
		{name: "token: issued later, same jti", ev: revocation(token, "jti-1", nb), claims: tok(later), want: true},
		{name: "client: iat == not_before", ev: revocation(client, "client-1", nb), claims: tok(nil), want: true},
		{name: "client: iat before not_before", ev: revocation(client, "client-1", nb), claims: tok(earlier), want: true},
		{name: "client: iat after not_before", ev: revocation(client, "client-1", nb), claims: tok(later), want: false},
		{name: "client: another client", ev: revocation(client, "client-2", nb), claims: tok(nil), want: false},
		{name: "client: other tenant", ev: revocation(client, "client-1", nb), claims: tok(otherTenant), want: false},
		{name: "agent: iat == not_before", ev: revocation(agent, "tenants/acme/agents/a1", nb), claims: tok(nil), want: true},
		{name: "agent: iat after not_before", ev: revocation(agent, "tenants/acme/agents/a1", nb), claims: tok(later), want: false},
		{name: "agent: token without agent", ev: revocation(agent, "tenants/acme/agents/a1", nb), claims: tok(func(c *authn.Claims) { c.Agent = "" }), want: false},
		{name: "agent: other tenant", ev: revocation(agent, "tenants/acme/agents/a1", nb), claims: tok(otherTenant), want: false},
		{name: "subject: iat == not_before", ev: revocation(subject, "client-1", nb), claims: tok(nil), want: true},
		{name: "subject: iat after not_before", ev: revocation(subject, "client-1", nb), claims: tok(later), want: false},
		{name: "subject: another subject", ev: revocation(subject, "user-9", nb), claims: tok(nil), want: false},
		{name: "tenant: iat == not_before", ev: revocation(tenant, "", nb), claims: tok(nil), want: true},
		{name: "tenant: iat after not_before", ev: revocation(tenant, "", nb), claims: tok(later), want: false},
		{name: "tenant: other tenant", ev: revocation(tenant, "", nb), claims: tok(otherTenant), want: false},
		{name: "key: signed with it", ev: revocation(key, "kid-1", nb), claims: tok(later), kid: "kid-1", want: true},
		{name: "key: another key", ev: revocation(key, "kid-1", nb), claims: tok(nil), kid: "kid-2", want: false},
		{name: "key: other tenant", ev: revocation(key, "kid-1", nb), claims: tok(otherTenant), kid: "kid-1", want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := &denyClock{t: nb.Add(time.Minute)}
			d := authn.NewDenylist(authn.DenylistConfig{Now: clock.Now})
			if err := d.Check(tt.claims, tt.kid); err != nil {
				t.Fatalf("empty denylist refused the token: %v", err)
			}
			if err := d.Apply(tt.ev, 1); err != nil {
				t.Fatalf("Apply: %v", err)
			}
			if got := isRevoked(t, d.Check(tt.claims, tt.kid)); got != tt.want {
				t.Errorf("revoked = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestDenylistApplyIsIdempotentAndOrderFree(t *testing.T) {
	clock := &denyClock{t: revBase}
	client := issuerv1.RevocationTarget_REVOCATION_TARGET_CLIENT
	early := revocation(client, "client-1", revBase.Add(-time.Hour))
	late := revocation(client, "client-1", revBase)
	inBetween := tokenClaims(revBase.Add(-time.Minute))
	after := tokenClaims(revBase.Add(time.Second))

	for _, order := range [][]*issuerv1.TokensRevoked{{early, late}, {late, early}, {late, late, early, early}} {
		d := authn.NewDenylist(authn.DenylistConfig{Now: clock.Now})
		for i, ev := range order {
			if err := d.Apply(ev, uint64(i+1)); err != nil {
				t.Fatal(err)
			}
		}
		if d.Len() != 1 {
			t.Errorf("Len = %d after %d applies of one client, want 1", d.Len(), len(order))
		}
		if !isRevoked(t, d.Check(inBetween, "")) {
			t.Errorf("order %d events: token issued before the latest not_before accepted", len(order))
		}
		if isRevoked(t, d.Check(after, "")) {
			t.Errorf("order %d events: token issued after the latest not_before refused", len(order))
		}
		if got := d.Position(); got != uint64(len(order)) {
			t.Errorf("Position = %d, want %d", got, len(order))
		}
	}
}

func TestDenylistForgetsExpiredEntries(t *testing.T) {
	clock := &denyClock{t: revBase}
	d := authn.NewDenylist(authn.DenylistConfig{Now: clock.Now, Retention: time.Minute, PruneInterval: time.Hour})
	tokenEv := revocation(issuerv1.RevocationTarget_REVOCATION_TARGET_TOKEN, "jti-1", revBase) // expires +15m
	clientEv := revocation(issuerv1.RevocationTarget_REVOCATION_TARGET_CLIENT, "client-1", revBase)
	for _, ev := range []*issuerv1.TokensRevoked{tokenEv, clientEv} {
		if err := d.Apply(ev, 0); err != nil {
			t.Fatal(err)
		}
	}
	if d.Len() != 2 {
		t.Fatalf("Len = %d, want 2", d.Len())
	}

	clock.Advance(15 * time.Minute) // the token's exp: still kept for the retention
	if n := d.Prune(); n != 0 || d.Len() != 2 {
		t.Fatalf("at exp: pruned %d, Len %d; want 0 and 2", n, d.Len())
	}
	clock.Advance(time.Minute)
	if n := d.Prune(); n != 1 || d.Len() != 1 {
		t.Fatalf("after exp + retention: pruned %d, Len %d; want 1 and 1", n, d.Len())
	}
	if isRevoked(t, d.Check(&authn.Claims{Tenant: "acme", ID: "jti-1"}, "")) {
		t.Error("forgotten jti still refused")
	}

	clock.Advance(authn.MaxTokenLifetime)
	if n := d.Prune(); n != 1 || d.Len() != 0 {
		t.Fatalf("after not_before + lifetime + retention: pruned %d, Len %d; want 1 and 0", n, d.Len())
	}

	// An event that has already expired is counted but not kept.
	before := d.Applied()
	if err := d.Apply(clientEv, 7); err != nil {
		t.Fatal(err)
	}
	if d.Len() != 0 || d.Applied() != before+1 || d.Position() != 7 {
		t.Errorf("expired event: Len %d, Applied +%d, Position %d; want 0, +1, 7", d.Len(), d.Applied()-before, d.Position())
	}
}

func TestDenylistApplyPrunesLazily(t *testing.T) {
	clock := &denyClock{t: revBase}
	d := authn.NewDenylist(authn.DenylistConfig{Now: clock.Now, Retention: time.Minute, PruneInterval: time.Minute})
	if err := d.Apply(revocation(issuerv1.RevocationTarget_REVOCATION_TARGET_TOKEN, "jti-1", revBase), 1); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Hour)
	if err := d.Apply(revocation(issuerv1.RevocationTarget_REVOCATION_TARGET_TOKEN, "jti-2", clock.Now()), 2); err != nil {
		t.Fatal(err)
	}
	if d.Len() != 1 {
		t.Errorf("Len = %d after an Apply an hour later, want 1 (the expired jti pruned)", d.Len())
	}
}

func TestDenylistRejectsMalformedEvents(t *testing.T) {
	valid := func() *issuerv1.TokensRevoked {
		return revocation(issuerv1.RevocationTarget_REVOCATION_TARGET_CLIENT, "client-1", revBase)
	}
	tests := []struct {
		name string
		mut  func(ev *issuerv1.TokensRevoked)
	}{
		{name: "no target", mut: func(ev *issuerv1.TokensRevoked) { ev.Target = issuerv1.RevocationTarget_REVOCATION_TARGET_UNSPECIFIED }},
		{name: "unknown target", mut: func(ev *issuerv1.TokensRevoked) { ev.Target = 99 }},
		{name: "no tenant", mut: func(ev *issuerv1.TokensRevoked) { ev.Tenant = "" }},
		{name: "bad tenant", mut: func(ev *issuerv1.TokensRevoked) { ev.Tenant = "a.b" }},
		{name: "no client_id", mut: func(ev *issuerv1.TokensRevoked) { ev.ClientId = "" }},
		{name: "no not_before", mut: func(ev *issuerv1.TokensRevoked) { ev.NotBefore = nil }},
		{name: "no expire_time", mut: func(ev *issuerv1.TokensRevoked) { ev.ExpireTime = nil }},
		{name: "token without token_id", mut: func(ev *issuerv1.TokensRevoked) {
			ev.Target = issuerv1.RevocationTarget_REVOCATION_TARGET_TOKEN
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := authn.NewDenylist(authn.DenylistConfig{Now: func() time.Time { return revBase }})
			ev := valid()
			tt.mut(ev)
			if err := d.Apply(ev, 1); err == nil {
				t.Fatal("Apply accepted a malformed event")
			}
			if d.Len() != 0 || d.Applied() != 0 || d.Position() != 0 {
				t.Errorf("a refused event changed the denylist: Len %d, Applied %d, Position %d", d.Len(), d.Applied(), d.Position())
			}
		})
	}
	if err := authn.NewDenylist(authn.DenylistConfig{}).Apply(nil, 1); err == nil {
		t.Error("Apply(nil) succeeded")
	}
}

func TestDenylistConcurrentCheckAndApply(t *testing.T) {
	d := authn.NewDenylist(authn.DenylistConfig{Now: func() time.Time { return revBase }})
	const writers, perWriter = 4, 200
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWriter {
				ev := revocation(issuerv1.RevocationTarget_REVOCATION_TARGET_TOKEN, fmt.Sprintf("jti-%d-%d", w, i), revBase)
				if err := d.Apply(ev, uint64(w*perWriter+i+1)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	var readers sync.WaitGroup
	for range 4 {
		readers.Add(1)
		go func() {
			defer readers.Done()
			c := tokenClaims(revBase)
			for {
				select {
				case <-stop:
					return
				default:
				}
				_ = d.Check(c, "kid")
				_ = d.Len()
			}
		}()
	}
	wg.Wait()
	close(stop)
	readers.Wait()
	if d.Len() != writers*perWriter {
		t.Errorf("Len = %d, want %d", d.Len(), writers*perWriter)
	}
	if d.Position() != writers*perWriter {
		t.Errorf("Position = %d, want %d", d.Position(), writers*perWriter)
	}
	for w := range writers {
		c := &authn.Claims{Tenant: "acme", ID: fmt.Sprintf("jti-%d-%d", w, perWriter-1)}
		if !isRevoked(t, d.Check(c, "")) {
			t.Errorf("jti of writer %d not refused", w)
		}
	}
}

func BenchmarkDenylistCheck(b *testing.B) {
	d := authn.NewDenylist(authn.DenylistConfig{Now: func() time.Time { return revBase }})
	for i := range 10000 {
		target := issuerv1.RevocationTarget(1 + i%4)
		ev := revocation(target, fmt.Sprintf("v-%d", i), revBase)
		if target == issuerv1.RevocationTarget_REVOCATION_TARGET_TENANT {
			ev = revocation(issuerv1.RevocationTarget_REVOCATION_TARGET_SUBJECT, fmt.Sprintf("s-%d", i), revBase)
		}
		if err := d.Apply(ev, uint64(i+1)); err != nil {
			b.Fatal(err)
		}
	}
	c := tokenClaims(revBase.Add(time.Second))
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := d.Check(c, "kid-1"); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func TestJWKSVerifierChecksRevocationsAfterTheSignature(t *testing.T) {
	fi := newFakeIssuer(t)
	key := newES256(t, "acme-1")
	fi.publish("acme", key)
	clk := &clock{now: baseTime}
	deny := authn.NewDenylist(authn.DenylistConfig{Now: clk.Now})
	v, err := authn.NewJWKSVerifier(authn.JWKSVerifierConfig{
		IssuerBaseURL: fi.srv.URL, HTTPClient: fi.srv.Client(), Now: clk.Now, Revocations: deny,
	})
	if err != nil {
		t.Fatal(err)
	}
	claims := validClaims(fi, "acme")
	raw := mint(t, key, "at+jwt", claims)
	if _, err := v.Verify(t.Context(), raw); err != nil {
		t.Fatalf("Verify before revocation: %v", err)
	}

	// A forged token with a revoked jti is refused as invalid, not as revoked: the signature comes first.
	forged := mint(t, newES256(t, "acme-1"), "at+jwt", claims)
	ev := &issuerv1.TokensRevoked{
		Target: issuerv1.RevocationTarget_REVOCATION_TARGET_TOKEN, Tenant: "acme", TokenId: claims.ID,
		ExpireTime: timestamppb.New(claims.Expiry),
	}
	if err := deny.Apply(ev, 1); err != nil {
		t.Fatal(err)
	}
	_, err = v.Verify(t.Context(), raw)
	if !isRevoked(t, err) {
		t.Fatal("Verify accepted a revoked token")
	}
	var e *errs.Error
	if _, err := v.Verify(t.Context(), forged); !errors.As(err, &e) || e.Reason != authn.ReasonTokenInvalid {
		t.Errorf("forged token: err = %v, want %s", err, authn.ReasonTokenInvalid)
	}
	other := validClaims(fi, "acme")
	other.ID = "jti-2"
	if _, err := v.Verify(t.Context(), mint(t, key, "at+jwt", other)); err != nil {
		t.Errorf("another token of the same client refused: %v", err)
	}
}
