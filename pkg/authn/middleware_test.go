package authn_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/testkit"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
)

const rsAudience = "https://files.example"

// eventSink is a test AccessRecorder.
type eventSink struct {
	mu     sync.Mutex
	events []authn.AccessEvent
}

func (s *eventSink) Record(ev authn.AccessEvent) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.events = append(s.events, ev)
}

// waitFor returns the event of the request with the given X-Request-Id.
func (s *eventSink) waitFor(t *testing.T, requestID string) authn.AccessEvent {
	t.Helper()
	var found authn.AccessEvent
	testkit.Eventually(t, 0, "access event of "+requestID, func() (bool, error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, ev := range s.events {
			if ev.RequestID == requestID {
				found = ev
				return true, nil
			}
		}
		return false, nil
	})
	return found
}

// resourceServer is an HTTP resource server built with the SDK against a fake issuer.
type resourceServer struct {
	fi     *fakeIssuer
	key    signingKey
	other  signingKey
	clk    *clock
	deny   *authn.Denylist
	sink   *eventSink
	srv    *httptest.Server
	client *http.Client
}

func newResourceServer(t *testing.T, useTLS bool) *resourceServer {
	t.Helper()
	return newResourceServerWith(t, useTLS)
}

// newResourceServerWith is newResourceServer with more middleware options.
func newResourceServerWith(t *testing.T, useTLS bool, opts ...authn.ServerOption) *resourceServer {
	t.Helper()
	rs := &resourceServer{fi: newFakeIssuer(t), key: newES256(t, "acme-1"), other: newES256(t, "globex-1"),
		clk: &clock{now: baseTime}, sink: &eventSink{}}
	rs.fi.publish("acme", rs.key)
	rs.fi.publish("globex", rs.other)
	rs.deny = authn.NewDenylist(authn.DenylistConfig{Now: rs.clk.Now})
	v, err := authn.NewJWKSVerifier(authn.JWKSVerifierConfig{
		IssuerBaseURL: rs.fi.srv.URL, Audience: rsAudience, HTTPClient: rs.fi.srv.Client(),
		Now: rs.clk.Now, Revocations: rs.deny,
	})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /files/{name}", authn.RequireScopes("files.read")(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, _ := authn.PrincipalFrom(r.Context())
		authn.Report(r.Context()).AddRows(1)
		_, _ = io.WriteString(w, "file "+r.PathValue("name")+" for "+p.ID)
	})))
	mux.Handle("PUT /files/{name}", authn.RequireScopes("files.write")(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	})))
	opts = append([]authn.ServerOption{authn.WithAllowedTenants("acme"), authn.WithAccessRecorder(rs.sink),
		authn.WithServerClock(rs.clk.Now), authn.WithRealm("files"), authn.WithReportedAudience(rsAudience)}, opts...)
	h := authn.Middleware(v, opts...)(mux)
	if useTLS {
		rs.srv = httptest.NewUnstartedServer(h)
		rs.srv.TLS = &tls.Config{ClientAuth: tls.RequestClientCert}
		rs.srv.StartTLS()
	} else {
		rs.srv = httptest.NewServer(h)
	}
	t.Cleanup(rs.srv.Close)
	rs.client = rs.srv.Client()
	return rs
}

func (rs *resourceServer) claims(mut func(*authn.Claims)) authn.Claims {
	c := validClaims(rs.fi, "acme")
	c.Audience = []string{rsAudience}
	c.Scope = "files.read"
	c.Subject, c.ClientID, c.Agent, c.Environment = "agent-client", "agent-client", "tenants/acme/agents/a1", "prod"
	c.Roles = nil
	if mut != nil {
		mut(&c)
	}
	return c
}

func (rs *resourceServer) token(t *testing.T, mut func(*authn.Claims)) string {
	t.Helper()
	return mint(t, rs.key, "at+jwt", rs.claims(mut))
}

type call struct {
	method, path string
	auth         []string
	dpop         string
}

func (rs *resourceServer) do(t *testing.T, c call, requestID string) (*http.Response, string) {
	t.Helper()
	return rs.doWith(t, rs.client, c, requestID)
}

func (rs *resourceServer) doWith(t *testing.T, client *http.Client, c call, requestID string) (*http.Response, string) {
	t.Helper()
	if c.method == "" {
		c.method = http.MethodGet
	}
	req, err := http.NewRequest(c.method, rs.srv.URL+c.path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range c.auth {
		req.Header.Add("Authorization", a)
	}
	if c.dpop != "" {
		req.Header.Set("DPoP", c.dpop)
	}
	req.Header.Set("X-Request-Id", requestID)
	req.Header.Set("Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

func TestMiddlewareAllowsAndReports(t *testing.T) {
	rs := newResourceServer(t, false)
	tok := rs.token(t, nil)
	resp, body := rs.do(t, call{path: "/files/report.txt", auth: []string{"Bearer " + tok}}, "req-ok")
	if resp.StatusCode != http.StatusOK || body != "file report.txt for agent-client" {
		t.Fatalf("status %d body %q, want 200 with the file", resp.StatusCode, body)
	}
	ev := rs.sink.waitFor(t, "req-ok")
	want := authn.AccessEvent{
		Tenant: "acme", Agent: "tenants/acme/agents/a1", ClientID: "agent-client", Subject: "agent-client",
		Environment: "prod", Resource: "/files/report.txt", Action: "GET", Allowed: true, Status: 200,
		ResponseBytes: int64(len(body)), Rows: 1, RequestID: "req-ok", TraceID: "4bf92f3577b34da6a3ce929d0e0e4736",
		SourceAddress: "127.0.0.1", TokenID: "jti-1", Audience: rsAudience, Binding: authn.BindingBearer,
	}
	if ev.Time.IsZero() || len(ev.Scopes) != 1 || ev.Scopes[0] != "files.read" {
		t.Errorf("event time %v scopes %v, want the request time and [files.read]", ev.Time, ev.Scopes)
	}
	ev.Time, ev.Scopes, ev.Latency = time.Time{}, nil, 0
	if ev.OnBehalfOf != "" || ev.Reason != "" {
		t.Errorf("event on_behalf_of %q reason %q, want both empty", ev.OnBehalfOf, ev.Reason)
	}
	if !equalEvent(ev, want) {
		t.Errorf("event\n got %+v\nwant %+v", ev, want)
	}
}

func equalEvent(a, b authn.AccessEvent) bool {
	a.Scopes, b.Scopes = nil, nil
	return a.Time.Equal(b.Time) && a.Tenant == b.Tenant && a.Agent == b.Agent && a.ClientID == b.ClientID &&
		a.Subject == b.Subject && a.OnBehalfOf == b.OnBehalfOf && a.Environment == b.Environment &&
		a.Resource == b.Resource && a.Action == b.Action && a.Allowed == b.Allowed && a.Reason == b.Reason &&
		a.Status == b.Status && a.ResponseBytes == b.ResponseBytes && a.Rows == b.Rows &&
		a.RequestID == b.RequestID && a.TraceID == b.TraceID && a.SourceAddress == b.SourceAddress &&
		a.TokenID == b.TokenID && a.Audience == b.Audience && a.Binding == b.Binding
}

func TestMiddlewareDelegatedTokenReportsTheUser(t *testing.T) {
	rs := newResourceServer(t, false)
	tok := rs.token(t, func(c *authn.Claims) {
		c.Subject = "alice@example.com"
		c.Act = map[string]any{"sub": "agent-client"}
	})
	resp, body := rs.do(t, call{path: "/files/a", auth: []string{"Bearer " + tok}}, "req-obo")
	if resp.StatusCode != http.StatusOK || !strings.HasSuffix(body, "for agent-client") {
		t.Fatalf("status %d body %q, want 200 served to the acting agent", resp.StatusCode, body)
	}
	if ev := rs.sink.waitFor(t, "req-obo"); ev.OnBehalfOf != "alice@example.com" || ev.Subject != "alice@example.com" {
		t.Errorf("on_behalf_of %q subject %q, want the user alice@example.com", ev.OnBehalfOf, ev.Subject)
	}
}

func TestMiddlewareRefusals(t *testing.T) {
	rs := newResourceServer(t, false)
	prover, _ := newDPoPProver(t)
	otherProver, _ := newDPoPProver(t)
	valid := rs.token(t, nil)
	revoked := rs.token(t, func(c *authn.Claims) { c.ID = "jti-revoked" })
	if err := rs.deny.Apply(&issuerv1.TokensRevoked{
		Target: issuerv1.RevocationTarget_REVOCATION_TARGET_TOKEN, Tenant: "acme", TokenId: "jti-revoked",
		ExpireTime: timestamppb.New(baseTime.Add(time.Hour)),
	}, 1); err != nil {
		t.Fatal(err)
	}
	bound := rs.token(t, func(c *authn.Claims) { c.Confirmation = &authn.Confirmation{JKT: prover.JKT()} })
	url := rs.srv.URL + "/files/a"
	now := baseTime
	proof := func(p *authn.DPoPProver, method, u, tok string) string { return mkProof(t, p, method, u, tok, "", now) }
	reused := proof(prover, "GET", url, bound)
	if resp, _ := rs.do(t, call{path: "/files/a", auth: []string{"DPoP " + bound}, dpop: reused}, "req-first-use"); resp.StatusCode != http.StatusOK {
		t.Fatalf("first use of a DPoP proof: status %d, want 200", resp.StatusCode)
	}

	tests := []struct {
		name       string
		call       call
		wantStatus int
		wantScheme string // scheme of the (first) challenge
		wantError  string // error parameter of the challenge, "" for none
		wantReason string
	}{
		{"no token", call{path: "/files/a"}, 401, "Bearer", "", authn.ReasonTokenMissing},
		{"bad scheme", call{path: "/files/a", auth: []string{"Basic dXNlcjpwYXNz"}}, 401, "Bearer", "", authn.ReasonTokenScheme},
		{"two authorization headers", call{path: "/files/a", auth: []string{"Bearer " + valid, "Bearer " + valid}}, 400, "Bearer", "invalid_request", authn.ReasonTokenScheme},
		{"token in query", call{path: "/files/a?access_token=" + valid, auth: []string{"Bearer " + valid}}, 400, "Bearer", "invalid_request", authn.ReasonTokenInQuery},
		{"malformed token", call{path: "/files/a", auth: []string{"Bearer not.a.jwt"}}, 401, "Bearer", "invalid_token", authn.ReasonTokenInvalid},
		{"wrong audience", call{path: "/files/a", auth: []string{"Bearer " + rs.token(t, func(c *authn.Claims) { c.Audience = []string{"https://other.example"} })}}, 401, "Bearer", "invalid_token", authn.ReasonTokenAudience},
		{"expired", call{path: "/files/a", auth: []string{"Bearer " + rs.token(t, func(c *authn.Claims) {
			c.IssuedAt, c.NotBefore, c.Expiry = baseTime.Add(-time.Hour), baseTime.Add(-time.Hour), baseTime.Add(-10*time.Minute)
		})}}, 401, "Bearer", "invalid_token", authn.ReasonTokenExpired},
		{"revoked", call{path: "/files/a", auth: []string{"Bearer " + revoked}}, 401, "Bearer", "invalid_token", authn.ReasonTokenRevoked},
		{"insufficient scope", call{method: "PUT", path: "/files/a", auth: []string{"Bearer " + valid}}, 403, "Bearer", "insufficient_scope", authn.ReasonInsufficientScope},
		{"wrong tenant", call{path: "/files/a", auth: []string{"Bearer " + func() string {
			c := validClaims(rs.fi, "globex")
			c.Audience, c.Scope = []string{rsAudience}, "files.read"
			return mint(t, rs.other, "at+jwt", c)
		}()}}, 401, "Bearer", "invalid_token", authn.ReasonTenantNotAllowed},
		{"DPoP-bound token as bearer", call{path: "/files/a", auth: []string{"Bearer " + bound}}, 401, "DPoP", "invalid_token", authn.ReasonDPoPBoundAsBearer},
		{"DPoP scheme with an unbound token", call{path: "/files/a", auth: []string{"DPoP " + valid}, dpop: proof(prover, "GET", url, valid)}, 401, "DPoP", "invalid_token", authn.ReasonDPoPSchemeUnbound},
		{"DPoP proof missing", call{path: "/files/a", auth: []string{"DPoP " + bound}}, 401, "DPoP", "invalid_dpop_proof", authn.ReasonDPoPMissing},
		{"DPoP key mismatch", call{path: "/files/a", auth: []string{"DPoP " + bound}, dpop: proof(otherProver, "GET", url, bound)}, 401, "DPoP", "invalid_dpop_proof", authn.ReasonDPoPKeyMismatch},
		{"DPoP wrong method", call{path: "/files/a", auth: []string{"DPoP " + bound}, dpop: proof(prover, "POST", url, bound)}, 401, "DPoP", "invalid_dpop_proof", authn.ReasonDPoPMethod},
		{"DPoP wrong URL", call{path: "/files/a", auth: []string{"DPoP " + bound}, dpop: proof(prover, "GET", rs.srv.URL+"/files/b", bound)}, 401, "DPoP", "invalid_dpop_proof", authn.ReasonDPoPURL},
		{"DPoP missing ath", call{path: "/files/a", auth: []string{"DPoP " + bound}, dpop: proof(prover, "GET", url, "")}, 401, "DPoP", "invalid_dpop_proof", authn.ReasonDPoPAccessTokenHash},
		{"DPoP stale iat", call{path: "/files/a", auth: []string{"DPoP " + bound}, dpop: mkProof(t, prover, "GET", url, bound, "", now.Add(-10*time.Minute))}, 401, "DPoP", "invalid_dpop_proof", authn.ReasonDPoPIssuedAt},
		{"DPoP proof reused", call{path: "/files/a", auth: []string{"DPoP " + bound}, dpop: reused}, 401, "DPoP", "invalid_dpop_proof", authn.ReasonDPoPReplayed},
		{"certificate-bound token without a certificate", call{path: "/files/a", auth: []string{"Bearer " + rs.token(t, func(c *authn.Claims) {
			c.Confirmation = &authn.Confirmation{X5TS256: "2cXUYpxOdPbHzMvP9c8XLCh-J1k6P8ZxSgkAsmzBm2I"}
		})}}, 401, "Bearer", "invalid_token", authn.ReasonCertificateBinding},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id := "req-" + strings.ReplaceAll(tc.name, " ", "-")
			resp, body := rs.do(t, tc.call, id)
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status %d, want %d (body %s)", resp.StatusCode, tc.wantStatus, body)
			}
			challenges := resp.Header.Values("WWW-Authenticate")
			if len(challenges) == 0 || !strings.HasPrefix(challenges[0], tc.wantScheme+" ") {
				t.Errorf("WWW-Authenticate %q, want a %s challenge first", challenges, tc.wantScheme)
			}
			hasError := strings.Contains(strings.Join(challenges, ";"), "error=")
			if tc.wantError == "" && hasError || tc.wantError != "" && !strings.Contains(challenges[0], `error="`+tc.wantError+`"`) {
				t.Errorf("WWW-Authenticate %q, want error %q", challenges, tc.wantError)
			}
			if strings.Contains(body, tc.wantReason) || strings.Contains(body, "description") {
				t.Errorf("body %q tells the caller why; it must name only the error code", body)
			}
			ev := rs.sink.waitFor(t, id)
			if ev.Allowed || ev.Reason != tc.wantReason || ev.Status != tc.wantStatus {
				t.Errorf("event allowed=%v reason %q status %d, want refused with %q and %d", ev.Allowed, ev.Reason, ev.Status, tc.wantReason, tc.wantStatus)
			}
		})
	}
}

func TestMiddlewareDPoPBoundTokenWithValidProof(t *testing.T) {
	rs := newResourceServer(t, false)
	prover, _ := newDPoPProver(t)
	bound := rs.token(t, func(c *authn.Claims) { c.Confirmation = &authn.Confirmation{JKT: prover.JKT()} })
	proof := mkProof(t, prover, "GET", rs.srv.URL+"/files/a?ignored=1", bound, "", baseTime)
	resp, body := rs.do(t, call{path: "/files/a?x=1", auth: []string{"DPoP " + bound}, dpop: proof}, "req-dpop")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d body %q, want 200", resp.StatusCode, body)
	}
	if ev := rs.sink.waitFor(t, "req-dpop"); !ev.Allowed || ev.Binding != authn.BindingDPoP {
		t.Errorf("event allowed=%v binding %q, want allowed and dpop", ev.Allowed, ev.Binding)
	}
}

func TestMiddlewareUnavailableVerifierFailsClosed(t *testing.T) {
	fi := newFakeIssuer(t)
	v, err := authn.NewJWKSVerifier(authn.JWKSVerifierConfig{IssuerBaseURL: fi.srv.URL, Audience: rsAudience})
	if err != nil {
		t.Fatal(err)
	}
	key := newES256(t, "acme-1")
	tok := mint(t, key, "at+jwt", validClaims(fi, "acme"))
	fi.srv.Close() // the issuer's JWKS cannot be fetched
	sink := &eventSink{}
	reached := false
	h := authn.Middleware(v, authn.WithAccessRecorder(sink))(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { reached = true }))
	for _, name := range []string{"JWKS-unreachable", "no-verifier"} {
		t.Run(name, func(t *testing.T) {
			hh := h
			if name == "no-verifier" {
				hh = authn.Middleware(nil, authn.WithAccessRecorder(sink))(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { reached = true }))
			}
			req := httptest.NewRequest(http.MethodGet, "http://files.example/files/a", nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			req.Header.Set("X-Request-Id", name)
			rec := httptest.NewRecorder()
			hh.ServeHTTP(rec, req)
			if rec.Code != http.StatusServiceUnavailable || reached {
				t.Fatalf("status %d reached=%v, want 503 and the handler not reached", rec.Code, reached)
			}
			if ev := sink.waitFor(t, name); ev.Allowed || ev.Status != 503 {
				t.Errorf("event allowed=%v status %d, want refused with 503", ev.Allowed, ev.Status)
			}
		})
	}
}

func TestRequireScopesWithoutMiddlewareRefuses(t *testing.T) {
	h := authn.RequireScopes("files.read")(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		t.Error("handler reached without authentication")
	}))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/files/a", nil))
	if rec.Code != http.StatusUnauthorized {
		t.Errorf("status %d, want 401", rec.Code)
	}
}

// selfSigned returns a TLS client certificate.
func selfSigned(t *testing.T, cn string) tls.Certificate {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv, Leaf: leaf}
}

func TestMiddlewareCertificateBinding(t *testing.T) {
	rs := newResourceServer(t, true)
	mine, theirs := selfSigned(t, "agent"), selfSigned(t, "someone-else")
	tok := rs.token(t, func(c *authn.Claims) {
		c.Confirmation = &authn.Confirmation{X5TS256: authn.CertificateThumbprint(mine.Leaf)}
	})
	clientWith := func(cert tls.Certificate) *http.Client {
		tr := rs.srv.Client().Transport.(*http.Transport).Clone()
		tr.TLSClientConfig.Certificates = []tls.Certificate{cert}
		return &http.Client{Transport: tr}
	}
	tests := []struct {
		name       string
		client     *http.Client
		wantStatus int
		wantReason string
	}{
		{"bound certificate", clientWith(mine), 200, ""},
		{"cert thumbprint mismatch", clientWith(theirs), 401, authn.ReasonCertificateBinding},
		{"no certificate", rs.srv.Client(), 401, authn.ReasonCertificateBinding},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id := "req-" + strings.ReplaceAll(tc.name, " ", "-")
			resp, _ := rs.doWith(t, tc.client, call{path: "/files/a", auth: []string{"Bearer " + tok}}, id)
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.wantStatus)
			}
			ev := rs.sink.waitFor(t, id)
			if ev.Reason != tc.wantReason || (tc.wantStatus == 200) != ev.Allowed {
				t.Errorf("event reason %q allowed=%v, want %q", ev.Reason, ev.Allowed, tc.wantReason)
			}
			if tc.wantStatus == 200 && ev.Binding != authn.BindingMTLS {
				t.Errorf("binding %q, want mtls", ev.Binding)
			}
		})
	}
}

func TestMemoryDPoPReplayCache(t *testing.T) {
	c := authn.NewMemoryDPoPReplayCache(2)
	ctx := t.Context()
	later := time.Now().Add(time.Hour)
	steps := []struct {
		key     string
		until   time.Time
		want    bool
		wantErr bool
	}{
		{"a", later, true, false},
		{"a", later, false, false},                       // replay
		{"b", time.Now().Add(-time.Second), true, false}, // already expired: forgotten at once
		{"b", later, true, false},                        // so it is fresh again
		{"c", later, false, true},                        // full of live proofs: refused, never forgotten
		{"a", later, false, false},                       // still a replay
	}
	for i, s := range steps {
		fresh, err := c.Use(ctx, s.key, s.until)
		if fresh != s.want || (err != nil) != s.wantErr {
			t.Errorf("step %d Use(%q) = %v, %v; want %v, error %v", i, s.key, fresh, err, s.want, s.wantErr)
		}
	}
}

func TestMemoryDPoPReplayCacheKeyQuota(t *testing.T) {
	c := authn.NewMemoryDPoPReplayCache(20) // 2 live proofs per key
	ctx := t.Context()
	later := time.Now().Add(time.Hour)
	steps := []struct {
		key        string
		until      time.Time
		want       bool
		wantReason string // "" for no error
	}{
		{"jktA:1", later, true, ""},
		{"jktA:2", later, true, ""},
		{"jktA:3", later, false, authn.ReasonDPoPKeyOverQuota}, // this key is over its quota…
		{"jktA:1", later, false, ""},                           // …and a replay is still a replay
		{"jktB:1", later, true, ""},                            // other keys are not affected
		{"jktC:1", time.Now().Add(-time.Second), true, ""},     // proofs already expired take no room
		{"jktC:2", time.Now().Add(-time.Second), true, ""},
		{"jktC:3", later, true, ""},
		{"jktC:4", later, true, ""},
		{"jktC:5", later, false, authn.ReasonDPoPKeyOverQuota},
	}
	for i, s := range steps {
		fresh, err := c.Use(ctx, s.key, s.until)
		var e *errs.Error
		switch {
		case s.wantReason == "" && err != nil:
			t.Errorf("step %d Use(%q): %v, want no error", i, s.key, err)
		case s.wantReason != "" && (!errors.As(err, &e) || e.Reason != s.wantReason || e.Kind != errs.KindResourceExhausted):
			t.Errorf("step %d Use(%q): %v, want ResourceExhausted %s", i, s.key, err, s.wantReason)
		case fresh != s.want:
			t.Errorf("step %d Use(%q) fresh = %v, want %v", i, s.key, fresh, s.want)
		}
	}
}

// shiftedReplayCache runs a replay cache on the real clock for a resource server on the test clock:
// a proof's time is moved by how far the test clock is behind.
type shiftedReplayCache struct {
	inner authn.DPoPReplayCache
	now   func() time.Time // the resource server's clock
}

func (s shiftedReplayCache) Use(ctx context.Context, key string, until time.Time) (bool, error) {
	return s.inner.Use(ctx, key, time.Now().Add(until.Sub(s.now())))
}

// TestMiddlewareDPoPFloodRefusesOnlyTheFloodingKey: one client sending fresh proofs as fast as it
// can is refused invalid_dpop_proof once its key holds its quota of live proofs; the replay cache
// never fills, and another client's DPoP requests keep passing.
func TestMiddlewareDPoPFloodRefusesOnlyTheFloodingKey(t *testing.T) {
	const entries = 20 // 2 live proofs per key
	// The resource server's clock stands still at baseTime in this test.
	cache := shiftedReplayCache{inner: authn.NewMemoryDPoPReplayCache(entries), now: func() time.Time { return baseTime }}
	rs := newResourceServerWith(t, false, authn.WithDPoPReplayCache(cache))
	flooder, _ := newDPoPProver(t)
	other, _ := newDPoPProver(t)
	floodToken := rs.token(t, func(c *authn.Claims) { c.Confirmation = &authn.Confirmation{JKT: flooder.JKT()} })
	otherToken := rs.token(t, func(c *authn.Claims) { c.Confirmation = &authn.Confirmation{JKT: other.JKT()} })
	url := rs.srv.URL + "/files/a"

	served := 0
	for i := range entries + 5 {
		id := "req-flood-" + strconv.Itoa(i)
		resp, _ := rs.do(t, call{path: "/files/a", auth: []string{"DPoP " + floodToken}, dpop: mkProof(t, flooder, "GET", url, floodToken, "", baseTime)}, id)
		if resp.StatusCode == http.StatusOK {
			served++
			continue
		}
		if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(resp.Header.Get("WWW-Authenticate"), `error="invalid_dpop_proof"`) {
			t.Fatalf("flooding proof %d: status %d, WWW-Authenticate %q; want 200 or 401 invalid_dpop_proof", i, resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		}
		if ev := rs.sink.waitFor(t, id); ev.Reason != authn.ReasonDPoPKeyOverQuota {
			t.Fatalf("flooding proof %d refused with reason %q, want %s", i, ev.Reason, authn.ReasonDPoPKeyOverQuota)
		}
	}
	if served != entries/10 {
		t.Fatalf("%d flooding proofs served, want the key's quota (%d)", served, entries/10)
	}
	resp, body := rs.do(t, call{path: "/files/a", auth: []string{"DPoP " + otherToken}, dpop: mkProof(t, other, "GET", url, otherToken, "", baseTime)}, "req-other")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("another client's DPoP request during the flood: status %d body %q, want 200", resp.StatusCode, body)
	}
}
