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
	"go.temporal.io/sdk/temporal"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentid/agentid/pkg/observability"
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
	// DefaultDescribeTimeout bounds one question to Temporal about a run.
	DefaultDescribeTimeout = 3 * time.Second
	// DefaultRecheckRunning is how long a run seen running is taken to be running before it is
	// described again.
	DefaultRecheckRunning = 5 * time.Minute
	// DefaultDisableTimeout bounds one DisableClient call to the issuer.
	DefaultDisableTimeout = 10 * time.Second
	// DefaultClientStepBudget bounds the client step of one pass (all its DisableClient calls), so a
	// hung issuer cannot hold up the run checks.
	DefaultClientStepBudget = 2 * time.Minute
	// DefaultMaxRedrives is how many failed runs of one workflow id the reconciler starts again before
	// it gives up on the agent.
	DefaultMaxRedrives = 3
	// maxRedriveBackoff caps the wait between two re-drives of one workflow id.
	maxRedriveBackoff = time.Hour
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
	// DescribeTimeout bounds each question to Temporal (default DefaultDescribeTimeout). The first
	// that finds Temporal unreachable ends the pass's run checks.
	DescribeTimeout time.Duration
	// RecheckRunning is how long a run seen running is not described again (default
	// DefaultRecheckRunning): at 100k agents awaiting approval a pass asks Temporal only about the few
	// runs not known to be running.
	RecheckRunning time.Duration
	// MaxRedrives is how many failed runs of one workflow id are started again before the agent is
	// left stuck for an operator (default DefaultMaxRedrives).
	MaxRedrives int
	// DisableTimeout bounds each DisableClient call to the issuer (default DefaultDisableTimeout).
	DisableTimeout time.Duration
	// ClientStepBudget bounds the whole client step of a pass (default DefaultClientStepBudget): once
	// spent, the clients left are logged and tried at the next pass, and the pass goes on to the run
	// checks.
	ClientStepBudget time.Duration
	// Registerer receives the metrics; default prometheus.DefaultRegisterer.
	Registerer prometheus.Registerer
	// Logger logs; default slog.Default().
	Logger *slog.Logger
}

// Reconciler repairs what the event → workflow hand-off may have missed: it disables every client
// whose agent is neither ACTIVE nor PENDING (first: this needs no Temporal), starts the missing
// provisioning run of every PENDING agent and the missing deprovisioning run of every RETIRING agent,
// and starts again, a bounded number of times with back-off, the runs that failed (failed, timed out,
// terminated or cancelled) while the agent is still in that state, unless they failed for a reason a
// new run cannot change. Every action is idempotent (deterministic workflow ids and request ids), so
// passes may repeat and replicas may run their own.
type Reconciler struct {
	cfg ReconcilerConfig
	log *slog.Logger

	stuck   *prometheus.GaugeVec
	actions *prometheus.CounterVec
	passes  *prometheus.CounterVec

	passMu sync.Mutex          // one pass at a time
	runs   map[string]*runMemo // by workflow id, agents PENDING or RETIRING at the last pass; under passMu

	mu       sync.Mutex
	disabled map[string]bool // clients this process disabled that the model does not show disabled yet
}

// runMemo is what the reconciler remembers of one workflow id between passes.
type runMemo struct {
	runningAt time.Time       // when a run was last found running; zero when not
	failed    map[string]bool // ids of the failed runs seen
	givenUp   string          // why the reconciler no longer starts the run again; "" while it does
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
	if cfg.DescribeTimeout <= 0 {
		cfg.DescribeTimeout = DefaultDescribeTimeout
	}
	if cfg.RecheckRunning <= 0 {
		cfg.RecheckRunning = DefaultRecheckRunning
	}
	if cfg.MaxRedrives <= 0 {
		cfg.MaxRedrives = DefaultMaxRedrives
	}
	if cfg.DisableTimeout <= 0 {
		cfg.DisableTimeout = DefaultDisableTimeout
	}
	if cfg.ClientStepBudget <= 0 {
		cfg.ClientStepBudget = DefaultClientStepBudget
	}
	if cfg.Registerer == nil {
		cfg.Registerer = prometheus.DefaultRegisterer
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	r := &Reconciler{cfg: cfg, log: cfg.Logger.With("task", "reconciler"), runs: map[string]*runMemo{}, disabled: map[string]bool{}}
	r.stuck = observability.Register(cfg.Registerer, prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "lifecycle_stuck_agents",
		Help: "Agents PENDING or RETIRING for longer than the stuck threshold whose lifecycle run was not found running (missing, failed, given up, or unknown while Temporal is unreachable), by state.",
	}, []string{"state"}))
	r.actions = observability.Register(cfg.Registerer, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "lifecycle_reconciler_actions_total",
		Help: "Repairs the lifecycle reconciler attempted, by action and outcome (ok, error).",
	}, []string{"action", "outcome"}))
	r.passes = observability.Register(cfg.Registerer, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "lifecycle_reconciler_passes_total",
		Help: "Reconciler passes, by outcome (ok, error: at least one action or lookup failed).",
	}, []string{"outcome"}))
	return r, nil
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

// runInfo is the latest run of a workflow id.
type runInfo struct {
	state     runState
	runID     string
	closeTime time.Time
}

// errTemporalUnreachable ends the run checks of a pass.
var errTemporalUnreachable = errors.New("Temporal is unreachable: the remaining runs are checked at the next pass")

// Pass makes one reconcile pass over the read model: first the clients (read model and issuer only),
// then the runs. It goes on after a failed action and returns the failures joined; the run checks
// stop at the first sign that Temporal is unreachable.
func (r *Reconciler) Pass(ctx context.Context) (PassResult, error) {
	r.passMu.Lock()
	defer r.passMu.Unlock()
	res := PassResult{Actions: map[string]int{}, Stuck: map[string]int{"pending": 0, "retiring": 0}}
	var failures []error
	if err := r.disableOrphanedClients(ctx, res.Actions); err != nil {
		failures = append(failures, err)
	}
	if ctx.Err() != nil {
		return res, ctx.Err()
	}
	if err := r.reconcileRuns(ctx, res); err != nil {
		failures = append(failures, err)
	}
	for state, n := range res.Stuck {
		r.stuck.WithLabelValues(state).Set(float64(n))
	}
	err := errors.Join(failures...)
	outcome := "ok"
	if err != nil {
		outcome = "error"
	}
	r.passes.WithLabelValues(outcome).Inc()
	return res, err
}

// reconcileRuns makes sure every PENDING and RETIRING agent without a recorded outcome has its run,
// and counts the stuck ones: those in their state for longer than StuckAfter whose run was not found
// running (a run started or re-driven by this pass does not count as running).
func (r *Reconciler) reconcileRuns(ctx context.Context, res PassResult) error {
	var failures []error
	now := time.Now()
	unreachable := false
	memos := make(map[string]*runMemo, len(r.runs))
	for _, a := range r.cfg.Model.Agents(registryv1.AgentState_AGENT_STATE_PENDING, registryv1.AgentState_AGENT_STATE_RETIRING) {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var spec runSpec
		var start, redrive, stuckLabel string
		switch {
		case a.State == registryv1.AgentState_AGENT_STATE_PENDING && a.Provisioned == nil:
			spec = provisionSpec(a.Tenant, a.ID, a.RiskTier, a.RegisteredEventID, a.Registrant)
			start, redrive, stuckLabel = ActionStartProvisioning, ActionRedriveProvisioning, "pending"
		case a.State == registryv1.AgentState_AGENT_STATE_RETIRING && a.Deprovisioned == nil:
			spec = deprovisionSpec(a.Tenant, a.ID, a.RiskTier, a.RetireReason, a.RetireEventID)
			if in, ok := spec.in.(workflows.DeprovisionInput); ok { // as startDeprovisioning: the trigger decides the sign-offs
				in.Trigger, in.TriggerTime, in.ChangeRef = a.RetireTrigger, a.RetireTime, a.RetireTicket
				spec.in = in
			}
			start, redrive, stuckLabel = ActionStartDeprovisioning, ActionRedriveDeprovisioning, "retiring"
		default:
			continue // the outcome is recorded; the agent's state follows
		}
		spec.event = "reconcile"
		memo := r.runs[spec.id]
		if memo == nil {
			memo = &runMemo{failed: map[string]bool{}}
		}
		memos[spec.id] = memo
		running := false
		switch {
		case memo.givenUp != "":
		case unreachable:
			running = !memo.runningAt.IsZero() // as last seen
		case !memo.runningAt.IsZero() && now.Sub(memo.runningAt) < r.cfg.RecheckRunning:
			running = true
		default:
			var err error
			running, err = r.ensureRun(ctx, a, spec, start, redrive, memo, res.Actions)
			if errors.Is(err, errTemporalUnreachable) {
				unreachable = true
				running = !memo.runningAt.IsZero()
			}
			if err != nil {
				failures = append(failures, err)
			}
		}
		if !running && now.Sub(a.Since) > r.cfg.StuckAfter {
			res.Stuck[stuckLabel]++
			msg, what := "agent stuck without a running lifecycle run", "the reconciler starts the run when it can"
			if memo.givenUp != "" {
				msg, what = "agent stuck: the reconciler no longer starts its lifecycle run", memo.givenUp
			}
			r.log.WarnContext(ctx, msg, "agent", a.Name(), "state", a.State.String(), "since", a.Since,
				"workflow_id", spec.id, "detail", what)
		}
	}
	r.runs = memos
	return errors.Join(failures...)
}

// ensureRun makes sure the agent's run of spec exists: it starts a missing one and starts again one
// that failed, within MaxRedrives and the back-off, unless it failed for a reason a new run cannot
// change. It reports whether a run was found running; errTemporalUnreachable (wrapped) when Temporal
// did not answer.
func (r *Reconciler) ensureRun(ctx context.Context, a readmodel.Agent, spec runSpec, start, redrive string, memo *runMemo, actions map[string]int) (bool, error) {
	info, err := r.describeRun(ctx, spec.id)
	if err != nil {
		r.actions.WithLabelValues("describe", "error").Inc()
		return false, r.temporalError(ctx, "describe "+spec.id, err)
	}
	memo.runningAt = time.Time{}
	action := start
	switch info.state {
	case runRunning:
		memo.runningAt = time.Now()
		return true, nil
	case runCompleted:
		// The run has ended well; its outcome reaches the model soon.
		return false, nil
	case runFailed:
		action = redrive
		if !memo.failed[info.runID] {
			cause, err := r.runFailure(ctx, spec.id, info.runID)
			if err != nil {
				return false, r.temporalError(ctx, "failure of "+spec.id, err)
			}
			memo.failed[info.runID] = true
			if why := finalFailure(cause); why != "" {
				memo.givenUp = fmt.Sprintf("run %s failed because %s: a new run cannot change that; look at the run's failure, "+
					"then retire the agent (agentctl agents retire %s) or fix the cause and restart the lifecycle service", info.runID, why, a.Name())
				r.log.ErrorContext(ctx, "reconciler does not start a run again", "agent", a.Name(), "workflow_id", spec.id, "detail", memo.givenUp, "error", cause)
				return false, nil
			}
			if n := len(memo.failed); n > r.cfg.MaxRedrives {
				memo.givenUp = fmt.Sprintf("%d runs failed, the last %s: %v; look at the failures, fix the cause, then restart the lifecycle "+
					"service (the reconciler tries again) or retire the agent (agentctl agents retire %s)", n, info.runID, cause, a.Name())
				r.log.ErrorContext(ctx, "reconciler gives up on a run that keeps failing", "agent", a.Name(), "workflow_id", spec.id, "detail", memo.givenUp)
				return false, nil
			}
		}
		if wait := redriveBackoff(r.cfg.Interval, len(memo.failed)); time.Now().Before(info.closeTime.Add(wait)) {
			return false, nil
		}
	}
	// ALLOW_DUPLICATE_FAILED_ONLY: a missing or failed run is started, a running or completed one is
	// left alone (errRunExists), whoever started it meanwhile.
	runID, err := r.cfg.Service.startRun(ctx, spec, enumspb.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE_FAILED_ONLY)
	switch {
	case errors.Is(err, errRunExists):
		r.log.DebugContext(ctx, "run started meanwhile", "workflow_id", spec.id)
		memo.runningAt = time.Now()
		return true, nil
	case err != nil:
		r.actions.WithLabelValues(action, "error").Inc()
		r.log.WarnContext(ctx, "reconciler could not start a run", "action", action, "agent", a.Name(), "workflow_id", spec.id, "error", err)
		return false, r.temporalError(ctx, "start "+spec.id, err)
	}
	// Not remembered as running: the next pass asks again, so a run that fails at once is seen.
	r.actions.WithLabelValues(action, "ok").Inc()
	actions[action]++
	r.log.InfoContext(ctx, "reconciler started a run", "action", action, "agent", a.Name(), "state", a.State.String(),
		"workflow_id", spec.id, "run_id", runID, "failed_runs", len(memo.failed))
	return false, nil
}

// redriveBackoff is how long after the n-th failed run closed the next one may start: at once after
// the first, then interval, doubling, at most maxRedriveBackoff.
func redriveBackoff(interval time.Duration, n int) time.Duration {
	if n <= 1 {
		return 0
	}
	d := interval
	for i := 2; i < n && d < maxRedriveBackoff; i++ {
		d *= 2
	}
	return min(d, maxRedriveBackoff)
}

// finalFailure says why a run's failure cannot be changed by a new run, or "" when it can.
func finalFailure(cause error) string {
	var app *temporal.ApplicationError
	switch {
	case workflows.IsClientUnusable(cause):
		errors.As(cause, &app)
		return "the agent's client id cannot be used (" + app.Type() + ")"
	case errors.As(cause, &app) && app.Type() == workflows.ErrRetiredMeanwhile:
		return "the agent left provisioning (" + app.Type() + ")"
	case errors.As(cause, &app) && app.Type() == "INVALID_ARGUMENT":
		return "its input is invalid"
	}
	return ""
}

// temporalError wraps a failed call to Temporal; errTemporalUnreachable when Temporal did not answer.
func (r *Reconciler) temporalError(ctx context.Context, op string, err error) error {
	if ctx.Err() == nil && temporalUnreachable(err) {
		r.log.WarnContext(ctx, "Temporal unreachable: run checks wait for the next pass", "op", op, "error", err)
		return fmt.Errorf("%s: %w: %w", op, errTemporalUnreachable, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// temporalUnreachable says whether err means Temporal did not answer (as opposed to answering no).
func temporalUnreachable(err error) bool {
	var unavailable *serviceerror.Unavailable
	var deadline *serviceerror.DeadlineExceeded
	switch {
	case errors.As(err, &unavailable), errors.As(err, &deadline), errors.Is(err, context.DeadlineExceeded):
		return true
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded:
		return true
	}
	return false
}

func (r *Reconciler) describeRun(ctx context.Context, id string) (runInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.DescribeTimeout)
	defer cancel()
	resp, err := r.cfg.Service.temporal.DescribeWorkflowExecution(ctx, id, "")
	var nf *serviceerror.NotFound
	switch {
	case errors.As(err, &nf):
		return runInfo{state: runMissing}, nil
	case err != nil:
		return runInfo{}, err
	}
	info := resp.GetWorkflowExecutionInfo()
	out := runInfo{runID: info.GetExecution().GetRunId(), closeTime: info.GetCloseTime().AsTime()}
	switch info.GetStatus() {
	case enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING:
		out.state = runRunning
	case enumspb.WORKFLOW_EXECUTION_STATUS_COMPLETED, enumspb.WORKFLOW_EXECUTION_STATUS_CONTINUED_AS_NEW:
		out.state = runCompleted
	default:
		out.state = runFailed
	}
	return out, nil
}

// runFailure returns the error a closed run failed with (a cancelled or terminated run's too).
func (r *Reconciler) runFailure(ctx context.Context, id, runID string) (cause, err error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.DescribeTimeout)
	defer cancel()
	err = r.cfg.Service.temporal.GetWorkflow(ctx, id, runID).Get(ctx, nil)
	if err == nil {
		return nil, nil
	}
	var service interface{ Status() *status.Status } // every serviceerror: the lookup itself failed
	if temporalUnreachable(err) || errors.As(err, &service) {
		return nil, err
	}
	return err, nil
}

// ReconcileRequestID is the request id the reconciler disables a client with: one per client, since
// disabling is final.
func ReconcileRequestID(tenant, clientID string) string {
	return "reconcile/disable/" + tenant + "/" + clientID
}

// orphanedClient is a client the reconciler disables, with its agent's state.
type orphanedClient struct {
	client readmodel.Client
	state  registryv1.AgentState
}

// disableOrphanedClients disables every client not disabled whose agent is known and neither ACTIVE,
// SUSPENDED nor PENDING. A PENDING agent's client belongs to a provisioning run between creating it and
// activating the agent (a failed run is started again and reuses it). Each call is bounded by
// DisableTimeout and the step by ClientStepBudget: a hung issuer delays the run checks by at most
// the budget, and the clients left are logged and tried again at the next pass.
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

	var todo []orphanedClient
	for _, c := range m.ActiveClients() {
		tenant, agentID, ok := workflows.ParseAgentName(c.Agent)
		if !ok || tenant != c.Tenant {
			continue
		}
		a, ok := m.Agent(tenant, agentID)
		switch {
		case !ok, a.State == registryv1.AgentState_AGENT_STATE_UNSPECIFIED:
			continue // the agent's events are not in the model yet
		case a.State == registryv1.AgentState_AGENT_STATE_ACTIVE, a.State == registryv1.AgentState_AGENT_STATE_PENDING,
			a.State == registryv1.AgentState_AGENT_STATE_SUSPENDED:
			continue // a suspended agent keeps its client: resuming it must not need a new one
		}
		r.mu.Lock()
		done := r.disabled[c.Name()]
		r.mu.Unlock()
		if !done {
			todo = append(todo, orphanedClient{client: c, state: a.State})
		}
	}

	stepCtx, cancel := context.WithTimeout(ctx, r.cfg.ClientStepBudget)
	defer cancel()
	var failures []error
	for i, o := range todo {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if stepCtx.Err() != nil {
			return errors.Join(append(failures, r.clientsLeft(ctx, todo[i:]))...)
		}
		if err := r.disableClient(stepCtx, o); err != nil {
			failures = append(failures, err)
			continue
		}
		actions[ActionDisableClient]++
	}
	return errors.Join(failures...)
}

// clientsLeft logs the clients a pass's client step had no time for and returns the error saying so.
func (r *Reconciler) clientsLeft(ctx context.Context, left []orphanedClient) error {
	names := make([]string, 0, min(len(left), 20))
	for _, o := range left[:min(len(left), 20)] {
		names = append(names, o.client.Name())
	}
	r.log.WarnContext(ctx, "reconciler client step out of time: the clients left are disabled at the next pass",
		"budget", r.cfg.ClientStepBudget.String(), "clients_left", len(left), "first_clients_left", names)
	return fmt.Errorf("client step out of time after %s: %d clients left for the next pass", r.cfg.ClientStepBudget, len(left))
}

// disableClient disables one client at the issuer, within DisableTimeout.
func (r *Reconciler) disableClient(ctx context.Context, o orphanedClient) error {
	c := o.client
	callCtx, cancel := context.WithTimeout(ctx, r.cfg.DisableTimeout)
	defer cancel()
	_, err := r.cfg.Issuer.DisableClient(callCtx, &issuerv1.DisableClientRequest{
		Name:      c.Name(),
		Reason:    "reconciler: the agent is " + strings.TrimPrefix(o.state.String(), "AGENT_STATE_"),
		RequestId: ReconcileRequestID(c.Tenant, c.ClientID),
	})
	// Only the client's own NotFound means there is nothing to disable; another NotFound (an
	// unknown tenant, a wrongly scoped identity) is a failure.
	if err != nil && !workflows.IsClientNotFound(err) {
		r.actions.WithLabelValues(ActionDisableClient, "error").Inc()
		r.log.WarnContext(ctx, "reconciler could not disable a client", "client", c.Name(), "agent", c.Agent,
			"agent_state", o.state.String(), "timeout", r.cfg.DisableTimeout.String(), "error", err)
		return fmt.Errorf("disable %s: %w", c.Name(), err)
	}
	r.mu.Lock()
	r.disabled[c.Name()] = true
	r.mu.Unlock()
	r.actions.WithLabelValues(ActionDisableClient, "ok").Inc()
	r.log.InfoContext(ctx, "reconciler disabled the client of an agent that is not ACTIVE", "client", c.Name(),
		"agent", c.Agent, "agent_state", o.state.String())
	return nil
}
