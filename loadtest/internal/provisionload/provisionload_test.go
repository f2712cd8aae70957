package provisionload_test

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

	"github.com/agentid/agentid/loadtest/internal/provisionload"
	"github.com/agentid/agentid/loadtest/internal/tokenclient"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// fakePlatform is a registry whose agents become ACTIVE (or REJECTED) after a number of ListAgents
// sweeps, listed in pages of two, next to agents of others, and a token endpoint that serves ACTIVE
// agents only.
type fakePlatform struct {
	mu        sync.Mutex
	agents    []*registryv1.Agent
	sweeps    int
	activeAt  int // sweep from which the run's agents are ACTIVE
	reject    bool
	tokenReqs map[string]int
}

func (f *fakePlatform) RegisterAgent(_ context.Context, in *registryv1.RegisterAgentRequest, _ ...grpc.CallOption) (*registryv1.RegisterAgentResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	id := fmt.Sprintf("agt_%d", len(f.agents))
	a := &registryv1.Agent{Name: in.GetParent() + "/agents/" + id, AgentId: id, State: registryv1.AgentState_AGENT_STATE_PENDING}
	f.agents = append(f.agents, a)
	return &registryv1.RegisterAgentResponse{Agent: a}, nil
}

func (f *fakePlatform) ListAgents(_ context.Context, in *registryv1.ListAgentsRequest, _ ...grpc.CallOption) (*registryv1.ListAgentsResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	start := 0
	if in.GetPageToken() == "" {
		f.sweeps++
		if f.sweeps >= f.activeAt {
			for _, a := range f.agents {
				if a.GetAgentId() == "other" {
					continue
				}
				a.State = registryv1.AgentState_AGENT_STATE_ACTIVE
				if f.reject {
					a.State, a.StateReason = registryv1.AgentState_AGENT_STATE_REJECTED, "policy says no"
				}
			}
		}
	} else {
		fmt.Sscan(in.GetPageToken(), &start)
	}
	res := &registryv1.ListAgentsResponse{}
	for i := start; i < len(f.agents) && i < start+2; i++ {
		res.Agents = append(res.Agents, f.agents[i])
	}
	if start+2 < len(f.agents) {
		res.NextPageToken = fmt.Sprint(start + 2)
	}
	return res, nil
}

func (f *fakePlatform) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_ = r.ParseForm()
	id := r.PostForm.Get("client_id")
	f.mu.Lock()
	f.tokenReqs[id]++
	ok := false
	for _, a := range f.agents {
		ok = ok || (a.GetAgentId() == id && a.GetState() == registryv1.AgentState_AGENT_STATE_ACTIVE)
	}
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if !ok {
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"error":"invalid_client"}`))
		return
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"access_token": "at", "token_type": "Bearer", "expires_in": 600})
}

func run(t *testing.T, f *fakePlatform, n int) provisionload.Run {
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return provisionload.Run{
		Registry: f,
		Tokens: &tokenclient.Client{HTTP: tokenclient.NewHTTPClient(4, 5*time.Second),
			TokenURL: srv.URL + "/t/default/oauth2/token", Audience: srv.URL + "/t/default"},
		Tenant: "default", Agents: n, Parallelism: 3, TokenConcurrency: 2, Poll: time.Millisecond, Timeout: 20 * time.Second, Label: "t1",
	}
}

func TestRunReportsEveryAgentActiveWithToken(t *testing.T) {
	f := &fakePlatform{activeAt: 3, tokenReqs: map[string]int{},
		agents: []*registryv1.Agent{{Name: "tenants/default/agents/other", AgentId: "other", State: registryv1.AgentState_AGENT_STATE_PENDING}}}
	rep, err := run(t, f, 5).Do(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Agents != 5 || rep.RegisterToActive.Count != 5 || rep.RegisterToToken.Count != 5 {
		t.Fatalf("report counts %d agents, %d active, %d tokens; want 5 each", rep.Agents, rep.RegisterToActive.Count, rep.RegisterToToken.Count)
	}
	if rep.Rate <= 0 || rep.ActiveSeconds <= 0 || rep.TokenSeconds < rep.ActiveSeconds || rep.RegisterToToken.Max < rep.RegisterToActive.Min {
		t.Errorf("report = %+v: want a rate, and tokens after activation", rep)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.sweeps < f.activeAt {
		t.Errorf("%d sweeps, want at least %d", f.sweeps, f.activeAt)
	}
	for _, a := range f.agents[1:] {
		if f.tokenReqs[a.GetAgentId()] != 1 {
			t.Errorf("%s: %d token requests, want exactly one (it is ACTIVE when first asked)", a.GetName(), f.tokenReqs[a.GetAgentId()])
		}
	}
	if f.tokenReqs["other"] != 0 || f.agents[0].GetState() != registryv1.AgentState_AGENT_STATE_PENDING {
		t.Error("the run touched an agent it did not register")
	}
	var b strings.Builder
	if err := rep.WriteText(&b); err != nil || !strings.Contains(b.String(), "register -> ACTIVE") {
		t.Errorf("text report = %q, %v", b.String(), err)
	}
}

func TestRunFailsOnRejection(t *testing.T) {
	f := &fakePlatform{activeAt: 2, reject: true, tokenReqs: map[string]int{}}
	_, err := run(t, f, 3).Do(context.Background())
	if err == nil || !strings.Contains(err.Error(), "AGENT_STATE_REJECTED") || !strings.Contains(err.Error(), "policy says no") {
		t.Fatalf("err = %v, want a rejection naming the state and reason", err)
	}
}

func TestRunTimesOutNamingProgress(t *testing.T) {
	f := &fakePlatform{activeAt: 1 << 30, tokenReqs: map[string]int{}}
	r := run(t, f, 2)
	r.Timeout = 200 * time.Millisecond
	_, err := r.Do(context.Background())
	if err == nil || !strings.Contains(err.Error(), "0 of 2 agents seen ACTIVE") {
		t.Fatalf("err = %v, want a timeout saying how many were ACTIVE", err)
	}
}

func TestSustainedRate(t *testing.T) {
	base := time.Unix(0, 0)
	even := make([]time.Time, 101)
	for i := range even {
		even[i] = base.Add(time.Duration(i) * 100 * time.Millisecond)
	}
	tests := []struct {
		name  string
		times []time.Time
		want  float64
	}{
		{"too few", even[:9], 0},
		{"ten per second", even, 10},
		{"all at once", []time.Time{base, base, base, base, base, base, base, base, base, base}, 0},
	}
	for _, tt := range tests {
		if got := provisionload.SustainedRate(tt.times); got < tt.want-0.01 || got > tt.want+0.01 {
			t.Errorf("%s: SustainedRate = %v, want %v", tt.name, got, tt.want)
		}
	}
}
