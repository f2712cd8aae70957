package e2e_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/oauth2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/names"
	"github.com/agentid/agentid/pkg/natsauth"
	"github.com/agentid/agentid/pkg/testkit"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// suspendedAgent is an agent of tenant default registered for the suspension test, with its credential.
type suspendedAgent struct {
	name string
	cred *authn.Credential
}

// TestSuspensionEndToEnd drives suspension through the running platform: an ACTIVE agent's token is
// accepted by a verifier following REVOCATIONS (pkg/authn with a RevocationFeed) and by introspection;
// once the agent is suspended both refuse it and the issuer refuses new tokens; callers of another
// tenant or without an admin or security role are refused and nothing is written; after resume a new
// token works while the old one stays refused; a suspended agent can be retired. It measures
// suspension → old token refused (reported, not asserted).
func TestSuspensionEndToEnd(t *testing.T) {
	agentidBin, agentctlBin := buildBinaries(t)
	dataDir, configDir, keys := t.TempDir(), t.TempDir(), t.TempDir()
	p := startPlatform(t, agentidBin, dataDir)
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

	// The verifiers a resource server would run: offline JWKS verification with the denylist fed from
	// REVOCATIONS, and introspection at the issuer (as an identity with the introspector role).
	deny := startRevocationFeed(t, ctx, p)
	offline, err := authn.NewJWKSVerifier(authn.JWKSVerifierConfig{
		IssuerBaseURL: p.HTTPURL, Audience: filesAudience, Tenants: []string{"default"}, Revocations: deny,
	})
	if err != nil {
		t.Fatal(err)
	}
	introFile := filepath.Join(keys, "introspector.json")
	if _, err := runCLI(t, agentctlBin, configDir, "clients", "create", "e2e-introspector", "--role", "introspector", "--key-out", introFile); err != nil {
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
	accepted := func(what, tok string) {
		t.Helper()
		for _, v := range verifiers {
			if _, err := v.v.Verify(ctx, tok); err != nil {
				t.Fatalf("%s refused %s: %v", v.name, what, err)
			}
		}
	}
	refused := func(what, tok string) {
		t.Helper()
		for _, v := range verifiers {
			if _, err := v.v.Verify(ctx, tok); err == nil {
				t.Fatalf("%s accepted %s", v.name, what)
			}
		}
	}

	// Five low-risk agents, ACTIVE after auto-approved provisioning: the first for the walk-through,
	// the others for the latency samples.
	agents := make([]suspendedAgent, 5)
	for i := range agents {
		rid := fmt.Sprintf("e2e-suspension-%d", i)
		id := names.DeriveAgentID("default", rid)
		cred, err := authn.NewCredential("default", id, p.issuer("default"))
		if err != nil {
			t.Fatal(err)
		}
		jwks, err := cred.PublicJWKS()
		if err != nil {
			t.Fatal(err)
		}
		res, err := registry.RegisterAgent(ctx, &registryv1.RegisterAgentRequest{Parent: "tenants/default", RequestId: rid, Agent: validAgent(string(jwks))})
		if err != nil {
			t.Fatal(err)
		}
		agents[i] = suspendedAgent{name: res.GetAgent().GetName(), cred: cred}
	}
	for _, a := range agents {
		waitState(t, ctx, registry, a.name, registryv1.AgentState_AGENT_STATE_ACTIVE)
	}
	a := agents[0]
	oldTok := waitToken(t, ctx, a)
	accepted("the ACTIVE agent's token", oldTok)
	before := getAgent(t, ctx, registry, a.name)

	// Refused callers: another tenant's admin, and roles of the agent's tenant that may not suspend.
	if _, err := runCLI(t, agentctlBin, configDir, "tenants", "create", "acme", "--display-name", "Acme"); err != nil {
		t.Fatal(err)
	}
	_, acmeAdmin := cliIdentity(t, ctx, p, agentctlBin, configDir, "acme", "acme-admin", filepath.Join(keys, "acme-admin.json"))
	callers := []struct {
		name, token string
		want        codes.Code
	}{
		{"a tenant-admin of another tenant", acmeAdmin, codes.NotFound},
		{"an owner", roleToken(t, ctx, agentctlBin, configDir, keys, "e2e-owner", "owner"), codes.PermissionDenied},
		{"an auditor", roleToken(t, ctx, agentctlBin, configDir, keys, "e2e-auditor", "auditor"), codes.PermissionDenied},
		{"an approver", roleToken(t, ctx, agentctlBin, configDir, keys, "e2e-approver", "approver"), codes.PermissionDenied},
	}
	for _, c := range callers {
		client := registryv1.NewRegistryServiceClient(p.dial(t, c.token))
		_, err := client.SuspendAgent(ctx, &registryv1.SuspendAgentRequest{Name: a.name, Reason: "e2e: not allowed", RequestId: "e2e-refused-" + c.name})
		if status.Code(err) != c.want {
			t.Fatalf("SuspendAgent by %s: %v, want %s", c.name, err, c.want)
		}
		_, err = client.ResumeAgent(ctx, &registryv1.ResumeAgentRequest{Name: a.name, Reason: "e2e: not allowed"})
		if status.Code(err) != c.want {
			t.Fatalf("ResumeAgent by %s: %v, want %s", c.name, err, c.want)
		}
	}
	if after := getAgent(t, ctx, registry, a.name); after.GetEtag() != before.GetEtag() || after.GetState() != registryv1.AgentState_AGENT_STATE_ACTIVE {
		t.Fatalf("refused calls changed the agent: etag %s → %s, state %s", before.GetEtag(), after.GetEtag(), after.GetState())
	}
	accepted("the agent's token after refused suspensions", oldTok)

	// Suspension: both verifiers refuse the outstanding token. This agent asks for no token while it is
	// suspended: the monitor would rightly raise an inactive-agent alert whose incident suspends it
	// again after the resume below (agent b shows the refused token request).
	latency := suspendAndWait(t, ctx, registry, offline, introspection, a, oldTok)
	t.Logf("suspension → old token refused: by the revocation-following verifier %s, by introspection %s (after SuspendAgent returned)",
		latency.offline.Round(time.Millisecond), latency.introspection.Round(time.Millisecond))
	sus := getAgent(t, ctx, registry, a.name)
	if sus.GetState() != registryv1.AgentState_AGENT_STATE_SUSPENDED || sus.GetStateReason() != "e2e: suspicious export" {
		t.Fatalf("suspended agent: %v", sus)
	}
	// Suspending it again changes nothing.
	again, err := registry.SuspendAgent(ctx, &registryv1.SuspendAgentRequest{Name: a.name, Reason: "e2e: again", RequestId: "e2e-suspend-again"})
	if err != nil || again.GetAgent().GetEtag() != sus.GetEtag() {
		t.Fatalf("second suspension: %v %v, want the agent unchanged at etag %s", again, err, sus.GetEtag())
	}
	notBefore := agentRevocationNotBefore(t, ctx, p, a.name)

	// Resume (agentctl): a new token is issued once the suspension's revocation window (its
	// not_before: the suspension + the projection-lag allowance) has passed; the old one stays refused.
	out, err := runCLI(t, agentctlBin, configDir, "agents", "resume", a.name, "--reason", "e2e: false positive", "--ticket", "INC-E2E", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	if st := decodeAgent(t, out).State; st != "AGENT_STATE_ACTIVE" {
		t.Fatalf("agents resume printed state %s", st)
	}
	waitFor(t, ctx, "the suspension's revocation window to pass", func() (bool, error) {
		return time.Now().After(notBefore.Add(time.Second)), nil // token iat has whole seconds
	})
	newTok := waitToken(t, ctx, a)
	accepted("the resumed agent's new token", newTok)
	refused("the token revoked by the suspension, after resume", oldTok)
	if st := getAgent(t, ctx, registry, a.name).GetState(); st != registryv1.AgentState_AGENT_STATE_ACTIVE {
		t.Fatalf("the resumed agent is %s", st)
	}

	// Agent b, suspended with agentctl (the cause an incident gives): its token request is refused,
	// and it is retired while suspended.
	b := agents[1]
	bTok := waitToken(t, ctx, b)
	accepted("agent b's token", bTok)
	out, err = runCLI(t, agentctlBin, configDir, "agents", "suspend", b.name, "--reason", "e2e: alert", "--cause", "alert:e2e-1", "--ticket", "INC-E2E-2", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	if st := decodeAgent(t, out).State; st != "AGENT_STATE_SUSPENDED" {
		t.Fatalf("agents suspend printed state %s", st)
	}
	waitRefusedBy(t, ctx, offline, bTok, "the revocation-following verifier")
	waitRefusedBy(t, ctx, introspection, bTok, "introspection")
	wantTokenRefused(t, ctx, b, "the suspended agent")
	out, err = runCLI(t, agentctlBin, configDir, "agents", "retire", b.name, "--reason", "e2e: confirmed", "--trigger", "anomaly", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	if st := decodeAgent(t, out).State; st != "AGENT_STATE_RETIRING" && st != "AGENT_STATE_RETIRED" {
		t.Fatalf("agents retire of a suspended agent printed state %s", st)
	}
	wantTokenRefused(t, ctx, b, "the retired agent")

	// Latency samples: each of the other agents holds a token; suspend it, time the refusals.
	calls, offlineMs, introMs := []time.Duration{latency.call}, []time.Duration{latency.offline}, []time.Duration{latency.introspection}
	for _, s := range agents[2:] {
		tok := waitToken(t, ctx, s)
		accepted("a sample agent's token", tok)
		l := suspendAndWait(t, ctx, registry, offline, introspection, s, tok)
		calls, offlineMs, introMs = append(calls, l.call), append(offlineMs, l.offline), append(introMs, l.introspection)
	}
	t.Logf("over %d agents: SuspendAgent call %s; then old token refused by the revocation-following verifier %s, by introspection %s",
		len(calls), spread(calls), spread(offlineMs), spread(introMs))
}

// agentRevocationNotBefore waits until REVOCATIONS holds an AGENT revocation of agent (read as the
// platform's verifier identity) and returns the latest not_before of its revocations.
func agentRevocationNotBefore(t *testing.T, ctx context.Context, p *platform, agent string) time.Time {
	t.Helper()
	nc, err := nats.Connect(p.NATSURL, append(natsOptions(t, p.NATSURL, natsauth.Verifier), nats.Name("e2e suspension revocations"))...)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	var latest time.Time
	waitFor(t, ctx, "the AGENT revocation of "+agent, func() (bool, error) {
		cons, err := pollingConsumer(ctx, js, eventstore.StreamRevocations, jetstream.OrderedConsumerConfig{
			FilterSubjects: []string{authn.RevocationSubject("default")},
		})
		if err != nil {
			return false, err
		}
		for {
			m, err := cons.Next(jetstream.FetchMaxWait(200 * time.Millisecond))
			if err != nil {
				break // nothing more stored
			}
			e, err := eventstore.EventFromMsg(m)
			if err != nil {
				return false, err
			}
			ev, err := eventstore.DecodeAs[*issuerv1.TokensRevoked](e)
			if err != nil {
				return false, err
			}
			if ev.GetTarget() == issuerv1.RevocationTarget_REVOCATION_TARGET_AGENT && ev.GetAgent() == agent && ev.GetNotBefore().AsTime().After(latest) {
				latest = ev.GetNotBefore().AsTime()
			}
		}
		return !latest.IsZero(), nil
	})
	return latest
}

// suspensionLatency is how long SuspendAgent took and how long after it returned each verifier
// refused the token.
type suspensionLatency struct {
	call, offline, introspection time.Duration
}

// suspendAndWait suspends a as the platform admin and waits until the offline verifier, then
// introspection, refuse tok; it returns how long after SuspendAgent returned each did.
func suspendAndWait(t *testing.T, ctx context.Context, registry registryv1.RegistryServiceClient, offline, introspection authn.Verifier, a suspendedAgent, tok string) suspensionLatency {
	t.Helper()
	called := time.Now()
	if _, err := registry.SuspendAgent(ctx, &registryv1.SuspendAgentRequest{
		Name: a.name, Reason: "e2e: suspicious export", Cause: "operator", Ticket: "INC-E2E", RequestId: "e2e-suspend-" + a.cred.ClientID,
	}); err != nil {
		t.Fatal(err)
	}
	returned := time.Now()
	l := suspensionLatency{call: returned.Sub(called)}
	var wg sync.WaitGroup
	wg.Go(func() {
		l.offline = waitRefusedBy(t, ctx, offline, tok, "the revocation-following verifier").Sub(returned)
	})
	wg.Go(func() { l.introspection = waitRefusedBy(t, ctx, introspection, tok, "introspection").Sub(returned) })
	wg.Wait()
	return l
}

// waitRefusedBy polls v with tok (every 2 ms, for at most a minute) until it refuses the token as
// revoked or inactive, and returns when; any other refusal fails the test.
func waitRefusedBy(t *testing.T, ctx context.Context, v authn.Verifier, tok, what string) time.Time {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		_, err := v.Verify(ctx, tok)
		if err != nil {
			var e *errs.Error
			if !errors.As(err, &e) || (e.Reason != authn.ReasonTokenRevoked && e.Reason != authn.ReasonTokenInactive) {
				t.Errorf("%s refused the suspended agent's token with %v, want TOKEN_REVOKED or TOKEN_INACTIVE", what, err)
			}
			return time.Now()
		}
		select {
		case <-ctx.Done():
			t.Errorf("%s still accepts the suspended agent's token after a minute", what)
			return time.Now()
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// startRevocationFeed follows REVOCATIONS as the platform's verifier identity and returns the denylist
// it fills, once it has caught up.
func startRevocationFeed(t *testing.T, ctx context.Context, p *platform) *authn.Denylist {
	t.Helper()
	nc, err := nats.Connect(p.NATSURL, append(natsOptions(t, p.NATSURL, natsauth.Verifier), nats.Name("e2e suspension verifier"))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	deny := authn.NewDenylist(authn.DenylistConfig{})
	feed, err := authn.NewRevocationFeed(authn.RevocationFeedConfig{JetStream: js, Denylist: deny})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = feed.Run(runCtx) })
	t.Cleanup(func() { stop(); wg.Wait() })
	testkit.Eventually(t, 0, "the revocation feed to catch up", func() (bool, error) { return feed.Caught(), nil })
	return deny
}

// waitState waits until the registry shows the agent in state want.
func waitState(t *testing.T, ctx context.Context, registry registryv1.RegistryServiceClient, name string, want registryv1.AgentState) {
	t.Helper()
	waitFor(t, ctx, name+" "+want.String(), func() (bool, error) {
		a, err := registry.GetAgent(ctx, &registryv1.GetAgentRequest{Name: name})
		if err != nil {
			return false, err
		}
		return a.GetAgent().GetState() == want, fmt.Errorf("state %s", a.GetAgent().GetState())
	})
}

// getAgent reads one agent as the platform admin.
func getAgent(t *testing.T, ctx context.Context, registry registryv1.RegistryServiceClient, name string) *registryv1.Agent {
	t.Helper()
	res, err := registry.GetAgent(ctx, &registryv1.GetAgentRequest{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	return res.GetAgent()
}

// waitToken waits until the issuer gives a a token for the files resource and returns it.
func waitToken(t *testing.T, ctx context.Context, a suspendedAgent) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var tok string
	waitFor(t, ctx, a.name+"'s token", func() (bool, error) {
		got, err := resourceToken(ctx, a.cred, filesAudience, "docs.search")
		if err != nil {
			return false, err
		}
		tok = got.AccessToken
		return true, nil
	})
	return tok
}

// wantTokenRefused checks that the issuer refuses a token request of a with invalid_client.
func wantTokenRefused(t *testing.T, ctx context.Context, a suspendedAgent, who string) {
	t.Helper()
	_, err := resourceToken(ctx, a.cred, filesAudience, "docs.search")
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.ErrorCode != "invalid_client" {
		t.Fatalf("token request of %s: %v, want invalid_client", who, err)
	}
}

// roleToken creates a client of tenant default with role (agentctl clients create) and returns a
// platform API token of it.
func roleToken(t *testing.T, ctx context.Context, agentctl, configDir, keys, clientID, role string) string {
	t.Helper()
	file := filepath.Join(keys, clientID+".json")
	if _, err := runCLI(t, agentctl, configDir, "clients", "create", clientID, "--role", role, "--key-out", file); err != nil {
		t.Fatal(err)
	}
	cred, err := authn.LoadCredentialFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var tok string
	waitFor(t, ctx, clientID+"'s token", func() (bool, error) {
		got, err := cred.TokenSource(ctx).Token()
		if err != nil {
			return false, err
		}
		tok = got.AccessToken
		return true, nil
	})
	return tok
}

// spread renders durations as min / median / max.
func spread(ds []time.Duration) string {
	s := slices.Clone(ds)
	slices.Sort(s)
	r := func(d time.Duration) string { return d.Round(time.Millisecond).String() }
	return fmt.Sprintf("min %s, median %s, max %s", r(s[0]), r(s[len(s)/2]), r(s[len(s)-1]))
}
