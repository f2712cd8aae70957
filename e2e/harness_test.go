package e2e_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/agentid/agentid/pkg/testkit"
)

// repoRoot finds the repository root (the directory holding go.work).
func repoRoot(t testing.TB) string { return testkit.RepoRoot(t) }

// buildBinaries builds agentid and agentctl from source into a temporary directory.
func buildBinaries(t testing.TB) (agentid, agentctl string) {
	t.Helper()
	dir := testkit.BuildCommands(t, "./cmd/agentid", "./cmd/agentctl")
	return filepath.Join(dir, "agentid"), filepath.Join(dir, "agentctl")
}

// freePorts reserves n distinct free loopback ports.
func freePorts(t testing.TB, n int) []int { return testkit.FreePorts(t, n) }

// platform is one running `agentid dev` process.
type platform struct {
	*testkit.DevPlatform
}

// startPlatform runs `agentid dev` on free ports and waits until it prints that it is ready.
func startPlatform(t testing.TB, agentid, dataDir string) *platform {
	t.Helper()
	return startPlatformOn(t, agentid, dataDir, nil)
}

// startPlatformOn is startPlatform on given ports: gRPC, HTTP, NATS, Temporal, Temporal UI.
func startPlatformOn(t testing.TB, agentid, dataDir string, ports []int) *platform {
	t.Helper()
	return rememberDevNATS(&platform{testkit.StartDev(t, agentid, dataDir, ports)})
}

// issuer returns the issuer identifier of a tenant.
func (p *platform) issuer(tenant string) string { return p.Issuer(tenant) }

// credentialFile is the documented JSON credential format of service identities.
type credentialFile struct {
	Tenant     string          `json:"tenant"`
	ClientID   string          `json:"client_id"`
	Issuer     string          `json:"issuer"`
	TokenURL   string          `json:"token_url"`
	PrivateJWK json.RawMessage `json:"private_jwk"`
}

// readCredential reads a credential file as any operator would.
func readCredential(t testing.TB, path string) (*credentialFile, jose.JSONWebKey) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read credential %s: %v", path, err)
	}
	var cf credentialFile
	if err := json.Unmarshal(b, &cf); err != nil {
		t.Fatalf("parse credential %s: %v", path, err)
	}
	var key jose.JSONWebKey
	if err := key.UnmarshalJSON(cf.PrivateJWK); err != nil {
		t.Fatalf("parse private_jwk of %s: %v", path, err)
	}
	return &cf, key
}

// agentKey is a fresh ES256 key pair for an agent, as a developer would make one.
type agentKey struct {
	private jose.JSONWebKey
}

func newAgentKey(t testing.TB) agentKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	jwk := jose.JSONWebKey{Key: k, Algorithm: string(jose.ES256), Use: "sig"}
	tp, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	jwk.KeyID = base64.RawURLEncoding.EncodeToString(tp)
	return agentKey{private: jwk}
}

// publicJWKS is the JWK Set of the public key, as registered with the registry.
func (k agentKey) publicJWKS(t testing.TB) string {
	t.Helper()
	b, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{k.private.Public()}})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// assertion signs an RFC 7523 client assertion.
func assertion(t testing.TB, key jose.JSONWebKey, clientID, audience string) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", key.KeyID))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	raw, err := jwt.Signed(signer).Claims(jwt.Claims{
		Issuer:   clientID,
		Subject:  clientID,
		Audience: jwt.Audience{audience},
		IssuedAt: jwt.NewNumericDate(now),
		Expiry:   jwt.NewNumericDate(now.Add(time.Minute)),
		ID:       uuid.NewString(),
	}).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// clientCredentials is a golang.org/x/oauth2 client-credentials client with private_key_jwt.
func clientCredentials(t testing.TB, key jose.JSONWebKey, clientID, issuer string, scopes ...string) *clientcredentials.Config {
	return &clientcredentials.Config{
		ClientID: clientID,
		TokenURL: issuer + "/oauth2/token",
		Scopes:   scopes,
		EndpointParams: map[string][]string{
			"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"},
			"client_assertion":      {assertion(t, key, clientID, issuer)},
		},
		AuthStyle: oauth2.AuthStyleInParams,
	}
}

// bearer is per-RPC gRPC credentials from an OAuth token source (loopback: no TLS).
type bearer struct{ ts oauth2.TokenSource }

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	tok, err := b.ts.Token()
	if err != nil {
		return nil, err
	}
	return map[string]string{"authorization": "Bearer " + tok.AccessToken}, nil
}

func (bearer) RequireTransportSecurity() bool { return false }

// dial connects a gRPC client to the platform with the given token.
func (p *platform) dial(t testing.TB, token string) *grpc.ClientConn {
	t.Helper()
	return p.dialWith(t, grpc.WithPerRPCCredentials(bearer{ts: oauth2.StaticTokenSource(&oauth2.Token{AccessToken: token})}))
}

// dialWith connects a gRPC client to the platform with extra options.
func (p *platform) dialWith(t testing.TB, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(p.GRPCAddr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// run runs agentctl with an isolated config directory and returns its stdout.
func runCLI(t testing.TB, agentctl, configDir string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(agentctl, args...)
	cmd.Env = append(os.Environ(), "AGENTID_CONFIG_DIR="+configDir)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("agentctl %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out), nil
}

// pollingConsumer creates an ordered consumer for one round of a test's polling loop. The
// platform's NATS identities may not delete consumers, so each round's consumer outlives it until
// its inactive threshold: with nats.go's default of five minutes, a loop polling every 25–50 ms
// reaches the server's limit of 1,000 consumers per stream within a minute and every later
// consumer — the platform's own included — is refused. Two idle seconds remove it.
func pollingConsumer(ctx context.Context, js jetstream.JetStream, stream string, cfg jetstream.OrderedConsumerConfig) (jetstream.Consumer, error) {
	cfg.InactiveThreshold = 2 * time.Second
	return js.OrderedConsumer(ctx, stream, cfg)
}
