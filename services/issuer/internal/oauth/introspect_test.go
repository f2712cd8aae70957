package oauth_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/services/issuer/internal/oauth"
)

// introspect asks the fixture's introspection endpoint about raw, authenticated as the bearer client.
func (f *dpopFixture) introspect(t *testing.T, raw string) *oauth.Introspection {
	t.Helper()
	in, oerr := f.srv.Introspect(context.Background(), tenant, oauth.Request{ContentType: oauth.FormContentType,
		Body: strings.NewReader(url.Values{
			"token": {raw}, "client_assertion_type": {oauth.ClientAssertionTypeJWT},
			"client_assertion": {f.assertion(t, dpopBearerClient)},
		}.Encode())})
	if oerr != nil {
		t.Fatal(oerr)
	}
	if !in.Active {
		t.Fatalf("token inactive: %+v", in)
	}
	return in
}

func TestIntrospectionOfDPoPBoundToken(t *testing.T) {
	f := newDPoPFixture(t, oauth.DPoPConfig{})
	p := newTestProver(t)
	resp, oerr := f.token(t, f.assertion(t, dpopBoundClient), f.proof(t, p, http.MethodPost, tokenEndpoint, f.nonce(t, p)))
	if oerr != nil {
		t.Fatal(oerr)
	}
	in := f.introspect(t, resp.AccessToken)
	if in.TokenType != authn.DPoPTokenType || in.Cnf == nil || in.Cnf.JKT != p.JKT() {
		t.Fatalf("token_type %q cnf %+v, want DPoP with jkt %s", in.TokenType, in.Cnf, p.JKT())
	}
	// On the wire: "token_type":"DPoP" and "cnf":{"jkt":...} (RFC 9449 §6.2).
	var wire map[string]any
	b, _ := json.Marshal(in)
	if err := json.Unmarshal(b, &wire); err != nil {
		t.Fatal(err)
	}
	if cnf, _ := wire["cnf"].(map[string]any); wire["token_type"] != "DPoP" || cnf["jkt"] != p.JKT() {
		t.Fatalf("response %s lacks token_type DPoP or cnf.jkt", b)
	}

	bearer, oerr := f.token(t, f.assertion(t, dpopBearerClient))
	if oerr != nil {
		t.Fatal(oerr)
	}
	if in := f.introspect(t, bearer.AccessToken); in.TokenType != "Bearer" || in.Cnf != nil {
		t.Fatalf("unbound token: token_type %q cnf %+v, want Bearer without cnf", in.TokenType, in.Cnf)
	}
}

func TestIntrospectionIncludesAct(t *testing.T) {
	f := newDPoPFixture(t, oauth.DPoPConfig{})
	resp, oerr := f.token(t, f.assertion(t, dpopBearerClient))
	if oerr != nil {
		t.Fatal(oerr)
	}
	// A delegated token of the same client, signed with the tenant's key.
	c := claimsOf(t, f.srv, resp.AccessToken)
	c.ID = "delegated-1"
	c.Act = map[string]any{"sub": "agent-7", "act": map[string]any{"sub": "svc-orchestrator"}}
	payload, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := f.signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	in := f.introspect(t, raw)
	if !reflect.DeepEqual(in.Act, c.Act) || in.TokenType != "Bearer" {
		t.Fatalf("act %v token_type %q, want act %v and Bearer", in.Act, in.TokenType, c.Act)
	}
	if in := f.introspect(t, resp.AccessToken); in.Act != nil {
		t.Fatalf("act %v on a token without one", in.Act)
	}
}
