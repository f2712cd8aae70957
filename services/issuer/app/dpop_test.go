package app_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"net/http"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/testkit"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"

	"github.com/agentid/agentid/services/issuer/app"
)

// newProver returns a DPoP prover with a fresh P-256 key.
func newProver(t testing.TB) *authn.DPoPProver {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p, err := authn.NewDPoPProver(jose.JSONWebKey{Key: key})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// proof is a DPoP proof of p for a token request to the token endpoint of tenant behind public.
func proof(t testing.TB, p *authn.DPoPProver, public, tenant, nonce string) string {
	t.Helper()
	s, err := p.Proof(http.MethodPost, public+"/t/"+tenant+"/oauth2/token", "", nonce, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// wantDPoPToken checks a DPoP-bound token response: token_type DPoP and cnf.jkt of the prover's key.
func wantDPoPToken(t testing.TB, resp oauthResponse, p *authn.DPoPProver) {
	t.Helper()
	if resp.status != http.StatusOK || resp.str("access_token") == "" {
		t.Fatalf("token request with a DPoP proof: %d %v", resp.status, resp.body)
	}
	if got := resp.str("token_type"); got != "DPoP" {
		t.Fatalf("token_type = %q, want DPoP", got)
	}
	tok, err := jwt.ParseSigned(resp.str("access_token"), []jose.SignatureAlgorithm{jose.ES256, jose.EdDSA})
	if err != nil {
		t.Fatal(err)
	}
	var claims authn.Claims
	if err := tok.UnsafeClaimsWithoutVerification(&claims); err != nil {
		t.Fatal(err)
	}
	if claims.Confirmation == nil || claims.Confirmation.JKT != p.JKT() {
		t.Fatalf("cnf = %+v, want jkt %s (the proof key's thumbprint)", claims.Confirmation, p.JKT())
	}
}

// Over the real HTTP handler and two replicas on one NATS: the nonce round trip, a DPoP-bound token,
// and a proof that one replica accepted refused by the other (its jti is spent across replicas).
func TestDPoPTokenAcrossReplicas(t *testing.T) {
	n := testkit.StartNATS(t)
	public := "http://issuer.test" // a load balancer in front of both replicas
	a, b := startReplica(t, n, public), startReplica(t, n, public)
	c := newTestClient(t, "acme", "agent-dpop")
	c.register(t, a, "orders.read")
	waitForClient(t, b, "acme", c.id)
	p := newProver(t)

	// Without a nonce: use_dpop_nonce with a nonce to retry with; the client's assertion is not spent.
	assertion := c.sign(t, c.claims(public+"/t/acme"))
	resp := postForm(t, a.tokenURL("acme"), tokenForm(assertion), authn.DPoPHeader, proof(t, p, public, "acme", ""))
	wantOAuthError(t, resp, http.StatusBadRequest, "use_dpop_nonce")
	nonce := resp.header.Get(authn.DPoPNonceHeader)
	if nonce == "" {
		t.Fatal("use_dpop_nonce without a DPoP-Nonce header")
	}

	// With the nonce: a DPoP-bound token.
	used := proof(t, p, public, "acme", nonce)
	wantDPoPToken(t, postForm(t, a.tokenURL("acme"), tokenForm(assertion), authn.DPoPHeader, used), p)

	// The same proof at the other replica, with a fresh assertion: refused as replayed.
	resp = postForm(t, b.tokenURL("acme"), tokenForm(c.assertion(t, b)), authn.DPoPHeader, used)
	wantOAuthError(t, resp, http.StatusBadRequest, "invalid_dpop_proof")
	if !strings.Contains(resp.str("error_description"), "replayed") {
		t.Fatalf("error_description %q, want the proof named as replayed", resp.str("error_description"))
	}

	// A fresh proof with the first replica's nonce is accepted there: only the jti was the problem.
	wantDPoPToken(t, postForm(t, b.tokenURL("acme"), tokenForm(c.assertion(t, b)), authn.DPoPHeader, proof(t, p, public, "acme", nonce)), p)
}

// A client registered as DPoP-bound gets no bearer token, only a DPoP-bound one.
func TestDPoPBoundClientNeedsAProof(t *testing.T) {
	r := startIssuer(t)
	c := newTestClient(t, "acme", "agent-bound")
	c.activate(t, r)
	if err := r.app.EnsureClient(context.Background(), "acme", &issuerv1.Client{
		ClientId: c.id, Agent: c.agentName(), Environment: "prod", PublicJwks: c.jwks(t),
		Scopes: []string{"orders.read"}, DpopBound: true, Resources: []string{agentResource},
	}); err != nil {
		t.Fatal(err)
	}

	resp := postForm(t, r.tokenURL("acme"), tokenForm(c.assertion(t, r)))
	wantOAuthError(t, resp, http.StatusBadRequest, "invalid_dpop_proof")
	nonce := resp.header.Get(authn.DPoPNonceHeader)
	if nonce == "" {
		t.Fatal("invalid_dpop_proof without a DPoP-Nonce header to make a proof with")
	}

	p := newProver(t)
	wantDPoPToken(t, postForm(t, r.tokenURL("acme"), tokenForm(c.assertion(t, r)), authn.DPoPHeader, proof(t, p, r.base, "acme", nonce)), p)
}

// With DPoPNonceOptional (--dpop-nonce-optional) a proof without a nonce is accepted at once.
func TestDPoPNonceOptional(t *testing.T) {
	r := launchReplicaWith(t, testkit.StartNATS(t), "", func(c *app.Config) { c.DPoPNonceOptional = true })
	r.waitReady(t)
	c := newTestClient(t, "acme", "agent-nonceless")
	c.register(t, r, "orders.read")
	p := newProver(t)
	resp := postForm(t, r.tokenURL("acme"), tokenForm(c.assertion(t, r)), authn.DPoPHeader, proof(t, p, r.base, "acme", ""))
	wantDPoPToken(t, resp, p)
	if got := resp.header.Get(authn.DPoPNonceHeader); got != "" {
		t.Errorf("DPoP-Nonce %q from an issuer that does not require nonces", got)
	}
}
