package authn_test

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
)

// shapedToken is what the introspecting verifier sends to the issuer: a compact JWS typed at+jwt
// of issuer iss (its signature is the issuer's to check, not the verifier's).
func shapedToken(iss, name string) string {
	b := func(v string) string { return base64.RawURLEncoding.EncodeToString([]byte(v)) }
	return b(`{"alg":"ES256","typ":"at+jwt","kid":"k1"}`) + "." + b(`{"iss":"`+iss+`","jti":"`+name+`"}`) + "." + b("sig-"+name)
}

// fakeIntrospection answers RFC 7662 requests authenticated with the resource server's assertion.
type fakeIntrospection struct {
	srv    *httptest.Server
	calls  atomic.Int64
	answer atomic.Value // map[string]any
}

func newFakeIntrospection(t *testing.T, cred *authn.Credential) *fakeIntrospection {
	t.Helper()
	jwks, err := cred.PublicJWKS()
	if err != nil {
		t.Fatal(err)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(jwks, &set); err != nil {
		t.Fatal(err)
	}
	fi := &fakeIntrospection{}
	fi.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fi.calls.Add(1)
		if r.Method != http.MethodPost || r.FormValue("client_assertion_type") != authn.ClientAssertionType || r.FormValue("token") == "" {
			http.Error(w, `{"error":"invalid_request"}`, http.StatusBadRequest)
			return
		}
		tok, err := jwt.ParseSigned(r.FormValue("client_assertion"), []jose.SignatureAlgorithm{jose.ES256})
		var claims jwt.Claims
		if err != nil || tok.Claims(set.Keys[0].Key, &claims) != nil || claims.Subject != cred.ClientID {
			http.Error(w, `{"error":"invalid_client"}`, http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(fi.answer.Load())
	}))
	t.Cleanup(fi.srv.Close)
	return fi
}

func TestIntrospectionVerifier(t *testing.T) {
	cred, err := authn.NewCredential("acme", "files-rs", "http://issuer.example/t/acme")
	if err != nil {
		t.Fatal(err)
	}
	fi := newFakeIntrospection(t, cred)
	clk := &clock{now: baseTime}
	active := map[string]any{
		"active": true, "sub": "agent-client", "client_id": "agent-client", "scope": "files.read",
		"aud": rsAudience, "iss": "http://issuer.example/t/acme", "tenant": "acme", "jti": "j1",
		"exp": baseTime.Add(5 * time.Minute).Unix(), "iat": baseTime.Unix(), "agent": "tenants/acme/agents/a1",
	}
	with := func(k string, v any) map[string]any {
		m := map[string]any{}
		for kk, vv := range active {
			m[kk] = vv
		}
		m[k] = v
		return m
	}
	newV := func(ttl time.Duration, endpoint string) *authn.IntrospectionVerifier {
		v, err := authn.NewIntrospectionVerifier(authn.IntrospectionVerifierConfig{
			Credential: cred, Endpoint: endpoint, Audience: rsAudience, CacheTTL: ttl, Now: clk.Now,
		})
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	tests := []struct {
		name       string
		answer     map[string]any
		wantKind   errs.Kind
		wantReason string
	}{
		{"active", active, 0, ""},
		{"inactive", map[string]any{"active": false}, errs.KindUnauthenticated, authn.ReasonTokenInactive},
		{"wrong audience", with("aud", "https://other.example"), errs.KindUnauthenticated, authn.ReasonTokenAudience},
		{"other tenant", with("tenant", "globex"), errs.KindUnauthenticated, authn.ReasonTokenTenant},
		{"expired", with("exp", baseTime.Add(-time.Hour).Unix()), errs.KindUnauthenticated, authn.ReasonTokenExpired},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fi.answer.Store(tc.answer)
			c, err := newV(0, fi.srv.URL).Verify(t.Context(), shapedToken(cred.Issuer, tc.name))
			if tc.wantReason == "" {
				if err != nil || c.Subject != "agent-client" || c.Agent != "tenants/acme/agents/a1" || !c.Expiry.Equal(baseTime.Add(5*time.Minute)) {
					t.Fatalf("Verify = %+v, %v; want the active token's claims", c, err)
				}
				return
			}
			e := errs.FromStatus(err)
			if err == nil || e.Kind != tc.wantKind || e.Reason != tc.wantReason {
				t.Fatalf("Verify error %v, want %v %s", err, tc.wantKind, tc.wantReason)
			}
		})
	}

	t.Run("issuer down fails closed", func(t *testing.T) {
		down := httptest.NewServer(http.NotFoundHandler())
		down.Close()
		failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "storage unavailable", http.StatusServiceUnavailable)
		}))
		defer failing.Close()
		for _, endpoint := range []string{down.URL, failing.URL} {
			_, err := newV(0, endpoint).Verify(t.Context(), shapedToken(cred.Issuer, "tok"))
			if e := errs.FromStatus(err); err == nil || e.Kind != errs.KindUnavailable || e.Reason != authn.ReasonIntrospectionUnavailable {
				t.Errorf("endpoint %s: error %v, want Unavailable %s", endpoint, err, authn.ReasonIntrospectionUnavailable)
			}
		}
	})

	t.Run("positive answers are cached up to the TTL", func(t *testing.T) {
		fi.answer.Store(active)
		v := newV(10*time.Second, fi.srv.URL)
		before := fi.calls.Load()
		for range 3 {
			if _, err := v.Verify(t.Context(), shapedToken(cred.Issuer, "cached-token")); err != nil {
				t.Fatal(err)
			}
		}
		if n := fi.calls.Load() - before; n != 1 {
			t.Errorf("%d introspection calls for 3 verifications within the TTL, want 1", n)
		}
		clk.Advance(11 * time.Second)
		fi.answer.Store(map[string]any{"active": false})
		if _, err := v.Verify(t.Context(), shapedToken(cred.Issuer, "cached-token")); errs.FromStatus(err).Reason != authn.ReasonTokenInactive {
			t.Errorf("after the TTL: %v, want the issuer asked again (inactive)", err)
		}
	})

	t.Run("TTL above the maximum is refused", func(t *testing.T) {
		if _, err := authn.NewIntrospectionVerifier(authn.IntrospectionVerifierConfig{
			Credential: cred, Audience: rsAudience, CacheTTL: time.Minute,
		}); err == nil {
			t.Error("a one-minute cache was accepted")
		}
	})
}

func TestIntrospectionVerifierDPoPBoundToken(t *testing.T) {
	cred, err := authn.NewCredential("acme", "files-rs", "http://issuer.example/t/acme")
	if err != nil {
		t.Fatal(err)
	}
	fi := newFakeIntrospection(t, cred)
	clk := &clock{now: baseTime}
	prover, _ := newDPoPProver(t)
	answer := func(tokenType string, cnf any) map[string]any {
		m := map[string]any{
			"active": true, "sub": "agent-client", "client_id": "agent-client", "scope": "files.read",
			"aud": rsAudience, "iss": "http://issuer.example/t/acme", "tenant": "acme", "jti": "j1",
			"exp": baseTime.Add(5 * time.Minute).Unix(), "iat": baseTime.Unix(), "token_type": tokenType,
		}
		if cnf != nil {
			m["cnf"] = cnf
		}
		return m
	}
	v, err := authn.NewIntrospectionVerifier(authn.IntrospectionVerifierConfig{
		Credential: cred, Endpoint: fi.srv.URL, Audience: rsAudience, CacheTTL: 10 * time.Second, Now: clk.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	sink := &eventSink{}
	mux := http.NewServeMux()
	mux.Handle("GET /files/{name}", authn.RequireScopes("files.read")(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok"))
	})))
	srv := httptest.NewServer(authn.Middleware(v, authn.WithAccessRecorder(sink), authn.WithServerClock(clk.Now))(mux))
	t.Cleanup(srv.Close)
	get := func(t *testing.T, auth, proof, requestID string) int {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, srv.URL+"/files/a", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", auth)
		req.Header.Set("X-Request-Id", requestID)
		if proof != "" {
			req.Header.Set("DPoP", proof)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		return resp.StatusCode
	}

	fi.answer.Store(answer("DPoP", map[string]any{"jkt": prover.JKT()}))
	tok := shapedToken(cred.Issuer, "dpop-token")
	c, err := v.Verify(t.Context(), tok)
	if err != nil || c.Confirmation == nil || c.Confirmation.JKT != prover.JKT() {
		t.Fatalf("Verify = %+v, %v; want the token bound to jkt %s", c, err, prover.JKT())
	}
	c.Confirmation.JKT = "changed" // the cached answer is not the caller's to change
	if again, err := v.Verify(t.Context(), tok); err != nil || again.Confirmation.JKT != prover.JKT() {
		t.Fatalf("cached answer changed by a caller: %+v, %v", again, err)
	}

	if st := get(t, "Bearer "+tok, "", "as-bearer"); st != http.StatusUnauthorized {
		t.Fatalf("DPoP-bound token as a bearer token: status %d, want 401", st)
	}
	if ev := sink.waitFor(t, "as-bearer"); ev.Allowed || ev.Reason != authn.ReasonDPoPBoundAsBearer {
		t.Fatalf("event allowed=%v reason %q, want refused with %s", ev.Allowed, ev.Reason, authn.ReasonDPoPBoundAsBearer)
	}
	proof := mkProof(t, prover, http.MethodGet, srv.URL+"/files/a", tok, "", baseTime)
	if st := get(t, "DPoP "+tok, proof, "with-proof"); st != http.StatusOK {
		t.Fatalf("DPoP-bound token with its proof: status %d, want 200", st)
	}
	if ev := sink.waitFor(t, "with-proof"); !ev.Allowed || ev.Binding != authn.BindingDPoP {
		t.Fatalf("event allowed=%v binding %q, want allowed and dpop", ev.Allowed, ev.Binding)
	}
	other, _ := newDPoPProver(t)
	if st := get(t, "DPoP "+tok, mkProof(t, other, http.MethodGet, srv.URL+"/files/a", tok, "", baseTime), "other-key"); st != http.StatusUnauthorized {
		t.Fatalf("proof by another key: status %d, want 401", st)
	}

	fi.answer.Store(answer("DPoP", nil))
	if _, err := v.Verify(t.Context(), shapedToken(cred.Issuer, "dpop-without-cnf")); errs.FromStatus(err).Reason != authn.ReasonTokenInvalid {
		t.Fatalf("token_type DPoP without cnf: %v, want %s", err, authn.ReasonTokenInvalid)
	}
}

// TestIntrospectionVerifierAsksOnlyAboutItsIssuersTokens: what cannot be an access token of the
// credential's issuer is refused without a call; an inactive answer is reused for
// IntrospectionInactiveTTL, even with the positive cache off.
func TestIntrospectionVerifierAsksOnlyAboutItsIssuersTokens(t *testing.T) {
	cred, err := authn.NewCredential("acme", "files-rs", "http://issuer.example/t/acme")
	if err != nil {
		t.Fatal(err)
	}
	fi := newFakeIntrospection(t, cred)
	fi.answer.Store(map[string]any{"active": false})
	clk := &clock{now: baseTime}
	v, err := authn.NewIntrospectionVerifier(authn.IntrospectionVerifierConfig{
		Credential: cred, Endpoint: fi.srv.URL, Audience: rsAudience, Now: clk.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	b := func(v string) string { return base64.RawURLEncoding.EncodeToString([]byte(v)) }
	tests := []struct {
		name, raw, wantReason string
	}{
		{"garbage", "hello", authn.ReasonTokenInvalid},
		{"two parts", b(`{"typ":"at+jwt"}`) + "." + b(`{"iss":"http://issuer.example/t/acme"}`), authn.ReasonTokenInvalid},
		{"empty signature", b(`{"typ":"at+jwt"}`) + "." + b(`{"iss":"http://issuer.example/t/acme"}`) + ".", authn.ReasonTokenInvalid},
		{"header not base64url", "%%%." + b(`{"iss":"http://issuer.example/t/acme"}`) + ".c2ln", authn.ReasonTokenInvalid},
		{"no typ", b(`{"alg":"ES256"}`) + "." + b(`{"iss":"http://issuer.example/t/acme"}`) + ".c2ln", authn.ReasonTokenInvalid},
		{"a DPoP proof", b(`{"typ":"dpop+jwt"}`) + "." + b(`{"iss":"http://issuer.example/t/acme"}`) + ".c2ln", authn.ReasonTokenInvalid},
		{"payload not JSON", b(`{"typ":"at+jwt"}`) + "." + b(`nope`) + ".c2ln", authn.ReasonTokenInvalid},
		{"another tenant's issuer", shapedToken("http://issuer.example/t/globex", "x"), authn.ReasonTokenTenant},
		{"another issuer", shapedToken("https://evil.example/t/acme", "x"), authn.ReasonTokenTenant},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := fi.calls.Load()
			_, err := v.Verify(t.Context(), tc.raw)
			if e := errs.FromStatus(err); err == nil || e.Kind != errs.KindUnauthenticated || e.Reason != tc.wantReason {
				t.Fatalf("Verify error %v, want Unauthenticated %s", err, tc.wantReason)
			}
			if n := fi.calls.Load() - before; n != 0 {
				t.Errorf("%d calls to the issuer, want none", n)
			}
		})
	}

	t.Run("inactive answers are reused for a few seconds", func(t *testing.T) {
		tok := shapedToken(cred.Issuer, "revoked")
		before := fi.calls.Load()
		for range 5 {
			if _, err := v.Verify(t.Context(), tok); errs.FromStatus(err).Reason != authn.ReasonTokenInactive {
				t.Fatalf("Verify: %v, want %s", err, authn.ReasonTokenInactive)
			}
		}
		if n := fi.calls.Load() - before; n != 1 {
			t.Errorf("%d calls for one inactive token presented 5 times, want 1", n)
		}
		clk.Advance(authn.IntrospectionInactiveTTL)
		fi.answer.Store(map[string]any{
			"active": true, "sub": "agent-client", "client_id": "agent-client", "scope": "files.read",
			"aud": rsAudience, "iss": cred.Issuer, "tenant": "acme", "jti": "j1",
			"exp": baseTime.Add(5 * time.Minute).Unix(), "iat": baseTime.Unix(),
		})
		if _, err := v.Verify(t.Context(), tok); err != nil {
			t.Fatalf("after IntrospectionInactiveTTL the issuer is asked again: %v", err)
		}
		if n := fi.calls.Load() - before; n != 2 {
			t.Errorf("%d calls, want 2", n)
		}
	})
}
