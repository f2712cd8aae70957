package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"google.golang.org/grpc"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentid/agentid/pkg/errs"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/lifecycle/internal/readmodel"
	"github.com/agentid/agentid/workflows"
)

// Defaults of ReconcilerConfig.
const (
	// DefaultReconcileInterval is how often the reconciler makes a pass.
	DefaultReconcileInterval = 30 * time.Second
	// DefaultStuckAfter is how long an agent may stay PENDING or RETIRING without a running run before
	// it counts in lifecycle_stuck_agents.
	DefaultStuckAfter = 10 * time.Minute
)

// Reconciler actions, the values of the action label of lifecycle_reconciler_actions_total.
const (
	ActionStartProvisioning     = "start_provisioning"
	ActionRedriveProvisioning   = "redrive_provisioning"
	ActionStartDeprovisioning   = "start_deprovisioning"
	ActionRedriveDeprovisioning = "redrive_deprovisioning"
	ActionDisableClient         = "disable_client"
)

// ClientDisabler is the part of the issuer the reconciler calls.
type ClientDisabler interface {
	DisableClient(ctx context.Context, in *issuerv1.DisableClientRequest, opts ...grpc.CallOption) (*issuerv1.DisableClientResponse, error)
}

// ReconcilerConfig configures a Reconciler.
type ReconcilerConfig struct {
	// Service starts the runs. Required.
	Service *Service
	// Model is the read model the passes work from. Required.
	Model *readmodel.Model
	// Issuer disables clients. Required.
	Issuer ClientDisabler
	// Ready blocks until Model has caught up with its streams; nil means it has.
	Ready func(context.Context) error
	// Interval is the time between passes (default DefaultReconcileInterval).
	Interval time.Duration
	// StuckAfter is how long an agent may stay PENDING or RETIRING without a running run before it
	// counts as stuck (default DefaultStuckAfter).
	StuckAfter time.Duration
	// Registerer receives the metrics; default prometheus.DefaultRegisterer.
	Registerer prometheus.Registerer
	// Logger logs; default slog.Default().
	Logger *slog.Logger
}

// Reconciler repairs what the event → workflow hand-off may have missed: it starts the missing
// provisioning run of every PENDING agent and the missing deprovisioning run of every RETIRING agent,
// starts again the runs that failed (failed, timed out, terminated or cancelled) while the agent is
// still in that state, and disables every client whose agent is neither ACTIVE nor PENDING. Every
// action is idempotent (deterministic workflow ids and request ids), so passes may repeat and replicas
// may run their own.
type Reconciler struct {
	cfg ReconcilerConfig
	log *slog.Logger

	stuck   *prometheus.GaugeVec
	actions *prometheus.CounterVec
	passes  *prometheus.CounterVec

	mu       sync.Mutex
	disabled map[string]bool // clients this process disabled that the model does not show disabled yet
}

// NewReconciler returns a reconciler.
func NewReconciler(cfg ReconcilerConfig) (*Reconciler, error) {
	if cfg.Service == nil || cfg.Model == nil || cfg.Issuer == nil {
		return nil, errors.New("lifecycle: ReconcilerConfig needs Service, Model and Issuer")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultReconcileInterval
	}
	if cfg.StuckAfter <= 0 {
		cfg.StuckAfter = DefaultStuckAfter
	}
	if cfg.Registerer == nil {
		cfg.Registerer = prometheus.DefaultRegisterer
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	r := &Reconciler{cfg: cfg, log: cfg.Logger.With("task", "reconciler"), disabled: map[string]bool{}}
	r.stuck = register(cfg.Registerer, prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "lifecycle_stuck_agents",
		Help: "Agents PENDING or RETIRING for longer than the stuck threshold without a running lifecycle run, by state.",
	}, []string{"state"}))
	r.actions = register(cfg.Registerer, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "lifecycle_reconciler_actions_total",
		Help: "Repairs the lifecycle reconciler attempted, by action and outcome (ok, error).",
	}, []string{"action", "outcome"}))
	r.passes = register(cfg.Registerer, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "lifecycle_reconciler_passes_total",
		Help: "Reconciler passes, by outcome (ok, error: at least one action or lookup failed).",
	}, []string{"outcome"}))
	return r, nil
}

func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
	}
	return c
}

// Run waits for the read model, makes a pass at once and then every Interval until ctx is done.
// A failing pass is logged and retried at the next tick; Run returns nil when ctx ends.
func (r *Reconciler) Run(ctx context.Context) error {
	if r.cfg.Ready != nil {
		if err := r.cfg.Ready(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("lifecycle reconciler: read model: %w", err)
		}
	}
	r.log.InfoContext(ctx, "reconciler started", "interval", r.cfg.Interval.String(), "stuck_after", r.cfg.StuckAfter.String())
	t := time.NewTicker(r.cfg.Interval)
	defer t.Stop()
	for {
		if _, err := r.Pass(ctx); err != nil && ctx.Err() == nil {
			r.log.WarnContext(ctx, "reconcile pass incomplete; retrying at the next tick", "error", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// PassResult counts what one pass did.
type PassResult struct {
	// Actions counts the actions taken, by action (ActionStartProvisioning ...).
	Actions map[string]int
	// Stuck counts the stuck agents by state (pending, retiring).
	Stuck map[string]int
}

// runState is what Temporal says about a run id.
type runState int

const (
	runMissing runState = iota
	runRunning
	runCompleted
	runFailed // failed, timed out, terminated or cancelled: may be started again
)

// Pass makes one reconcile pass over the read model. It goes on after a failed action and returns
// the failures joined.
func (r *Reconciler) Pass(ctx context.Context) (PassResult, error) {
	res := PassResult{Actions: map[string]int{}, Stuck: map[string]int{"pending": 0, "retiring": 0}}
	var failures []error
	now := time.Now()
	m := r.cfg.Model

	for _, a := range m.Agents(registryv1.AgentState_AGENT_STATE_PENDING, registryv1.AgentState_AGENT_STATE_RETIRING) {
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		var spec runSpec
		var start, redrive, stuckLabel string
		switch {
		case a.State == registryv1.AgentState_AGENT_STATE_PENDING && a.Provisioned == nil:
			spec = provisionSpec(a.Tenant, a.ID, a.RiskTier, a.RegisteredEventID)
			start, redrive, stuckLabel = ActionStartProvisioning, ActionRedriveProvisioning, "pending"
		case a.State == registryv1.AgentState_AGENT_STATE_RETIRING && a.Deprovisioned == nil:
			spec = deprovisionSpec(a.Tenant, a.ID, a.RiskTier, a.RetireReason, a.RetireEventID)
			start, redrive, stuckLabel = ActionStartDeprovisioning, ActionRedriveDeprovisioning, "retiring"
		default:
			continue // the outcome is recorded; the agent's state follows
		}
		spec.event = "reconcile"
		running, err := r.ensureRun(ctx, a, spec, start, redrive, res.Actions)
		if err != nil {
			failures = append(failures, err)
		}
		if !running && now.Sub(a.Since) > r.cfg.StuckAfter {
			res.Stuck[stuckLabel]++
			r.log.WarnContext(ctx, "agent stuck without a running lifecycle run", "agent", a.Name(),
				"state", a.State.String(), "since", a.Since, "workflow_id", spec.id)
		}
	}
	for state, n := range res.Stuck {
		r.stuck.WithLabelValues(state).Set(float64(n))
	}

	if err := r.disableOrphanedClients(ctx, res.Actions); err != nil {
		failures = append(failures, err)
	}
	err := errors.Join(failures...)
	outcome := "ok"
	if err != nil {
		outcome = "error"
	}
	r.passes.WithLabelValues(outcome).Inc()
	return res, err
}

// ensureRun makes sure the agent's run of spec exists: it starts a missing one and starts again one
// that failed. It reports whether a run is running afterwards.
func (r *Reconciler) ensureRun(ctx context.Context, a readmodel.Agent, spec runSpec, start, redrive string, actions map[string]int) (bool, error) {
	st, err := r.runState(ctx, spec.id)
	if err != nil {
		r.actions.WithLabelValues("describe", "error").Inc()
		return false, fmt.Errorf("describe %s: %w", spec.id, err)
	}
	action := start
	switch st {
	case runRunning:
		return true, nil
	case runCompleted:
		// The run has ended well; its outcome reaches the model soon.
		return false, nil
	case runFailed:
		action = redrive
	}
	// ALLOW_DUPLICATE_FAILED_ONLY: a missing or failed run is started, a running or completed one is
	// left alone (errRunExists), whoever started it meanwhile.
	runID, err := r.cfg.Service.startRun(ctx, spec, enumspb.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE_FAILED_ONLY)
	switch {
	case errors.Is(err, errRunExists):
		r.log.DebugContext(ctx, "run started meanwhile", "workflow_id", spec.id)
		return true, nil
	case err != nil:
		r.actions.WithLabelValues(action, "error").Inc()
		r.log.WarnContext(ctx, "reconciler could not start a run", "action", action, "agent", a.Name(), "workflow_id", spec.id, "error", err)
		return false, err
	}
	r.actions.WithLabelValues(action, "ok").Inc()
	actions[action]++
	r.log.InfoContext(ctx, "reconciler started a run", "action", action, "agent", a.Name(), "state", a.State.String(),
		"workflow_id", spec.id, "run_id", runID)
	return true, nil
}

func (r *Reconciler) runState(ctx context.Context, id string) (runState, error) {
	resp, err := r.cfg.Service.temporal.DescribeWorkflowExecution(ctx, id, "")
	var nf *serviceerror.NotFound
	switch {
	case errors.As(err, &nf):
		return runMissing, nil
	case err != nil:
		return 0, err
	}
	switch resp.GetWorkflowExecutionInfo().GetStatus() {
	case enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING:
		return runRunning, nil
	case enumspb.WORKFLOW_EXECUTION_STATUS_COMPLETED, enumspb.WORKFLOW_EXECUTION_STATUS_CONTINUED_AS_NEW:
		return runCompleted, nil
	default:
		return runFailed, nil
	}
}

// ReconcileRequestID is the request id the reconciler disables a client with: one per client, since
// disabling is final.
func ReconcileRequestID(tenant, clientID string) string {
	return "reconcile/disable/" + tenant + "/" + clientID
}

// disableOrphanedClients disables every client not disabled whose agent is known and neither ACTIVE
// nor PENDING. A PENDING agent's client belongs to a provisioning run between creating it and
// activating the agent (a failed run is started again and reuses it).
func (r *Reconciler) disableOrphanedClients(ctx context.Context, actions map[string]int) error {
	m := r.cfg.Model
	r.mu.Lock()
	for name := range r.disabled {
		tenant, id, _ := strings.Cut(strings.TrimPrefix(name, "tenants/"), "/clients/")
		if c, ok := m.Client(tenant, id); !ok || c.Disabled {
			delete(r.disabled, name)
		}
	}
	r.mu.Unlock()

	var failures []error
	for _, c := range m.ActiveClients() {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		tenant, agentID, ok := workflows.ParseAgentName(c.Agent)
		if !ok || tenant != c.Tenant {
			continue
		}
		a, ok := m.Agent(tenant, agentID)
		switch {
		case !ok, a.State == registryv1.AgentState_AGENT_STATE_UNSPECIFIED:
			continue // the agent's events are not in the model yet
		case a.State == registryv1.AgentState_AGENT_STATE_ACTIVE, a.State == registryv1.AgentState_AGENT_STATE_PENDING:
			continue
		}
		r.mu.Lock()
		done := r.disabled[c.Name()]
		r.mu.Unlock()
		if done {
			continue
		}
		_, err := r.cfg.Issuer.DisableClient(ctx, &issuerv1.DisableClientRequest{
			Name:      c.Name(),
			Reason:    "reconciler: the agent is " + strings.TrimPrefix(a.State.String(), "AGENT_STATE_"),
			RequestId: ReconcileRequestID(c.Tenant, c.ClientID),
		})
		if err != nil && !errs.Is(err, errs.KindNotFound) {
			r.actions.WithLabelValues(ActionDisableClient, "error").Inc()
			r.log.WarnContext(ctx, "reconciler could not disable a client", "client", c.Name(), "agent", c.Agent, "agent_state", a.State.String(), "error", err)
			failures = append(failures, fmt.Errorf("disable %s: %w", c.Name(), err))
			continue
		}
		r.mu.Lock()
		r.disabled[c.Name()] = true
		r.mu.Unlock()
		r.actions.WithLabelValues(ActionDisableClient, "ok").Inc()
		actions[ActionDisableClient]++
		r.log.InfoContext(ctx, "reconciler disabled the client of an agent that is not ACTIVE", "client", c.Name(),
			"agent", c.Agent, "agent_state", a.State.String())
	}
	return errors.Join(failures...)
}
