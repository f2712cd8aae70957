package oauth_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/authn"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"

	"github.com/agentid/agentid/services/issuer/internal/credentials"
	"github.com/agentid/agentid/services/issuer/internal/keys"
	"github.com/agentid/agentid/services/issuer/internal/oauth"
)

const (
	dpopBearerClient = "svc-1"   // may use DPoP, need not
	dpopBoundClient  = "bound-1" // dpop_bound
	tokenEndpoint    = issuer + "/oauth2/token"
)

// dpopFixture is an authorization server with a bearer-capable client and a DPoP-bound client, both
// authenticating with key, on a clock the test moves.
type dpopFixture struct {
	srv    *oauth.Server
	key    *ecdsa.PrivateKey
	replay *memReplay
	signer *keys.SigningKey // the tenant's token signing key

	mu  sync.Mutex
	now time.Time
}

func newDPoPFixture(t *testing.T, cfg oauth.DPoPConfig) *dpopFixture {
	t.Helper()
	sealer, err := keys.NewSealer("k", bytes.Repeat([]byte{9}, keys.KEKSize))
	if err != nil {
		t.Fatal(err)
	}
	state := credentials.NewState(nil, sealer)
	k, priv, err := keys.Generate(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := sealer.Seal(priv, keys.SealAAD(tenant, k.KeyID))
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(state.Apply(context.Background(), event(t, credentials.EventSigningKeyCreated, tenant, tenant, &issuerv1.SigningKeyCreated{
		Key:              &issuerv1.SigningKey{KeyId: k.KeyID, Algorithm: "ES256", CreateTime: timestamppb.Now()},
		SealedPrivateJwk: sealed, KekId: "k",
	})))
	ckey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(err)
	set, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &ckey.PublicKey, KeyID: "c1", Algorithm: "ES256", Use: "sig"}}})
	must(err)
	for _, c := range []*issuerv1.Client{
		{ClientId: dpopBearerClient, PublicJwks: string(set), Scopes: []string{"orders.read"}, Roles: []string{string(authn.RoleIntrospector)}},
		{ClientId: dpopBoundClient, PublicJwks: string(set), Scopes: []string{"orders.read"}, DpopBound: true},
	} {
		norm, _, err := credentials.NormalizeClient(tenant, c, 0, time.Now())
		must(err)
		must(state.Apply(context.Background(), event(t, credentials.EventClientCreated, tenant, c.ClientId, &issuerv1.ClientCreated{Client: norm})))
	}
	f := &dpopFixture{key: ckey, replay: &memReplay{seen: map[string]bool{}}, signer: k, now: time.Now()}
	f.srv, err = oauth.New(oauth.Config{PublicURL: publicURL, Credentials: state, Replay: f.replay,
		DPoP:   cfg,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Now:    f.clock})
	must(err)
	return f
}

func (f *dpopFixture) clock() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *dpopFixture) advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
}

// assertion is a fresh client assertion of clientID at the fixture's time.
func (f *dpopFixture) assertion(t *testing.T, clientID string) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: f.key, KeyID: "c1"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	now := f.clock()
	s, err := jwt.Signed(signer).Claims(jwt.Claims{
		Issuer: clientID, Subject: clientID, Audience: jwt.Audience{issuer},
		IssuedAt: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(time.Minute)), ID: rand.Text(),
	}).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// token requests a token for clientID with an assertion and the given DPoP header fields.
func (f *dpopFixture) token(t *testing.T, assertion string, proofs ...string) (*oauth.TokenResponse, *oauth.Error) {
	t.Helper()
	return f.srv.Token(context.Background(), tenant, oauth.Request{
		ContentType: oauth.FormContentType, Body: strings.NewReader(form(assertion)),
		Method: http.MethodPost, DPoP: proofs, RequestID: "r1",
	})
}

func newTestProver(t *testing.T) *authn.DPoPProver {
	t.Helper()
	key, err := authn.NewSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	p, err := authn.NewDPoPProver(key)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func (f *dpopFixture) proof(t *testing.T, p *authn.DPoPProver, method, url, nonce string) string {
	t.Helper()
	s, err := p.Proof(method, url, "", nonce, f.clock())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// nonce obtains a server nonce the way a client does: a proof without one is answered use_dpop_nonce.
func (f *dpopFixture) nonce(t *testing.T, p *authn.DPoPProver) string {
	t.Helper()
	_, oerr := f.token(t, f.assertion(t, dpopBearerClient), f.proof(t, p, http.MethodPost, tokenEndpoint, ""))
	if oerr == nil || oerr.Code != oauth.ErrUseDPoPNonce || oerr.DPoPNonce == "" {
		t.Fatalf("token without nonce: %v, want use_dpop_nonce with a DPoP-Nonce", oerr)
	}
	return oerr.DPoPNonce
}

func wantOAuthError(t *testing.T, resp *oauth.TokenResponse, oerr *oauth.Error, code string) {
	t.Helper()
	if oerr == nil {
		t.Fatalf("token issued (%+v), want %s", resp, code)
	}
	if oerr.Code != code || oerr.Status != http.StatusBadRequest {
		t.Fatalf("error = %v (HTTP %d), want 400 %s", oerr, oerr.Status, code)
	}
}

// claimsOf verifies a token with the tenant's published keys and returns its claims.
func claimsOf(t *testing.T, srv *oauth.Server, raw string) authn.Claims {
	t.Helper()
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.ES256, jose.EdDSA})
	if err != nil {
		t.Fatal(err)
	}
	set, oerr := srv.JWKS(tenant)
	if oerr != nil {
		t.Fatal(oerr)
	}
	keys := set.Key(tok.Headers[0].KeyID)
	if len(keys) != 1 {
		t.Fatalf("kid %s not in the JWKS", tok.Headers[0].KeyID)
	}
	var c authn.Claims
	if err := tok.Claims(keys[0].Key, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestDPoPNonceRequired(t *testing.T) {
	f := newDPoPFixture(t, oauth.DPoPConfig{})
	p := newTestProver(t)
	assertion := f.assertion(t, dpopBearerClient)

	resp, oerr := f.token(t, assertion, f.proof(t, p, http.MethodPost, tokenEndpoint, ""))
	wantOAuthError(t, resp, oerr, oauth.ErrUseDPoPNonce)
	if oerr.DPoPNonce == "" {
		t.Fatal("use_dpop_nonce without a DPoP-Nonce")
	}
	// The nonce answer comes before client authentication: the same assertion still works.
	resp, oerr = f.token(t, assertion, f.proof(t, p, http.MethodPost, tokenEndpoint, oerr.DPoPNonce))
	if oerr != nil {
		t.Fatalf("token with the nonce: %v", oerr)
	}
	if resp.TokenType != "DPoP" || resp.DPoPNonce == "" {
		t.Fatalf("token_type %q, DPoP-Nonce %q: want DPoP and a fresh nonce", resp.TokenType, resp.DPoPNonce)
	}
}

func TestDPoPNonceWindows(t *testing.T) {
	f := newDPoPFixture(t, oauth.DPoPConfig{NonceWindow: time.Minute})
	p := newTestProver(t)
	nonce := f.nonce(t, p)

	// Still good in the next window.
	f.advance(time.Minute)
	if _, oerr := f.token(t, f.assertion(t, dpopBearerClient), f.proof(t, p, http.MethodPost, tokenEndpoint, nonce)); oerr != nil {
		t.Fatalf("nonce of the previous window: %v", oerr)
	}
	// Stale two windows later: use_dpop_nonce with a new nonce.
	f.advance(time.Minute)
	resp, oerr := f.token(t, f.assertion(t, dpopBearerClient), f.proof(t, p, http.MethodPost, tokenEndpoint, nonce))
	wantOAuthError(t, resp, oerr, oauth.ErrUseDPoPNonce)
	if oerr.DPoPNonce == "" || oerr.DPoPNonce == nonce {
		t.Fatalf("stale nonce answered with DPoP-Nonce %q, want a new one", oerr.DPoPNonce)
	}
	// A nonce of another server (another key) or a forged one is refused.
	other := newDPoPFixture(t, oauth.DPoPConfig{NonceWindow: time.Minute})
	for _, n := range []string{other.nonce(t, p), "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "not-base64!"} {
		resp, oerr := f.token(t, f.assertion(t, dpopBearerClient), f.proof(t, p, http.MethodPost, tokenEndpoint, n))
		wantOAuthError(t, resp, oerr, oauth.ErrUseDPoPNonce)
	}
}

func TestDPoPSharedNonceKey(t *testing.T) {
	key := bytes.Repeat([]byte{7}, oauth.DPoPNonceKeySize)
	a := newDPoPFixture(t, oauth.DPoPConfig{NonceKey: key})
	b := newDPoPFixture(t, oauth.DPoPConfig{NonceKey: key})
	p := newTestProver(t)
	nonce := a.nonce(t, p)
	if _, oerr := b.token(t, b.assertion(t, dpopBearerClient), b.proof(t, p, http.MethodPost, tokenEndpoint, nonce)); oerr != nil {
		t.Fatalf("replica b refused replica a's nonce: %v", oerr)
	}
	sealer, err := keys.NewSealer("k", bytes.Repeat([]byte{9}, keys.KEKSize))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := oauth.New(oauth.Config{PublicURL: publicURL, Credentials: credentials.NewState(nil, sealer), Replay: &memReplay{},
		DPoP: oauth.DPoPConfig{NonceKey: []byte("short")}}); err == nil {
		t.Fatal("New accepted a 5-byte nonce key")
	}
}

func TestDPoPNonceOptional(t *testing.T) {
	f := newDPoPFixture(t, oauth.DPoPConfig{NonceOptional: true})
	p := newTestProver(t)
	resp, oerr := f.token(t, f.assertion(t, dpopBoundClient), f.proof(t, p, http.MethodPost, tokenEndpoint, ""))
	if oerr != nil {
		t.Fatalf("token without nonce when nonces are optional: %v", oerr)
	}
	if resp.TokenType != "DPoP" || resp.DPoPNonce != "" {
		t.Fatalf("token_type %q, DPoP-Nonce %q: want DPoP and no nonce", resp.TokenType, resp.DPoPNonce)
	}
}

func TestDPoPTokenHasCnf(t *testing.T) {
	f := newDPoPFixture(t, oauth.DPoPConfig{})
	p := newTestProver(t)
	for _, client := range []string{dpopBoundClient, dpopBearerClient} {
		t.Run(client, func(t *testing.T) {
			nonce := f.nonce(t, p)
			resp, oerr := f.token(t, f.assertion(t, client), f.proof(t, p, http.MethodPost, tokenEndpoint, nonce))
			if oerr != nil {
				t.Fatal(oerr)
			}
			if resp.TokenType != authn.DPoPTokenType {
				t.Fatalf("token_type = %q, want DPoP", resp.TokenType)
			}
			c := claimsOf(t, f.srv, resp.AccessToken)
			if c.Confirmation == nil || c.Confirmation.JKT != p.JKT() {
				t.Fatalf("cnf = %+v, want jkt %s", c.Confirmation, p.JKT())
			}
			if c.Subject != client {
				t.Fatalf("sub = %s, want %s", c.Subject, client)
			}
		})
	}
	// Without a proof the bearer client gets an unbound Bearer token.
	resp, oerr := f.token(t, f.assertion(t, dpopBearerClient))
	if oerr != nil {
		t.Fatal(oerr)
	}
	if c := claimsOf(t, f.srv, resp.AccessToken); resp.TokenType != "Bearer" || c.Confirmation != nil || resp.DPoPNonce != "" {
		t.Fatalf("token_type %q cnf %+v nonce %q: want an unbound Bearer token", resp.TokenType, c.Confirmation, resp.DPoPNonce)
	}
}

func TestDPoPBoundClientRefusedBearer(t *testing.T) {
	f := newDPoPFixture(t, oauth.DPoPConfig{})
	resp, oerr := f.token(t, f.assertion(t, dpopBoundClient))
	wantOAuthError(t, resp, oerr, oauth.ErrInvalidDPoPProof)
	if !strings.Contains(oerr.Description, "must use DPoP") || oerr.DPoPNonce == "" {
		t.Fatalf("error %q with nonce %q: want 'must use DPoP' and a nonce to start with", oerr.Description, oerr.DPoPNonce)
	}
}

func TestDPoPReusedProof(t *testing.T) {
	f := newDPoPFixture(t, oauth.DPoPConfig{})
	p := newTestProver(t)
	proof := f.proof(t, p, http.MethodPost, tokenEndpoint, f.nonce(t, p))
	if _, oerr := f.token(t, f.assertion(t, dpopBoundClient), proof); oerr != nil {
		t.Fatal(oerr)
	}
	resp, oerr := f.token(t, f.assertion(t, dpopBoundClient), proof)
	wantOAuthError(t, resp, oerr, oauth.ErrInvalidDPoPProof)
	if !strings.Contains(oerr.Description, "replayed") {
		t.Fatalf("error %q, want it to say replayed", oerr.Description)
	}
}

// TestDPoPTokenEndpointRefusals: each proof the token endpoint must refuse, with its error code.
func TestDPoPTokenEndpointRefusals(t *testing.T) {
	f := newDPoPFixture(t, oauth.DPoPConfig{})
	p := newTestProver(t)
	nonce := f.nonce(t, p)
	at := func(d time.Duration) string {
		s, err := p.Proof(http.MethodPost, tokenEndpoint, "", nonce, f.clock().Add(d))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	good := f.proof(t, p, http.MethodPost, tokenEndpoint, nonce)
	tests := []struct {
		name   string
		proofs []string
		want   string
	}{
		{"wrong method", []string{f.proof(t, p, http.MethodGet, tokenEndpoint, nonce)}, oauth.ErrInvalidDPoPProof},
		{"wrong URL", []string{f.proof(t, p, http.MethodPost, issuer+"/oauth2/introspect", nonce)}, oauth.ErrInvalidDPoPProof},
		{"other tenant's endpoint", []string{f.proof(t, p, http.MethodPost, publicURL+"/t/beta/oauth2/token", nonce)}, oauth.ErrInvalidDPoPProof},
		{"stale iat", []string{at(-authn.DefaultDPoPMaxAge - time.Second)}, oauth.ErrInvalidDPoPProof},
		{"future iat", []string{at(authn.DefaultDPoPLeeway + time.Second)}, oauth.ErrInvalidDPoPProof},
		{"two DPoP headers", []string{good, good}, oauth.ErrInvalidDPoPProof},
		{"not a JWT", []string{"x.y.z"}, oauth.ErrInvalidDPoPProof},
		{"empty header", []string{""}, oauth.ErrInvalidDPoPProof},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, oerr := f.token(t, f.assertion(t, dpopBoundClient), tc.proofs...)
			wantOAuthError(t, resp, oerr, tc.want)
		})
	}
	// Nothing above spent the good proof.
	if _, oerr := f.token(t, f.assertion(t, dpopBoundClient), good); oerr != nil {
		t.Fatalf("good proof after the refusals: %v", oerr)
	}
}

func TestDPoPMetadata(t *testing.T) {
	f := newDPoPFixture(t, oauth.DPoPConfig{})
	md, oerr := f.srv.Metadata(tenant)
	if oerr != nil {
		t.Fatal(oerr)
	}
	b, err := json.Marshal(md)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"dpop_signing_alg_values_supported":["ES256","EdDSA"]`) {
		t.Fatalf("metadata %s: want dpop_signing_alg_values_supported [ES256, EdDSA]", b)
	}
}
