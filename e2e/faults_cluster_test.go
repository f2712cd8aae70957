//go:build faults

package e2e_test

// The cluster scenario of the fault-injection suite: the production topology as separate processes on
// one machine — a 3-node NATS cluster of real nats-server processes (JetStream on file storage,
// sync_interval always, every stream R3), two replicas each of registry and issuer, one of policy,
// monitor and lifecycle, the Temporal dev server — under token load. One NATS node (the leader of
// the AGENTS stream), one replica of registry and of issuer and the single policy, monitor and
// lifecycle processes are killed with SIGKILL at once while the fault workload runs; the singletons
// and the NATS node are restarted, the workload finishes against the survivors, the killed replicas
// come back, and the invariants of faultInvariants.check must hold.
//
// Replica b of registry and issuer survives; it is what the lifecycle worker calls and what the
// issuer's public URL names (there is no load balancer in front of the replicas). The test's own
// gRPC clients balance over both replicas (round robin), and the token load asks both issuers.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/testkit"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// clusterRestartPause is how long the killed processes stay down before they are started again: a
// fixed pause that makes the outage real, not a wait for a condition.
const clusterRestartPause = 3 * time.Second

// clusterLoadInterval is the pause between two token requests of the load on one issuer replica
// (about 17 requests per second each, 33 in all).
const clusterLoadInterval = 60 * time.Millisecond

// clusterLogDirEnv names a directory that receives every process's output when set (for digging into
// a failure; the tails are logged on failure anyway).
const clusterLogDirEnv = "AGENTID_FAULTS_LOG_DIR"

// natsNode is one nats-server process of the cluster.
type natsNode struct {
	name string
	url  string
	proc *testkit.Process
}

// serviceAddrs are the gRPC and HTTP addresses of one service process.
type serviceAddrs struct{ grpc, http string }

// faultCluster is the running topology.
type faultCluster struct {
	nodes     []*natsNode
	natsURL   string // every node, comma-separated
	publicURL string // the issuers' public URL: replica b's HTTP address
	addrs     map[string]serviceAddrs
	procs     map[string]*testkit.Process // by name: registry-a, registry-b, issuer-a, issuer-b, policy, monitor, lifecycle
	adminCred *authn.Credential
}

// startNATSCluster starts three nats-server processes routed to each other on loopback and waits until
// every node reports JetStream healthy.
func startNATSCluster(t *testing.T, bin, dir string) []*natsNode {
	t.Helper()
	ports := freePorts(t, 9) // client, monitoring and route port of each node
	var routes []string
	for i := range 3 {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", ports[3*i+2]))
	}
	var nodes []*natsNode
	for i := range 3 {
		name := fmt.Sprintf("faults-n%d", i+1)
		store := filepath.Join(dir, name)
		conf := fmt.Sprintf(`server_name: %s
listen: 127.0.0.1:%d
http: 127.0.0.1:%d
jetstream {
  store_dir: %q
  sync_interval: always
}
cluster {
  name: agentid-faults
  listen: 127.0.0.1:%d
  routes: [%s]
}
`, name, ports[3*i], ports[3*i+1], store, ports[3*i+2], strings.Join(routes, ", "))
		confFile := filepath.Join(dir, name+".conf")
		if err := os.WriteFile(confFile, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		p := testkit.NewProcess(t, testkit.ProcessConfig{
			Name: name, Binary: bin, Args: []string{"-c", confFile},
			ReadyURL: fmt.Sprintf("http://127.0.0.1:%d/healthz", ports[3*i+1]),
		})
		p.Start(t)
		nodes = append(nodes, &natsNode{name: name, url: fmt.Sprintf("nats://127.0.0.1:%d", ports[3*i]), proc: p})
	}
	for i, n := range nodes {
		n.proc.WaitReady(t)
		// Every write is fsynced before it is acknowledged, as deploy/nats/nats.conf has it.
		res, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/varz", ports[3*i+1]))
		if err != nil {
			t.Fatal(err)
		}
		var varz struct {
			JetStream struct {
				Config struct {
					SyncAlways bool `json:"sync_always"`
				} `json:"config"`
			} `json:"jetstream"`
		}
		err = json.NewDecoder(res.Body).Decode(&varz)
		_ = res.Body.Close()
		if err != nil {
			t.Fatalf("%s /varz: %v", n.name, err)
		}
		if !varz.JetStream.Config.SyncAlways {
			t.Fatalf("%s does not fsync every write (jetstream sync_always is false)", n.name)
		}
	}
	return nodes
}

// startFaultCluster builds the binaries and starts the whole topology, each process ready.
func startFaultCluster(t *testing.T, ctx context.Context) *faultCluster {
	t.Helper()
	natsBin := testkit.BuildNATSServer(t)
	binDir := testkit.BuildCommands(t, "./services/registry/cmd/registry", "./services/issuer/cmd/issuer",
		"./services/policy/cmd/policy", "./services/monitor/cmd/monitor", "./services/lifecycle/cmd/lifecycle")
	temporal := testkit.StartTemporal(t)
	dir := t.TempDir()

	c := &faultCluster{addrs: map[string]serviceAddrs{}, procs: map[string]*testkit.Process{}}
	c.nodes = startNATSCluster(t, natsBin, dir)
	var urls []string
	for _, n := range c.nodes {
		urls = append(urls, n.url)
	}
	c.natsURL = strings.Join(urls, ",")

	names := []string{"registry-a", "registry-b", "issuer-a", "issuer-b", "policy", "monitor", "lifecycle"}
	ports := freePorts(t, 2*len(names))
	for i, name := range names {
		c.addrs[name] = serviceAddrs{grpc: fmt.Sprintf("127.0.0.1:%d", ports[2*i]), http: fmt.Sprintf("127.0.0.1:%d", ports[2*i+1])}
	}
	c.publicURL = "http://" + c.addrs["issuer-b"].http

	// Secrets, as deploy/secrets/generate.sh makes them.
	secrets := filepath.Join(dir, "secrets")
	if err := os.MkdirAll(secrets, 0o700); err != nil {
		t.Fatal(err)
	}
	kek := make([]byte, 32)
	if _, err := rand.Read(kek); err != nil {
		t.Fatal(err)
	}
	kekFile := filepath.Join(secrets, "kek.hex")
	if err := os.WriteFile(kekFile, []byte(hex.EncodeToString(kek)), 0o600); err != nil {
		t.Fatal(err)
	}
	creds := map[string]*authn.Credential{}
	for _, id := range []string{"lifecycle-worker", "bootstrap-admin"} {
		cred, err := authn.NewCredential(authn.SystemTenant, id, c.publicURL+"/t/"+authn.SystemTenant)
		if err != nil {
			t.Fatal(err)
		}
		if err := authn.WriteCredentialFile(filepath.Join(secrets, id+".json"), cred); err != nil {
			t.Fatal(err)
		}
		jwks, err := cred.PublicJWKS()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(secrets, id+".jwks.json"), jwks, 0o600); err != nil {
			t.Fatal(err)
		}
		creds[id] = cred
	}
	c.adminCred = creds["bootstrap-admin"]

	for _, name := range names {
		svc, _, _ := strings.Cut(name, "-")
		a := c.addrs[name]
		args := []string{
			"--nats-url", c.natsURL, "--grpc-addr", a.grpc, "--http-addr", a.http,
			"--issuer-url", c.publicURL, "--stream-replicas", "3",
		}
		switch svc {
		case "issuer":
			args = append(args, "--public-url", c.publicURL, "--kek-file", kekFile,
				"--lifecycle-client", "lifecycle-worker="+filepath.Join(secrets, "lifecycle-worker.jwks.json"),
				"--platform-client", "bootstrap-admin="+filepath.Join(secrets, "bootstrap-admin.jwks.json"))
		case "monitor":
			args = append(args, "--duckdb-path", filepath.Join(dir, "monitor", "telemetry.duckdb"))
		case "lifecycle":
			args = append(args, "--temporal-address", temporal.HostPort(), "--temporal-namespace", temporal.Namespace(),
				"--registry-addr", c.addrs["registry-b"].grpc, "--issuer-addr", c.addrs["issuer-b"].grpc,
				"--policy-addr", c.addrs["policy"].grpc, "--credentials", filepath.Join(secrets, "lifecycle-worker.json"))
		}
		c.procs[name] = testkit.NewProcess(t, testkit.ProcessConfig{
			Name: name, Binary: filepath.Join(binDir, svc), Args: args, ReadyURL: "http://" + a.http + "/readyz",
		})
	}
	if err := os.MkdirAll(filepath.Join(dir, "monitor"), 0o700); err != nil {
		t.Fatal(err)
	}
	if logDir := os.Getenv(clusterLogDirEnv); logDir != "" {
		t.Cleanup(func() { c.writeLogs(t, logDir) })
	}

	// Staged start: registry-a creates the event streams and issuer-a its replay-cache bucket before
	// anyone else asks for them (processes creating the same new R3 stream at once time out on all
	// but one: nats-io/nats.go#949); the lifecycle worker authenticates at the issuer and calls
	// registry, issuer and policy, so it starts last.
	for _, stage := range [][]string{{"registry-a"}, {"issuer-a"}, {"registry-b", "issuer-b", "policy", "monitor"}, {"lifecycle"}} {
		for _, name := range stage {
			c.procs[name].Start(t)
		}
		for _, name := range stage {
			t.Logf("%s ready in %s", name, c.procs[name].WaitReady(t).Round(time.Millisecond))
		}
	}
	return c
}

// writeLogs writes each process's output into dir.
func (c *faultCluster) writeLogs(t *testing.T, dir string) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Logf("logs: %v", err)
		return
	}
	all := map[string]*testkit.Process{}
	for name, p := range c.procs {
		all[name] = p
	}
	for _, n := range c.nodes {
		all[n.name] = n.proc
	}
	for name, p := range all {
		if err := os.WriteFile(filepath.Join(dir, name+".log"), []byte(p.Output()), 0o644); err != nil {
			t.Logf("logs: %v", err)
		}
	}
	t.Logf("process logs in %s", dir)
}

// clusterRestartBackoff is the pause before a service that exited during its start is started again,
// as an orchestrator's restart policy does.
const clusterRestartBackoff = time.Second

// restart starts a killed service again, again and again while it exits before it is ready (as
// compose's `restart: unless-stopped` would), and returns the time from its first start to ready.
// Every exit on the way is logged with its reason: a service should wait for NATS, not exit.
func (c *faultCluster) restart(ctx context.Context, t *testing.T, name string) (time.Duration, error) {
	p := c.procs[name]
	before := p.Starts()
	d, starts, err := p.StartUntilReady(ctx, clusterRestartBackoff)
	if starts > 1 {
		var exits []string
		for _, line := range strings.Split(p.Output(), "\n") {
			if strings.Contains(line, `"msg":"exiting"`) {
				exits = append(exits, line)
			}
		}
		if len(exits) > starts-1 {
			exits = exits[len(exits)-(starts-1):]
		}
		t.Logf("%s exited %d times before it was ready after its restart (starts %d to %d):\n%s",
			name, starts-1, before+1, before+starts, strings.Join(exits, "\n"))
	}
	return d, err
}

// dial connects as the bootstrap admin to the gRPC addresses given, balancing round robin over them.
func (c *faultCluster) dial(t *testing.T, ctx context.Context, name string, addrs ...string) *grpc.ClientConn {
	t.Helper()
	r := manual.NewBuilderWithScheme("faults-" + name)
	var state resolver.State
	for _, a := range addrs {
		state.Addresses = append(state.Addresses, resolver.Address{Addr: a})
	}
	r.InitialState(state)
	conn, err := grpc.NewClient(r.Scheme()+":///"+name,
		grpc.WithResolvers(r),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(authn.PerRPCCredentials(c.adminCred.TokenSource(ctx), false)),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// target is the cluster as a faultTarget: registry and issuer over both replicas.
func (c *faultCluster) target(t *testing.T, ctx context.Context) faultTarget {
	t.Helper()
	return faultTarget{
		natsURL:   c.natsURL,
		issuerURL: c.publicURL + "/t/default",
		registry:  c.dial(t, ctx, "registry", c.addrs["registry-a"].grpc, c.addrs["registry-b"].grpc),
		issuer:    c.dial(t, ctx, "issuer", c.addrs["issuer-a"].grpc, c.addrs["issuer-b"].grpc),
		lifecycle: c.dial(t, ctx, "lifecycle", c.addrs["lifecycle"].grpc),
		monitor:   c.dial(t, ctx, "monitor", c.addrs["monitor"].grpc),
	}
}

// tokenURL is the token endpoint of tenant default on one issuer replica.
func (c *faultCluster) tokenURL(replica string) string {
	return "http://" + c.addrs[replica].http + "/t/default/oauth2/token"
}

// loadAgent is an ACTIVE agent whose credential the token load uses.
type loadAgent struct {
	clientID string
	key      jose.JSONWebKey
}

// registerLoadAgent creates tenant default, registers the load's agent and waits until both issuer
// replicas issue it tokens.
func (c *faultCluster) registerLoadAgent(t *testing.T, ctx context.Context, tg faultTarget) loadAgent {
	t.Helper()
	registry := registryv1.NewRegistryServiceClient(tg.registry)
	testkit.Eventually(t, 0, "tenant default", func() (bool, error) {
		_, err := registry.CreateTenant(ctx, &registryv1.CreateTenantRequest{
			TenantId: "default", DisplayName: "Default tenant", RequestId: "faults-cluster-tenant-default",
		})
		return err == nil, err
	})
	key, err := authn.NewSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	jwks, err := authn.PublicJWKSOf(key)
	if err != nil {
		t.Fatal(err)
	}
	var name string
	testkit.Eventually(t, 0, "the load agent's registration", func() (bool, error) {
		res, err := registry.RegisterAgent(ctx, &registryv1.RegisterAgentRequest{
			Parent: "tenants/default",
			Agent: &registryv1.Agent{
				DisplayName: "cluster token load", Owner: "team:faults", Sponsor: "team:platform", Purpose: "token load during faults",
				Environment: registryv1.Environment_ENVIRONMENT_DEV, Autonomy: registryv1.Autonomy_AUTONOMY_ASSISTIVE,
				IdentityModel: registryv1.IdentityModel_IDENTITY_MODEL_AUTONOMOUS, TrustBoundary: registryv1.TrustBoundary_TRUST_BOUNDARY_INTERNAL,
				DataSensitivity: registryv1.DataSensitivity_DATA_SENSITIVITY_INTERNAL, Scopes: []string{"faq.read"},
				PublicJwks: string(jwks),
			},
			RequestId: "faults-cluster-register-load",
		})
		if err != nil {
			return false, err
		}
		name = res.GetAgent().GetName()
		return true, nil
	})
	testkit.Eventually(t, 0, "the load agent to be ACTIVE", func() (bool, error) {
		res, err := registry.GetAgent(ctx, &registryv1.GetAgentRequest{Name: name})
		if err != nil {
			return false, err
		}
		return res.GetAgent().GetState() == registryv1.AgentState_AGENT_STATE_ACTIVE, fmt.Errorf("%s is %s", name, res.GetAgent().GetState())
	})
	a := loadAgent{clientID: name[strings.LastIndex(name, "/")+1:], key: key}
	hc := &http.Client{Timeout: 5 * time.Second}
	for _, replica := range []string{"issuer-a", "issuer-b"} {
		testkit.Eventually(t, 0, "a token for the load agent from "+replica, func() (bool, error) {
			err := c.requestToken(ctx, hc, replica, a)
			return err == nil, err
		})
	}
	return a
}

// requestToken asks one issuer replica for a client-credentials token of the load agent, with a
// fresh client assertion addressed to the issuer identifier (the public URL).
func (c *faultCluster) requestToken(ctx context.Context, hc *http.Client, replica string, a loadAgent) error {
	assertion, err := authn.SignAssertion(a.key, a.clientID, c.publicURL+"/t/default", time.Now())
	if err != nil {
		return err
	}
	form := url.Values{
		"grant_type":            {"client_credentials"},
		"client_id":             {a.clientID},
		"client_assertion_type": {authn.ClientAssertionType},
		"client_assertion":      {assertion},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.tokenURL(replica), strings.NewReader(form.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	res, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(res.Body, 1<<10))
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("token from %s: %s: %s", replica, res.Status, body)
	}
	return nil
}

// loadResult is the outcome of one token request of the load.
type loadResult struct {
	at  time.Time
	err error
}

// tokenLoad asks both issuer replicas for tokens at a steady pace and records every outcome.
type tokenLoad struct {
	mu      sync.Mutex
	results map[string][]loadResult // by replica
	stop    context.CancelFunc
	done    sync.WaitGroup
}

// startTokenLoad runs the load until stopped.
func (c *faultCluster) startTokenLoad(ctx context.Context, a loadAgent) *tokenLoad {
	ctx, cancel := context.WithCancel(ctx)
	l := &tokenLoad{results: map[string][]loadResult{}, stop: cancel}
	for _, replica := range []string{"issuer-a", "issuer-b"} {
		l.done.Add(1)
		go func() {
			defer l.done.Done()
			hc := &http.Client{Timeout: 5 * time.Second}
			tick := time.NewTicker(clusterLoadInterval)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				err := c.requestToken(ctx, hc, replica, a)
				if ctx.Err() != nil {
					return // the load was stopped mid-request: not an outcome
				}
				l.mu.Lock()
				l.results[replica] = append(l.results[replica], loadResult{at: time.Now(), err: err})
				l.mu.Unlock()
			}
		}()
	}
	return l
}

// Stop ends the load and waits for its goroutines.
func (l *tokenLoad) Stop() {
	l.stop()
	l.done.Wait()
}

// firstSuccessAfter is the time of the first token a replica issued after since (zero if none yet).
func (l *tokenLoad) firstSuccessAfter(replica string, since time.Time) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range l.results[replica] {
		if r.err == nil && !r.at.Before(since) {
			return r.at
		}
	}
	return time.Time{}
}

// loadStats summarises the outcomes of one replica between from and to.
type loadStats struct {
	ok, failed     int
	longestStreak  int           // consecutive failures
	longestFailFor time.Duration // from the first failure of the longest streak to the success after it
	lastErr        error
}

func (l *tokenLoad) stats(replica string, from, to time.Time) loadStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	var s loadStats
	streak, streakStart := 0, time.Time{}
	for _, r := range l.results[replica] {
		if r.at.Before(from) || r.at.After(to) {
			continue
		}
		if r.err == nil {
			s.ok++
			if streak > 0 && r.at.Sub(streakStart) > s.longestFailFor {
				s.longestFailFor = r.at.Sub(streakStart)
			}
			streak = 0
			continue
		}
		s.failed++
		s.lastErr = r.err
		if streak == 0 {
			streakStart = r.at
		}
		streak++
		s.longestStreak = max(s.longestStreak, streak)
	}
	if streak > 0 && to.Sub(streakStart) > s.longestFailFor {
		s.longestFailFor = to.Sub(streakStart)
	}
	return s
}

func (s loadStats) String() string {
	out := fmt.Sprintf("%d issued, %d failed, longest failure streak %d requests (%s)", s.ok, s.failed, s.longestStreak, s.longestFailFor.Round(time.Millisecond))
	if s.lastErr != nil {
		out += fmt.Sprintf("; last error: %v", s.lastErr)
	}
	return out
}

// streamLeader is the server name of the leader of a stream.
func streamLeader(t *testing.T, ctx context.Context, natsURL, stream string) string {
	t.Helper()
	js := natsJS(t, natsURL)
	var leader string
	testkit.Eventually(t, 0, "a leader of stream "+stream, func() (bool, error) {
		s, err := js.Stream(ctx, stream)
		if err != nil {
			return false, err
		}
		info := s.CachedInfo()
		if info.Cluster == nil || info.Cluster.Leader == "" {
			return false, errors.New("no leader")
		}
		leader = info.Cluster.Leader
		return true, nil
	})
	return leader
}

// TestFaultCluster kills one NATS node and one replica of every service of the production topology at
// once, under token load and while the fault workload runs, and checks that the survivors keep issuing
// tokens, that the workload completes, and that the invariants hold.
func TestFaultCluster(t *testing.T) {
	began := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	c := startFaultCluster(t, ctx)
	tg := c.target(t, ctx)
	agent := c.registerLoadAgent(t, ctx, tg)
	t.Logf("topology up and the load agent ACTIVE after %s", time.Since(began).Round(time.Millisecond))

	before := snapshotStreams(t, ctx, c.natsURL)
	for name, r := range before.replicas {
		if r != 3 {
			t.Errorf("stream %s has %d replicas, want 3 (every process runs with --stream-replicas 3)", name, r)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	load := c.startTokenLoad(ctx, agent)
	loadStopped := false
	defer func() {
		if !loadStopped {
			load.Stop()
		}
	}()
	loadBegan := time.Now()
	for _, replica := range []string{"issuer-a", "issuer-b"} {
		testkit.Eventually(t, 0, "the token load to be served by "+replica, func() (bool, error) {
			return !load.firstSuccessAfter(replica, loadBegan).IsZero(), nil
		})
	}

	w := newFaultWorkload(t, "cluster")
	workDone := make(chan error, 1)
	go func() { workDone <- w.run(ctx, t, tg) }()

	// Strike while the first agent is being provisioned: once its registration is stored.
	registry := registryv1.NewRegistryServiceClient(tg.registry)
	testkit.Eventually(t, 0, "the workload's first registration", func() (bool, error) {
		res, err := registry.ListAgents(ctx, &registryv1.ListAgentsRequest{Parent: "tenants/default", PageSize: 1000})
		if err != nil {
			return false, err
		}
		for _, a := range res.GetAgents() {
			if a.GetDisplayName() == w.name+" a" {
				return true, nil
			}
		}
		return false, errors.New("not registered yet")
	})

	leader := streamLeader(t, ctx, c.natsURL, eventstore.StreamAgents)
	var victim *natsNode
	for _, n := range c.nodes {
		if n.name == leader {
			victim = n
		}
	}
	if victim == nil {
		t.Fatalf("the leader of %s is %q, not a node of the cluster", eventstore.StreamAgents, leader)
	}
	killed := []*testkit.Process{victim.proc}
	for _, name := range []string{"registry-a", "issuer-a", "policy", "monitor", "lifecycle"} {
		killed = append(killed, c.procs[name])
	}
	killAt := time.Now()
	for _, p := range killed {
		p.Kill(t)
	}
	t.Logf("killed with SIGKILL: NATS node %s (leader of %s), registry-a, issuer-a, policy, monitor, lifecycle", victim.name, eventstore.StreamAgents)
	for _, p := range killed {
		if !testkit.KilledBySIGKILL(p.State()) {
			t.Fatalf("%s ended with %v, want SIGKILL", p.Name(), p.State())
		}
	}

	time.Sleep(clusterRestartPause) // the outage itself, not a wait for a condition

	// The singletons come back; the NATS node comes back once the surviving issuer has issued a token
	// with it down (so that the survivors' service without it is proven, not assumed).
	restarted := map[string]time.Duration{}
	var restartedMu sync.Mutex
	restartErrs := make(chan error, 3)
	var wg sync.WaitGroup
	for _, name := range []string{"policy", "monitor", "lifecycle"} {
		wg.Go(func() {
			d, err := c.restart(ctx, t, name)
			if err != nil {
				restartErrs <- err
				return
			}
			restartedMu.Lock()
			restarted[name] = d
			restartedMu.Unlock()
		})
	}
	testkit.Eventually(t, 0, "issuer-b to issue a token with NATS node "+victim.name+" down", func() (bool, error) {
		return !load.firstSuccessAfter("issuer-b", killAt).IsZero(), nil
	})
	survivorBack := load.firstSuccessAfter("issuer-b", killAt).Sub(killAt)
	t.Logf("issuer-b issued a token %s after the kill", survivorBack.Round(time.Millisecond))
	restarted["nats "+victim.name] = victim.proc.Restart(t)
	wg.Wait()
	close(restartErrs)
	for err := range restartErrs {
		t.Fatal(err)
	}
	restoredAt := time.Now()

	select {
	case err := <-workDone:
		if err != nil {
			t.Fatalf("the workload failed against the survivors: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("the workload did not finish")
	}
	workloadDone := time.Now()
	t.Logf("workload finished %s after the kill", workloadDone.Sub(killAt).Round(time.Millisecond))

	// The killed replicas come back and serve again: issuer-a issues tokens once more.
	for _, name := range []string{"registry-a", "issuer-a"} {
		d, err := c.restart(ctx, t, name)
		if err != nil {
			t.Fatal(err)
		}
		restarted[name] = d
	}
	issuerABack := time.Now()
	testkit.Eventually(t, 0, "issuer-a to issue tokens again after its restart", func() (bool, error) {
		return !load.firstSuccessAfter("issuer-a", issuerABack).IsZero(), nil
	})
	load.Stop()
	loadStopped = true
	loadEnded := time.Now()

	// The survivor issued tokens before the fault, with the fault in place, and after recovery.
	for _, phase := range []struct {
		name     string
		from, to time.Time
	}{
		{"before the kill", loadBegan, killAt},
		{"from the kill until the killed processes were back", killAt, restoredAt},
		{"after recovery", restoredAt, loadEnded},
	} {
		s := load.stats("issuer-b", phase.from, phase.to)
		t.Logf("token load on issuer-b %s (%s): %s", phase.name, phase.to.Sub(phase.from).Round(time.Millisecond), s)
		if s.ok == 0 {
			t.Errorf("the surviving issuer-b issued no token %s: %s", phase.name, s)
		}
	}
	t.Logf("token load on issuer-a over the run: %s", load.stats("issuer-a", loadBegan, loadEnded))
	t.Logf("token load on issuer-b over the run: %s", load.stats("issuer-b", loadBegan, loadEnded))

	before.check(t, ctx, tg, w, true, 0)

	for _, name := range []string{"nats " + victim.name, "policy", "monitor", "lifecycle", "registry-a", "issuer-a"} {
		t.Logf("restart-to-ready of %s: %s", name, restarted[name].Round(time.Millisecond))
	}
	t.Logf("kill to the surviving issuer issuing again: %s", survivorBack.Round(time.Millisecond))
	t.Logf("total wall time of the cluster scenario: %s", time.Since(began).Round(time.Millisecond))
}
