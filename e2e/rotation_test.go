package e2e_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/names"
	"github.com/agentid/agentid/pkg/testkit"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// rotationOverlap is the overlap the platform runs with in TestAgentRotationEndToEnd: long enough
// for the loaders to pick up the new credential file, short enough for a test.
const rotationOverlap = 30 * time.Second

// rotationLoaders is how many goroutines request tokens during the rotation.
const rotationLoaders = 4

// rotationLoad is a token load of one agent: goroutines requesting tokens continuously with the
// credential current points to, counting requests and failures per key.
type rotationLoad struct {
	current  atomic.Pointer[authn.Credential]
	old      *authn.Credential
	requests atomic.Int64
	failures atomic.Int64
	byOld    atomic.Int64 // tokens issued to the old key
	byNew    atomic.Int64 // tokens issued to the new key
	lastOld  atomic.Value // string: the newest token the old key obtained

	mu     sync.Mutex
	errors []string
}

// run requests tokens until ctx is done, pausing a little between requests so the load leaves the
// platform's workers their share of the machine.
func (l *rotationLoad) run(ctx context.Context) {
	for ctx.Err() == nil {
		cred := l.current.Load()
		tok, err := resourceToken(ctx, cred, filesAudience, "docs.search")
		if ctx.Err() != nil {
			return // the test ended the load mid-request: not a failure of the platform
		}
		l.requests.Add(1)
		switch {
		case err != nil:
			l.failures.Add(1)
			l.mu.Lock()
			if len(l.errors) < 10 {
				l.errors = append(l.errors, fmt.Sprintf("%s: %v", time.Now().UTC().Format(time.RFC3339Nano), err))
			}
			l.mu.Unlock()
		case cred == l.old:
			l.byOld.Add(1)
			l.lastOld.Store(tok.AccessToken)
		default:
			l.byNew.Add(1)
		}
		select {
		case <-ctx.Done():
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// waitIssued waits until at least n more tokens were issued to the credential counted by c.
func waitIssued(t *testing.T, ctx context.Context, what string, c *atomic.Int64, n int64) {
	t.Helper()
	want := c.Load() + n
	waitFor(t, ctx, what, func() (bool, error) { return c.Load() >= want, fmt.Errorf("%d of %d", c.Load(), want) })
}

// TestAgentRotationEndToEnd rotates an ACTIVE agent's credential with `agentctl agents rotate` on
// `agentid dev --rotation-overlap 30s` while goroutines request tokens continuously: first with the
// old credential file, then, once the new file written by agentctl is accepted, with the new one
// (as a client picking up its new credential file would), before the overlap ends. Not one token
// request fails across the rotation. After the old key is removed, a token it obtained is refused by
// a pkg/authn verifier following REVOCATIONS and by introspection, the old key obtains no token,
// and tokens of the new key keep working.
func TestAgentRotationEndToEnd(t *testing.T) {
	agentidBin, agentctlBin := buildBinaries(t)
	dataDir, configDir, keys := t.TempDir(), t.TempDir(), t.TempDir()
	p := rememberDevNATS(&platform{testkit.StartDevWith(t, agentidBin, dataDir, testkit.DevOptions{
		Args: []string{"--rotation-overlap", rotationOverlap.String()},
	})})
	t.Cleanup(func() {
		if t.Failed() {
			lines := strings.Split(p.Output(), "\n")
			t.Logf("agentid dev output (last 300 lines):\n%s", strings.Join(lines[max(0, len(lines)-300):], "\n"))
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	if _, err := runCLI(t, agentctlBin, configDir, "login", "--dev", "--data-dir", dataDir, "--server", p.GRPCAddr); err != nil {
		t.Fatal(err)
	}
	registry := registryv1.NewRegistryServiceClient(adminConnection(t, ctx, p, dataDir))

	// The verifiers a resource server would run.
	deny := startRevocationFeed(t, ctx, p)
	offline, err := authn.NewJWKSVerifier(authn.JWKSVerifierConfig{
		IssuerBaseURL: p.HTTPURL, Audience: filesAudience, Tenants: []string{"default"}, Revocations: deny,
	})
	if err != nil {
		t.Fatal(err)
	}
	introFile := filepath.Join(keys, "introspector.json")
	if _, err := runCLI(t, agentctlBin, configDir, "clients", "create", "e2e-rotation-introspector", "--role", "introspector", "--key-out", introFile); err != nil {
		t.Fatal(err)
	}
	introCred, err := authn.LoadCredentialFile(introFile)
	if err != nil {
		t.Fatal(err)
	}
	introspection, err := authn.NewIntrospectionVerifier(authn.IntrospectionVerifierConfig{Credential: introCred, Audience: filesAudience})
	if err != nil {
		t.Fatal(err)
	}
	verifiers := []struct {
		name string
		v    authn.Verifier
	}{{"the revocation-following verifier", offline}, {"introspection", introspection}}

	// A low-risk agent, ACTIVE after auto-approved provisioning, whose credential file the loaders read.
	const rid = "e2e-rotation"
	id := names.DeriveAgentID("default", rid)
	oldCred, err := authn.NewCredential("default", id, p.issuer("default"))
	if err != nil {
		t.Fatal(err)
	}
	oldFile := filepath.Join(keys, "agent.json")
	if err := authn.WriteCredentialFile(oldFile, oldCred); err != nil {
		t.Fatal(err)
	}
	jwks, err := oldCred.PublicJWKS()
	if err != nil {
		t.Fatal(err)
	}
	res, err := registry.RegisterAgent(ctx, &registryv1.RegisterAgentRequest{Parent: "tenants/default", RequestId: rid, Agent: validAgent(string(jwks))})
	if err != nil {
		t.Fatal(err)
	}
	name := res.GetAgent().GetName()
	waitState(t, ctx, registry, name, registryv1.AgentState_AGENT_STATE_ACTIVE)
	oldKeys := getAgent(t, ctx, registry, name).GetKeys()
	if len(oldKeys) != 1 {
		t.Fatalf("the agent has keys %v, want its registration's one", oldKeys)
	}
	oldThumb := oldKeys[0].GetThumbprint()
	waitToken(t, ctx, suspendedAgent{name: name, cred: oldCred})

	// The load, with the old credential file as the agent's deployment reads it.
	loaded, err := authn.LoadCredentialFile(oldFile)
	if err != nil {
		t.Fatal(err)
	}
	load := &rotationLoad{old: loaded}
	load.current.Store(loaded)
	loadCtx, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for range rotationLoaders {
		wg.Go(func() { load.run(loadCtx) })
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			stopLoad()
			wg.Wait()
		}
	}
	defer stop()
	waitIssued(t, ctx, "tokens of the old key before the rotation", &load.byOld, 50)

	// The rotation: a new key generated by agentctl, its credential file written, the key registered.
	newFile := filepath.Join(keys, "agent-next.json")
	rotated := time.Now()
	out, err := runCLI(t, agentctlBin, configDir, "agents", "rotate", name, "--key-out", newFile)
	if err != nil {
		t.Fatal(err)
	}
	newCred, err := authn.LoadCredentialFile(newFile)
	if err != nil {
		t.Fatalf("agentctl agents rotate wrote no usable credential file: %v\n%s", err, out)
	}
	if newCred.ClientID != oldCred.ClientID || newCred.KeyID() == oldCred.KeyID() {
		t.Fatalf("new credential: client %s key %s; old: client %s key %s", newCred.ClientID, newCred.KeyID(), oldCred.ClientID, oldCred.KeyID())
	}
	var newThumb string
	for _, k := range getAgent(t, ctx, registry, name).GetKeys() {
		if k.GetThumbprint() != oldThumb {
			newThumb = k.GetThumbprint()
		}
	}
	if newThumb == "" || !strings.Contains(out, newThumb) {
		t.Fatalf("the registry holds no new key, or agentctl did not print it (%q):\n%s", newThumb, out)
	}

	// The agent's deployment rolls the new file out once the issuer accepts it (the rotation run has
	// added the key to the client); the loaders switch to it before the overlap ends.
	probe := waitFor(t, ctx, "the new credential to be accepted", func() (bool, error) {
		_, err := resourceToken(ctx, newCred, filesAudience, "docs.search")
		return err == nil, err
	})
	load.current.Store(newCred)
	switched := time.Now()
	if keys := getAgent(t, ctx, registry, name).GetKeys(); len(keys) != 2 {
		t.Fatalf("after the switch the agent has keys %v, want both (the switch must come before the overlap ends)", keys)
	}
	waitIssued(t, ctx, "tokens of the new key during the overlap", &load.byNew, 50)
	oldTok, _ := load.lastOld.Load().(string)
	if oldTok == "" {
		t.Fatal("no token of the old key was kept")
	}
	for _, v := range verifiers {
		if _, err := v.v.Verify(ctx, oldTok); err != nil {
			t.Fatalf("%s refused the old key's token during the overlap: %v", v.name, err)
		}
	}

	// The overlap ends: the old key leaves the registry (and the client), its tokens are revoked.
	removed := waitFor(t, ctx, "the old key to be removed", func() (bool, error) {
		var got []string
		for _, k := range getAgent(t, ctx, registry, name).GetKeys() {
			got = append(got, k.GetThumbprint())
		}
		return slices.Equal(got, []string{newThumb}), fmt.Errorf("keys %v", got)
	})
	for _, v := range verifiers {
		waitRefusedBy(t, ctx, v.v, oldTok, v.name)
	}
	waitIssued(t, ctx, "tokens of the new key after the removal", &load.byNew, 50)
	stop()

	if n := load.failures.Load(); n != 0 {
		load.mu.Lock()
		t.Fatalf("%d of %d token requests failed across the rotation: %v", n, load.requests.Load(), load.errors)
	}
	// The old key obtains no token any more; the new key's tokens pass both verifiers.
	_, err = resourceToken(ctx, oldCred, filesAudience, "docs.search")
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.ErrorCode != "invalid_client" {
		t.Fatalf("token request with the removed key: %v, want invalid_client", err)
	}
	newTok, err := resourceToken(ctx, newCred, filesAudience, "docs.search")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range verifiers {
		if _, err := v.v.Verify(ctx, newTok.AccessToken); err != nil {
			t.Fatalf("%s refused the new key's token after the rotation: %v", v.name, err)
		}
	}
	t.Logf("rotation under load: %d loaders, %d token requests (%d with the old key, %d with the new), %d failed; "+
		"new key accepted %s after agentctl agents rotate, loaders switched %s after it, old key removed %s after it (overlap %s)",
		rotationLoaders, load.requests.Load(), load.byOld.Load(), load.byNew.Load(), load.failures.Load(),
		probe.Sub(rotated).Round(time.Millisecond), switched.Sub(rotated).Round(time.Millisecond), removed.Sub(rotated).Round(time.Millisecond), rotationOverlap)
}
