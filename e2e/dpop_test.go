package e2e_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/agentid/agentid/pkg/authn"
)

// TestDPoPBoundAgentEndToEnd checks RFC 9449 from the issuer to a third-party resource server: a
// client registered as DPoP-bound (agentctl clients create --dpop) gets no bearer token; through
// authn.Credential.DPoPTokenSource it gets a DPoP token bound to its proof key (cnf.jkt) that the
// example resource server accepts with a fresh proof, and refuses as a bearer token, with a replayed
// proof, and with a proof for another method or URL, by another key, without ath, stale, or missing.
func TestDPoPBoundAgentEndToEnd(t *testing.T) {
	agentidBin, agentctlBin, rsBin := buildWithResourceServer(t)
	dataDir, configDir, keys := t.TempDir(), t.TempDir(), t.TempDir()
	p := startPlatform(t, agentidBin, dataDir)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := runCLI(t, agentctlBin, configDir, "login", "--dev", "--data-dir", dataDir, "--server", p.GRPCAddr); err != nil {
		t.Fatal(err)
	}
	credFile := keys + "/files-dpop.json"
	if _, err := runCLI(t, agentctlBin, configDir, "clients", "create", "files-dpop", "--role", "analyst",
		"--scope", "files.read", "--resource", filesAudience, "--dpop", "--key-out", credFile); err != nil {
		t.Fatal(err)
	}
	cred, err := authn.LoadCredentialFile(credFile)
	if err != nil {
		t.Fatal(err)
	}
	rs := startResourceServer(t, rsBin, p, filesAudience, "--tenant", "default")

	// The DPoP-bound client never gets a bearer token (once the issuer knows it).
	waitFor(t, ctx, "a bearer token request of files-dpop refused as invalid_dpop_proof", func() (bool, error) {
		tok, err := resourceToken(ctx, cred, filesAudience, "files.read")
		if err == nil {
			t.Fatalf("DPoP-bound client got a %s token without a proof", tok.TokenType)
		}
		var rerr *oauth2.RetrieveError
		return errors.As(err, &rerr) && rerr.ErrorCode == "invalid_dpop_proof", err
	})

	// A DPoP token for the resource through the SDK's token source (it answers use_dpop_nonce itself).
	key, err := authn.NewSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	prover, err := authn.NewDPoPProver(key)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := cred.TokenSourceFor(ctx, authn.TokenRequest{Scopes: []string{"files.read"}, Resources: []string{filesAudience}, DPoP: prover}).Token()
	if err != nil {
		t.Fatalf("DPoP token: %v", err)
	}
	jkt, err := authn.Thumbprint(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	claims := unverifiedClaims(t, tok.AccessToken)
	if cnf, _ := claims["cnf"].(map[string]any); tok.TokenType != authn.DPoPTokenType || cnf["jkt"] != jkt || !audienceHas(claims["aud"], filesAudience) {
		t.Fatalf("token type %q, cnf %v, aud %v; want DPoP, jkt %s, %s", tok.TokenType, claims["cnf"], claims["aud"], jkt, filesAudience)
	}

	fileURL := rs.url + "/files/hello.txt"
	proof := func(p *authn.DPoPProver, method, u, accessToken string, at time.Time) string {
		t.Helper()
		s, err := p.Proof(method, u, accessToken, "", at)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	first := proof(prover, http.MethodGet, fileURL, tok.AccessToken, time.Now())
	res := rs.get(t, ctx, "/files/hello.txt", "DPoP "+tok.AccessToken, first, "e2e-dpop-allowed")
	if res.status != http.StatusOK || !strings.Contains(res.body, "hello from the resource server") {
		t.Fatalf("DPoP token with its proof: HTTP %d %q (WWW-Authenticate %q), want 200 and the file", res.status, res.body, res.challenge)
	}

	otherKey, err := authn.NewSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	otherProver, err := authn.NewDPoPProver(otherKey)
	if err != nil {
		t.Fatal(err)
	}
	refused := []struct {
		name, auth, proof, wantError string
	}{
		{"token as bearer", "Bearer " + tok.AccessToken, "", "invalid_token"},
		{"token as bearer with a proof", "Bearer " + tok.AccessToken, proof(prover, http.MethodGet, fileURL, tok.AccessToken, time.Now()), "invalid_token"},
		{"replayed proof", "DPoP " + tok.AccessToken, first, "invalid_dpop_proof"},
		{"no proof", "DPoP " + tok.AccessToken, "", "invalid_dpop_proof"},
		{"proof for another method", "DPoP " + tok.AccessToken, proof(prover, http.MethodPut, fileURL, tok.AccessToken, time.Now()), "invalid_dpop_proof"},
		{"proof for another URL", "DPoP " + tok.AccessToken, proof(prover, http.MethodGet, rs.url+"/files/other.txt", tok.AccessToken, time.Now()), "invalid_dpop_proof"},
		{"proof by another key", "DPoP " + tok.AccessToken, proof(otherProver, http.MethodGet, fileURL, tok.AccessToken, time.Now()), "invalid_dpop_proof"},
		{"proof without ath", "DPoP " + tok.AccessToken, proof(prover, http.MethodGet, fileURL, "", time.Now()), "invalid_dpop_proof"},
		{"proof for another token", "DPoP " + tok.AccessToken, proof(prover, http.MethodGet, fileURL, tok.AccessToken+"x", time.Now()), "invalid_dpop_proof"},
		{"stale proof", "DPoP " + tok.AccessToken, proof(prover, http.MethodGet, fileURL, tok.AccessToken, time.Now().Add(-10*time.Minute)), "invalid_dpop_proof"},
	}
	for _, c := range refused {
		t.Run(c.name, func(t *testing.T) {
			res := rs.get(t, ctx, "/files/hello.txt", c.auth, c.proof, "")
			if res.status != http.StatusUnauthorized || !strings.Contains(res.challenge, `error="`+c.wantError+`"`) {
				t.Fatalf("HTTP %d, WWW-Authenticate %q; want 401 with error=%q", res.status, res.challenge, c.wantError)
			}
		})
	}

	// None of the refusals spent the token: a fresh proof is accepted again.
	res = rs.get(t, ctx, "/files/hello.txt", "DPoP "+tok.AccessToken, proof(prover, http.MethodGet, fileURL, tok.AccessToken, time.Now()), "")
	if res.status != http.StatusOK {
		t.Fatalf("DPoP token with a fresh proof after the refusals: HTTP %d (WWW-Authenticate %q), want 200", res.status, res.challenge)
	}
}
