// Package seed writes many ACTIVE agents straight into the registry's event stream, as the registry
// itself would record them, so that restarts, replays and read models can be measured at a size that
// registering through the API would take hours to reach.
package seed

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/go-jose/go-jose/v4"
	"golang.org/x/sync/errgroup"

	"github.com/agentid/agentid/pkg/eventstore"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// Event types, aggregate type and command names as the registry writes them
// (services/registry/internal/registry: events.go, service.go).
const (
	// EventAgentRegistered is the registry's agent.registered event type.
	EventAgentRegistered = "agent.registered"
	// EventAgentActivated is the registry's agent.activated event type.
	EventAgentActivated = "agent.activated"
	cmdRegisterAgent    = "RegisterAgent"
	cmdActivateAgent    = "ActivateAgent"
)

// Source is the ce-source of every event this package writes; it tells seeded events apart.
const Source = "agentid/seedagents"

// Scope is the only scope of a seeded agent: read-only, so its risk tier is LOW.
const Scope = "faq.read"

// Sponsor is the sponsor of every seeded agent (registration requires one, as it requires an owner).
const Sponsor = "team:platform"

// Defaults of Config.
const (
	// DefaultConcurrency is how many agents are written at once by default.
	DefaultConcurrency = 64
	// DefaultProgressEvery is the default progress interval.
	DefaultProgressEvery = 5 * time.Second
)

// Appender is the part of the event store that seeding needs (*eventstore.Store).
type Appender interface {
	Append(ctx context.Context, a eventstore.Append) (eventstore.Event, error)
}

// Progress is a snapshot of a seeding run.
type Progress struct {
	// Done is the number of agents written (or found already written) so far.
	Done int
	// Total is the number of agents of the run.
	Total int
	// Elapsed is the time since the run started.
	Elapsed time.Duration
}

// Rate is the agents per second so far.
func (p Progress) Rate() float64 {
	if p.Elapsed <= 0 {
		return 0
	}
	return float64(p.Done) / p.Elapsed.Seconds()
}

// Config says which agents to write and where.
type Config struct {
	// Store receives the events. Required.
	Store Appender
	// Tenant the agents belong to. Required.
	Tenant string
	// First is the index of the first agent; agents First..First+Count-1 are written.
	First int
	// Count is the number of agents. At least 1.
	Count int
	// Concurrency is how many agents are written at once (default DefaultConcurrency).
	Concurrency int
	// PublicJWKS is the JWK Set every agent gets; default a fresh ES256 public key shared by all.
	PublicJWKS string
	// OnProgress, if set, is called about every ProgressEvery and once at the end.
	OnProgress func(Progress)
	// ProgressEvery is the progress interval (default DefaultProgressEvery).
	ProgressEvery time.Duration
}

// RequestID is the request id of the registration of agent i; a RegisterAgent call with this request
// id resolves to the same agent.
func RequestID(i int) string { return "seedagents-" + strconv.Itoa(i) }

// AgentID is the id of agent i of tenant: the id the registry derives from the request id
// RequestID(i) (registry.DeriveAgentID), so reruns and the API agree on it.
func AgentID(tenant string, i int) string {
	sum := sha256.Sum256([]byte("agentid/registry/agent\x00" + tenant + "\x00" + RequestID(i)))
	hi, lo := binary.BigEndian.Uint64(sum[:8]), binary.BigEndian.Uint64(sum[8:16])
	const crockford = "0123456789abcdefghjkmnpqrstvwxyz"
	out := make([]byte, 26)
	for j := 25; j >= 0; j-- {
		out[j] = crockford[lo&31]
		lo = lo>>5 | hi<<59
		hi >>= 5
	}
	return "agt_" + string(out)
}

// AgentName is the resource name of an agent: tenants/{tenant}/agents/{agent}.
func AgentName(tenant, agentID string) string { return "tenants/" + tenant + "/agents/" + agentID }

// NewPublicJWKS returns the JWK Set of a fresh ES256 public key (its private key is discarded).
func NewPublicJWKS() (string, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", fmt.Errorf("seed: generate key: %w", err)
	}
	jwk := jose.JSONWebKey{Key: &k.PublicKey, KeyID: "seedagents", Algorithm: string(jose.ES256), Use: "sig"}
	b, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{jwk}})
	if err != nil {
		return "", fmt.Errorf("seed: encode JWKS: %w", err)
	}
	return string(b), nil
}

// Agent returns the registration payload of agent i, as the registry's RegisterAgent records it for
// a low-risk, read-only dev agent (the registry derives the risk tier; for this classification it is
// LOW).
func Agent(tenant string, i int, jwks string) *registryv1.Agent {
	id := AgentID(tenant, i)
	return &registryv1.Agent{
		Name:            AgentName(tenant, id),
		AgentId:         id,
		Tenant:          tenant,
		DisplayName:     "seeded agent #" + strconv.Itoa(i),
		Owner:           "team:seed",
		Sponsor:         Sponsor,
		Purpose:         "seeded to measure the platform at scale",
		Environment:     registryv1.Environment_ENVIRONMENT_DEV,
		Autonomy:        registryv1.Autonomy_AUTONOMY_ASSISTIVE,
		IdentityModel:   registryv1.IdentityModel_IDENTITY_MODEL_AUTONOMOUS,
		TrustBoundary:   registryv1.TrustBoundary_TRUST_BOUNDARY_INTERNAL,
		DataSensitivity: registryv1.DataSensitivity_DATA_SENSITIVITY_INTERNAL,
		RiskTier:        registryv1.RiskTier_RISK_TIER_LOW,
		Scopes:          []string{Scope},
		PublicJwks:      jwks,
		State:           registryv1.AgentState_AGENT_STATE_PENDING,
	}
}

// Appends returns the two appends that make agent i ACTIVE: agent.registered (at version 0) and
// agent.activated, whose expected version the caller sets to the registration's sequence. Keys,
// subjects and metadata follow the registry's RegisterAgent and ActivateAgent.
func Appends(tenant string, i int, jwks string) (registered, activated eventstore.Append) {
	id := AgentID(tenant, i)
	name := AgentName(tenant, id)
	actor := eventstore.Actor{ID: "seedagents", Kind: eventstore.ActorService}
	regKey := cmdRegisterAgent + "/" + tenant + "/" + id + "/" + RequestID(i)
	actKey := cmdActivateAgent + "/" + tenant + "/" + id + "/" + RequestID(i) + "-activate"
	registered = eventstore.Append{
		Tenant: tenant, AggregateType: eventstore.AggregateAgent, AggregateID: id,
		ExpectedVersion: 0, IdempotencyKey: regKey, Type: EventAgentRegistered, Subject: name,
		Data:     &registryv1.AgentRegistered{Agent: Agent(tenant, i, jwks)},
		Metadata: eventstore.Metadata{Tenant: tenant, Actor: actor, CorrelationID: RequestID(i), CausationID: regKey},
	}
	activated = eventstore.Append{
		Tenant: tenant, AggregateType: eventstore.AggregateAgent, AggregateID: id,
		IdempotencyKey: actKey, Type: EventAgentActivated, Subject: name,
		Data:     &registryv1.AgentActivated{Name: name, DecisionId: "seed/" + id, ApprovedBy: "seedagents"},
		Metadata: eventstore.Metadata{Tenant: tenant, Actor: actor, CorrelationID: RequestID(i) + "-activate", CausationID: actKey},
	}
	return registered, activated
}

// Seed writes agents cfg.First .. cfg.First+cfg.Count-1, each registered and then activated, with
// cfg.Concurrency agents in flight. It is idempotent: an agent written by an earlier run resolves to
// its stored events and nothing is written twice. It returns the agents done and the first error.
func Seed(ctx context.Context, cfg Config) (int, error) {
	switch {
	case cfg.Store == nil:
		return 0, errors.New("seed: Config.Store is required")
	case cfg.Tenant == "":
		return 0, errors.New("seed: Config.Tenant is required")
	case cfg.Count < 1:
		return 0, fmt.Errorf("seed: Config.Count must be at least 1, got %d", cfg.Count)
	case cfg.First < 0:
		return 0, fmt.Errorf("seed: Config.First must not be negative, got %d", cfg.First)
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.ProgressEvery <= 0 {
		cfg.ProgressEvery = DefaultProgressEvery
	}
	if cfg.PublicJWKS == "" {
		jwks, err := NewPublicJWKS()
		if err != nil {
			return 0, err
		}
		cfg.PublicJWKS = jwks
	}
	start := time.Now()
	var done atomic.Int64
	report := func() {
		if cfg.OnProgress != nil {
			cfg.OnProgress(Progress{Done: int(done.Load()), Total: cfg.Count, Elapsed: time.Since(start)})
		}
	}
	stopProgress := make(chan struct{})
	progressDone := make(chan struct{})
	go func() {
		defer close(progressDone)
		t := time.NewTicker(cfg.ProgressEvery)
		defer t.Stop()
		for {
			select {
			case <-stopProgress:
				return
			case <-t.C:
				report()
			}
		}
	}()

	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(cfg.Concurrency)
	for i := cfg.First; i < cfg.First+cfg.Count && gctx.Err() == nil; i++ {
		g.Go(func() error {
			reg, act := Appends(cfg.Tenant, i, cfg.PublicJWKS)
			ev, err := cfg.Store.Append(gctx, reg)
			if err != nil {
				return fmt.Errorf("seed: register agent %d (%s): %w", i, reg.AggregateID, err)
			}
			act.ExpectedVersion = ev.Sequence
			if _, err := cfg.Store.Append(gctx, act); err != nil {
				return fmt.Errorf("seed: activate agent %d (%s): %w", i, act.AggregateID, err)
			}
			done.Add(1)
			return nil
		})
	}
	err := g.Wait()
	close(stopProgress)
	<-progressDone
	report()
	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	return int(done.Load()), err
}
