package app_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/grpcx"
	"github.com/agentid/agentid/pkg/testkit"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"

	"github.com/agentid/agentid/services/issuer/app"
)

const assertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

var testKEK = bytes.Repeat([]byte{0x42}, 32)

// replica is one running issuer: its app, its HTTP server and its event store.
type replica struct {
	app   *app.App
	srv   *httptest.Server
	store *eventstore.Store
	base  string
	reg   *prometheus.Registry // the replica's metrics

	grpcOnce sync.Once
	grpc     issuerv1.IssuerServiceClient
}

func testLogger(t testing.TB) *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv("ISSUER_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: level}))
}

// startReplica runs an issuer on n until the test ends and waits until it is ready. publicURL is
// the shared public URL of the replicas; empty means the replica's own test server.
func startReplica(t testing.TB, n *testkit.NATS, publicURL string) *replica {
	t.Helper()
	r := launchReplica(t, n, publicURL)
	r.waitReady(t)
	return r
}

// launchReplica starts an issuer's tasks without waiting for it to be ready.
func launchReplica(t testing.TB, n *testkit.NATS, publicURL string) *replica {
	t.Helper()
	return launchReplicaWith(t, n, publicURL, nil)
}

// launchReplicaWith is launchReplica with a hook that adjusts the configuration.
func launchReplicaWith(t testing.TB, n *testkit.NATS, publicURL string, configure func(*app.Config)) *replica {
	t.Helper()
	return launchReplicaWithDeps(t, n, publicURL, configure, nil)
}

// launchReplicaWithDeps is launchReplicaWith with a second hook that adjusts the dependencies.
func launchReplicaWithDeps(t testing.TB, n *testkit.NATS, publicURL string, configure func(*app.Config), withDeps func(*app.Deps)) *replica {
	t.Helper()
	logger := testLogger(t)
	store := eventstore.New(n.JetStream(t), eventstore.WithSource("agentid/issuer"), eventstore.WithLogger(logger))
	var handler atomic.Pointer[http.Handler]
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		(*handler.Load()).ServeHTTP(w, r)
	}))
	if publicURL == "" {
		publicURL = srv.URL
	}
	cfg := app.Config{PublicURL: publicURL, KEK: testKEK}
	if configure != nil {
		configure(&cfg)
	}
	reg := prometheus.NewRegistry()
	deps := app.Deps{Store: store, Logger: logger, Registerer: reg}
	if withDeps != nil {
		withDeps(&deps)
	}
	a, err := app.New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	h := a.HTTPHandler()
	handler.Store(&h)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, task := range a.Tasks() {
		wg.Go(func() {
			if err := task(ctx); err != nil {
				t.Errorf("issuer task: %v", err)
			}
		})
	}
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		srv.Close()
	})
	return &replica{app: a, srv: srv, store: store, base: publicURL, reg: reg}
}

func (r *replica) waitReady(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testkit.DefaultWait)
	defer cancel()
	if err := r.app.Ready(ctx); err != nil {
		t.Fatal(err)
	}
}

func startIssuer(t testing.TB) *replica {
	t.Helper()
	return startReplica(t, testkit.StartNATS(t), "")
}

func (r *replica) issuer(tenant string) string   { return r.base + "/t/" + tenant }
func (r *replica) tokenURL(tenant string) string { return r.srv.URL + "/t/" + tenant + "/oauth2/token" }
func (r *replica) introspectURL(tenant string) string {
	return r.srv.URL + "/t/" + tenant + "/oauth2/introspect"
}

// fakePrincipals are the bearer tokens the gRPC test server's fake verifier accepts.
var fakePrincipals = map[string]*authn.Claims{
	"platform-admin": {Subject: "admin", ClientID: "admin", Tenant: authn.SystemTenant, Roles: []string{"platform-admin"}},
	"acme-admin":     {Subject: "alice", ClientID: "alice", Tenant: "acme", Roles: []string{"tenant-admin"}},
	"acme-auditor":   {Subject: "audrey", ClientID: "audrey", Tenant: "acme", Roles: []string{"auditor"}},
	"beta-admin":     {Subject: "bob", ClientID: "bob", Tenant: "beta", Roles: []string{"tenant-admin"}},
	"acme-agent":     {Subject: "agent-x", ClientID: "agent-x", Tenant: "acme", Agent: "tenants/acme/agents/agent-x"},
}

// admin returns an IssuerService client on a gRPC server whose verifier accepts fakePrincipals.
func (r *replica) admin(t testing.TB) issuerv1.IssuerServiceClient {
	t.Helper()
	r.grpcOnce.Do(func() {
		s := grpcx.NewServer(grpcx.ServerConfig{Logger: testLogger(t), Verifier: testkit.StaticVerifier(fakePrincipals), Registry: prometheus.NewRegistry()})
		r.app.RegisterGRPC(s)
		r.grpc = issuerv1.NewIssuerServiceClient(testkit.ServeGRPC(t, s))
	})
	return r.grpc
}

// as returns a context that calls gRPC as the named fake principal ("" for no token).
func as(name string) context.Context {
	return testkit.WithBearer(context.Background(), name)
}

// testClient is an OAuth client whose private key the test holds.
type testClient struct {
	tenant string
	id     string
	key    crypto.Signer
	alg    jose.SignatureAlgorithm
	kid    string
	// resources are the RFC 8707 resources register gives the client; default [agentResource].
	resources []string
}

// agentResource is the resource registered for the test agents' clients: their default audience.
const agentResource = "https://orders.example"

func newTestClient(t testing.TB, tenant, id string) *testClient {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &testClient{tenant: tenant, id: id, key: priv, alg: jose.ES256, kid: "k-" + id}
}

func (c *testClient) jwks(t testing.TB) string {
	t.Helper()
	pub := jose.JSONWebKey{Key: c.key.Public(), KeyID: c.kid, Algorithm: string(c.alg), Use: "sig"}
	b, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{pub}})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// register makes c an agent client of r with the given scopes, and its agent ACTIVE.
func (c *testClient) register(t testing.TB, r *replica, scopes ...string) {
	t.Helper()
	c.activate(t, r)
	err := r.app.EnsureClient(context.Background(), c.tenant, &issuerv1.Client{
		ClientId:    c.id,
		Agent:       "tenants/" + c.tenant + "/agents/" + c.id,
		Environment: "prod",
		PublicJwks:  c.jwks(t),
		Scopes:      scopes,
		Resources:   c.registeredResources(),
	})
	if err != nil {
		t.Fatal(err)
	}
}

// registeredResources are the resources register gives the client.
func (c *testClient) registeredResources() []string {
	if len(c.resources) > 0 {
		return c.resources
	}
	return []string{agentResource}
}

// claims returns fresh assertion claims for audience aud.
func (c *testClient) claims(aud string) map[string]any {
	now := time.Now()
	return map[string]any{
		"iss": c.id, "sub": c.id, "aud": aud,
		"iat": now.Unix(), "exp": now.Add(time.Minute).Unix(), "jti": uuid.NewString(),
	}
}

// sign signs claims with the client's key and kid.
func (c *testClient) sign(t testing.TB, claims map[string]any) string {
	t.Helper()
	return c.signWithKid(t, claims, c.kid)
}

func (c *testClient) signWithKid(t testing.TB, claims map[string]any, kid string) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: c.alg, Key: jose.JSONWebKey{Key: c.key, KeyID: kid}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	s, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// assertion is a valid assertion for r's token endpoint of the client's tenant.
func (c *testClient) assertion(t testing.TB, r *replica) string {
	t.Helper()
	return c.sign(t, c.claims(r.issuer(c.tenant)))
}

func tokenForm(assertion string, extra ...string) url.Values {
	v := url.Values{
		"grant_type":            {"client_credentials"},
		"client_assertion_type": {assertionType},
		"client_assertion":      {assertion},
	}
	for i := 0; i+1 < len(extra); i += 2 {
		v.Add(extra[i], extra[i+1])
	}
	return v
}

// oauthResponse is a decoded JSON response of a token or introspection endpoint.
type oauthResponse struct {
	status int
	header http.Header
	body   map[string]any
}

func (o oauthResponse) str(k string) string { s, _ := o.body[k].(string); return s }

func post(t testing.TB, endpoint, contentType, body string, headers ...string) oauthResponse {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, endpoint, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	out := oauthResponse{status: resp.StatusCode, header: resp.Header}
	if err := json.Unmarshal(raw, &out.body); err != nil {
		t.Fatalf("POST %s: %d, body %q is not JSON: %v", endpoint, resp.StatusCode, raw, err)
	}
	return out
}

func postForm(t testing.TB, endpoint string, v url.Values, headers ...string) oauthResponse {
	t.Helper()
	return post(t, endpoint, "application/x-www-form-urlencoded", v.Encode(), headers...)
}

// requestToken asks r for a token for c and fails the test unless one is issued.
func requestToken(t testing.TB, r *replica, c *testClient, extra ...string) oauthResponse {
	t.Helper()
	resp := postForm(t, r.tokenURL(c.tenant), tokenForm(c.assertion(t, r), extra...))
	if resp.status != http.StatusOK || resp.str("access_token") == "" {
		t.Fatalf("token request: %d %v", resp.status, resp.body)
	}
	return resp
}

// wantOAuthError checks an RFC 6749 §5.2 error response.
func wantOAuthError(t testing.TB, resp oauthResponse, status int, code string) {
	t.Helper()
	if resp.status != status || resp.str("error") != code {
		t.Fatalf("got %d %v, want %d %s", resp.status, resp.body, status, code)
	}
	if _, ok := resp.body["access_token"]; ok {
		t.Fatal("an error response carries an access token")
	}
	if status == http.StatusUnauthorized && resp.header.Get("WWW-Authenticate") == "" {
		t.Fatal("401 without WWW-Authenticate")
	}
	if cc := resp.header.Get("Cache-Control"); cc != "no-store" {
		t.Fatalf("Cache-Control = %q, want no-store", cc)
	}
}

// introspect asks tenant's introspection endpoint about token, authenticating as caller.
func introspect(t testing.TB, r *replica, caller *testClient, tenant, token string) oauthResponse {
	t.Helper()
	v := url.Values{
		"token":                 {token},
		"client_assertion_type": {assertionType},
		"client_assertion":      {caller.sign(t, caller.claims(r.issuer(tenant)))},
	}
	return postForm(t, r.introspectURL(tenant), v)
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
