package authn_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
)

func TestJWKSVerifierUnknownTenantNoFetch(t *testing.T) {
	fi := newFakeIssuer(t)
	k := newES256(t, "k1")
	fi.publish("acme", k)
	fi.publish("ghost", k) // the issuer would serve it: the verifier must not ask
	tests := []struct {
		name string
		cfg  func(*authn.JWKSVerifierConfig)
	}{
		{name: "KnownTenant hook", cfg: func(c *authn.JWKSVerifierConfig) {
			c.KnownTenant = func(tenant string) bool { return tenant == "acme" }
		}},
		{name: "Tenants list", cfg: func(c *authn.JWKSVerifierConfig) { c.Tenants = []string{"acme"} }},
		{name: "hook and list", cfg: func(c *authn.JWKSVerifierConfig) {
			c.Tenants = []string{"other"}
			c.KnownTenant = func(tenant string) bool { return tenant == "acme" }
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := fi.fetchCount("ghost")
			cfg := authn.JWKSVerifierConfig{IssuerBaseURL: fi.srv.URL, HTTPClient: fi.srv.Client(), Now: (&clock{now: baseTime}).Now}
			tt.cfg(&cfg)
			v, err := authn.NewJWKSVerifier(cfg)
			if err != nil {
				t.Fatal(err)
			}
			for range 3 {
				_, err := v.Verify(context.Background(), mint(t, k, "at+jwt", validClaims(fi, "ghost")))
				if e := errs.FromStatus(err); e.Reason != authn.ReasonTokenIssuer {
					t.Fatalf("token of an unknown tenant: %v, want %s", err, authn.ReasonTokenIssuer)
				}
			}
			if got := fi.fetchCount("ghost") - before; got != 0 {
				t.Fatalf("fetched the unknown tenant's JWKS %d times, want 0", got)
			}
			if _, err := v.Verify(context.Background(), mint(t, k, "at+jwt", validClaims(fi, "acme"))); err != nil {
				t.Fatalf("token of a known tenant: %v", err)
			}
		})
	}
	if _, err := authn.NewJWKSVerifier(authn.JWKSVerifierConfig{IssuerBaseURL: fi.srv.URL, Tenants: []string{"Not A Tenant"}}); err == nil {
		t.Fatal("an invalid tenant id in Tenants was accepted")
	}
}

// TestJWKSVerifierDiscoveryIsBounded: without a tenant list, tokens naming made-up tenants make at
// most MaxDiscoveries fetches per MinRefreshInterval.
func TestJWKSVerifierDiscoveryIsBounded(t *testing.T) {
	fi := newFakeIssuer(t)
	clk := &clock{now: baseTime}
	v, err := authn.NewJWKSVerifier(authn.JWKSVerifierConfig{IssuerBaseURL: fi.srv.URL, HTTPClient: fi.srv.Client(),
		MinRefreshInterval: 10 * time.Second, MaxDiscoveries: 4, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	k := newES256(t, "k1")
	fetches := func() int {
		n := 0
		for i := range 20 {
			n += fi.fetchCount(fmt.Sprintf("ghost%d", i))
		}
		return n
	}
	unavailable := 0
	for i := range 20 {
		_, err := v.Verify(context.Background(), mint(t, k, "at+jwt", validClaims(fi, fmt.Sprintf("ghost%d", i))))
		if errs.Is(err, errs.KindUnavailable) {
			unavailable++
		}
	}
	if got := fetches(); got != 4 || unavailable != 16 {
		t.Fatalf("%d fetches and %d unavailable answers, want 4 and 16", got, unavailable)
	}
	clk.Advance(10 * time.Second)
	if _, err := v.Verify(context.Background(), mint(t, k, "at+jwt", validClaims(fi, "ghost19"))); errs.Is(err, errs.KindUnavailable) {
		t.Fatalf("next window: %v, want the fetch to go out", err)
	}
	if got := fetches(); got != 5 {
		t.Fatalf("fetches in the next window = %d, want 5", got)
	}
}

func TestJWKSVerifierKeepsTenantInUse(t *testing.T) {
	t.Run("confirmed tenant outlives made-up ones", func(t *testing.T) {
		fi := newFakeIssuer(t)
		k := newES256(t, "k1")
		fi.publish("acme", k)
		clk := &clock{now: baseTime}
		v, err := authn.NewJWKSVerifier(authn.JWKSVerifierConfig{IssuerBaseURL: fi.srv.URL, HTTPClient: fi.srv.Client(),
			MaxIssuers: 2, MaxDiscoveries: 100, Now: clk.Now})
		if err != nil {
			t.Fatal(err)
		}
		acme := mint(t, k, "at+jwt", validClaims(fi, "acme"))
		if _, err := v.Verify(context.Background(), acme); err != nil {
			t.Fatal(err)
		}
		// acme is now the least recently used set; unconfirmed tenants are evicted before it.
		for i := range 10 {
			clk.Advance(time.Millisecond)
			_, err := v.Verify(context.Background(), mint(t, k, "at+jwt", validClaims(fi, fmt.Sprintf("ghost%d", i))))
			if e := errs.FromStatus(err); e.Reason != authn.ReasonTokenIssuer {
				t.Fatalf("made-up tenant: %v, want %s", err, authn.ReasonTokenIssuer)
			}
		}
		if _, err := v.Verify(context.Background(), acme); err != nil {
			t.Fatal(err)
		}
		if got := fi.fetchCount("acme"); got != 1 {
			t.Fatalf("acme's JWKS fetched %d times, want 1: its key set was evicted", got)
		}
	})

	t.Run("a set in use is never evicted", func(t *testing.T) {
		slowKey, fastKey := newES256(t, "slow-1"), newES256(t, "fast-1")
		started, release := make(chan struct{}), make(chan struct{})
		var slowFetches, fastFetches atomic.Int32
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			var key signingKey
			switch r.URL.Path {
			case "/t/slow/jwks.json":
				if slowFetches.Add(1) == 1 {
					close(started)
					<-release
				}
				key = slowKey
			case "/t/fast/jwks.json":
				fastFetches.Add(1)
				key = fastKey
			default:
				http.NotFound(w, r)
				return
			}
			_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{key.public()}})
		}))
		t.Cleanup(srv.Close)
		fi := &fakeIssuer{srv: srv}
		v, err := authn.NewJWKSVerifier(authn.JWKSVerifierConfig{IssuerBaseURL: srv.URL, HTTPClient: srv.Client(),
			MaxIssuers: 1, Now: (&clock{now: baseTime}).Now})
		if err != nil {
			t.Fatal(err)
		}
		slowTok := mint(t, slowKey, "at+jwt", validClaims(fi, "slow"))
		done := make(chan error, 1)
		go func() {
			_, err := v.Verify(context.Background(), slowTok)
			done <- err
		}()
		<-started // slow's key set is in use: its fetch is under way
		_, err = v.Verify(context.Background(), mint(t, fastKey, "at+jwt", validClaims(fi, "fast")))
		if !errs.Is(err, errs.KindUnavailable) {
			t.Fatalf("another tenant while the only set is in use: %v, want Unavailable", err)
		}
		if fastFetches.Load() != 0 {
			t.Fatal("fetched another tenant's keys by evicting a set in use")
		}
		close(release)
		if err := <-done; err != nil {
			t.Fatalf("verification in flight: %v", err)
		}
		if _, err := v.Verify(context.Background(), slowTok); err != nil {
			t.Fatal(err)
		}
		if got := slowFetches.Load(); got != 1 {
			t.Fatalf("slow's JWKS fetched %d times, want 1", got)
		}
		// Once no longer in use, the set may be evicted (least recently used) for another tenant.
		if _, err := v.Verify(context.Background(), mint(t, fastKey, "at+jwt", validClaims(fi, "fast"))); err != nil {
			t.Fatalf("another tenant once the set is free: %v", err)
		}
	})
}
