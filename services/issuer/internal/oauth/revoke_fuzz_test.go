package oauth_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"io"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"google.golang.org/protobuf/proto"

	"github.com/agentid/agentid/pkg/eventstore"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"

	"github.com/agentid/agentid/services/issuer/internal/oauth"
)

// recordedRevocations is an oauth.RevocationWriter that keeps what it is asked to store.
type recordedRevocations struct {
	mu  sync.Mutex
	evs []*issuerv1.TokensRevoked
}

func (r *recordedRevocations) Revoke(_ context.Context, md eventstore.Metadata, ev *issuerv1.TokensRevoked, requestID string) (*issuerv1.Revocation, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.evs = append(r.evs, proto.Clone(ev).(*issuerv1.TokensRevoked))
	return &issuerv1.Revocation{Name: "tenants/" + md.Tenant + "/revocations/" + requestID, Event: ev}, nil
}

func (r *recordedRevocations) all() []*issuerv1.TokensRevoked {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*issuerv1.TokensRevoked(nil), r.evs...)
}

// activeAgents reports every agent ACTIVE.
type activeAgents struct{}

func (activeAgents) Check(context.Context, string) (registryv1.AgentState, error) {
	return registryv1.AgentState_AGENT_STATE_ACTIVE, nil
}

// revocationForm is the body of a revocation request for token, authenticated with assertion.
func revocationForm(token, assertion string, extra ...string) string {
	v := url.Values{"client_assertion_type": {oauth.ClientAssertionTypeJWT}, "client_assertion": {assertion}}
	if token != "" {
		v.Set("token", token)
	}
	for i := 0; i+1 < len(extra); i += 2 {
		v.Add(extra[i], extra[i+1])
	}
	return v.Encode()
}

// FuzzRevocationRequest feeds arbitrary content types and bodies through the RFC 7009 request parser
// and the whole revocation endpoint: it must never panic, must answer success or a well-formed OAuth
// error, and may store a revocation only of the one token the client really holds (nobody can forge
// another).
func FuzzRevocationRequest(f *testing.F) {
	core := newCore(f)
	revs := &recordedRevocations{}
	srv, err := oauth.New(oauth.Config{PublicURL: publicURL, Credentials: core.creds, Replay: &memReplay{seen: map[string]bool{}},
		Agents: activeAgents{}, Revocations: revs, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		f.Fatal(err)
	}
	resp, oerr := srv.Token(context.Background(), tenant, oauth.Request{ContentType: oauth.FormContentType,
		Body: strings.NewReader(form(core.assertion(f, issuer, time.Minute)))})
	if oerr != nil {
		f.Fatal(oerr)
	}
	token := resp.AccessToken
	parsed, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		f.Fatal(err)
	}
	var held jwt.Claims
	if err := parsed.UnsafeClaimsWithoutVerification(&held); err != nil || held.ID == "" {
		f.Fatalf("the token's jti: %q, %v", held.ID, err)
	}
	tokenParts := strings.Split(token, ".")
	unsigned := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none"}`)) + "." + tokenParts[1] + "."
	assertion := func(aud string) string { return core.assertion(f, aud, time.Minute) }

	ct := oauth.FormContentType
	f.Add(ct, []byte(revocationForm(token, assertion(issuer))))
	f.Add(ct, []byte(revocationForm(token, assertion(srv.RevocationEndpoint(tenant)), "token_type_hint", "access_token")))
	f.Add(ct, []byte(revocationForm(token, assertion(srv.TokenEndpoint(tenant)), "token_type_hint", "refresh_token")))
	f.Add(ct, []byte(revocationForm(token, assertion("https://elsewhere.example"))))
	f.Add(ct, []byte(revocationForm("", assertion(issuer))))
	f.Add(ct, []byte(revocationForm(token, assertion(issuer), "token", "second")))
	f.Add(ct, []byte(revocationForm(unsigned, assertion(issuer))))
	f.Add(ct, []byte(revocationForm("a.b.c", assertion(issuer))))
	f.Add(ct, []byte(revocationForm(tokenParts[0]+"."+tokenParts[1], assertion(issuer))))
	f.Add(ct, []byte(revocationForm(token, "not-a-jwt")))
	f.Add(ct, []byte("token="+token))
	f.Add(ct, []byte("token=%zz&client_assertion=x"))
	f.Add(ct, []byte("token=x;client_id=y"))
	f.Add(ct, []byte("token="))
	f.Add(ct, []byte{})
	f.Add(ct+"; charset=iso-8859-1", []byte("token=x"))
	f.Add("application/json", []byte(`{"token":"x"}`))
	f.Add("", []byte("token=x"))
	f.Add(ct, bytes.Repeat([]byte("a"), oauth.MaxBodyBytes+1))

	f.Fuzz(func(t *testing.T, contentType string, body []byte) {
		req, oerr := oauth.ParseRevocationRequest(contentType, body)
		switch {
		case oerr != nil && (oerr.Code == "" || oerr.Status < 400 || oerr.Status > 599):
			t.Fatalf("malformed error %+v", oerr)
		case oerr == nil && (req == nil || req.Token == ""):
			t.Fatalf("accepted a request without a token: %+v", req)
		case oerr == nil:
			// The parser reads the same token as the form parser: one value, never a mix.
			if f, ferr := oauth.ParseForm(contentType, body); ferr != nil || f.Get("token") != req.Token {
				t.Fatalf("token %q, but the form is %v (%v)", req.Token, f, ferr)
			}
		}

		oerr = srv.Revoke(context.Background(), tenant, oauth.Request{ContentType: contentType, Body: bytes.NewReader(body)})
		if oerr != nil && (oerr.Code == "" || oerr.Status < 400 || oerr.Status > 599) {
			t.Fatalf("malformed error %+v", oerr)
		}
		for _, ev := range revs.all() {
			if ev.GetTarget() != issuerv1.RevocationTarget_REVOCATION_TARGET_TOKEN || ev.GetTenant() != tenant ||
				ev.GetTokenId() != held.ID || !ev.GetExpireTime().IsValid() {
				t.Fatalf("stored revocation %v, want only the client's own token %s of %s, with its expiry", ev, held.ID, tenant)
			}
		}
	})
}
