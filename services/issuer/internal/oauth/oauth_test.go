package oauth_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/eventstore"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"

	"github.com/agentid/agentid/services/issuer/internal/credentials"
	"github.com/agentid/agentid/services/issuer/internal/keys"
	"github.com/agentid/agentid/services/issuer/internal/oauth"
	"github.com/agentid/agentid/services/issuer/internal/replay"
)

const (
	publicURL = "https://issuer.example"
	tenant    = "acme"
	clientID  = "agent-1"
	issuer    = publicURL + "/t/" + tenant
	// ordersAPI is the one resource registered for the fixture's agent client.
	ordersAPI = "https://orders.example"
)

// memReplay is an in-memory replay cache for tests of the core without NATS.
type memReplay struct {
	mu   sync.Mutex
	seen map[string]bool
}

func (m *memReplay) Use(_ context.Context, tenant, clientID, jti string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	k := replay.Key(tenant, clientID, jti)
	if m.seen[k] {
		return replay.ErrReplayed
	}
	m.seen[k] = true
	return nil
}

func event(t testing.TB, typ, tenant, aggID string, msg proto.Message) eventstore.Event {
	t.Helper()
	data, err := proto.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	return eventstore.Event{
		ID: typ + "-" + aggID, Type: typ, Time: time.Now().UTC(),
		Metadata:      eventstore.Metadata{Tenant: tenant},
		AggregateType: strings.Split(typ, ".")[0], AggregateID: aggID,
		DataSchema: string(msg.ProtoReflect().Descriptor().FullName()), Data: data,
	}
}

type coreFixture struct {
	srv    *oauth.Server
	client *ecdsa.PrivateKey
	kid    string
	skew   atomic.Int64 // how far the server's clock runs ahead, in nanoseconds
	agents agentStates  // every agent ACTIVE unless a test says otherwise
	creds  *credentials.State
}

// newCore builds the authorization server over a projection fed with events in memory.
func newCore(t testing.TB) *coreFixture {
	t.Helper()
	return newCoreWith(t, nil)
}

// newCoreWith is newCore with configure, if not nil, applied to the server's configuration.
func newCoreWith(t testing.TB, configure func(*oauth.Config)) *coreFixture {
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
	apply := func(e eventstore.Event) {
		if err := state.Apply(context.Background(), e); err != nil {
			t.Fatal(err)
		}
	}
	apply(event(t, credentials.EventSigningKeyCreated, tenant, tenant, &issuerv1.SigningKeyCreated{
		Key:              &issuerv1.SigningKey{KeyId: k.KeyID, Algorithm: "ES256", CreateTime: timestamppb.Now()},
		SealedPrivateJwk: sealed, KekId: "k",
	}))
	cpriv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub := jose.JSONWebKey{Key: &cpriv.PublicKey, KeyID: "c1", Algorithm: "ES256", Use: "sig"}
	set, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{pub}})
	c, _, err := credentials.NormalizeClient(tenant, &issuerv1.Client{
		ClientId: clientID, Agent: "tenants/acme/agents/" + clientID, Environment: "dev",
		PublicJwks: string(set), Scopes: []string{"orders.read", "orders.write"}, Resources: []string{ordersAPI},
	}, 0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	apply(event(t, credentials.EventClientCreated, tenant, clientID, &issuerv1.ClientCreated{Client: c}))
	f := &coreFixture{client: cpriv, kid: "c1", creds: state}
	cfg := oauth.Config{PublicURL: publicURL, Credentials: state, Replay: &memReplay{seen: map[string]bool{}}, Agents: &f.agents,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Now:    func() time.Time { return time.Now().Add(time.Duration(f.skew.Load())) }}
	if configure != nil {
		configure(&cfg)
	}
	f.srv, err = oauth.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *coreFixture) assertion(t testing.TB, aud string, exp time.Duration) string {
	t.Helper()
	return f.sign(t, aud, time.Now(), exp)
}

func (f *coreFixture) assertionAt(t testing.TB, aud string, now time.Time) string {
	t.Helper()
	return f.sign(t, aud, now, time.Minute)
}

func (f *coreFixture) sign(t testing.TB, aud string, now time.Time, exp time.Duration) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: f.client, KeyID: f.kid}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := jwt.Signed(signer).Claims(jwt.Claims{
		Issuer: clientID, Subject: clientID, Audience: jwt.Audience{aud},
		IssuedAt: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(exp)),
		ID: rand.Text(),
	}).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func form(assertion string, extra ...string) string {
	v := url.Values{
		"grant_type":            {"client_credentials"},
		"client_assertion_type": {oauth.ClientAssertionTypeJWT},
		"client_assertion":      {assertion},
	}
	for i := 0; i+1 < len(extra); i += 2 {
		v.Add(extra[i], extra[i+1])
	}
	return v.Encode()
}

func TestParseForm(t *testing.T) {
	tests := []struct {
		name        string
		contentType string
		body        string
		wantErr     string
		want        url.Values
	}{
		{name: "ok", contentType: "application/x-www-form-urlencoded", body: "a=1&b=2", want: url.Values{"a": {"1"}, "b": {"2"}}},
		{name: "charset utf-8", contentType: "application/x-www-form-urlencoded; charset=UTF-8", body: "a=1", want: url.Values{"a": {"1"}}},
		{name: "empty values are omitted", contentType: "application/x-www-form-urlencoded", body: "a=&b=2&a=", want: url.Values{"b": {"2"}}},
		{name: "json", contentType: "application/json", body: `{"a":1}`, wantErr: oauth.ErrInvalidRequest},
		{name: "no content type", contentType: "", body: "a=1", wantErr: oauth.ErrInvalidRequest},
		{name: "latin-1", contentType: "application/x-www-form-urlencoded; charset=iso-8859-1", body: "a=1", wantErr: oauth.ErrInvalidRequest},
		{name: "duplicate", contentType: "application/x-www-form-urlencoded", body: "a=1&a=2", wantErr: oauth.ErrInvalidRequest},
		{name: "bad escape", contentType: "application/x-www-form-urlencoded", body: "a=%zz", wantErr: oauth.ErrInvalidRequest},
		{name: "semicolon", contentType: "application/x-www-form-urlencoded", body: "a=1;b=2", wantErr: oauth.ErrInvalidRequest},
		{name: "invalid utf-8", contentType: "application/x-www-form-urlencoded", body: "a=%ff", wantErr: oauth.ErrInvalidRequest},
		{name: "too large", contentType: "application/x-www-form-urlencoded", body: "a=" + strings.Repeat("x", oauth.MaxBodyBytes), wantErr: oauth.ErrInvalidRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, oerr := oauth.ParseForm(tt.contentType, []byte(tt.body))
			if tt.wantErr != "" {
				if oerr == nil || oerr.Code != tt.wantErr || oerr.Status != http.StatusBadRequest {
					t.Fatalf("err = %v, want %s", oerr, tt.wantErr)
				}
				return
			}
			if oerr != nil {
				t.Fatal(oerr)
			}
			if got.Encode() != tt.want.Encode() {
				t.Fatalf("form = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestCheckAssertionClaims(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	good := func() *oauth.AssertionClaims {
		return &oauth.AssertionClaims{Issuer: clientID, Subject: clientID, Audience: []string{issuer},
			Expiry: now.Add(time.Minute), IssuedAt: now, ID: "j1"}
	}
	tests := []struct {
		name    string
		edit    func(c *oauth.AssertionClaims)
		wantErr string
	}{
		{name: "ok"},
		{name: "token endpoint audience", edit: func(c *oauth.AssertionClaims) { c.Audience = []string{issuer + "/oauth2/token"} }, wantErr: "aud"},
		{name: "introspection endpoint audience", edit: func(c *oauth.AssertionClaims) { c.Audience = []string{issuer + "/oauth2/introspect"} }, wantErr: "aud"},
		{name: "exp within leeway", edit: func(c *oauth.AssertionClaims) {
			c.Expiry, c.IssuedAt = now.Add(-10*time.Second), now.Add(-time.Minute)
		}},
		{name: "iss differs", edit: func(c *oauth.AssertionClaims) { c.Issuer = "x" }, wantErr: "iss and sub"},
		{name: "sub differs", edit: func(c *oauth.AssertionClaims) { c.Subject = "x" }, wantErr: "iss and sub"},
		{name: "other audience", edit: func(c *oauth.AssertionClaims) { c.Audience = []string{"https://other"} }, wantErr: "aud"},
		{name: "issuer prefix", edit: func(c *oauth.AssertionClaims) { c.Audience = []string{issuer + "x"} }, wantErr: "aud"},
		{name: "trailing slash", edit: func(c *oauth.AssertionClaims) { c.Audience = []string{issuer + "/"} }, wantErr: "aud"},
		{name: "two audiences", edit: func(c *oauth.AssertionClaims) { c.Audience = []string{issuer, "https://other"} }, wantErr: "aud"},
		{name: "no audience", edit: func(c *oauth.AssertionClaims) { c.Audience = nil }, wantErr: "aud"},
		{name: "no exp", edit: func(c *oauth.AssertionClaims) { c.Expiry = time.Time{} }, wantErr: "no exp"},
		{name: "expired", edit: func(c *oauth.AssertionClaims) { c.Expiry = now.Add(-time.Minute) }, wantErr: "expired"},
		{name: "exp too far", edit: func(c *oauth.AssertionClaims) { c.Expiry = now.Add(6 * time.Minute) }, wantErr: "ahead"},
		{name: "nbf in future", edit: func(c *oauth.AssertionClaims) { c.NotBefore = now.Add(time.Minute) }, wantErr: "nbf"},
		{name: "iat in future", edit: func(c *oauth.AssertionClaims) { c.IssuedAt = now.Add(time.Minute); c.Expiry = now.Add(2 * time.Minute) }, wantErr: "iat"},
		{name: "no jti", edit: func(c *oauth.AssertionClaims) { c.ID = "" }, wantErr: "jti"},
		{name: "long jti", edit: func(c *oauth.AssertionClaims) { c.ID = strings.Repeat("j", 257) }, wantErr: "jti"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good()
			if tt.edit != nil {
				tt.edit(c)
			}
			err := oauth.CheckAssertionClaims(c, clientID, issuer, now, oauth.DefaultLeeway)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("err = %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("err = %v, want one mentioning %q", err, tt.wantErr)
			}
		})
	}
}

func TestCoreTokenAndIntrospection(t *testing.T) {
	f := newCore(t)
	ctx := context.Background()
	resp, oerr := f.srv.Token(ctx, tenant, oauth.Request{
		ContentType: oauth.FormContentType,
		Body:        strings.NewReader(form(f.assertion(t, issuer, time.Minute), "scope", "orders.read")),
	})
	if oerr != nil {
		t.Fatal(oerr)
	}
	if resp.TokenType != "Bearer" || resp.Scope != "orders.read" || resp.ExpiresIn != 600 {
		t.Fatalf("response = %+v", resp)
	}
	in, oerr := f.srv.Introspect(ctx, tenant, oauth.Request{
		ContentType: oauth.FormContentType,
		Body: strings.NewReader(url.Values{
			"token": {resp.AccessToken}, "client_assertion_type": {oauth.ClientAssertionTypeJWT},
			"client_assertion": {f.assertion(t, issuer, time.Minute)},
		}.Encode()),
	})
	if oerr != nil {
		t.Fatal(oerr)
	}
	if !in.Active || in.ClientID != clientID || in.Scope != "orders.read" || in.Agent != "tenants/acme/agents/agent-1" || in.Environment != "dev" {
		t.Fatalf("introspection = %+v", in)
	}
}

func TestCoreIntrospectionOfExpiredTokenIsInactive(t *testing.T) {
	f := newCore(t)
	ctx := context.Background()
	resp, oerr := f.srv.Token(ctx, tenant, oauth.Request{ContentType: oauth.FormContentType, Body: strings.NewReader(form(f.assertion(t, issuer, time.Minute)))})
	if oerr != nil {
		t.Fatal(oerr)
	}
	introspect := func() *oauth.Introspection {
		t.Helper()
		in, oerr := f.srv.Introspect(ctx, tenant, oauth.Request{ContentType: oauth.FormContentType, Body: strings.NewReader(url.Values{
			"token": {resp.AccessToken}, "client_assertion_type": {oauth.ClientAssertionTypeJWT},
			// The assertion is made on the server's (skewed) clock so that it stays valid.
			"client_assertion": {f.assertionAt(t, issuer, time.Now().Add(time.Duration(f.skew.Load())))},
		}.Encode())})
		if oerr != nil {
			t.Fatal(oerr)
		}
		return in
	}
	if !introspect().Active {
		t.Fatal("fresh token inactive")
	}
	f.skew.Store(int64(10*time.Minute + time.Second)) // the token lived 600s
	if in := introspect(); in.Active || in.ClientID != "" {
		t.Fatalf("expired token = %+v, want inactive", in)
	}
}

// FuzzTokenRequest feeds arbitrary content types and bodies through form parsing, assertion parsing
// and the whole token endpoint: it must never panic and must answer either a token or a well-formed
// OAuth error.
func FuzzTokenRequest(f *testing.F) {
	core := newCore(f)
	valid := core.assertion(f, issuer, time.Minute)
	parts := strings.Split(valid, ".")
	none := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","kid":"c1"}`)) + "." + parts[1] + "."
	hs := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","kid":"c1"}`)) + "." + parts[1] + "." + parts[2]
	ct := oauth.FormContentType
	f.Add(ct, []byte(form(valid)))
	f.Add(ct, []byte(form(valid, "scope", "orders.read orders.write", "resource", "https://api.example/")))
	f.Add(ct, []byte(form(none)))
	f.Add(ct, []byte(form(hs)))
	f.Add(ct, []byte(form("a.b.c")))
	f.Add(ct, []byte(form(parts[0]+"."+parts[1])))
	f.Add(ct, []byte(form(valid, "grant_type", "password")))
	f.Add(ct, []byte("grant_type=client_credentials&client_assertion=%zz"))
	f.Add(ct, []byte("grant_type=client_credentials;client_id=x"))
	f.Add(ct, []byte(form(valid, "resource", "relative/path", "resource", "https://a#frag")))
	f.Add(ct, []byte(form(valid, "scope", "\"quoted\" \x7f")))
	f.Add("application/json", []byte(`{"grant_type":"client_credentials"}`))
	f.Add("multipart/form-data; boundary=x", []byte("--x--"))
	f.Add(ct+"; charset=utf-16", []byte{0xff, 0xfe})
	f.Add(ct, []byte{})
	f.Fuzz(func(t *testing.T, contentType string, body []byte) {
		req, oerr := oauth.ParseTokenRequest(contentType, body)
		if oerr != nil && (oerr.Code == "" || oerr.Status < 400) {
			t.Fatalf("malformed error %+v", oerr)
		}
		if req != nil && req.Client.Assertion != "" {
			if a, err := oauth.ParseAssertion(req.Client.Assertion); err == nil && (a == nil || a.KeyID == "") {
				t.Fatalf("ParseAssertion accepted an assertion without kid: %+v", a)
			}
		}
		resp, oerr := core.srv.Token(context.Background(), tenant, oauth.Request{ContentType: contentType, Body: bytes.NewReader(body)})
		switch {
		case (resp == nil) == (oerr == nil):
			t.Fatalf("Token returned %v and %v", resp, oerr)
		case oerr != nil && (oerr.Code == "" || oerr.Status < 400 || oerr.Status > 599):
			t.Fatalf("malformed error %+v", oerr)
		case resp != nil && resp.AccessToken == "":
			t.Fatal("empty access token")
		}
	})
}
