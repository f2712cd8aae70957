package provision_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/agentid/agentid/loadtest/internal/provision"
	"github.com/agentid/agentid/loadtest/internal/tokenclient"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// fakePlatform is a registry whose agents become ACTIVE after a few GetAgent polls (or REJECTED),
// and a token endpoint that answers invalid_client until an agent has been polled a few times more.
type fakePlatform struct {
	mu            sync.Mutex
	agents        map[string]*registryv1.Agent
	polls         map[string]int
	tokenTries    map[string]int
	requests      []*registryv1.RegisterAgentRequest
	activateAfter int
	tokenAfter    int
	reject        bool
}

func newFake() *fakePlatform {
	return &fakePlatform{agents: map[string]*registryv1.Agent{}, polls: map[string]int{}, tokenTries: map[string]int{},
		activateAfter: 3, tokenAfter: 2}
}

func (f *fakePlatform) RegisterAgent(_ context.Context, in *registryv1.RegisterAgentRequest, _ ...grpc.CallOption) (*registryv1.RegisterAgentResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests = append(f.requests, in)
	id := fmt.Sprintf("agt_%d", len(f.requests))
	a := &registryv1.Agent{Name: in.GetParent() + "/agents/" + id, AgentId: id, State: registryv1.AgentState_AGENT_STATE_PENDING}
	f.agents[a.Name] = a
	return &registryv1.RegisterAgentResponse{Agent: a}, nil
}

func (f *fakePlatform) GetAgent(_ context.Context, in *registryv1.GetAgentRequest, _ ...grpc.CallOption) (*registryv1.GetAgentResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a, ok := f.agents[in.GetName()]
	if !ok {
		return nil, status.Error(codes.NotFound, "no such agent")
	}
	f.polls[a.AgentId]++
	if f.polls[a.AgentId] >= f.activateAfter {
		if f.reject {
			a.State, a.StateReason = registryv1.AgentState_AGENT_STATE_REJECTED, "policy says no"
		} else {
			a.State = registryv1.AgentState_AGENT_STATE_ACTIVE
		}
	}
	return &registryv1.GetAgentResponse{Agent: a}, nil
}

func (f *fakePlatform) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_ = r.ParseForm()
	id := r.PostForm.Get("client_id")
	f.mu.Lock()
	f.tokenTries[id]++
	ok := f.agents["tenants/default/agents/"+id].GetState() == registryv1.AgentState_AGENT_STATE_ACTIVE && f.tokenTries[id] > f.tokenAfter
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if !ok {
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"error":"invalid_client"}`))
		return
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"access_token": "at", "token_type": "Bearer", "expires_in": 600})
}

func config(t *testing.T, f *fakePlatform, n int) provision.Config {
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return provision.Config{
		Registry: f,
		Tokens: &tokenclient.Client{HTTP: tokenclient.NewHTTPClient(4, 5*time.Second),
			TokenURL: srv.URL + "/t/default/oauth2/token", Audience: srv.URL + "/t/default"},
		Tenant: "default", Count: n, Parallelism: 2, PollInterval: time.Millisecond, Timeout: 10 * time.Second, Label: "t1",
	}
}

func TestProvisionWaitsForActiveAndFirstToken(t *testing.T) {
	f := newFake()
	cfg := config(t, f, 5)
	var mu sync.Mutex
	ready := 0
	cfg.OnReady = func(provision.Agent) { mu.Lock(); ready++; mu.Unlock() }
	agents, err := provision.Provision(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(agents) != 5 || ready != 5 {
		t.Fatalf("got %d agents, %d OnReady calls; want 5 and 5", len(agents), ready)
	}
	ids := map[string]bool{}
	for _, a := range agents {
		if a.Identity == nil || a.Identity.ClientID == "" || !strings.HasSuffix(a.Name, "/agents/"+a.Identity.ClientID) {
			t.Errorf("agent %+v: identity does not match the registered name", a)
			continue
		}
		ids[a.Identity.ClientID] = true
		if f.polls[a.Identity.ClientID] < f.activateAfter || f.tokenTries[a.Identity.ClientID] != f.tokenAfter+1 {
			t.Errorf("%s: %d state polls, %d token tries; want >= %d and exactly %d", a.Name,
				f.polls[a.Identity.ClientID], f.tokenTries[a.Identity.ClientID], f.activateAfter, f.tokenAfter+1)
		}
		if a.RegisterToActive <= 0 || a.RegisterToToken < a.RegisterToActive {
			t.Errorf("%s: register→active %v, register→token %v; want 0 < active <= token", a.Name, a.RegisterToActive, a.RegisterToToken)
		}
	}
	if len(ids) != 5 {
		t.Errorf("got %d distinct agents, want 5", len(ids))
	}
	for _, r := range f.requests {
		a := r.GetAgent()
		if r.GetParent() != "tenants/default" || !strings.HasPrefix(r.GetRequestId(), "tokenload-t1-") ||
			a.GetEnvironment() != registryv1.Environment_ENVIRONMENT_DEV ||
			a.GetDataSensitivity() != registryv1.DataSensitivity_DATA_SENSITIVITY_INTERNAL ||
			len(a.GetScopes()) != 1 || a.GetScopes()[0] != provision.Scope || !strings.Contains(a.GetPublicJwks(), `"kty":"EC"`) ||
			strings.Contains(a.GetPublicJwks(), `"d":`) {
			t.Errorf("register request is not a low-risk dev agent with a public key: %v", r)
		}
	}
}

func TestProvisionFailsOnRejection(t *testing.T) {
	f := newFake()
	f.reject = true
	_, err := provision.Provision(context.Background(), config(t, f, 2))
	if err == nil || !strings.Contains(err.Error(), "AGENT_STATE_REJECTED") || !strings.Contains(err.Error(), "policy says no") {
		t.Fatalf("err = %v, want a rejection naming the state and reason", err)
	}
}

func TestProvisionTimesOutWithLastTokenError(t *testing.T) {
	f := newFake()
	f.tokenAfter = 1 << 30
	cfg := config(t, f, 1)
	cfg.Timeout = 200 * time.Millisecond
	_, err := provision.Provision(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), "first token") || !strings.Contains(err.Error(), "invalid_client") {
		t.Fatalf("err = %v, want a timeout waiting for the first token naming invalid_client", err)
	}
}

func TestProvisionValidatesConfig(t *testing.T) {
	f := newFake()
	cfg := config(t, f, 0)
	if _, err := provision.Provision(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "Count") {
		t.Errorf("Count 0: err = %v, want one naming Count", err)
	}
}
