// Package provision registers low-risk agents through the registry API and waits until the
// platform has provisioned them: registry → lifecycle workflow → policy → activation → issuer client.
package provision

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"github.com/agentid/agentid/loadtest/internal/tokenclient"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// Scope is the only scope the provisioned agents have: read-only, so policy auto-approves them.
const Scope = "faq.read"

// Defaults of Config.
const (
	// DefaultParallelism is the default Config.Parallelism.
	DefaultParallelism = 4
	// DefaultPollInterval is the default Config.PollInterval.
	DefaultPollInterval = 20 * time.Millisecond
	// DefaultTimeout is the default Config.Timeout.
	DefaultTimeout = 2 * time.Minute
)

// Registry is the part of the registry API that provisioning calls (registryv1.RegistryServiceClient).
type Registry interface {
	RegisterAgent(ctx context.Context, in *registryv1.RegisterAgentRequest, opts ...grpc.CallOption) (*registryv1.RegisterAgentResponse, error)
	GetAgent(ctx context.Context, in *registryv1.GetAgentRequest, opts ...grpc.CallOption) (*registryv1.GetAgentResponse, error)
}

// Config says how many agents to provision and where.
type Config struct {
	// Registry is the registry API, authenticated as a principal allowed to register agents.
	Registry Registry
	// Tokens requests tokens from the tenant's token endpoint, to check that the agents work.
	Tokens *tokenclient.Client
	// Tenant is the tenant id the agents are registered in.
	Tenant string
	// Count is the number of agents.
	Count int
	// Parallelism is how many agents are provisioned at once (default DefaultParallelism).
	Parallelism int
	// PollInterval is how often the agent's state and its first token are polled; it bounds the
	// resolution of the measured latencies (default DefaultPollInterval).
	PollInterval time.Duration
	// Timeout bounds the provisioning of one agent (default DefaultTimeout).
	Timeout time.Duration
	// Label names this batch in display names and request ids (default: random).
	Label string
	// OnReady, if set, is called after each agent is provisioned (from several goroutines).
	OnReady func(Agent)
}

// Agent is a provisioned agent and how long its provisioning took.
type Agent struct {
	// Name is the resource name, tenants/{tenant}/agents/{agent}.
	Name string
	// Identity is the agent's OAuth client: its id and private key.
	Identity *tokenclient.Identity
	// RegisterToActive is the time from sending RegisterAgent to first seeing the agent ACTIVE.
	RegisterToActive time.Duration
	// RegisterToToken is the time from sending RegisterAgent to its first successful token response.
	RegisterToToken time.Duration
}

// Provision registers cfg.Count agents and waits until each is ACTIVE and gets a token. It returns
// the agents in registration order, or the first error.
func Provision(ctx context.Context, cfg Config) ([]Agent, error) {
	if cfg.Registry == nil || cfg.Tokens == nil {
		return nil, errors.New("provision: Registry and Tokens are required")
	}
	if cfg.Count < 1 {
		return nil, fmt.Errorf("provision: Count must be at least 1, got %d", cfg.Count)
	}
	if cfg.Parallelism <= 0 {
		cfg.Parallelism = DefaultParallelism
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Label == "" {
		b := make([]byte, 4)
		_, _ = rand.Read(b)
		cfg.Label = hex.EncodeToString(b)
	}
	agents := make([]Agent, cfg.Count)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(cfg.Parallelism)
	for i := range agents {
		g.Go(func() error {
			a, err := provisionOne(gctx, cfg, i)
			if err != nil {
				return err
			}
			agents[i] = a
			if cfg.OnReady != nil {
				cfg.OnReady(a)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return agents, nil
}

func provisionOne(ctx context.Context, cfg Config, i int) (Agent, error) {
	id, err := tokenclient.NewIdentity()
	if err != nil {
		return Agent{}, err
	}
	jwks, err := id.PublicJWKS()
	if err != nil {
		return Agent{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	start := time.Now()
	res, err := cfg.Registry.RegisterAgent(ctx, &registryv1.RegisterAgentRequest{
		Parent:    "tenants/" + cfg.Tenant,
		RequestId: fmt.Sprintf("tokenload-%s-%d", cfg.Label, i),
		Agent: &registryv1.Agent{
			DisplayName:     fmt.Sprintf("tokenload %s #%d", cfg.Label, i+1),
			Owner:           "team:loadtest",
			Sponsor:         "team:platform",
			Purpose:         "load test of the token endpoint",
			Environment:     registryv1.Environment_ENVIRONMENT_DEV,
			Autonomy:        registryv1.Autonomy_AUTONOMY_ASSISTIVE,
			IdentityModel:   registryv1.IdentityModel_IDENTITY_MODEL_AUTONOMOUS,
			TrustBoundary:   registryv1.TrustBoundary_TRUST_BOUNDARY_INTERNAL,
			DataSensitivity: registryv1.DataSensitivity_DATA_SENSITIVITY_INTERNAL,
			Scopes:          []string{Scope},
			PublicJwks:      jwks,
		},
	})
	if err != nil {
		return Agent{}, fmt.Errorf("provision: register agent %d: %w", i+1, err)
	}
	a := Agent{Name: res.GetAgent().GetName(), Identity: id}
	id.ClientID = res.GetAgent().GetAgentId()
	if a.Name == "" || id.ClientID == "" {
		return Agent{}, fmt.Errorf("provision: register agent %d: the response has no agent name or id", i+1)
	}
	tick := time.NewTicker(cfg.PollInterval)
	defer tick.Stop()
	state := res.GetAgent().GetState()
	for state != registryv1.AgentState_AGENT_STATE_ACTIVE {
		switch state {
		case registryv1.AgentState_AGENT_STATE_PENDING, registryv1.AgentState_AGENT_STATE_UNSPECIFIED:
		default:
			return Agent{}, fmt.Errorf("provision: %s became %s, not ACTIVE (%s)", a.Name, state, res.GetAgent().GetStateReason())
		}
		if err := wait(ctx, tick, "to become ACTIVE", a.Name, nil); err != nil {
			return Agent{}, err
		}
		got, err := cfg.Registry.GetAgent(ctx, &registryv1.GetAgentRequest{Name: a.Name})
		if err != nil {
			return Agent{}, fmt.Errorf("provision: get %s: %w", a.Name, err)
		}
		state = got.GetAgent().GetState()
		res.Agent = got.GetAgent()
	}
	a.RegisterToActive = time.Since(start)
	var last error
	for {
		_, err := cfg.Tokens.Request(ctx, id)
		if err == nil {
			break
		}
		if ctx.Err() == nil {
			last = err
		}
		if err := wait(ctx, tick, "to get its first token", a.Name, last); err != nil {
			return Agent{}, err
		}
	}
	a.RegisterToToken = time.Since(start)
	return a, nil
}

// wait waits for the next tick, or fails when ctx ends, naming what the agent was waiting for and the
// last error seen.
func wait(ctx context.Context, tick *time.Ticker, what, name string, last error) error {
	select {
	case <-tick.C:
		return nil
	case <-ctx.Done():
		err := fmt.Errorf("provision: %s did not manage %s: %w", name, what, context.Cause(ctx))
		if last != nil {
			err = fmt.Errorf("%w (last error: %v)", err, last)
		}
		return err
	}
}
