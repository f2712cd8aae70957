package authn_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/authn"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
)

// benchMiddleware builds Middleware with a JWKS verifier whose Denylist holds 10,000 revoked tokens
// and 1,000 revoked clients, serving GET /files/{name} with scope files.read.
func benchMiddleware(b *testing.B, rec authn.AccessRecorder) (http.Handler, func(mut func(*authn.Claims)) string) {
	b.Helper()
	return benchMiddlewareCache(b, rec, 0)
}

// benchMiddlewareCache is benchMiddleware with the verifier's VerifiedCacheSize.
func benchMiddlewareCache(b *testing.B, rec authn.AccessRecorder, cacheSize int) (http.Handler, func(mut func(*authn.Claims)) string) {
	b.Helper()
	fi := newFakeIssuer(b)
	key := newES256(b, "acme-1")
	fi.publish("acme", key)
	now := time.Now()
	deny := authn.NewDenylist(authn.DenylistConfig{})
	for i := range 10_000 {
		if err := deny.Apply(&issuerv1.TokensRevoked{Target: issuerv1.RevocationTarget_REVOCATION_TARGET_TOKEN, Tenant: "acme",
			TokenId: fmt.Sprintf("revoked-%d", i), ExpireTime: timestamppb.New(now.Add(time.Hour))}, uint64(i+1)); err != nil {
			b.Fatal(err)
		}
	}
	for i := range 1_000 {
		if err := deny.Apply(&issuerv1.TokensRevoked{Target: issuerv1.RevocationTarget_REVOCATION_TARGET_CLIENT, Tenant: "acme",
			ClientId: fmt.Sprintf("client-%d", i), NotBefore: timestamppb.New(now), ExpireTime: timestamppb.New(now.Add(time.Hour))}, uint64(20_000+i)); err != nil {
			b.Fatal(err)
		}
	}
	v, err := authn.NewJWKSVerifier(authn.JWKSVerifierConfig{IssuerBaseURL: fi.srv.URL, Audience: rsAudience,
		HTTPClient: fi.srv.Client(), Revocations: deny, VerifiedCacheSize: cacheSize})
	if err != nil {
		b.Fatal(err)
	}
	opts := []authn.ServerOption{authn.WithAllowedTenants("acme")}
	if rec != nil {
		opts = append(opts, authn.WithAccessRecorder(rec))
	}
	mux := http.NewServeMux()
	mux.Handle("GET /files/{name}", authn.RequireScopes("files.read")(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("ok"))
	})))
	token := func(mut func(*authn.Claims)) string {
		c := validClaims(fi, "acme")
		c.Audience, c.Scope = []string{rsAudience}, "files.read"
		c.IssuedAt, c.NotBefore, c.Expiry = now.Add(-time.Minute), now.Add(-time.Minute), now.Add(10*time.Minute)
		if mut != nil {
			mut(&c)
		}
		return mint(b, key, "at+jwt", c)
	}
	return authn.Middleware(v, opts...)(mux), token
}

func serveBench(b *testing.B, h http.Handler, reqs func(i int) *http.Request) {
	b.Helper()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, reqs(i))
		if rec.Code != http.StatusOK {
			b.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	}
}

// BenchmarkMiddlewareBearer is local verification of a bearer token per request (the verified-token
// cache answering after the first request, claims times, the signing key, the Denylist, tenant and
// scope checks), with a no-op access recorder.
func BenchmarkMiddlewareBearer(b *testing.B) {
	h, token := benchMiddleware(b, authn.AccessRecorderFunc(func(authn.AccessEvent) {}))
	req := httptest.NewRequest(http.MethodGet, "http://files.example/files/a", nil)
	req.Header.Set("Authorization", "Bearer "+token(nil))
	serveBench(b, h, func(int) *http.Request { return req })
}

// BenchmarkMiddlewareBearerUncached is BenchmarkMiddlewareBearer with the verified-token cache
// disabled: every request checks the ES256 signature.
func BenchmarkMiddlewareBearerUncached(b *testing.B) {
	h, token := benchMiddlewareCache(b, authn.AccessRecorderFunc(func(authn.AccessEvent) {}), -1)
	req := httptest.NewRequest(http.MethodGet, "http://files.example/files/a", nil)
	req.Header.Set("Authorization", "Bearer "+token(nil))
	serveBench(b, h, func(int) *http.Request { return req })
}

// BenchmarkMiddlewareBearerReporter adds a real AccessReporter sending to a MonitorService server.
func BenchmarkMiddlewareBearerReporter(b *testing.B) {
	m := &fakeMonitor{}
	conn := startMonitor(b, m)
	r, err := authn.NewAccessReporter(authn.AccessReporterConfig{Tenant: "acme", Conn: conn, QueueSize: 1 << 16})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = r.Close(context.Background()) }()
	h, token := benchMiddleware(b, r)
	req := httptest.NewRequest(http.MethodGet, "http://files.example/files/a", nil)
	req.Header.Set("Authorization", "Bearer "+token(nil))
	req.Header.Set("X-Request-Id", "bench")
	serveBench(b, h, func(int) *http.Request { return req })
	b.StopTimer()
	b.ReportMetric(float64(r.Stats().Dropped), "dropped")
}

// BenchmarkMiddlewareDPoP verifies a DPoP-bound token and a fresh proof per request (two ES256
// signature checks, the replay cache and the Denylist).
func BenchmarkMiddlewareDPoP(b *testing.B) {
	h, token := benchMiddleware(b, authn.AccessRecorderFunc(func(authn.AccessEvent) {}))
	key, err := authn.NewSigningKey()
	if err != nil {
		b.Fatal(err)
	}
	prover, err := authn.NewDPoPProver(key)
	if err != nil {
		b.Fatal(err)
	}
	tok := token(func(c *authn.Claims) { c.Confirmation = &authn.Confirmation{JKT: prover.JKT()} })
	const url = "http://files.example/files/a"
	proofs := make([]string, 0, 1<<14)
	for range cap(proofs) {
		p, err := prover.Proof(http.MethodGet, url, tok, "", time.Now())
		if err != nil {
			b.Fatal(err)
		}
		proofs = append(proofs, p)
	}
	serveBench(b, h, func(i int) *http.Request {
		if i >= len(proofs) {
			b.Fatalf("more than %d iterations: add proofs", len(proofs))
		}
		req := httptest.NewRequest(http.MethodGet, url, nil)
		req.Header.Set("Authorization", "DPoP "+tok)
		req.Header.Set("DPoP", proofs[i])
		return req
	})
}

// BenchmarkES256Verify is the floor of BenchmarkMiddlewareBearer: one P-256 ECDSA signature check,
// measured on the same machine.
func BenchmarkES256Verify(b *testing.B) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	digest := sha256.Sum256([]byte("header.payload"))
	sig, err := ecdsa.SignASN1(rand.Reader, priv, digest[:])
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if !ecdsa.VerifyASN1(&priv.PublicKey, digest[:], sig) {
			b.Fatal("signature does not verify")
		}
	}
}
