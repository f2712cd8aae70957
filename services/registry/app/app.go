// Package app wires the registry service: the core over the event store, its read-model runners,
// the gRPC RegistryService and the tenants' event subscriptions (agentid.events.v1.EventsService). cmd/registry runs it alone; cmd/agentid runs it beside the other
// services in one process.
package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/agentid/agentid/pkg/eventsapi"
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/service"
	policyv1 "github.com/agentid/agentid/proto/gen/go/agentid/policy/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/registry/internal/registry"
	"github.com/agentid/agentid/services/registry/internal/server"
)

// Name is the component name of the registry.
const Name = "registry"

// DevActor is the actor recorded for tenants created by EnsureTenant.
const DevActor = "agentid/dev"

// Config configures the registry; the event store and logger come as Deps.
type Config struct {
	// MaxReadWait caps how long GetAgent with a min_version waits for the read model to reach it;
	// default registry.DefaultMaxReadWait (5s).
	MaxReadWait time.Duration
	// PolicyAddr is the gRPC target of the policy service, which admits updates that escalate an
	// ACTIVE or SUSPENDED agent (docs/policy-override.md). Empty (and no Deps.Policy): no admission,
	// such updates are refused (FailedPrecondition ADMISSION_UNAVAILABLE).
	PolicyAddr string
	// AdmissionTimeout bounds one admission (default admission.DefaultTimeout, 5s).
	AdmissionTimeout time.Duration
	// Checkpoints is where the read models' checkpoints are kept (docs/inventory.md): empty or
	// CheckpointsNATS, the JetStream object store bucket CHECKPOINTS (shared by the replicas, each
	// writing its own objects; a replica restores the newest valid one);
	// CheckpointsOff, none (every start replays the streams); anything else, a directory.
	Checkpoints string
	// GroupCommit publishes concurrent appends as JetStream atomic batches, one fsync per batch
	// (eventstore.Store.EnableGroupCommit, docs/adr/0008-group-commit.md). Off by default: each
	// batch costs the server a staging store (files created, synced, removed), which pays only where
	// fsync is slow; on a fast disk it measured no faster.
	GroupCommit bool
}

// Config.Checkpoints values besides a directory.
const (
	// CheckpointsNATS keeps checkpoints in the JetStream object store bucket CHECKPOINTS.
	CheckpointsNATS = "nats"
	// CheckpointsOff keeps no checkpoints.
	CheckpointsOff = "off"
)

// checkpointPolicy is when the registry writes its checkpoints: a checkpoint of a million agents
// takes seconds to write, so not after every few thousand events.
var checkpointPolicy = eventstore.CheckpointPolicy{Every: 100_000, Interval: 5 * time.Minute, OnStop: true}

func checkpointStore(cfg Config, deps Deps) (eventstore.CheckpointStore, error) {
	switch cfg.Checkpoints {
	case "", CheckpointsNATS:
		// One object per read model and replica, the bucket replicated as the streams are.
		return eventstore.StoreCheckpoints(deps.Store, eventstore.WithCheckpointLogger(deps.Logger)), nil
	case CheckpointsOff:
		return nil, nil
	}
	return eventstore.NewDirCheckpoints(cfg.Checkpoints)
}

// Validate checks the configuration.
func (c Config) Validate() error {
	if c.MaxReadWait < 0 {
		return fmt.Errorf("registry: MaxReadWait %s must not be negative", c.MaxReadWait)
	}
	if c.AdmissionTimeout < 0 {
		return fmt.Errorf("registry: AdmissionTimeout %s must not be negative", c.AdmissionTimeout)
	}
	return nil
}

// Deps are the registry's dependencies built by the process.
type Deps struct {
	// Store is the event store (streams ensured by the process). Required.
	Store *eventstore.Store
	// Logger logs; default slog.Default().
	Logger *slog.Logger
	// Policy, if set, is the policy service's client admissions use (an in-process or already
	// dialled client) instead of dialling Config.PolicyAddr.
	Policy policyv1.PolicyServiceClient
	// PolicyPerRPC authenticates the calls to Config.PolicyAddr as a platform service identity whose
	// decisions the policy service records (authn.PerRPCCredentials).
	PolicyPerRPC credentials.PerRPCCredentials
	// PolicyTLS verifies the policy service (service.Env.ClientTLS); nil dials it in plaintext,
	// which grpcx allows with credentials only to loopback addresses.
	PolicyTLS *tls.Config
}

// App is the registry component.
type App struct {
	svc        *registry.Service
	srv        *server.Server
	events     *eventsapi.Server
	log        *slog.Logger
	policyConn *grpc.ClientConn // dialled for admissions, closed by Close
	orphans    *registry.OrphanReactor
	discovery  *discoveryPart // DiscoveryService and its issuer clients read model
}

var _ service.Component = (*App)(nil)

// New builds the registry. Its read models fill once its Tasks run.
func New(cfg Config, deps Deps) (*App, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Store == nil {
		return nil, errors.New("registry: Deps.Store is required")
	}
	log := deps.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", Name)
	adm, policyConn, err := newAdmission(cfg, deps, log)
	if err != nil {
		return nil, err
	}
	ckpt, err := checkpointStore(cfg, deps)
	if err != nil {
		closeConn(policyConn)
		return nil, err
	}
	if cfg.GroupCommit {
		deps.Store.EnableGroupCommit(eventstore.GroupCommit{})
	}
	svc, err := registry.New(registry.Config{Store: deps.Store, Logger: log, MaxReadWait: cfg.MaxReadWait, Admission: adm,
		Checkpoints: ckpt, CheckpointPolicy: checkpointPolicy})
	if err != nil {
		closeConn(policyConn)
		return nil, err
	}
	// The registry is the tenants' front door, so it also serves their event subscriptions: a read-only
	// view of the event bus (the aggregate streams of every context, never a service's projections).
	events, err := eventsapi.New(eventsapi.Config{JetStream: deps.Store.JetStream(), Logger: log})
	if err != nil {
		closeConn(policyConn)
		return nil, err
	}
	orphans, err := newOrphanReactor(svc, deps.Store, log)
	if err != nil {
		closeConn(policyConn)
		return nil, err
	}
	srv := server.New(svc)
	disc, err := newDiscovery(deps.Store, svc, srv)
	if err != nil {
		closeConn(policyConn)
		return nil, err
	}
	return &App{svc: svc, srv: srv, events: events, log: log, policyConn: policyConn, orphans: orphans, discovery: disc}, nil
}

// Name implements service.Component.
func (a *App) Name() string { return Name }

// RegisterGRPC registers agentid.registry.v1.RegistryService, DiscoveryService and
// agentid.events.v1.EventsService on s.
func (a *App) RegisterGRPC(s *grpc.Server) {
	registryv1.RegisterRegistryServiceServer(s, a.srv)
	registryv1.RegisterDiscoveryServiceServer(s, a.discovery.srv)
	a.events.Register(s)
}

// Tasks returns the runners of the read models and the orphan reactor.
func (a *App) Tasks() []service.Task {
	runners := a.svc.Runners()
	tasks := make([]service.Task, len(runners), len(runners)+2)
	for i, r := range runners {
		tasks[i] = r.Run
	}
	return append(tasks, a.orphans.Run, a.discovery.runner.Run)
}

// Ready blocks until the read models have caught up with their streams as they were at start.
func (a *App) Ready(ctx context.Context) error {
	if err := a.svc.Ready(ctx); err != nil {
		return err
	}
	return a.discovery.runner.Ready(ctx)
}

// EnsureTenant creates tenant id unless it exists (for `agentid dev`, which creates "default" at
// its first start). The event's actor is the service DevActor.
func (a *App) EnsureTenant(ctx context.Context, id, displayName string) error {
	return a.svc.EnsureTenant(ctx, id, displayName, eventstore.Metadata{
		Actor: eventstore.Actor{ID: DevActor, Kind: eventstore.ActorService},
	})
}
