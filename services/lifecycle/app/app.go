// Package app wires the lifecycle service: the Temporal worker running the provisioning and
// deprovisioning workflows, the consumer that starts them from agent events, and the gRPC
// LifecycleService. cmd/lifecycle runs it alone; cmd/agentid runs it beside the other services.
package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"
	"go.temporal.io/sdk/worker"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/grpcx"
	"github.com/agentid/agentid/pkg/service"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	lifecyclev1 "github.com/agentid/agentid/proto/gen/go/agentid/lifecycle/v1"
	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
	policyv1 "github.com/agentid/agentid/proto/gen/go/agentid/policy/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/lifecycle/internal/cleanup"
	"github.com/agentid/agentid/services/lifecycle/internal/lifecycle"
	"github.com/agentid/agentid/services/lifecycle/internal/notify"
	"github.com/agentid/agentid/services/lifecycle/internal/readmodel"
	"github.com/agentid/agentid/services/lifecycle/internal/server"
	"github.com/agentid/agentid/workflows"
)

// Name is the component name of the lifecycle service.
const Name = "lifecycle"

// Defaults of Config.
const (
	DefaultTemporalHostPort = "127.0.0.1:7233"
	DefaultNamespace        = workflows.Namespace
	DefaultTaskQueue        = workflows.TaskQueue
	// DefaultReconcileInterval is the time between two reconciler passes.
	DefaultReconcileInterval = lifecycle.DefaultReconcileInterval
)

// Config configures the lifecycle service.
type Config struct {
	// AgentResources are the RFC 8707 resources registered for every agent client the worker
	// creates (workflows.Activities.AgentResources).
	AgentResources []string
	// TemporalHostPort is the Temporal frontend (default DefaultTemporalHostPort).
	TemporalHostPort string
	// Namespace is the Temporal namespace (default agentid).
	Namespace string
	// TaskQueue is the workflows' task queue (default agentid-lifecycle).
	TaskQueue string
	// RegistryAddr is the gRPC target of the registry. Required.
	RegistryAddr string
	// IssuerAddr is the gRPC target of the issuer. Required.
	IssuerAddr string
	// PolicyAddr is the gRPC target of the policy service. Required.
	PolicyAddr string
	// MonitorAddr is the gRPC target of the monitor, which the inactivity sweep asks for activity;
	// empty makes that sweep fail (closed: no answer is never "inactive").
	MonitorAddr string
	// Sweeps configures the Schedules of the expired, inactive and orphaned sweeps.
	Sweeps lifecycle.SweepConfig
	// Reviews configures the access review campaigns' Schedule and windows (docs/reviews.md).
	Reviews lifecycle.ReviewConfig
	// RotationOverlap is how long both keys of an agent credential rotation work (default
	// workflows.DefaultRotationOverlap, 24h; docs/rotation.md).
	RotationOverlap time.Duration
	// RotationSweep configures the Schedule sweep-rotation reminding owners of keys due for rotation.
	RotationSweep lifecycle.RotationSweepConfig
	// ReconcileInterval is the time between two reconciler passes (default
	// lifecycle.DefaultReconcileInterval, 30s).
	ReconcileInterval time.Duration
	// StuckAfter is how long an agent may stay PENDING or RETIRING without a running run before it
	// counts in lifecycle_stuck_agents (default lifecycle.DefaultStuckAfter, 10m).
	StuckAfter time.Duration
	// EventRetryBackoff is the delay before the 1st, 2nd, ... redelivery of an agent event whose run
	// could not be started (Temporal unreachable); the last entry repeats, without a cap on the
	// number of deliveries (default eventstore.DefaultBackoff).
	EventRetryBackoff []time.Duration
	// WorkflowStartTimeout bounds one attempt to start a run (default 10s).
	WorkflowStartTimeout time.Duration
	// IssuerURL is the issuer's public base URL: approval tokens are verified against the JWKS of its
	// tenant issuers. Empty refuses every approval (fail closed).
	IssuerURL string
	// IncidentWebhookURL receives incident notifications (signed JSON POSTs); empty sends none (each
	// is recorded in the incident's timeline as not sent).
	IncidentWebhookURL string
	// IncidentWebhookSecret is the HMAC key of the notifications (at least 16 bytes); required with
	// IncidentWebhookURL.
	IncidentWebhookSecret string
	// IncidentEscalation is how long owner and sponsor may take to decide an incident (defaults
	// 4h each); IncidentEscalationTenants overrides it per tenant.
	IncidentEscalation        lifecycle.Escalation
	IncidentEscalationTenants map[string]lifecycle.Escalation
	// IncidentPolicy overrides the built-in incident actions per tenant; nil is the built-in table.
	IncidentPolicy *workflows.IncidentPolicy
	// Deprovision configures the sign-offs of deprovisioning runs (docs/deprovisioning.md).
	Deprovision lifecycle.DeprovisionPolicy
	// ApprovalEscalation configures the reminders and escalation of provisioning approvals, per
	// tenant (docs/lifecycle.md; defaults: remind every 24h, escalate after 48h).
	ApprovalEscalation lifecycle.ApprovalEscalation
	// CleanupWebhooks are the cleanups every deprovisioning runs, in order; none: nothing to clean.
	CleanupWebhooks []CleanupWebhook
}

// CleanupWebhook is one deprovisioning cleanup posted to a webhook (cleanup.Webhook).
type CleanupWebhook struct {
	// Name identifies the cleanup in the run's steps (cleanup:<name>).
	Name string
	// URL receives the signed POST.
	URL string
	// Secret is the HMAC key (at least 32 bytes).
	Secret string
}

// withDefaults fills the optional fields.
func (c Config) withDefaults() Config {
	if c.TemporalHostPort == "" {
		c.TemporalHostPort = DefaultTemporalHostPort
	}
	if c.Namespace == "" {
		c.Namespace = DefaultNamespace
	}
	if c.TaskQueue == "" {
		c.TaskQueue = DefaultTaskQueue
	}
	if c.ReconcileInterval == 0 {
		c.ReconcileInterval = lifecycle.DefaultReconcileInterval
	}
	if c.StuckAfter == 0 {
		c.StuckAfter = lifecycle.DefaultStuckAfter
	}
	return c
}

// Validate checks the configuration (after defaults).
func (c Config) Validate() error {
	c = c.withDefaults()
	for _, f := range []struct{ name, v string }{
		{"registry_addr", c.RegistryAddr}, {"issuer_addr", c.IssuerAddr}, {"policy_addr", c.PolicyAddr},
	} {
		if strings.TrimSpace(f.v) == "" {
			return errs.InvalidArgument(f.name, f.name+" is required")
		}
	}
	if strings.ContainsAny(c.Namespace, " /") {
		return errs.InvalidArgument("namespace", "namespace must not contain spaces or slashes")
	}
	if c.ReconcileInterval < time.Second {
		return errs.InvalidArgument("reconcile_interval", "reconcile_interval must be at least 1s")
	}
	if c.StuckAfter < 0 {
		return errs.InvalidArgument("stuck_after", "stuck_after must not be negative")
	}
	if c.WorkflowStartTimeout < 0 {
		return errs.InvalidArgument("workflow_start_timeout", "workflow_start_timeout must not be negative")
	}
	for _, d := range c.EventRetryBackoff {
		if d <= 0 {
			return errs.InvalidArgument("event_retry_backoff", "event_retry_backoff delays must be positive")
		}
	}
	if c.IncidentWebhookURL != "" && len(c.IncidentWebhookSecret) < 16 {
		return errs.InvalidArgument("incident_webhook_secret", "incident_webhook_secret of at least 16 bytes is required with incident_webhook_url")
	}
	if err := c.IncidentPolicy.Validate(); err != nil {
		return errs.InvalidArgument("incident_policy", err.Error())
	}
	if err := c.Sweeps.Validate(); err != nil {
		return err
	}
	if err := c.Reviews.Validate(); err != nil {
		return err
	}
	if c.RotationOverlap < 0 {
		return errs.InvalidArgument("rotation_overlap", "rotation_overlap must not be negative")
	}
	if err := c.RotationSweep.Validate(); err != nil {
		return err
	}
	return nil
}

// Deps are the lifecycle service's dependencies built by the process.
type Deps struct {
	// Store is the event store (streams ensured by the process): agent events in, lifecycle events out. Required.
	Store *eventstore.Store
	// Logger logs; default slog.Default().
	Logger *slog.Logger
	// PerRPC authenticates the calls to registry, issuer and policy as the lifecycle worker's service
	// identity (authn.PerRPCCredentials); nil sends no credentials.
	PerRPC credentials.PerRPCCredentials
	// TLS verifies registry, issuer and policy (service.Env.ClientTLS); nil dials them in plaintext,
	// which grpcx allows with PerRPC only to loopback addresses.
	TLS *tls.Config
	// Temporal is the Temporal client; nil dials Config.TemporalHostPort lazily (and Close closes it).
	Temporal client.Client
	// TemporalTLS, if set, makes that client use TLS (and mTLS when it holds a client certificate):
	// see tlsx.NewClientConfig. Nil is plaintext.
	TemporalTLS *tls.Config
	// TemporalHeaders, if set, adds headers to every call of that client: TemporalBearer sends the
	// worker's bearer token to a Temporal frontend with a JWT authorizer. Nil sends none.
	TemporalHeaders HeadersProvider
	// Registerer receives the lifecycle metrics; default prometheus.DefaultRegisterer.
	Registerer prometheus.Registerer
	// JWKSClient fetches the issuer's JWKS to verify approval tokens (e.g. with the deployment's CA);
	// nil uses authn's default client.
	JWKSClient *http.Client
}

// App is the lifecycle component.
type App struct {
	cfg       Config
	log       *slog.Logger
	store     *eventstore.Store
	temporal  client.Client
	ownClient bool
	conns     []*grpc.ClientConn
	acts      *workflows.Activities
	core      *lifecycle.Service
	srv       *server.Server
	model     *readmodel.Model
	runners   []*eventstore.Runner
	reconcile *lifecycle.Reconciler
	incidents *lifecycle.Incidents

	closeOnce sync.Once
}

var _ service.Component = (*App)(nil)

// New builds the lifecycle service. Nothing connects yet: Temporal and the gRPC peers are dialled
// lazily, so the process starts while they come up.
func New(cfg Config, deps Deps) (*App, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if deps.Store == nil {
		return nil, errors.New("lifecycle: Deps.Store is required")
	}
	log := deps.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", Name)
	a := &App{cfg: cfg, log: log, store: deps.Store, temporal: deps.Temporal}
	if a.temporal == nil {
		c, err := client.NewLazyClient(client.Options{
			HostPort: cfg.TemporalHostPort, Namespace: cfg.Namespace, Logger: sdklog.NewStructuredLogger(log.With("component", "temporal")),
			ConnectionOptions: client.ConnectionOptions{TLS: deps.TemporalTLS},
			HeadersProvider:   deps.TemporalHeaders,
		})
		if err != nil {
			return nil, fmt.Errorf("lifecycle: temporal client: %w", err)
		}
		a.temporal, a.ownClient = c, true
	}

	byAddr := map[string]*grpc.ClientConn{}
	dial := func(addr string) (*grpc.ClientConn, error) {
		if cc, ok := byAddr[addr]; ok {
			return cc, nil
		}
		cc, err := grpcx.DialTLS(addr, deps.TLS, deps.PerRPC)
		if err != nil {
			return nil, fmt.Errorf("lifecycle: dial %s: %w", addr, err)
		}
		byAddr[addr] = cc
		a.conns = append(a.conns, cc)
		return cc, nil
	}
	reg, err := dial(cfg.RegistryAddr)
	if err != nil {
		_ = a.Close()
		return nil, err
	}
	iss, err := dial(cfg.IssuerAddr)
	if err != nil {
		_ = a.Close()
		return nil, err
	}
	pol, err := dial(cfg.PolicyAddr)
	if err != nil {
		_ = a.Close()
		return nil, err
	}
	registry := registryv1.NewRegistryServiceClient(reg)
	issuer := issuerv1.NewIssuerServiceClient(iss)
	var approvals workflows.ApprovalTokenVerifier
	if cfg.IssuerURL != "" {
		v, err := authn.NewJWKSVerifier(authn.JWKSVerifierConfig{IssuerBaseURL: cfg.IssuerURL, HTTPClient: deps.JWKSClient})
		if err != nil {
			_ = a.Close()
			return nil, fmt.Errorf("lifecycle: issuer_url: %w", err)
		}
		approvals = v
	} else {
		log.Warn("no issuer URL: every approval is refused (approval tokens cannot be verified)")
	}
	a.acts = &workflows.Activities{
		Registry: registry,
		Issuer:   issuer,
		Policy:   policyv1.NewPolicyServiceClient(pol),
		Events:   deps.Store,

		ApprovalTokens: approvals,
		AgentResources: cfg.AgentResources,
		IncidentPolicy: cfg.IncidentPolicy,
	}
	if cfg.MonitorAddr != "" {
		mon, err := dial(cfg.MonitorAddr)
		if err != nil {
			_ = a.Close()
			return nil, err
		}
		a.acts.Monitor = monitorv1.NewMonitorServiceClient(mon)
	} else {
		log.Warn("no monitor address: the inactivity sweep fails until one is configured")
	}
	if cfg.IncidentWebhookURL != "" {
		wh, err := notify.NewWebhook(notify.WebhookConfig{URL: cfg.IncidentWebhookURL, Secret: []byte(cfg.IncidentWebhookSecret)})
		if err != nil {
			_ = a.Close()
			return nil, fmt.Errorf("lifecycle: incident_webhook_url: %w", err)
		}
		a.acts.Notifier = wh
	}
	for _, c := range cfg.CleanupWebhooks {
		wh, err := cleanup.NewWebhook(cleanup.WebhookConfig{Name: c.Name, URL: c.URL, Secret: []byte(c.Secret)})
		if err != nil {
			_ = a.Close()
			return nil, fmt.Errorf("lifecycle: cleanup webhooks: %w", err)
		}
		a.acts.Cleanups = append(a.acts.Cleanups, wh)
	}
	a.model = readmodel.New()
	a.runners = []*eventstore.Runner{
		deps.Store.NewRunner(readmodel.Agents{M: a.model}, eventstore.StreamAgents, []string{eventstore.AggregateTypeSubject(eventstore.AggregateAgent)}),
		deps.Store.NewRunner(readmodel.Credentials{M: a.model}, eventstore.StreamCredentials, []string{eventstore.AggregateTypeSubject(eventstore.AggregateClient)}),
		deps.Store.NewRunner(readmodel.Lifecycle{M: a.model}, eventstore.StreamLifecycle, nil),
	}
	a.core, err = lifecycle.New(lifecycle.Config{Temporal: a.temporal, TaskQueue: cfg.TaskQueue, Registry: registry, Model: a.model,
		StartTimeout: cfg.WorkflowStartTimeout, Logger: log, Deprovision: cfg.Deprovision, Approvals: cfg.ApprovalEscalation,
		RotationOverlap: cfg.RotationOverlap, OrphanedAction: cfg.Sweeps.OrphanedAction})
	if err != nil {
		_ = a.Close()
		return nil, err
	}
	a.reconcile, err = lifecycle.NewReconciler(lifecycle.ReconcilerConfig{
		Service: a.core, Model: a.model, Issuer: issuer, Ready: a.Ready,
		Interval: cfg.ReconcileInterval, StuckAfter: cfg.StuckAfter, Registerer: deps.Registerer, Logger: log,
	})
	if err != nil {
		_ = a.Close()
		return nil, err
	}
	a.incidents, err = lifecycle.NewIncidents(lifecycle.IncidentsConfig{Service: a.core, Temporal: a.temporal,
		Escalation: cfg.IncidentEscalation, Tenants: cfg.IncidentEscalationTenants, Policy: cfg.IncidentPolicy})
	if err != nil {
		_ = a.Close()
		return nil, err
	}
	reviews, err := lifecycle.NewReviews(a.temporal, cfg.TaskQueue, cfg.Reviews)
	if err != nil {
		_ = a.Close()
		return nil, err
	}
	a.srv = server.New(a.core).WithIncidents(a.incidents).WithSignOffs(a.core).WithReviews(reviews.WithRegistry(registry))
	return a, nil
}

// Name implements service.Component.
func (a *App) Name() string { return Name }

// RegisterGRPC registers agentid.lifecycle.v1.LifecycleService on s.
func (a *App) RegisterGRPC(s *grpc.Server) { lifecyclev1.RegisterLifecycleServiceServer(s, a.srv) }

// Tasks returns the Temporal worker, the agent-event consumer, the read model's projection runners
// and the reconciler.
func (a *App) Tasks() []service.Task {
	tasks := []service.Task{a.runWorker, a.runConsumer, a.runAlertConsumer, a.reconcile.Run, a.runSweepSchedules}
	for _, r := range a.runners {
		tasks = append(tasks, r.Run)
	}
	return tasks
}

// Ready blocks until the read model has caught up with streams AGENTS, CREDENTIALS and LIFECYCLE as
// they were when its runners started (the process's readiness, and the reconciler's first pass,
// wait for it).
func (a *App) Ready(ctx context.Context) error {
	for _, r := range a.runners {
		if err := r.Ready(ctx); err != nil {
			return err
		}
	}
	return nil
}

// Reconcile makes one reconciler pass now (for operators' tooling and tests); the reconciler task
// makes one every Config.ReconcileInterval.
func (a *App) Reconcile(ctx context.Context) (lifecycle.PassResult, error) {
	if err := a.Ready(ctx); err != nil {
		return lifecycle.PassResult{}, err
	}
	return a.reconcile.Pass(ctx)
}

// Close closes the gRPC connections and the Temporal client New dialled.
func (a *App) Close() error {
	var err error
	a.closeOnce.Do(func() {
		for _, cc := range a.conns {
			err = errors.Join(err, cc.Close())
		}
		if a.ownClient && a.temporal != nil {
			a.temporal.Close()
		}
	})
	return err
}

// worker start-up retry delays while Temporal is not reachable yet.
const (
	workerRetryMin = 500 * time.Millisecond
	workerRetryMax = 30 * time.Second
)

// runWorker runs the Temporal worker of the workflows and their activities until ctx is done. It keeps
// trying to start while the Temporal server is unreachable.
func (a *App) runWorker(ctx context.Context) error {
	delay := workerRetryMin
	for {
		w := worker.New(a.temporal, a.cfg.TaskQueue, worker.Options{})
		workflows.Register(w, a.acts)
		err := w.Start()
		if err == nil {
			a.log.InfoContext(ctx, "temporal worker started", "host_port", a.cfg.TemporalHostPort, "namespace", a.cfg.Namespace, "task_queue", a.cfg.TaskQueue)
			<-ctx.Done()
			w.Stop()
			return nil
		}
		a.log.WarnContext(ctx, "temporal worker cannot start yet; retrying", "host_port", a.cfg.TemporalHostPort, "retry_in", delay.String(), "error", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
		delay = min(2*delay, workerRetryMax)
	}
}

// runConsumer starts workflows from agent events, several at a time, those of one agent in the order
// of its events (lifecycle.AgentEventConsumeOptions).
func (a *App) runConsumer(ctx context.Context) error {
	opts := lifecycle.AgentEventConsumeOptions()
	if len(a.cfg.EventRetryBackoff) > 0 {
		opts = append(opts, eventstore.WithBackoff(a.cfg.EventRetryBackoff...))
	}
	return a.store.Consume(ctx, lifecycle.AgentEventsConsumer, eventstore.StreamAgents, lifecycle.AgentEventSubjects,
		a.core.HandleAgentEvent, opts...)
}

// runAlertConsumer starts an incident run for each alert on stream ALERTS (durable consumer
// lifecycle-incident-alerts), a few at a time: alerts are independent runs.
func (a *App) runAlertConsumer(ctx context.Context) error {
	opts := []eventstore.ConsumeOption{eventstore.WithConcurrency(lifecycle.AlertConcurrency)}
	if len(a.cfg.EventRetryBackoff) > 0 {
		opts = append(opts, eventstore.WithBackoff(a.cfg.EventRetryBackoff...))
	}
	return a.store.Consume(ctx, lifecycle.AlertsConsumer, eventstore.StreamAlerts, lifecycle.AlertSubjects, a.incidents.HandleAlert, opts...)
}
