// Package provisionload measures provisioning throughput: it registers a burst of low-risk agents
// through the registry API with a bounded parallelism, watches them become ACTIVE (one ListAgents
// sweep of the tenant per poll, so the watching costs the platform little however many agents wait),
// requests each agent's first token as soon as it is ACTIVE, and reports the rate, the register →
// ACTIVE and register → first token percentiles, and the CPU each given process spent.
package provisionload

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"sort"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"github.com/agentid/agentid/loadtest/internal/procfs"
	"github.com/agentid/agentid/loadtest/internal/provision"
	"github.com/agentid/agentid/loadtest/internal/stats"
	"github.com/agentid/agentid/loadtest/internal/tokenclient"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// Registry is the part of the registry API the run calls (registryv1.RegistryServiceClient).
type Registry interface {
	RegisterAgent(ctx context.Context, in *registryv1.RegisterAgentRequest, opts ...grpc.CallOption) (*registryv1.RegisterAgentResponse, error)
	ListAgents(ctx context.Context, in *registryv1.ListAgentsRequest, opts ...grpc.CallOption) (*registryv1.ListAgentsResponse, error)
}

// Run is one measurement.
type Run struct {
	// Registry is the registry API, authenticated as a principal allowed to register agents.
	Registry Registry
	// Tokens requests the agents' first tokens.
	Tokens *tokenclient.Client
	// Tenant the agents are registered in.
	Tenant string
	// Agents is how many agents are registered.
	Agents int
	// Parallelism is how many RegisterAgent calls are in flight at once.
	Parallelism int
	// TokenConcurrency is how many first-token requests are in flight at once.
	TokenConcurrency int
	// Poll is how often the tenant's agents are listed and a refused first token is retried; it
	// bounds the resolution of the latencies.
	Poll time.Duration
	// Timeout bounds the whole run.
	Timeout time.Duration
	// PIDs are processes whose CPU time during the run is reported.
	PIDs []int
	// Label names this run in display names and request ids (default: random).
	Label string
	// Progress, if set, gets a line every few seconds.
	Progress func(format string, args ...any)
}

// Report is the outcome of a Run.
type Report struct {
	// Agents is how many agents were registered.
	Agents int `json:"agents"`
	// Parallelism is the registration parallelism.
	Parallelism int `json:"parallelism"`
	// RegisterSeconds is the time from the first RegisterAgent to the last answer.
	RegisterSeconds float64 `json:"register_seconds"`
	// ActiveSeconds is the time from the first RegisterAgent until the last agent was seen ACTIVE.
	ActiveSeconds float64 `json:"active_seconds"`
	// TokenSeconds is the time from the first RegisterAgent until the last agent got its first token.
	TokenSeconds float64 `json:"token_seconds"`
	// Rate is Agents / ActiveSeconds: provisionings per second over the whole burst.
	Rate float64 `json:"rate_per_second"`
	// SustainedRate is the rate between the 10th and the 90th percentile of the activation times,
	// without the start-up and the tail of the burst.
	SustainedRate float64 `json:"sustained_rate_per_second"`
	// RegisterToActive is the distribution of register → first seen ACTIVE.
	RegisterToActive stats.Summary `json:"register_to_active"`
	// RegisterToToken is the distribution of register → first successful token.
	RegisterToToken stats.Summary `json:"register_to_token"`
	// Processes is the CPU each given process spent during the run.
	Processes []Process `json:"processes"`
}

// Process is the CPU one process spent during the run.
type Process struct {
	// PID is the process id.
	PID int `json:"pid"`
	// Name is the process's command name.
	Name string `json:"name"`
	// CPUSeconds is the CPU time (user + system) used from the first registration to the last token.
	CPUSeconds float64 `json:"cpu_seconds"`
	// CPUPerAgentMillis is CPUSeconds per provisioned agent, in milliseconds.
	CPUPerAgentMillis float64 `json:"cpu_per_agent_ms"`
	// Error says why the CPU could not be read.
	Error string `json:"error,omitempty"`
}

// agent is one registered agent of the run.
type agent struct {
	name     string
	id       *tokenclient.Identity
	start    time.Time // RegisterAgent sent
	active   time.Time // first seen ACTIVE
	token    time.Time // first token
	activeCh bool      // handed to the token workers
}

func (r *Run) defaults() error {
	if r.Registry == nil || r.Tokens == nil {
		return errors.New("provisionload: Registry and Tokens are required")
	}
	if r.Agents < 1 {
		return fmt.Errorf("provisionload: Agents must be at least 1, got %d", r.Agents)
	}
	if r.Parallelism <= 0 {
		r.Parallelism = 8
	}
	if r.TokenConcurrency <= 0 {
		r.TokenConcurrency = 8
	}
	if r.Poll <= 0 {
		r.Poll = 250 * time.Millisecond
	}
	if r.Timeout <= 0 {
		r.Timeout = 5 * time.Minute
	}
	if r.Label == "" {
		b := make([]byte, 4)
		_, _ = rand.Read(b)
		r.Label = hex.EncodeToString(b)
	}
	if r.Progress == nil {
		r.Progress = func(string, ...any) {}
	}
	return nil
}

// Do registers the agents, waits until every one is ACTIVE and has a token, and reports. An agent
// that ends in another state, or a run that does not finish within Timeout, is an error naming it.
func (r Run) Do(ctx context.Context) (*Report, error) {
	if err := r.defaults(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, r.Timeout)
	defer cancel()
	cpuBefore := make([]time.Duration, len(r.PIDs))
	for i, pid := range r.PIDs {
		cpuBefore[i], _ = procfs.ReadCPU(pid)
	}
	agents := make([]*agent, r.Agents)
	byName := sync.Map{} // name -> *agent
	var mu sync.Mutex    // guards the times and failures of agents
	ready := make(chan *agent, r.Agents)
	begin := time.Now()

	g, gctx := errgroup.WithContext(ctx)
	registered := make(chan struct{})
	var registerDone time.Time
	g.Go(func() error {
		rg, rctx := errgroup.WithContext(gctx)
		rg.SetLimit(r.Parallelism)
		for i := range agents {
			rg.Go(func() error {
				a, err := r.register(rctx, i)
				if err != nil {
					return err
				}
				mu.Lock()
				agents[i] = a
				mu.Unlock()
				byName.Store(a.name, a)
				return nil
			})
		}
		err := rg.Wait()
		registerDone = time.Now()
		close(registered)
		if err == nil {
			r.Progress("registered %d agents in %.1fs", r.Agents, registerDone.Sub(begin).Seconds())
		}
		return err
	})
	g.Go(func() error { return r.watch(gctx, begin, &byName, &mu, registered, ready) })
	g.Go(func() error { return r.firstTokens(gctx, &mu, ready) })
	if err := g.Wait(); err != nil {
		return nil, err
	}
	end := time.Now()

	rep := &Report{Agents: r.Agents, Parallelism: r.Parallelism, RegisterSeconds: registerDone.Sub(begin).Seconds(),
		TokenSeconds: end.Sub(begin).Seconds()}
	toActive, toToken := stats.NewHistogram(), stats.NewHistogram()
	actives := make([]time.Time, 0, len(agents))
	for _, a := range agents {
		toActive.Record(a.active.Sub(a.start))
		toToken.Record(a.token.Sub(a.start))
		actives = append(actives, a.active)
	}
	sort.Slice(actives, func(i, j int) bool { return actives[i].Before(actives[j]) })
	rep.ActiveSeconds = actives[len(actives)-1].Sub(begin).Seconds()
	rep.Rate = float64(r.Agents) / rep.ActiveSeconds
	rep.SustainedRate = SustainedRate(actives)
	rep.RegisterToActive, rep.RegisterToToken = toActive.Summary(), toToken.Summary()
	for i, pid := range r.PIDs {
		p := Process{PID: pid}
		if m, err := procfs.ReadMemory(pid); err == nil {
			p.Name = m.Name
		}
		cpu, err := procfs.ReadCPU(pid)
		if err != nil {
			p.Error = err.Error()
		} else {
			p.CPUSeconds = (cpu - cpuBefore[i]).Seconds()
			p.CPUPerAgentMillis = p.CPUSeconds * 1000 / float64(r.Agents)
		}
		rep.Processes = append(rep.Processes, p)
	}
	if self, err := procfs.ReadCPU(os.Getpid()); err == nil {
		rep.Processes = append(rep.Processes, Process{PID: os.Getpid(), Name: "provisionload (self)", CPUSeconds: self.Seconds(),
			CPUPerAgentMillis: self.Seconds() * 1000 / float64(r.Agents)})
	}
	return rep, nil
}

// SustainedRate is the number of activations between the 10th and the 90th percentile of the sorted
// activation times divided by the time between them; 0 when they are too few or at one instant.
func SustainedRate(sorted []time.Time) float64 {
	if len(sorted) < 10 {
		return 0
	}
	lo, hi := len(sorted)/10, len(sorted)*9/10
	span := sorted[hi].Sub(sorted[lo]).Seconds()
	if span <= 0 {
		return 0
	}
	return float64(hi-lo) / span
}

func (r *Run) register(ctx context.Context, i int) (*agent, error) {
	id, err := tokenclient.NewIdentity()
	if err != nil {
		return nil, err
	}
	jwks, err := id.PublicJWKS()
	if err != nil {
		return nil, err
	}
	a := &agent{id: id, start: time.Now()}
	res, err := r.Registry.RegisterAgent(ctx, &registryv1.RegisterAgentRequest{
		Parent:    "tenants/" + r.Tenant,
		RequestId: fmt.Sprintf("provisionload-%s-%d", r.Label, i),
		Agent: &registryv1.Agent{
			DisplayName:     fmt.Sprintf("provisionload %s #%d", r.Label, i+1),
			Owner:           "team:loadtest",
			Sponsor:         "team:platform",
			Purpose:         "load test of provisioning",
			Environment:     registryv1.Environment_ENVIRONMENT_DEV,
			Autonomy:        registryv1.Autonomy_AUTONOMY_ASSISTIVE,
			IdentityModel:   registryv1.IdentityModel_IDENTITY_MODEL_AUTONOMOUS,
			TrustBoundary:   registryv1.TrustBoundary_TRUST_BOUNDARY_INTERNAL,
			DataSensitivity: registryv1.DataSensitivity_DATA_SENSITIVITY_INTERNAL,
			Scopes:          []string{provision.Scope},
			PublicJwks:      jwks,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("provisionload: register agent %d: %w", i+1, err)
	}
	a.name, id.ClientID = res.GetAgent().GetName(), res.GetAgent().GetAgentId()
	if a.name == "" || id.ClientID == "" {
		return nil, fmt.Errorf("provisionload: register agent %d: the response has no agent name or id", i+1)
	}
	return a, nil
}

// watch lists the tenant's agents every Poll and hands each of the run's agents to the token workers
// the first time it is seen ACTIVE; it ends when every agent has been handed on (closing ready), and
// fails on an agent in a state other than PENDING or ACTIVE.
func (r *Run) watch(ctx context.Context, begin time.Time, byName *sync.Map, mu *sync.Mutex, registered <-chan struct{}, ready chan<- *agent) error {
	defer close(ready)
	tick := time.NewTicker(r.Poll)
	defer tick.Stop()
	handed, lastReport := 0, time.Now()
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("provisionload: %d of %d agents seen ACTIVE when the run ended: %w", handed, r.Agents, context.Cause(ctx))
		case <-tick.C:
		}
		allRegistered := false
		select {
		case <-registered:
			allRegistered = true
		default:
		}
		now := time.Now()
		page := ""
		for {
			res, err := r.Registry.ListAgents(ctx, &registryv1.ListAgentsRequest{Parent: "tenants/" + r.Tenant, PageSize: 1000, PageToken: page})
			if err != nil {
				if ctx.Err() != nil {
					break
				}
				return fmt.Errorf("provisionload: list agents of tenant %s: %w", r.Tenant, err)
			}
			for _, got := range res.GetAgents() {
				v, ok := byName.Load(got.GetName())
				if !ok {
					continue
				}
				a := v.(*agent)
				mu.Lock()
				done := a.activeCh
				mu.Unlock()
				if done {
					continue
				}
				switch got.GetState() {
				case registryv1.AgentState_AGENT_STATE_ACTIVE:
					mu.Lock()
					a.active, a.activeCh = now, true
					mu.Unlock()
					handed++
					ready <- a
				case registryv1.AgentState_AGENT_STATE_PENDING, registryv1.AgentState_AGENT_STATE_UNSPECIFIED:
				default:
					return fmt.Errorf("provisionload: %s became %s, not ACTIVE (%s)", a.name, got.GetState(), got.GetStateReason())
				}
			}
			if page = res.GetNextPageToken(); page == "" {
				break
			}
		}
		if time.Since(lastReport) > 5*time.Second {
			r.Progress("%d of %d agents ACTIVE after %s", handed, r.Agents, now.Sub(begin).Round(time.Second))
			lastReport = time.Now()
		}
		if allRegistered && handed == r.Agents {
			return nil
		}
	}
}

// firstTokens requests each ready agent's first token, retrying a refusal every Poll until it works.
func (r *Run) firstTokens(ctx context.Context, mu *sync.Mutex, ready <-chan *agent) error {
	g, gctx := errgroup.WithContext(ctx)
	for range r.TokenConcurrency {
		g.Go(func() error {
			for a := range ready {
				var last error
				for {
					if _, err := r.Tokens.Request(gctx, a.id); err == nil {
						break
					} else if gctx.Err() == nil {
						last = err
					}
					select {
					case <-gctx.Done():
						return fmt.Errorf("provisionload: %s got no token before the run ended: %w (last error: %v)", a.name, context.Cause(gctx), last)
					case <-time.After(r.Poll):
					}
				}
				mu.Lock()
				a.token = time.Now()
				mu.Unlock()
			}
			return nil
		})
	}
	return g.Wait()
}
