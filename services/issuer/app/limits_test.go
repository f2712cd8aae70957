package app_test

import (
	"net/http"
	"net/url"
	"strconv"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentid/agentid/pkg/testkit"

	"github.com/agentid/agentid/services/issuer/app"
)

// labeledCounter sums the counters of family name whose label has value.
func labeledCounter(t testing.TB, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					sum += m.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}

// wantSlowDown checks a 429 slow_down answer with a Retry-After of whole seconds.
func wantSlowDown(t testing.TB, resp oauthResponse) int {
	t.Helper()
	wantOAuthError(t, resp, http.StatusTooManyRequests, "slow_down")
	secs, err := strconv.Atoi(resp.header.Get("Retry-After"))
	if err != nil || secs < 1 {
		t.Fatalf("Retry-After = %q, want whole seconds >= 1", resp.header.Get("Retry-After"))
	}
	return secs
}

func TestBurstGets429(t *testing.T) {
	// One request every 5 s after a burst of 3: slow enough that the steps below see no refill.
	r := launchReplicaWith(t, testkit.StartNATS(t), "", func(cfg *app.Config) {
		cfg.RateLimits = app.RateLimits{PerIP: 0.2, PerIPBurst: 3}
	})
	r.waitReady(t)
	c := newTestClient(t, "acme", "agent-a")
	c.register(t, r, "orders.read")

	// The burst is served, then the same address is refused, whichever endpoint it calls.
	var token string
	served := 0
	testkit.Eventually(t, 0, "a 429 once the burst is spent", func() (bool, error) {
		resp := postForm(t, r.tokenURL("acme"), tokenForm(c.assertion(t, r)))
		if resp.status == http.StatusOK {
			served++
			token = resp.str("access_token")
			return false, nil
		}
		if secs := wantSlowDown(t, resp); secs > 5 {
			t.Fatalf("Retry-After %d at one request per 5 s, want at most 5", secs)
		}
		return true, nil
	})
	if served < 3 {
		t.Fatalf("%d requests served before the first 429, want at least the burst (3)", served)
	}
	wantSlowDown(t, introspect(t, r, c, "acme", token))
	wantSlowDown(t, postForm(t, r.srv.URL+"/t/acme/oauth2/revoke", url.Values{"token": {token}}))
	if got := labeledCounter(t, r.reg, "issuer_http_rate_limited_total", "limit", "ip"); got < 3 {
		t.Fatalf("issuer_http_rate_limited_total{limit=ip} = %v, want at least 3", got)
	}
	// Discovery and keys are not limited: a verifier must always be able to fetch them.
	if resp, err := http.Get(r.srv.URL + "/t/acme/jwks.json"); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("JWKS while over the limit: %v %v", resp, err)
	} else {
		_ = resp.Body.Close()
	}
	// Once the window has passed the same address gets tokens again.
	testkit.Eventually(t, 0, "a token after the window", func() (bool, error) {
		resp := postForm(t, r.tokenURL("acme"), tokenForm(c.assertion(t, r)))
		switch resp.status {
		case http.StatusOK:
			return resp.str("access_token") != "", nil
		case http.StatusTooManyRequests:
			return false, nil
		default:
			t.Fatalf("while waiting for the window: %d %v", resp.status, resp.body)
			return false, nil
		}
	})
}

func TestRateLimitPerClient(t *testing.T) {
	// A rate so low that the test never sees a refill: exactly the burst passes.
	r := launchReplicaWith(t, testkit.StartNATS(t), "", func(cfg *app.Config) {
		cfg.RateLimits = app.RateLimits{PerClient: 0.001, PerClientBurst: 2}
	})
	r.waitReady(t)
	a := newTestClient(t, "acme", "agent-a")
	a.register(t, r, "orders.read")
	b := newTestClient(t, "acme", "agent-b")
	b.register(t, r, "orders.read")

	requestToken(t, r, a)
	requestToken(t, r, a)
	wantSlowDown(t, postForm(t, r.tokenURL("acme"), tokenForm(a.assertion(t, r))))
	// The limit is checked before the signature: a forged assertion naming a spent client costs no
	// verification and gets the same answer.
	forged := newTestClient(t, "acme", "agent-a") // same client id, a key the issuer does not know
	wantSlowDown(t, postForm(t, r.tokenURL("acme"), tokenForm(forged.assertion(t, r))))
	// Other clients of the same address are not affected.
	requestToken(t, r, b)
	// Unknown client ids are limited the same way (no hint whether a client exists).
	ghost := newTestClient(t, "acme", "ghost")
	for range 2 {
		wantOAuthError(t, postForm(t, r.tokenURL("acme"), tokenForm(ghost.assertion(t, r))), http.StatusUnauthorized, "invalid_client")
	}
	wantSlowDown(t, postForm(t, r.tokenURL("acme"), tokenForm(ghost.assertion(t, r))))
	// Client authentication at introspection counts against the same client's budget.
	wantSlowDown(t, introspect(t, r, a, "acme", "x"))

	if got := labeledCounter(t, r.reg, "issuer_http_rate_limited_total", "limit", "client"); got != 4 {
		t.Fatalf("issuer_http_rate_limited_total{limit=client} = %v, want 4", got)
	}
	if got := labeledCounter(t, r.reg, "issuer_token_requests_total", "error", "slow_down"); got != 3 {
		t.Fatalf("issuer_token_requests_total{error=slow_down} = %v, want 3 (the token requests refused)", got)
	}
}
