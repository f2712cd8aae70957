package e2e_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
	"google.golang.org/grpc"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/natsauth"
	"github.com/agentid/agentid/pkg/testkit"
	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
)

// filesAudience is the URL of the example resource server: the RFC 8707 resource agents ask tokens
// for, which agentid dev registers for every agent (--agent-resource, default https://files.example).
const filesAudience = "https://files.example"

// TestResourceServerReportsAccess runs examples/resourceserver (the pkg/authn verifier SDK) as a
// third-party process against `agentid dev`: an ACTIVE agent's token for the resource is accepted
// with its scope and refused without a token or without the scope; every decision reaches the
// monitor as an access row (agent, outcome, resource, request id, reason); and once the agent is
// retired, the resource server refuses its still unexpired token through push revocation.
func TestResourceServerReportsAccess(t *testing.T) {
	agentidBin, agentctlBin, rsBin := buildWithResourceServer(t)
	dataDir, configDir, keys := t.TempDir(), t.TempDir(), t.TempDir()
	p := startPlatform(t, agentidBin, dataDir)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := runCLI(t, agentctlBin, configDir, "login", "--dev", "--data-dir", dataDir, "--server", p.GRPCAddr); err != nil {
		t.Fatal(err)
	}

	// An agent allowed files.read (and docs.search), registered with agentctl; low risk: it becomes ACTIVE.
	agentFile := filepath.Join(keys, "files-agent.json")
	agent := registerAgentCLI(t, ctx, agentctlBin, configDir, agentFile, "files.read", "docs.search")
	agentCred, err := authn.LoadCredentialFile(agentFile)
	if err != nil {
		t.Fatal(err)
	}

	// The resource server's own identity (role resource-server), then the server itself.
	rsFile := filepath.Join(keys, "files-rs.json")
	if _, err := runCLI(t, agentctlBin, configDir, "clients", "create", "files-rs", "--role", "resource-server", "--resource", filesAudience, "--key-out", rsFile); err != nil {
		t.Fatal(err)
	}
	rs := startResourceServer(t, rsBin, p, filesAudience, "--credentials", rsFile, "--monitor", p.GRPCAddr)

	// The agent's tokens for the resource: one with files.read, one without.
	var readTok, otherTok string
	waitFor(t, ctx, "the agent's token for "+filesAudience, func() (bool, error) {
		tok, err := resourceToken(ctx, agentCred, filesAudience, "files.read")
		if err != nil {
			return false, err
		}
		readTok = tok.AccessToken
		return true, nil
	})
	tok, err := resourceToken(ctx, agentCred, filesAudience, "docs.search")
	if err != nil {
		t.Fatal(err)
	}
	otherTok = tok.AccessToken
	if aud := unverifiedClaims(t, readTok)["aud"]; !audienceHas(aud, filesAudience) {
		t.Fatalf("token audience %v, want %s", aud, filesAudience)
	}

	run := strings.ReplaceAll(agent.AgentID, "_", "-")
	calls := []struct {
		name, auth, requestID string
		wantStatus            int
		wantChallenge         string // a substring of WWW-Authenticate
		wantBody              string
	}{
		{"with files.read", "Bearer " + readTok, "e2e-allowed-" + run, http.StatusOK, "", "hello from the resource server"},
		{"without a token", "", "e2e-anonymous-" + run, http.StatusUnauthorized, "Bearer", ""},
		{"without the scope", "Bearer " + otherTok, "e2e-no-scope-" + run, http.StatusForbidden, `error="insufficient_scope"`, ""},
	}
	for _, c := range calls {
		res := rs.get(t, ctx, "/files/hello.txt", c.auth, "", c.requestID)
		if res.status != c.wantStatus || !strings.Contains(res.challenge, c.wantChallenge) || !strings.Contains(res.body, c.wantBody) {
			t.Fatalf("%s: HTTP %d, WWW-Authenticate %q, body %q; want %d, %q, %q",
				c.name, res.status, res.challenge, res.body, c.wantStatus, c.wantChallenge, c.wantBody)
		}
	}

	// Every decision reaches the monitor: the agent's allowed and refused calls under the agent, the
	// anonymous one in the resource server's tenant.
	adminConn := adminConnection(t, ctx, p, dataDir)
	monitor := monitorv1.NewMonitorServiceClient(adminConn)
	wantRows := []struct {
		requestID, agent, outcome, reason string
	}{
		{calls[0].requestID, agent.Name, "allowed", ""},
		{calls[1].requestID, "", "denied", "TOKEN_MISSING"},
		{calls[2].requestID, agent.Name, "denied", "INSUFFICIENT_SCOPE"},
	}
	for _, w := range wantRows {
		row := waitAccessRow(t, ctx, monitor, w.agent, w.requestID)
		d := accessDetail(t, row)
		if row.GetOutcome() != w.outcome || d.Resource != "/files/hello.txt" || d.Action != http.MethodGet ||
			d.Reason != w.reason || d.Audience != "" && d.Audience != filesAudience || d.Reporter != "files-rs" {
			t.Errorf("access row for %s: outcome %q, detail %s; want outcome %q, resource /files/hello.txt, GET, reason %q, reporter files-rs",
				w.requestID, row.GetOutcome(), row.GetDetailJson(), w.outcome, w.reason)
		}
		if w.agent != "" && (row.GetAgent() != w.agent || row.GetActor() != agent.AgentID) {
			t.Errorf("access row for %s: agent %q actor %q, want %q and %q", w.requestID, row.GetAgent(), row.GetActor(), w.agent, agent.AgentID)
		}
	}
	if row := waitAccessRow(t, ctx, monitor, agent.Name, calls[0].requestID); !slices.Equal(row.GetScopes(), []string{"files.read"}) {
		t.Errorf("allowed access row scopes %v, want [files.read]", row.GetScopes())
	}

	// Retiring the agent revokes its tokens; the resource server, verifying offline, refuses the
	// unexpired token as soon as the revocation has reached it.
	retired := time.Now()
	if out, err := runCLI(t, agentctlBin, configDir, "agents", "retire", agent.Name, "--reason", "e2e: project finished", "-o", "json"); err != nil {
		t.Fatal(err)
	} else if !strings.Contains(out, agent.Name) {
		t.Fatalf("agents retire printed %s", out)
	}
	retireReturned := time.Now()
	var refusedID string
	n := 0
	testkit.Eventually(t, 0, "the resource server refusing the retired agent's token", func() (bool, error) {
		n++
		id := fmt.Sprintf("e2e-after-retire-%s-%d", run, n)
		res := rs.get(t, ctx, "/files/hello.txt", "Bearer "+readTok, "", id)
		switch res.status {
		case http.StatusOK:
			return false, nil
		case http.StatusUnauthorized:
			if !strings.Contains(res.challenge, `error="invalid_token"`) {
				t.Fatalf("retired agent's token: 401 with challenge %q, want error=\"invalid_token\"", res.challenge)
			}
			refusedID = id
			return true, nil
		default:
			t.Fatalf("retired agent's token: HTTP %d %s, want 200 until revoked, then 401", res.status, res.body)
			return false, nil
		}
	})
	t.Logf("retired agent's token refused by the resource server %s after agents retire returned (%s after it was called)",
		time.Since(retireReturned).Round(time.Millisecond), time.Since(retired).Round(time.Millisecond))
	row := waitAccessRow(t, ctx, monitor, "", refusedID)
	if d := accessDetail(t, row); row.GetOutcome() != "denied" || d.Reason != "TOKEN_REVOKED" {
		t.Errorf("access row of the refused call: outcome %q detail %s, want denied with reason TOKEN_REVOKED", row.GetOutcome(), row.GetDetailJson())
	}
}

// buildWithResourceServer builds agentid, agentctl and examples/resourceserver in one go build.
func buildWithResourceServer(t testing.TB) (agentid, agentctl, resourceserver string) {
	t.Helper()
	dir := testkit.BuildCommands(t, "./cmd/agentid", "./cmd/agentctl", "./examples/resourceserver")
	return filepath.Join(dir, "agentid"), filepath.Join(dir, "agentctl"), filepath.Join(dir, "resourceserver")
}

// resourceServer is a running examples/resourceserver process.
type resourceServer struct {
	proc *testkit.Process
	// url is its base URL, http://ADDR.
	url string
}

// startResourceServer runs the example resource server for audience against the platform (its
// issuer and NATS, so it follows revocations) with extra flags, and waits until it prints
// "listening on ADDR" (after its revocation feed has caught up).
func startResourceServer(t *testing.T, bin string, p *platform, audience string, extra ...string) *resourceServer {
	t.Helper()
	args := append([]string{"--issuer", p.HTTPURL, "--audience", audience, "--nats", p.NATSURL,
		"--nats-nkey", devNATSSeed(p.NATSURL, natsauth.Verifier), "--listen", "127.0.0.1:0"}, extra...)
	proc := testkit.StartProcess(t, testkit.ProcessConfig{Name: "resourceserver", Binary: bin, Args: args})
	var addr string
	testkit.Eventually(t, 0, "the resource server listening", func() (bool, error) {
		select {
		case <-proc.Exited():
			t.Fatalf("resourceserver ended before it listened (%v):\n%s", proc.State(), proc.Output())
		default:
		}
		for line := range strings.SplitSeq(proc.Output(), "\n") {
			if a, ok := strings.CutPrefix(strings.TrimSpace(line), "listening on "); ok {
				addr = a
				return true, nil
			}
		}
		return false, nil
	})
	return &resourceServer{proc: proc, url: "http://" + addr}
}

// rsResponse is what a call to the resource server answered.
type rsResponse struct {
	status          int
	challenge, body string
}

// get calls GET path on the resource server with an Authorization header (none when empty), a DPoP
// proof (none when empty) and X-Request-Id.
func (rs *resourceServer) get(t *testing.T, ctx context.Context, path, authorization, proof, requestID string) rsResponse {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rs.url+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	if proof != "" {
		req.Header.Set(authn.DPoPHeader, proof)
	}
	if requestID != "" {
		req.Header.Set("X-Request-Id", requestID)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", req.URL, err)
	}
	defer func() { _ = res.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if err != nil {
		t.Fatalf("GET %s: read body: %v", req.URL, err)
	}
	return rsResponse{status: res.StatusCode, challenge: strings.Join(res.Header.Values("WWW-Authenticate"), ", "), body: string(body)}
}

// registeredAgent is an agent registered through agentctl.
type registeredAgent struct {
	// Name is tenants/{tenant}/agents/{id}.
	Name string `json:"name"`
	// AgentID is the agent id, also its OAuth client id.
	AgentID string `json:"agentId"`
	// State is the agent's state.
	State string `json:"state"`
}

// registerAgentCLI registers a low-risk agent of tenant default with scopes through `agentctl agents
// register --key-out keyFile` and waits until it is ACTIVE.
func registerAgentCLI(t *testing.T, ctx context.Context, agentctl, configDir, keyFile string, scopes ...string) registeredAgent {
	t.Helper()
	args := []string{"agents", "register", "--display-name", "Files reader", "--owner", "team:e2e", "--sponsor", "alice@corp.example",
		"--purpose", "reads files of the example resource server", "--environment", "dev", "--sensitivity", "internal",
		"--key-out", keyFile, "-o", "json"}
	for _, s := range scopes {
		args = append(args, "--scope", s)
	}
	out, err := runCLI(t, agentctl, configDir, args...)
	if err != nil {
		t.Fatal(err)
	}
	a := decodeAgent(t, out)
	waitFor(t, ctx, a.Name+" ACTIVE", func() (bool, error) {
		out, err := runCLI(t, agentctl, configDir, "agents", "get", a.Name, "-o", "json")
		if err != nil {
			return false, err
		}
		a = decodeAgent(t, out)
		return a.State == "AGENT_STATE_ACTIVE", fmt.Errorf("state %s", a.State)
	})
	return a
}

// decodeAgent reads one agent, or the only agent of a list, from agentctl's JSON output.
func decodeAgent(t *testing.T, out string) registeredAgent {
	t.Helper()
	var a registeredAgent
	if err := json.Unmarshal([]byte(out), &a); err != nil {
		var list []registeredAgent
		if err2 := json.Unmarshal([]byte(out), &list); err2 != nil || len(list) != 1 {
			t.Fatalf("agentctl printed %q, want one agent as JSON: %v", out, err)
		}
		a = list[0]
	}
	if a.Name == "" || a.AgentID == "" {
		t.Fatalf("agentctl printed %q: no agent name or id", out)
	}
	return a
}

// resourceToken asks the issuer, as cred (client_credentials with private_key_jwt), for a bearer
// token for one resource (RFC 8707) with scopes.
func resourceToken(ctx context.Context, cred *authn.Credential, resource string, scopes ...string) (*oauth2.Token, error) {
	assertion, err := cred.Assertion(cred.Issuer, time.Now())
	if err != nil {
		return nil, err
	}
	cfg := clientcredentials.Config{
		ClientID: cred.ClientID, TokenURL: cred.TokenURL, Scopes: scopes, AuthStyle: oauth2.AuthStyleInParams,
		EndpointParams: url.Values{
			"client_assertion_type": {authn.ClientAssertionType},
			"client_assertion":      {assertion},
			"resource":              {resource},
		},
	}
	return cfg.Token(ctx)
}

// adminConnection is a gRPC connection to the platform as the bootstrap platform admin.
func adminConnection(t *testing.T, ctx context.Context, p *platform, dataDir string) *grpc.ClientConn {
	t.Helper()
	return p.dial(t, adminToken(t, ctx, dataDir))
}

// waitAccessRow waits until the monitor lists the access row of requestID (under agent, or in
// tenant default when agent is empty) and returns it.
func waitAccessRow(t *testing.T, ctx context.Context, monitor monitorv1.MonitorServiceClient, agent, requestID string) *monitorv1.TelemetryEvent {
	t.Helper()
	var found *monitorv1.TelemetryEvent
	testkit.Eventually(t, 0, "the access row of request "+requestID, func() (bool, error) {
		res, err := monitor.ListTelemetryEvents(ctx, &monitorv1.ListTelemetryEventsRequest{
			Parent: "tenants/default", Agent: agent, Kind: "access", PageSize: 1000,
		})
		if err != nil {
			return false, err
		}
		for _, e := range res.GetEvents() {
			if e.GetRequestId() == requestID {
				found = e
				return true, nil
			}
		}
		return false, nil
	})
	return found
}

// accessRowDetail is the part of an access row's detail the tests read.
type accessRowDetail struct {
	Resource string `json:"resource"`
	Action   string `json:"action"`
	Reason   string `json:"reason"`
	Audience string `json:"audience"`
	Reporter string `json:"reporter"`
	Binding  string `json:"binding"`
}

// accessDetail decodes an access row's detail.
func accessDetail(t *testing.T, e *monitorv1.TelemetryEvent) accessRowDetail {
	t.Helper()
	var d accessRowDetail
	if err := json.Unmarshal([]byte(e.GetDetailJson()), &d); err != nil {
		t.Fatalf("access row detail %q: %v", e.GetDetailJson(), err)
	}
	return d
}

// unverifiedClaims decodes a JWT's payload without verifying it (the test only reads what the
// issuer put there).
func unverifiedClaims(t testing.TB, token string) map[string]any {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("token is not a compact JWS: %d parts", len(parts))
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatalf("token payload: %v", err)
	}
	var claims map[string]any
	if err := json.Unmarshal(b, &claims); err != nil {
		t.Fatalf("token payload: %v", err)
	}
	return claims
}

// audienceHas reports whether a decoded aud claim (string or array) holds want.
func audienceHas(aud any, want string) bool {
	switch v := aud.(type) {
	case string:
		return v == want
	case []any:
		return slices.Contains(v, any(want))
	}
	return false
}
