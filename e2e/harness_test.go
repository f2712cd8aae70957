package e2e_test

import (
	"bufio"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/google/uuid"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// repoRoot finds the repository root (the directory holding go.work).
func repoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.work not found above the test directory")
		}
		dir = parent
	}
}

// buildBinaries builds agentid and agentctl from source into a temporary directory.
func buildBinaries(t testing.TB) (agentid, agentctl string) {
	t.Helper()
	out := t.TempDir()
	cmd := exec.Command("go", "build", "-o", out+"/", "./cmd/agentid", "./cmd/agentctl")
	cmd.Dir = repoRoot(t)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	return filepath.Join(out, "agentid"), filepath.Join(out, "agentctl")
}

// freePorts reserves n distinct free loopback ports.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var ls []net.Listener
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		_ = l.Close()
	}
	return ports
}

// platform is one running `agentid dev` process.
type platform struct {
	DataDir   string
	GRPCAddr  string
	HTTPURL   string
	NATSURL   string
	Ready     time.Duration
	cmd       *exec.Cmd
	mu        sync.Mutex
	output    strings.Builder
	readyLine chan struct{}
}

// startPlatform runs `agentid dev` on free ports and waits until it prints that it is ready.
func startPlatform(t testing.TB, agentid, dataDir string) *platform {
	t.Helper()
	return startPlatformOn(t, agentid, dataDir, freePorts(t, 5))
}

// startPlatformOn is startPlatform on given ports: gRPC, HTTP, NATS, Temporal, Temporal UI.
func startPlatformOn(t testing.TB, agentid, dataDir string, ports []int) *platform {
	t.Helper()
	p := &platform{
		DataDir:   dataDir,
		GRPCAddr:  fmt.Sprintf("127.0.0.1:%d", ports[0]),
		HTTPURL:   fmt.Sprintf("http://127.0.0.1:%d", ports[1]),
		NATSURL:   fmt.Sprintf("nats://127.0.0.1:%d", ports[2]),
		readyLine: make(chan struct{}),
	}
	p.cmd = exec.Command(agentid, "dev",
		"--data-dir", dataDir,
		"--grpc-addr", p.GRPCAddr,
		"--http-addr", strings.TrimPrefix(p.HTTPURL, "http://"),
		"--nats-port", fmt.Sprint(ports[2]),
		"--temporal-port", fmt.Sprint(ports[3]),
		"--temporal-ui-port", fmt.Sprint(ports[4]),
	)
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stderr = &lockedWriter{p: p}
	start := time.Now()
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start agentid dev: %v", err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		once := sync.Once{}
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.output.WriteString(line + "\n")
			p.mu.Unlock()
			if strings.Contains(line, "agentid is ready") {
				once.Do(func() { close(p.readyLine) })
			}
		}
	}()
	t.Cleanup(func() { p.stop(t) })
	select {
	case <-p.readyLine:
		p.Ready = time.Since(start)
	case <-time.After(4 * time.Minute):
		t.Fatalf("agentid dev did not become ready in 4 minutes; output:\n%s", p.Output())
	}
	return p
}

// stop sends SIGINT (as Ctrl-C does) and waits for a clean exit.
func (p *platform) stop(t testing.TB) {
	if p.cmd.ProcessState != nil {
		return
	}
	_ = p.cmd.Process.Signal(os.Interrupt)
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("agentid dev did not exit cleanly on interrupt: %v\n%s", err, p.Output())
		}
	case <-time.After(30 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		t.Errorf("agentid dev did not stop within 30s of an interrupt")
	}
}

// Pid is the process id of agentid dev.
func (p *platform) Pid() int { return p.cmd.Process.Pid }

// Output returns everything the process printed so far.
func (p *platform) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.output.String()
}

type lockedWriter struct{ p *platform }

func (w *lockedWriter) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	return w.p.output.Write(b)
}

// issuer returns the issuer identifier of a tenant.
func (p *platform) issuer(tenant string) string { return p.HTTPURL + "/t/" + tenant }

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
