package authn_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"golang.org/x/oauth2"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
)

const (
	dpopURL    = "https://api.example.com/t/acme/resource"
	dpopMethod = http.MethodPost
)

var dpopNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func newDPoPProver(t *testing.T) (*authn.DPoPProver, jose.JSONWebKey) {
	t.Helper()
	key, err := authn.NewSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	p, err := authn.NewDPoPProver(key)
	if err != nil {
		t.Fatal(err)
	}
	return p, key
}

func mkProof(t *testing.T, p *authn.DPoPProver, method, url, token, nonce string, at time.Time) string {
	t.Helper()
	s, err := p.Proof(method, url, token, nonce, at)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func dpopCheck() authn.DPoPCheck {
	return authn.DPoPCheck{Method: dpopMethod, URL: dpopURL, Now: dpopNow}
}

// wantReason fails unless err is an Unauthenticated *errs.Error with reason.
func wantDPoPReason(t *testing.T, err error, reason string) {
	t.Helper()
	var e *errs.Error
	if !errors.As(err, &e) {
		t.Fatalf("error = %v, want *errs.Error with reason %s", err, reason)
	}
	if e.Kind != errs.KindUnauthenticated || e.Reason != reason {
		t.Fatalf("error = %v (kind %v, reason %s), want Unauthenticated %s", err, e.Kind, e.Reason, reason)
	}
}

func dpopB64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func dpopB64JSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return dpopB64(b)
}

// es256 signs header.payload with a P-256 key as JWS ES256 (r || s, 32 bytes each).
func dpopES256(t *testing.T, key *ecdsa.PrivateKey, input string) string {
	t.Helper()
	sum := sha256.Sum256([]byte(input))
	r, s, err := ecdsa.Sign(rand.Reader, key, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return dpopB64(sig)
}

func dpopCoord(n *big.Int) string {
	b := make([]byte, 32)
	n.FillBytes(b)
	return dpopB64(b)
}

func dpopClaims() map[string]any {
	return map[string]any{"jti": "j-1", "htm": dpopMethod, "htu": dpopURL, "iat": dpopNow.Unix()}
}

// handProof builds a proof by hand so tests can break any part of it.
func handDPoPProof(t *testing.T, key *ecdsa.PrivateKey, header map[string]any, claims map[string]any) string {
	t.Helper()
	input := dpopB64JSON(t, header) + "." + dpopB64JSON(t, claims)
	return input + "." + dpopES256(t, key, input)
}

func dpopPublicJWK(key *ecdsa.PrivateKey) map[string]any {
	return map[string]any{"kty": "EC", "crv": "P-256", "x": dpopCoord(key.X), "y": dpopCoord(key.Y)}
}

func TestDPoPProofRoundTrip(t *testing.T) {
	_, edPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := authn.NewSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		key  jose.JSONWebKey
	}{
		{"ES256", ecKey},
		{"EdDSA", jose.JSONWebKey{Key: edPriv}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := authn.NewDPoPProver(tc.key)
			if err != nil {
				t.Fatal(err)
			}
			want, err := authn.Thumbprint(tc.key.Public())
			if err != nil {
				t.Fatal(err)
			}
			if p.JKT() != want {
				t.Fatalf("JKT = %s, want %s", p.JKT(), want)
			}
			raw := mkProof(t, p, dpopMethod, dpopURL+"?q=1#frag", "the-token", "n-1", dpopNow)
			c := dpopCheck()
			c.AccessToken, c.Nonce = "the-token", "n-1"
			got, err := authn.VerifyDPoPProof(raw, c)
			if err != nil {
				t.Fatalf("VerifyDPoPProof: %v", err)
			}
			if got.JKT != want || got.ID == "" || got.Nonce != "n-1" || !got.IssuedAt.Equal(dpopNow) {
				t.Fatalf("proof = %+v, want jkt %s, a jti, nonce n-1, iat %s", got, want, dpopNow)
			}
			// The embedded jwk is public and the proof carries no query in htu.
			parts := strings.Split(raw, ".")
			hdr, _ := base64.RawURLEncoding.DecodeString(parts[0])
			body, _ := base64.RawURLEncoding.DecodeString(parts[1])
			if strings.Contains(string(hdr), `"d"`) || !strings.Contains(string(hdr), `"typ":"dpop+jwt"`) {
				t.Fatalf("header %s: want typ dpop+jwt and no private key", hdr)
			}
			if strings.Contains(string(body), "q=1") || strings.Contains(string(body), "frag") {
				t.Fatalf("claims %s: htu must have no query or fragment", body)
			}
		})
	}
}

func TestDPoPProofsHaveFreshJTI(t *testing.T) {
	p, _ := newDPoPProver(t)
	a, err := authn.VerifyDPoPProof(mkProof(t, p, dpopMethod, dpopURL, "", "", dpopNow), dpopCheck())
	if err != nil {
		t.Fatal(err)
	}
	b, err := authn.VerifyDPoPProof(mkProof(t, p, dpopMethod, dpopURL, "", "", dpopNow), dpopCheck())
	if err != nil {
		t.Fatal(err)
	}
	if a.ID == b.ID {
		t.Fatalf("two proofs share jti %s", a.ID)
	}
}

func TestDPoPWrongMethod(t *testing.T) {
	p, _ := newDPoPProver(t)
	_, err := authn.VerifyDPoPProof(mkProof(t, p, http.MethodGet, dpopURL, "", "", dpopNow), dpopCheck())
	wantDPoPReason(t, err, authn.ReasonDPoPMethod)
	// htm is case-sensitive (RFC 9110 methods are).
	_, err = authn.VerifyDPoPProof(mkProof(t, p, "post", dpopURL, "", "", dpopNow), dpopCheck())
	wantDPoPReason(t, err, authn.ReasonDPoPMethod)
}

func TestDPoPWrongURL(t *testing.T) {
	p, _ := newDPoPProver(t)
	for _, u := range []string{
		"https://api.example.com/t/acme/other",
		"http://api.example.com/t/acme/resource",
		"https://evil.example.com/t/acme/resource",
		"https://api.example.com:8443/t/acme/resource",
		"https://api.example.com/t/acme/resource/",
		"https://api.example.com/t/acme%2Fresource",
	} {
		t.Run(u, func(t *testing.T) {
			_, err := authn.VerifyDPoPProof(mkProof(t, p, dpopMethod, u, "", "", dpopNow), dpopCheck())
			wantDPoPReason(t, err, authn.ReasonDPoPURL)
		})
	}
}

func TestDPoPURLNormalisation(t *testing.T) {
	p, _ := newDPoPProver(t)
	for _, tc := range []struct{ htu, request string }{
		{"HTTPS://API.Example.COM/t/acme/resource", dpopURL},
		{"https://api.example.com:443/t/acme/resource", dpopURL},
		{"http://localhost:80/x", "http://localhost/x?y=1"},
		{"https://api.example.com/t/acme/%72esource", dpopURL},
		{"https://api.example.com/a%2fb", "https://api.example.com/a%2Fb"},
		{"https://api.example.com", "https://api.example.com/"},
	} {
		t.Run(tc.htu, func(t *testing.T) {
			c := dpopCheck()
			c.URL = tc.request
			if _, err := authn.VerifyDPoPProof(mkProof(t, p, dpopMethod, tc.htu, "", "", dpopNow), c); err != nil {
				t.Fatalf("htu %s for %s: %v", tc.htu, tc.request, err)
			}
		})
	}
}

func TestDPoPStaleIat(t *testing.T) {
	p, _ := newDPoPProver(t)
	raw := mkProof(t, p, dpopMethod, dpopURL, "", "", dpopNow.Add(-authn.DefaultDPoPMaxAge-time.Second))
	_, err := authn.VerifyDPoPProof(raw, dpopCheck())
	wantDPoPReason(t, err, authn.ReasonDPoPIssuedAt)

	c := dpopCheck()
	c.MaxAge = 10 * time.Second
	_, err = authn.VerifyDPoPProof(mkProof(t, p, dpopMethod, dpopURL, "", "", dpopNow.Add(-11*time.Second)), c)
	wantDPoPReason(t, err, authn.ReasonDPoPIssuedAt)
	if _, err := authn.VerifyDPoPProof(mkProof(t, p, dpopMethod, dpopURL, "", "", dpopNow.Add(-9*time.Second)), c); err != nil {
		t.Fatalf("proof 9 s old with MaxAge 10 s: %v", err)
	}
}

func TestDPoPFutureIat(t *testing.T) {
	p, _ := newDPoPProver(t)
	raw := mkProof(t, p, dpopMethod, dpopURL, "", "", dpopNow.Add(authn.DefaultDPoPLeeway+time.Second))
	_, err := authn.VerifyDPoPProof(raw, dpopCheck())
	wantDPoPReason(t, err, authn.ReasonDPoPIssuedAt)
	if _, err := authn.VerifyDPoPProof(mkProof(t, p, dpopMethod, dpopURL, "", "", dpopNow.Add(authn.DefaultDPoPLeeway)), dpopCheck()); err != nil {
		t.Fatalf("proof within the leeway: %v", err)
	}
}

func TestDPoPMissingAth(t *testing.T) {
	p, _ := newDPoPProver(t)
	c := dpopCheck()
	c.AccessToken = "the-token"
	_, err := authn.VerifyDPoPProof(mkProof(t, p, dpopMethod, dpopURL, "", "", dpopNow), c)
	wantDPoPReason(t, err, authn.ReasonDPoPAccessTokenHash)
	_, err = authn.VerifyDPoPProof(mkProof(t, p, dpopMethod, dpopURL, "another-token", "", dpopNow), c)
	wantDPoPReason(t, err, authn.ReasonDPoPAccessTokenHash)
	if got, want := authn.AccessTokenHash("the-token"), dpopB64(dpopSHA256("the-token")); got != want {
		t.Fatalf("AccessTokenHash = %s, want %s", got, want)
	}
}

func dpopSHA256(s string) []byte {
	sum := sha256.Sum256([]byte(s))
	return sum[:]
}

func TestDPoPNonce(t *testing.T) {
	p, _ := newDPoPProver(t)
	tests := []struct {
		name    string
		nonce   string
		check   func(*authn.DPoPCheck)
		wantErr bool
	}{
		{"no nonce wanted", "", func(*authn.DPoPCheck) {}, false},
		{"equal", "n-1", func(c *authn.DPoPCheck) { c.Nonce = "n-1" }, false},
		{"missing", "", func(c *authn.DPoPCheck) { c.Nonce = "n-1" }, true},
		{"different", "n-2", func(c *authn.DPoPCheck) { c.Nonce = "n-1" }, true},
		{"func accepts", "n-3", func(c *authn.DPoPCheck) { c.NonceOK = func(n string) bool { return n == "n-3" } }, false},
		{"func refuses", "n-4", func(c *authn.DPoPCheck) { c.NonceOK = func(n string) bool { return n == "n-3" } }, true},
		{"func missing", "", func(c *authn.DPoPCheck) { c.NonceOK = func(string) bool { return true } }, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := dpopCheck()
			tc.check(&c)
			_, err := authn.VerifyDPoPProof(mkProof(t, p, dpopMethod, dpopURL, "", tc.nonce, dpopNow), c)
			if !tc.wantErr {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			wantDPoPReason(t, err, authn.ReasonDPoPNonce)
		})
	}
}

func TestDPoPKeyMismatch(t *testing.T) {
	holder, _ := newDPoPProver(t)
	thief, _ := newDPoPProver(t)
	claims := &authn.Claims{Subject: "c1", Confirmation: &authn.Confirmation{JKT: holder.JKT()}}

	got, err := authn.VerifyDPoPProof(mkProof(t, thief, dpopMethod, dpopURL, "", "", dpopNow), dpopCheck())
	if err != nil {
		t.Fatal(err)
	}
	wantDPoPReason(t, authn.CheckDPoPBinding(claims, got), authn.ReasonDPoPKeyMismatch)

	got, err = authn.VerifyDPoPProof(mkProof(t, holder, dpopMethod, dpopURL, "", "", dpopNow), dpopCheck())
	if err != nil {
		t.Fatal(err)
	}
	if err := authn.CheckDPoPBinding(claims, got); err != nil {
		t.Fatalf("holder's proof: %v", err)
	}
	wantDPoPReason(t, authn.CheckDPoPBinding(&authn.Claims{Subject: "c1"}, got), authn.ReasonDPoPKeyMismatch)
}

func TestDPoPBadSignature(t *testing.T) {
	p, _ := newDPoPProver(t)
	raw := mkProof(t, p, dpopMethod, dpopURL, "", "", dpopNow)
	parts := strings.Split(raw, ".")
	// Same header and signature, different claims.
	forged := parts[0] + "." + dpopB64JSON(t, map[string]any{"jti": "x", "htm": dpopMethod, "htu": dpopURL, "iat": dpopNow.Unix()}) + "." + parts[2]
	_, err := authn.VerifyDPoPProof(forged, dpopCheck())
	wantDPoPReason(t, err, authn.ReasonDPoPInvalid)

	// Signed by a key other than the one in the header.
	signer, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	hdr := map[string]any{"typ": "dpop+jwt", "alg": "ES256", "jwk": dpopPublicJWK(other)}
	_, err = authn.VerifyDPoPProof(handDPoPProof(t, signer, hdr, dpopClaims()), dpopCheck())
	wantDPoPReason(t, err, authn.ReasonDPoPInvalid)

	// The same, signed by the header's key, verifies: the hand-made proofs are well formed.
	hdr["jwk"] = dpopPublicJWK(signer)
	if _, err := authn.VerifyDPoPProof(handDPoPProof(t, signer, hdr, dpopClaims()), dpopCheck()); err != nil {
		t.Fatalf("hand-made valid proof: %v", err)
	}
}

func TestDPoPPrivateKeyInHeader(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	jwk := dpopPublicJWK(key)
	jwk["d"] = dpopCoord(key.D)
	hdr := map[string]any{"typ": "dpop+jwt", "alg": "ES256", "jwk": jwk}
	_, err := authn.VerifyDPoPProof(handDPoPProof(t, key, hdr, dpopClaims()), dpopCheck())
	wantDPoPReason(t, err, authn.ReasonDPoPInvalid)
}

func TestDPoPNoneAlg(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	hdr := map[string]any{"typ": "dpop+jwt", "alg": "none", "jwk": dpopPublicJWK(key)}
	raw := dpopB64JSON(t, hdr) + "." + dpopB64JSON(t, dpopClaims()) + "."
	_, err := authn.VerifyDPoPProof(raw, dpopCheck())
	wantDPoPReason(t, err, authn.ReasonDPoPInvalid)

	// HS256 keyed with the public key's bytes (the classic confusion) is refused too.
	hdr["alg"] = "HS256"
	input := dpopB64JSON(t, hdr) + "." + dpopB64JSON(t, dpopClaims())
	mac := hmac.New(sha256.New, []byte(dpopCoord(key.X)))
	mac.Write([]byte(input))
	_, err = authn.VerifyDPoPProof(input+"."+dpopB64(mac.Sum(nil)), dpopCheck())
	wantDPoPReason(t, err, authn.ReasonDPoPInvalid)
}

func TestDPoPMalformedProofs(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	good := map[string]any{"typ": "dpop+jwt", "alg": "ES256", "jwk": dpopPublicJWK(key)}
	with := func(m map[string]any, k string, v any) map[string]any {
		out := map[string]any{}
		for kk, vv := range m {
			out[kk] = vv
		}
		if v == nil {
			delete(out, k)
		} else {
			out[k] = v
		}
		return out
	}
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	tests := []struct {
		name   string
		raw    string
		reason string
	}{
		{"empty", "", authn.ReasonDPoPMissing},
		{"garbage", "not.a.jwt", authn.ReasonDPoPInvalid},
		{"too large", strings.Repeat("a", authn.MaxDPoPProofBytes+1), authn.ReasonDPoPInvalid},
		{"typ JWT", handDPoPProof(t, key, with(good, "typ", "JWT"), dpopClaims()), authn.ReasonDPoPInvalid},
		{"no typ", handDPoPProof(t, key, with(good, "typ", nil), dpopClaims()), authn.ReasonDPoPInvalid},
		{"no jwk", handDPoPProof(t, key, with(good, "jwk", nil), dpopClaims()), authn.ReasonDPoPInvalid},
		{"jwk of another alg", handDPoPProof(t, key, with(good, "jwk", map[string]any{"kty": "OKP", "crv": "Ed25519", "x": dpopB64(edPub)}), dpopClaims()), authn.ReasonDPoPInvalid},
		{"no jti", handDPoPProof(t, key, good, with(dpopClaims(), "jti", nil)), authn.ReasonDPoPInvalid},
		{"long jti", handDPoPProof(t, key, good, with(dpopClaims(), "jti", strings.Repeat("j", 300))), authn.ReasonDPoPInvalid},
		{"no htm", handDPoPProof(t, key, good, with(dpopClaims(), "htm", nil)), authn.ReasonDPoPInvalid},
		{"no htu", handDPoPProof(t, key, good, with(dpopClaims(), "htu", nil)), authn.ReasonDPoPInvalid},
		{"no iat", handDPoPProof(t, key, good, with(dpopClaims(), "iat", nil)), authn.ReasonDPoPInvalid},
		{"relative htu", handDPoPProof(t, key, good, with(dpopClaims(), "htu", "/t/acme/resource")), authn.ReasonDPoPURL},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := authn.VerifyDPoPProof(tc.raw, dpopCheck())
			wantDPoPReason(t, err, tc.reason)
		})
	}
}

func TestNewDPoPProverRefusesPublicOrOtherKeys(t *testing.T) {
	key, _ := authn.NewSigningKey()
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	for name, k := range map[string]jose.JSONWebKey{
		"public": key.Public(),
		"P-384":  {Key: p384},
		"HMAC":   {Key: []byte("secret")},
	} {
		if _, err := authn.NewDPoPProver(k); err == nil {
			t.Errorf("%s key: NewDPoPProver succeeded", name)
		}
	}
}

func TestDPoPProofFromHeader(t *testing.T) {
	tests := []struct {
		name    string
		values  []string
		want    string
		wantErr bool
	}{
		{"none", nil, "", false},
		{"one", []string{"a.b.c"}, "a.b.c", false},
		{"two fields", []string{"a.b.c", "d.e.f"}, "", true},
		{"two in one field", []string{"a.b.c, d.e.f"}, "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			for _, v := range tc.values {
				h.Add(authn.DPoPHeader, v)
			}
			got, err := authn.DPoPProofFromHeader(h)
			if tc.wantErr {
				wantDPoPReason(t, err, authn.ReasonDPoPInvalid)
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("DPoPProofFromHeader = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

// dpopTokenEndpoint is a token endpoint that requires DPoP proofs with its nonce.
type dpopTokenEndpoint struct {
	t         *testing.T
	nonce     string
	tokenType string
	requests  int
	proofs    []*authn.DPoPProof
}

func (e *dpopTokenEndpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	e.requests++
	if err := r.ParseForm(); err != nil || r.PostForm.Get("client_assertion") == "" || r.PostForm.Get("grant_type") != "client_credentials" {
		http.Error(w, `{"error":"invalid_request"}`, http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set(authn.DPoPNonceHeader, e.nonce)
	p, err := authn.VerifyDPoPProof(r.Header.Get(authn.DPoPHeader), authn.DPoPCheck{
		Method: r.Method, URL: "http://" + r.Host + r.URL.Path, Nonce: e.nonce})
	if err != nil {
		code := "invalid_dpop_proof"
		var ee *errs.Error
		if errors.As(err, &ee) && ee.Reason == authn.ReasonDPoPNonce {
			code = "use_dpop_nonce"
		}
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"error":"` + code + `"}`))
		return
	}
	e.proofs = append(e.proofs, p)
	_, _ = w.Write([]byte(`{"access_token":"tok-1","token_type":"` + e.tokenType + `","expires_in":300}`))
}

func TestDPoPTokenSourceRetriesWithNonce(t *testing.T) {
	ep := &dpopTokenEndpoint{t: t, nonce: "server-nonce-1", tokenType: "DPoP"}
	srv := httptest.NewServer(ep)
	defer srv.Close()
	cred, err := authn.NewCredential("acme", "c1", srv.URL+"/t/acme")
	if err != nil {
		t.Fatal(err)
	}
	prover, _ := newDPoPProver(t)
	tok, err := cred.DPoPTokenSource(context.Background(), prover, "orders.read").Token()
	if err != nil {
		t.Fatalf("Token: %v", err)
	}
	if tok.AccessToken != "tok-1" || tok.Type() != "DPoP" || tok.Expiry.IsZero() {
		t.Fatalf("token = %+v, want tok-1 of type DPoP with an expiry", tok)
	}
	if ep.requests != 2 || len(ep.proofs) != 1 || ep.proofs[0].JKT != prover.JKT() || ep.proofs[0].Nonce != ep.nonce {
		t.Fatalf("requests %d, proofs %+v: want use_dpop_nonce then one proof by %s with the nonce", ep.requests, ep.proofs, prover.JKT())
	}
}

func TestDPoPTokenSourceRefusesBearer(t *testing.T) {
	ep := &dpopTokenEndpoint{t: t, nonce: "n", tokenType: "Bearer"}
	srv := httptest.NewServer(ep)
	defer srv.Close()
	cred, err := authn.NewCredential("acme", "c1", srv.URL+"/t/acme")
	if err != nil {
		t.Fatal(err)
	}
	prover, _ := newDPoPProver(t)
	if tok, err := cred.DPoPTokenSource(context.Background(), prover).Token(); err == nil {
		t.Fatalf("Token = %+v, want an error for a Bearer token", tok)
	}
}

func TestDPoPTokenSourceReportsOAuthErrors(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"error":"invalid_dpop_proof","error_description":"this client must use DPoP"}`))
	}))
	defer srv.Close()
	cred, err := authn.NewCredential("acme", "c1", srv.URL+"/t/acme")
	if err != nil {
		t.Fatal(err)
	}
	prover, _ := newDPoPProver(t)
	_, err = cred.DPoPTokenSource(context.Background(), prover).Token()
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.ErrorCode != "invalid_dpop_proof" {
		t.Fatalf("err = %v, want an oauth2.RetrieveError invalid_dpop_proof", err)
	}
}
